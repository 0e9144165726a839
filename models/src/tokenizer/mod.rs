//! GPT-2's byte-level BPE tokenizer, equal to Hugging Face `tokenizers`.
//!
//! Encoding runs in three steps:
//!
//! 1. the special token `<|endoftext|>` is cut out of the text wherever it
//!    occurs (as Hugging Face does for an added special token); the text
//!    between occurrences is encoded on its own;
//! 2. each stretch of text is split into pieces by GPT-2's pre-tokenizer
//!    pattern ([`pretokenize`](self) module: words with their leading space,
//!    numbers, punctuation runs, whitespace runs, contractions);
//! 3. each piece's UTF-8 bytes are merged by byte-pair encoding, lowest
//!    merge rank first, into vocabulary ids.
//!
//! The vocabulary stores each token as text in GPT-2's byte alphabet, where
//! every byte is a visible character (the space byte is `Ġ`), so
//! [`Tokenizer::token_to_id`] and [`Tokenizer::id_to_token`] speak that form:
//! `token_to_id("Ġthe")` is the id of `" the"`. Decoding maps tokens back to
//! bytes and the bytes to UTF-8; [`StreamDecoder`] does it token by token.
//!
//! ```
//! use kiln_models::tokenizer::Tokenizer;
//! let tok = Tokenizer::gpt2();
//! let ids = tok.encode("Hello world, it's 2026!");
//! assert_eq!(ids, [15496, 995, 11, 340, 338, 1160, 2075, 0]);
//! assert_eq!(tok.decode(&ids)?, "Hello world, it's 2026!");
//! assert_eq!(tok.encode("a<|endoftext|>b"), [64, tok.eot_id(), 65]);
//! # Ok::<(), kiln_models::tokenizer::TokenizerError>(())
//! ```

mod bpe;
mod bytes;
mod decode;
mod error;
mod load;
mod piece_key;
mod pretokenize;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

pub use decode::StreamDecoder;
pub use error::TokenizerError;

use load::Tables;

/// The text of GPT-2's end-of-text special token.
pub const EOT_TEXT: &str = "<|endoftext|>";

/// GPT-2's vocabulary, embedded in the binary.
const GPT2_ENCODER_JSON: &str = include_str!("../../data/gpt2/encoder.json");
/// GPT-2's merges, embedded in the binary.
const GPT2_VOCAB_BPE: &str = include_str!("../../data/gpt2/vocab.bpe");

/// A GPT-2 style byte-level BPE tokenizer.
///
/// Cloning is cheap (the tables are shared), and a tokenizer can be used from
/// many threads at once.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Tables>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.inner.merges.len())
            .field("eot_id", &self.inner.eot_id)
            .finish()
    }
}

/// Reads a tokenizer file as UTF-8 text.
fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Tokenizer {
    /// OpenAI's GPT-2 tokenizer (50,257 tokens), from the vocabulary built
    /// into the library: no files or network needed. The tables are parsed
    /// on first use and shared by every later call.
    pub fn gpt2() -> Tokenizer {
        static GPT2: OnceLock<Tokenizer> = OnceLock::new();
        GPT2.get_or_init(|| {
            let tables = load::parse(
                GPT2_ENCODER_JSON,
                Path::new("<built-in gpt2>/encoder.json"),
                GPT2_VOCAB_BPE,
                Path::new("<built-in gpt2>/vocab.bpe"),
            )
            .expect("the built-in GPT-2 vocabulary is valid");
            Tokenizer {
                inner: Arc::new(tables),
            }
        })
        .clone()
    }

    /// Loads a tokenizer from a vocabulary JSON file (Hugging Face's
    /// `vocab.json`, OpenAI's `encoder.json`) and a merges file (`merges.txt`,
    /// `vocab.bpe`).
    ///
    /// The vocabulary must contain all 256 single-byte tokens and
    /// `<|endoftext|>`.
    ///
    /// # Errors
    /// A [`TokenizerError`] naming the file (and line) if a file is missing,
    /// unreadable, not UTF-8, or malformed.
    pub fn from_files(
        vocab_json: impl AsRef<Path>,
        merges: impl AsRef<Path>,
    ) -> Result<Tokenizer, TokenizerError> {
        let (vocab_path, merges_path) = (vocab_json.as_ref(), merges.as_ref());
        let vocab = read_text(vocab_path)?;
        let merges = read_text(merges_path)?;
        let tables = load::parse(&vocab, vocab_path, &merges, merges_path)?;
        Ok(Tokenizer {
            inner: Arc::new(tables),
        })
    }

    /// Loads a tokenizer from a directory holding `vocab.json` and
    /// `merges.txt` (Hugging Face names) or `encoder.json` and `vocab.bpe`
    /// (OpenAI names), tried in that order.
    ///
    /// # Errors
    /// [`TokenizerError::NotFound`] if the directory has neither pair, else
    /// as [`Tokenizer::from_files`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizerError> {
        let dir = dir.as_ref();
        for (vocab, merges) in [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")] {
            let (vocab, merges): (PathBuf, PathBuf) = (dir.join(vocab), dir.join(merges));
            if vocab.is_file() && merges.is_file() {
                return Tokenizer::from_files(vocab, merges);
            }
        }
        Err(TokenizerError::NotFound {
            dir: dir.to_path_buf(),
        })
    }

    /// Encodes `text` into token ids. Occurrences of `<|endoftext|>` become
    /// the special token [`Tokenizer::eot_id`]; everything else is encoded as
    /// Hugging Face `tokenizers` does for GPT-2 (with `<|endoftext|>` added as
    /// a special token, as `transformers`' `GPT2TokenizerFast` does).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut encoder = Encoder::new(&self.inner, text.len());
        let mut rest = text;
        while let Some(at) = rest.find(EOT_TEXT) {
            encoder.encode_ordinary(&rest[..at]);
            encoder.out.push(self.inner.eot_id);
            rest = &rest[at + EOT_TEXT.len()..];
        }
        encoder.encode_ordinary(rest);
        encoder.out
    }

    /// Encodes `text` with no special tokens: `<|endoftext|>` in the text is
    /// encoded as the ordinary characters `<`, `|`, `endoftext`, … Use this
    /// for untrusted text that must not be able to end a document.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut encoder = Encoder::new(&self.inner, text.len());
        encoder.encode_ordinary(text);
        encoder.out
    }

    /// Number of token ids: one more than the largest id (50,257 for GPT-2).
    pub fn vocab_size(&self) -> usize {
        self.inner.id_to_token.len()
    }

    /// Id of the end-of-text special token `<|endoftext|>` (50,256 for GPT-2).
    pub fn eot_id(&self) -> u32 {
        self.inner.eot_id
    }

    /// The id of a vocabulary token, given in GPT-2's byte alphabet (`"Ġthe"`
    /// for `" the"`), or `None` if it is not in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id.get(token).copied()
    }

    /// The vocabulary text of token `id`, in GPT-2's byte alphabet (`"Ġthe"`
    /// for `" the"`), or `None` if there is no such id. See
    /// [`Tokenizer::token_bytes`] for the bytes it stands for.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.inner.id_to_token.get(id as usize)?.as_deref()
    }
}

/// The state of one encode call: output, per-call cache of piece → ids, and
/// reusable BPE buffers.
struct Encoder<'t, 'a> {
    tables: &'t Tables,
    out: Vec<u32>,
    /// Each piece of up to 15 bytes that took the merge loop in this call,
    /// by packed key, with the range of `out` holding its ids (ordinary text
    /// repeats its words a lot).
    cache_short: FxHashMap<u128, (usize, usize)>,
    /// The same for longer pieces.
    cache_long: FxHashMap<&'a [u8], (usize, usize)>,
    scratch: bpe::Scratch,
}

impl<'t, 'a> Encoder<'t, 'a> {
    fn new(tables: &'t Tables, text_len: usize) -> Self {
        Encoder {
            tables,
            // GPT-2 averages a little over 3 bytes per token on English.
            out: Vec::with_capacity(text_len / 3 + 1),
            cache_short: FxHashMap::default(),
            cache_long: FxHashMap::default(),
            scratch: bpe::Scratch::default(),
        }
    }

    fn encode_ordinary(&mut self, text: &'a str) {
        let t = self.tables;
        let bytes = text.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let end = pretokenize::piece_end(text, start);
            let piece = &bytes[start..end];
            if let [b] = piece {
                self.out.push(t.byte_ids[*b as usize]);
            } else if let Some(key) = piece_key::short_key(bytes, start, end) {
                if let Some(&id) = t.whole.short.get(&key) {
                    self.out.push(id);
                } else if let Some(&(from, to)) = self.cache_short.get(&key) {
                    self.out.extend_from_within(from..to);
                } else {
                    let from = self.bpe(piece);
                    self.cache_short.insert(key, (from, self.out.len()));
                }
            } else if let Some(&id) = t.whole.long.get(piece) {
                self.out.push(id);
            } else if let Some(&(from, to)) = self.cache_long.get(piece) {
                self.out.extend_from_within(from..to);
            } else {
                let from = self.bpe(piece);
                self.cache_long.insert(piece, (from, self.out.len()));
            }
            start = end;
        }
    }

    /// Runs the merge loop on `piece`, appending its ids; returns where they
    /// start in `out`.
    fn bpe(&mut self, piece: &[u8]) -> usize {
        let from = self.out.len();
        let t = self.tables;
        bpe::encode_piece(
            &t.merges,
            &t.byte_ids,
            piece,
            &mut self.scratch,
            &mut self.out,
        );
        from
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_world() {
        let tok = Tokenizer::gpt2();
        assert_eq!(
            tok.encode("Hello world, it's 2026!"),
            [15496, 995, 11, 340, 338, 1160, 2075, 0]
        );
        assert_eq!(tok.vocab_size(), 50257);
        assert_eq!(tok.eot_id(), 50256);
        assert_eq!(tok.token_to_id("Ġthe"), Some(262));
        assert_eq!(tok.id_to_token(262), Some("Ġthe"));
        assert_eq!(tok.token_bytes(262), Some(&b" the"[..]));
        assert_eq!(tok.id_to_token(50257), None);
        assert_eq!(tok.token_to_id(EOT_TEXT), Some(50256));
    }

    #[test]
    fn special_token() {
        let tok = Tokenizer::gpt2();
        assert_eq!(tok.encode("<|endoftext|>"), [50256]);
        assert_eq!(
            tok.encode("a<|endoftext|><|endoftext|>b"),
            [64, 50256, 50256, 65]
        );
        assert!(!tok.encode_ordinary("<|endoftext|>").contains(&50256));
        assert_eq!(tok.decode(&[50256]).unwrap(), EOT_TEXT);
        assert_eq!(tok.encode(""), Vec::<u32>::new());
    }

    #[test]
    fn decode_errors() {
        let tok = Tokenizer::gpt2();
        let err = tok.decode(&[0, 99999]).unwrap_err();
        assert!(
            matches!(err, TokenizerError::UnknownId { id: 99999, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "unknown token id 99999: the vocabulary has ids 0..50257"
        );
        // "🦀" is four bytes in three tokens; its first token alone is not UTF-8.
        let crab = tok.encode("🦀");
        assert_eq!(crab, [8582, 99, 222]);
        assert!(matches!(
            tok.decode(&crab[..1]),
            Err(TokenizerError::InvalidUtf8 { valid_up_to: 0 })
        ));
        assert_eq!(tok.decode_lossy(&crab[..1]).unwrap(), "\u{FFFD}");
        assert_eq!(tok.decode_lossy(&[64, crab[0], 65]).unwrap(), "a\u{FFFD}b");
    }

    #[test]
    fn stream_decoder_holds_back_partial_characters() {
        let tok = Tokenizer::gpt2();
        let ids = tok.encode("🦀uro");
        let mut stream = tok.stream_decoder();
        let chunks: Vec<String> = ids
            .iter()
            .map(|&id| stream.push(id).unwrap().to_string())
            .collect();
        assert_eq!(chunks, ["", "", "🦀", "uro"]);
        assert!(!stream.has_pending());
        assert_eq!(stream.finish(), "");
        // A stream that stops inside a character ends with U+FFFD.
        stream.push(ids[0]).unwrap();
        assert!(stream.has_pending());
        assert_eq!(stream.finish(), "\u{FFFD}");
        assert!(stream.push(u32::MAX).is_err());
    }

    #[test]
    fn whole_token_shortcut_covers_gpt2() {
        let tok = Tokenizer::gpt2();
        // All tokens but the 256 single bytes and <|endoftext|> are produced
        // whole by the merge loop, so the shortcut serves every word that is
        // a token.
        assert_eq!(tok.inner.whole.len(), 50257 - 256 - 1);
    }

    #[test]
    fn tokenizer_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
        assert_send_sync::<StreamDecoder>();
    }
}
