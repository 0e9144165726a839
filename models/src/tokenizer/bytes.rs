//! GPT-2's reversible byte ↔ printable-character table.
//!
//! GPT-2 writes every byte of the input as one visible Unicode character so
//! that its vocabulary can be stored as text: the printable Latin-1 bytes
//! `!`..=`~`, `¡`..=`¬` and `®`..=`ÿ` stand for themselves, and the remaining
//! 68 bytes (controls, space, `\x7f`..`\xa0`, soft hyphen) are given the
//! characters U+0100, U+0101, … in byte order. So the space byte is `Ġ`
//! (U+0120) and the newline byte is `Ċ` (U+010A).

/// Whether byte `b` is one of the 188 bytes that stand for themselves.
const fn is_self_mapped(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// `BYTE_TO_CHAR[b]` is the character that stands for byte `b`.
pub(crate) const BYTE_TO_CHAR: [char; 256] = build_byte_to_char();

const fn build_byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 0u32;
    let mut b = 0usize;
    while b < 256 {
        let code = if is_self_mapped(b as u8) {
            b as u32
        } else {
            let code = 256 + next_extra;
            next_extra += 1;
            code
        };
        table[b] = match char::from_u32(code) {
            Some(c) => c,
            None => panic!("byte table code point out of range"),
        };
        b += 1;
    }
    table
}

/// The byte that character `c` stands for, if `c` is one of the 256
/// characters of the table.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let code = c as u32;
    if code < 256 {
        is_self_mapped(code as u8).then_some(code as u8)
    } else if code < 256 + 68 {
        Some(CHAR_TO_BYTE_EXTRA[(code - 256) as usize])
    } else {
        None
    }
}

/// The bytes given the characters U+0100 + i, in order.
const CHAR_TO_BYTE_EXTRA: [u8; 68] = build_extra();

const fn build_extra() -> [u8; 68] {
    let mut out = [0u8; 68];
    let mut n = 0;
    let mut b = 0usize;
    while b < 256 {
        if !is_self_mapped(b as u8) {
            out[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    assert!(n == 68);
    out
}

/// The raw bytes a vocabulary token string stands for.
///
/// Like Hugging Face's `ByteLevel` decoder, a token that contains a character
/// outside the table (an added token such as `<|endoftext|>` is fine, since
/// it is printable ASCII) is taken to be its own UTF-8 text.
pub(crate) fn token_text_to_bytes(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => return token.as_bytes().to_vec(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_TO_CHAR[b as usize];
            assert!(seen.insert(c), "char {c:?} used twice");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn known_characters() {
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ');
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ');
        assert_eq!(BYTE_TO_CHAR[b'\t' as usize], 'ĉ');
        assert_eq!(BYTE_TO_CHAR[0], 'Ā');
        assert_eq!(BYTE_TO_CHAR[b'a' as usize], 'a');
        assert_eq!(BYTE_TO_CHAR[0xAD], 'Ń');
        assert_eq!(BYTE_TO_CHAR[0xE9], 'é');
        assert_eq!(char_to_byte('Ń'), Some(0xAD));
        assert_eq!(char_to_byte('ń'), None);
        assert_eq!(char_to_byte('中'), None);
    }

    #[test]
    fn token_text_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        let text: String = all.iter().map(|&b| BYTE_TO_CHAR[b as usize]).collect();
        assert_eq!(token_text_to_bytes(&text), all);
        assert_eq!(token_text_to_bytes("Ġthe"), b" the");
        assert_eq!(token_text_to_bytes("<|endoftext|>"), b"<|endoftext|>");
        // A character outside the table: the token is its own UTF-8 text.
        assert_eq!(token_text_to_bytes("ńx"), "ńx".as_bytes());
    }
}
