//! Data-parallel training over MPI: `mpirun -np N kiln train …` (a build
//! with `--features mpi`, Open MPI's mpirun) against one process that
//! accumulates the same N micro-batches, bit for bit; resuming on another
//! world size; a killed rank and a failing rank ending the whole run.
//!
//! `cargo test --workspace` builds without the feature and says so; `.ci/run`
//! also runs `cargo test --features mpi --test mpi` after installing Open MPI.

use std::io::Write;

/// Writes past libtest's output capture, so that a skip is always seen.
fn say_skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_tests_need_the_mpi_feature() {
    say_skipped(
        "the MPI tests need a build with MPI: `cargo test --features mpi --test mpi` (Debian: libopenmpi-dev openmpi-bin libclang-dev); .ci/run runs them",
    );
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    use kiln::models::train::checkpoint::{list_checkpoints, verify_folder};

    use super::say_skipped;

    const KILN: &str = env!("CARGO_BIN_EXE_kiln");
    const SONNETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/shakespeare/sonnets.txt");

    /// Whether `mpirun` runs here; if not, says why the test is skipped.
    fn have_mpirun() -> bool {
        let ok = Command::new("mpirun")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            say_skipped("no `mpirun` on PATH (Debian: apt-get install openmpi-bin)");
        }
        ok
    }

    fn mpirun(n: usize) -> Command {
        let mut c = Command::new("mpirun");
        // Root in containers, more ranks than cores on a 2-core machine.
        c.args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            &n.to_string(),
        ]);
        c
    }

    /// Waits for `child` for at most `limit`, killing it after that.
    fn wait(mut child: Child, limit: Duration) -> (Output, Duration) {
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "still running after {limit:?}; stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = start.elapsed();
        (child.wait_with_output().unwrap(), took)
    }

    fn run(mut cmd: Command) -> Output {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, _) = wait(child, Duration::from_secs(300));
        assert!(
            out.status.success(),
            "{:?} failed:\n{}",
            cmd,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `kiln train` on the tiny config: 4 steps, checkpoints at 2 and 4.
    fn train_args(out: &Path, batch: usize, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--config",
            "tiny",
            "--train",
            SONNETS,
            "--max-steps",
            "4",
            "--block-size",
            "32",
            "--save-steps",
            "2",
            "--eval-steps",
            "2",
            "--learning-rate",
            "1e-2",
            "--no-progress",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["--per-device-train-batch-size".into(), batch.to_string()]);
        a.extend(["--output-dir".into(), out.to_str().unwrap().into()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    fn one_process(args: &[String]) -> Output {
        let mut c = Command::new(KILN);
        c.args(args);
        run(c)
    }

    fn ranks(n: usize, args: &[String]) -> Output {
        let mut c = mpirun(n);
        c.arg(KILN).args(args);
        run(c)
    }

    /// Every `.safetensors` file under `dir`, by relative path.
    fn tensors(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "safetensors") {
                    let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    /// `log.jsonl` without its clock readings.
    fn log(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for k in [
                    "elapsed_s",
                    "eta_s",
                    "tokens_per_sec",
                    "allreduce_s",
                    "allreduce_bytes",
                ] {
                    v.as_object_mut().unwrap().remove(k);
                }
                v
            })
            .collect()
    }

    fn assert_same_run(a: &Path, b: &Path) {
        let (ta, tb) = (tensors(a), tensors(b));
        assert!(ta.len() >= 5, "weights, optimizer state and final: {ta:?}");
        assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
        for (name, bytes) in &ta {
            assert!(bytes == &tb[name], "{} differs", name.display());
        }
        assert_eq!(log(a), log(b));
    }

    /// N ranks with batch b are one process with batch b accumulating N
    /// micro-batches: same weights, optimizer moments, checkpoints and
    /// losses, bit for bit, dropout on.
    #[test]
    fn ranks_reproduce_gradient_accumulation_bit_for_bit() {
        if !have_mpirun() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        for n in [2usize, 3] {
            let single = tmp.path().join(format!("single-{n}"));
            let multi = tmp.path().join(format!("ranks-{n}"));
            let acc = n.to_string();
            let drop = ["--dropout", "0.1"];
            one_process(&train_args(
                &single,
                2,
                &[&drop[..], &["--gradient-accumulation-steps", &acc]].concat(),
            ));
            // 1 MiB buckets: the tiny model's 6.5 MB of gradients go out in
            // 7 buckets, overlapped with backward.
            let buckets = ["--ddp-bucket-cap-mb", "1"];
            let out = ranks(n, &train_args(&multi, 2, &[&drop[..], &buckets].concat()));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("on each of {n} ranks")), "{err}");
            // Rank 0 alone speaks: one summary line, not N.
            assert_eq!(err.matches("done: 4 steps").count(), 1, "{err}");
            assert_same_run(&single, &multi);
            // Reducing after backward instead gives the same bits.
            let after = tmp.path().join(format!("after-{n}"));
            ranks(
                n,
                &train_args(&after, 2, &[&drop[..], &["--no-ddp-overlap"]].concat()),
            );
            assert_same_run(&single, &after);
        }
    }

    /// A checkpoint written by 2 ranks resumes exactly on 2 ranks and on 1
    /// process accumulating 2 micro-batches, and on 3 ranks with the same
    /// global batch (6 rows) to within rounding.
    #[test]
    fn a_checkpoint_resumes_on_another_world_size() {
        if !have_mpirun() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let first = tmp.path().join("first");
        ranks(2, &train_args(&first, 3, &["--dropout", "0"]));
        let ck = first.join("checkpoint-2");
        let ck = ck.to_str().unwrap();
        let resume = |out: &Path, batch: usize, extra: &[&str]| {
            let extra = [&["--dropout", "0", "--resume-from-checkpoint", ck], extra].concat();
            train_args(out, batch, &extra)
        };
        let same = tmp.path().join("same");
        ranks(2, &resume(&same, 3, &[]));
        let one = tmp.path().join("one");
        one_process(&resume(&one, 3, &["--gradient-accumulation-steps", "2"]));
        for dir in [&same, &one] {
            assert_eq!(
                tensors(&first.join("final")),
                tensors(&dir.join("final")),
                "{}",
                dir.display()
            );
            // The resumed runs log steps 3 and 4 as the first run did.
            assert_eq!(
                &log(&first)[log(&first).len() - log(dir).len()..],
                &log(dir)[..]
            );
        }
        let three = tmp.path().join("three");
        ranks(3, &resume(&three, 2, &[]));
        let a = kiln::models::gpt2::load_model_dir(first.join("final")).unwrap();
        let b = kiln::models::gpt2::load_model_dir(three.join("final")).unwrap();
        for ((name, p), (_, q)) in kiln::nn::Module::named_parameters(&a)
            .into_iter()
            .zip(kiln::nn::Module::named_parameters(&b))
        {
            let (p, q) = (
                p.value().to_vec::<f32>().unwrap(),
                q.value().to_vec::<f32>().unwrap(),
            );
            let worst = p
                .iter()
                .zip(&q)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{name}: {worst}");
        }
        let loss = |d: &Path| {
            log(d)
                .iter()
                .filter_map(|v| v["loss"].as_f64())
                .next_back()
                .unwrap()
        };
        assert!((loss(&first) - loss(&three)).abs() < 1e-4);
    }

    /// The PIDs of `parent`'s child processes named `kiln`.
    fn kiln_children(parent: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …
            let Some((head, tail)) = stat.rsplit_once(") ") else {
                continue;
            };
            let ppid: u32 = tail.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
            if ppid == parent && head.ends_with("(kiln") {
                out.push(head.split(' ').next().unwrap().parse().unwrap());
            }
        }
        out
    }

    /// kill -9 of one rank mid-run: every rank ends, non-zero, within
    /// seconds; the checkpoints already written stay whole.
    #[test]
    fn a_killed_rank_ends_every_rank() {
        if !have_mpirun() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let mut args = train_args(&out, 2, &["--save-total-limit", "2"]);
        let at = args.iter().position(|a| a == "--max-steps").unwrap();
        args[at + 1] = "1000000".into();
        let mut child = mpirun(3)
            .arg(KILN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while list_checkpoints(&out).len() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no checkpoints yet"
            );
            assert!(child.try_wait().unwrap().is_none(), "mpirun ended early");
            std::thread::sleep(Duration::from_millis(50));
        }
        let ranks = kiln_children(child.id());
        assert_eq!(ranks.len(), 3, "{ranks:?}");
        let victim = ranks[2];
        assert!(Command::new("kill")
            .args(["-9", &victim.to_string()])
            .status()
            .unwrap()
            .success());
        let (output, took) = wait(child, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{err}");
        assert!(took < Duration::from_secs(30), "took {took:?}");
        assert!(err.contains("rank") && err.contains("signal 9"), "{err}");
        assert!(ranks
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))));
        let left = list_checkpoints(&out);
        assert!(!left.is_empty());
        for (_, dir) in left {
            verify_folder(&dir).unwrap();
            kiln::models::gpt2::load_model_dir(&dir).unwrap();
        }
    }

    /// A rank that fails (here: its training text is too short) prints one
    /// line naming itself and the cause, and ends the others at once.
    #[test]
    fn a_failing_rank_ends_every_rank_with_one_line() {
        if !have_mpirun() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let short = tmp.path().join("short.txt");
        std::fs::write(&short, "Shall I compare thee").unwrap();
        let out = tmp.path().join("out");
        let good = train_args(&out, 2, &[]);
        let mut bad = good.clone();
        let at = bad.iter().position(|a| a == "--train").unwrap();
        bad[at + 1] = short.to_str().unwrap().into();
        // MPMD: rank 0 runs `good`, rank 1 `bad`.
        let child = Command::new("mpirun")
            .args(["--allow-run-as-root", "--oversubscribe", "-np", "1", KILN])
            .args(&good)
            .args([":", "-np", "1", KILN])
            .args(&bad)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (output, took) = wait(child, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{err}");
        assert!(took < Duration::from_secs(30), "took {took:?}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("error: rank 1 of 2:") && lines[0].contains("too short"),
            "{err}"
        );
    }
}
