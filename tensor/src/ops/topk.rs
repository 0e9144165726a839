//! The `k` largest (or smallest) entries along a dim.

use std::cmp::Ordering;

use crate::dtype::FloatElement;
use crate::shape::Dim;
use crate::{with_float, Result, Tensor, TensorError};

/// Orders floats so NaN counts as the largest value, as PyTorch's topk does.
fn total_cmp_nan_max<T: FloatElement>(a: T, b: T) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

impl Tensor {
    /// The `k` largest (`largest = true`) or smallest entries along `dim`,
    /// sorted best first, with their indices (`torch.topk(x, k, dim,
    /// largest, sorted=True)`). Equal values keep their original order.
    ///
    /// # Shapes
    /// `[..., S, ...]` → values `[..., k, ...]` and i64 indices of that shape.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if `k > S`, [`TensorError::DType`] unless f32/f64.
    pub fn topk(&self, k: usize, dim: impl Dim, largest: bool) -> Result<(Tensor, Tensor)> {
        const OP: &str = "topk";
        let d = dim.resolve(OP, self.shape())?;
        let s = self.shape()[d];
        if k > s {
            return Err(TensorError::Invalid {
                op: OP,
                shape: self.shape().to_vec(),
                msg: format!("k = {k} exceeds size {s} of dim {d}"),
            });
        }
        with_float!(OP, self.dtype(), |T| {
            // Rows along `dim`: move it last.
            let mut perm: Vec<usize> = (0..self.rank()).filter(|&x| x != d).collect();
            perm.push(d);
            let rows = self.permute(&perm)?.contiguous();
            let data = rows.as_slice::<T>()?;
            let nrows = data.len().checked_div(s).unwrap_or(0);
            let mut vals = Vec::with_capacity(nrows * k);
            let mut idxs = Vec::with_capacity(nrows * k);
            let better = |a: &(usize, T), b: &(usize, T)| {
                let o = total_cmp_nan_max(a.1, b.1);
                let o = if largest { o.reverse() } else { o };
                o.then(a.0.cmp(&b.0))
            };
            for r in 0..nrows {
                let row = &data[r * s..(r + 1) * s];
                let mut cand: Vec<(usize, T)> = row.iter().copied().enumerate().collect();
                if k < s && k > 0 {
                    cand.select_nth_unstable_by(k - 1, better);
                }
                cand.truncate(k);
                cand.sort_by(better);
                for (i, v) in cand {
                    vals.push(v);
                    idxs.push(i as i64);
                }
            }
            let mut out_shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
            *out_shape.last_mut().expect("rank ≥ 1") = k;
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            let v = Tensor::from_vec(vals, &out_shape)?
                .permute(&inv)?
                .contiguous();
            let i = Tensor::from_vec(idxs, &out_shape)?
                .permute(&inv)?
                .contiguous();
            Ok((v, i))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top2_of_rows() {
        let x = Tensor::from_vec(vec![1.0f32, 5.0, 3.0, 9.0, 2.0, 9.0], &[2, 3]).unwrap();
        let (v, i) = x.topk(2, -1, true).unwrap();
        assert_eq!(v.to_vec::<f32>().unwrap(), vec![5.0, 3.0, 9.0, 9.0]);
        assert_eq!(i.to_vec::<i64>().unwrap(), vec![1, 2, 0, 2]);
        let (v, _) = x.topk(1, 0, false).unwrap();
        assert_eq!(v.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    }
}
