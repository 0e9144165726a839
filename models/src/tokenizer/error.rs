//! The tokenizer's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer or decoding ids.
///
/// Loading errors name the file (and the line, for merges) so a user can find
/// and fix the problem; encoding never fails. For I/O and JSON errors the
/// underlying cause is the error's [`source`](std::error::Error::source)
/// (print the chain, e.g. with `anyhow`'s `{:#}`, to see it).
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A tokenizer file could not be read (missing, unreadable, or not UTF-8).
    #[error("cannot read tokenizer file {}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A directory holds no `tokenizer.json`, no `vocab.json` +
    /// `merges.txt` and no `encoder.json` + `vocab.bpe`.
    #[error(
        "no tokenizer found in {}: expected tokenizer.json, vocab.json and merges.txt, or encoder.json and vocab.bpe",
        dir.display()
    )]
    NotFound {
        /// The directory that was searched.
        dir: PathBuf,
    },
    /// The vocabulary file is not a JSON object mapping token strings to ids.
    #[error("malformed vocabulary JSON in {}", path.display())]
    VocabJson {
        /// The vocabulary file.
        path: PathBuf,
        /// Where and how the JSON is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The vocabulary parses but cannot serve as a byte-level BPE vocabulary.
    #[error("bad vocabulary {}: {reason}", path.display())]
    BadVocab {
        /// The vocabulary file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A line of the merges file is malformed or names unknown tokens.
    #[error("bad merges file {}, line {line}: {reason}", path.display())]
    BadMerge {
        /// The merges file.
        path: PathBuf,
        /// The 1-based line number in that file.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A `tokenizer.json` parses but is malformed (a bad merge rule, …).
    #[error("bad tokenizer file {}: {reason}", path.display())]
    BadTokenizerJson {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// What is wrong, with the JSON path of the bad part.
        reason: String,
    },
    /// A `tokenizer.json` describes a tokenizer Kiln does not implement
    /// (not byte-level BPE, a normalizer, BPE dropout, …).
    #[error(
        "{}: unsupported tokenizer: {field} is {found}; Kiln implements GPT-2-style byte-level BPE only",
        path.display()
    )]
    Unsupported {
        /// The `tokenizer.json` file.
        path: PathBuf,
        /// The JSON field that differs from byte-level BPE.
        field: String,
        /// Its value there.
        found: String,
    },
    /// A token id passed to decode is not in the vocabulary.
    #[error("unknown token id {id}: the vocabulary has ids 0..{vocab_size}")]
    UnknownId {
        /// The offending id.
        id: u32,
        /// The tokenizer's vocabulary size.
        vocab_size: usize,
    },
    /// The decoded bytes are not valid UTF-8 (the ids split or garble a
    /// multi-byte character); use a lossy decode to get U+FFFD instead.
    #[error("decoded text is not valid UTF-8 (first bad byte at offset {valid_up_to})")]
    InvalidUtf8 {
        /// Length of the longest valid UTF-8 prefix of the decoded bytes.
        valid_up_to: usize,
    },
}
