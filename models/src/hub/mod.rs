//! Models and datasets by Hugging Face hub name (`gpt2`,
//! `openai-community/gpt2@main`, `Salesforce/wikitext`), through the cache
//! that `huggingface_hub` keeps — so a file Python downloaded is found here,
//! and a file Kiln downloads is found by `from_pretrained` afterwards.
//!
//! The cache, exactly as `huggingface_hub` lays it out:
//!
//! ```text
//! $HF_HUB_CACHE (else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
//!               else ~/.cache/huggingface/hub)
//! └── models--{org}--{name}/          (datasets--{org}--{name}/ for datasets;
//!     │                                 id `gpt2` is models--gpt2)
//!     ├── refs/{revision}             the commit hash a branch or tag points to
//!     ├── blobs/{etag}                file contents, named by the server's ETag
//!     ├── snapshots/{commit}/{path}   one tree per commit: symlinks into
//!     │                               ../../blobs (or plain files)
//!     └── .no_exist/{commit}/{path}   empty markers: known not to exist
//! ```
//!
//! A file already in the snapshot is used without any network access. A
//! missing one is downloaded unless `HF_HUB_OFFLINE` is set (then the error
//! names the id, the folder searched and the `hf download` command that
//! fills it): `HEAD {HF_ENDPOINT}/{repo}/resolve/{revision}/{path}` (without
//! following the redirect) gives the commit (`X-Repo-Commit`) and the blob
//! name (`X-Linked-Etag`, else `ETag`), then the body goes to
//! `blobs/{etag}.incomplete`, is renamed into place and linked from the
//! snapshot, and `refs/{revision}` records the commit — the steps of
//! `huggingface_hub.hf_hub_download`. `HF_TOKEN` (else the token file
//! `$HF_HOME/token`) is sent as a bearer token.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

mod dataset;

pub use dataset::{is_split_file, parse_dataset};

/// Whether a repository holds a model or a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoType {
    /// A model repository (`models--…` in the cache).
    Model,
    /// A dataset repository (`datasets--…`, URLs under `/datasets/`).
    Dataset,
}

impl RepoType {
    fn folder_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
        }
    }
}

/// A repository on the hub at a revision: `org/name@revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    /// `name` or `org/name`, as given (`gpt2` stays `gpt2`: its cache
    /// folder is `models--gpt2` even though the hub serves it as
    /// `openai-community/gpt2`).
    pub repo: String,
    /// Branch, tag or commit hash (`main` when not given).
    pub revision: String,
    /// Model or dataset.
    pub kind: RepoType,
}

/// Everything that can go wrong resolving or downloading hub files.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The text is not a hub id (`name`, `org/name`, optionally `@revision`).
    #[error("{spec:?} is not a Hugging Face repository id: {reason}")]
    BadId {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `HF_HUB_OFFLINE` is set and the file is not in the cache.
    #[error("{what} is not in the Hugging Face cache (searched {}) and HF_HUB_OFFLINE is set; fill the cache with `hf download {download}` (or `huggingface-cli download {download}`), or unset HF_HUB_OFFLINE", searched.display())]
    Offline {
        /// The id (and file) looked for.
        what: String,
        /// The cache folder searched.
        searched: PathBuf,
        /// The arguments of the download command that would fill it.
        download: String,
    },
    /// The hub answered that the repository, revision or file does not exist
    /// (or needs a token).
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What it probably means.
        hint: String,
    },
    /// The request could not be made (no network, refused connection, …).
    #[error("cannot download {url}: {reason} (set HF_HUB_OFFLINE=1 to use only the cache)")]
    Network {
        /// The URL asked for.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The hub's answer lacks what the cache layout needs.
    #[error("{url}: {reason}")]
    Protocol {
        /// The URL asked for.
        url: String,
        /// What is missing or malformed.
        reason: String,
    },
    /// A dataset has no parquet files for the split asked for.
    #[error("{id} has no parquet files for split {split:?}{config}: looked for {pattern}{found}")]
    NoSplit {
        /// The dataset.
        id: String,
        /// The split asked for.
        split: String,
        /// ` of config "…"`, or empty.
        config: String,
        /// The file pattern looked for.
        pattern: String,
        /// The parquet files the dataset does have, if any.
        found: String,
    },
    /// A cache file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks one part (`org` or `name`) as `huggingface_hub.validate_repo_id`
/// does: letters, digits, `-`, `_`, `.`; no `--` or `..`; not starting or
/// ending with `-` or `.`.
fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !part.contains("--")
        && !part.contains("..")
        && !part.starts_with(['-', '.'])
        && !part.ends_with(['-', '.'])
}

impl RepoId {
    /// Parses `name`, `org/name` or either with `@revision`.
    ///
    /// # Errors
    /// [`HubError::BadId`] saying what is wrong.
    pub fn parse(spec: &str, kind: RepoType) -> Result<RepoId, HubError> {
        let bad = |reason: &str| HubError::BadId {
            spec: spec.into(),
            reason: reason.into(),
        };
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return Err(bad("nothing follows '@'")),
            None => (spec, "main"),
        };
        if repo.len() > 96 {
            return Err(bad("longer than 96 characters"));
        }
        let parts: Vec<&str> = repo.split('/').collect();
        if parts.len() > 2 || !parts.iter().all(|p| valid_part(p)) {
            return Err(bad(
                "expected `name` or `org/name` of letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(RepoId {
            repo: repo.into(),
            revision: revision.into(),
            kind,
        })
    }

    /// The repository's folder in the cache: `models--org--name`.
    pub fn folder_name(&self) -> String {
        format!(
            "{}--{}",
            self.kind.folder_prefix(),
            self.repo.replace('/', "--")
        )
    }

    fn download_args(&self) -> String {
        let mut s = self.repo.clone();
        if self.kind == RepoType::Dataset {
            s.push_str(" --repo-type dataset");
        }
        if self.revision != "main" {
            s.push_str(&format!(" --revision {}", self.revision));
        }
        s
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == RepoType::Dataset {
            f.write_str("dataset ")?;
        }
        f.write_str(&self.repo)?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        Ok(())
    }
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `W/"abc"` → `abc`, as `huggingface_hub._normalize_etag`.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// Percent-encodes a revision for a URL path (`refs/pr/1` → `refs%2Fpr%2F1`).
fn quote_revision(rev: &str) -> String {
    let mut out = String::with_capacity(rev.len());
    for b in rev.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Access to the hub and its local cache, configured as `huggingface_hub`
/// is (see the module docs).
#[derive(Debug, Clone)]
pub struct Hub {
    /// The cache root (`…/huggingface/hub`).
    pub cache: PathBuf,
    /// The server, without a trailing `/` (`HF_ENDPOINT`, default
    /// `https://huggingface.co`).
    pub endpoint: String,
    /// The bearer token sent with requests.
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// Draw a progress bar on stderr while downloading.
    pub progress: bool,
}

impl Hub {
    /// The configuration `huggingface_hub` would use in this environment:
    /// `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HF_ENDPOINT`,
    /// `HF_TOKEN` (else `HF_TOKEN_PATH`, else `$HF_HOME/token`) and
    /// `HF_HUB_OFFLINE` (`1`, `true`, `yes` or `on`).
    pub fn from_env() -> Hub {
        let home = env_nonempty("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let xdg = env_nonempty("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(env_nonempty("HOME").unwrap_or_else(|| ".".into()))
                            .join(".cache")
                    });
                xdg.join("huggingface")
            });
        let cache = env_nonempty("HF_HUB_CACHE")
            .or_else(|| env_nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let endpoint = env_nonempty("HF_ENDPOINT")
            .unwrap_or_else(|| "https://huggingface.co".into())
            .trim_end_matches('/')
            .to_string();
        let token = env_nonempty("HF_TOKEN").or_else(|| {
            let path = env_nonempty("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join("token"));
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        });
        let offline = env_nonempty("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Hub {
            cache,
            endpoint,
            token,
            offline,
            progress: true,
        }
    }

    /// The repository's folder in the cache.
    pub fn repo_dir(&self, id: &RepoId) -> PathBuf {
        self.cache.join(id.folder_name())
    }

    /// The cached commit of `id`'s revision: the revision itself when it is
    /// a commit hash, else what `refs/{revision}` says.
    pub fn cached_commit(&self, id: &RepoId) -> Option<String> {
        if is_commit_hash(&id.revision) {
            return Some(id.revision.clone());
        }
        let text =
            std::fs::read_to_string(self.repo_dir(id).join("refs").join(&id.revision)).ok()?;
        let commit = text.trim();
        (!commit.is_empty()).then(|| commit.to_string())
    }

    /// The cached snapshot folder of `id`'s revision, if there is one.
    pub fn cached_snapshot(&self, id: &RepoId) -> Option<PathBuf> {
        let dir = self
            .repo_dir(id)
            .join("snapshots")
            .join(self.cached_commit(id)?);
        dir.is_dir().then_some(dir)
    }

    fn offline_error(&self, id: &RepoId, file: Option<&str>) -> HubError {
        HubError::Offline {
            what: match file {
                Some(f) => format!("{f} of {id}"),
                None => id.to_string(),
            },
            searched: self.repo_dir(id),
            download: id.download_args(),
        }
    }

    /// The local path of `file` in `id`, downloading it into the cache if
    /// it is missing; `Ok(None)` when the repository has no such file.
    ///
    /// # Errors
    /// [`HubError::Offline`] when it is not cached and `HF_HUB_OFFLINE` is
    /// set; [`HubError::Status`] for a missing repository or revision or a
    /// refused token; [`HubError::Network`], [`HubError::Protocol`],
    /// [`HubError::Io`] otherwise.
    pub fn try_get(&self, id: &RepoId, file: &str) -> Result<Option<PathBuf>, HubError> {
        let repo_dir = self.repo_dir(id);
        if let Some(commit) = self.cached_commit(id) {
            let path = repo_dir.join("snapshots").join(&commit).join(file);
            if path.is_file() {
                return Ok(Some(path));
            }
            if repo_dir.join(".no_exist").join(&commit).join(file).exists() {
                return Ok(None);
            }
        }
        if self.offline {
            let what = self.cached_snapshot(id).map(|_| file);
            return Err(self.offline_error(id, what));
        }
        self.download(id, file)
    }

    /// [`Hub::try_get`] for a file that must exist.
    ///
    /// # Errors
    /// As [`Hub::try_get`], and [`HubError::Status`] (404) when the
    /// repository has no such file.
    pub fn get(&self, id: &RepoId, file: &str) -> Result<PathBuf, HubError> {
        self.try_get(id, file)?.ok_or_else(|| HubError::Status {
            url: self.url(id, file),
            status: 404,
            hint: format!(" ({id} has no file {file})"),
        })
    }

    /// The `resolve` URL of `file` in `id`.
    pub fn url(&self, id: &RepoId, file: &str) -> String {
        let prefix = match id.kind {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
        };
        format!(
            "{}/{prefix}{}/resolve/{}/{file}",
            self.endpoint,
            id.repo,
            quote_revision(&id.revision)
        )
    }

    fn agent(&self, redirects: u32) -> ureq::Agent {
        ureq::Agent::config_builder()
            .max_redirects(redirects)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    fn status_error(id: &RepoId, url: &str, status: u16) -> HubError {
        let hint = match status {
            401 | 403 => {
                format!(" ({id} is private or gated: set HF_TOKEN to a token with access)")
            }
            404 => format!(" (no repository, revision or file of that name in {id})"),
            _ => String::new(),
        };
        HubError::Status {
            url: url.into(),
            status,
            hint,
        }
    }

    fn download(&self, id: &RepoId, file: &str) -> Result<Option<PathBuf>, HubError> {
        let url = self.url(id, file);
        let net = |e: ureq::Error| HubError::Network {
            url: url.clone(),
            reason: e.to_string(),
        };
        // HEAD without following the redirect: the commit and the blob's
        // name are on the hub's own answer, not on the CDN's.
        let head = self
            .with_auth(self.agent(0).head(&url))
            .header("Accept-Encoding", "identity")
            .call()
            .map_err(net)?;
        let status = head.status().as_u16();
        let header = |name: &str| {
            head.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let commit = header("x-repo-commit");
        if status == 404 && header("x-error-code").as_deref() == Some("EntryNotFound") {
            // Remember that the file does not exist, as huggingface_hub does.
            if let Some(c) = commit.filter(|c| is_commit_hash(c)) {
                let marker = self.repo_dir(id).join(".no_exist").join(&c).join(file);
                if let Some(parent) = marker.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                std::fs::write(&marker, b"").map_err(io_err(&marker))?;
                self.write_ref(id, &c)?;
            }
            return Ok(None);
        }
        if !(200..400).contains(&status) {
            return Err(Self::status_error(id, &url, status));
        }
        let protocol = |reason: &str| HubError::Protocol {
            url: url.clone(),
            reason: reason.into(),
        };
        let commit = commit
            .filter(|c| is_commit_hash(c))
            .ok_or_else(|| protocol("no X-Repo-Commit header with a commit hash"))?;
        let etag = header("x-linked-etag")
            .or_else(|| header("etag"))
            .map(|e| normalize_etag(&e))
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\']))
            .ok_or_else(|| protocol("no ETag header"))?;
        let location = match header("location") {
            Some(l) if l.starts_with('/') => format!("{}{l}", self.endpoint),
            Some(l) if (300..400).contains(&status) => l,
            _ => url.clone(),
        };
        let repo_dir = self.repo_dir(id);
        let blob = repo_dir.join("blobs").join(&etag);
        if !blob.is_file() {
            self.fetch_blob(&location, &blob, file)?;
        }
        let link = repo_dir.join("snapshots").join(&commit).join(file);
        link_into_snapshot(&blob, &link, &etag)?;
        self.write_ref(id, &commit)?;
        Ok(Some(link))
    }

    fn write_ref(&self, id: &RepoId, commit: &str) -> Result<(), HubError> {
        if id.revision == commit {
            return Ok(());
        }
        let path = self.repo_dir(id).join("refs").join(&id.revision);
        if std::fs::read_to_string(&path).is_ok_and(|c| c == commit) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&path, commit).map_err(io_err(&path))
    }

    /// GETs `url` (following redirects) into `blob.incomplete`, then
    /// renames it to `blob`.
    fn fetch_blob(&self, url: &str, blob: &Path, file: &str) -> Result<(), HubError> {
        let net = |e: ureq::Error| HubError::Network {
            url: url.into(),
            reason: e.to_string(),
        };
        let resp = self
            .with_auth(self.agent(10).get(url))
            .header("Accept-Encoding", "identity")
            .call()
            .map_err(net)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(HubError::Status {
                url: url.into(),
                status,
                hint: String::new(),
            });
        }
        let total = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let dir = blob.parent().expect("a blob has a folder");
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut partial = blob.as_os_str().to_owned();
        partial.push(".incomplete");
        let partial = PathBuf::from(partial);
        let bar = match (self.progress, total) {
            (true, Some(n)) => ProgressBar::new(n),
            (true, None) => ProgressBar::new_spinner(),
            (false, _) => ProgressBar::hidden(),
        };
        if self.progress {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        bar.set_message(file.to_string());
        let mut out = std::fs::File::create(&partial).map_err(io_err(&partial))?;
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(HubError::Network {
                        url: url.into(),
                        reason: e.to_string(),
                    })
                }
            };
            out.write_all(&buf[..n]).map_err(io_err(&partial))?;
            got += n as u64;
            bar.set_position(got);
        }
        out.sync_all().map_err(io_err(&partial))?;
        drop(out);
        bar.finish_and_clear();
        if let Some(n) = total.filter(|&n| n != got) {
            let _ = std::fs::remove_file(&partial);
            return Err(HubError::Protocol {
                url: url.into(),
                reason: format!("got {got} bytes of the {n} announced"),
            });
        }
        std::fs::rename(&partial, blob).map_err(io_err(blob))
    }

    /// Lists the files of `id` at its revision: from the hub's API
    /// (`/api/{models|datasets}/{repo}/revision/{revision}`, whose `sha`
    /// also fills `refs/{revision}`), or offline from the cached snapshot.
    ///
    /// # Errors
    /// [`HubError::Offline`] when offline with nothing cached; request
    /// errors as [`Hub::try_get`].
    pub fn list_files(&self, id: &RepoId) -> Result<Vec<String>, HubError> {
        if self.offline {
            let snap = self
                .cached_snapshot(id)
                .ok_or_else(|| self.offline_error(id, None))?;
            let mut files = Vec::new();
            walk(&snap, &snap, &mut files);
            files.sort();
            return Ok(files);
        }
        let url = format!(
            "{}/api/{}/{}/revision/{}",
            self.endpoint,
            id.kind.folder_prefix(),
            id.repo,
            quote_revision(&id.revision)
        );
        let net = |e: ureq::Error| HubError::Network {
            url: url.clone(),
            reason: e.to_string(),
        };
        let resp = self
            .with_auth(self.agent(10).get(&url))
            .call()
            .map_err(net)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Self::status_error(id, &url, status));
        }
        let text = resp
            .into_body()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(net)?;
        let info: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| HubError::Protocol {
                url: url.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        if let Some(sha) = info["sha"].as_str().filter(|s| is_commit_hash(s)) {
            self.write_ref(id, sha)?;
        }
        let mut files: Vec<String> = info["siblings"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|f| f["rfilename"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        Ok(files)
    }

    /// A model repository as a local folder: its snapshot, with
    /// `config.json` and `model.safetensors` (required) and the tokenizer
    /// and generation files (when the repository has them) in place.
    ///
    /// # Errors
    /// As [`Hub::get`].
    pub fn model_dir(&self, id: &RepoId) -> Result<PathBuf, HubError> {
        let config = self.get(id, "config.json")?;
        self.get(id, "model.safetensors")?;
        for optional in [
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
            "merges.txt",
        ] {
            match self.try_get(id, optional) {
                Ok(_) => {}
                // A cached model is usable without its optional files.
                Err(HubError::Offline { .. } | HubError::Network { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(config.parent().expect("a file has a folder").to_path_buf())
    }
}

/// Files under `dir`, as paths relative to `root` with `/`.
pub(crate) fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if path.is_file() {
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
}

/// Makes `link` (in `snapshots/{commit}/…`) point at `blob` by a relative
/// symlink, as huggingface_hub does (`../../blobs/{etag}`, one more `..`
/// per folder of the file's path); a copy where symlinks are not allowed.
fn link_into_snapshot(blob: &Path, link: &Path, etag: &str) -> Result<(), HubError> {
    let dir = link.parent().expect("a snapshot file has a folder");
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    if link.exists() || link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).map_err(io_err(link))?;
    }
    // snapshots/{commit}/a/b/file → ../../../blobs/{etag}: up from the
    // file's folder to the repository folder.
    let repo_dir = blob
        .parent()
        .and_then(Path::parent)
        .expect("blobs live in repo/blobs");
    let depth = dir
        .strip_prefix(repo_dir)
        .map(|p| p.components().count())
        .unwrap_or(2);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push("blobs");
    target.push(etag);
    #[cfg(unix)]
    if std::os::unix::fs::symlink(&target, link).is_ok() {
        return Ok(());
    }
    std::fs::copy(blob, link).map_err(io_err(link))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_as_huggingface_hub_validates_them() {
        let id = RepoId::parse("openai-community/gpt2@v1.0", RepoType::Model).unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("openai-community/gpt2", "v1.0")
        );
        assert_eq!(id.folder_name(), "models--openai-community--gpt2");
        let id = RepoId::parse("gpt2", RepoType::Model).unwrap();
        assert_eq!(
            (id.folder_name().as_str(), id.revision.as_str()),
            ("models--gpt2", "main")
        );
        let id = RepoId::parse("Salesforce/wikitext", RepoType::Dataset).unwrap();
        assert_eq!(id.folder_name(), "datasets--Salesforce--wikitext");
        for bad in [
            "",
            "a/b/c",
            "/abs/path",
            "./dir",
            "gpt2/",
            "a--b",
            "x@",
            "a b",
        ] {
            assert!(RepoId::parse(bad, RepoType::Model).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn etags_and_revisions_are_normalised() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(quote_revision("refs/pr/1"), "refs%2Fpr%2F1");
    }
}
