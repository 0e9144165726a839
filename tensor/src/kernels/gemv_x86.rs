//! The SIMD loops of [`super`] (row-vector × matrix), AVX-512 and AVX2.
//!
//! Both instruction sets get the same two loops with the same structure;
//! only the vector width differs (16 or 8 floats).

use super::*;

/// How far ahead (in floats, 4 KiB) the dot-product loop prefetches each
/// column: about the latency of a DRAM access at full streaming speed.
const DOT_PREFETCH: usize = 1024;

/// `R` dot products `x · col_r` of length `k`, 16 lanes at a time.
///
/// Lane assignment is fixed by `k` alone: 32-float steps alternate between
/// two accumulators, a leftover 16 goes to the first and a ragged tail
/// (masked) to the second, then `reduce(acc0 + acc1)`. So a column's result
/// does not depend on `R` or on its neighbours.
///
/// # Safety
///
/// AVX-512F; `x` and every `cols[r]` valid for `k` contiguous reads.
#[target_feature(enable = "avx512f")]
unsafe fn dot_cols_avx512<const R: usize>(
    k: usize,
    x: *const f32,
    cols: [*const f32; R],
) -> [f32; R] {
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    let mut p = 0;
    // SAFETY: (all loads) p + 16·h < k, or the lanes past k are masked off.
    unsafe {
        while p + 32 <= k {
            let x0 = _mm512_loadu_ps(x.add(p));
            let x1 = _mm512_loadu_ps(x.add(p + 16));
            for c in cols.iter() {
                let ahead = c.wrapping_add(p + DOT_PREFETCH).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            }
            for r in 0..R {
                acc0[r] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(cols[r].add(p)), acc0[r]);
                acc1[r] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(cols[r].add(p + 16)), acc1[r]);
            }
            p += 32;
        }
        if p + 16 <= k {
            let x0 = _mm512_loadu_ps(x.add(p));
            for r in 0..R {
                acc0[r] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(cols[r].add(p)), acc0[r]);
            }
            p += 16;
        }
        if p < k {
            let mask: __mmask16 = (1u32 << (k - p)) as u16 - 1;
            let x1 = _mm512_maskz_loadu_ps(mask, x.add(p));
            for r in 0..R {
                acc1[r] = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(mask, cols[r].add(p)), acc1[r]);
            }
        }
    }
    let mut out = [0.0; R];
    for r in 0..R {
        out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
    }
    out
}

/// The AVX2 twin of [`dot_cols_avx512`]: 8 lanes, the same lane rules.
///
/// # Safety
///
/// AVX2 + FMA; `x` and every `cols[r]` valid for `k` contiguous reads.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_cols_avx2<const R: usize>(
    k: usize,
    x: *const f32,
    cols: [*const f32; R],
) -> [f32; R] {
    let mut acc0 = [_mm256_setzero_ps(); R];
    let mut acc1 = [_mm256_setzero_ps(); R];
    let mut p = 0;
    // SAFETY: (all loads) p + 8·h < k, or the lanes past k are masked off.
    unsafe {
        while p + 16 <= k {
            let x0 = _mm256_loadu_ps(x.add(p));
            let x1 = _mm256_loadu_ps(x.add(p + 8));
            for r in 0..R {
                acc0[r] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(cols[r].add(p)), acc0[r]);
                acc1[r] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(cols[r].add(p + 8)), acc1[r]);
            }
            p += 16;
        }
        if p + 8 <= k {
            let x0 = _mm256_loadu_ps(x.add(p));
            for r in 0..R {
                acc0[r] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(cols[r].add(p)), acc0[r]);
            }
            p += 8;
        }
        if p < k {
            let mask = tail_mask_avx2(k - p);
            let x1 = _mm256_maskload_ps(x.add(p), mask);
            for r in 0..R {
                acc1[r] = _mm256_fmadd_ps(x1, _mm256_maskload_ps(cols[r].add(p), mask), acc1[r]);
            }
        }
    }
    let mut out = [0.0; R];
    for r in 0..R {
        out[r] = hsum_avx2(_mm256_add_ps(acc0[r], acc1[r]));
    }
    out
}

/// Lanes `0..rem` set (`rem < 8`), for `_mm256_maskload_ps`.
#[target_feature(enable = "avx2")]
fn tail_mask_avx2(rem: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(rem as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// Sum of 8 lanes in a fixed order.
#[target_feature(enable = "avx2")]
fn hsum_avx2(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

impl Gemv {
    /// Column-major B: `y[j] = x · B[:, j]` for `j0 ≤ j < j1`, eight at a time.
    ///
    /// Eight columns in flight (eight sequential streams, 16 accumulators)
    /// plus a software prefetch 4 KiB ahead in each keep enough cache misses
    /// outstanding to saturate memory from one core, which four streams
    /// did not.
    ///
    /// # Safety
    ///
    /// AVX-512F, `rsb == 1`, x contiguous, `j1 ≤ n`, and the call contract.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots_avx512(&self, j0: usize, j1: usize) {
        let col = |j: usize| self.b.wrapping_offset(j as isize * self.csb);
        let mut j = j0;
        // SAFETY: columns j < j1 ≤ n are k contiguous floats (rsb == 1).
        unsafe {
            while j + 8 <= j1 {
                let cols = std::array::from_fn::<_, 8, _>(|q| col(j + q));
                let r = dot_cols_avx512(self.k, self.x, cols);
                for (q, &v) in r.iter().enumerate() {
                    self.store(j + q, v);
                }
                j += 8;
            }
            while j < j1 {
                let [v] = dot_cols_avx512(self.k, self.x, [col(j)]);
                self.store(j, v);
                j += 1;
            }
        }
    }

    /// Column-major B on AVX2; see [`Self::dots_avx512`].
    ///
    /// # Safety
    ///
    /// AVX2 + FMA, `rsb == 1`, x contiguous, `j1 ≤ n`, and the call contract.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dots_avx2(&self, j0: usize, j1: usize) {
        let col = |j: usize| self.b.wrapping_offset(j as isize * self.csb);
        let mut j = j0;
        // SAFETY: columns j < j1 ≤ n are k contiguous floats (rsb == 1).
        unsafe {
            while j + 4 <= j1 {
                let r = dot_cols_avx2(self.k, self.x, [col(j), col(j + 1), col(j + 2), col(j + 3)]);
                for (q, &v) in r.iter().enumerate() {
                    self.store(j + q, v);
                }
                j += 4;
            }
            while j < j1 {
                let [v] = dot_cols_avx2(self.k, self.x, [col(j)]);
                self.store(j, v);
                j += 1;
            }
        }
    }

    /// Row-major B on AVX-512F: the accumulators `acc[j] = Σ_p x[p]·B[p,
    /// t0 + j]` for rows `p0..p1` of B and columns `t0..t0 + w`, an FMA
    /// chain over `p` in order. Each sweep adds four rows (`acc = fma(x[p],
    /// B[p, j], acc)` for p, p+1, p+2, p+3), so the accumulators, which stay
    /// in L1, are loaded and stored once per four rows of B while four
    /// sequential streams of B are in flight. See `Gemv::rows`.
    ///
    /// # Safety
    ///
    /// AVX-512F, `csb == 1`, x contiguous, the call contract, `p0 ≤ p1 ≤ k`,
    /// `t0 + w ≤ n`, and `acc` 64-byte aligned and writable for `w` rounded
    /// up to 16 floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows_acc_avx512(
        &self,
        p0: usize,
        p1: usize,
        t0: usize,
        w: usize,
        acc: *mut f32,
    ) {
        let (end, x, rsb) = (p1, self.x, self.rsb);
        let full = w / 16;
        let mask: __mmask16 = ((1u32 << (w % 16)) - 1) as u16;
        let b = self.b.wrapping_add(t0);
        // SAFETY: vectors v < full cover columns < w; the last, partial
        // one is masked; rows p0 ≤ p < p1; acc holds w rounded up.
        unsafe {
            for v in 0..w.div_ceil(16) {
                _mm512_store_ps(acc.add(16 * v), _mm512_setzero_ps());
            }
            let mut p = p0;
            while p + 4 <= end {
                let xs = [0, 1, 2, 3].map(|q| _mm512_set1_ps(*x.add(p + q)));
                let rows = [0, 1, 2, 3].map(|q| b.offset((p + q) as isize * rsb));
                for v in 0..full {
                    let mut a = _mm512_load_ps(acc.add(16 * v));
                    for q in 0..4 {
                        a = _mm512_fmadd_ps(xs[q], _mm512_loadu_ps(rows[q].add(16 * v)), a);
                    }
                    _mm512_store_ps(acc.add(16 * v), a);
                }
                if mask != 0 {
                    let mut a = _mm512_load_ps(acc.add(16 * full));
                    for q in 0..4 {
                        let bv = _mm512_maskz_loadu_ps(mask, rows[q].add(16 * full));
                        a = _mm512_fmadd_ps(xs[q], bv, a);
                    }
                    _mm512_store_ps(acc.add(16 * full), a);
                }
                p += 4;
            }
            while p < end {
                let xp = _mm512_set1_ps(*x.add(p));
                let row = b.offset(p as isize * rsb);
                for v in 0..full {
                    let a = _mm512_load_ps(acc.add(16 * v));
                    let a = _mm512_fmadd_ps(xp, _mm512_loadu_ps(row.add(16 * v)), a);
                    _mm512_store_ps(acc.add(16 * v), a);
                }
                if mask != 0 {
                    let a = _mm512_load_ps(acc.add(16 * full));
                    let bv = _mm512_maskz_loadu_ps(mask, row.add(16 * full));
                    _mm512_store_ps(acc.add(16 * full), _mm512_fmadd_ps(xp, bv, a));
                }
                p += 1;
            }
        }
    }

    /// [`Self::rows_acc_avx512`] on AVX2 + FMA, 8-float vectors.
    ///
    /// # Safety
    ///
    /// AVX2 + FMA, `csb == 1`, x contiguous, the call contract, `p0 ≤ p1 ≤
    /// k`, `t0 + w ≤ n`, and `acc` 32-byte aligned and writable for `w`
    /// rounded up to 8 floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_acc_avx2(
        &self,
        p0: usize,
        p1: usize,
        t0: usize,
        w: usize,
        acc: *mut f32,
    ) {
        let (end, x, rsb) = (p1, self.x, self.rsb);
        let full = w / 8;
        let rem = w % 8;
        let mask = tail_mask_avx2(rem);
        let b = self.b.wrapping_add(t0);
        // SAFETY: as in rows_avx512, with 8-float vectors.
        unsafe {
            for v in 0..w.div_ceil(8) {
                _mm256_store_ps(acc.add(8 * v), _mm256_setzero_ps());
            }
            let mut p = p0;
            while p + 4 <= end {
                let xs = [0, 1, 2, 3].map(|q| _mm256_set1_ps(*x.add(p + q)));
                let rows = [0, 1, 2, 3].map(|q| b.offset((p + q) as isize * rsb));
                for v in 0..full {
                    let mut a = _mm256_load_ps(acc.add(8 * v));
                    for q in 0..4 {
                        a = _mm256_fmadd_ps(xs[q], _mm256_loadu_ps(rows[q].add(8 * v)), a);
                    }
                    _mm256_store_ps(acc.add(8 * v), a);
                }
                if rem != 0 {
                    let mut a = _mm256_load_ps(acc.add(8 * full));
                    for q in 0..4 {
                        let bv = _mm256_maskload_ps(rows[q].add(8 * full), mask);
                        a = _mm256_fmadd_ps(xs[q], bv, a);
                    }
                    _mm256_store_ps(acc.add(8 * full), a);
                }
                p += 4;
            }
            while p < end {
                let xp = _mm256_set1_ps(*x.add(p));
                let row = b.offset(p as isize * rsb);
                for v in 0..full {
                    let a = _mm256_load_ps(acc.add(8 * v));
                    let a = _mm256_fmadd_ps(xp, _mm256_loadu_ps(row.add(8 * v)), a);
                    _mm256_store_ps(acc.add(8 * v), a);
                }
                if rem != 0 {
                    let a = _mm256_load_ps(acc.add(8 * full));
                    let bv = _mm256_maskload_ps(row.add(8 * full), mask);
                    _mm256_store_ps(acc.add(8 * full), _mm256_fmadd_ps(xp, bv, a));
                }
                p += 1;
            }
        }
    }
}
