//! Kiln's bf16 GEMM: bf16 operands, f32 accumulation, f32 output.
//!
//! `C[m×n] = alpha · bf16(A)[m×k] · bf16(B)[k×n] + beta · C`, where each
//! operand is either bf16 already or f32 rounded to bf16 (to nearest, ties
//! to even, as `tensor.to(torch.bfloat16)`) while it is packed. That one
//! rule serves every bf16 product: a bf16 model's weights times f32
//! activations, and `torch.autocast`-style mixed precision where f32 master
//! weights and activations are both rounded for the multiply.
//!
//! Two paths, chosen at run time ([`super::isa`]):
//!
//! - **AVX512-BF16** (`vdpbf16ps`, `microkernel_bf16.rs`): the
//!   blocking of the f32 GEMM ([`super::matmul_packed`]: a shared packed A
//!   block, per-task B blocks in L2, 12×32 register tiles), with panels of
//!   bf16 *pairs along k*, so each instruction does 64 multiply-adds.
//! - **Fallback** (any other CPU, or `KILN_SIMD` below `avx512bf16`): round
//!   both operands to bf16, widen them back to f32 (exact) and run the f32
//!   GEMM. Same operands, same f32 accumulation; only the order of the
//!   additions differs.
//!
//! # Accuracy
//!
//! Both paths compute `Σ_p a_p·b_p` over the bf16-rounded operands with
//! exact products and f32 additions, so against the exact sum (f64 of the
//! rounded operands) `|C − C_ref| ≤ γ · Σ_p |a_p·b_p|`, with
//! `γ = k·2⁻²⁴ / (1 − k·2⁻²⁴)` (the standard bound for recursive summation
//! in f32). The tests check it on every path the machine has. (The
//! AVX512-BF16 instruction flushes bf16 subnormals to zero; bf16 values
//! under 1.2·10⁻³⁸ do not occur in weights or activations.)
//!
//! # Determinism
//!
//! As in the f32 GEMM, threads split C, never k: each `C[i, j]` is summed in
//! the same order at every thread count, so results are bit-identical.

use half::bf16;
use rayon::prelude::*;

use super::isa::Isa;
use super::matmul_packed::{plan, with_scratch, SharedPtr, TileOut, PACK_A, PACK_B};

/// One operand's elements: f32 (rounded to bf16 when packed) or bf16 bits.
#[derive(Clone, Copy, Debug)]
pub enum Elems {
    /// f32 values, rounded to bf16 as they are packed.
    F32(*const f32),
    /// bf16 values, as their 16-bit patterns.
    Bf16(*const u16),
}

/// An operand: element `(i, j)` is at `data + i·rs + j·cs` (in elements).
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    /// Where the elements are, and their type.
    pub data: Elems,
    /// Row stride.
    pub rs: isize,
    /// Column stride.
    pub cs: isize,
}

/// `x` rounded to the nearest bf16 (ties to even; NaN stays NaN), as bits.
#[inline(always)]
pub fn to_bf16_bits(x: f32) -> u16 {
    bf16::from_f32(x).to_bits()
}

/// The f32 a bf16 bit pattern stands for (exact).
#[inline(always)]
pub fn from_bf16_bits(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

impl Operand {
    /// Element `(i, j)` as bf16 bits.
    ///
    /// # Safety
    /// The element must be in bounds.
    #[inline(always)]
    unsafe fn at(&self, i: usize, j: usize) -> u16 {
        let off = i as isize * self.rs + j as isize * self.cs;
        // SAFETY: forwarded.
        unsafe {
            match self.data {
                Elems::F32(p) => to_bf16_bits(*p.offset(off)),
                Elems::Bf16(p) => *p.offset(off),
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Bgemm {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
}
// SAFETY: the pointers are only dereferenced under the contract of
// `gemm_bf16`; threads write disjoint tiles of C.
unsafe impl Send for Bgemm {}
// SAFETY: as above.
unsafe impl Sync for Bgemm {}

/// Depth of a K block in elements (even): a 12-row A panel of 384 pairs is
/// 18 KiB, in L1; a 1024-wide B block of 384 pairs is 1.5 MiB, in L2.
const KC: usize = 768;
/// Rows of the shared A block.
const MC: usize = 1536;
/// Widest column block per task.
const NC: usize = 1024;

/// Below this many multiply-adds a call stays on the calling thread.
const PARALLEL_MIN_FMAS: usize = 64 * 64 * 64;

/// `C[m×n] = alpha · bf16(A) · bf16(B) + beta · C` (see the module docs).
/// When `beta == 0`, C is write-only.
///
/// # Safety
///
/// As [`super::matmul_packed::gemm_f32`]: every `A[i, p]` (`i < m`,
/// `p < k`), `B[p, j]` and `C[i, j]` in bounds through the strides; C
/// disjoint from A and B, with distinct elements for distinct `(i, j)`,
/// and not accessed by anything else during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_bf16(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: *mut f32,
    rsc: isize,
    csc: isize,
) {
    let threads = if m.saturating_mul(n).saturating_mul(k) < PARALLEL_MIN_FMAS {
        1
    } else {
        crate::parallel::num_threads()
    };
    let g = Bgemm {
        m,
        k,
        n,
        alpha,
        a,
        b,
        beta,
        c,
        rsc,
        csc,
    };
    let isa = Isa::detect();
    if threads > 1 && isa.has_bf16_dot() && gemv_weights(&g).is_none() {
        crate::parallel::install(move || {
            // SAFETY: forwarded from this function's contract.
            unsafe { gemm_bf16_with(isa, rayon::current_num_threads(), g) }
        })
    } else {
        // SAFETY: forwarded from this function's contract.
        unsafe { gemm_bf16_with(isa, threads, g) }
    }
}

/// [`gemm_bf16`] on a chosen instruction set and thread count (tests force
/// each path). With `threads > 1` on the AVX512-BF16 path the tasks spread
/// with rayon over the current pool.
///
/// # Safety
///
/// As [`gemm_bf16`]; `isa` came from [`Isa::available`] or [`Isa::detect`].
unsafe fn gemm_bf16_with(isa: Isa, threads: usize, g: Bgemm) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    if let (Some(w), Elems::F32(x), true) = (gemv_weights(&g), g.a.data, g.k > 0) {
        // SAFETY: row 0 of A is x, row 0 of C is y; rest forwarded.
        unsafe {
            super::gemv_bf16::gemv_bf16(isa, g.k, g.n, g.alpha, x, g.a.cs, w, g.beta, g.c, g.csc)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_bf16_dot() && g.k > 0 && g.alpha != 0.0 {
        // SAFETY: the CPU has AVX512-BF16; rest forwarded.
        unsafe { gemm_packed(threads, &g) };
        return;
    }
    let _ = isa;
    // SAFETY: forwarded.
    unsafe { gemm_widened(&g) }
}

/// The weights of a decode step: one f32 row of activations times a bf16
/// matrix stored row- or column-major, which `gemv_bf16.rs` streams
/// at memory speed instead of packing.
fn gemv_weights(g: &Bgemm) -> Option<super::gemv_bf16::Weights> {
    match (g.m, g.a.data, g.b.data) {
        (1, Elems::F32(_), Elems::Bf16(w)) if g.b.rs == 1 || g.b.cs == 1 => {
            Some(super::gemv_bf16::Weights {
                w,
                rs: g.b.rs,
                cs: g.b.cs,
            })
        }
        _ => None,
    }
}

/// The fallback: bf16-rounded operands widened to f32, then the f32 GEMM.
///
/// # Safety
///
/// As [`gemm_bf16`].
unsafe fn gemm_widened(g: &Bgemm) {
    let widen = |op: &Operand, rows: usize, cols: usize| -> Vec<f32> {
        let mut v = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            // SAFETY: i < rows, j < cols: in bounds by the contract.
            v.extend((0..cols).map(|j| from_bf16_bits(unsafe { op.at(i, j) })));
        }
        v
    };
    let (a, b) = if g.k == 0 || g.alpha == 0.0 {
        (Vec::new(), Vec::new())
    } else {
        (widen(&g.a, g.m, g.k), widen(&g.b, g.k, g.n))
    };
    // SAFETY: a and b are m×k and k×n row-major (or unread when k == 0 or
    // alpha == 0); C is forwarded.
    unsafe {
        super::matmul_packed::gemm_f32(
            g.m,
            g.k,
            g.n,
            g.alpha,
            a.as_ptr(),
            g.k as isize,
            1,
            b.as_ptr(),
            g.n as isize,
            1,
            g.beta,
            g.c,
            g.rsc,
            g.csc,
        )
    }
}

/// Packs a `w`-lane panel of pairs from `op`: with `x(l, p)` the element
/// at `base + l·ls + p·ps`, `dst[q·w + l] = (x(l, 2q), x(l, 2q+1))` for
/// lanes `l < valid` and pairs `q < ⌈kcur/2⌉`, low half first, with zeros
/// past `valid` lanes and past `kcur` elements of k. For A, lanes are rows
/// (`ls = rs`, `ps = cs`); for B, columns (`ls = cs`, `ps = rs`).
///
/// # Safety
///
/// `x(l, p)` in bounds for `l < valid`, `p < kcur`; `dst` writable for
/// `⌈kcur/2⌉·w` values.
#[allow(clippy::too_many_arguments)]
unsafe fn pack_pairs(
    op: &Operand,
    base: isize,
    ls: isize,
    ps: isize,
    w: usize,
    kcur: usize,
    valid: usize,
    dst: *mut u32,
) {
    // SAFETY: (both arms) forwarded.
    unsafe {
        match op.data {
            Elems::Bf16(p) => pack_typed(p.offset(base), ls, ps, w, kcur, valid, dst, |v| v),
            Elems::F32(p) => pack_typed(p.offset(base), ls, ps, w, kcur, valid, dst, to_bf16_bits),
        }
    }
}

/// [`pack_pairs`] for one element type, with the two common layouts as
/// tight loops the compiler vectorises: lanes contiguous along k (row-major
/// A, `wteᵀ` as B) and lanes contiguous (row-major B).
///
/// # Safety
///
/// As [`pack_pairs`], `src` being the element at `base`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pack_typed<T: Copy>(
    src: *const T,
    ls: isize,
    ps: isize,
    w: usize,
    kcur: usize,
    valid: usize,
    dst: *mut u32,
    cvt: impl Fn(T) -> u16,
) {
    let full = kcur / 2;
    let pair = |lo: u16, hi: u16| lo as u32 | (hi as u32) << 16;
    // SAFETY: (whole body) sources stay within l < valid, p < kcur and
    // destinations within q·w + l < ⌈kcur/2⌉·w, per the contract.
    unsafe {
        let x = |l: usize, p: usize| cvt(*src.offset(l as isize * ls + p as isize * ps));
        if ps == 1 {
            for l in 0..valid {
                let s = src.offset(l as isize * ls);
                for q in 0..full {
                    *dst.add(q * w + l) = pair(cvt(*s.add(2 * q)), cvt(*s.add(2 * q + 1)));
                }
            }
        } else if ls == 1 {
            for q in 0..full {
                let r0 = src.offset((2 * q) as isize * ps);
                let r1 = src.offset((2 * q + 1) as isize * ps);
                let d = dst.add(q * w);
                for l in 0..valid {
                    *d.add(l) = pair(cvt(*r0.add(l)), cvt(*r1.add(l)));
                }
            }
        } else {
            for q in 0..full {
                for l in 0..valid {
                    *dst.add(q * w + l) = pair(x(l, 2 * q), x(l, 2 * q + 1));
                }
            }
        }
        if kcur % 2 == 1 {
            for l in 0..valid {
                *dst.add(full * w + l) = pair(x(l, kcur - 1), 0);
            }
        }
        if valid < w {
            for q in 0..kcur.div_ceil(2) {
                for l in valid..w {
                    *dst.add(q * w + l) = 0;
                }
            }
        }
    }
}

/// The packed, blocked product on AVX512-BF16 (the f32 GEMM's loop nest;
/// see [`super::matmul_packed`]).
///
/// # Safety
///
/// The CPU has AVX512-BF16; `g` satisfies [`gemm_bf16`]'s contract with
/// `m, n, k > 0`.
#[cfg(target_arch = "x86_64")]
unsafe fn gemm_packed(threads: usize, g: &Bgemm) {
    use super::microkernel_bf16::{kernel, MR, NR};
    // Balanced K blocks of an even depth, depending on k only.
    let kc = g.k.div_ceil(g.k.div_ceil(KC)).next_multiple_of(2);
    let mc = g.m.div_ceil(g.m.div_ceil(MC)).div_ceil(MR) * MR;
    with_scratch(&PACK_A, mc * kc / 2, |apack| {
        let apack = SharedPtr(apack.cast::<u32>());
        for ic in (0..g.m).step_by(mc) {
            let mcur = mc.min(g.m - ic);
            let mpanels = mcur.div_ceil(MR);
            let (row_parts, width) = plan(g.n, NR, NC, mpanels, threads);
            let col_blocks = g.n.div_ceil(width);
            for pc in (0..g.k).step_by(kc) {
                let kcur = kc.min(g.k - pc);
                let kp = kcur.div_ceil(2);
                let beta = if pc == 0 { g.beta } else { 1.0 };
                let pack_a = |ip: usize| {
                    let row = ic + ip * MR;
                    // SAFETY: rows row..row+valid < m, columns pc..pc+kcur
                    // < k; panel ip of the buffer is written by this call
                    // only.
                    unsafe {
                        pack_pairs(
                            &g.a,
                            row as isize * g.a.rs + pc as isize * g.a.cs,
                            g.a.rs,
                            g.a.cs,
                            MR,
                            kcur,
                            MR.min(g.m - row),
                            apack.get().add(ip * MR * kp),
                        )
                    }
                };
                if threads > 1 && mcur * kcur >= 1 << 15 {
                    (0..mpanels).into_par_iter().for_each(pack_a);
                } else {
                    (0..mpanels).for_each(pack_a);
                }
                let task = |t: usize| {
                    let (part, cb) = (t / col_blocks, t % col_blocks);
                    let j0 = cb * width;
                    let ncur = width.min(g.n - j0);
                    let npanels = ncur.div_ceil(NR);
                    let (p0, p1) = (part * mpanels / row_parts, (part + 1) * mpanels / row_parts);
                    with_scratch(&PACK_B, npanels * NR * kp, |bpack| {
                        let bpack = bpack.cast::<u32>();
                        for jp in 0..npanels {
                            let col = j0 + jp * NR;
                            // SAFETY: columns col..col+valid < n, rows
                            // pc..pc+kcur < k; panel jp is inside bpack.
                            unsafe {
                                pack_pairs(
                                    &g.b,
                                    pc as isize * g.b.rs + col as isize * g.b.cs,
                                    g.b.cs,
                                    g.b.rs,
                                    NR,
                                    kcur,
                                    NR.min(g.n - col),
                                    bpack.add(jp * NR * kp),
                                )
                            };
                        }
                        for ip in p0..p1 {
                            let row = ip * MR;
                            for jp in 0..npanels {
                                let col = jp * NR;
                                let out = TileOut {
                                    c: g.c.wrapping_offset(
                                        (ic + row) as isize * g.rsc + (j0 + col) as isize * g.csc,
                                    ),
                                    rsc: g.rsc,
                                    csc: g.csc,
                                    rows: MR.min(mcur - row),
                                    cols: NR.min(ncur - col),
                                    alpha: g.alpha,
                                    beta,
                                };
                                // SAFETY: panels packed with kp pairs; the
                                // tile is inside C and owned by this task.
                                unsafe {
                                    kernel(
                                        kp,
                                        apack.get().add(ip * MR * kp),
                                        bpack.add(jp * NR * kp),
                                        &out,
                                    )
                                };
                            }
                        }
                    })
                };
                let tasks = row_parts * col_blocks;
                if threads > 1 && tasks > 1 {
                    (0..tasks).into_par_iter().with_max_len(1).for_each(task);
                } else {
                    (0..tasks).for_each(task);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul_packed::tests::pool;

    /// A deterministic pseudo-random f32 in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// Runs the product on `isa` with `threads`, A as f32 (row-major or
    /// transposed) and B as bf16 bits (row-major or transposed).
    fn run(
        isa: Isa,
        threads: usize,
        (m, k, n): (usize, usize, usize),
        (a_t, b_t): (bool, bool),
        beta: f32,
    ) -> (Vec<f32>, Vec<f64>, Vec<f64>) {
        let a = values(m * k, 1);
        let b: Vec<u16> = values(k * n, 2).into_iter().map(to_bf16_bits).collect();
        let c0 = values(m * n, 3);
        let (rsa, csa) = if a_t {
            (1, m as isize)
        } else {
            (k as isize, 1)
        };
        let (rsb, csb) = if b_t {
            (1, k as isize)
        } else {
            (n as isize, 1)
        };
        let mut c = c0.clone();
        let g = Bgemm {
            m,
            k,
            n,
            alpha: 0.75,
            a: Operand {
                data: Elems::F32(a.as_ptr()),
                rs: rsa,
                cs: csa,
            },
            b: Operand {
                data: Elems::Bf16(b.as_ptr()),
                rs: rsb,
                cs: csb,
            },
            beta,
            c: c.as_mut_ptr(),
            rsc: n as isize,
            csc: 1,
        };
        // SAFETY: every operand is sized for its strides.
        pool(threads).install(|| unsafe { gemm_bf16_with(isa, threads, g) });
        // The f64 reference of the bf16-rounded operands, and Σ|a·b|.
        let mut want = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let (mut s, mut t) = (0f64, 0f64);
                for p in 0..k {
                    let av = a[(i as isize * rsa + p as isize * csa) as usize];
                    let ar = from_bf16_bits(to_bf16_bits(av)) as f64;
                    let br =
                        from_bf16_bits(b[(p as isize * rsb + j as isize * csb) as usize]) as f64;
                    s += ar * br;
                    t += (ar * br).abs();
                }
                want[i * n + j] = 0.75 * s + beta as f64 * c0[i * n + j] as f64;
                mag[i * n + j] = 0.75 * t + (beta as f64 * c0[i * n + j] as f64).abs();
            }
        }
        (c, want, mag)
    }

    #[test]
    fn every_path_is_within_the_stated_bound_of_the_f64_reference() {
        for isa in Isa::available() {
            for &shape in &[
                (1, 1, 1),
                (1, 700, 300),
                (13, 7, 33),
                (40, 1029, 70),
                (97, 64, 300),
            ] {
                for &layout in &[(false, false), (true, true), (false, true)] {
                    for &beta in &[0.0, 1.0] {
                        let (got, want, mag) = run(isa, 1, shape, layout, beta);
                        let k = shape.1 as f64;
                        // γ_k for the sum, plus a few ulps for alpha·acc + beta·c.
                        let gamma =
                            k * 2f64.powi(-24) / (1.0 - k * 2f64.powi(-24)) + 4.0 * 2f64.powi(-24);
                        for (idx, ((g, w), t)) in got.iter().zip(&want).zip(&mag).enumerate() {
                            let err = (*g as f64 - w).abs();
                            assert!(
                                err <= gamma * t + 1e-30,
                                "{} {shape:?} {layout:?} beta {beta}: C[{idx}] = {g}, reference {w}, error {err:e} > {:e}",
                                isa.name(),
                                gamma * t
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn results_are_bit_identical_across_thread_counts() {
        for isa in Isa::available() {
            let shape = (200, 700, 1100);
            let one = run(isa, 1, shape, (false, false), 0.0).0;
            for threads in [2, 3] {
                let many = run(isa, threads, shape, (false, false), 0.0).0;
                assert!(
                    one == many,
                    "{}: {threads} threads differ from one",
                    isa.name()
                );
            }
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        // 1 + 2⁻⁸ is halfway between bf16 neighbours 1 and 1 + 2⁻⁷: ties to
        // the even one (1); just above the midpoint rounds up.
        assert_eq!(to_bf16_bits(1.0 + 2f32.powi(-8)), to_bf16_bits(1.0));
        assert_eq!(
            from_bf16_bits(to_bf16_bits(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
            1.0 + 2f32.powi(-7)
        );
        assert!(from_bf16_bits(to_bf16_bits(f32::NAN)).is_nan());
    }
}
