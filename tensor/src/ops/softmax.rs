//! Softmax and log-softmax along one dim, numerically stable, with their
//! backward kernels (plain math on tensors; the tape lives in kiln-autograd).

use std::mem::MaybeUninit;

use crate::dtype::{as_f32, as_f32_mut, Element, FloatElement};
use crate::kernels::fastmath::{self, Isa};
use crate::ops::reduce::{max_exp_sum, row_max, softmax_shift, sum_f64};
use crate::shape::Dim;
use crate::strided::PAR_CHUNK;
use crate::uninit::build_par;
use crate::{with_float, DType, Result, Tensor, TensorError};

/// Moves `dim` last and makes the result contiguous: rows of the dim's size.
/// Returns the row tensor and the permutation used.
fn dim_last(x: &Tensor, dim: usize) -> Result<(Tensor, Vec<usize>)> {
    let mut perm: Vec<usize> = (0..x.rank()).filter(|&d| d != dim).collect();
    perm.push(dim);
    Ok((x.permute(&perm)?.contiguous(), perm))
}

/// Undoes [`dim_last`]: permutes back and returns a contiguous tensor.
fn dim_back(y: Tensor, perm: &[usize]) -> Result<Tensor> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    Ok(y.permute(&inv)?.contiguous())
}

/// Runs `f(in_rows…, out_row)` over every row of length `dim`'s size, in
/// parallel over rows, for one or two same-shaped inputs.
pub(crate) fn rowwise<T: FloatElement>(
    op: &'static str,
    inputs: &[&Tensor],
    dim: usize,
    f: impl Fn(&[&[T]], &mut [T]) + Sync,
) -> Result<Tensor> {
    let shape = inputs[0].shape().to_vec();
    for t in inputs {
        if t.shape() != shape.as_slice() {
            return Err(TensorError::ShapeMismatch {
                op,
                expected: shape.clone(),
                got: t.shape().to_vec(),
            });
        }
    }
    let mut perm = Vec::new();
    let mut rows = Vec::new();
    for t in inputs {
        let (r, p) = dim_last(t, dim)?;
        perm = p;
        rows.push(r);
    }
    let permuted_shape = rows[0].shape().to_vec();
    let n = shape[dim];
    let slices: Vec<&[T]> = rows
        .iter()
        .map(|r| r.as_slice::<T>())
        .collect::<Result<_>>()?;
    let mut out = vec![T::zero(); rows[0].numel()];
    if let Some(nrows) = slices[0].len().checked_div(n) {
        let dst = crate::parallel::SharedMut::new(&mut out);
        crate::parallel::for_each_range(nrows, PAR_CHUNK / n, |rs| {
            // SAFETY: the row ranges handed out are disjoint.
            let dst = unsafe { dst.range(rs.start * n..rs.end * n) };
            for (i, d) in rs.zip(dst.chunks_exact_mut(n)) {
                let r = i * n..(i + 1) * n;
                match slices.as_slice() {
                    [x] => f(&[&x[r]], d),
                    [x, y] => f(&[&x[r.clone()], &y[r]], d),
                    _ => unreachable!("rowwise takes one or two inputs"),
                }
            }
        });
    }
    dim_back(Tensor::from_vec(out, &permuted_shape)?, &perm)
}

/// `dx = y ⊙ (dy − Σ dy ⊙ y) / divisor` along `dim` (the division last,
/// so 1 leaves the product as it is).
fn softmax_grad(
    op: &'static str,
    y: &Tensor,
    dy: &Tensor,
    dim: usize,
    divisor: f64,
) -> Result<Tensor> {
    with_float!(op, y.dtype(), |T| {
        let isa = Isa::detect();
        let div = T::from_f64(divisor);
        rowwise::<T>(op, &[y, dy], dim, |ins, out| {
            let (y, dy) = (ins[0], ins[1]);
            if let (Some(y), Some(dy)) = (as_f32(y), as_f32(dy)) {
                let out = as_f32_mut(out).expect("same dtype as y");
                return fastmath::softmax_grad_row(isa, y, dy, divisor as f32, out);
            }
            let dot: f64 = y.iter().zip(dy).map(|(&a, &b)| (a * b).as_f64()).sum();
            let dot = T::from_f64(dot);
            for ((o, &a), &b) in out.iter_mut().zip(y).zip(dy) {
                *o = a * (b - dot) / div;
            }
        })
    })
}

/// `out = softmax(x)` for one row.
pub fn softmax_row<T: FloatElement>(x: &[T], out: &mut [T]) {
    // A row of all -inf (fully masked) has no finite max: NaN like torch.
    let m = softmax_shift(row_max(x));
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m).exp();
    }
    let inv = T::one() / T::from_f64(sum_f64(out));
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// `out = log_softmax(x)` for one row: `(x − max) − log Σ exp(x − max)`.
///
/// The max is subtracted before the log-sum, not folded into one `lse`:
/// `x − lse` would round `lse` at the scale of `|x|` and lose the digits of
/// results near 0 when `|x|` is large.
pub fn log_softmax_row<T: FloatElement>(x: &[T], out: &mut [T]) {
    let (m, s) = max_exp_sum(x);
    let log_sum = T::from_f64(s.ln());
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m) - log_sum;
    }
}

/// Each thread gets at least this many elements' worth of whole rows.
const ROW_GRAIN: usize = PAR_CHUNK;

/// Runs an f32 row kernel (`kernel(isa, rows_in, rows_out, n)`) over every
/// row along `dim`, in parallel over blocks of whole rows (one per thread).
fn rows_f32(
    x: &Tensor,
    dim: usize,
    kernel: fn(Isa, &[f32], &mut [MaybeUninit<f32>], usize),
) -> Result<Tensor> {
    let (rows, perm) = dim_last(x, dim)?; // (..., n), contiguous
    let n = x.shape()[dim];
    let src = rows.as_slice::<f32>()?;
    let isa = Isa::detect();
    // SAFETY: the kernels write every element of the whole rows they get.
    let out = unsafe {
        build_par(src.len(), n, ROW_GRAIN / n.max(1), |start, dst| {
            kernel(isa, &src[start..start + dst.len()], dst, n)
        })
    };
    dim_back(Tensor::from_vec(out, rows.shape())?, &perm)
}

impl Tensor {
    /// Softmax along `dim` (`torch.softmax(x, dim)`): `exp(x − max) / Σ exp(x − max)`.
    /// A row of all `-inf` (fully masked) gives NaN, as in PyTorch. f32 runs a
    /// fused, vectorised row kernel (`kernels::fastmath`); f64 uses `std`.
    ///
    /// # Shapes
    /// Output has the input's shape.
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`], [`TensorError::DType`] unless f32/f64.
    pub fn softmax(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.resolve("softmax", self.shape())?;
        if self.dtype() == DType::F32 {
            return rows_f32(self, d, fastmath::softmax_rows);
        }
        with_float!("softmax", self.dtype(), |T| rowwise::<T>(
            "softmax",
            &[self],
            d,
            |x, o| softmax_row(x[0], o)
        ))
    }

    /// Log-softmax along `dim` (`torch.log_softmax(x, dim)`).
    ///
    /// # Errors
    /// As [`Tensor::softmax`].
    pub fn log_softmax(&self, dim: impl Dim) -> Result<Tensor> {
        let d = dim.resolve("log_softmax", self.shape())?;
        if self.dtype() == DType::F32 {
            return rows_f32(self, d, fastmath::log_softmax_rows);
        }
        with_float!("log_softmax", self.dtype(), |T| {
            rowwise::<T>("log_softmax", &[self], d, |x, o| log_softmax_row(x[0], o))
        })
    }

    /// Causal attention probabilities in one pass: softmax over the last dim
    /// of `self / divisor`, where row `r` (its index along dim −2) sees only
    /// columns `j ≤ offset + r` and the others get exactly 0. The same as
    /// `(x / divisor).masked_fill(triu_mask(T, S, offset + 1), MIN).softmax(-1)`
    /// (transformers' eager GPT-2 attention) bit for bit, without the two
    /// intermediate `[..., T, S]` tensors. `offset` is the number of cached
    /// positions before the `T` queries.
    ///
    /// # Shapes
    /// `self: [..., T, S]` → `[..., T, S]`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] below rank 2, [`TensorError::DType`] unless
    /// f32/f64.
    pub fn causal_softmax(&self, divisor: f64, offset: usize) -> Result<Tensor> {
        const OP: &str = "causal_softmax";
        if self.rank() < 2 {
            return Err(TensorError::Invalid {
                op: OP,
                shape: self.shape().to_vec(),
                msg: "needs [..., T, S] scores".into(),
            });
        }
        let r = self.rank();
        let (t, n) = (self.shape()[r - 2], self.shape()[r - 1]);
        if self.dtype() != DType::F32 {
            let min = match self.dtype() {
                DType::F64 => f64::MIN,
                _ => f32::MIN as f64,
            };
            let mask = Tensor::triu_mask(t, n, offset as i64 + 1);
            return self
                .div_scalar(divisor)?
                .masked_fill(&mask, min)?
                .softmax(-1);
        }
        let x = self.contiguous();
        let src = x.as_slice::<f32>()?;
        let isa = Isa::detect();
        let d = divisor as f32;
        // SAFETY: each call writes every element of the whole rows it gets.
        let out = unsafe {
            build_par(src.len(), n.max(1), ROW_GRAIN / n.max(1), |start, dst| {
                let mut scaled = vec![MaybeUninit::<f32>::uninit(); n];
                for (i, row) in dst.chunks_mut(n).enumerate() {
                    let first = start / n + i;
                    let valid = (offset + first % t + 1).min(n);
                    let xr = &src[(start + i * n)..(start + i * n + valid)];
                    // x / d, vectorised (a scalar loop of divisions was
                    // most of this function's time in a prefill).
                    let div = fastmath::Binary::Div;
                    fastmath::binary(isa, div, xr, 1, &[d], 0, &mut scaled[..valid]);
                    // `binary` wrote all `valid` elements (inside the
                    // unsafe block above, so no block of its own).
                    let scaled = crate::uninit::assume_init_mut(&mut scaled[..valid]);
                    fastmath::softmax_rows(isa, scaled, &mut row[..valid], valid);
                    for o in &mut row[valid..] {
                        o.write(0.0);
                    }
                }
            })
        };
        Tensor::from_vec(out, self.shape())
    }

    /// Backward of softmax: given `y = softmax(x, dim)` and `dy`, returns
    /// `dx = y ⊙ (dy − Σ_dim dy ⊙ y)`.
    ///
    /// # Errors
    /// [`TensorError::ShapeMismatch`] if `y` and `dy` differ in shape.
    pub fn softmax_backward(y: &Tensor, dy: &Tensor, dim: impl Dim) -> Result<Tensor> {
        let d = dim.resolve("softmax_backward", y.shape())?;
        softmax_grad("softmax_backward", y, dy, d, 1.0)
    }

    /// Backward of [`Tensor::causal_softmax`]: given its output `y` and
    /// `dy`, returns `dx = y ⊙ (dy − Σ dy ⊙ y) / divisor` along the last
    /// dim, bit for bit [`Tensor::softmax_backward`] followed by
    /// [`Tensor::div_scalar`], in one pass. (Masked entries have `y = 0`, so
    /// their gradient is 0 without looking at the mask.)
    ///
    /// # Errors
    /// [`TensorError::ShapeMismatch`] if `y` and `dy` differ in shape,
    /// [`TensorError::Invalid`] for a rank-0 `y`.
    pub fn causal_softmax_backward(y: &Tensor, dy: &Tensor, divisor: f64) -> Result<Tensor> {
        let d = (-1).resolve("causal_softmax_backward", y.shape())?;
        softmax_grad("causal_softmax_backward", y, dy, d, divisor)
    }

    /// Backward of log-softmax: given `y = log_softmax(x, dim)` and `dy`,
    /// returns `dx = dy − exp(y) · Σ_dim dy`.
    ///
    /// # Errors
    /// [`TensorError::ShapeMismatch`] if `y` and `dy` differ in shape.
    pub fn log_softmax_backward(y: &Tensor, dy: &Tensor, dim: impl Dim) -> Result<Tensor> {
        let d = dim.resolve("log_softmax_backward", y.shape())?;
        with_float!("log_softmax_backward", y.dtype(), |T| {
            rowwise::<T>("log_softmax_backward", &[y, dy], d, |ins, out| {
                let (y, dy) = (ins[0], ins[1]);
                let s = T::from_f64(sum_f64(dy));
                for ((o, &a), &b) in out.iter_mut().zip(y).zip(dy) {
                    *o = b - a.exp() * s;
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused backward gives exactly softmax's backward then the division.
    #[test]
    fn causal_softmax_backward_is_softmax_backward_then_div() {
        let mut rng = crate::Rng::new(6);
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::randn(&[2, 3, 9, 70], 0.0, 4.0, dtype, &mut rng).unwrap();
            let dy = Tensor::randn(&[2, 3, 9, 70], 0.0, 1.0, dtype, &mut rng).unwrap();
            let y = x.causal_softmax(8.0_f64.sqrt(), 61).unwrap();
            let got = Tensor::causal_softmax_backward(&y, &dy, 8.0_f64.sqrt()).unwrap();
            let want = Tensor::softmax_backward(&y, &dy, -1)
                .unwrap()
                .div_scalar(8.0_f64.sqrt())
                .unwrap();
            let bits = |t: Tensor| t.to_dtype(DType::F64).to_vec::<f64>().unwrap();
            assert_eq!(bits(got), bits(want));
        }
        let short = Tensor::zeros(&[2, 3], DType::F32);
        assert!(Tensor::causal_softmax_backward(&short, &short.t().unwrap(), 1.0).is_err());
    }

    /// The fused op gives exactly what div, masked_fill and softmax give,
    /// for queries with and without cached positions before them.
    #[test]
    fn causal_softmax_equals_the_composition_bit_for_bit() {
        let mut rng = crate::Rng::new(5);
        for (t, s, offset) in [(7, 7, 0), (1, 40, 39), (3, 37, 34), (4, 70, 3), (5, 3, 9)] {
            let x = Tensor::randn(&[2, 3, t, s], 0.0, 4.0, DType::F32, &mut rng).unwrap();
            let got = x.causal_softmax(8.0_f64.sqrt(), offset).unwrap();
            let mask = Tensor::triu_mask(t, s, offset as i64 + 1);
            let want = x
                .div_scalar(8.0_f64.sqrt())
                .unwrap()
                .masked_fill(&mask, f32::MIN as f64)
                .unwrap()
                .softmax(-1)
                .unwrap();
            let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(
                bits(got.to_vec::<f32>().unwrap()),
                bits(want.to_vec::<f32>().unwrap()),
                "t={t} s={s} offset={offset}"
            );
        }
        assert!(Tensor::zeros(&[3], DType::F32)
            .causal_softmax(1.0, 0)
            .is_err());
    }

    #[test]
    fn softmax_rows_sum_to_one_along_any_dim() {
        let x = Tensor::from_vec(
            (0..24).map(|v| (v as f64 * 0.37).sin() * 5.0).collect(),
            &[2, 3, 4],
        )
        .unwrap();
        for d in 0..3 {
            let s = x.softmax(d).unwrap().sum(&[d], false).unwrap();
            for v in s.to_vec::<f64>().unwrap() {
                assert!((v - 1.0).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn f32_log_softmax_keeps_digits_at_large_magnitudes() {
        // Regression: computing x − (max + log Σ) rounded the sum at the scale
        // of |x| ≈ 1e4 (ulp 1e-3), so results near 0 were off by ~1e-3.
        let v = [10_000.0f32, 10_000.5, 9_999.25, 10_000.125];
        let exact: Vec<f64> = {
            let m = 10_000.5f64;
            let s: f64 = v.iter().map(|&x| (x as f64 - m).exp()).sum();
            v.iter().map(|&x| (x as f64 - m) - s.ln()).collect()
        };
        for x in [
            Tensor::from_vec(v.to_vec(), &[4]).unwrap(),
            Tensor::from_vec(v.to_vec(), &[4])
                .unwrap()
                .to_dtype(crate::DType::F64),
        ] {
            let got = x.log_softmax(0).unwrap().to_dtype(crate::DType::F64);
            for (g, e) in got.to_vec::<f64>().unwrap().iter().zip(&exact) {
                assert!((g - e).abs() <= 1e-6 * e.abs(), "{g} vs {e}");
            }
        }
    }

    #[test]
    fn log_softmax_is_log_of_softmax() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 1000.0, 0.0, -1000.0], &[2, 3]).unwrap();
        let a = x.log_softmax(-1).unwrap().to_vec::<f64>().unwrap();
        let b = x
            .softmax(-1)
            .unwrap()
            .log()
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        for (p, q) in a.iter().zip(&b).take(3) {
            assert!((p - q).abs() < 1e-12);
        }
        assert!(a.iter().all(|v| v.is_finite()));
    }
}
