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

// ---- scalar functions (inlined into the kernels) ---------------------------

/// Adding `1.5·2²³` to a float of magnitude below 2²² rounds it to an
/// integer (to nearest, ties to even), which then sits in the low mantissa
/// bits.
const SHIFTER: f32 = 12_582_912.0;
/// ln 2 split for Cody–Waite reduction: a 9-bit head (355/512), so `n·head`
/// is exact for `|n| < 2¹⁵`, and the f32 nearest the rest.
const LN2_HI: f32 = 355.0 / 512.0;
const LN2_LO: f32 = -2.121_944_4e-4;
/// GELU's constants, doubled: 2·√(2/π) and 2·√(2/π)·0.044715, each the
/// nearest f32.
const GELU_2C: f32 = 1.595_769_2;
const GELU_2CK: f32 = 0.071_354_814;

/// The coefficients of `q` in `eʳ ≈ 1 + r + r²·q(r)`, constant term first.
const EXP_Q: [f32; 5] = [
    0.499_999_94,
    0.166_665_21,
    0.041_668_39,
    0.008_368_732,
    0.001_381_447_3,
];

/// The coefficients of `P` in `tanh x ≈ x + x³·P(x²)` on `|x| < 0.625`.
const TANH_P: [f32; 5] = [
    -0.333_332_84,
    0.133_314_92,
    -0.053_743_567,
    0.020_650_817,
    -0.005_717_309_7,
];

/// `eˣ` in f32, under 1 ulp of error; `+inf` above ≈88.72, 0 below ≈−103.97,
/// NaN for NaN. See the module docs for the method. Branch-free, so loops of
/// it vectorise; inside non-FMA code it calls `fmaf`.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Clamp to [−104, 89]: beyond, the answer is 0 or +inf anyway, and n
    // stays within [−150, 129], whose two half-scales are normal numbers.
    // `if x > hi { hi } else { x }` keeps NaN (the comparison is false).
    let x = if x > 89.0 { 89.0 } else { x };
    let x = if x < -104.0 { -104.0 } else { x };
    let t = x.mul_add(std::f32::consts::LOG2_E, SHIFTER);
    let n = t - SHIFTER;
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let q = r.mul_add(EXP_Q[4], EXP_Q[3]);
    let q = q.mul_add(r, EXP_Q[2]);
    let q = q.mul_add(r, EXP_Q[1]);
    let q = q.mul_add(r, EXP_Q[0]);
    // 1 + r·(1 + r·q): plain Horner, one operation shorter and (measured)
    // more accurate than 1 + (r + r²·q).
    let p = q.mul_add(r, 1.0).mul_add(r, 1.0);
    // n as an integer: t's low mantissa bits hold it (|n| < 2²²). Wrapping
    // ops because a NaN input makes garbage here (the product is NaN anyway).
    let ni = (t.to_bits() as i32).wrapping_sub(SHIFTER.to_bits() as i32);
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32) << 23);
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32) << 23);
    p * s1 * s2
}

/// `tanh x` in f32, under 1.5 ulp of error; ±1 at ±inf, NaN for NaN.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let p = z.mul_add(TANH_P[4], TANH_P[3]);
    let p = p.mul_add(z, TANH_P[2]);
    let p = p.mul_add(z, TANH_P[1]);
    let p = p.mul_add(z, TANH_P[0]);
    let small = (a * z).mul_add(p, a);
    let big = 1.0 - 2.0 / (exp_f32(a + a) + 1.0);
    // NaN fails the comparison and takes `big`, which is NaN. tanh is odd:
    // work on |x| and copy the sign back (which also keeps −0).
    let t = if a < 0.625 { small } else { big };
    t.copysign(x)
}

/// The logistic function `1/(1 + e⁻ˣ)` in f32, within 2.5 ulp.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    // e^{−|x|} ≤ 1 never overflows; for x < 0 the answer is e/(1 + e).
    let e = exp_f32(-x.abs());
    let num = if x < 0.0 { e } else { 1.0 };
    num / (1.0 + e)
}

/// GPT-2's GELU, `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`
/// (`F.gelu(x, approximate="tanh")`), in f32, computed as `x·sigmoid(2u)`.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    let v = x * (x * x).mul_add(GELU_2CK, GELU_2C);
    x * sigmoid_f32(v)
}

/// The derivative of [`gelu_f32`]: with `v = 2u` and `s = sigmoid(v)`,
/// `d/dx x·s = s + x·s·(1 − s)·v'`, `v' = 2√(2/π)(1 + 3·0.044715x²)`.
#[inline(always)]
pub fn gelu_grad_f32(x: f32) -> f32 {
    let x2 = x * x;
    let s = sigmoid_f32(x * x2.mul_add(GELU_2CK, GELU_2C));
    let dv = x2.mul_add(3.0 * GELU_2CK, GELU_2C);
    (x * s * (1.0 - s)).mul_add(dv, s)
}

// ---- helpers for the kernels -----------------------------------------------

/// Independent accumulators per row (four 512-bit registers of f32: enough
/// to hide the latency of the adds). Element `j` of a row goes to lane
/// `j % LANES`, and the lanes are folded in halves at the end, so the
/// summation order is fixed whatever the vector width.
const LANES: usize = 64;

#[inline(always)]
fn max_keep_nan_out(a: f32, b: f32) -> f32 {
    // Compiles to one `max` instruction; a NaN `b` is skipped here, but it
    // reaches the row's sum through exp and turns the whole row NaN, as in
    // torch.
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

// ---- kernels -----------------------------------------------------------------

/// The elementwise functions with a fast f32 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unary {
    Exp,
    Tanh,
    Sigmoid,
    Gelu,
}

multiversion! {
    avx512 = avx512::unary;
    /// `dst[i] = op(src[i])`; `dst` and `src` have the same length.
    pub(crate) fn unary(op: Unary, src: &[f32], dst: &mut [MaybeUninit<f32>]) {
        debug_assert_eq!(src.len(), dst.len());
        match op {
            Unary::Exp => map(src, dst, exp_f32),
            Unary::Tanh => map(src, dst, tanh_f32),
            Unary::Sigmoid => map(src, dst, sigmoid_f32),
            Unary::Gelu => map(src, dst, gelu_f32),
        }
    }
}

multiversion! {
    /// One row of softmax's backward: `out = y·(dy − Σ y·dy)/div`, the dot
    /// product summed in `LANES` fixed lanes (by FMA) and folded in f64.
    pub(crate) fn softmax_grad_row(y: &[f32], dy: &[f32], div: f32, out: &mut [f32]) {
        let mut s = [0f32; LANES];
        let ((yc, yt), (gc, gt)) = (y.as_chunks::<LANES>(), dy.as_chunks::<LANES>());
        for (a, b) in yc.iter().zip(gc) {
            for i in 0..LANES {
                s[i] = a[i].mul_add(b[i], s[i]);
            }
        }
        for (i, (&a, &b)) in yt.iter().zip(gt).enumerate() {
            s[i] = a.mul_add(b, s[i]);
        }
        let dot = fold_sum(s.map(f64::from)) as f32;
        for ((o, &a), &b) in out.iter_mut().zip(y).zip(dy) {
            *o = a * (b - dot) / div;
        }
    }
}

multiversion! {
    /// `acc[i] += src[i]`, each `src[i]` widened to f64 (exactly), for
    /// column sums that accumulate f32 rows in f64.
    pub(crate) fn widen_add(acc: &mut [f64], src: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(src) {
            *a += f64::from(v);
        }
    }
}

multiversion! {
    /// The two numbers a log-sum-exp needs from a non-empty row:
    /// `stats = [m, Σ exp(x − m)]` with `m` the row max (0 for a row of all
    /// `-inf`), the sum accumulated in 64 lanes as in the softmax
    /// kernels. Cross-entropy's forward uses it.
    pub fn max_exp_sum(x: &[f32], stats: &mut [f32; 2]) {
        let m = softmax_shift(x);
        *stats = [m, exp_shifted_sum(x, m, None)];
    }
}

multiversion! {
    /// `out[j] = scale · exp(x[j] − shift)` (same length; `out` may be
    /// uninitialised, every element is written): softmax from a saved
    /// log-sum-exp, as cross-entropy's backward rebuilds it.
    pub fn scaled_exp(x: &[f32], shift: f32, scale: f32, out: &mut [MaybeUninit<f32>]) {
        for (o, &v) in out.iter_mut().zip(x) {
            o.write(scale * exp_f32(v - shift));
        }
    }
}

multiversion! {
    /// GELU's backward, `dst[i] = dy[i]·gelu'(x[i])`; all three have the
    /// same length.
    pub(crate) fn gelu_backward(x: &[f32], dy: &[f32], dst: &mut [MaybeUninit<f32>]) {
        debug_assert!(x.len() == dst.len() && dy.len() == dst.len());
        for ((d, &a), &g) in dst.iter_mut().zip(x).zip(dy) {
            d.write(g * gelu_grad_f32(a));
        }
    }
}

multiversion! {
    avx512 = avx512::softmax_rows;
    /// Softmax of each row of `n` elements: `x` and `out` are `[rows, n]`,
    /// `n > 0`. Three passes over a row that stays in L1: max; `exp(x − max)`
    /// stored and summed; scaled by `1/Σ`.
    pub(crate) fn softmax_rows(x: &[f32], out: &mut [MaybeUninit<f32>], n: usize) {
        for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let m = softmax_shift(xr);
            let inv = 1.0 / exp_shifted_sum(xr, m, Some(&mut *or));
            // SAFETY: `exp_shifted_sum` wrote every element of the row.
            for o in unsafe { assume_init_mut(or) } {
                *o *= inv;
            }
        }
    }
}

multiversion! {
    avx512 = avx512::log_softmax_rows;
    /// Log-softmax of each row of `n` elements (`n > 0`):
    /// `(x − max) − log Σ exp(x − max)`. Subtracting the max first keeps the
    /// result exact to a few ulp of itself even when `|x|` is large.
    pub(crate) fn log_softmax_rows(x: &[f32], out: &mut [MaybeUninit<f32>], n: usize) {
        for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let m = softmax_shift(xr);
            let log_sum = exp_shifted_sum(xr, m, None).ln();
            for (o, &v) in or.iter_mut().zip(xr) {
                o.write((v - m) - log_sum);
            }
        }
    }
}

multiversion! {
    /// Layer norm of each row of `c = x.len() / mean.len()` elements (`c > 0`),
    /// writing `out` and the per-row `mean` and `rstd`.
    ///
    /// Pass 1 sums `d = x − m₀` and `d²` in `LANES` f32 lanes, where `m₀` is
    /// the mean of the row's first `LANES` elements. Because `m₀` is close
    /// to the row mean μ, `Σd²/c − (Σd/c)²` does not cancel (the relative
    /// cancellation is about 1/LANES), and `x − m₀` is exact for the values
    /// near the mean; each lane adds only `c/LANES` terms, and the lanes are
    /// folded in f64, so the variance is good to ~c/LANES ulp. Pass 2
    /// writes `((x − μ)·rstd)·w + b`.
    pub(crate) fn layer_norm_rows(
        x: &[f32],
        w: Option<&[f32]>,
        b: Option<&[f32]>,
        eps: f64,
        out: &mut [MaybeUninit<f32>],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let c = x.len() / mean.len();
        let rows = x.chunks_exact(c).zip(out.chunks_exact_mut(c));
        for ((xr, or), (mu_out, rs_out)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
            // A tree sum (a sequential one would be a 64-add latency chain).
            let k = c.min(LANES);
            let mut head = [0f32; LANES];
            head[..k].copy_from_slice(&xr[..k]);
            let m0 = fold_sum(head) / k as f32;
            let mut s = [0f32; LANES];
            let mut ss = [0f32; LANES];
            let (xc, xt) = xr.as_chunks::<LANES>();
            for xs in xc {
                for i in 0..LANES {
                    let d = xs[i] - m0;
                    s[i] += d;
                    ss[i] = d.mul_add(d, ss[i]);
                }
            }
            for (i, &v) in xt.iter().enumerate() {
                let d = v - m0;
                s[i] += d;
                ss[i] = d.mul_add(d, ss[i]);
            }
            let n = c as f64;
            let dm = fold_sum(s.map(f64::from)) / n;
            let var = fold_sum(ss.map(f64::from)) / n - dm * dm;
            // Rounding can leave a constant row's variance a hair below 0.
            let var = if var < 0.0 { 0.0 } else { var };
            let mu = (m0 as f64 + dm) as f32;
            let rs = (1.0 / (var + eps).sqrt()) as f32;
            *mu_out = mu;
            *rs_out = rs;
            // Stores whole cache lines after a short unaligned head (buffers
            // are only 16-byte aligned); the split does not change any value.
            let split = or.as_ptr().align_offset(64).min(c);
            for (lo, hi) in [(0, split), (split, c)] {
                normalize(&xr[lo..hi], w.map(|w| &w[lo..hi]), b.map(|b| &b[lo..hi]), mu, rs, &mut or[lo..hi]);
            }
        }
    }
}

multiversion! {
    /// Layer norm's backward over whole rows of `c = dw.len()` floats, given
    /// each row's `mean` and `rstd` from the forward. With `x̂ = (x − μ)·rstd`
    /// and `ĝ = dy·w` (`dy` when there is no weight) it writes
    /// `dx = rstd·(ĝ − mean ĝ − x̂·mean(ĝ·x̂))` and adds `dy·x̂` into `dw` and
    /// `dy` into `db` (f64, one row after another). The two row means are
    /// sums in `LANES` fixed lanes, folded in f64.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn layer_norm_grad_rows(
        x: &[f32],
        dy: &[f32],
        w: Option<&[f32]>,
        mean: &[f32],
        rstd: &[f32],
        dx: &mut [MaybeUninit<f32>],
        dw: &mut [f64],
        db: &mut [f64],
    ) {
        let c = dw.len();
        let rows = x.chunks_exact(c).zip(dy.chunks_exact(c)).zip(dx.chunks_exact_mut(c));
        for (((xr, gr), dxr), (&mu, &rs)) in rows.zip(mean.iter().zip(rstd)) {
            let mut sg = [0f32; LANES];
            let mut sgx = [0f32; LANES];
            // Lane `i` of the sums takes elements `j ≡ i (mod LANES)`.
            let mut lane = |i: usize, j: usize| {
                let gv = gr[j];
                let xh = (xr[j] - mu) * rs;
                let g = w.map_or(gv, |w| gv * w[j]);
                sg[i] += g;
                sgx[i] = g.mul_add(xh, sgx[i]);
                dw[j] += f64::from(gv * xh);
                db[j] += f64::from(gv);
            };
            let full = c / LANES * LANES;
            for base in (0..full).step_by(LANES) {
                for i in 0..LANES {
                    lane(i, base + i);
                }
            }
            for j in full..c {
                lane(j - full, j);
            }
            let mg = (fold_sum(sg.map(f64::from)) / c as f64) as f32;
            let mgx = (fold_sum(sgx.map(f64::from)) / c as f64) as f32;
            let dx_of = |xv: f32, g: f32| rs * (g - mg - (xv - mu) * rs * mgx);
            // One loop per case, so each vectorises.
            match w {
                Some(w) => {
                    for (((d, &xv), &gv), &wv) in dxr.iter_mut().zip(xr).zip(gr).zip(w) {
                        d.write(dx_of(xv, gv * wv));
                    }
                }
                None => {
                    for ((d, &xv), &gv) in dxr.iter_mut().zip(xr).zip(gr) {
                        d.write(dx_of(xv, gv));
                    }
                }
            }
        }
    }
}

/// `out = ((x − mu)·rs)·w + b`, with `w`/`b` optional.
#[inline(always)]
fn normalize(
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    mu: f32,
    rs: f32,
    out: &mut [MaybeUninit<f32>],
) {
    match (w, b) {
        (Some(w), Some(b)) => {
            for ((o, &v), (&wj, &bj)) in out.iter_mut().zip(x).zip(w.iter().zip(b)) {
                o.write(((v - mu) * rs).mul_add(wj, bj));
            }
        }
        (Some(w), None) => {
            for ((o, &v), &wj) in out.iter_mut().zip(x).zip(w) {
                o.write((v - mu) * rs * wj);
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &bj) in out.iter_mut().zip(x).zip(b) {
                o.write((v - mu) * rs + bj);
            }
        }
        (None, None) => {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write((v - mu) * rs);
            }
        }
    }
}

/// The binary ops with a fast f32 kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

/// `dst[i] = f(a[i·sa], b[i·sb])`, with the common stride patterns (both
/// contiguous, one broadcast) as separate loops the compiler vectorises.
/// (Peeling to 64-byte-aligned stores, as `avx512::map` does, measured
/// slower here: the 256-bit build that runs this only splits every other
/// store.)
#[inline(always)]
fn zip_run(
    a: &[f32],
    sa: usize,
    b: &[f32],
    sb: usize,
    dst: &mut [MaybeUninit<f32>],
    f: impl Fn(f32, f32) -> f32,
) {
    let n = dst.len();
    match (sa, sb) {
        (1, 1) => {
            for ((d, &x), &y) in dst.iter_mut().zip(&a[..n]).zip(&b[..n]) {
                d.write(f(x, y));
            }
        }
        (1, 0) => {
            let y = b[0];
            for (d, &x) in dst.iter_mut().zip(&a[..n]) {
                d.write(f(x, y));
            }
        }
        (0, 1) => {
            let x = a[0];
            for (d, &y) in dst.iter_mut().zip(&b[..n]) {
                d.write(f(x, y));
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                d.write(f(a[i * sa], b[i * sb]));
            }
        }
    }
}

multiversion! {
    // Memory-bound: 512-bit loads of an operand that is not 64-byte aligned
    // (a broadcast row, say) split cache lines, and measure slower than the
    // 256-bit build, so AVX-512 CPUs run that.
    avx512 = avx2;
    /// `dst[i] = a[i·sa] op b[i·sb]` for one run of a broadcast walk.
    pub(crate) fn binary(
        op: Binary,
        a: &[f32],
        sa: usize,
        b: &[f32],
        sb: usize,
        dst: &mut [MaybeUninit<f32>],
    ) {
        match op {
            Binary::Add => zip_run(a, sa, b, sb, dst, |x, y| x + y),
            Binary::Sub => zip_run(a, sa, b, sb, dst, |x, y| x - y),
            Binary::Mul => zip_run(a, sa, b, sb, dst, |x, y| x * y),
            Binary::Div => zip_run(a, sa, b, sb, dst, |x, y| x / y),
        }
    }
}

/// Hand-written AVX-512 versions of the kernels built on `exp`. They perform
/// exactly the scalar code's operations, lane for lane, except that `2ⁿ` is
/// applied with `vscalefps`, which rounds `p·2ⁿ` once, as the scalar code's
/// two multiplications do (the first is exact): same bits, about a third
/// fewer instructions than the compiler's version of the scalar code.
#[cfg(target_arch = "x86_64")]
mod avx512 {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uninit::build;

    /// Error of `got` in units in the last place of the f32 nearest `exact`
    /// (subnormals have a fixed ulp of 2⁻¹⁴⁹).
    fn ulps(got: f32, exact: f64) -> f64 {
        if got as f64 == exact || (got.is_nan() && exact.is_nan()) {
            return 0.0;
        }
        let e = exact as f32;
        if e.is_infinite() || got.is_infinite() {
            return if got == e { 0.0 } else { f64::INFINITY };
        }
        let ulp = (f32::from_bits(e.abs().to_bits() + 1) - e.abs()) as f64;
        (got as f64 - exact).abs() / ulp
    }

    /// Every `step`-th f32 bit pattern in `[lo, hi]`, both signs' orders.
    fn grid(lo: f32, hi: f32, step: u32) -> Vec<f32> {
        let mut v = Vec::new();
        let mut b = 0u32;
        while b < 0x7f80_0000 {
            let x = f32::from_bits(b);
            if x <= hi {
                v.push(x);
            }
            if -x >= lo {
                v.push(-x);
            }
            b += step;
        }
        v
    }

    fn max_ulps(xs: &[f32], f: fn(f32) -> f32, exact: fn(f64) -> f64) -> (f64, f32) {
        let mut worst = (0.0, 0.0);
        for &x in xs {
            let u = ulps(f(x), exact(x as f64));
            if u > worst.0 {
                worst = (u, x);
            }
        }
        worst
    }

    #[test]
    fn exp_is_within_one_ulp_everywhere() {
        // ~1.1M inputs spread over every binade from 1e-45 to 104, plus a
        // dense uniform grid where softmax lives.
        let mut xs = grid(-104.0, 89.0, 2003);
        xs.extend((0..200_001).map(|i| -20.0 + i as f32 * 1e-4));
        let (u, at) = max_ulps(&xs, exp_f32, f64::exp);
        assert!(u < 0.9, "exp: {u} ulp at {at:e}");
    }

    #[test]
    fn exp_extremes() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::MAX), f32::INFINITY);
        assert_eq!(exp_f32(88.73), f32::INFINITY);
        assert!(exp_f32(88.72283).is_finite());
        assert!(ulps(exp_f32(88.72283), (88.72283f32 as f64).exp()) < 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-f32::MAX), 0.0);
        assert_eq!(exp_f32(-104.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        // Gradual underflow: subnormal results are correctly rounded.
        for x in [-87.5f32, -95.0, -100.0, -103.0, -103.9] {
            assert!(ulps(exp_f32(x), (x as f64).exp()) <= 0.5 + 1e-9, "{x}");
        }
        assert_eq!(exp_f32(-103.28), f32::from_bits(1)); // the smallest subnormal
    }

    #[test]
    fn tanh_sigmoid_gelu_accuracy() {
        let xs = grid(-20.0, 20.0, 1009);
        let (u, at) = max_ulps(&xs, tanh_f32, f64::tanh);
        assert!(u < 1.5, "tanh: {u} ulp at {at:e}");
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        assert!(tanh_f32(-0.0).is_sign_negative());
        assert_eq!(tanh_f32(1e-30), 1e-30);

        let xs = grid(-90.0, 90.0, 1009);
        let (u, at) = max_ulps(&xs, sigmoid_f32, |x| 1.0 / (1.0 + (-x).exp()));
        // e (≤ 1 ulp), 1 + e and the division each add up to ½ ulp.
        assert!(u < 2.5, "sigmoid: {u} ulp at {at:e}");
        assert_eq!(sigmoid_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid_f32(f32::INFINITY), 1.0);

        // gelu: relative error against the f64 formula. For x < 0 the result
        // is ≈ x·e^{2u}, so the few-ulp rounding of u (and of the constants)
        // is magnified by |2u|: allow 4 ulp plus 2 ulp per unit of |2u|.
        // (torch's 0.5·x·(1 + tanh u) is worse there: 1 + tanh u cancels to
        // 0 in f32 below x ≈ −5.)
        // The reference is the same function in f64, written as x·sigmoid(2u)
        // too: 1 + tanh u cancels even in f64 (relative error 1e-16/e^{2u}).
        let gelu64 = |x: f64| {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            x / (1.0 + (-2.0 * c * (x + 0.044715 * x * x * x)).exp())
        };
        for &x in &grid(-12.0, 12.0, 4001) {
            let (got, want) = (gelu_f32(x) as f64, gelu64(x as f64));
            let u = 0.8 * (x as f64) * (1.0 + 0.045 * (x as f64).powi(2));
            let tol = f32::EPSILON as f64 * (4.0 + 4.0 * u.abs()) * want.abs() + 1e-40;
            assert!(
                (got - want).abs() <= tol,
                "gelu({x:e}) = {got:e}, want {want:e}"
            );
        }
        // gelu': it crosses zero near x = −0.75, so the bound is absolute
        // there (a few ulp of the terms s and x·s·(1 − s)·v', each ≤ 1.2).
        let grad64 = |x: f64| {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let s = 1.0 / (1.0 + (-2.0 * c * (x + 0.044715 * x * x * x)).exp());
            s + x * s * (1.0 - s) * 2.0 * c * (1.0 + 3.0 * 0.044715 * x * x)
        };
        for &x in &grid(-12.0, 12.0, 4001) {
            let (got, want) = (gelu_grad_f32(x) as f64, grad64(x as f64));
            let u = 0.8 * (x as f64) * (1.0 + 0.045 * (x as f64).powi(2));
            let tol = f32::EPSILON as f64 * (4.0 + 4.0 * u.abs()) * (want.abs() + 2.0);
            assert!(
                (got - want).abs() <= tol,
                "gelu'({x:e}) = {got:e}, want {want:e}"
            );
        }
        assert!(gelu_f32(f32::NEG_INFINITY).is_nan()); // −inf·0, as torch
        assert_eq!(gelu_f32(f32::INFINITY), f32::INFINITY);
        assert!(gelu_f32(f32::NAN).is_nan());
    }

    /// Bit patterns, with every NaN as one pattern (payloads are not part
    /// of the promise).
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter()
            .map(|x| if x.is_nan() { 0x7fc0_0000 } else { x.to_bits() })
            .collect()
    }

    /// Every instruction set gives the same bits on every kernel.
    #[test]
    fn every_isa_gives_identical_bits() {
        let mut g = crate::Rng::new(9);
        let n = 1000 + 13; // not a multiple of any vector width
        let mut x: Vec<f32> = (0..n * 7).map(|_| (g.normal() * 30.0) as f32).collect();
        x[3] = f32::NEG_INFINITY;
        x[n + 5] = f32::NAN;
        x[2 * n..3 * n].fill(f32::NEG_INFINITY);
        let w: Vec<f32> = (0..n).map(|_| g.normal() as f32).collect();
        let run = |isa: Isa| {
            let mut outs = Vec::new();
            for op in [Unary::Exp, Unary::Tanh, Unary::Sigmoid, Unary::Gelu] {
                // SAFETY: `unary` writes every element.
                let y: Vec<f32> = unsafe { build(x.len(), |d| unary(isa, op, &x, d)) };
                outs.push(bits(&y));
            }
            let mut stats = [0f32; 2];
            max_exp_sum(isa, &x[..n], &mut stats);
            outs.push(bits(&stats));
            // SAFETY: `scaled_exp` writes every element.
            let y: Vec<f32> = unsafe { build(n, |d| scaled_exp(isa, &x[..n], 3.0, 0.25, d)) };
            outs.push(bits(&y));
            // SAFETY: `gelu_backward` writes every element.
            let y: Vec<f32> =
                unsafe { build(n - 1, |d| gelu_backward(isa, &x[1..n], &w[..n - 1], d)) };
            outs.push(bits(&y));
            // SAFETY: the row kernels write every element.
            let y: Vec<f32> = unsafe { build(x.len(), |d| softmax_rows(isa, &x, d, n)) };
            outs.push(bits(&y));
            // SAFETY: as above.
            let y: Vec<f32> = unsafe { build(x.len(), |d| log_softmax_rows(isa, &x, d, n)) };
            outs.push(bits(&y));
            let (mut m, mut r) = (vec![0f32; 7], vec![0f32; 7]);
            // SAFETY: as above.
            let y: Vec<f32> = unsafe {
                build(x.len(), |d| {
                    layer_norm_rows(isa, &x, Some(&w), Some(&w), 1e-5, d, &mut m, &mut r)
                })
            };
            outs.extend([bits(&y), bits(&m), bits(&r)]);
            for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div] {
                for (sa, sb) in [(1, 1), (1, 0), (0, 1), (3, 2)] {
                    let len = if sa > 1 { n / 3 } else { n - 2 };
                    // SAFETY: `binary` writes every element.
                    let y: Vec<f32> =
                        unsafe { build(len, |d| binary(isa, op, &x[1..], sa, &w[2..], sb, d)) };
                    outs.push(bits(&y));
                }
            }
            // Layer norm's backward over 13 rows of 77, with and without w.
            let c = 77;
            let (xs, gs) = (&x[4 * n..4 * n + 13 * c], &w[..13 * c]);
            let mu: Vec<f32> = w[..13].iter().map(|v| v * 3.0).collect();
            let rs: Vec<f32> = w[13..26].iter().map(|v| 0.5 + v.abs()).collect();
            for wr in [Some(&w[..c]), None] {
                let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
                // SAFETY: the kernel writes every element of dx.
                let dx: Vec<f32> = unsafe {
                    build(13 * c, |d| {
                        layer_norm_grad_rows(isa, xs, gs, wr, &mu, &rs, d, &mut dw, &mut db)
                    })
                };
                outs.push(bits(&dx));
                outs.push(
                    dw.iter()
                        .chain(&db)
                        .map(|v| (v.to_bits() >> 16) as u32)
                        .collect(),
                );
            }
            let mut y = vec![0f32; n];
            softmax_grad_row(isa, &w, &x[4 * n..5 * n], 3.0, &mut y);
            outs.push(bits(&y));
            let mut acc: Vec<f64> = w.iter().map(|&v| f64::from(v) * 1e-3).collect();
            widen_add(isa, &mut acc, &x);
            outs.push(
                acc.iter()
                    .map(|v| v.to_bits() as u32 ^ (v.to_bits() >> 32) as u32)
                    .collect(),
            );
            outs
        };
        let reference = run(Isa::portable());
        for isa in Isa::available() {
            assert!(
                run(isa) == reference,
                "{} differs from portable",
                isa.name()
            );
        }
        assert!(Isa::available().contains(&Isa::detect()));
    }
}
