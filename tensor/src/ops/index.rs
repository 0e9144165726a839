//! Indexing by integer tensors: `index_select` (embedding lookup), `gather`,
//! and their scatter-add counterparts (`index_add`, `scatter_add`), which
//! are what their gradients need.
//!
//! Index tensors have dtype `I64` (PyTorch's `torch.long`). The scatter ops
//! add sequentially in index order, so repeated indices accumulate
//! deterministically.

use crate::shape::Dim;
use crate::{with_any, with_float, DType, Result, Tensor, TensorError};

fn index_values(op: &'static str, indices: &Tensor) -> Result<Vec<i64>> {
    if indices.dtype() != DType::I64 {
        return Err(TensorError::DType {
            op,
            got: indices.dtype(),
            expected: "i64 (indices)".into(),
        });
    }
    indices.to_vec::<i64>()
}

fn check_index(
    op: &'static str,
    i: i64,
    size: usize,
    dim: usize,
    shape: &[usize],
) -> Result<usize> {
    if i < 0 || i as usize >= size {
        return Err(TensorError::IndexOutOfRange {
            op,
            index: i,
            size,
            dim,
            shape: shape.to_vec(),
        });
    }
    Ok(i as usize)
}

/// Sizes of the dims before `dim`, at `dim`, and after it.
fn split3(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

impl Tensor {
    /// Picks entries `indices[i]` along `dim` (`torch.index_select`). With
    /// `dim = 0` on a `[V, C]` weight and token ids this is an embedding
    /// lookup.
    ///
    /// # Shapes
    /// `self: [..., S, ...]`, `indices: [N]` (i64) → `[..., N, ...]`.
    ///
    /// # Errors
    /// [`TensorError::DType`] if `indices` is not i64,
    /// [`TensorError::IndexOutOfRange`] for an index outside `0..S`,
    /// [`TensorError::Invalid`] if `indices` is not 1-D.
    pub fn index_select(&self, dim: impl Dim, indices: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        let d = dim.resolve(OP, self.shape())?;
        if indices.rank() != 1 {
            return Err(TensorError::Invalid {
                op: OP,
                shape: indices.shape().to_vec(),
                msg: "indices must be 1-D".into(),
            });
        }
        let idx = index_values(OP, indices)?;
        let (outer, size, inner) = split3(self.shape(), d);
        let idx: Vec<usize> = idx
            .iter()
            .map(|&i| check_index(OP, i, size, d, self.shape()))
            .collect::<Result<_>>()?;
        let mut shape = self.shape().to_vec();
        shape[d] = idx.len();
        let x = self.contiguous();
        with_any!(self.dtype(), |T| {
            let src = x.as_slice::<T>()?;
            let mut out = Vec::with_capacity(outer * idx.len() * inner);
            for o in 0..outer {
                for &i in &idx {
                    let base = (o * size + i) * inner;
                    out.extend_from_slice(&src[base..base + inner]);
                }
            }
            Tensor::from_vec(out, &shape)
        })
    }

    /// Returns `self + A` where `A` is zero except that slice `indices[i]`
    /// along `dim` receives `src`'s slice `i`, summed over repeats
    /// (`torch.index_add`). The gradient of [`Tensor::index_select`].
    ///
    /// # Shapes
    /// `self: [..., S, ...]`, `indices: [N]`, `src: [..., N, ...]` → `self`'s shape.
    ///
    /// # Errors
    /// As [`Tensor::index_select`], plus [`TensorError::ShapeMismatch`] if
    /// `src` has the wrong shape.
    pub fn index_add(&self, dim: impl Dim, indices: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_add";
        let d = dim.resolve(OP, self.shape())?;
        let idx = index_values(OP, indices)?;
        let mut expected = self.shape().to_vec();
        expected[d] = idx.len();
        if src.shape() != expected.as_slice() || indices.rank() != 1 {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                expected,
                got: src.shape().to_vec(),
            });
        }
        let (outer, size, inner) = split3(self.shape(), d);
        let idx: Vec<usize> = idx
            .iter()
            .map(|&i| check_index(OP, i, size, d, self.shape()))
            .collect::<Result<_>>()?;
        with_float!(OP, self.dtype(), |T| {
            crate::ops::binary::same_dtype(OP, self, src)?;
            let mut out = self.contiguous().to_vec::<T>()?;
            let s = src.contiguous();
            let s = s.as_slice::<T>()?;
            for o in 0..outer {
                for (n, &i) in idx.iter().enumerate() {
                    let dst = (o * size + i) * inner;
                    let from = (o * idx.len() + n) * inner;
                    for (a, &b) in out[dst..dst + inner].iter_mut().zip(&s[from..from + inner]) {
                        *a += b;
                    }
                }
            }
            Tensor::from_vec(out, self.shape())
        })
    }

    /// Gathers along `dim`: `out[i][j][k] = self[i][index[i][j][k]][k]` for
    /// `dim = 1` (`torch.gather`).
    ///
    /// # Shapes
    /// `index` has the same rank as `self` and no dim larger than `self`'s
    /// except `dim`; the output has `index`'s shape.
    ///
    /// # Errors
    /// [`TensorError::DType`], [`TensorError::IndexOutOfRange`],
    /// [`TensorError::ShapeMismatch`] for incompatible ranks or sizes.
    pub fn gather(&self, dim: impl Dim, index: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        let d = dim.resolve(OP, self.shape())?;
        self.check_gather_shape(OP, d, index)?;
        let idx = index_values(OP, index)?;
        let x = self.contiguous();
        let strides = x.strides().to_vec();
        let ishape = index.shape().to_vec();
        with_any!(self.dtype(), |T| {
            let src = x.as_slice::<T>()?;
            let mut out = Vec::with_capacity(idx.len());
            let mut pos = vec![0usize; ishape.len()];
            for &i in &idx {
                let i = check_index(OP, i, self.shape()[d], d, self.shape())?;
                let mut off = 0;
                for (k, &p) in pos.iter().enumerate() {
                    off += if k == d { i } else { p } * strides[k];
                }
                out.push(src[off]);
                next_index(&mut pos, &ishape);
            }
            Tensor::from_vec(out, &ishape)
        })
    }

    /// Returns `self` plus `src` scattered along `dim`:
    /// `out[i][index[i][j][k]][k] += src[i][j][k]` for `dim = 1`
    /// (`torch.scatter_add`). The gradient of [`Tensor::gather`].
    ///
    /// # Errors
    /// As [`Tensor::gather`]; `src` must have `index`'s shape.
    pub fn scatter_add(&self, dim: impl Dim, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        let d = dim.resolve(OP, self.shape())?;
        self.check_gather_shape(OP, d, index)?;
        if src.shape() != index.shape() {
            return Err(TensorError::ShapeMismatch {
                op: OP,
                expected: index.shape().to_vec(),
                got: src.shape().to_vec(),
            });
        }
        let idx = index_values(OP, index)?;
        let ishape = index.shape().to_vec();
        with_float!(OP, self.dtype(), |T| {
            crate::ops::binary::same_dtype(OP, self, src)?;
            let mut out = self.contiguous().to_vec::<T>()?;
            let strides = crate::shape::contiguous_strides(self.shape());
            let s = src.to_vec::<T>()?;
            let mut pos = vec![0usize; ishape.len()];
            for (n, &i) in idx.iter().enumerate() {
                let i = check_index(OP, i, self.shape()[d], d, self.shape())?;
                let mut off = 0;
                for (k, &p) in pos.iter().enumerate() {
                    off += if k == d { i } else { p } * strides[k];
                }
                out[off] += s[n];
                next_index(&mut pos, &ishape);
            }
            Tensor::from_vec(out, self.shape())
        })
    }

    fn check_gather_shape(&self, op: &'static str, d: usize, index: &Tensor) -> Result<()> {
        let ok = index.rank() == self.rank()
            && index
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(k, (&i, &s))| k == d || i <= s);
        if !ok {
            return Err(TensorError::ShapeMismatch {
                op,
                expected: self.shape().to_vec(),
                got: index.shape().to_vec(),
            });
        }
        Ok(())
    }
}

/// Advances a row-major multi-index.
fn next_index(pos: &mut [usize], shape: &[usize]) {
    for k in (0..shape.len()).rev() {
        pos[k] += 1;
        if pos[k] < shape[k] {
            return;
        }
        pos[k] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_lookup_and_its_gradient() {
        let w = Tensor::from_vec((0..12).map(|v| v as f32).collect(), &[4, 3]).unwrap();
        let ids = Tensor::from_vec(vec![2i64, 0, 2], &[3]).unwrap();
        let e = w.index_select(0, &ids).unwrap();
        assert_eq!(
            e.to_vec::<f32>().unwrap(),
            vec![6., 7., 8., 0., 1., 2., 6., 7., 8.]
        );
        let g = Tensor::zeros(&[4, 3], DType::F32)
            .index_add(0, &ids, &Tensor::ones(&[3, 3], DType::F32))
            .unwrap();
        assert_eq!(
            g.to_vec::<f32>().unwrap(),
            vec![1., 1., 1., 0., 0., 0., 2., 2., 2., 0., 0., 0.]
        );
    }

    #[test]
    fn out_of_range_index_is_reported() {
        let w = Tensor::zeros(&[4, 3], DType::F32);
        let ids = Tensor::from_vec(vec![4i64], &[1]).unwrap();
        let e = w.index_select(0, &ids).unwrap_err().to_string();
        assert_eq!(
            e,
            "index_select: index 4 is out of range for size 4 along dim 0 of shape [4, 3]"
        );
    }

    #[test]
    fn gather_picks_targets_and_scatter_add_inverts() {
        let x = Tensor::from_vec(vec![1.0f64, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
        let t = Tensor::from_vec(vec![2i64, 0], &[2, 1]).unwrap();
        assert_eq!(
            x.gather(1, &t).unwrap().to_vec::<f64>().unwrap(),
            vec![3.0, 4.0]
        );
        let g = x
            .zeros_like()
            .scatter_add(1, &t, &Tensor::ones(&[2, 1], DType::F64))
            .unwrap();
        assert_eq!(g.to_vec::<f64>().unwrap(), vec![0., 0., 1., 1., 0., 0.]);
    }
}
