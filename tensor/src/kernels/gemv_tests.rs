//! Tests of the row-vector × matrix path, through `gemm_f32`'s dispatch
//! (m == 1 and n == 1) and through `gemv_f32` itself.

use super::*;
use crate::kernels::matmul_packed::tests::{isas, Case, Layout, Rng};

/// Lengths around the vector widths (8, 16, 32) and the row tile.
const KS: [usize; 9] = [1, 3, 8, 15, 16, 17, 33, 100, 769];
const NS: [usize; 8] = [1, 3, 4, 5, 17, 100, 2049, 2100];

#[test]
fn row_vector_times_matrix_both_layouts() {
    for isa in isas() {
        for &k in &KS {
            for &n in &NS {
                for (lb, la, lc, alpha, beta) in [
                    (Layout::Row, Layout::Row, Layout::Row, 1.0, 0.0),
                    (Layout::Col, Layout::Row, Layout::Row, 1.0, 0.0),
                    (
                        Layout::RowPadded(3),
                        Layout::Strided2,
                        Layout::ColPadded(5),
                        -1.5,
                        0.5,
                    ),
                    (Layout::ColPadded(1), Layout::Row, Layout::Row, 0.5, 1.0),
                    (Layout::Strided2, Layout::Row, Layout::Row, 1.0, 0.0),
                ] {
                    Case {
                        la,
                        lb,
                        lc,
                        alpha,
                        beta,
                        ..Case::plain(1, k, n)
                    }
                    .check(isa, 1, (k * n) as u64);
                }
            }
        }
    }
}

#[test]
fn matrix_times_column_vector_both_layouts() {
    for isa in isas() {
        for &k in &KS {
            for &m in &NS {
                for (la, lb, beta) in [
                    (Layout::Row, Layout::Row, 0.0),
                    (Layout::Col, Layout::Row, 0.0),
                    (Layout::RowPadded(2), Layout::Strided2, 2.0),
                    (Layout::RowReversed, Layout::Col, 0.0),
                ] {
                    let lc = Layout::RowPadded(1);
                    Case {
                        la,
                        lb,
                        lc,
                        beta,
                        ..Case::plain(m, k, 1)
                    }
                    .check(isa, 1, (k + m) as u64);
                }
            }
        }
    }
}

#[test]
fn gemv_split_over_threads_is_correct() {
    for isa in isas() {
        for lb in [Layout::Row, Layout::Col] {
            let case = Case {
                lb,
                ..Case::plain(1, 300, 5000)
            };
            case.check(isa, 2, 9);
        }
    }
}

/// Row-major B up to 4096 wide is split along k into fixed 64-row blocks
/// (ragged last block here); more threads must not change a bit.
#[test]
fn split_k_rows_are_correct_and_thread_independent() {
    for isa in isas() {
        for (k, n) in [(300, 3000), (65, 17), (64 * 5, 4096)] {
            let case = Case::plain(1, k, n);
            case.check(isa, 2, 11);
            assert_eq!(
                case.run(isa, 1, 11),
                case.run(isa, 2, 11),
                "{isa:?} {k}×{n}"
            );
        }
    }
}

#[test]
fn public_gemv_matches_gemm() {
    let (k, n) = (70, 90);
    let mut rng = Rng::new(4);
    let x: Vec<f32> = (0..k).map(|_| rng.next()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.next()).collect();
    let mut y = vec![f32::NAN; n];
    let mut want = vec![0.0f32; n];
    let g = Gemm {
        m: 1,
        k,
        n,
        alpha: 1.0,
        a: x.as_ptr(),
        rsa: 0,
        csa: 1,
        b: b.as_ptr(),
        rsb: n as isize,
        csb: 1,
        beta: 0.0,
        c: y.as_mut_ptr(),
        rsc: 0,
        csc: 1,
    };
    // SAFETY: x has k, b k·n (row-major), y and want n elements.
    unsafe {
        gemv_f32(g);
        crate::kernels::matmul_naive::gemm_f32(Gemm {
            c: want.as_mut_ptr(),
            ..g
        });
    }
    for (g, w) in y.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5 * (k as f32).sqrt() * 8.0,
            "{g} vs {w}"
        );
    }
}
