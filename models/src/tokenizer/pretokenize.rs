//! GPT-2's pre-tokenizer: splits text into the pieces that BPE encodes
//! one at a time.
//!
//! GPT-2 splits with the regular expression
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! taking leftmost-first matches one after another. This module is a
//! hand-written scanner with the same result and no regex engine. At the
//! start of each piece it decides, in the regex's order:
//!
//! 1. an ASCII apostrophe followed by `s`, `t`, `m`, `d`, `re`, `ve` or `ll`
//!    (lower case only) is a contraction piece;
//! 2. a space (U+0020 only) followed by a letter, a number or an "other"
//!    character joins the run of that class that follows it;
//! 3. a letter, number or other character starts a maximal run of its class;
//! 4. a whitespace run that reaches the end of the text is one piece; a run
//!    of two or more characters followed by a non-space gives up its last
//!    character (`\s+(?!\S)`), which then starts the next piece (so a final
//!    space joins the following word via rule 2); a single whitespace
//!    character before a non-space is a piece of its own (`\s+`).
//!
//! Character classes follow Unicode: letters are the general categories
//! L (Lu, Ll, Lt, Lm, Lo), numbers N (Nd, Nl, No), whitespace is the
//! `White_Space` property (what `\s` means in Oniguruma, the regex engine of
//! Hugging Face `tokenizers`), and "other" is everything else — punctuation,
//! symbols, marks (so combining accents split from their letters), format
//! characters such as ZWJ, controls other than whitespace, private use.

use unicode_general_category::{get_general_category, GeneralCategory};

/// The class of a character, as the GPT-2 pattern sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `\p{L}`.
    Letter,
    /// `\p{N}`.
    Number,
    /// `\s`: the Unicode `White_Space` property.
    Space,
    /// `[^\s\p{L}\p{N}]`.
    Other,
}

const fn ascii_class(b: u8) -> Class {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
        b'0'..=b'9' => Class::Number,
        b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => Class::Space,
        _ => Class::Other,
    }
}

const ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Other; 128];
    let mut b = 0;
    while b < 128 {
        table[b] = ascii_class(b as u8);
        b += 1;
    }
    table
};

/// The class of any character.
pub(crate) fn char_class(c: char) -> Class {
    if c.is_ascii() {
        return ASCII_CLASS[c as usize];
    }
    // `char::is_whitespace` is exactly the White_Space property.
    if c.is_whitespace() {
        return Class::Space;
    }
    use GeneralCategory as G;
    match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter => Class::Letter,
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// Class and UTF-8 length of the character starting at byte `i` of `s`
/// (which must be a character boundary).
#[inline(always)]
fn class_at(s: &str, i: usize) -> (Class, usize) {
    let b = s.as_bytes()[i];
    if b < 0x80 {
        (ASCII_CLASS[b as usize], 1)
    } else {
        class_at_slow(s, i)
    }
}

#[cold]
#[inline(never)]
fn class_at_slow(s: &str, i: usize) -> (Class, usize) {
    let c = s[i..]
        .chars()
        .next()
        .expect("index is a character boundary");
    (char_class(c), c.len_utf8())
}

/// End (exclusive byte offset) of the maximal run of `class` characters
/// starting at byte `i`.
#[inline(always)]
fn run_end(s: &str, mut i: usize, class: Class) -> usize {
    let bytes = s.as_bytes();
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            if ASCII_CLASS[b as usize] != class {
                break;
            }
            i += 1;
        } else {
            let (c, len) = class_at_slow(s, i);
            if c != class {
                break;
            }
            i += len;
        }
    }
    i
}

/// Length of the contraction suffix after an apostrophe (`s`, `re`, …), if
/// `rest` starts with one.
#[inline(always)]
fn contraction_len(rest: &[u8]) -> Option<usize> {
    match rest {
        [b's' | b't' | b'm' | b'd', ..] => Some(1),
        [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => Some(2),
        _ => None,
    }
}

/// End of the piece that starts at byte `i` (`i < s.len()`, a character
/// boundary).
#[inline]
pub(crate) fn piece_end(s: &str, i: usize) -> usize {
    let bytes = s.as_bytes();
    let first = bytes[i];
    if first == b'\'' {
        if let Some(n) = contraction_len(&bytes[i + 1..]) {
            return i + 1 + n;
        }
    }
    let (class, len) = class_at(s, i);
    if class != Class::Space {
        return run_end(s, i + len, class);
    }
    if first == b' ' && i + 1 < bytes.len() {
        let (next, next_len) = class_at(s, i + 1);
        if next != Class::Space {
            return run_end(s, i + 1 + next_len, next);
        }
    }
    // A whitespace run: find its end and where its last character starts.
    let mut last_start = i;
    let mut j = i + len;
    while j < bytes.len() {
        let (c, l) = class_at(s, j);
        if c != Class::Space {
            break;
        }
        last_start = j;
        j += l;
    }
    if j == bytes.len() || last_start == i {
        j
    } else {
        last_start
    }
}

/// Iterator over the pieces of a text, in order; their concatenation is the
/// text. (Encoding calls [`piece_end`] directly.)
#[cfg(test)]
#[derive(Clone, Debug)]
pub(crate) struct Pieces<'a> {
    text: &'a str,
    pos: usize,
}

#[cfg(test)]
impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if start >= self.text.len() {
            return None;
        }
        let end = piece_end(self.text, start);
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// Splits `text` the way GPT-2's pattern does.
#[cfg(test)]
pub(crate) fn pieces(text: &str) -> Pieces<'_> {
    Pieces { text, pos: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        pieces(s).collect()
    }

    #[test]
    fn words_and_punctuation() {
        assert_eq!(
            split("Hello world, it's 2026!"),
            ["Hello", " world", ",", " it", "'s", " 2026", "!"]
        );
    }

    #[test]
    fn contractions_are_lowercase_only() {
        assert_eq!(split("it'S"), ["it", "'", "S"]);
        assert_eq!(split("we'll've'd"), ["we", "'ll", "'ve", "'d"]);
        assert_eq!(split("'LL"), ["'", "LL"]);
        assert_eq!(split("'l"), ["'", "l"]);
        // A contraction also matches before more letters.
        assert_eq!(split("'sup"), ["'s", "up"]);
        // An apostrophe inside a punctuation run is taken by the run.
        assert_eq!(split("!'s"), ["!'", "s"]);
        assert_eq!(split(" 's"), [" '", "s"]);
    }

    #[test]
    fn whitespace_runs() {
        assert_eq!(split("a  b"), ["a", " ", " b"]);
        assert_eq!(split("a\n\nb"), ["a", "\n", "\n", "b"]);
        assert_eq!(split("a \nb"), ["a", " ", "\n", "b"]);
        assert_eq!(split("a\n b"), ["a", "\n", " b"]);
        assert_eq!(split("a   "), ["a", "   "]);
        assert_eq!(split("a\r\n"), ["a", "\r\n"]);
        assert_eq!(split(" "), [" "]);
        assert_eq!(split("\t\tx"), ["\t", "\t", "x"]);
        assert_eq!(split("\u{a0}x"), ["\u{a0}", "x"]);
        assert_eq!(split("a \u{3000}"), ["a", " \u{3000}"]);
        assert!(split("").is_empty());
    }

    #[test]
    fn unicode_classes() {
        assert_eq!(split("naïve café"), ["naïve", " café"]);
        assert_eq!(split("e\u{301}"), ["e", "\u{301}"]);
        assert_eq!(split(" ½Ⅻ٣"), [" ½Ⅻ٣"]);
        assert_eq!(split("中文 テスト"), ["中文", " テスト"]);
        assert_eq!(split("👍🏽 ok"), ["👍🏽", " ok"]);
        assert_eq!(char_class('\u{85}'), Class::Space);
        assert_eq!(char_class('\u{1c}'), Class::Other);
        assert_eq!(char_class('\u{200d}'), Class::Other);
        assert_eq!(char_class('ǅ'), Class::Letter);
    }

    /// Every Unicode scalar value gets the class that Hugging Face
    /// `tokenizers` (Oniguruma) gives it, per the generated fixture.
    #[test]
    fn classes_match_reference_for_every_char() {
        #[derive(serde::Deserialize)]
        struct Classes {
            letter: Vec<[u32; 2]>,
            number: Vec<[u32; 2]>,
            whitespace: Vec<[u32; 2]>,
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tokenizer/char_classes.json"
        );
        let text = std::fs::read_to_string(path).expect("read char_classes.json");
        let classes: Classes = serde_json::from_str(&text).expect("parse char_classes.json");
        let mut expected = vec![Class::Other; 0x110000];
        for (ranges, class) in [
            (&classes.letter, Class::Letter),
            (&classes.number, Class::Number),
            (&classes.whitespace, Class::Space),
        ] {
            for &[lo, hi] in ranges {
                expected[lo as usize..=hi as usize].fill(class);
            }
        }
        let mut wrong = vec![];
        for c in (0..0x110000u32).filter_map(char::from_u32) {
            if char_class(c) != expected[c as usize] {
                wrong.push(format!(
                    "U+{:04X}: ours {:?}, reference {:?}",
                    c as u32,
                    char_class(c),
                    expected[c as usize]
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} characters classed differently, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    mod against_regex {
        use super::super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        const PATTERN: &str =
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

        fn regex() -> &'static fancy_regex::Regex {
            static RE: OnceLock<fancy_regex::Regex> = OnceLock::new();
            RE.get_or_init(|| fancy_regex::Regex::new(PATTERN).unwrap())
        }

        /// The regex engine's own class of `c`, to skip characters whose
        /// category differs between Unicode versions of the two tables.
        fn regex_class(c: char) -> Class {
            static RES: OnceLock<[regex::Regex; 3]> = OnceLock::new();
            let [l, n, s] = RES.get_or_init(|| {
                [r"\A\p{L}\z", r"\A\p{N}\z", r"\A\s\z"].map(|p| regex::Regex::new(p).unwrap())
            });
            let mut buf = [0u8; 4];
            let c = &*c.encode_utf8(&mut buf);
            if l.is_match(c) {
                Class::Letter
            } else if n.is_match(c) {
                Class::Number
            } else if s.is_match(c) {
                Class::Space
            } else {
                Class::Other
            }
        }

        fn by_regex(s: &str) -> Vec<&str> {
            regex()
                .find_iter(s)
                .map(|m| m.expect("regex runs").as_str())
                .collect()
        }

        /// Characters that exercise every rule of the pattern.
        const ALPHABET: &[&str] = &[
            "a", "b", "s", "t", "r", "e", "v", "l", "m", "d", "S", "L", "Z", "0", "7", " ", " ",
            " ", "\n", "\t", "\r", "\x0b", "'", "'", "!", ".", ",", "-", "\"", "<", "|", ">", "é",
            "ß", "Ж", "中", "ー", "ǅ", "٣", "½", "Ⅻ", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}",
            "\u{301}", "\u{200d}", "\u{fe0f}", "😀", "🏽", "\x00", "\x1f", "\u{ad}",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn scanner_equals_regex_on_tricky_text(
                parts in prop::collection::vec(prop::sample::select(ALPHABET), 0..48)
            ) {
                let s = parts.concat();
                prop_assert_eq!(pieces(&s).collect::<Vec<_>>(), by_regex(&s));
            }

            #[test]
            fn scanner_equals_regex_on_any_text(s in any::<String>()) {
                let s: String = s.chars().filter(|&c| regex_class(c) == char_class(c)).collect();
                prop_assert_eq!(pieces(&s).collect::<Vec<_>>(), by_regex(&s));
            }
        }
    }
}
