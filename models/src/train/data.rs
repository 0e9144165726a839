//! Training data: text files tokenised once into a cached token file, and
//! the two ways of cutting them into `(B, T)` batches.
//!
//! The cache (`<name>.tokens`) starts with a one-line JSON header that
//! records the tokenizer's fingerprint and each source file's path, size
//! and content hash, then the ids as little-endian `u32`. A cache whose
//! header does not match the current tokenizer and sources is rebuilt, so a
//! stale cache is never used. It is written atomically (temp + rename).

use std::path::{Path, PathBuf};

use kiln_tensor::{Rng, Tensor};
use serde::{Deserialize, Serialize};

use super::sources::{read_source, tokenize_sources, SourceKind};
use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

const MAGIC: &str = "kiln-tokens-v1";

/// FNV-1a, 64-bit: a small, stable hash for fingerprints (not security).
pub fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// A fingerprint of a tokenizer: every token's text and the merge behaviour
/// on a probe string, hashed.
pub fn tokenizer_fingerprint(tok: &Tokenizer) -> String {
    let mut h = FNV_OFFSET;
    for id in 0..tok.vocab_size() as u32 {
        h = fnv1a(tok.id_to_token(id).unwrap_or("").as_bytes(), h);
        h = fnv1a(&[0], h);
    }
    let probe = "The quick brown fox's 2026 jumps—naïvely—over 東京 <|endoftext|> ok";
    for id in tok.encode(probe) {
        h = fnv1a(&id.to_le_bytes(), h);
    }
    format!("{h:016x}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SourceInfo {
    path: String,
    bytes: u64,
    hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    magic: String,
    tokenizer: String,
    sources: Vec<SourceInfo>,
    tokens: u64,
}

/// The text files named by `paths`: files as given, folders expanded to
/// their `*.txt`, `*.parquet` and `*.jsonl` files (sorted, not recursive).
///
/// # Errors
/// [`ModelError::Io`] naming a path that does not exist or a folder with
/// no such files.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|error| ModelError::Io {
                    path: p.clone(),
                    error,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.is_file()
                        && f.extension()
                            .is_some_and(|x| x == "txt" || x == "parquet" || x == "jsonl")
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(ModelError::Io {
                    path: p.clone(),
                    error: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "folder holds no .txt, .parquet or .jsonl files",
                    ),
                });
            }
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(ModelError::Io {
                path: p.clone(),
                error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
    }
    Ok(out)
}

/// Tokenises `files` (text documents joined by `<|endoftext|>`, as GPT-2
/// was trained; rows of `.parquet` / `.jsonl` files from their `text`
/// column, concatenated as transformers' `run_clm.py` does) and caches the
/// ids at `cache`; reuses the cache when its header matches the tokenizer
/// and the files' current contents. See [`load_tokens_with`].
///
/// # Errors
/// As [`load_tokens_with`].
pub fn load_tokens(files: &[PathBuf], tok: &Tokenizer, cache: &Path) -> Result<Vec<u32>> {
    load_tokens_with(files, "text", tok, Some(cache))
}

/// [`load_tokens`] with the column (or JSON field) that holds the text of
/// table files, and an optional cache.
///
/// # Errors
/// [`ModelError::Io`] for unreadable, non-UTF-8 or malformed files (naming
/// the file, and the column or line) or an unwritable cache;
/// [`ModelError::Input`] if the files hold no text.
pub fn load_tokens_with(
    files: &[PathBuf],
    text_column: &str,
    tok: &Tokenizer,
    cache: Option<&Path>,
) -> Result<Vec<u32>> {
    let mut raws = Vec::with_capacity(files.len());
    let mut sources = Vec::with_capacity(files.len());
    for f in files {
        let raw = std::fs::read(f).map_err(|error| ModelError::Io {
            path: f.to_path_buf(),
            error,
        })?;
        let mut hash = fnv1a(&raw, FNV_OFFSET);
        if SourceKind::of(f) != SourceKind::Text {
            hash = fnv1a(text_column.as_bytes(), fnv1a(&[0], hash));
        }
        sources.push(SourceInfo {
            path: f.display().to_string(),
            bytes: raw.len() as u64,
            hash: format!("{hash:016x}"),
        });
        raws.push(raw);
    }
    let fingerprint = tokenizer_fingerprint(tok);
    if let Some(ids) = cache.and_then(|c| read_cache(c, &fingerprint, &sources)) {
        return Ok(ids);
    }
    let mut texts = Vec::with_capacity(files.len());
    for (f, raw) in files.iter().zip(&raws) {
        texts.push(read_source(f, raw, text_column)?);
    }
    let ids = tokenize_sources(&texts, tok);
    if ids.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        return Err(ModelError::Input(format!(
            "no text to train on: {} is empty",
            names.join(", ")
        )));
    }
    if let Some(cache) = cache {
        let header = Header {
            magic: MAGIC.into(),
            tokenizer: fingerprint,
            sources,
            tokens: ids.len() as u64,
        };
        write_cache(cache, &header, &ids)?;
    }
    Ok(ids)
}

fn read_cache(cache: &Path, fingerprint: &str, sources: &[SourceInfo]) -> Option<Vec<u32>> {
    let bytes = std::fs::read(cache).ok()?;
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let header: Header = serde_json::from_slice(&bytes[..nl]).ok()?;
    let body = &bytes[nl + 1..];
    if header.magic != MAGIC
        || header.tokenizer != fingerprint
        || header.sources != sources
        || body.len() as u64 != header.tokens * 4
    {
        return None;
    }
    Some(
        body.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

fn write_cache(cache: &Path, header: &Header, ids: &[u32]) -> Result<()> {
    let io = |error| ModelError::Io {
        path: cache.to_path_buf(),
        error,
    };
    if let Some(dir) = cache.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut buf = serde_json::to_vec(header).expect("header serialises");
    buf.push(b'\n');
    buf.reserve(ids.len() * 4);
    for id in ids {
        buf.extend_from_slice(&id.to_le_bytes());
    }
    crate::gpt2::write_atomic(cache, &buf)
}

/// One batch: inputs and the targets the loss compares each position with
/// (−100 where nothing is predicted).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids `(B, T)`, i64.
    pub input: Tensor,
    /// Target ids `(B, T)`, i64, −100 to ignore.
    pub targets: Tensor,
}

impl Batch {
    /// Number of predicted tokens (targets other than −100).
    pub fn predicted(&self) -> usize {
        self.targets
            .to_vec::<i64>()
            .map_or(0, |t| t.iter().filter(|&&x| x != -100).count())
    }
}

/// How batches are cut from the token stream (`kiln train --sampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BatchSampling {
    /// nanoGPT: `B` windows at random offsets each step, targets = the next
    /// tokens (every position predicts).
    Random,
    /// transformers' `group_texts`: consecutive blocks of `T` tokens, shuffled
    /// once per epoch; the last position of a block predicts nothing.
    Sequential,
}

/// Where a batcher is in its stream; saved in checkpoints so a resumed run
/// sees exactly the batches the uninterrupted run would have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Generator state (`Rng::state`).
    pub rng: ([u64; 4], Option<u64>),
    /// Epoch number (sequential mode).
    pub epoch: u64,
    /// Next block in this epoch's order (sequential mode).
    pub cursor: u64,
}

/// Cuts a token stream into batches.
#[derive(Debug, Clone)]
pub struct Batcher {
    ids: Vec<u32>,
    batch: usize,
    block: usize,
    mode: BatchSampling,
    rng: Rng,
    order: Vec<usize>,
    epoch: u64,
    cursor: usize,
    seed: u64,
}

impl Batcher {
    /// A batcher over `ids` with `batch` rows of `block` tokens.
    ///
    /// # Errors
    /// [`ModelError::Input`] if the text is too short for one block.
    pub fn new(
        ids: Vec<u32>,
        batch: usize,
        block: usize,
        mode: BatchSampling,
        seed: u64,
    ) -> Result<Batcher> {
        let need = match mode {
            BatchSampling::Random => block + 1,
            BatchSampling::Sequential => block,
        };
        if ids.len() < need || block < 2 {
            return Err(ModelError::Input(format!(
                "the text has {} tokens, too short for one block of {block} (need at least {need}); lower --block-size or add text",
                ids.len()
            )));
        }
        let mut b = Batcher {
            ids,
            batch: batch.max(1),
            block,
            mode,
            rng: Rng::new(seed),
            order: Vec::new(),
            epoch: 0,
            cursor: 0,
            seed,
        };
        b.shuffle();
        Ok(b)
    }

    /// Number of whole blocks (sequential mode's epoch length in rows).
    pub fn num_blocks(&self) -> usize {
        self.ids.len() / self.block
    }

    /// Batches per epoch in sequential mode (the last may be smaller);
    /// in random mode, the batches that see as many tokens as the text has.
    pub fn batches_per_epoch(&self) -> usize {
        self.num_blocks().div_ceil(self.batch).max(1)
    }

    fn shuffle(&mut self) {
        if self.mode != BatchSampling::Sequential {
            return;
        }
        // A fresh permutation per epoch, from (seed, epoch) alone.
        let mut r =
            Rng::new(self.seed ^ (self.epoch.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.order = (0..self.num_blocks()).collect();
        for i in (1..self.order.len()).rev() {
            let j = r.below(i as u64 + 1) as usize;
            self.order.swap(i, j);
        }
    }

    /// The current position, for checkpoints.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            rng: self.rng.state(),
            epoch: self.epoch,
            cursor: self.cursor as u64,
        }
    }

    /// Restores a position saved by [`Batcher::state`].
    pub fn set_state(&mut self, s: &BatcherState) {
        self.rng = Rng::from_state(s.rng.0, s.rng.1);
        self.epoch = s.epoch;
        self.shuffle();
        self.cursor = (s.cursor as usize).min(self.order.len());
    }

    /// Epochs completed so far (sequential mode).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The next batch.
    ///
    /// # Errors
    /// Never in practice (shapes are consistent); `Result` for the tensor calls.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let (b, t) = (self.batch, self.block);
        let mut input = Vec::with_capacity(b * t);
        let mut targets = Vec::with_capacity(b * t);
        let rows = match self.mode {
            BatchSampling::Random => {
                for _ in 0..b {
                    let o = self.rng.below((self.ids.len() - t) as u64) as usize;
                    input.extend(self.ids[o..o + t].iter().map(|&i| i as i64));
                    targets.extend(self.ids[o + 1..o + t + 1].iter().map(|&i| i as i64));
                }
                b
            }
            BatchSampling::Sequential => {
                if self.cursor >= self.order.len() {
                    self.epoch += 1;
                    self.cursor = 0;
                    self.shuffle();
                }
                let take = b.min(self.order.len() - self.cursor);
                for k in 0..take {
                    let o = self.order[self.cursor + k] * t;
                    let blk = &self.ids[o..o + t];
                    input.extend(blk.iter().map(|&i| i as i64));
                    targets.extend(blk[1..].iter().map(|&i| i as i64));
                    targets.push(-100);
                }
                self.cursor += take;
                take
            }
        };
        Ok(Batch {
            input: Tensor::from_vec(input, &[rows, t])?,
            targets: Tensor::from_vec(targets, &[rows, t])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_epoch_visits_every_block_once() {
        let ids: Vec<u32> = (0..40).collect();
        let mut b = Batcher::new(ids, 3, 4, BatchSampling::Sequential, 1).unwrap();
        let mut starts = Vec::new();
        for _ in 0..b.batches_per_epoch() {
            let batch = b.next_batch().unwrap();
            let v = batch.input.to_vec::<i64>().unwrap();
            starts.extend(v.chunks(4).map(|c| c[0]));
            let t = batch.targets.to_vec::<i64>().unwrap();
            assert_eq!(t[3], -100);
            assert_eq!(t[0], v[1]);
        }
        starts.sort();
        assert_eq!(starts, (0..10).map(|i| i * 4).collect::<Vec<i64>>());
        assert_eq!(b.epoch(), 0);
        b.next_batch().unwrap();
        assert_eq!(b.epoch(), 1);
    }

    #[test]
    fn state_round_trip_replays_batches() {
        let ids: Vec<u32> = (0..500).map(|i| i % 97).collect();
        for mode in [BatchSampling::Random, BatchSampling::Sequential] {
            let mut a = Batcher::new(ids.clone(), 2, 8, mode, 5).unwrap();
            for _ in 0..7 {
                a.next_batch().unwrap();
            }
            let s = a.state();
            let mut b = Batcher::new(ids.clone(), 2, 8, mode, 5).unwrap();
            b.set_state(&s);
            for _ in 0..40 {
                let (x, y) = (a.next_batch().unwrap(), b.next_batch().unwrap());
                assert_eq!(
                    x.input.to_vec::<i64>().unwrap(),
                    y.input.to_vec::<i64>().unwrap()
                );
            }
        }
    }

    #[test]
    fn too_short_text_is_a_clear_error() {
        let e = Batcher::new(vec![1, 2, 3], 2, 8, BatchSampling::Random, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 tokens") && e.contains("block of 8"), "{e}");
    }

    #[test]
    fn cache_is_rebuilt_when_the_source_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.txt");
        std::fs::write(&f, "hello world").unwrap();
        let tok = Tokenizer::gpt2();
        let cache = dir.path().join("cache/a.tokens");
        let first = load_tokens(std::slice::from_ref(&f), &tok, &cache).unwrap();
        assert_eq!(first, tok.encode("hello world"));
        assert!(cache.is_file());
        std::fs::write(&f, "goodbye").unwrap();
        let second = load_tokens(std::slice::from_ref(&f), &tok, &cache).unwrap();
        assert_eq!(second, tok.encode("goodbye"));
        // Unchanged source: served from the cache (same ids).
        assert_eq!(load_tokens(&[f], &tok, &cache).unwrap(), second);
    }
}
