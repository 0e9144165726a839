//! The byte-pair-encoding merge loop.
//!
//! A piece starts as one symbol per byte. Every adjacent pair of symbols that
//! the merges file lists is a candidate; the candidate with the lowest rank
//! (earliest merges line) is merged first, the leftmost one among equal ranks,
//! and the pairs it forms with its neighbours become new candidates. This is
//! the order Hugging Face `tokenizers` uses (a priority queue over
//! `(rank, position)` that skips candidates made stale by earlier merges), so
//! the result matches it even for unusual merges files.
//!
//! A rule's result is the token spelled by its two halves, so a queue entry
//! passes the staleness check only while the same two symbols still sit at
//! its position: symbols only grow, and a pair spelling the same text from
//! the same start covers the same bytes, hence has the same split. Popping
//! the lowest valid entry is therefore the same as merging the lowest-ranked
//! adjacent pair, leftmost first. Short pieces use that direct form, which
//! needs no queue; long pieces use the queue, which stays O(n log n).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// One merge rule: the pair's rank (lower merges first) and the id of the
/// token it produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Merge {
    pub(crate) rank: u32,
    pub(crate) new_id: u32,
}

/// The merge rules, keyed by the pair of token ids they join. A rule's
/// `new_id` must be the token spelled by the pair's two texts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Merges {
    map: FxHashMap<u64, Merge>,
}

#[inline(always)]
fn pair_key(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

impl Merges {
    /// Adds (or, for a repeated pair, replaces) a rule.
    pub(crate) fn insert(&mut self, left: u32, right: u32, merge: Merge) {
        self.map.insert(pair_key(left, right), merge);
    }

    /// The rule for the pair `(left, right)`.
    #[inline(always)]
    pub(crate) fn get(&self, left: u32, right: u32) -> Option<Merge> {
        self.map.get(&pair_key(left, right)).copied()
    }

    /// Number of rules.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Symbol {
    id: u32,
    prev: u32,
    next: u32,
    removed: bool,
}

/// A possible merge of the symbol at `pos` with the one after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Candidate {
    rank: u32,
    pos: u32,
    new_id: u32,
}

impl Ord for Candidate {
    // `BinaryHeap` pops the greatest: make that the lowest rank, then the
    // leftmost position.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Buffers reused from one word to the next.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Candidate>,
    ids: Vec<u32>,
    pairs: Vec<Merge>,
}

/// Pieces up to this many bytes use the queue-free merge loop.
const SHORT_PIECE: usize = 48;

/// Rank of a pair that no rule merges.
const NO_MERGE: Merge = Merge {
    rank: u32::MAX,
    new_id: u32::MAX,
};

/// BPE-encodes one piece and appends its token ids to `out`.
///
/// `byte_ids[b]` is the id of the single-byte token for byte `b`.
pub(crate) fn encode_piece(
    merges: &Merges,
    byte_ids: &[u32; 256],
    piece: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    match piece {
        [] => return,
        [b] => {
            out.push(byte_ids[*b as usize]);
            return;
        }
        [a, b] => {
            let (a, b) = (byte_ids[*a as usize], byte_ids[*b as usize]);
            match merges.get(a, b) {
                Some(m) => out.push(m.new_id),
                None => out.extend_from_slice(&[a, b]),
            }
            return;
        }
        _ => {}
    }
    if piece.len() <= SHORT_PIECE {
        encode_short(merges, byte_ids, piece, scratch, out);
    } else {
        encode_queue(merges, byte_ids, piece, scratch, out);
    }
}

/// The direct merge loop: repeatedly merge the lowest-ranked adjacent pair
/// (leftmost among equals). O(n²) but with no queue, fast for short pieces.
fn encode_short(
    merges: &Merges,
    byte_ids: &[u32; 256],
    piece: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    let ids = &mut scratch.ids;
    let pairs = &mut scratch.pairs;
    ids.clear();
    ids.extend(piece.iter().map(|&b| byte_ids[b as usize]));
    // pairs[i] is the rule for (ids[i], ids[i + 1]).
    pairs.clear();
    pairs.extend(
        ids.windows(2)
            .map(|w| merges.get(w[0], w[1]).unwrap_or(NO_MERGE)),
    );
    loop {
        let mut best = NO_MERGE;
        let mut at = 0;
        for (i, m) in pairs.iter().enumerate() {
            if m.rank < best.rank {
                best = *m;
                at = i;
            }
        }
        if best.rank == NO_MERGE.rank {
            break;
        }
        ids[at] = best.new_id;
        ids.remove(at + 1);
        pairs.remove(at);
        if at > 0 {
            pairs[at - 1] = merges.get(ids[at - 1], ids[at]).unwrap_or(NO_MERGE);
        }
        if at < pairs.len() {
            pairs[at] = merges.get(ids[at], ids[at + 1]).unwrap_or(NO_MERGE);
        }
    }
    out.extend_from_slice(ids);
}

/// Hugging Face's priority-queue merge loop, O(n log n).
fn encode_queue(
    merges: &Merges,
    byte_ids: &[u32; 256],
    piece: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u32>,
) {
    assert!(piece.len() < NONE as usize, "piece too long for BPE");
    let n = piece.len() as u32;
    let symbols = &mut scratch.symbols;
    let heap = &mut scratch.heap;
    symbols.clear();
    heap.clear();
    symbols.extend(piece.iter().enumerate().map(|(i, &b)| Symbol {
        id: byte_ids[b as usize],
        prev: if i == 0 { NONE } else { i as u32 - 1 },
        next: if i as u32 + 1 == n {
            NONE
        } else {
            i as u32 + 1
        },
        removed: false,
    }));
    for pos in 0..n - 1 {
        let (l, r) = (symbols[pos as usize].id, symbols[pos as usize + 1].id);
        if let Some(m) = merges.get(l, r) {
            heap.push(Candidate {
                rank: m.rank,
                pos,
                new_id: m.new_id,
            });
        }
    }
    while let Some(top) = heap.pop() {
        let pos = top.pos as usize;
        let left = symbols[pos];
        if left.removed || left.next == NONE {
            continue;
        }
        let right_pos = left.next as usize;
        let right = symbols[right_pos];
        // Skip candidates made stale by earlier merges.
        match merges.get(left.id, right.id) {
            Some(m) if m.new_id == top.new_id => {}
            _ => continue,
        }
        symbols[pos].id = top.new_id;
        symbols[pos].next = right.next;
        symbols[right_pos].removed = true;
        if right.next != NONE {
            symbols[right.next as usize].prev = top.pos;
        }
        if left.prev != NONE {
            let prev = symbols[left.prev as usize];
            if let Some(m) = merges.get(prev.id, top.new_id) {
                heap.push(Candidate {
                    rank: m.rank,
                    pos: left.prev,
                    new_id: m.new_id,
                });
            }
        }
        if right.next != NONE {
            let next = symbols[right.next as usize];
            if let Some(m) = merges.get(top.new_id, next.id) {
                heap.push(Candidate {
                    rank: m.rank,
                    pos: top.pos,
                    new_id: m.new_id,
                });
            }
        }
    }
    let mut pos = 0u32;
    while pos != NONE {
        let s = symbols[pos as usize];
        out.push(s.id);
        pos = s.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: bytes are their own ids, merged tokens count from 256.
    fn toy(rules: &[(u32, u32, u32)]) -> (Merges, [u32; 256]) {
        let mut merges = Merges::default();
        for (rank, &(l, r, new_id)) in rules.iter().enumerate() {
            merges.insert(
                l,
                r,
                Merge {
                    rank: rank as u32,
                    new_id,
                },
            );
        }
        let byte_ids = std::array::from_fn(|b| b as u32);
        (merges, byte_ids)
    }

    fn run(merges: &Merges, byte_ids: &[u32; 256], s: &str) -> Vec<u32> {
        let mut out = vec![];
        encode_piece(
            merges,
            byte_ids,
            s.as_bytes(),
            &mut Scratch::default(),
            &mut out,
        );
        out
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let (a, b, c) = (b'a' as u32, b'b' as u32, b'c' as u32);
        // rank 0: b c -> 256; rank 1: a b -> 257; rank 2: a 256 -> 258.
        let (m, ids) = toy(&[(b, c, 256), (a, b, 257), (a, 256, 258)]);
        assert_eq!(run(&m, &ids, "abc"), [258]);
        assert_eq!(run(&m, &ids, "abab"), [257, 257]);
        assert_eq!(run(&m, &ids, "ab"), [257]);
        assert_eq!(run(&m, &ids, "x"), [b'x' as u32]);
        assert_eq!(run(&m, &ids, "xyz"), [120, 121, 122]);
        // "aaa" with rule a a -> 256: the leftmost pair merges.
        let (m, ids) = toy(&[(a, a, 256)]);
        assert_eq!(run(&m, &ids, "aaa"), [256, a]);
        assert_eq!(run(&m, &ids, "aaaa"), [256, 256]);
        // With a further rule the result chains.
        let (m, ids) = toy(&[(a, a, 256), (256, 256, 257)]);
        assert_eq!(run(&m, &ids, "aaaaa"), [257, a]);
    }

    #[test]
    fn long_piece() {
        let a = b'a' as u32;
        let (m, ids) = toy(&[(a, a, 256), (256, 256, 257), (257, 257, 258)]);
        let s = "a".repeat(10_001);
        let out = run(&m, &ids, &s);
        assert_eq!(out.len(), 10_000 / 8 + 1);
        assert!(out[..1250].iter().all(|&t| t == 258));
        assert_eq!(out[1250], a);
    }

    #[test]
    fn two_rules_spelling_one_token() {
        let (a, b, c) = (b'a' as u32, b'b' as u32, b'c' as u32);
        // 256 = "bc", 257 = "ab", 258 = "abc" made both as (a, bc) and (ab, c).
        let (m, ids) = toy(&[(b, c, 256), (a, b, 257), (257, c, 258), (a, 256, 258)]);
        assert_eq!(run(&m, &ids, "abc"), [258]);
        assert_eq!(run(&m, &ids, "abcabc"), [258, 258]);
        assert_eq!(run(&m, &ids, "aabcc"), [a, 258, c]);
    }

    mod equivalence {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashMap;

        /// Random merges over the alphabet "abc": each rule joins two
        /// existing tokens, and a rule may spell a token another rule makes.
        fn random_merges(picks: &[(u8, u8)]) -> (Merges, [u32; 256]) {
            let mut tokens: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
            let mut ids: HashMap<String, u32> = tokens
                .iter()
                .map(|t| (t.clone(), t.as_bytes()[0] as u32))
                .collect();
            let mut merges = Merges::default();
            for (rank, &(i, j)) in picks.iter().enumerate() {
                let (l, r) = (
                    tokens[i as usize % tokens.len()].clone(),
                    tokens[j as usize % tokens.len()].clone(),
                );
                let joined = format!("{l}{r}");
                let next = 256 + ids.len() as u32;
                let new_id = *ids.entry(joined.clone()).or_insert_with(|| {
                    tokens.push(joined);
                    next
                });
                if merges.get(ids[&l], ids[&r]).is_none() {
                    merges.insert(
                        ids[&l],
                        ids[&r],
                        Merge {
                            rank: rank as u32,
                            new_id,
                        },
                    );
                }
            }
            (merges, std::array::from_fn(|b| b as u32))
        }

        proptest! {
            #[test]
            fn short_and_queue_loops_agree(
                picks in prop::collection::vec(any::<(u8, u8)>(), 0..40),
                text in "[abc]{2,48}",
            ) {
                let (m, ids) = random_merges(&picks);
                run(&m, &ids, &text);
            }

            #[test]
            fn short_and_queue_loops_agree_on_gpt2(
                text in prop::collection::vec(any::<u8>(), 2..=SHORT_PIECE)
            ) {
                let tok = crate::tokenizer::Tokenizer::gpt2();
                let t = &*tok.inner;
                let (mut short, mut queue) = (vec![], vec![]);
                let scratch = &mut Scratch::default();
                encode_short(&t.merges, &t.byte_ids, &text, scratch, &mut short);
                encode_queue(&t.merges, &t.byte_ids, &text, scratch, &mut queue);
                prop_assert_eq!(short, queue);
            }
        }
    }
}
