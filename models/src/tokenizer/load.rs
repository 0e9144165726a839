//! Reading a vocabulary (`vocab.json` / `encoder.json`) and a merges file
//! (`merges.txt` / `vocab.bpe`) into the tables the tokenizer uses.

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
    /// Pieces that BPE encodes as one whole token.
    pub(crate) whole: WholeTokens,
    /// Id of `<|endoftext|>`.
    pub(crate) eot_id: u32,
}

fn bad_vocab(path: &Path, reason: String) -> TokenizerError {
    TokenizerError::BadVocab {
        path: path.to_path_buf(),
        reason,
    }
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
    for token in &id_to_token {
        if let Some(text) = token {
            token_bytes.extend_from_slice(&token_text_to_bytes(text));
        }
        let end = u32::try_from(token_bytes.len())
            .map_err(|_| bad_vocab(vocab_path, "its tokens are too long in total".into()))?;
        token_offsets.push(end);
    }

    let merges = parse_merges(merges_text, merges_path, &token_to_id)?;
    let whole = whole_tokens(&token_bytes, &token_offsets, &merges, &byte_ids);
    Ok(Tables {
        token_to_id,
        id_to_token,
        token_bytes,
        token_offsets,
        byte_ids,
        merges,
        whole,
        eot_id,
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

/// Parses a merges file: an optional `#version` line, then one rule per
/// line, `LEFT RIGHT`, in priority order. Blank lines are skipped.
fn parse_merges(
    text: &str,
    path: &Path,
    token_to_id: &FxHashMap<Box<str>, u32>,
) -> Result<Merges, TokenizerError> {
    let mut merges = Merges::default();
    let mut rank = 0u32;
    let mut joined = String::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |reason: String| TokenizerError::BadMerge {
            path: path.to_path_buf(),
            line: index + 1,
            reason,
        };
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (left, right) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => (l, r),
            _ => {
                return Err(bad(format!(
                    "expected two tokens separated by one space, found {line:?}"
                )))
            }
        };
        let id_of = |t: &str| {
            token_to_id
                .get(t)
                .copied()
                .ok_or_else(|| bad(format!("token {t:?} is not in the vocabulary")))
        };
        let (l, r) = (id_of(left)?, id_of(right)?);
        joined.clear();
        joined.push_str(left);
        joined.push_str(right);
        let new_id = token_to_id.get(joined.as_str()).copied().ok_or_else(|| {
            bad(format!(
                "the merged token {joined:?} is not in the vocabulary"
            ))
        })?;
        merges.insert(l, r, Merge { rank, new_id });
        rank += 1;
    }
    Ok(merges)
}
