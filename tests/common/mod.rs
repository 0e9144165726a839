//! Helpers shared by the hub tests: running `kiln` with a clean hub
//! environment, and a loopback server that speaks the hub's `resolve`
//! protocol.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The commit the loopback hub reports for `main`.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Runs the `kiln` binary with `args`, the hub variables of this process
/// removed and `env` set; returns (success, stdout, stderr).
pub fn kiln(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
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

/// A blob's name: any stable hex digest of its bytes (the hub uses the git
/// SHA-1 or the LFS SHA-256).
pub fn etag_of(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}{:016x}", h.rotate_left(17))
}

/// How the loopback hub names a file's blob (its ETag): `(path, bytes)`.
pub type EtagFn = Arc<dyn Fn(&str, &[u8]) -> String + Send + Sync>;

/// What the loopback hub saw.
#[derive(Default)]
pub struct Seen {
    /// `METHOD path` of each request.
    pub requests: Vec<String>,
    /// The `Authorization` header of each request.
    pub auth: Vec<Option<String>>,
}

/// Serves repositories at `main` = COMMIT like the hub, each under its URL
/// prefix (`org/tiny`, `datasets/org/data`): `HEAD|GET
/// /{prefix}/resolve/main/{file}` with `X-Repo-Commit` and `X-Linked-Etag`
/// (`.safetensors` and `.parquet` files answer 302 to `/cdn/{etag}`, as LFS
/// files do), 404 `EntryNotFound` for other files, and `GET
/// /api/{models|datasets}/{repo}/revision/main` listing the files.
pub fn serve(repos: BTreeMap<String, BTreeMap<String, Vec<u8>>>) -> (String, Arc<Mutex<Seen>>) {
    serve_with(repos, Arc::new(|_, b| etag_of(b)))
}

/// [`serve`] with blob names from `etag`.
pub fn serve_with(
    repos: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    etag: EtagFn,
) -> (String, Arc<Mutex<Seen>>) {
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
            let by_etag = |tag: &str| {
                repos
                    .values()
                    .flat_map(|f| f.iter())
                    .find(|(name, b)| etag(name, b) == tag)
                    .map(|(_, b)| b)
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
                            let etag = etag(file, b);
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

/// Copies the folder `src` to `dst`, recreating symbolic links as links
/// (a hub cache's snapshots are links into its blobs).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let kind = e.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if kind.is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}
