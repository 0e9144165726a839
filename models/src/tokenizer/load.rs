//! Reading a vocabulary (`vocab.json` / `encoder.json`) and a merges file
//! (`merges.txt` / `vocab.bpe`), or the same parts of a `tokenizer.json`
//! ([`super::hf_json`]), into the tables the tokenizer uses.

use std::collections::HashMap;
use std::path::Path;

use rustc_hash::FxHashMap;

use super::bpe::{encode_piece, Merge, Merges, Scratch};
use super::bytes::{token_text_to_bytes, BYTE_TO_CHAR};
use super::error::TokenizerError;
use super::piece_key::short_key_of;
use super::EOT_TEXT;

/// Byte strings of two or more bytes that BPE encodes as one whole
/// vocabulary token, with that token's id: a shortcut past the merge loop
/// for most words.
#[derive(Debug, Default)]
pub(crate) struct WholeTokens {
    /// Those of up to 15 bytes, by packed key.
    pub(crate) short: FxHashMap<u128, u32>,
    /// The longer ones, by their bytes.
    pub(crate) long: FxHashMap<Box<[u8]>, u32>,
}

impl WholeTokens {
    /// Number of such tokens.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
}

/// Everything parsed from the two files.
#[derive(Debug)]
pub(crate) struct Tables {
    /// Token text (in GPT-2's byte-level alphabet) → id.
    pub(crate) token_to_id: FxHashMap<Box<str>, u32>,
    /// Id → token text; `None` for ids the vocabulary skips.
    pub(crate) id_to_token: Vec<Option<Box<str>>>,
    /// The raw bytes of all tokens, back to back, in id order.
    pub(crate) token_bytes: Vec<u8>,
    /// Token `id`'s bytes are `token_bytes[offsets[id]..offsets[id + 1]]`.
    pub(crate) token_offsets: Vec<u32>,
    /// Id of the single-byte token of each byte.
    pub(crate) byte_ids: [u32; 256],
    /// The merge rules.
    pub(crate) merges: Merges,
    /// The merge rules as (left, right) ids, in rank order.
    pub(crate) merge_list: Vec<(u32, u32)>,
    /// Pieces that BPE encodes as one whole token.
    pub(crate) whole: WholeTokens,
    /// Id of `<|endoftext|>`.
    pub(crate) eot_id: u32,
    /// The added tokens (the text is cut at each), by id.
    pub(crate) added: Vec<AddedToken>,
}

fn bad_vocab(path: &Path, reason: String) -> TokenizerError {
    TokenizerError::BadVocab {
        path: path.to_path_buf(),
        reason,
    }
}

/// A token added on top of the BPE vocabulary (`added_tokens` in a
/// `tokenizer.json`): the text is cut at every occurrence of it before the
/// pre-tokenizer runs, and it stands for its own UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddedToken {
    /// The token's text, as it appears in input text.
    pub(crate) content: String,
    /// Its id.
    pub(crate) id: u32,
    /// Whether it is a special token (`special: true`).
    pub(crate) special: bool,
}

/// One merge rule as spelled in a file, with where it stands there (for
/// error messages: a line of `merges.txt`, an index of `model.merges`).
pub(crate) struct MergeRule<'a> {
    pub(crate) left: &'a str,
    pub(crate) right: &'a str,
    pub(crate) at: usize,
}

/// Parses the vocabulary JSON and the merges text. The paths only serve
/// error messages.
pub(crate) fn parse(
    vocab_json: &str,
    vocab_path: &Path,
    merges_text: &str,
    merges_path: &Path,
) -> Result<Tables, TokenizerError> {
    let vocab: HashMap<String, u32> =
        serde_json::from_str(vocab_json).map_err(|source| TokenizerError::VocabJson {
            path: vocab_path.to_path_buf(),
            source,
        })?;
    let rules = merges_text_rules(merges_text, merges_path)?;
    let bad_line = |line: usize, reason: String| TokenizerError::BadMerge {
        path: merges_path.to_path_buf(),
        line,
        reason,
    };
    // GPT-2's files leave the special token implicit in the vocabulary.
    let eot = vocab.get(EOT_TEXT).map(|&id| AddedToken {
        content: EOT_TEXT.into(),
        id,
        special: true,
    });
    build(
        vocab,
        vocab_path,
        &rules,
        &bad_line,
        eot.into_iter().collect(),
    )
}

/// Builds the tables from a vocabulary, its merge rules in priority order
/// and the added tokens (each must be in `vocab` under its own text or have
/// an id the vocabulary leaves free). `bad_merge(at, reason)` makes the
/// error for a rule that names unknown tokens.
pub(crate) fn build(
    vocab: HashMap<String, u32>,
    vocab_path: &Path,
    rules: &[MergeRule<'_>],
    bad_merge: &dyn Fn(usize, String) -> TokenizerError,
    added: Vec<AddedToken>,
) -> Result<Tables, TokenizerError> {
    let mut vocab = vocab;
    for a in &added {
        match vocab.get(&a.content) {
            Some(&id) if id == a.id => {}
            Some(&id) => {
                return Err(bad_vocab(
                    vocab_path,
                    format!(
                        "added token {:?} has id {} but the vocabulary gives it {id}",
                        a.content, a.id
                    ),
                ))
            }
            None => {
                vocab.insert(a.content.clone(), a.id);
            }
        }
    }
    if vocab.is_empty() {
        return Err(bad_vocab(vocab_path, "it has no tokens".into()));
    }
    let max_id = vocab.values().copied().max().unwrap_or(0);
    if max_id == u32::MAX {
        return Err(bad_vocab(
            vocab_path,
            format!("token id {max_id} is too large"),
        ));
    }
    let mut id_to_token: Vec<Option<Box<str>>> = vec![None; max_id as usize + 1];
    let mut token_to_id = FxHashMap::default();
    token_to_id.reserve(vocab.len());
    for (text, id) in vocab {
        let slot = &mut id_to_token[id as usize];
        if let Some(other) = slot {
            // Report the pair in a stable order.
            let (a, b) = if **other < *text {
                (other.to_string(), text)
            } else {
                (text, other.to_string())
            };
            return Err(bad_vocab(
                vocab_path,
                format!("id {id} is given to both {a:?} and {b:?}"),
            ));
        }
        let text: Box<str> = text.into();
        *slot = Some(text.clone());
        token_to_id.insert(text, id);
    }

    let mut byte_ids = [0u32; 256];
    for (b, id) in byte_ids.iter_mut().enumerate() {
        let c = BYTE_TO_CHAR[b];
        *id = *token_to_id.get(c.to_string().as_str()).ok_or_else(|| {
            bad_vocab(
                vocab_path,
                format!(
                    "it lacks the token {c:?} for byte 0x{b:02x}; a byte-level BPE \
                     vocabulary needs all 256 single-byte tokens"
                ),
            )
        })?;
    }
    let eot_id = *token_to_id
        .get(EOT_TEXT)
        .ok_or_else(|| bad_vocab(vocab_path, format!("it lacks the token {EOT_TEXT}")))?;

    let mut token_bytes = Vec::new();
    let mut token_offsets = Vec::with_capacity(id_to_token.len() + 1);
    token_offsets.push(0u32);
    for (id, token) in id_to_token.iter().enumerate() {
        if let Some(text) = token {
            // An added token stands for its own text, not for byte-level
            // characters.
            match added.iter().find(|a| a.id as usize == id) {
                Some(a) => token_bytes.extend_from_slice(a.content.as_bytes()),
                None => token_bytes.extend_from_slice(&token_text_to_bytes(text)),
            }
        }
        let end = u32::try_from(token_bytes.len())
            .map_err(|_| bad_vocab(vocab_path, "its tokens are too long in total".into()))?;
        token_offsets.push(end);
    }

    let (merges, merge_list) = build_merges(rules, &token_to_id, bad_merge)?;
    let whole = whole_tokens(&token_bytes, &token_offsets, &merges, &byte_ids);
    let mut added = added;
    added.sort_by_key(|a| a.id);
    Ok(Tables {
        token_to_id,
        id_to_token,
        token_bytes,
        token_offsets,
        byte_ids,
        merges,
        merge_list,
        whole,
        eot_id,
        added,
    })
}

/// The tokens that the merge loop itself produces whole from their own
/// bytes. (Checking each one keeps the shortcut exact for any merges file:
/// a token whose bytes BPE would split differently is left out.)
fn whole_tokens(
    token_bytes: &[u8],
    token_offsets: &[u32],
    merges: &Merges,
    byte_ids: &[u32; 256],
) -> WholeTokens {
    let mut whole = WholeTokens::default();
    whole.short.reserve(token_offsets.len());
    let mut scratch = Scratch::default();
    let mut ids = Vec::new();
    for (id, w) in token_offsets.windows(2).enumerate() {
        let bytes = &token_bytes[w[0] as usize..w[1] as usize];
        if bytes.len() < 2 {
            continue;
        }
        ids.clear();
        encode_piece(merges, byte_ids, bytes, &mut scratch, &mut ids);
        if ids[..] == [id as u32] {
            match short_key_of(bytes) {
                Some(key) => whole.short.insert(key, id as u32),
                None => whole.long.insert(bytes.into(), id as u32),
            };
        }
    }
    whole
}

/// Splits a merges file into rules: an optional `#version` line, then one
/// rule per line, `LEFT RIGHT`, in priority order. Blank lines are skipped.
fn merges_text_rules<'a>(text: &'a str, path: &Path) -> Result<Vec<MergeRule<'a>>, TokenizerError> {
    let mut rules = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(left), Some(right), None) if !left.is_empty() && !right.is_empty() => {
                rules.push(MergeRule {
                    left,
                    right,
                    at: index + 1,
                })
            }
            _ => {
                return Err(TokenizerError::BadMerge {
                    path: path.to_path_buf(),
                    line: index + 1,
                    reason: format!("expected two tokens separated by one space, found {line:?}"),
                })
            }
        }
    }
    Ok(rules)
}

/// The merge table of `rules` (rank = position in the list), and the rules
/// as id pairs in rank order (for writing them back).
fn build_merges(
    rules: &[MergeRule<'_>],
    token_to_id: &FxHashMap<Box<str>, u32>,
    bad: &dyn Fn(usize, String) -> TokenizerError,
) -> Result<(Merges, Vec<(u32, u32)>), TokenizerError> {
    let mut merges = Merges::default();
    let mut list = Vec::with_capacity(rules.len());
    let mut joined = String::new();
    for (rank, rule) in rules.iter().enumerate() {
        let id_of = |t: &str| {
            token_to_id
                .get(t)
                .copied()
                .ok_or_else(|| bad(rule.at, format!("token {t:?} is not in the vocabulary")))
        };
        let (l, r) = (id_of(rule.left)?, id_of(rule.right)?);
        joined.clear();
        joined.push_str(rule.left);
        joined.push_str(rule.right);
        let new_id = token_to_id.get(joined.as_str()).copied().ok_or_else(|| {
            bad(
                rule.at,
                format!("the merged token {joined:?} is not in the vocabulary"),
            )
        })?;
        merges.insert(
            l,
            r,
            Merge {
                rank: rank as u32,
                new_id,
            },
        );
        list.push((l, r));
    }
    Ok((merges, list))
}
