//! Accuracy (ulps over the f32 range) and bit-identity across instruction
//! sets, for every kernel.

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
        max_exp_sum(isa, &x[n..2 * n], &mut stats); // holds a NaN
        outs.push(bits(&stats));
        // SAFETY: `scaled_exp` writes every element.
        let y: Vec<f32> = unsafe { build(n, |d| scaled_exp(isa, &x[..n], 3.0, 0.25, d)) };
        outs.push(bits(&y));
        // SAFETY: `gelu_backward` writes every element.
        let y: Vec<f32> = unsafe { build(n - 1, |d| gelu_backward(isa, &x[1..n], &w[..n - 1], d)) };
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

/// The f32 row kernels follow the generic NaN rule on every instruction
/// set: a NaN anywhere (in a full vector, in the tail, first or last) makes
/// the reported max, the log-sum-exp statistics and the whole softmax row
/// NaN, and without NaN the max is the generic one's.
#[test]
fn row_results_follow_the_nan_rule() {
    use crate::ops::reduce;
    let mut g = crate::Rng::new(3);
    for n in [1, 15, 16, 64, 77, 1013] {
        let base: Vec<f32> = (0..n).map(|_| (g.normal() * 10.0) as f32).collect();
        for isa in Isa::available() {
            let mut stats = [0f32; 2];
            max_exp_sum(isa, &base, &mut stats);
            assert_eq!(
                stats[0],
                reduce::max_exp_sum(&base).0,
                "{} n={n}",
                isa.name()
            );
            for at in [0, n / 2, n - 1] {
                let mut x = base.clone();
                x[at] = f32::NAN;
                assert!(reduce::row_max(&x).is_nan());
                max_exp_sum(isa, &x, &mut stats);
                assert!(
                    stats[0].is_nan() && stats[1].is_nan(),
                    "{} n={n} at={at}",
                    isa.name()
                );
                // SAFETY: the row kernels write every element.
                let y: Vec<f32> = unsafe { build(n, |d| softmax_rows(isa, &x, d, n)) };
                assert!(y.iter().all(|v| v.is_nan()));
            }
        }
    }
}
