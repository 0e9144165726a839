//! Fused cross-entropy over logits, with an ignore index.
//!
//! For each row `n` of logits `x[n, :]` (V classes) with target `t_n`:
//! `ℓ_n = logsumexp(x[n]) − x[n, t_n]`; the loss is the mean of `ℓ_n` over
//! rows whose target is not `ignore_index` (PyTorch's `F.cross_entropy(…,
//! ignore_index=-100, reduction="mean")`). Fusing avoids materialising the
//! `[N, V]` log-probabilities: forward keeps one log-sum-exp per row, and
//! backward rebuilds `softmax = exp(x − lse)` on the fly:
//! `dx[n, j] = g/N_valid · (softmax[n, j] − [j = t_n])`, 0 for ignored rows.
//! f32 rows run the vectorised kernels `fastmath::max_exp_sum` and
//! `fastmath::scaled_exp` (exp under 1 ulp, sums in 64 f32 lanes, as
//! PyTorch's vectorised log-softmax sums in f32); f64 rows use `std`.
use std::mem::MaybeUninit;

use kiln_tensor::kernels::fastmath::{self, Isa};
use kiln_tensor::{DType, FloatElement, Tensor, TensorError};
use rayon::prelude::*;

use crate::tape::record;
use crate::{AutogradError, Result, Var};

/// The two row kernels, per float type.
trait CeFloat: FloatElement {
    /// `(m, Σ exp(x − m))` of a row, `m` its max.
    fn max_exp_sum(row: &[Self]) -> (Self, f64);
    /// `out[j] = scale · exp(x[j] − shift)`, writing every element.
    fn scaled_exp(row: &[Self], shift: Self, scale: Self, out: &mut [MaybeUninit<Self>]);
}

impl CeFloat for f32 {
    fn max_exp_sum(row: &[f32]) -> (f32, f64) {
        let mut stats = [0f32; 2];
        fastmath::max_exp_sum(Isa::detect(), row, &mut stats);
        (stats[0], stats[1] as f64)
    }
    fn scaled_exp(row: &[f32], shift: f32, scale: f32, out: &mut [MaybeUninit<f32>]) {
        fastmath::scaled_exp(Isa::detect(), row, shift, scale, out);
    }
}

impl CeFloat for f64 {
    fn max_exp_sum(row: &[f64]) -> (f64, f64) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &a| m.max(a));
        (m, row.iter().map(|&a| (a - m).exp()).sum())
    }
    fn scaled_exp(row: &[f64], shift: f64, scale: f64, out: &mut [MaybeUninit<f64>]) {
        for (o, &a) in out.iter_mut().zip(row) {
            o.write(scale * (a - shift).exp());
        }
    }
}

/// Logits below this many elements are processed on the calling thread.
const PAR_MIN: usize = 1 << 15;

struct Forward {
    loss: f64,
    lse: Vec<f64>,
    valid: usize,
}

fn forward<T: CeFloat>(
    x: &[T],
    v: usize,
    targets: &[i64],
    ignore: i64,
) -> std::result::Result<Forward, (usize, i64)> {
    let row_loss = |(n, (row, &t)): (usize, (&[T], &i64))| {
        let (m, s) = T::max_exp_sum(row);
        let lse = m.as_f64() + s.ln();
        if t == ignore {
            return Ok((lse, 0.0));
        }
        if t < 0 || t as usize >= v {
            return Err((n, t));
        }
        Ok((lse, lse - row[t as usize].as_f64()))
    };
    // Handing small batches to the pool costs more than the work itself.
    let rows: Vec<std::result::Result<(f64, f64), (usize, i64)>> = if x.len() < PAR_MIN {
        x.chunks(v).zip(targets).enumerate().map(row_loss).collect()
    } else {
        kiln_tensor::parallel::install(|| {
            x.par_chunks(v)
                .zip(targets.par_iter())
                .enumerate()
                .map(row_loss)
                .collect()
        })
    };
    let mut lse = Vec::with_capacity(rows.len());
    let mut loss = 0.0;
    let mut valid = 0;
    for (r, &t) in rows.into_iter().zip(targets) {
        let (l, nll) = r?;
        lse.push(l);
        if t != ignore {
            loss += nll;
            valid += 1;
        }
    }
    Ok(Forward { loss, lse, valid })
}

fn backward<T: CeFloat>(
    x: &[T],
    v: usize,
    targets: &[i64],
    ignore: i64,
    lse: &[f64],
    scale: f64,
) -> Vec<T> {
    // Uninitialised: every row is written below (ignored rows with zeros),
    // which saves a pass of zero-filling over the whole [N, V] gradient.
    let mut dx: Vec<T> = Vec::with_capacity(x.len());
    let row_grad = |(n, (d, row)): (usize, (&mut [MaybeUninit<T>], &[T]))| {
        let t = targets[n];
        if t == ignore {
            d.iter_mut().for_each(|o| {
                o.write(T::from_f64(0.0));
            });
            return;
        }
        let sc = T::from_f64(scale);
        T::scaled_exp(row, T::from_f64(lse[n]), sc, d);
        // SAFETY: `scaled_exp` wrote the whole row.
        let at = unsafe { d[t as usize].assume_init() };
        d[t as usize].write(at - sc);
    };
    let out = &mut dx.spare_capacity_mut()[..x.len()];
    if x.len() < PAR_MIN {
        out.chunks_mut(v)
            .zip(x.chunks(v))
            .enumerate()
            .for_each(row_grad);
    } else {
        kiln_tensor::parallel::install(|| {
            out.par_chunks_mut(v)
                .zip(x.par_chunks(v))
                .enumerate()
                .for_each(row_grad)
        });
    }
    // SAFETY: every row (all x.len() elements) was written above.
    unsafe { dx.set_len(x.len()) };
    dx
}

impl Var {
    /// Mean cross-entropy between logits `self: [..., V]` and i64 class
    /// `targets: [...]`, skipping rows whose target equals `ignore_index`
    /// (`F.cross_entropy(logits.view(-1, V), targets.view(-1),
    /// ignore_index=…)`; transformers uses −100). If every row is ignored
    /// the mean is 0/0 = NaN, as in PyTorch.
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] if the shapes do not fit or a target is
    /// outside `0..V`; a dtype error unless logits are f32/f64 and targets i64.
    pub fn cross_entropy(&self, targets: &Tensor, ignore_index: i64) -> Result<Var> {
        let x = self.value();
        let shape = x.shape().to_vec();
        let v = *shape.last().ok_or_else(|| AutogradError::Invalid {
            op: "cross_entropy",
            msg: "logits need a class dim".into(),
        })?;
        if v == 0 {
            return Err(AutogradError::Invalid {
                op: "cross_entropy",
                msg: format!("logits {shape:?} have no classes"),
            });
        }
        if targets.shape() != &shape[..shape.len() - 1] {
            return Err(AutogradError::Invalid {
                op: "cross_entropy",
                msg: format!(
                    "targets shape {:?} does not match logits {:?} without the class dim",
                    targets.shape(),
                    shape
                ),
            });
        }
        if targets.dtype() != DType::I64 {
            return Err(TensorError::DType {
                op: "cross_entropy",
                got: targets.dtype(),
                expected: "i64 (class indices)".into(),
            }
            .into());
        }
        let t = targets.to_vec::<i64>()?;
        let xc = x.contiguous();
        let bad = |(n, t): (usize, i64)| AutogradError::Invalid {
            op: "cross_entropy",
            msg: format!("target {t} at row {n} is outside 0..{v}"),
        };
        let fwd = match xc.dtype() {
            DType::F32 => forward(xc.as_slice::<f32>()?, v, &t, ignore_index).map_err(bad)?,
            DType::F64 => forward(xc.as_slice::<f64>()?, v, &t, ignore_index).map_err(bad)?,
            other => {
                return Err(TensorError::DType {
                    op: "cross_entropy",
                    got: other,
                    expected: "f32 or f64".into(),
                }
                .into())
            }
        };
        let mean = fwd.loss / fwd.valid as f64;
        let out = Tensor::full(&[], mean, xc.dtype());
        let (lse, valid) = (fwd.lse, fwd.valid);
        // ℓ = mean_n (lse_n − x[n, t_n]): dx = g/N·(softmax(x) − onehot(t))
        record(
            "cross_entropy",
            "dx = g/N·(softmax(x) − onehot(t))",
            &[self],
            out,
            Box::new(move |g| {
                let scale = g.to_dtype(DType::F64).item::<f64>()? / valid as f64;
                let dx = match xc.dtype() {
                    DType::F32 => Tensor::from_vec(
                        backward(xc.as_slice::<f32>()?, v, &t, ignore_index, &lse, scale),
                        &shape,
                    )?,
                    _ => Tensor::from_vec(
                        backward(xc.as_slice::<f64>()?, v, &t, ignore_index, &lse, scale),
                        &shape,
                    )?,
                };
                Ok(vec![Some(dx)])
            }),
        )
    }
}
