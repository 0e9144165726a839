//! Hand-written AVX-512 versions of the kernels built on `exp`. They perform
//! exactly the scalar code's operations, lane for lane, except that `2ⁿ` is
//! applied with `vscalefps`, which rounds `p·2ⁿ` once, as the scalar code's
//! two multiplications do (the first is exact): same bits, about a third
//! fewer instructions than the compiler's version of the scalar code.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{Unary, EXP_Q, GELU_2C, GELU_2CK, LANES, LN2_HI, LN2_LO, SHIFTER, TANH_P};

const W: usize = 16; // f32 lanes per register
const R: usize = LANES / W; // registers per accumulator set

#[inline]
#[target_feature(enable = "avx512f")]
fn splat(v: f32) -> __m512 {
    _mm512_set1_ps(v)
}

/// [`super::exp_f32`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp(x: __m512) -> __m512 {
    // MINPS(a, b) = a < b ? a : b returns b (x) for NaN, like the scalar
    // `if x > 89 { 89 } else { x }`. (VRANGEPS could clamp |x| in one
    // step, but it turns NaN into the bound.)
    let x = _mm512_min_ps(splat(89.0), x);
    let x = _mm512_max_ps(splat(-104.0), x);
    let t = _mm512_fmadd_ps(x, splat(std::f32::consts::LOG2_E), splat(SHIFTER));
    let n = _mm512_sub_ps(t, splat(SHIFTER));
    let r = _mm512_fmadd_ps(n, splat(-LN2_HI), x);
    let r = _mm512_fmadd_ps(n, splat(-LN2_LO), r);
    let q = _mm512_fmadd_ps(r, splat(EXP_Q[4]), splat(EXP_Q[3]));
    let q = _mm512_fmadd_ps(q, r, splat(EXP_Q[2]));
    let q = _mm512_fmadd_ps(q, r, splat(EXP_Q[1]));
    let q = _mm512_fmadd_ps(q, r, splat(EXP_Q[0]));
    let p = _mm512_fmadd_ps(_mm512_fmadd_ps(q, r, splat(1.0)), r, splat(1.0));
    _mm512_scalef_ps(p, n)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn copysign(mag: __m512, sign: __m512) -> __m512 {
    let m = _mm512_set1_epi32(i32::MAX);
    // Bitwise m ? mag : sign, in one ternary-logic op.
    _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
        m,
        _mm512_castps_si512(mag),
        _mm512_castps_si512(sign),
        0xca, // a ? b : c
    ))
}

/// [`super::tanh_f32`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn tanh(x: __m512) -> __m512 {
    let a = _mm512_abs_ps(x);
    let z = _mm512_mul_ps(x, x);
    let p = _mm512_fmadd_ps(z, splat(TANH_P[4]), splat(TANH_P[3]));
    let p = _mm512_fmadd_ps(p, z, splat(TANH_P[2]));
    let p = _mm512_fmadd_ps(p, z, splat(TANH_P[1]));
    let p = _mm512_fmadd_ps(p, z, splat(TANH_P[0]));
    let small = _mm512_fmadd_ps(_mm512_mul_ps(a, z), p, a);
    let e = exp(_mm512_add_ps(a, a));
    let big = _mm512_sub_ps(
        splat(1.0),
        _mm512_div_ps(splat(2.0), _mm512_add_ps(e, splat(1.0))),
    );
    let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, splat(0.625));
    copysign(_mm512_mask_blend_ps(is_small, big, small), x)
}

/// [`super::sigmoid_f32`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn sigmoid(x: __m512) -> __m512 {
    let neg_abs = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(x),
        _mm512_set1_epi32(i32::MIN),
    ));
    let e = exp(neg_abs);
    let is_neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, splat(0.0));
    let num = _mm512_mask_blend_ps(is_neg, splat(1.0), e);
    _mm512_div_ps(num, _mm512_add_ps(splat(1.0), e))
}

/// [`super::gelu_f32`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn gelu(x: __m512) -> __m512 {
    let inner = _mm512_fmadd_ps(_mm512_mul_ps(x, x), splat(GELU_2CK), splat(GELU_2C));
    let v = _mm512_mul_ps(x, inner);
    _mm512_mul_ps(x, sigmoid(v))
}

/// Lanes `0..len` of a 16-lane register (all for `len ≥ 16`).
#[inline]
fn mask(len: usize) -> __mmask16 {
    if len >= W {
        0xffff
    } else {
        ((1u32 << len) - 1) as __mmask16
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load(x: &[f32], at: usize, len: usize) -> __m512 {
    debug_assert!(at + len.min(W) <= x.len());
    // SAFETY: lanes `at..at + min(len, 16)` are inside `x`; masked-off
    // lanes are not read.
    unsafe { _mm512_maskz_loadu_ps(mask(len), x.as_ptr().add(at)) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store(out: &mut [MaybeUninit<f32>], at: usize, len: usize, v: __m512) {
    debug_assert!(at + len.min(W) <= out.len());
    // SAFETY: as `load`; masked-off lanes are not written.
    unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr().add(at) as *mut f32, mask(len), v) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn map(src: &[f32], dst: &mut [MaybeUninit<f32>], f: impl Fn(__m512) -> __m512) {
    let n = src.len().min(dst.len());
    // Buffers are only 16-byte aligned: one masked step first, so the
    // remaining stores are whole cache lines.
    let mut i = (dst.as_ptr() as usize).wrapping_neg() % 64 / 4;
    if i > 0 {
        i = i.min(n);
        store(dst, 0, i, f(load(src, 0, i)));
    }
    while i + 2 * W <= n {
        let (a, b) = (f(load(src, i, W)), f(load(src, i + W, W)));
        store(dst, i, W, a);
        store(dst, i + W, W, b);
        i += 2 * W;
    }
    while i < n {
        store(dst, i, n - i, f(load(src, i, n - i)));
        i += W;
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(super) fn unary(op: Unary, src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    match op {
        Unary::Exp => map(src, dst, |v| exp(v)),
        Unary::Tanh => map(src, dst, |v| tanh(v)),
        Unary::Sigmoid => map(src, dst, |v| sigmoid(v)),
        Unary::Gelu => map(src, dst, |v| gelu(v)),
    }
}

/// `acc[k] = op(acc[k], x[j])` for element `j` of lane set `k = (j / 16) % R`:
/// the same lane assignment as the scalar code's `LANES` array.
#[inline]
#[target_feature(enable = "avx512f")]
fn fold_lanes(
    x: &[f32],
    mut acc: [__m512; R],
    op: impl Fn(__m512, __m512, __mmask16) -> __m512,
) -> [__m512; R] {
    let n = x.len();
    let mut i = 0;
    while i < n {
        for (k, a) in acc.iter_mut().enumerate() {
            let at = i + k * W;
            if at < n {
                let m = mask(n - at);
                *a = op(*a, load(x, at, n - at), m);
            }
        }
        i += LANES;
    }
    acc
}

/// Folds 64 lanes to one as the scalar `fold_sum` / max fold do:
/// `a[i] = f(a[i], a[i + k])` for k = 32, 16, …, 1.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn fold(
    acc: [__m512; R],
    f512: impl Fn(__m512, __m512) -> __m512,
    f128: impl Fn(__m128, __m128) -> __m128,
) -> f32 {
    let a = f512(acc[0], acc[2]);
    let b = f512(acc[1], acc[3]);
    let a = f512(a, b);
    // k = 8: lanes 0..8 with 8..16, done as 128-bit halves of each 256.
    let lo = _mm512_castps512_ps256(a);
    let hi = _mm512_extractf32x8_ps::<1>(a);
    let (l0, l1) = (_mm256_castps256_ps128(lo), _mm256_extractf128_ps::<1>(lo));
    let (h0, h1) = (_mm256_castps256_ps128(hi), _mm256_extractf128_ps::<1>(hi));
    let c0 = f128(l0, h0); // lanes 0..4
    let c1 = f128(l1, h1); // lanes 4..8
    let d = f128(c0, c1); // k = 4
    let e = f128(d, _mm_movehl_ps(d, d)); // k = 2: lanes 0, 1
    let g = f128(e, _mm_shuffle_ps::<0b01>(e, e)); // k = 1
    _mm_cvtss_f32(g)
}

#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn row_max(x: &[f32]) -> f32 {
    // scalar: `if b > a { b } else { a }` = MAXPS(b, a).
    let acc = fold_lanes(x, [splat(f32::NEG_INFINITY); R], |a, v, m| {
        _mm512_mask_max_ps(a, m, v, a)
    });
    fold(acc, |a, b| _mm512_max_ps(b, a), |a, b| _mm_max_ps(b, a))
}

#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn softmax_shift(x: &[f32]) -> f32 {
    let m = row_max(x);
    if m == f32::NEG_INFINITY {
        0.0
    } else {
        m
    }
}

/// `Σ exp(x − m)`, storing the terms in `out` when given.
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn exp_shifted_sum(x: &[f32], m: f32, mut out: Option<&mut [MaybeUninit<f32>]>) -> f32 {
    let (n, mv) = (x.len(), splat(m));
    let mut acc = [splat(0.0); R];
    let mut i = 0;
    while i < n {
        for (k, a) in acc.iter_mut().enumerate() {
            let at = i + k * W;
            if at < n {
                let len = n - at;
                let e = exp(_mm512_sub_ps(load(x, at, len), mv));
                if let Some(out) = out.as_deref_mut() {
                    store(out, at, len, e);
                }
                *a = _mm512_mask_add_ps(*a, mask(len), *a, e);
            }
        }
        i += LANES;
    }
    fold(acc, |a, b| _mm512_add_ps(a, b), |a, b| _mm_add_ps(a, b))
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(super) fn softmax_rows(x: &[f32], out: &mut [MaybeUninit<f32>], n: usize) {
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let m = softmax_shift(xr);
        let inv = splat(1.0 / exp_shifted_sum(xr, m, Some(&mut *or)));
        // Scale in place: a masked step up to a cache-line boundary,
        // then whole lines (elementwise, so the split changes nothing).
        let head = ((or.as_ptr() as usize).wrapping_neg() % 64 / 4).min(n);
        if head > 0 {
            // SAFETY: `exp_shifted_sum` wrote every element of the row.
            let v = load(unsafe { super::assume_init_mut(or) }, 0, head);
            store(or, 0, head, _mm512_mul_ps(v, inv));
        }
        let mut i = head;
        while i < n {
            // SAFETY: `exp_shifted_sum` wrote every element of the row.
            let v = load(unsafe { super::assume_init_mut(or) }, i, n - i);
            store(or, i, n - i, _mm512_mul_ps(v, inv));
            i += W;
        }
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub(super) fn log_softmax_rows(x: &[f32], out: &mut [MaybeUninit<f32>], n: usize) {
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let m = softmax_shift(xr);
        let log_sum = splat(exp_shifted_sum(xr, m, None).ln());
        let mv = splat(m);
        let mut i = 0;
        while i < n {
            let v = _mm512_sub_ps(_mm512_sub_ps(load(xr, i, n - i), mv), log_sum);
            store(or, i, n - i, v);
            i += W;
        }
    }
}
