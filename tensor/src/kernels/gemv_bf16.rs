//! The bf16-weight gemv of decoding: `y[n] = alpha · bf16(x)[k] · W[k×n] +
//! beta · y` with `W` in bf16 in memory and `x`, `y` f32.
//!
//! Decoding one token multiplies one row of activations by every weight
//! matrix: 2 FLOPs per weight, so the time is the time to stream the
//! weights from memory, and bf16 weights halve it. Each weight is widened
//! to f32 (a shift: bf16 is the top half of an f32) and multiplied by `x`
//! rounded to bf16 — the same operands as [`super::matmul_bf16`], so a
//! prefill and a decode step compute the same function — with unfused f32
//! multiply-adds.
//!
//! Two layouts, as the GPT-2 weights come:
//! - row-major `W[p, j]` (Conv1D weights `[in, out]`): each thread's
//!   columns accumulated row by row, each row's slice streamed once;
//! - column-major (`wteᵀ` of the tied LM head): one dot product per column,
//!   over 32 fixed lanes summed in a fixed order.
//!
//! Threads split the columns, and each `y[j]` is computed by one thread in
//! an order that does not depend on the split: bit-identical at every
//! thread count.

use super::isa::Isa;
use super::matmul_bf16::{from_bf16_bits, to_bf16_bits, GemmBf16};
use super::scratch::{with_scratch, PACK_A};
use crate::parallel::SharedPtr;

/// Lanes of the column-major dot products.
const LANES: usize = 32;

/// The weight matrix: bf16 bits at `w + p·rs + j·cs`, with `rs == 1` or
/// `cs == 1`.
#[derive(Clone, Copy)]
pub(crate) struct Weights {
    pub w: *const u16,
    pub rs: isize,
    pub cs: isize,
}
// SAFETY: the weights are only read, under `gemv_bf16`'s contract.
unsafe impl Send for Weights {}
// SAFETY: as above.
unsafe impl Sync for Weights {}

/// Rows `p0..p1` of a row-major `W` times `x[p0..p1]`, all `n` columns,
/// into `acc`: each row read once, whole, as one contiguous stream (what
/// DRAM prefetching serves best), into an accumulator that stays in cache.
///
/// # Safety
/// `W[p, j]` in bounds for `p0 ≤ p < p1`, `j < acc.len()`; `cs == 1`.
#[inline(always)]
unsafe fn rows(x: &[f32], w: Weights, (p0, p1): (usize, usize), acc: &mut [f32]) {
    let n = acc.len();
    // SAFETY: rows p < p1, columns 0..n are in bounds.
    let row = |p: usize| unsafe { std::slice::from_raw_parts(w.w.offset(p as isize * w.rs), n) };
    let mut p = p0;
    // Four rows per pass: the accumulator is loaded and stored once for
    // four multiply-adds.
    while p + 4 <= p1 {
        let (x0, x1, x2, x3) = (x[p], x[p + 1], x[p + 2], x[p + 3]);
        let (r0, r1, r2, r3) = (row(p), row(p + 1), row(p + 2), row(p + 3));
        for j in 0..n {
            acc[j] += x0 * from_bf16_bits(r0[j])
                + x1 * from_bf16_bits(r1[j])
                + x2 * from_bf16_bits(r2[j])
                + x3 * from_bf16_bits(r3[j]);
        }
        p += 4;
    }
    for (p, &xp) in x.iter().enumerate().take(p1).skip(p) {
        for (a, &b) in acc.iter_mut().zip(row(p)) {
            *a += xp * from_bf16_bits(b);
        }
    }
}

/// Columns `j0..j1` of `y = x·W` into `acc[j - j0]`, column-major `W`.
///
/// # Safety
/// `W[p, j]` in bounds for `p < x.len()`, `j0 ≤ j < j1`; `rs == 1`.
#[inline(always)]
unsafe fn columns(x: &[f32], w: Weights, j0: usize, j1: usize, out: &mut [f32]) {
    let k = x.len();
    let full = k / LANES * LANES;
    for j in j0..j1 {
        // SAFETY: column j is k contiguous elements.
        let col = unsafe { std::slice::from_raw_parts(w.w.offset(j as isize * w.cs), k) };
        let mut lanes = [0f32; LANES];
        for (xc, wc) in x[..full]
            .chunks_exact(LANES)
            .zip(col[..full].chunks_exact(LANES))
        {
            for l in 0..LANES {
                lanes[l] += xc[l] * from_bf16_bits(wc[l]);
            }
        }
        for (l, p) in (full..k).enumerate() {
            lanes[l] += x[p] * from_bf16_bits(col[p]);
        }
        out[j - j0] = fold(&mut lanes);
    }
}

/// One unit of work: for column-major `W`, the columns `r` of `y` (written
/// to `out`, `r.len()` long); for row-major, the rows `r` (a fixed chunk
/// of k) summed over every column into `out` (`n` long).
///
/// # Safety
/// As [`gemv_bf16`].
#[inline(always)]
unsafe fn part(x: &[f32], w: Weights, r: (usize, usize), out: &mut [f32]) {
    // SAFETY: forwarded.
    unsafe {
        if w.cs == 1 {
            rows(x, w, r, out);
        } else {
            columns(x, w, r.0, r.1, out);
        }
    }
}

/// [`part`] with AVX-512 inner loops: 16 bf16 weights widened per
/// instruction (zero-extend to 32 bits, shift left 16), then the same
/// unfused multiplies and adds as the portable loops, in the same order,
/// so both give the same bits.
///
/// # Safety
/// As [`part`]; the CPU has AVX-512F/BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
unsafe fn part_avx512(x: &[f32], w: Weights, r: (usize, usize), out: &mut [f32]) {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn widen16(p: *const u16) -> __m512 {
        // SAFETY: 16 u16 readable at p (caller).
        unsafe {
            let h = _mm256_loadu_si256(p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
    // SAFETY: (whole body) the same bounds as the portable loops; vector
    // steps only cover whole groups of 16 inside them.
    unsafe {
        if w.cs == 1 {
            let (p0, p1) = r;
            let n = out.len();
            let vn = n / 16 * 16;
            let row = |p: usize| w.w.offset(p as isize * w.rs);
            let acc = out.as_mut_ptr();
            let mut p = p0;
            // Eight rows per pass over the columns: the sums of rows
            // p..p+4 and then of p+4..p+8 are added to each column's
            // partial in a register, which is loaded and stored once
            // instead of twice. The additions are those of two four-row
            // passes, in their order, so the bits are too. Each step takes
            // a whole 64-byte line (32 columns) of every row, split into
            // its even and odd columns by one shift and one mask (a bf16
            // is the top half of an f32): half the widening work of
            // zero-extending 16 at a time. The sums are put back in
            // column order with two permutes per four rows.
            let vn32 = n / 32 * 32;
            let (lo_idx, hi_idx) = interleave_indices();
            let top = _mm512_set1_epi32(0xffff_0000_u32 as i32);
            while p + 8 <= p1 {
                let xs: [f32; 8] = std::array::from_fn(|q| x[p + q]);
                let xv = xs.map(|v| _mm512_set1_ps(v));
                let r0 = row(p);
                let rs = w.rs;
                // Rows p + q at r0 + q·rs: one base pointer and a stride,
                // so the loop keeps them in registers.
                let four = |g: usize, j: usize| {
                    let line =
                        |q: usize| _mm512_loadu_si512(r0.offset(q as isize * rs).add(j).cast());
                    let v = line(g);
                    let mut e =
                        _mm512_mul_ps(xv[g], _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)));
                    let mut o = _mm512_mul_ps(xv[g], _mm512_castsi512_ps(_mm512_and_si512(v, top)));
                    // (A plain range, not an iterator chain: this must
                    // unroll, and `skip`/`take` were left as calls.)
                    for d in 1..4 {
                        let q = g + d;
                        let v = line(q);
                        let we = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                        let wo = _mm512_castsi512_ps(_mm512_and_si512(v, top));
                        e = _mm512_add_ps(e, _mm512_mul_ps(xv[q], we));
                        o = _mm512_add_ps(o, _mm512_mul_ps(xv[q], wo));
                    }
                    (
                        _mm512_permutex2var_ps(e, lo_idx, o),
                        _mm512_permutex2var_ps(e, hi_idx, o),
                    )
                };
                let mut j = 0;
                while j < vn32 {
                    // As below: the line AHEAD rows on, for each row.
                    for q in 0..8 {
                        let ahead = r0
                            .wrapping_offset((q as isize + AHEAD) * rs)
                            .wrapping_add(j);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    }
                    let (lo0, hi0) = four(0, j);
                    let (lo1, hi1) = four(4, j);
                    let (a0, a1) = (acc.add(j), acc.add(j + 16));
                    let lo = _mm512_add_ps(_mm512_loadu_ps(a0), lo0);
                    let hi = _mm512_add_ps(_mm512_loadu_ps(a1), hi0);
                    _mm512_storeu_ps(a0, _mm512_add_ps(lo, lo1));
                    _mm512_storeu_ps(a1, _mm512_add_ps(hi, hi1));
                    j += 32;
                }
                for j in vn32..n {
                    let wv = |q: usize| xs[q] * from_bf16_bits(*r0.offset(q as isize * rs).add(j));
                    *acc.add(j) += wv(0) + wv(1) + wv(2) + wv(3);
                    *acc.add(j) += wv(4) + wv(5) + wv(6) + wv(7);
                }
                p += 8;
            }
            while p + 4 <= p1 {
                let xs = [x[p], x[p + 1], x[p + 2], x[p + 3]];
                let xv = xs.map(|v| _mm512_set1_ps(v));
                let rs = [row(p), row(p + 1), row(p + 2), row(p + 3)];
                let mut j = 0;
                // Two vectors per row per step: a whole 64-byte line of each
                // of the four rows, the same sums per column as below.
                while j + 32 <= vn {
                    // The same line AHEAD rows on: the chunk's rows are one
                    // contiguous stretch whose short row streams the
                    // hardware prefetcher alone leaves partly unfetched.
                    // (Past the last row the address is computed with
                    // wrapping arithmetic; a prefetch never faults.)
                    for r in rs {
                        let ahead = r.wrapping_offset(AHEAD * w.rs).wrapping_add(j);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    }
                    let mut t = _mm512_mul_ps(xv[0], widen16(rs[0].add(j)));
                    let mut u = _mm512_mul_ps(xv[0], widen16(rs[0].add(j + 16)));
                    t = _mm512_add_ps(t, _mm512_mul_ps(xv[1], widen16(rs[1].add(j))));
                    u = _mm512_add_ps(u, _mm512_mul_ps(xv[1], widen16(rs[1].add(j + 16))));
                    t = _mm512_add_ps(t, _mm512_mul_ps(xv[2], widen16(rs[2].add(j))));
                    u = _mm512_add_ps(u, _mm512_mul_ps(xv[2], widen16(rs[2].add(j + 16))));
                    t = _mm512_add_ps(t, _mm512_mul_ps(xv[3], widen16(rs[3].add(j))));
                    u = _mm512_add_ps(u, _mm512_mul_ps(xv[3], widen16(rs[3].add(j + 16))));
                    _mm512_storeu_ps(acc.add(j), _mm512_add_ps(_mm512_loadu_ps(acc.add(j)), t));
                    let a1 = acc.add(j + 16);
                    _mm512_storeu_ps(a1, _mm512_add_ps(_mm512_loadu_ps(a1), u));
                    j += 32;
                }
                while j < vn {
                    let mut t = _mm512_mul_ps(xv[0], widen16(rs[0].add(j)));
                    t = _mm512_add_ps(t, _mm512_mul_ps(xv[1], widen16(rs[1].add(j))));
                    t = _mm512_add_ps(t, _mm512_mul_ps(xv[2], widen16(rs[2].add(j))));
                    t = _mm512_add_ps(t, _mm512_mul_ps(xv[3], widen16(rs[3].add(j))));
                    _mm512_storeu_ps(acc.add(j), _mm512_add_ps(_mm512_loadu_ps(acc.add(j)), t));
                    j += 16;
                }
                for j in vn..n {
                    let wv = |q: usize| from_bf16_bits(*rs[q].add(j));
                    *acc.add(j) += xs[0] * wv(0) + xs[1] * wv(1) + xs[2] * wv(2) + xs[3] * wv(3);
                }
                p += 4;
            }
            if p < p1 {
                rows(x, w, (p, p1), out);
            }
        } else {
            let k = x.len();
            let full = k / LANES * LANES;
            for (j, o) in (r.0..r.1).zip(out.iter_mut()) {
                let col = w.w.offset(j as isize * w.cs);
                let (mut l0, mut l1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
                let mut p = 0;
                while p < full {
                    // 4 KiB ahead, as the f32 dot products do: about a
                    // DRAM access's latency at streaming speed. (Past the
                    // column the address wraps harmlessly; a prefetch
                    // never faults.)
                    _mm_prefetch::<_MM_HINT_T0>(col.wrapping_add(p + DOT_AHEAD).cast());
                    let x0 = _mm512_loadu_ps(x.as_ptr().add(p));
                    let x1 = _mm512_loadu_ps(x.as_ptr().add(p + 16));
                    l0 = _mm512_add_ps(l0, _mm512_mul_ps(x0, widen16(col.add(p))));
                    l1 = _mm512_add_ps(l1, _mm512_mul_ps(x1, widen16(col.add(p + 16))));
                    p += LANES;
                }
                let mut lanes = [0f32; LANES];
                _mm512_storeu_ps(lanes.as_mut_ptr(), l0);
                _mm512_storeu_ps(lanes.as_mut_ptr().add(16), l1);
                for (l, p) in (full..k).enumerate() {
                    lanes[l] += x[p] * from_bf16_bits(*col.add(p));
                }
                *o = fold(&mut lanes);
            }
        }
    }
}

/// `permutex2var` indices that interleave the even columns `e` and odd
/// columns `o` of a 32-column step back into column order: columns 0..16
/// (`e0 o0 e1 o1 …`) and 16..32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn interleave_indices() -> (std::arch::x86_64::__m512i, std::arch::x86_64::__m512i) {
    use std::arch::x86_64::*;
    // Index i < 16 takes e[i], 16 + i takes o[i].
    let lo: [i32; 16] = std::array::from_fn(|c| (c / 2 + 16 * (c % 2)) as i32);
    let hi: [i32; 16] = std::array::from_fn(|c| (8 + c / 2 + 16 * (c % 2)) as i32);
    // SAFETY: each array is 64 bytes, read unaligned.
    unsafe {
        (
            _mm512_loadu_si512(lo.as_ptr().cast()),
            _mm512_loadu_si512(hi.as_ptr().cast()),
        )
    }
}

/// The fixed pairwise fold of the column dot products' lanes.
#[inline(always)]
fn fold(lanes: &mut [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}

/// How many rows ahead the row-major AVX-512 loop prefetches.
const AHEAD: isize = 8;

/// How far ahead (in bf16, 4 KiB) the column loop prefetches.
const DOT_AHEAD: usize = 2048;

/// Rows of `W` per chunk of the row-major walk: a chunk's partial sums do
/// not depend on the thread count, and chunks are added in order.
const ROWS_PER_CHUNK: usize = 64;

/// `y[j] = alpha · Σ_p bf16(x[p])·W[p, j] + beta · y[j]` for `j < n`: the
/// one-row product `g` (`g.m == 1`) whose A is the f32 row `x` (`x[p]` at
/// `x + p·g.a.cs`) and whose B is `w`; y is row 0 of C (`y[j]` at
/// `g.c + j·g.csc`). When `beta == 0`, y is write-only.
///
/// # Safety
///
/// `x` readable for `p < k`; `W[p, j]` readable for `p < k`, `j < n`, with
/// `w.rs == 1` or `w.cs == 1`; `y[j]` (at `y + j·csy`) writable, distinct
/// for distinct `j`, disjoint from the inputs, and not accessed by anyone
/// else during the call.
pub(crate) unsafe fn gemv_bf16(isa: Isa, g: &GemmBf16, x: *const f32, w: Weights) {
    let (k, n, alpha, beta) = (g.k, g.n, g.alpha, g.beta);
    let (csx, y, csy) = (g.a.cs, g.c, g.csc);
    // SAFETY: x[p] is readable for p < k.
    let xr: Vec<f32> = (0..k)
        .map(|p| from_bf16_bits(to_bf16_bits(unsafe { *x.offset(p as isize * csx) })))
        .collect();
    let run = |r: (usize, usize), out: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if isa.f32() == super::isa::Level::Avx512 {
            // SAFETY: the CPU has AVX-512 (an Isa only names available sets).
            unsafe { part_avx512(&xr, w, r, out) };
            return;
        }
        // SAFETY: forwarded.
        unsafe { part(&xr, w, r, out) };
    };
    let y = SharedPtr(y);
    // `y[j] = alpha·v + beta·y[j]`, y write-only when beta is 0.
    let write = |j: usize, v: f32| {
        // SAFETY: y[j] is in bounds, and each j is written once, by one
        // thread (the caller's contract and disjoint ranges).
        let yj = unsafe { &mut *y.get().offset(j as isize * csy) };
        let r = alpha * v;
        *yj = if beta == 0.0 { r } else { r + beta * *yj };
    };
    if w.cs == 1 {
        // Row-major: fixed chunks of rows, each summed over all columns on
        // some thread, then the chunks added in order.
        let chunks = k.div_ceil(ROWS_PER_CHUNK);
        // A reused buffer: a fresh zeroed allocation of this size would
        // cost page faults on every call.
        with_scratch(&PACK_A, chunks * n, |buf| {
            let parts = SharedPtr(buf);
            crate::parallel::for_each_range(chunks, 1, |cr| {
                for c in cr {
                    // SAFETY: chunk c owns buf[c·n..(c+1)·n]; zeroed first,
                    // as `rows` accumulates.
                    let out = unsafe {
                        let out = std::slice::from_raw_parts_mut(parts.get().add(c * n), n);
                        out.fill(0.0);
                        out
                    };
                    let rows = (c * ROWS_PER_CHUNK, ((c + 1) * ROWS_PER_CHUNK).min(k));
                    run(rows, out);
                }
            });
            // SAFETY: every chunk of buf was written above.
            let partial = unsafe { std::slice::from_raw_parts(buf, chunks * n) };
            // Chunk by chunk, so the adds run along contiguous rows (and
            // vectorise); each y[j] still sums its chunks in chunk order.
            let (first, rest) = partial.split_at(n);
            let mut sum = first.to_vec();
            for chunk in rest.chunks_exact(n) {
                for (s, &v) in sum.iter_mut().zip(chunk) {
                    *s += v;
                }
            }
            for (j, v) in sum.into_iter().enumerate() {
                write(j, v);
            }
        });
    } else {
        // Column-major: one dot product per column; about 64 KiB of
        // weights per range, so small products stay on one thread.
        let min_cols = (32_768 / k.max(1)).max(16);
        crate::parallel::for_each_range(n, min_cols, |r| {
            let mut out = vec![0f32; r.len()];
            run((r.start, r.end), &mut out);
            for (j, v) in r.zip(out) {
                write(j, v);
            }
        });
    }
}
