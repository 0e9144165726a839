//! Fused cross-entropy over logits with an ignore index, forward and
//! backward.
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
//! PyTorch's vectorised log-softmax sums in f32); f64 rows use the generic
//! `ops::reduce::max_exp_sum` and `std`'s exp. A row holding NaN has a NaN
//! term, so the loss is NaN (the NaN rule of `ops::reduce`).
//!
//! Rows are spread over threads whole, and the loss adds the rows' terms in
//! row order afterwards, so the result is the same at every thread count.

use std::mem::MaybeUninit;

use crate::dtype::FloatElement;
use crate::kernels::fastmath::{self, Isa};
use crate::parallel::{for_each_range, SharedMut};
use crate::strided::PAR_CHUNK;
use crate::uninit::build_par;
use crate::{DType, Result, Tensor, TensorError};

const OP: &str = "cross_entropy";

/// The two row kernels, per float type.
trait CeFloat: FloatElement {
    /// `(m, Σ exp(x − m))` of a row, `m` its max (0 if that is `-inf`);
    /// NaN in the row makes both NaN (the rule of `ops::reduce`).
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
        crate::ops::reduce::max_exp_sum(row)
    }
    fn scaled_exp(row: &[f64], shift: f64, scale: f64, out: &mut [MaybeUninit<f64>]) {
        for (o, &a) in out.iter_mut().zip(row) {
            o.write(scale * (a - shift).exp());
        }
    }
}

/// What [`Tensor::cross_entropy_backward`] needs from
/// [`Tensor::cross_entropy_forward`]: the targets, the ignore index, each
/// row's log-sum-exp and the number of rows that count.
#[derive(Clone, Debug)]
pub struct CrossEntropyStats {
    targets: Vec<i64>,
    ignore_index: i64,
    lse: Vec<f64>,
    valid: usize,
}

/// Rows per thread at least: about [`PAR_CHUNK`] elements of logits.
fn min_rows(v: usize) -> usize {
    (PAR_CHUNK / v).max(1)
}

/// Each row's `(log-sum-exp, ℓ_n)`; `ℓ_n` is 0 for ignored rows. Targets
/// were checked.
fn forward<T: CeFloat>(x: &[T], v: usize, targets: &[i64], ignore: i64) -> (Vec<f64>, Vec<f64>) {
    let rows = targets.len();
    let (mut lse, mut nll) = (vec![0f64; rows], vec![0f64; rows]);
    let (lse_s, nll_s) = (SharedMut::new(&mut lse), SharedMut::new(&mut nll));
    for_each_range(rows, min_rows(v), |r| {
        // SAFETY: `for_each_range` hands out disjoint row ranges.
        let (ls, ns) = unsafe { (lse_s.range(r.clone()), nll_s.range(r.clone())) };
        for ((n, l), o) in r.zip(ls).zip(ns) {
            let row = &x[n * v..(n + 1) * v];
            let (m, s) = T::max_exp_sum(row);
            *l = m.as_f64() + s.ln();
            let t = targets[n];
            *o = if t == ignore {
                0.0
            } else {
                *l - row[t as usize].as_f64()
            };
        }
    });
    (lse, nll)
}

fn backward<T: CeFloat>(x: &[T], v: usize, stats: &CrossEntropyStats, scale: f64) -> Vec<T> {
    let sc = T::from_f64(scale);
    let fill = |start: usize, out: &mut [MaybeUninit<T>]| {
        for (i, d) in out.chunks_exact_mut(v).enumerate() {
            let n = start / v + i;
            let t = stats.targets[n];
            if t == stats.ignore_index {
                d.iter_mut().for_each(|o| {
                    o.write(T::from_f64(0.0));
                });
                continue;
            }
            T::scaled_exp(&x[n * v..(n + 1) * v], T::from_f64(stats.lse[n]), sc, d);
            // SAFETY: `scaled_exp` wrote the whole row.
            let at = unsafe { d[t as usize].assume_init() };
            d[t as usize].write(at - sc);
        }
    };
    // SAFETY: every row is written above (ignored rows with zeros), which
    // saves a pass of zero-filling over the whole [N, V] gradient.
    unsafe { build_par(x.len(), v, min_rows(v), fill) }
}

fn invalid(shape: &[usize], msg: String) -> TensorError {
    TensorError::Invalid {
        op: OP,
        shape: shape.to_vec(),
        msg,
    }
}

impl Tensor {
    /// Mean cross-entropy between logits `self: [..., V]` and i64 class
    /// `targets: [...]`, skipping rows whose target equals `ignore_index`
    /// (`F.cross_entropy(logits.view(-1, V), targets.view(-1),
    /// ignore_index=…)`; transformers uses −100). If every row is ignored
    /// the mean is 0/0 = NaN, as in PyTorch. Returns the rank-0 loss and
    /// what [`Tensor::cross_entropy_backward`] needs.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if the shapes do not fit or a target is
    /// outside `0..V`; [`TensorError::DType`] unless logits are f32/f64 and
    /// targets i64.
    pub fn cross_entropy_forward(
        &self,
        targets: &Tensor,
        ignore_index: i64,
    ) -> Result<(Tensor, CrossEntropyStats)> {
        let shape = self.shape();
        let v = *shape
            .last()
            .ok_or_else(|| invalid(shape, "logits need a class dim".into()))?;
        if v == 0 {
            return Err(invalid(shape, "logits have no classes".into()));
        }
        if targets.shape() != &shape[..shape.len() - 1] {
            return Err(invalid(
                shape,
                format!(
                    "targets shape {:?} does not match the logits without the class dim",
                    targets.shape()
                ),
            ));
        }
        if targets.dtype() != DType::I64 {
            return Err(TensorError::DType {
                op: OP,
                got: targets.dtype(),
                expected: "i64 (class indices)".into(),
            });
        }
        let t = targets.to_vec::<i64>()?;
        if let Some((n, &bad)) = t
            .iter()
            .enumerate()
            .find(|&(_, &t)| t != ignore_index && (t < 0 || t as usize >= v))
        {
            return Err(invalid(
                shape,
                format!("target {bad} at row {n} is outside 0..{v}"),
            ));
        }
        let x = self.contiguous();
        let (lse, nll) = match x.dtype() {
            DType::F32 => forward(x.as_slice::<f32>()?, v, &t, ignore_index),
            DType::F64 => forward(x.as_slice::<f64>()?, v, &t, ignore_index),
            other => {
                return Err(TensorError::DType {
                    op: OP,
                    got: other,
                    expected: "f32 or f64".into(),
                })
            }
        };
        let mut loss = 0.0;
        let mut valid = 0;
        for (&l, &tn) in nll.iter().zip(&t) {
            if tn != ignore_index {
                loss += l;
                valid += 1;
            }
        }
        let out = Tensor::full(&[], loss / valid as f64, x.dtype());
        let stats = CrossEntropyStats {
            targets: t,
            ignore_index,
            lse,
            valid,
        };
        Ok((out, stats))
    }

    /// Backward of [`Tensor::cross_entropy_forward`] for the same `logits`:
    /// `dx = g/N_valid · (softmax(x) − onehot(t))`, zero on ignored rows,
    /// with `g` the rank-0 gradient of the loss.
    ///
    /// # Errors
    /// [`TensorError::DType`] unless logits are f32/f64; the error of
    /// reading `g` as one number.
    pub fn cross_entropy_backward(
        logits: &Tensor,
        stats: &CrossEntropyStats,
        g: &Tensor,
    ) -> Result<Tensor> {
        let scale = g.to_dtype(DType::F64).item::<f64>()? / stats.valid as f64;
        let x = logits.contiguous();
        let v = *x.shape().last().unwrap_or(&1);
        match x.dtype() {
            DType::F32 => {
                Tensor::from_vec(backward(x.as_slice::<f32>()?, v, stats, scale), x.shape())
            }
            DType::F64 => {
                Tensor::from_vec(backward(x.as_slice::<f64>()?, v, stats, scale), x.shape())
            }
            other => Err(TensorError::DType {
                op: OP,
                got: other,
                expected: "f32 or f64".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits `[rows, v]` with values in about ±4, and targets with every
    /// fifth row ignored.
    fn case(rows: usize, v: usize, dtype: DType) -> (Tensor, Tensor) {
        let x: Vec<f64> = (0..rows * v)
            .map(|i| ((i * 7919 % 1013) as f64 - 506.0) / 127.0)
            .collect();
        let t: Vec<i64> = (0..rows)
            .map(|n| {
                if n % 5 == 4 {
                    -100
                } else {
                    (n * 31 % v) as i64
                }
            })
            .collect();
        (
            Tensor::from_vec(x, &[rows, v]).unwrap().to_dtype(dtype),
            Tensor::from_vec(t, &[rows]).unwrap(),
        )
    }

    #[test]
    fn matches_log_softmax_and_softmax() {
        let (x, t) = case(7, 11, DType::F64);
        let (loss, stats) = x.cross_entropy_forward(&t, -100).unwrap();
        let lp = x.log_softmax(-1).unwrap().to_vec::<f64>().unwrap();
        let sm = x.softmax(-1).unwrap().to_vec::<f64>().unwrap();
        let tv = t.to_vec::<i64>().unwrap();
        let valid: Vec<usize> = (0..7).filter(|&n| tv[n] != -100).collect();
        let want: f64 = valid
            .iter()
            .map(|&n| -lp[n * 11 + tv[n] as usize])
            .sum::<f64>()
            / valid.len() as f64;
        assert!((loss.item::<f64>().unwrap() - want).abs() < 1e-12);
        let g = Tensor::full(&[], 2.0, DType::F64);
        let dx = Tensor::cross_entropy_backward(&x, &stats, &g)
            .unwrap()
            .to_vec::<f64>()
            .unwrap();
        for n in 0..7 {
            for j in 0..11 {
                let want = if tv[n] == -100 {
                    0.0
                } else {
                    let onehot = if j == tv[n] as usize { 1.0 } else { 0.0 };
                    2.0 / valid.len() as f64 * (sm[n * 11 + j] - onehot)
                };
                assert!((dx[n * 11 + j] - want).abs() < 1e-12, "row {n} class {j}");
            }
        }
    }

    #[test]
    fn a_target_outside_the_classes_is_an_error() {
        let x = Tensor::zeros(&[2, 3], DType::F32);
        let t = Tensor::from_vec(vec![-100i64, 3], &[2]).unwrap();
        let e = x.cross_entropy_forward(&t, -100).unwrap_err();
        assert!(e.to_string().contains("target 3 at row 1"), "{e}");
        let t = Tensor::from_vec(vec![0i64], &[1]).unwrap();
        assert!(x.cross_entropy_forward(&t, -100).is_err());
    }
}
