//! Packing for the bf16 GEMM ([`super::matmul_bf16`]): operands (f32 or
//! bf16, any strides) into panels of bf16 *pairs along k*, the layout both
//! `vdpbf16ps` and `tdpbf16ps` read.
//!
//! At the matrix engine's speed the packing is no longer small beside the
//! products: a 512-row prefill multiplies each packed weight by only 512
//! rows, and AMX does those 512 multiply-adds in a fraction of a cycle per
//! element. So the layouts the models use are packed 16 pairs at a time
//! with AVX-512 (f32 rounded by `vcvtne2ps2bf16`, the rounding of
//! [`to_bf16_bits`]); 16×16 blocks whose destination runs the other way are
//! transposed in registers. Edges, odd k and strided operands take the
//! scalar loop, which is also the reference the tests hold the vector path
//! to. (x86-64 only, as the packed paths that use it.)

use super::matmul_bf16::{to_bf16_bits, Elems, Operand};

/// Where a packed panel puts its pairs: pair `q` of lane `l` at
/// `dst[(l / gw)·gs + (l % gw)·dl + q·dq]`, for lanes `l < w` and pairs
/// `q < pairs`. Lanes come in groups of `gw` stored `gs` apart, so one call
/// can pack a task's whole row of B panels: it then reads each row of B
/// once, from end to end, instead of one panel's width at a time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Panel {
    w: usize,
    dl: usize,
    dq: usize,
    pairs: usize,
    gw: usize,
    gs: usize,
}

impl Panel {
    /// Pair-major: `dst[q·w + l]` (A for AVX512-BF16).
    pub(super) fn pair_major(w: usize, pairs: usize) -> Panel {
        Panel::pair_major_panels(w, pairs, 1)
    }
    /// `panels` pair-major panels of `w` lanes one after another (every B
    /// panel): lane `l` of panel `p` at `dst[p·w·pairs + q·w + l]`.
    pub(super) fn pair_major_panels(w: usize, pairs: usize, panels: usize) -> Panel {
        Panel {
            w: w * panels,
            dl: 1,
            dq: w,
            pairs,
            gw: w,
            gs: w * pairs,
        }
    }
    /// Lane-major: `dst[l·pairs + q]` (A for AMX: a tile row is 16
    /// consecutive pairs of one row).
    pub(super) fn lane_major(w: usize, pairs: usize) -> Panel {
        Panel {
            w,
            dl: pairs,
            dq: 1,
            pairs,
            gw: w,
            gs: 0,
        }
    }
    /// Where pair `q` of lane `l` goes, in u32 from the panel's start.
    #[inline(always)]
    fn at(&self, l: usize, q: usize) -> usize {
        (l / self.gw) * self.gs + (l % self.gw) * self.dl + q * self.dq
    }
}

/// Packs a panel of pairs from `op`: with `x(l, p)` the element at
/// `base + l·ls + p·ps`, lane `l`'s pair `q` is `(x(l, 2q), x(l, 2q+1))`,
/// low half first, for lanes `l < valid` and pairs `q < ⌈kcur/2⌉`; zeros
/// past `valid` lanes, past `kcur` elements of k, and up to `panel.pairs`.
/// For A, lanes are rows (`ls = rs`, `ps = cs`); for B, columns (`ls = cs`,
/// `ps = rs`).
///
/// # Safety
///
/// `x(l, p)` in bounds for `l < valid`, `p < kcur`; `dst` writable at every
/// index `panel` names; `⌈kcur/2⌉ ≤ panel.pairs`, `valid ≤ panel.w`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pack_pairs(
    op: &Operand,
    base: isize,
    ls: isize,
    ps: isize,
    panel: Panel,
    kcur: usize,
    valid: usize,
    dst: *mut u32,
) {
    let src = Src {
        data: op.data,
        base,
        ls,
        ps,
    };
    let done = if vector_ok() {
        // SAFETY: the CPU has AVX-512 BW and BF16 (checked); the rest is
        // this function's contract.
        unsafe { avx512::pack_blocks(&src, panel, kcur, valid, dst) }
    } else {
        Done::NONE
    };
    // SAFETY: forwarded.
    unsafe { pack_scalar(&src, panel, kcur, valid, dst, done) }
}

/// Whether the vector packer may run: the bf16 GEMM's packed paths only
/// run where the CPU has AVX512-BF16 (and BW, which every such CPU has);
/// the check keeps this module sound on its own.
fn vector_ok() -> bool {
    std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512bf16")
}

/// An operand seen from a panel: element `(l, p)` at `base + l·ls + p·ps`.
struct Src {
    data: Elems,
    base: isize,
    ls: isize,
    ps: isize,
}

/// The corner the vector packer wrote: pairs `q < pairs` of lanes
/// `l < lanes`.
#[derive(Clone, Copy)]
struct Done {
    lanes: usize,
    pairs: usize,
}

impl Done {
    const NONE: Done = Done { lanes: 0, pairs: 0 };
}

/// The scalar packer, for everything outside `done`: [`pack_pairs`]'s
/// result, one pair at a time.
///
/// # Safety
///
/// As [`pack_pairs`].
unsafe fn pack_scalar(
    src: &Src,
    panel: Panel,
    kcur: usize,
    valid: usize,
    dst: *mut u32,
    done: Done,
) {
    // SAFETY: (both arms) forwarded.
    unsafe {
        match src.data {
            Elems::Bf16(p) => pack_typed(
                p.offset(src.base),
                src,
                panel,
                kcur,
                valid,
                dst,
                done,
                |v| v,
            ),
            Elems::F32(p) => pack_typed(
                p.offset(src.base),
                src,
                panel,
                kcur,
                valid,
                dst,
                done,
                to_bf16_bits,
            ),
        }
    }
}

/// [`pack_scalar`] for one element type.
///
/// # Safety
///
/// As [`pack_pairs`], `p` being the element at `src.base`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pack_typed<T: Copy>(
    p: *const T,
    src: &Src,
    panel: Panel,
    kcur: usize,
    valid: usize,
    dst: *mut u32,
    done: Done,
    cvt: impl Fn(T) -> u16,
) {
    let (w, pairs) = (panel.w, panel.pairs);
    let (ls, ps) = (src.ls, src.ps);
    let full = kcur / 2;
    let pair = |lo: u16, hi: u16| lo as u32 | (hi as u32) << 16;
    // The first pair of lane l the vector packer left.
    let from = |l: usize| if l < done.lanes { done.pairs } else { 0 };
    // SAFETY: (whole body) sources stay within l < valid, p < kcur and
    // destinations within l < w, q < pairs, per the contract.
    unsafe {
        let x = |l: usize, k: usize| cvt(*p.offset(l as isize * ls + k as isize * ps));
        let d = |l: usize, q: usize| dst.add(panel.at(l, q));
        for l in 0..valid {
            for q in from(l)..full {
                *d(l, q) = pair(x(l, 2 * q), x(l, 2 * q + 1));
            }
        }
        if kcur % 2 == 1 {
            for l in 0..valid {
                *d(l, full) = pair(x(l, kcur - 1), 0);
            }
        }
        for l in 0..valid {
            for q in kcur.div_ceil(2)..pairs {
                *d(l, q) = 0;
            }
        }
        for l in valid..w {
            for q in 0..pairs {
                *d(l, q) = 0;
            }
        }
    }
}

mod avx512 {
    use std::arch::x86_64::*;

    use super::{Done, Panel, Src};
    use crate::kernels::matmul_bf16::Elems;

    /// Packs the 16-aligned corner of the panel that the operand's layout
    /// and the panel's allow (one of them contiguous along the direction
    /// the other runs, or both the same way) and says which corner it
    /// wrote; [`Done::NONE`] for other layouts.
    ///
    /// # Safety
    ///
    /// As [`super::pack_pairs`]; the CPU has AVX-512F, BW and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pack_blocks(
        src: &Src,
        panel: Panel,
        kcur: usize,
        valid: usize,
        dst: *mut u32,
    ) -> Done {
        let full = kcur / 2;
        let (q16, l16) = (full / 16 * 16, valid / 16 * 16);
        // 16 lanes from a multiple of 16 never straddle a group: groups of
        // B panels are tile widths (multiples of 16), and a narrower panel
        // (the 12-row A panel of AVX512-BF16) has fewer than 16 lanes, so
        // no 16-lane block at all.
        debug_assert!(panel.gw.is_multiple_of(16) || valid < 16);
        let d = |l: usize, q: usize| dst.wrapping_add(panel.at(l, q)).cast::<__m512i>();
        // SAFETY: every load reads lanes < valid and elements < 2·full ≤
        // kcur; every store writes 16 pairs at lanes < valid and pairs <
        // full, inside the panel (contract).
        unsafe {
            match (src.ps == 1, src.ls == 1, panel.dq == 1, panel.dl == 1) {
                // Lanes along k, pairs contiguous in the panel: copy.
                (true, _, true, _) => {
                    for l in 0..valid {
                        for q in (0..q16).step_by(16) {
                            _mm512_storeu_si512(d(l, q), along_k(src, l, q));
                        }
                    }
                    Done {
                        lanes: valid,
                        pairs: q16,
                    }
                }
                // Lanes contiguous in both: copy.
                (_, true, _, true) => {
                    for q in 0..full {
                        // One group (tile width) at a time, so the division
                        // in `at` runs once per group.
                        for g in (0..l16).step_by(panel.gw) {
                            let row = d(g, q);
                            for l in (g..l16.min(g + panel.gw)).step_by(16) {
                                _mm512_storeu_si512(row.add((l - g) / 16), across(src, l, q));
                            }
                        }
                    }
                    Done {
                        lanes: l16,
                        pairs: full,
                    }
                }
                // The operand runs one way and the panel the other (lanes
                // along k into pair-major panels, or contiguous lanes into
                // lane-major ones): 16×16 blocks, transposed in registers.
                (true, _, _, true) | (_, true, true, _) => {
                    let along = src.ps == 1;
                    for l in (0..l16).step_by(16) {
                        for q in (0..q16).step_by(16) {
                            // Row i: lane l + i's 16 pairs, or pair q + i of
                            // 16 lanes; after the transpose, the other.
                            let mut r = [_mm512_setzero_si512(); 16];
                            for (i, v) in r.iter_mut().enumerate() {
                                *v = if along {
                                    along_k(src, l + i, q)
                                } else {
                                    across(src, l, q + i)
                                };
                            }
                            transpose16(&mut r);
                            for (j, v) in r.iter().enumerate() {
                                let to = if along { d(l, q + j) } else { d(l + j, q) };
                                _mm512_storeu_si512(to, *v);
                            }
                        }
                    }
                    Done {
                        lanes: l16,
                        pairs: q16,
                    }
                }
                _ => Done::NONE,
            }
        }
    }

    /// Pairs `q..q + 16` of lane `l`, where the operand is contiguous
    /// along k (`ps == 1`): 32 consecutive elements.
    ///
    /// # Safety
    ///
    /// Elements `2q..2q + 32` of lane `l` are in bounds.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn along_k(src: &Src, l: usize, q: usize) -> __m512i {
        let off = src.base + l as isize * src.ls + 2 * q as isize;
        // SAFETY: 32 elements from off are in bounds (contract).
        unsafe {
            match src.data {
                Elems::F32(p) => {
                    let lo = _mm512_loadu_ps(p.offset(off));
                    let hi = _mm512_loadu_ps(p.offset(off + 16));
                    // Element i of the result is lo's i for i < 16, then
                    // hi's: pair q holds elements 2q and 2q + 1.
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
                }
                Elems::Bf16(p) => _mm512_loadu_si512(p.offset(off).cast()),
            }
        }
    }

    /// Pair `q` of lanes `l..l + 16`, where the lanes are contiguous
    /// (`ls == 1`): elements `2q` and `2q + 1` of 16 neighbouring lanes.
    ///
    /// # Safety
    ///
    /// Lanes `l..l + 16` at elements `2q`, `2q + 1` are in bounds.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn across(src: &Src, l: usize, q: usize) -> __m512i {
        let r0 = src.base + (2 * q) as isize * src.ps + l as isize;
        let r1 = r0 + src.ps;
        // SAFETY: 16 elements from r0 and from r1 are in bounds (contract).
        let (lo, hi) = unsafe {
            match src.data {
                Elems::F32(p) => (
                    std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(
                        p.offset(r0),
                    ))),
                    std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(
                        p.offset(r1),
                    ))),
                ),
                Elems::Bf16(p) => (
                    _mm256_loadu_si256(p.offset(r0).cast()),
                    _mm256_loadu_si256(p.offset(r1).cast()),
                ),
            }
        };
        _mm512_or_si512(
            _mm512_cvtepu16_epi32(lo),
            _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi)),
        )
    }

    /// Transposes a 16×16 block of u32 held as 16 rows.
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: &mut [__m512i; 16]) {
        // 1. Interleave 32-bit elements of row pairs: within each 128-bit
        //    lane, t[2i] = a0 b0 a1 b1, t[2i+1] = a2 b2 a3 b3.
        let mut t = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
        }
        // 2. Interleave 64-bit halves: s[4i + c], 128-bit lane L, is
        //    column 4L + c of rows 4i..4i + 4.
        let mut s = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            s[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
            s[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
            s[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
            s[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        // 3. Gather lane L of s[c], s[4+c], s[8+c], s[12+c] into row 4L + c,
        //    in two rounds of 128-bit shuffles (even lanes, odd lanes).
        for c in 0..4 {
            let x0 = _mm512_shuffle_i32x4::<0x88>(s[c], s[4 + c]);
            let y0 = _mm512_shuffle_i32x4::<0xdd>(s[c], s[4 + c]);
            let x1 = _mm512_shuffle_i32x4::<0x88>(s[8 + c], s[12 + c]);
            let y1 = _mm512_shuffle_i32x4::<0xdd>(s[8 + c], s[12 + c]);
            r[c] = _mm512_shuffle_i32x4::<0x88>(x0, x1);
            r[8 + c] = _mm512_shuffle_i32x4::<0xdd>(x0, x1);
            r[4 + c] = _mm512_shuffle_i32x4::<0x88>(y0, y1);
            r[12 + c] = _mm512_shuffle_i32x4::<0xdd>(y0, y1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul_packed::tests::Rng;

    /// The three panel shapes the GEMM packs, with the index of pair `q` of
    /// lane `l` written out independently of [`Panel::at`].
    #[derive(Clone, Copy, Debug)]
    enum Shape {
        PairMajor,
        LaneMajor,
        Panels(usize),
    }

    /// Packs with [`pack_pairs`] (the vector path where the CPU has it) and
    /// checks every slot against the definition.
    fn check(f32_src: bool, ls: isize, ps: isize, shape: Shape, kcur: usize, valid: usize) {
        let len = (valid as isize * ls + kcur as isize * ps) as usize + 64;
        let mut rng = Rng::new(len as u64 + kcur as u64);
        let vals: Vec<f32> = (0..len).map(|_| rng.next() * 3.0).collect();
        let bits: Vec<u16> = vals.iter().map(|&x| to_bf16_bits(x)).collect();
        let data = if f32_src {
            Elems::F32(vals.as_ptr())
        } else {
            Elems::Bf16(bits.as_ptr())
        };
        let pairs = kcur.div_ceil(2).next_multiple_of(16);
        let (w, panel) = match shape {
            Shape::PairMajor => (32, Panel::pair_major(32, pairs)),
            Shape::LaneMajor => (32, Panel::lane_major(32, pairs)),
            Shape::Panels(gw) => {
                let n = valid.div_ceil(gw) + 1;
                (gw * n, Panel::pair_major_panels(gw, pairs, n))
            }
        };
        let index = |l: usize, q: usize| match shape {
            Shape::PairMajor => q * 32 + l,
            Shape::LaneMajor => l * pairs + q,
            Shape::Panels(gw) => (l / gw) * gw * pairs + q * gw + l % gw,
        };
        let mut got = vec![0xdead_beefu32; w * pairs];
        let op = Operand { data, rs: 0, cs: 0 };
        // SAFETY: every source index is below len; got holds w·pairs.
        unsafe { pack_pairs(&op, 0, ls, ps, panel, kcur, valid, got.as_mut_ptr()) };
        let elem = |l: usize, p: usize| -> u32 {
            if l >= valid || p >= kcur {
                return 0;
            }
            to_bf16_bits(vals[l * ls as usize + p * ps as usize]) as u32
        };
        for l in 0..w {
            for q in 0..pairs {
                let want = elem(l, 2 * q) | elem(l, 2 * q + 1) << 16;
                assert_eq!(
                    got[index(l, q)],
                    want,
                    "f32 {f32_src} ls {ls} ps {ps} {shape:?} kcur {kcur} valid {valid}: lane {l} pair {q}"
                );
            }
        }
    }

    #[test]
    fn packing_puts_every_pair_where_the_panel_says() {
        #[cfg(target_arch = "x86_64")]
        if !vector_ok() {
            println!("no AVX512-BF16 here: only the scalar packer is checked");
        }
        for f32_src in [true, false] {
            for (kcur, valid) in [(64, 32), (67, 32), (100, 29), (33, 16), (7, 5), (513, 30)] {
                let mut shapes = vec![Shape::PairMajor, Shape::LaneMajor, Shape::Panels(16)];
                if valid > 16 {
                    shapes.push(Shape::Panels(32));
                }
                for shape in shapes {
                    let valid = match shape {
                        Shape::Panels(_) => valid * 2 + 3,
                        _ => valid,
                    };
                    // Contiguous along k, contiguous across lanes, neither.
                    check(f32_src, kcur as isize + 3, 1, shape, kcur, valid);
                    check(f32_src, 1, valid as isize + 5, shape, kcur, valid);
                    check(f32_src, 2, 2 * valid as isize + 1, shape, kcur, valid);
                }
            }
        }
    }
}
