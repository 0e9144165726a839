//! Elementwise kernels: the unary functions, GELU's backward and the
//! broadcasting binary ops.

use super::*;

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
    /// GELU's backward, `dst[i] = dy[i]·gelu'(x[i])`; all three have the
    /// same length.
    pub(crate) fn gelu_backward(x: &[f32], dy: &[f32], dst: &mut [MaybeUninit<f32>]) {
        debug_assert!(x.len() == dst.len() && dy.len() == dst.len());
        for ((d, &a), &g) in dst.iter_mut().zip(x).zip(dy) {
            d.write(g * gelu_grad_f32(a));
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
