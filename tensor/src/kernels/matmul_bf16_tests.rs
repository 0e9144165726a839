//! Tests of the bf16 GEMM: every path against the f64 reference of the
//! bf16-rounded operands, and bit-identical results across thread counts.

use super::*;
use crate::kernels::matmul_packed::tests::Rng;

/// `n` deterministic pseudo-random f32 in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next()).collect()
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
    let g = GemmBf16 {
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
    // SAFETY: every operand is sized for its strides. (Cut for `threads`
    // threads, run on Kiln's pool.)
    unsafe { gemm_bf16_with(isa, threads, g) };
    // The f64 reference of the bf16-rounded operands, and Σ|a·b|.
    let mut want = vec![0f64; m * n];
    let mut mag = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut t) = (0f64, 0f64);
            for p in 0..k {
                let av = a[(i as isize * rsa + p as isize * csa) as usize];
                let ar = from_bf16_bits(to_bf16_bits(av)) as f64;
                let br = from_bf16_bits(b[(p as isize * rsb + j as isize * csb) as usize]) as f64;
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

/// The gemv of decoding (`m = 1`, f32 activations, bf16 weights) gives the
/// same bits on every path and at every thread count, in both weight
/// layouts: the vector loops add in the portable loops' order, and the
/// row-major walk's chunks are added in chunk order.
#[test]
fn the_decode_gemv_is_bit_identical_across_paths_and_threads() {
    // k past one chunk of 64 rows and not a multiple of 4; n with a
    // 32-column body, a 16-column step and a scalar tail.
    let shape = (1, 777, 1100 + 16 + 5);
    for layout in [(false, false), (false, true)] {
        let want = run(Isa::portable(), 1, shape, layout, 1.0).0;
        for isa in Isa::available() {
            for threads in [1, 2, 3] {
                let got = run(isa, threads, shape, layout, 1.0).0;
                assert!(
                    got == want,
                    "{} at {threads} threads, layout {layout:?}: differs from portable",
                    isa.name()
                );
            }
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
