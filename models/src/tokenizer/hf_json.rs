//! Hugging Face `tokenizer.json` (the `tokenizers` library's serialisation)
//! for byte-level BPE, read and written; and the side files
//! (`tokenizer_config.json`, `special_tokens_map.json`) that let
//! `transformers.AutoTokenizer.from_pretrained(dir)` open a Kiln folder.
//!
//! Only what Kiln's encoder computes exactly is accepted: `model.type` BPE
//! with no dropout, no subword prefix or suffix and `ignore_merges` false; a
//! `ByteLevel` pre-tokenizer with GPT-2's regex and no prefix space; no
//! normalizer; added tokens that match as plain strings (no `lstrip`,
//! `rstrip`, `single_word`). Anything else is
//! [`TokenizerError::Unsupported`] naming the field — never a silent
//! fallback to GPT-2's tokenizer.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::error::TokenizerError;
use super::load::{build, AddedToken, MergeRule, Tables};
use super::{Tokenizer, EOT_TEXT};

#[derive(Deserialize)]
struct TokenizerJson {
    #[serde(default)]
    added_tokens: Vec<AddedJson>,
    #[serde(default)]
    normalizer: Value,
    #[serde(default)]
    pre_tokenizer: Value,
    model: ModelJson,
}

#[derive(Deserialize)]
struct AddedJson {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    special: bool,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    dropout: Option<f64>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    ignore_merges: bool,
    #[serde(default)]
    vocab: HashMap<String, u32>,
    #[serde(default)]
    merges: Vec<MergeJson>,
}

/// A merge rule in either of the two spellings `tokenizers` writes:
/// `"Ġ t"` (before 0.20) or `["Ġ", "t"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum MergeJson {
    Joined(String),
    Pair(String, String),
}

fn unsupported(path: &Path, field: &str, found: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Unsupported {
        path: path.to_path_buf(),
        field: field.into(),
        found: found.to_string(),
    }
}

/// Whether a `pre_tokenizer` value is GPT-2's byte-level one (alone, or as
/// the only member of a `Sequence`).
fn check_pre_tokenizer(path: &Path, pre: &Value) -> Result<(), TokenizerError> {
    let pre = match pre.get("type").and_then(Value::as_str) {
        Some("Sequence") => match pre.get("pretokenizers").and_then(Value::as_array) {
            Some(list) if list.len() == 1 => &list[0],
            _ => return Err(unsupported(path, "pre_tokenizer", pre)),
        },
        _ => pre,
    };
    if pre.get("type").and_then(Value::as_str) != Some("ByteLevel") {
        let found = pre.get("type").cloned().unwrap_or(Value::Null);
        return Err(unsupported(
            path,
            "pre_tokenizer.type (Kiln reads byte-level BPE tokenizers: ByteLevel)",
            found,
        ));
    }
    if pre.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(path, "pre_tokenizer.add_prefix_space", true));
    }
    if pre.get("use_regex").and_then(Value::as_bool) == Some(false) {
        return Err(unsupported(path, "pre_tokenizer.use_regex", false));
    }
    Ok(())
}

/// Parses a `tokenizer.json`'s text; `path` only serves error messages.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Tables, TokenizerError> {
    let json: TokenizerJson =
        serde_json::from_str(text).map_err(|source| TokenizerError::VocabJson {
            path: path.to_path_buf(),
            source,
        })?;
    let m = &json.model;
    let kind = m.kind.as_deref().unwrap_or("");
    if kind != "BPE" {
        return Err(unsupported(
            path,
            "model.type (Kiln reads byte-level BPE tokenizers)",
            format!("{kind:?}"),
        ));
    }
    if let Some(p) = m.dropout {
        return Err(unsupported(path, "model.dropout", p));
    }
    for (field, v) in [
        (
            "model.continuing_subword_prefix",
            &m.continuing_subword_prefix,
        ),
        ("model.end_of_word_suffix", &m.end_of_word_suffix),
    ] {
        if let Some(s) = v.as_deref().filter(|s| !s.is_empty()) {
            return Err(unsupported(path, field, format!("{s:?}")));
        }
    }
    if m.ignore_merges {
        return Err(unsupported(path, "model.ignore_merges", true));
    }
    if !json.normalizer.is_null() {
        return Err(unsupported(path, "normalizer", &json.normalizer));
    }
    check_pre_tokenizer(path, &json.pre_tokenizer)?;
    let mut added = Vec::with_capacity(json.added_tokens.len());
    for a in &json.added_tokens {
        for (flag, on) in [
            ("lstrip", a.lstrip),
            ("rstrip", a.rstrip),
            ("single_word", a.single_word),
        ] {
            if on {
                return Err(unsupported(
                    path,
                    &format!("added_tokens[{:?}].{flag}", a.content),
                    true,
                ));
            }
        }
        if a.content.is_empty() {
            return Err(unsupported(path, "added_tokens[].content", "\"\""));
        }
        added.push(AddedToken {
            content: a.content.clone(),
            id: a.id,
            special: a.special,
        });
    }
    let mut rules = Vec::with_capacity(m.merges.len());
    for (i, rule) in m.merges.iter().enumerate() {
        let (left, right) = match rule {
            MergeJson::Pair(l, r) => (l.as_str(), r.as_str()),
            MergeJson::Joined(s) => {
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => (l, r),
                    _ => {
                        return Err(TokenizerError::BadTokenizerJson {
                            path: path.to_path_buf(),
                            reason: format!(
                                "model.merges[{i}]: expected two tokens separated by one space, found {s:?}"
                            ),
                        })
                    }
                }
            }
        };
        rules.push(MergeRule { left, right, at: i });
    }
    let bad_merge = |at: usize, reason: String| TokenizerError::BadTokenizerJson {
        path: path.to_path_buf(),
        reason: format!("model.merges[{at}]: {reason}"),
    };
    build(m.vocab.clone(), path, &rules, &bad_merge, added)
}

/// A JSON string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

impl Tokenizer {
    /// This tokenizer as a Hugging Face `tokenizer.json` (GPT-2's layout:
    /// byte-level pre-tokenizer, post-processor and decoder, BPE model with
    /// the vocabulary in id order and the merges as pairs, as `tokenizers`
    /// 0.20+ writes them), which `tokenizers.Tokenizer.from_file` and
    /// `transformers.AutoTokenizer` read.
    pub fn to_tokenizer_json(&self) -> String {
        let t = &*self.inner;
        let mut out = String::with_capacity(t.token_bytes.len() * 3 + t.merge_list.len() * 16);
        out.push_str(
            "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[",
        );
        for (i, a) in t.added.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write!(
                out,
                "{{\"id\":{},\"content\":{},\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":true,\"special\":{}}}",
                a.id,
                quote(&a.content),
                a.special
            )
            .expect("writing to a String cannot fail");
        }
        out.push_str("],\"normalizer\":null,");
        out.push_str("\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},");
        out.push_str("\"post_processor\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":false,\"use_regex\":true},");
        out.push_str("\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},");
        out.push_str("\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":\"\",\"end_of_word_suffix\":\"\",\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":");
        out.push_str(&self.vocab_json());
        out.push_str(",\"merges\":[");
        for (i, &(l, r)) in t.merge_list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let text = |id: u32| t.id_to_token[id as usize].as_deref().unwrap_or("");
            write!(out, "[{},{}]", quote(text(l)), quote(text(r)))
                .expect("writing to a String cannot fail");
        }
        out.push_str("]}}");
        out
    }

    /// The vocabulary as `vocab.json` (token text → id, in id order).
    pub fn vocab_json(&self) -> String {
        let t = &*self.inner;
        let mut out = String::with_capacity(t.token_bytes.len() * 3);
        out.push('{');
        let mut first = true;
        for (id, token) in t.id_to_token.iter().enumerate() {
            let Some(token) = token else { continue };
            if !first {
                out.push(',');
            }
            first = false;
            write!(out, "{}:{id}", quote(token)).expect("writing to a String cannot fail");
        }
        out.push('}');
        out
    }

    /// The merges as `merges.txt` (`#version: 0.2`, then `LEFT RIGHT` per
    /// line, in priority order).
    pub fn merges_txt(&self) -> String {
        let t = &*self.inner;
        let mut out = String::from("#version: 0.2\n");
        for &(l, r) in &t.merge_list {
            let text = |id: u32| t.id_to_token[id as usize].as_deref().unwrap_or("");
            writeln!(out, "{} {}", text(l), text(r)).expect("writing to a String cannot fail");
        }
        out
    }

    /// Writes the files `transformers` looks for in a model folder —
    /// `tokenizer.json`, `vocab.json`, `merges.txt`, `tokenizer_config.json`
    /// (GPT-2's class, `<|endoftext|>` as BOS, EOS and UNK,
    /// `model_max_length`) and `special_tokens_map.json` — as
    /// `tokenizer.save_pretrained(dir)` does. Each file is written
    /// atomically.
    ///
    /// # Errors
    /// [`TokenizerError::Io`] naming the file that could not be written.
    pub fn save_pretrained(
        &self,
        dir: impl AsRef<Path>,
        model_max_length: usize,
    ) -> Result<(), TokenizerError> {
        let dir = dir.as_ref();
        let eot = quote(EOT_TEXT);
        let mut decoder = String::new();
        for (i, a) in self.inner.added.iter().enumerate() {
            if i > 0 {
                decoder.push(',');
            }
            write!(
                decoder,
                "\"{}\":{{\"content\":{},\"lstrip\":false,\"normalized\":true,\"rstrip\":false,\"single_word\":false,\"special\":{}}}",
                a.id,
                quote(&a.content),
                a.special
            )
            .expect("writing to a String cannot fail");
        }
        let config = format!(
            "{{\"add_prefix_space\":false,\"added_tokens_decoder\":{{{decoder}}},\"bos_token\":{eot},\"clean_up_tokenization_spaces\":false,\"eos_token\":{eot},\"errors\":\"replace\",\"model_max_length\":{model_max_length},\"pad_token\":null,\"tokenizer_class\":\"GPT2Tokenizer\",\"unk_token\":{eot}}}\n"
        );
        let special = format!("{{\"bos_token\":{eot},\"eos_token\":{eot},\"unk_token\":{eot}}}\n");
        for (name, text) in [
            ("tokenizer.json", self.to_tokenizer_json()),
            ("vocab.json", self.vocab_json()),
            ("merges.txt", self.merges_txt()),
            ("tokenizer_config.json", config),
            ("special_tokens_map.json", special),
        ] {
            let path = dir.join(name);
            crate::gpt2::write_atomic(&path, text.as_bytes()).map_err(|e| match e {
                crate::ModelError::Io { path, error } => TokenizerError::Io {
                    path,
                    source: error,
                },
                other => TokenizerError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(other.to_string()),
                },
            })?;
        }
        Ok(())
    }
}
