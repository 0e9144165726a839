//! Layer normalisation over the last dim, forward and fused backward.
//!
//! For a row `x` of `C` elements: `μ = mean(x)`, `σ² = mean((x − μ)²)`
//! (population variance), `rstd = 1/√(σ² + eps)`, `x̂ = (x − μ)·rstd`,
//! `y = x̂ ⊙ w + b` — exactly `torch.nn.functional.layer_norm(x, [C], w, b, eps)`.

use num_traits::Zero;
use std::mem::MaybeUninit;

use crate::dtype::Element;
use crate::kernels::fastmath::{self, Isa};
use crate::parallel::{for_each_range, SharedMut};
use crate::strided::PAR_CHUNK;
use crate::uninit::build;
use crate::{with_float, DType, Result, Tensor, TensorError};

/// What the forward pass keeps for the backward pass: per-row mean and
/// reciprocal standard deviation, each of shape `[rows]`.
#[derive(Debug, Clone)]
pub struct LayerNormStats {
    /// Per-row mean `μ`, shape `[rows]`.
    pub mean: Tensor,
    /// Per-row `1/√(σ² + eps)`, shape `[rows]`.
    pub rstd: Tensor,
}

fn check_param(op: &'static str, p: Option<&Tensor>, c: usize, x: &Tensor) -> Result<()> {
    if let Some(p) = p {
        if p.shape() != [c] {
            return Err(TensorError::ShapeMismatch {
                op,
                expected: vec![c],
                got: p.shape().to_vec(),
            });
        }
        if p.dtype() != x.dtype() {
            return Err(TensorError::DType {
                op,
                got: p.dtype(),
                expected: format!("{} (the input's dtype)", x.dtype()),
            });
        }
    }
    Ok(())
}

fn last_dim(op: &'static str, x: &Tensor) -> Result<usize> {
    x.shape()
        .last()
        .copied()
        .ok_or_else(|| TensorError::Invalid {
            op,
            shape: vec![],
            msg: "needs at least one dim".into(),
        })
}

/// Rows per task for the reduction of `dw`/`db`: fixed, so the summation
/// order (and the result) never depends on the thread count.
const ROW_BLOCK: usize = 32;

/// The f32 forward: the fused row kernel in `kernels::fastmath`, in
/// parallel over blocks of whole rows. (f64 keeps the exact two-pass code
/// in `layer_norm_forward`.)
fn layer_norm_f32(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    c: usize,
) -> Result<(Tensor, LayerNormStats)> {
    let x = x.contiguous();
    let xs = x.as_slice::<f32>()?;
    let w = weight.map(|w| w.contiguous());
    let b = bias.map(|b| b.contiguous());
    let ws = w.as_ref().map(|w| w.as_slice::<f32>()).transpose()?;
    let bs = b.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
    let rows = xs.len().checked_div(c).unwrap_or(0);
    let mut mean = vec![0f32; rows];
    let mut rstd = vec![0f32; rows];
    let isa = Isa::detect();
    let fill = |y: &mut [MaybeUninit<f32>]| {
        if c == 0 {
            return;
        }
        let (y, m, r) = (
            SharedMut::new(y),
            SharedMut::new(&mut mean),
            SharedMut::new(&mut rstd),
        );
        for_each_range(rows, PAR_CHUNK / c, |rows| {
            let x = &xs[rows.start * c..rows.end * c];
            // SAFETY: `for_each_range` hands out disjoint row ranges.
            let (y, m, r) = unsafe {
                (
                    y.range(rows.start * c..rows.end * c),
                    m.range(rows.clone()),
                    r.range(rows),
                )
            };
            fastmath::layer_norm_rows(isa, x, ws, bs, eps, y, m, r)
        });
    };
    // SAFETY: `layer_norm_rows` writes every element of the rows it gets,
    // and the ranges cover all rows.
    let y = unsafe { build(xs.len(), fill) };
    Ok((
        Tensor::from_vec(y, x.shape())?,
        LayerNormStats {
            mean: Tensor::from_vec(mean, &[rows])?,
            rstd: Tensor::from_vec(rstd, &[rows])?,
        },
    ))
}

/// The f32 backward: the fused row kernel in `kernels::fastmath` over
/// blocks of [`ROW_BLOCK`] rows in parallel, each block adding its rows'
/// `dw`/`db` terms into its own f64 partial sums, which are then added in
/// block order (so the result does not depend on the thread count).
fn layer_norm_backward_f32(
    x: &Tensor,
    weight: Option<&Tensor>,
    stats: &LayerNormStats,
    dy: &Tensor,
    c: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (x, dy) = (x.contiguous(), dy.contiguous());
    let (xs, dys) = (x.as_slice::<f32>()?, dy.as_slice::<f32>()?);
    let w = weight.map(|w| w.contiguous());
    let ws = w.as_ref().map(|w| w.as_slice::<f32>()).transpose()?;
    let (means, rstds) = (stats.mean.as_slice::<f32>()?, stats.rstd.as_slice::<f32>()?);
    let rows = xs.len().checked_div(c).unwrap_or(0);
    let blocks = rows.div_ceil(ROW_BLOCK);
    // Per block: c sums for dw, then c for db.
    let mut partial = vec![0f64; blocks * 2 * c];
    let isa = Isa::detect();
    let fill = |dx: &mut [MaybeUninit<f32>]| {
        if c == 0 {
            return;
        }
        let (dx, part) = (SharedMut::new(dx), SharedMut::new(&mut partial));
        for_each_range(blocks, (PAR_CHUNK / (ROW_BLOCK * c)).max(1), |bs| {
            for b in bs {
                let r = b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(rows);
                let e = r.start * c..r.end * c;
                // SAFETY: blocks are disjoint, and so are their rows of dx
                // and their partial sums.
                let (dxb, (dw, db)) = unsafe {
                    (
                        dx.range(e.clone()),
                        part.range(2 * b * c..2 * (b + 1) * c).split_at_mut(c),
                    )
                };
                let (xb, gb) = (&xs[e.clone()], &dys[e]);
                fastmath::layer_norm_grad_rows(
                    isa,
                    xb,
                    gb,
                    ws,
                    &means[r.clone()],
                    &rstds[r],
                    dxb,
                    dw,
                    db,
                );
            }
        });
    };
    // SAFETY: the kernel writes every element of the rows it gets, and the
    // blocks cover all rows.
    let dx = unsafe { build(xs.len(), fill) };
    let mut dw = vec![0f64; c];
    let mut db = vec![0f64; c];
    for p in partial.chunks_exact(2 * c.max(1)) {
        let (pw, pb) = p.split_at(c);
        for j in 0..c {
            dw[j] += pw[j];
            db[j] += pb[j];
        }
    }
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|s| s as f32).collect::<Vec<f32>>();
    Ok((
        Tensor::from_vec(dx, x.shape())?,
        Tensor::from_vec(to_f32(dw), &[c])?,
        Tensor::from_vec(to_f32(db), &[c])?,
    ))
}

impl Tensor {
    /// Layer norm over the last dim with optional affine `weight` and `bias`
    /// of shape `[C]` (`F.layer_norm(x, [C], weight, bias, eps)`).
    ///
    /// # Shapes
    /// `x: [..., C]` → same shape.
    ///
    /// # Errors
    /// [`TensorError::ShapeMismatch`] if weight/bias are not `[C]`,
    /// [`TensorError::DType`] unless all are the same f32/f64 dtype.
    pub fn layer_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        Ok(self.layer_norm_forward(weight, bias, eps)?.0)
    }

    /// [`Tensor::layer_norm`] that also returns the per-row statistics the
    /// backward pass needs.
    ///
    /// # Errors
    /// As [`Tensor::layer_norm`].
    pub fn layer_norm_forward(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, LayerNormStats)> {
        const OP: &str = "layer_norm";
        let c = last_dim(OP, self)?;
        check_param(OP, weight, c, self)?;
        check_param(OP, bias, c, self)?;
        if self.dtype() == DType::F32 {
            return layer_norm_f32(self, weight, bias, eps, c);
        }
        with_float!(OP, self.dtype(), |T| {
            let x = self.contiguous();
            let xs = x.as_slice::<T>()?;
            let w = weight.map(|w| w.contiguous());
            let b = bias.map(|b| b.contiguous());
            let ws = w.as_ref().map(|w| w.as_slice::<T>()).transpose()?;
            let bs = b.as_ref().map(|b| b.as_slice::<T>()).transpose()?;
            let rows = xs.len().checked_div(c).unwrap_or(0);
            let mut y = vec![T::zero(); xs.len()];
            let mut mean = vec![T::zero(); rows];
            let mut rstd = vec![T::zero(); rows];
            let row_fn = |((yr, m), r): ((&mut [T], &mut T), &mut T), xr: &[T]| {
                let mu = crate::ops::reduce::sum_f64(xr) / c as f64;
                let var = xr.iter().map(|v| (v.as_f64() - mu).powi(2)).sum::<f64>() / c as f64;
                let rs = 1.0 / (var + eps).sqrt();
                let (mu_t, rs_t) = (T::from_f64(mu), T::from_f64(rs));
                for (j, (o, &v)) in yr.iter_mut().zip(xr).enumerate() {
                    let mut h = (v - mu_t) * rs_t;
                    if let Some(ws) = ws {
                        h *= ws[j];
                    }
                    if let Some(bs) = bs {
                        h += bs[j];
                    }
                    *o = h;
                }
                *m = mu_t;
                *r = rs_t;
            };
            if let Some(per_chunk) = PAR_CHUNK.checked_div(c) {
                let (ys, ms, rs) = (
                    SharedMut::new(&mut y),
                    SharedMut::new(&mut mean),
                    SharedMut::new(&mut rstd),
                );
                for_each_range(rows, per_chunk.max(1), |range| {
                    // SAFETY: `for_each_range` hands out disjoint row ranges.
                    let (y, m, r) = unsafe {
                        (
                            ys.range(range.start * c..range.end * c),
                            ms.range(range.clone()),
                            rs.range(range.clone()),
                        )
                    };
                    let x = &xs[range.start * c..range.end * c];
                    y.chunks_mut(c)
                        .zip(m.iter_mut())
                        .zip(r.iter_mut())
                        .zip(x.chunks(c))
                        .for_each(|(a, xr)| row_fn(a, xr));
                });
            }
            Ok((
                Tensor::from_vec(y, self.shape())?,
                LayerNormStats {
                    mean: Tensor::from_vec(mean, &[rows])?,
                    rstd: Tensor::from_vec(rstd, &[rows])?,
                },
            ))
        })
    }

    /// Fused backward of [`Tensor::layer_norm_forward`]. With `x̂ = (x − μ)·rstd`
    /// and `g = dy ⊙ w` (or `dy` without weight):
    /// `dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))`, `dw = Σ_rows dy ⊙ x̂`,
    /// `db = Σ_rows dy`. Returns `(dx, dw, db)`; `dw` and `db` are `[C]`.
    ///
    /// # Errors
    /// [`TensorError::ShapeMismatch`] if `dy` differs from `x` in shape.
    pub fn layer_norm_backward(
        x: &Tensor,
        weight: Option<&Tensor>,
        stats: &LayerNormStats,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "layer_norm_backward";
        if dy.shape() != x.shape() {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                expected: x.shape().to_vec(),
                got: dy.shape().to_vec(),
            });
        }
        let c = last_dim(OP, x)?;
        check_param(OP, weight, c, x)?;
        if x.dtype() == DType::F32 {
            return layer_norm_backward_f32(x, weight, stats, dy, c);
        }
        with_float!(OP, x.dtype(), |T| {
            let xc = x.contiguous();
            let dyc = dy.contiguous();
            let (xs, dys) = (xc.as_slice::<T>()?, dyc.as_slice::<T>()?);
            let w = weight.map(|w| w.contiguous());
            let ws = w.as_ref().map(|w| w.as_slice::<T>()).transpose()?;
            let means = stats.mean.as_slice::<T>()?;
            let rstds = stats.rstd.as_slice::<T>()?;
            let rows = xs.len().checked_div(c).unwrap_or(0);
            let mut dx = vec![T::zero(); xs.len()];
            // Each block of rows computes dx for its rows and partial dw/db.
            let block = |(bi, dxb): (usize, &mut [T])| -> (Vec<f64>, Vec<f64>) {
                let mut dw = vec![0f64; c];
                let mut db = vec![0f64; c];
                for (ri, dxr) in dxb.chunks_mut(c).enumerate() {
                    let row = bi * ROW_BLOCK + ri;
                    let (xr, dyr) = (&xs[row * c..(row + 1) * c], &dys[row * c..(row + 1) * c]);
                    let (mu, rs) = (means[row], rstds[row]);
                    let mut sum_g = 0f64;
                    let mut sum_gx = 0f64;
                    for j in 0..c {
                        let xh = (xr[j] - mu) * rs;
                        let g = match ws {
                            Some(w) => dyr[j] * w[j],
                            None => dyr[j],
                        };
                        sum_g += g.as_f64();
                        sum_gx += (g * xh).as_f64();
                        dw[j] += (dyr[j] * xh).as_f64();
                        db[j] += dyr[j].as_f64();
                    }
                    let mg = T::from_f64(sum_g / c as f64);
                    let mgx = T::from_f64(sum_gx / c as f64);
                    for j in 0..c {
                        let xh = (xr[j] - mu) * rs;
                        let g = match ws {
                            Some(w) => dyr[j] * w[j],
                            None => dyr[j],
                        };
                        dxr[j] = rs * (g - mg - xh * mgx);
                    }
                }
                (dw, db)
            };
            // One partial per block of rows, summed below in block order:
            // the same sums at every thread count.
            let blocks = rows.div_ceil(ROW_BLOCK);
            let mut partials: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); blocks];
            if c > 0 && rows > 0 {
                let (dd, pp) = (SharedMut::new(&mut dx), SharedMut::new(&mut partials));
                for_each_range(blocks, (PAR_CHUNK / (ROW_BLOCK * c)).max(1), |bs| {
                    for b in bs {
                        let e = b * ROW_BLOCK * c..((b + 1) * ROW_BLOCK).min(rows) * c;
                        // SAFETY: blocks are disjoint, and so are their rows
                        // of dx and their partial sums.
                        let (dxb, slot) = unsafe { (dd.range(e), &mut pp.range(b..b + 1)[0]) };
                        *slot = block((b, dxb));
                    }
                });
            }
            let mut dw = vec![0f64; c];
            let mut db = vec![0f64; c];
            for (pw, pb) in &partials {
                for j in 0..c {
                    dw[j] += pw[j];
                    db[j] += pb[j];
                }
            }
            let to_t = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
            Ok((
                Tensor::from_vec(dx, x.shape())?,
                Tensor::from_vec(to_t(dw), &[c])?,
                Tensor::from_vec(to_t(db), &[c])?,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_rows_have_zero_mean_unit_variance() {
        let x = Tensor::from_vec(
            (0..40)
                .map(|v| (v as f64 * 0.7).cos() * 3.0 + 1.0)
                .collect(),
            &[4, 10],
        )
        .unwrap();
        let y = x.layer_norm(None, None, 0.0).unwrap();
        let m = y.mean(&[-1], false).unwrap().to_vec::<f64>().unwrap();
        let v = y.var(&[-1], 0, false).unwrap().to_vec::<f64>().unwrap();
        for (a, b) in m.iter().zip(&v) {
            assert!(a.abs() < 1e-12 && (b - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn wrong_weight_shape_names_both() {
        let x = Tensor::zeros(&[2, 4], crate::DType::F32);
        let w = Tensor::zeros(&[3], crate::DType::F32);
        let e = x.layer_norm(Some(&w), None, 1e-5).unwrap_err().to_string();
        assert_eq!(e, "layer_norm: expected shape [4], got [3]");
    }

    #[test]
    fn f32_backward_matches_f64() {
        // 70 rows (three row blocks, the last partial) of 300 (a ragged lane
        // tail), with and without weight: the f32 kernel against the f64 path.
        let mut rng = crate::Rng::new(8);
        let f64s = |s: &[usize], m: f64, rng: &mut crate::Rng| {
            Tensor::randn(s, m, 1.0, crate::DType::F64, rng).unwrap()
        };
        let (x, w, dy) = (
            f64s(&[70, 300], 0.5, &mut rng),
            f64s(&[300], 1.0, &mut rng),
            f64s(&[70, 300], 0.0, &mut rng),
        );
        let f32s = |t: &Tensor| t.to_dtype(crate::DType::F32);
        for weight in [Some(&w), None] {
            let (_, s64) = x.layer_norm_forward(weight, None, 1e-5).unwrap();
            let want = Tensor::layer_norm_backward(&x, weight, &s64, &dy).unwrap();
            let w32 = weight.map(f32s);
            let (_, s32) = f32s(&x)
                .layer_norm_forward(w32.as_ref(), None, 1e-5)
                .unwrap();
            let got =
                Tensor::layer_norm_backward(&f32s(&x), w32.as_ref(), &s32, &f32s(&dy)).unwrap();
            for (g, w) in [(&got.0, &want.0), (&got.1, &want.1), (&got.2, &want.2)] {
                let (g, w) = (
                    g.to_dtype(crate::DType::F64).to_vec::<f64>().unwrap(),
                    w.to_vec::<f64>().unwrap(),
                );
                let scale = w.iter().fold(0f64, |m, v| m.max(v.abs()));
                for (a, b) in g.iter().zip(&w) {
                    assert!((a - b).abs() <= 2e-5 * scale, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = crate::Rng::new(5);
        let x = Tensor::randn(&[3, 5], 0.0, 1.0, crate::DType::F64, &mut rng).unwrap();
        let w = Tensor::randn(&[5], 1.0, 0.3, crate::DType::F64, &mut rng).unwrap();
        let b = Tensor::randn(&[5], 0.0, 0.3, crate::DType::F64, &mut rng).unwrap();
        let dy = Tensor::randn(&[3, 5], 0.0, 1.0, crate::DType::F64, &mut rng).unwrap();
        let (_, stats) = x.layer_norm_forward(Some(&w), Some(&b), 1e-5).unwrap();
        let (dx, dw, _) = Tensor::layer_norm_backward(&x, Some(&w), &stats, &dy).unwrap();
        // loss = Σ y ⊙ dy; check d loss / d x[i] and d loss / d w[j].
        let loss = |x: &Tensor, w: &Tensor| {
            x.layer_norm(Some(w), Some(&b), 1e-5)
                .unwrap()
                .mul(&dy)
                .unwrap()
                .sum_all()
                .unwrap()
                .item::<f64>()
                .unwrap()
        };
        let h = 1e-6;
        let xv = x.to_vec::<f64>().unwrap();
        let dxv = dx.to_vec::<f64>().unwrap();
        for i in 0..xv.len() {
            let mut p = xv.clone();
            p[i] += h;
            let mut m = xv.clone();
            m[i] -= h;
            let fd = (loss(&Tensor::from_vec(p, &[3, 5]).unwrap(), &w)
                - loss(&Tensor::from_vec(m, &[3, 5]).unwrap(), &w))
                / (2.0 * h);
            assert!((fd - dxv[i]).abs() < 1e-6, "dx[{i}] {fd} vs {}", dxv[i]);
        }
        let wv = w.to_vec::<f64>().unwrap();
        let dwv = dw.to_vec::<f64>().unwrap();
        for j in 0..5 {
            let mut p = wv.clone();
            p[j] += h;
            let mut m = wv.clone();
            m[j] -= h;
            let fd = (loss(&x, &Tensor::from_vec(p, &[5]).unwrap())
                - loss(&x, &Tensor::from_vec(m, &[5]).unwrap()))
                / (2.0 * h);
            assert!((fd - dwv[j]).abs() < 1e-6);
        }
    }
}
