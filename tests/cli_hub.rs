//! `--model ID` through the Hugging Face cache: a cache laid out as
//! `huggingface_hub` writes it (refs, snapshots, symlinks into blobs) used
//! with `HF_HUB_OFFLINE=1`, the one-line error when it is not cached, and
//! downloading from a loopback server that speaks the hub's `resolve`
//! protocol (`X-Repo-Commit`, `X-Linked-Etag`/`ETag`, a 302 to a CDN path,
//! `X-Error-Code: EntryNotFound`) into that same layout.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{etag_of, kiln, serve, COMMIT};

use kiln::models::gpt2::{save_model_dir, Gpt2, Gpt2Config};
use kiln::models::tokenizer::Tokenizer;

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
