//! Fast f32 math for the elementwise and row kernels: `exp`, `tanh`,
//! `sigmoid`, GPT-2's `gelu`, fused softmax, log-softmax and layer-norm rows,
//! and the broadcasting binary ops. Only f32 comes here: the f64 paths keep
//! Rust's `std` math, because they are the references gradient checks trust.
//!
//! # exp
//! `eˣ = 2ⁿ·eʳ` with `n = round(x·log₂e)` and `r = x − n·ln2 ∈ [−ln2/2, ln2/2]`
//! (Cody–Waite: ln2 is split into a 9-bit head, so `n·head` is exact for the
//! `|n| ≤ 150` that occur, and a tail). Then `eʳ = 1 + r·(1 + r·q(r))`, all in
//! Horner form, with `q` a degree-4 polynomial fitted near-minimax (iterated
//! weighted least squares, by us) to `(eʳ − 1 − r)/r²`; the fit's own
//! relative error is 3e-9, far below f32's 6e-8. The scale `2ⁿ` is applied
//! as two exact multiplications by `2^⌊n/2⌋` and `2^(n−⌊n/2⌋)`, so a result
//! in the subnormal range is rounded once, correctly, and one past `f32::MAX`
//! becomes `+inf`, with no branch. Inputs are first clamped to `[−104, 89]`
//! (beyond which the answer is 0 or `+inf` anyway) to keep `n` small; NaN
//! passes the clamp unchanged. Measured: under 0.9 ulp over the whole f32
//! range (see the tests).
//!
//! # tanh, sigmoid, gelu
//! `tanh x = x + x³·P(x²)` for `|x| < 0.625` (P fitted like q, degree 4),
//! else `sign(x)·(1 − 2/(e^{2|x|} + 1))`: under 1.5 ulp.
//! `sigmoid x = 1/(1 + e^{−x})` for `x ≥ 0` and `eˣ/(1 + eˣ)` below, so tiny
//! results keep their digits: under 2.5 ulp. GPT-2's
//! `gelu = 0.5·x·(1 + tanh u)` with `u = √(2/π)(x + 0.044715x³)` is computed
//! as the identical `x·sigmoid(2u)`, which avoids the cancellation of
//! `1 + tanh u` for negative `x`.
//!
//! # One code for every CPU, identical bits
//! Each kernel is written once, as plain scalar Rust whose loops the compiler
//! vectorises, with `mul_add` (one rounding) wherever a product is summed,
//! and sums kept in `LANES` fixed lanes. `multiversion!` compiles it three
//! times — baseline, AVX2+FMA, AVX-512 — and [`Isa::detect`] picks one at run
//! time. The exp-based kernels also have a hand-written AVX-512 version
//! (module `avx512`) that applies `2ⁿ` with one `vscalefps`, which rounds
//! exactly as the two multiplications do. Every version performs the same
//! IEEE operations in the same order, so all return bit-identical results
//! (the tests compare them); rows are never split between threads, so every
//! thread count does too. (On an x86-64 CPU without FMA the baseline build
//! calls libm's `fmaf`: correct, but slow. AArch64 has FMA in its baseline.)
//!
//! # Files
//! `scalar.rs` the approximations (`exp_f32` …), `elementwise.rs` the
//! elementwise and broadcasting binary kernels, `rows.rs` the row kernels
//! (softmax, log-softmax, layer norm) and reductions, `avx512.rs` the
//! hand-written AVX-512 versions, `tests.rs` their checks. The helpers
//! shared by the kernels stay here.

use std::mem::MaybeUninit;

use crate::uninit::assume_init_mut;

// ---- instruction sets ------------------------------------------------------

pub use super::isa::Isa;
use super::isa::Level;

/// Defines `fn name(isa: Isa, args…)` that runs `body` compiled for `isa`.
/// The body is an `#[inline(always)]` function, so the compiler vectorises it
/// anew inside each `#[target_feature]` wrapper. With `avx512 = path;` first,
/// AVX-512 runs that hand-written function instead (it must compute the same
/// bits; the tests check).
macro_rules! multiversion {
    (avx512 = $ov:path; $(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        multiversion!(@emit [$ov] $(#[$attr])* $vis fn $name($($arg: $ty),*) $body);
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        multiversion!(@emit [avx512] $(#[$attr])* $vis fn $name($($arg: $ty),*) $body);
    };
    (@emit [$avx512:path] $(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: Isa, $($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            #[allow(clippy::too_many_arguments, dead_code)]
            fn avx512($($arg: $ty),*) {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) {
                body($($arg),*)
            }

            match isa.f32() {
                // SAFETY: an `Isa` naming an instruction set is only made
                // after detecting that the CPU supports it.
                #[cfg(target_arch = "x86_64")]
                Level::Avx512 => unsafe { $avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Level::Avx2 => unsafe { avx2($($arg),*) },
                Level::Portable => body($($arg),*),
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx512;
mod elementwise;
mod rows;
mod scalar;
#[cfg(test)]
mod tests;

pub(crate) use elementwise::*;
pub use rows::*;
pub use scalar::*;

// ---- helpers for the kernels -----------------------------------------------

/// Independent accumulators per row (four 512-bit registers of f32: enough
/// to hide the latency of the adds). Element `j` of a row goes to lane
/// `j % LANES`, and the lanes are folded in halves at the end, so the
/// summation order is fixed whatever the vector width.
const LANES: usize = 64;

#[inline(always)]
fn max_keep_nan_out(a: f32, b: f32) -> f32 {
    // Compiles to one `max` instruction; a NaN `b` is skipped here, but it
    // reaches the row's sum through exp and turns the whole row NaN, as the
    // NaN rule of `ops::reduce` asks (see `row_max`).
    if b > a {
        b
    } else {
        a
    }
}

/// Sum of the lanes, folding halves together: a fixed order.
#[inline(always)]
fn fold_sum<const N: usize, T: Copy + std::ops::Add<Output = T>>(mut a: [T; N]) -> T {
    let mut k = N / 2;
    while k > 0 {
        for i in 0..k {
            a[i] = a[i] + a[i + k];
        }
        k /= 2;
    }
    a[0]
}

/// The max of a row, over `LANES` lanes folded in a fixed order, for the
/// kernels below to shift by. It skips NaN, which keeps the pass at one
/// `max` instruction per vector (testing for NaN as well measured up to
/// ~4 % slower softmax): every caller follows it with `exp(x − max)`, which
/// is NaN for a NaN `x`, so the row's results still obey the NaN rule of
/// `ops::reduce` (`max_exp_sum`, the one caller that reports the max,
/// reports NaN then).
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let (chunks, tail) = x.as_chunks::<LANES>();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = max_keep_nan_out(acc[i], c[i]);
        }
    }
    for (i, &v) in tail.iter().enumerate() {
        acc[i] = max_keep_nan_out(acc[i], v);
    }
    let mut k = LANES / 2;
    while k > 0 {
        for i in 0..k {
            acc[i] = max_keep_nan_out(acc[i], acc[i + k]);
        }
        k /= 2;
    }
    acc[0]
}

/// The shift softmax subtracts: the row max, or 0 for a row of `-inf` (a
/// fully masked row), which then gives NaN as in torch.
#[inline(always)]
fn softmax_shift(x: &[f32]) -> f32 {
    let m = row_max(x);
    if m == f32::NEG_INFINITY {
        0.0
    } else {
        m
    }
}

/// `out = exp(x − m)`, returning `Σ out` (accumulated in `LANES` lanes).
#[inline(always)]
fn exp_shifted_sum(x: &[f32], m: f32, out: Option<&mut [MaybeUninit<f32>]>) -> f32 {
    let mut acc = [0f32; LANES];
    let (xc, xt) = x.as_chunks::<LANES>();
    match out {
        Some(out) => {
            let (oc, ot) = out.as_chunks_mut::<LANES>();
            for (xs, os) in xc.iter().zip(oc) {
                for i in 0..LANES {
                    let e = exp_f32(xs[i] - m);
                    os[i].write(e);
                    acc[i] += e;
                }
            }
            for (i, (&v, o)) in xt.iter().zip(ot).enumerate() {
                let e = exp_f32(v - m);
                o.write(e);
                acc[i] += e;
            }
        }
        None => {
            for xs in xc {
                for i in 0..LANES {
                    acc[i] += exp_f32(xs[i] - m);
                }
            }
            for (i, &v) in xt.iter().enumerate() {
                acc[i] += exp_f32(v - m);
            }
        }
    }
    fold_sum(acc)
}

#[inline(always)]
fn map(src: &[f32], dst: &mut [MaybeUninit<f32>], f: impl Fn(f32) -> f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        d.write(f(s));
    }
}
