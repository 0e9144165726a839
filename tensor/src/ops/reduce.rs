//! Reductions along any set of dims, with `keepdim`, as in PyTorch.
//!
//! Every reduction is computed the same way: the tensor is viewed as rows
//! `[K, R]` — the kept dims first, the reduced dims last (a permuted view,
//! copied only if it is not already contiguous in that order) — and each
//! output element reduces one row of `R` elements, **sequentially in a fixed
//! order**. Rows are spread over threads, but a row is never split, so the
//! result does not depend on the thread count. Sums accumulate in `f64`.
//!
//! An empty `dims` list reduces nothing (PyTorch's `sum(dim=[])` reduces
//! everything; use [`Tensor::sum_all`] for that).
//!
//! # Row max, log-sum-exp and the NaN rule
//!
//! The row max and log-sum-exp that every kernel shares live here: [`row_max`],
//! [`max_exp_sum`] and `logsumexp_row`, generic over the float type.
//! Softmax, log-softmax and cross-entropy (`softmax.rs`,
//! `cross_entropy.rs`) use them for f64; their f32 paths use the vectorised
//! kernels in `kernels::fastmath`, whose results follow the same rule (their
//! internal max skips NaN for speed and lets `exp` carry it; see there). The rule is PyTorch's: **a NaN anywhere in a row propagates** —
//! the row's max (and min) is NaN, its log-sum-exp is NaN, its softmax and
//! log-softmax are NaN in every element, and so is a cross-entropy term
//! over it. ([`Tensor::argmax`] likewise returns the index of the first
//! NaN.) A row of all `-inf` (fully masked) has max `-inf`; the shift that
//! softmax subtracts is then 0, so its softmax is NaN and its log-sum-exp
//! `-inf`, as in torch.

use crate::dtype::{Element, FloatElement};
use crate::parallel::{for_each_range, SharedMut};
use crate::shape::{resolve_dims, Dim};
use crate::strided::PAR_CHUNK;
use crate::{with_float, Result, Tensor, TensorError};

/// The `[K, R]` row view of `x` for reducing `dims`, plus the output shape.
pub(crate) struct Rows {
    /// Contiguous tensor whose row-major order is `[K, R]`.
    pub data: Tensor,
    /// Number of output elements.
    pub k: usize,
    /// Elements reduced into each output.
    pub r: usize,
    /// Shape of the result.
    pub out_shape: Vec<usize>,
}

pub(crate) fn rows<D: Dim>(
    op: &'static str,
    x: &Tensor,
    dims: &[D],
    keepdim: bool,
) -> Result<Rows> {
    let dims = resolve_dims(op, dims, x.shape())?;
    let shape = x.shape();
    let kept: Vec<usize> = (0..x.rank()).filter(|d| !dims.contains(d)).collect();
    let mut perm = kept.clone();
    perm.extend(&dims);
    let data = x.permute(&perm)?.contiguous();
    let out_shape = reduced_shape(shape, &dims, keepdim);
    Ok(Rows {
        data,
        k: kept.iter().map(|&d| shape[d]).product(),
        r: dims.iter().map(|&d| shape[d]).product(),
        out_shape,
    })
}

/// Applies `f` to each row of `[K, R]` contiguous data, in parallel over
/// whole rows (so the thread count never changes a result).
pub(crate) fn map_rows<T: Element, O: Element>(
    data: &[T],
    k: usize,
    r: usize,
    f: impl Fn(&[T]) -> O + Sync,
) -> Vec<O> {
    let mut out = vec![O::default(); k];
    if r == 0 {
        out.iter_mut().for_each(|o| *o = f(&[]));
        return out;
    }
    if k * r >= 2 * PAR_CHUNK && k > 1 {
        let shared = SharedMut::new(&mut out);
        for_each_range(k, (PAR_CHUNK / r).max(1), |rows| {
            // SAFETY: `for_each_range` hands out disjoint row ranges.
            let dst = unsafe { shared.range(rows.clone()) };
            for (row, o) in rows.zip(dst) {
                *o = f(&data[row * r..(row + 1) * r]);
            }
        });
    } else {
        for (row, o) in out.iter_mut().enumerate() {
            *o = f(&data[row * r..(row + 1) * r]);
        }
    }
    out
}

/// Sum of a slice in `f64`, with eight independent accumulators so the loop
/// vectorises; the order is fixed, so the result is deterministic.
pub fn sum_f64<T: Element>(x: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i].as_f64();
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in rem {
        s += v.as_f64();
    }
    s
}

/// The max of a row (`-inf` if empty); the first NaN if there is one (see
/// the NaN rule in the module docs).
pub fn row_max<T: FloatElement>(row: &[T]) -> T {
    let mut m = T::neg_infinity();
    for &v in row {
        if v.is_nan() {
            return v;
        }
        if v > m {
            m = v;
        }
    }
    m
}

fn min_row<T: FloatElement>(row: &[T]) -> T {
    let mut m = T::infinity();
    for &v in row {
        if v.is_nan() {
            return v;
        }
        if v < m {
            m = v;
        }
    }
    m
}

/// `Σ exp(x − shift)` over a row, each term computed in `T` and added
/// in order into an `f64`.
fn exp_sum<T: FloatElement>(row: &[T], shift: T) -> f64 {
    let mut s = 0f64;
    for &v in row {
        s += (v - shift).exp().as_f64();
    }
    s
}

/// The shift a softmax subtracts from a row whose max is `m`: `m` itself,
/// or 0 when it is `-inf` (a fully masked row, which then gives NaN).
pub(crate) fn softmax_shift<T: FloatElement>(m: T) -> T {
    if m == T::neg_infinity() {
        T::zero()
    } else {
        m
    }
}

/// The two numbers a log-sum-exp needs from a row: `(m, Σ exp(x − m))`,
/// `m` the row's max (0 when that is `-inf`: the shift a softmax
/// subtracts), the sum in `f64`. NaN in the
/// row makes both NaN. The generic twin of `fastmath::max_exp_sum`.
pub fn max_exp_sum<T: FloatElement>(row: &[T]) -> (T, f64) {
    let m = softmax_shift(row_max(row));
    (m, exp_sum(row, m))
}

/// `log Σ exp(x)` of a row as `torch.logsumexp` gives it: `-inf` for an
/// all-`-inf` (or empty) row, `+inf` if the row holds `+inf`, NaN if it
/// holds NaN.
fn logsumexp_row<T: FloatElement>(row: &[T]) -> T {
    let m = row_max(row);
    if m.is_infinite() || m.is_nan() {
        // All -inf gives -inf; any +inf gives +inf; NaN stays NaN.
        return if m == T::neg_infinity() || m.is_nan() {
            m
        } else {
            T::infinity()
        };
    }
    m + T::from_f64(exp_sum(row, m).ln())
}

fn empty_error(op: &'static str, x: &Tensor) -> TensorError {
    TensorError::Invalid {
        op,
        shape: x.shape().to_vec(),
        msg: "cannot reduce over an empty dim".into(),
    }
}

impl Tensor {
    /// Sum over `dims` (`torch.sum(x, dims, keepdim)`); dims may be negative.
    ///
    /// # Shapes
    /// Each reduced dim is removed, or kept with size 1 when `keepdim`.
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] / [`TensorError::Invalid`] (repeated
    /// dim), [`TensorError::DType`] unless f32/f64.
    ///
    /// ```
    /// use kiln_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// assert_eq!(x.sum(&[-1], false)?.to_vec::<f32>()?, vec![3.0, 7.0]);
    /// # Ok::<(), kiln_tensor::TensorError>(())
    /// ```
    pub fn sum<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        with_float!("sum", self.dtype(), |T| {
            let dims_r = resolve_dims("sum", dims, self.shape())?;
            // Leading dims of a contiguous tensor (a bias gradient, say): add
            // whole rows together instead of transposing first.
            if self.is_contiguous()
                && !dims_r.is_empty()
                && dims_r.iter().enumerate().all(|(i, &d)| i == d)
            {
                let r: usize = dims_r.iter().map(|&d| self.shape()[d]).product();
                // The kept dims are the trailing ones. (Not numel / r: an
                // empty reduced dim makes that 0 / 1 instead of k zeros.)
                let k: usize = self.shape()[dims_r.len()..].iter().product();
                let data = self.as_slice::<T>()?;
                let out = sum_leading::<T>(data, r, k);
                return Tensor::from_vec(out, &reduced_shape(self.shape(), &dims_r, keepdim));
            }
            let rw = rows("sum", self, dims, keepdim)?;
            let out = map_rows(rw.data.as_slice::<T>()?, rw.k, rw.r, |row| {
                T::from_f64(sum_f64(row))
            });
            Tensor::from_vec(out, &rw.out_shape)
        })
    }

    /// Sum of every element, as a rank-0 tensor.
    ///
    /// # Errors
    /// [`TensorError::DType`] unless f32/f64.
    pub fn sum_all(&self) -> Result<Tensor> {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.sum(&dims, false)
    }

    /// Mean over `dims` (`torch.mean`); an empty reduction gives NaN.
    ///
    /// # Errors
    /// As [`Tensor::sum`].
    pub fn mean<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        let dims_r = resolve_dims("mean", dims, self.shape())?;
        let r: usize = dims_r.iter().map(|&d| self.shape()[d]).product();
        self.sum(dims, keepdim)?.div_scalar(r as f64)
    }

    /// Mean of every element, as a rank-0 tensor.
    ///
    /// # Errors
    /// [`TensorError::DType`] unless f32/f64.
    pub fn mean_all(&self) -> Result<Tensor> {
        let dims: Vec<usize> = (0..self.rank()).collect();
        self.mean(&dims, false)
    }

    /// Maximum over `dims` (`torch.amax`); NaN propagates.
    ///
    /// # Errors
    /// As [`Tensor::sum`], plus [`TensorError::Invalid`] for an empty dim.
    pub fn max<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        with_float!("max", self.dtype(), |T| {
            let rw = rows("max", self, dims, keepdim)?;
            if rw.r == 0 && rw.k > 0 {
                return Err(empty_error("max", self));
            }
            Tensor::from_vec(
                map_rows(rw.data.as_slice::<T>()?, rw.k, rw.r, row_max::<T>),
                &rw.out_shape,
            )
        })
    }

    /// Minimum over `dims` (`torch.amin`); NaN propagates.
    ///
    /// # Errors
    /// As [`Tensor::max`].
    pub fn min<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        with_float!("min", self.dtype(), |T| {
            let rw = rows("min", self, dims, keepdim)?;
            if rw.r == 0 && rw.k > 0 {
                return Err(empty_error("min", self));
            }
            Tensor::from_vec(
                map_rows(rw.data.as_slice::<T>()?, rw.k, rw.r, min_row::<T>),
                &rw.out_shape,
            )
        })
    }

    /// Index of the maximum along `dim` as an `I64` tensor (`torch.argmax`).
    /// Ties give the first index; a NaN counts as the maximum.
    ///
    /// # Errors
    /// As [`Tensor::max`].
    pub fn argmax(&self, dim: impl Dim, keepdim: bool) -> Result<Tensor> {
        with_float!("argmax", self.dtype(), |T| {
            let rw = rows("argmax", self, &[dim], keepdim)?;
            if rw.r == 0 && rw.k > 0 {
                return Err(empty_error("argmax", self));
            }
            let out = map_rows(rw.data.as_slice::<T>()?, rw.k, rw.r, |row: &[T]| {
                let mut best = 0usize;
                for (i, &v) in row.iter().enumerate() {
                    if v.is_nan() {
                        return i as i64;
                    }
                    if v > row[best] {
                        best = i;
                    }
                }
                best as i64
            });
            Tensor::from_vec(out, &rw.out_shape)
        })
    }

    /// `log Σ exp(x)` over `dims`, computed stably by subtracting the max
    /// first (`torch.logsumexp`).
    ///
    /// # Errors
    /// As [`Tensor::sum`].
    pub fn logsumexp<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        with_float!("logsumexp", self.dtype(), |T| {
            let rw = rows("logsumexp", self, dims, keepdim)?;
            Tensor::from_vec(
                map_rows(rw.data.as_slice::<T>()?, rw.k, rw.r, logsumexp_row::<T>),
                &rw.out_shape,
            )
        })
    }

    /// Variance over `dims` with Bessel-style `correction`
    /// (`torch.var(x, dims, correction=c, keepdim)`): `Σ(x − mean)² / (N − c)`.
    /// `correction = 0` is the population variance (used by layer norm).
    ///
    /// # Errors
    /// As [`Tensor::sum`].
    pub fn var<D: Dim>(&self, dims: &[D], correction: usize, keepdim: bool) -> Result<Tensor> {
        with_float!("var", self.dtype(), |T| {
            let rw = rows("var", self, dims, keepdim)?;
            let out = map_rows(rw.data.as_slice::<T>()?, rw.k, rw.r, |row: &[T]| {
                let n = row.len() as f64;
                let mean = sum_f64(row) / n;
                let ss: f64 = row.iter().map(|v| (v.as_f64() - mean).powi(2)).sum();
                T::from_f64(ss / (n - correction as f64))
            });
            Tensor::from_vec(out, &rw.out_shape)
        })
    }
}

fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    (0..shape.len())
        .filter_map(|d| match (dims.contains(&d), keepdim) {
            (false, _) => Some(shape[d]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect()
}

/// `out[c] = Σ_r x[r, c]` for contiguous `x` of shape `[r, k]`: rows are
/// added in order into f64 sums (deterministic); columns are split between
/// threads in cache-line units, so a `[512, 768]` bias gradient keeps both
/// threads busy. f32 rows are widened and added by a vectorised kernel.
fn sum_leading<T: FloatElement>(x: &[T], r: usize, k: usize) -> Vec<T> {
    /// Columns per unit of work: 64 bytes of f32.
    const UNIT: usize = 16;
    if k == 0 {
        return Vec::new();
    }
    let isa = crate::kernels::fastmath::Isa::detect();
    let mut out = vec![T::zero(); k];
    let shared = SharedMut::new(&mut out);
    let body = |units: std::ops::Range<usize>| {
        let (c0, c1) = (units.start * UNIT, (units.end * UNIT).min(k));
        let mut acc = vec![0f64; c1 - c0];
        for row in x.chunks_exact(k).take(r) {
            let src = &row[c0..c1];
            if let Some(src) = crate::dtype::as_f32(src) {
                crate::kernels::fastmath::widen_add(isa, &mut acc, src);
            } else {
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v.as_f64();
                }
            }
        }
        // SAFETY: each call gets its own columns.
        let dst = unsafe { shared.range(c0..c1) };
        for (d, a) in dst.iter_mut().zip(acc) {
            *d = T::from_f64(a);
        }
    };
    let units = k.div_ceil(UNIT);
    if r * k >= 2 * PAR_CHUNK {
        for_each_range(units, 1, body);
    } else {
        body(0..units);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    fn t(v: Vec<f64>, s: &[usize]) -> Tensor {
        Tensor::from_vec(v, s).unwrap()
    }

    #[test]
    fn sum_over_middle_dim_keepdim() {
        let x = t((0..24).map(|v| v as f64).collect(), &[2, 3, 4]);
        let s = x.sum(&[1], true).unwrap();
        assert_eq!(s.shape(), &[2, 1, 4]);
        assert_eq!(
            s.to_vec::<f64>().unwrap(),
            vec![12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]
        );
    }

    #[test]
    fn big_leading_sum_is_the_f64_column_sum() {
        // Big enough for the threaded path; 770 columns leave a ragged unit.
        let (r, k) = (300, 770);
        let v: Vec<f32> = (0..r * k)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
            .collect();
        let x = Tensor::from_vec(v.clone(), &[3, 100, k]).unwrap();
        let got = x.sum(&[0, 1], false).unwrap().to_vec::<f32>().unwrap();
        for (c, g) in got.iter().enumerate() {
            let want: f64 = (0..r).map(|row| f64::from(v[row * k + c])).sum();
            assert_eq!(*g, want as f32, "column {c}");
        }
    }

    #[test]
    fn leading_sum_equals_row_path() {
        let x = t((0..600).map(|v| (v as f64).sin()).collect(), &[20, 30]);
        let a = x.sum(&[0], false).unwrap().to_vec::<f64>().unwrap();
        let b = x
            .t()
            .unwrap()
            .sum(&[1], false)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-12);
        }
    }

    #[test]
    fn argmax_ties_take_first() {
        let x = t(vec![1.0, 3.0, 3.0, 0.0], &[4]);
        assert_eq!(
            x.argmax(0, false).unwrap().to_vec::<i64>().unwrap(),
            vec![1]
        );
    }

    #[test]
    fn logsumexp_is_stable() {
        let x = t(vec![1000.0, 1000.0], &[2]);
        let v = x.logsumexp(&[0], false).unwrap().item::<f64>().unwrap();
        assert!((v - (1000.0 + 2f64.ln())).abs() < 1e-9);
        let y = t(vec![f64::NEG_INFINITY, f64::NEG_INFINITY], &[2]);
        assert_eq!(
            y.logsumexp(&[0], false).unwrap().item::<f64>().unwrap(),
            f64::NEG_INFINITY
        );
    }

    #[test]
    fn sum_over_empty_leading_dim_gives_zeros() {
        // Regression: the contiguous leading-dims path computed the output
        // size as numel / r, which is 0 when a reduced dim is empty.
        let x = Tensor::zeros(&[0, 3], DType::F32);
        let s = x.sum(&[0], false).unwrap();
        assert_eq!(s.to_vec::<f32>().unwrap(), vec![0.0; 3]);
        assert_eq!(x.sum_all().unwrap().item::<f32>().unwrap(), 0.0);
        assert!(x.mean_all().unwrap().item::<f32>().unwrap().is_nan());
    }

    #[test]
    fn max_of_empty_dim_is_an_error() {
        let x = Tensor::zeros(&[2, 0], DType::F32);
        assert!(x.max(&[1], false).is_err());
        assert_eq!(
            x.sum(&[1], false).unwrap().to_vec::<f32>().unwrap(),
            vec![0.0, 0.0]
        );
    }
}
