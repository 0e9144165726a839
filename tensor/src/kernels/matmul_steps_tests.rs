//! Each step of the matmul ladder against the naive kernel.

use super::super::matmul_naive;
use super::super::Gemm;
use super::{step1_ipj, step2_register_tile, step3_packed};

type Step = fn(usize, usize, usize, &[f32], &[f32], &mut [f32]);

const STEPS: [(&str, Step); 3] = [
    ("step1_ipj", step1_ipj),
    ("step2_register_tile", step2_register_tile),
    ("step3_packed", step3_packed),
];

/// Deterministic values in [-1, 1), from the GEMM tests' generator.
fn filled(len: usize, seed: u32) -> Vec<f32> {
    let mut rng = crate::kernels::matmul_packed::tests::Rng::new(seed as u64);
    (0..len).map(|_| rng.next()).collect()
}

/// `matmul_naive::gemm_f32` on row-major slices.
fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![f32::NAN; m * n];
    let g = Gemm {
        m,
        k,
        n,
        alpha: 1.0,
        a: a.as_ptr(),
        rsa: k as isize,
        csa: 1,
        b: b.as_ptr(),
        rsb: n as isize,
        csb: 1,
        beta: 0.0,
        c: c.as_mut_ptr(),
        rsc: n as isize,
        csc: 1,
    };
    // SAFETY: the slices hold exactly these row-major matrices.
    unsafe { matmul_naive::gemm_f32(g) };
    c
}

/// Runs every step at `m×k×n` and compares with the naive kernel.
///
/// Tolerance: two f32 sums of the same `k` products in different orders
/// (and fused or not) differ by at most `2·k·u·Σ_p |A[i,p]·B[p,j]|`, with
/// `u = 2⁻²⁴` the unit roundoff (the classic bound γ_k for each, doubled).
/// An indexing mistake is off by the size of a whole term, far above it.
fn check_all(m: usize, k: usize, n: usize) {
    let (a, b) = (filled(m * k, 1 + m as u32), filled(k * n, 7 + n as u32));
    let want = naive(m, k, n, &a, &b);
    let u = f64::from(f32::EPSILON) / 2.0;
    // The baseline-target code paths too, whatever this CPU has.
    let portable: [(&str, Step); 3] = [
        ("portable ipj", |m, k, n, a, b, c| {
            super::ipj::<false>((m, k, n), a, b, c)
        }),
        ("portable tiled", |m, k, n, a, b, c| {
            super::tiled::<4, 8, false>((m, k, n), a, b, c)
        }),
        ("portable packed", super::packed_portable),
    ];
    for (name, step) in STEPS.into_iter().chain(portable) {
        let mut c = vec![f32::NAN; m * n];
        step(m, k, n, &a, &b, &mut c);
        for i in 0..m {
            for j in 0..n {
                let mag: f64 = (0..k)
                    .map(|p| f64::from(a[i * k + p] * b[p * n + j]).abs())
                    .sum();
                let tol = 2.0 * k as f64 * u * mag;
                let (got, w) = (f64::from(c[i * n + j]), f64::from(want[i * n + j]));
                assert!(
                    (got - w).abs() <= tol,
                    "{name} {m}×{k}×{n} at ({i}, {j}): {got} vs naive {w} (tolerance {tol:e})"
                );
            }
        }
    }
}

#[test]
fn steps_match_naive_on_tile_multiples() {
    check_all(24, 64, 64);
    check_all(12, 32, 32);
}

#[test]
fn steps_match_naive_on_odd_sizes() {
    // Edges of every tile shape (4×8, 6×16, 12×32) and odd depths.
    for (m, k, n) in [
        (1, 1, 1),
        (13, 7, 33),
        (5, 17, 31),
        (25, 3, 65),
        (7, 129, 9),
        (37, 50, 47),
    ] {
        check_all(m, k, n);
    }
}

#[test]
fn steps_handle_empty_dimensions() {
    for (name, step) in STEPS {
        // k = 0: C = A·B is all zeros, whatever C held.
        let mut c = vec![f32::NAN; 6];
        step(2, 0, 3, &[], &[], &mut c);
        assert_eq!(c, [0.0; 6], "{name}");
        // m = 0 or n = 0: nothing to write.
        step(0, 4, 3, &[], &[0.0; 12], &mut []);
        step(3, 4, 0, &[0.0; 12], &[], &mut []);
    }
}

#[test]
#[should_panic(expected = "B must be k×n")]
fn steps_reject_wrong_lengths() {
    step2_register_tile(2, 3, 4, &[0.0; 6], &[0.0; 11], &mut [0.0; 8]);
}
