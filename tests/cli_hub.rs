//! `--model ID` through the Hugging Face cache: a cache laid out as
//! `huggingface_hub` writes it (refs, snapshots, symlinks into blobs) used
//! with `HF_HUB_OFFLINE=1`, the one-line error when it is not cached, and
//! downloading from a loopback server that speaks the hub's `resolve`
//! protocol (`X-Repo-Commit`, `X-Linked-Etag`/`ETag`, a 302 to a CDN path,
//! `X-Error-Code: EntryNotFound`) into that same layout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use kiln::models::gpt2::{save_model_dir, Gpt2, Gpt2Config};
use kiln::models::tokenizer::Tokenizer;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn kiln(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args);
    for var in ["HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HF_HOME"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A tiny GPT-2 with the GPT-2 vocabulary, as a map of file name → bytes.
fn tiny_model_files() -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    save_model_dir(&Gpt2::new(Gpt2Config::tiny(), 3).unwrap(), dir.path()).unwrap();
    Tokenizer::gpt2().save_pretrained(dir.path(), 64).unwrap();
    let mut files = BTreeMap::new();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        files.insert(f.to_string(), std::fs::read(dir.path().join(f)).unwrap());
    }
    files
}

/// A blob's name: any stable hex digest of its bytes (the hub uses the git
/// SHA-1 or the LFS SHA-256).
fn etag_of(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}{:016x}", h.rotate_left(17))
}

/// Writes `files` into `cache` as huggingface_hub does: content in
/// `blobs/{etag}`, `snapshots/{commit}/{file}` a relative symlink to it,
/// `refs/main` holding the commit.
fn fake_cache(cache: &Path, folder: &str, files: &BTreeMap<String, Vec<u8>>) -> PathBuf {
    let repo = cache.join(folder);
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    for (name, bytes) in files {
        let etag = etag_of(bytes);
        std::fs::write(repo.join("blobs").join(&etag), bytes).unwrap();
        let link = snap.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let up = "../".repeat(name.matches('/').count() + 2);
        std::os::unix::fs::symlink(format!("{up}blobs/{etag}"), &link).unwrap();
    }
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    repo
}

#[test]
fn offline_cache_serves_models_by_id() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    fake_cache(&cache, "models--org--tiny", &tiny_model_files());
    let env = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    for model in ["org/tiny", "org/tiny@main", &format!("org/tiny@{COMMIT}")] {
        let (ok, ids, err) = kiln(
            &[
                "generate",
                "--model",
                model,
                "--prompt",
                "Shall I",
                "--max-new-tokens",
                "3",
                "--ids",
            ],
            &env,
        );
        assert!(ok && ids.starts_with('['), "{model}: {err}");
    }
    // HF_HOME/hub is the cache when HF_HUB_CACHE is not set.
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(&cache, home.join("hub")).unwrap();
    let (ok, _, err) = kiln(
        &[
            "generate",
            "--model",
            "org/tiny",
            "--prompt",
            "a",
            "--max-new-tokens",
            "1",
        ],
        &[("HF_HOME", home.to_str().unwrap()), ("HF_HUB_OFFLINE", "1")],
    );
    assert!(ok, "{err}");

    let (ok, _, err) = kiln(
        &["generate", "--model", "org/missing", "--prompt", "a"],
        &env,
    );
    assert!(!ok);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{err}");
    for needle in [
        "org/missing",
        &cache.join("models--org--missing").display().to_string(),
        "hf download org/missing",
        "HF_HUB_OFFLINE",
    ] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
}

/// What the loopback hub saw.
#[derive(Default)]
struct Seen {
    requests: Vec<String>,
    auth: Vec<Option<String>>,
}

/// Serves repositories at `main` = COMMIT like the hub, each under its URL
/// prefix (`org/tiny`, `datasets/org/data`): `HEAD|GET
/// /{prefix}/resolve/main/{file}` with `X-Repo-Commit` and `X-Linked-Etag`
/// (`.safetensors` and `.parquet` files answer 302 to `/cdn/{etag}`, as LFS
/// files do), 404 `EntryNotFound` for other files, and `GET
/// /api/{models|datasets}/{repo}/revision/main` listing the files.
fn serve(repos: BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut auth = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_string());
                    }
                }
            }
            let mut parts = first.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            log.lock()
                .unwrap()
                .requests
                .push(format!("{method} {path}"));
            log.lock().unwrap().auth.push(auth);
            let by_etag = |etag: &str| {
                repos
                    .values()
                    .flat_map(|f| f.values())
                    .find(|b| etag_of(b) == etag)
            };
            let resolve = repos.iter().find_map(|(prefix, files)| {
                Some((
                    files,
                    path.strip_prefix(&format!("/{prefix}/resolve/main/"))?,
                ))
            });
            let listing = repos.iter().find_map(|(prefix, files)| {
                let api = match prefix.strip_prefix("datasets/") {
                    Some(repo) => format!("/api/datasets/{repo}/revision/main"),
                    None => format!("/api/models/{prefix}/revision/main"),
                };
                (path == api).then_some(files)
            });
            let (status, headers, body): (&str, Vec<(String, String)>, Vec<u8>) =
                if let Some(etag) = path.strip_prefix("/cdn/") {
                    match by_etag(etag) {
                        Some(b) => ("200 OK", vec![], b.clone()),
                        None => ("404 Not Found", vec![], vec![]),
                    }
                } else if let Some(files) = listing {
                    let siblings: Vec<_> = files
                        .keys()
                        .map(|f| serde_json::json!({ "rfilename": f }))
                        .collect();
                    let body = serde_json::json!({"sha": COMMIT, "siblings": siblings});
                    ("200 OK", vec![], body.to_string().into_bytes())
                } else if let Some((files, file)) = resolve {
                    match files.get(file) {
                        Some(b) => {
                            let etag = etag_of(b);
                            let mut h = vec![
                                ("X-Repo-Commit".into(), COMMIT.into()),
                                ("X-Linked-Etag".into(), format!("\"{etag}\"")),
                                ("ETag".into(), "\"git-etag-of-the-pointer\"".into()),
                            ];
                            if file.ends_with(".safetensors") || file.ends_with(".parquet") {
                                h.push(("Location".into(), format!("/cdn/{etag}")));
                                ("302 Found", h, vec![])
                            } else {
                                ("200 OK", h, b.clone())
                            }
                        }
                        None => (
                            "404 Not Found",
                            vec![
                                ("X-Repo-Commit".into(), COMMIT.into()),
                                ("X-Error-Code".into(), "EntryNotFound".into()),
                            ],
                            vec![],
                        ),
                    }
                } else {
                    (
                        "404 Not Found",
                        vec![("X-Error-Code".into(), "RepoNotFound".into())],
                        vec![],
                    )
                };
            let mut head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = stream.write_all(&body);
            }
        }
    });
    (addr, seen)
}

#[test]
fn missing_files_download_into_the_huggingface_hub_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let files = tiny_model_files();
    let (endpoint, seen) = serve(BTreeMap::from([("org/tiny".to_string(), files.clone())]));
    let env = [
        ("HF_HUB_CACHE", cache.to_str().unwrap()),
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_TOKEN", "hf_secret"),
    ];
    let args = [
        "generate",
        "--model",
        "org/tiny",
        "--prompt",
        "Shall I",
        "--max-new-tokens",
        "3",
        "--ids",
    ];
    let (ok, ids, err) = kiln(&args, &env);
    assert!(ok, "{err}");
    let repo = cache.join("models--org--tiny");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT
    );
    for (name, bytes) in &files {
        let etag = etag_of(bytes);
        let link = repo.join("snapshots").join(COMMIT).join(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../../blobs/{etag}")),
            "{name}"
        );
        assert_eq!(&std::fs::read(&link).unwrap(), bytes, "{name}");
    }
    // Files the repository lacks are remembered, as huggingface_hub does.
    assert!(repo
        .join(".no_exist")
        .join(COMMIT)
        .join("vocab.json")
        .is_file());
    assert!(!std::fs::read_dir(repo.join("blobs")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".incomplete")));
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.requests.iter().any(|r| r.starts_with("GET /cdn/")),
            "the 302 was followed: {:?}",
            seen.requests
        );
        let resolve: Vec<_> = seen
            .requests
            .iter()
            .zip(&seen.auth)
            .filter(|(r, _)| r.contains("/resolve/"))
            .collect();
        assert!(!resolve.is_empty());
        for (r, auth) in resolve {
            assert_eq!(auth.as_deref(), Some("Bearer hf_secret"), "{r}");
        }
    }
    // The downloaded cache now serves offline, with the same answer.
    let (ok, again, err) = kiln(
        &args,
        &[
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(ids, again);
    // A repository the server does not know is one clear error.
    let (ok, _, err) = kiln(&["generate", "--model", "org/other", "--prompt", "a"], &env);
    assert!(
        !ok && err.contains("404") && err.contains("org/other"),
        "{err}"
    );
}

/// The parquet shards of `fixtures/hub/wikitext-tiny`, as the files of a
/// dataset repository with config `tiny-raw`.
fn dataset_files() -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hub/wikitext-tiny");
    let mut files = BTreeMap::new();
    for split in ["train", "validation", "test"] {
        let name = format!("{split}-00000-of-00001.parquet");
        files.insert(
            format!("tiny-raw/{name}"),
            std::fs::read(dir.join(&name)).unwrap(),
        );
    }
    files.insert("README.md".into(), b"# tiny\n".to_vec());
    files
}

fn expected_tokens(split: &str) -> usize {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hub/wikitext-tiny/expected.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[split].as_array().unwrap().len()
}

/// The seed workflow by names: train on a hub model and a hub dataset,
/// then evaluate a split with a stride — offline from a cache, and online
/// from the loopback hub into an empty cache.
#[test]
fn train_and_eval_by_hub_names() {
    let tmp = tempfile::tempdir().unwrap();
    let offline_cache = tmp.path().join("offline");
    fake_cache(&offline_cache, "models--org--tiny", &tiny_model_files());
    fake_cache(&offline_cache, "datasets--org--data", &dataset_files());
    let online_cache = tmp.path().join("online");
    let (endpoint, _seen) = serve(BTreeMap::from([
        ("org/tiny".to_string(), tiny_model_files()),
        ("datasets/org/data".to_string(), dataset_files()),
    ]));
    let offline = [
        ("HF_HUB_CACHE", offline_cache.to_str().unwrap()),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let online = [
        ("HF_HUB_CACHE", online_cache.to_str().unwrap()),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    for (name, env) in [("offline", &offline[..]), ("online", &online[..])] {
        let out = tmp.path().join(format!("run-{name}"));
        let (ok, _, err) = kiln(
            &[
                "train",
                "--model",
                "org/tiny",
                "--dataset",
                "org/data:tiny-raw",
                "--output-dir",
                out.to_str().unwrap(),
                "--max-steps",
                "2",
                "--num-train-epochs",
                "1",
                "--block-size",
                "32",
                "--per-device-train-batch-size",
                "2",
                "--save-steps",
                "10000",
                "--save-total-limit",
                "2",
                "--no-progress",
            ],
            env,
        );
        assert!(ok, "{name}: {err}");
        let train = expected_tokens("train");
        assert!(err.contains(&format!("on {train} tokens")), "{name}: {err}");
        assert!(err.contains("validation loss"), "{name}: {err}");
        let final_dir = out.join("final");
        let (ok, json, err) = kiln(
            &[
                "eval",
                "--model",
                final_dir.to_str().unwrap(),
                "--dataset",
                "org/data:tiny-raw",
                "--split",
                "test",
                "--block-size",
                "32",
                "--stride",
                "16",
                "--json",
            ],
            env,
        );
        assert!(ok, "{name}: {err}");
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert!(v["perplexity"].as_f64().unwrap() > 1.0, "{json}");
        // The page's count: every token but the first, less one per
        // window after the first.
        let n = expected_tokens("test");
        let windows = (n - 32).div_ceil(16) + 1;
        assert_eq!(
            v["tokens"].as_u64().unwrap() as usize,
            n - windows,
            "{json}"
        );
    }
    // The download left the dataset in huggingface_hub's layout.
    let snap = online_cache
        .join("datasets--org--data/snapshots")
        .join(COMMIT);
    assert!(
        std::fs::read_link(snap.join("tiny-raw/train-00000-of-00001.parquet"))
            .unwrap()
            .starts_with("../../../blobs")
    );
    // A split that does not exist names what the dataset has.
    let (ok, _, err) = kiln(
        &[
            "eval",
            "--model",
            "org/tiny",
            "--dataset",
            "org/data:other",
            "--split",
            "test",
        ],
        &offline,
    );
    assert!(
        !ok && err.contains("other/test-*.parquet") && err.contains("tiny-raw/test-00000"),
        "{err}"
    );
}
