//! Datasets by hub name: the parquet shards of one split, as the hub's
//! parquet conversion lays them out (`{config}/{split}-00000-of-00001.parquet`).

use std::path::PathBuf;

use super::{walk, Hub, HubError, RepoId, RepoType};

/// Whether `path` (relative to a dataset's root) is a parquet shard of
/// `split`: `{config}/{split}-*.parquet` or `{config}/{split}.parquet`, as
/// the hub's parquet conversion and `push_to_hub` name them; without a
/// config, in the root, `data/` or `default/`.
pub fn is_split_file(path: &str, config: Option<&str>, split: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    let dir_ok = match config {
        Some(c) => dir == c,
        None => matches!(dir, "" | "data" | "default"),
    };
    let name_ok = name.ends_with(".parquet")
        && (name.starts_with(&format!("{split}-")) || name == format!("{split}.parquet"));
    dir_ok && name_ok
}

impl Hub {
    /// The parquet shards of one split of a dataset, sorted: from the
    /// cached snapshot when it has them (no network), else listed by the
    /// hub's API and downloaded into the cache like model files.
    ///
    /// # Errors
    /// [`HubError::NoSplit`] naming the pattern and the parquet files the
    /// dataset has; [`HubError::Offline`] when offline and not cached;
    /// request errors as [`Hub::try_get`].
    pub fn dataset_split(
        &self,
        id: &RepoId,
        config: Option<&str>,
        split: &str,
    ) -> Result<Vec<PathBuf>, HubError> {
        let matching = |files: &[String]| -> Vec<String> {
            files
                .iter()
                .filter(|f| is_split_file(f, config, split))
                .cloned()
                .collect()
        };
        if let Some(snap) = self.cached_snapshot(id) {
            let mut cached = Vec::new();
            walk(&snap, &snap, &mut cached);
            cached.sort();
            let hits = matching(&cached);
            if !hits.is_empty() || self.offline {
                return self.split_paths(id, config, split, &cached, hits);
            }
        }
        let files = self.list_files(id)?;
        let hits = matching(&files);
        self.split_paths(id, config, split, &files, hits)
    }

    fn split_paths(
        &self,
        id: &RepoId,
        config: Option<&str>,
        split: &str,
        all: &[String],
        hits: Vec<String>,
    ) -> Result<Vec<PathBuf>, HubError> {
        if hits.is_empty() {
            let parquet: Vec<&str> = all
                .iter()
                .filter(|f| f.ends_with(".parquet"))
                .map(String::as_str)
                .collect();
            return Err(HubError::NoSplit {
                id: id.to_string(),
                split: split.into(),
                config: config
                    .map(|c| format!(" of config {c:?}"))
                    .unwrap_or_default(),
                pattern: match config {
                    Some(c) => format!("{c}/{split}-*.parquet"),
                    None => format!("{split}-*.parquet in the root, data/ or default/"),
                },
                found: if parquet.is_empty() {
                    " (it has no parquet files)".into()
                } else {
                    format!(" (it has {})", parquet.join(", "))
                },
            });
        }
        hits.iter().map(|f| self.get(id, f)).collect()
    }
}

/// Parses `--dataset NAME[:CONFIG]` (`wikitext:wikitext-2-raw-v1`,
/// `Salesforce/wikitext@main:wikitext-2-raw-v1`).
///
/// # Errors
/// [`HubError::BadId`] for a malformed name.
pub fn parse_dataset(spec: &str) -> Result<(RepoId, Option<String>), HubError> {
    let (name, config) = match spec.split_once(':') {
        Some((n, c)) if !c.is_empty() => (n, Some(c.to_string())),
        Some(_) => {
            return Err(HubError::BadId {
                spec: spec.into(),
                reason: "nothing follows ':' (NAME:CONFIG)".into(),
            })
        }
        None => (spec, None),
    };
    Ok((RepoId::parse(name, RepoType::Dataset)?, config))
}
