//! Short pieces as integer hash keys.
//!
//! Most pieces are a few bytes long. Packing one of up to 15 bytes into a
//! `u128` (the bytes, zero-padded, and the length in the top byte) makes hash
//! lookups compare two integers instead of calling `memcmp`, which is a large
//! share of encoding time otherwise.

/// Longest piece that packs into a key.
pub(crate) const MAX_SHORT: usize = 15;

/// The key of `text[start..end]` if it is 2..=15 bytes long.
#[inline(always)]
pub(crate) fn short_key(text: &[u8], start: usize, end: usize) -> Option<u128> {
    let len = end - start;
    if !(2..=MAX_SHORT).contains(&len) {
        return None;
    }
    let word = match text.get(start..start + 16) {
        // One unaligned load, then mask off the bytes past the piece.
        Some(window) => u128::from_le_bytes(window.try_into().expect("16 bytes")),
        None => {
            let mut buf = [0u8; 16];
            buf[..len].copy_from_slice(&text[start..end]);
            u128::from_le_bytes(buf)
        }
    };
    Some((word & MASKS[len]) | ((len as u128) << 120))
}

/// `MASKS[n]` keeps the low `n` bytes (a table: 128-bit shifts are slow).
const MASKS: [u128; 16] = {
    let mut masks = [0u128; 16];
    let mut n = 1;
    while n < 16 {
        masks[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    masks
};

/// The key of a whole byte string of 2..=15 bytes.
pub(crate) fn short_key_of(bytes: &[u8]) -> Option<u128> {
    short_key(bytes, 0, bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_only_on_the_piece() {
        let text = b"xxhello worldyyyyyyyyyyyyyyyyyyyy";
        let a = short_key(text, 2, 7).unwrap();
        assert_eq!(Some(a), short_key_of(b"hello"));
        // Near the end of the text the slow path gives the same key.
        assert_eq!(short_key(b"say hello", 4, 9), Some(a));
        // Length is part of the key: "ab" and "ab\0" differ.
        assert_ne!(short_key_of(b"ab"), short_key_of(b"ab\0"));
        assert_eq!(short_key_of(b"a"), None);
        assert_eq!(short_key_of(&[b'z'; 16]), None);
        assert!(short_key_of(&[0xff; 15]).is_some());
    }
}
