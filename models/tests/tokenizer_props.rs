//! Property tests: encoding is lossless and streaming decode is exact.

use kiln_models::tokenizer::Tokenizer;
use proptest::prelude::*;

/// Pieces that stress the tokenizer: multi-byte characters that GPT-2 splits
/// across tokens, whitespace of every kind, contractions, the special token.
const PIECES: &[&str] = &[
    "a",
    "Z",
    "7",
    " ",
    "  ",
    "\n",
    "\r\n",
    "\t",
    "'s",
    "'LL",
    "!",
    "...",
    "é",
    "ß",
    "Ж",
    "中",
    "語",
    "ー",
    "ǅ",
    "٣",
    "½",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{85}",
    "\u{301}",
    "\u{200d}",
    "🦀",
    "👍🏽",
    "👨‍👩‍👧",
    "🇺🇸",
    "\u{10ffff}",
    "\u{e000}",
    "\0",
    "<|endoftext|>",
    "<|",
    "|>",
];

fn tricky_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|v| v.concat())
}

/// Streams `ids` through a [`StreamDecoder`] and returns the chunks, with
/// the final flush as the last chunk.
fn stream_chunks(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut stream = tok.stream_decoder();
    let mut chunks: Vec<String> = ids
        .iter()
        .map(|&id| stream.push(id).unwrap().to_string())
        .collect();
    chunks.push(stream.finish().to_string());
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode_on_any_string(s in any::<String>()) {
        let tok = Tokenizer::gpt2();
        prop_assert_eq!(tok.decode(&tok.encode(&s)).unwrap(), s.clone());
        prop_assert_eq!(tok.decode(&tok.encode_ordinary(&s)).unwrap(), s);
    }

    #[test]
    fn decode_inverts_encode_on_tricky_text(s in tricky_text()) {
        let tok = Tokenizer::gpt2();
        prop_assert_eq!(tok.decode(&tok.encode(&s)).unwrap(), s.clone());
        prop_assert_eq!(tok.decode(&tok.encode_ordinary(&s)).unwrap(), s);
    }

    /// Token by token, the text handed out so far is always a prefix of the
    /// input ending on a character boundary, and in the end all of it.
    #[test]
    fn stream_decode_of_encoded_text_is_exact(s in prop_oneof![tricky_text(), any::<String>()]) {
        let tok = Tokenizer::gpt2();
        let ids = tok.encode(&s);
        let mut stream = tok.stream_decoder();
        let mut so_far = String::new();
        for &id in &ids {
            let chunk = stream.push(id).unwrap();
            prop_assert!(std::str::from_utf8(chunk.as_bytes()).is_ok());
            so_far.push_str(chunk);
            prop_assert!(s.starts_with(&so_far), "{:?} is not a prefix of {:?}", so_far, s);
        }
        prop_assert!(!stream.has_pending());
        prop_assert_eq!(stream.finish(), "");
        prop_assert_eq!(so_far, s);
    }

    /// Any id sequence, even one that garbles characters, streams to the
    /// same text as a lossy decode of the whole sequence.
    #[test]
    fn stream_decode_of_any_ids_equals_lossy_decode(
        ids in prop::collection::vec(
            prop_oneof![0u32..50257, 94u32..256, 8582u32..8583, 99u32..100, 222u32..223],
            0..32,
        )
    ) {
        let tok = Tokenizer::gpt2();
        let chunks = stream_chunks(&tok, &ids);
        prop_assert_eq!(chunks.concat(), tok.decode_lossy(&ids).unwrap());
        if let Ok(text) = tok.decode(&ids) {
            prop_assert_eq!(chunks.concat(), text);
        }
    }
}

#[test]
fn stream_decode_splits_multibyte_characters_cleanly() {
    let tok = Tokenizer::gpt2();
    let text = "🦀 crabs: 語語, 👨‍👩‍👧 family";
    let ids = tok.encode(text);
    let chunks = stream_chunks(&tok, &ids);
    assert!(ids.len() > text.chars().count() / 2);
    assert!(
        chunks.iter().any(|c| c.is_empty()),
        "some token ends mid-character"
    );
    assert_eq!(chunks.concat(), text);
}
