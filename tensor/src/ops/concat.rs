//! Joining and splitting along a dim: `cat`, `stack`, `split`, `chunk`,
//! and `slice_scatter`, the inverse of a `narrow`.

use crate::layout::Layout;
use crate::shape::Dim;
use crate::strided::Walk;
use crate::{with_any, Result, Tensor, TensorError};

impl Tensor {
    /// A copy of `self` with `src` written over positions
    /// `start..start + src.shape()[dim]` along `dim`
    /// (`torch.slice_scatter(self, src, dim, start, start + len)`). The
    /// backward of [`Tensor::narrow`] is `zeros.slice_scatter(g, …)`; `src`
    /// is read through its strides, so a transposed gradient costs no extra
    /// copy.
    ///
    /// # Shapes
    /// `src` has `self`'s shape except along `dim`, where it fits inside.
    ///
    /// # Errors
    /// [`TensorError::ShapeMismatch`] if `src` does not fit,
    /// [`TensorError::DType`] if the dtypes differ.
    pub fn slice_scatter(&self, src: &Tensor, dim: impl Dim, start: usize) -> Result<Tensor> {
        const OP: &str = "slice_scatter";
        let region = self.slice_region(OP, src, dim, start)?;
        let walk = Walk::new([&region, src.layout()]);
        with_any!(self.dtype(), |T| {
            let mut out = self.to_vec::<T>()?;
            let from = src.typed::<T>(OP)?;
            walk.for_runs(0, usize::MAX, |[o, i], len, [so, si]| {
                for e in 0..len {
                    out[o + e * so] = from[i + e * si];
                }
            });
            Tensor::from_vec(out, self.shape())
        })
    }

    /// `self[…, start..start + len, …] += src` along `dim`, in place
    /// (`self.narrow(dim, start, len).add_(src)` in PyTorch). The backward
    /// of [`Tensor::narrow`] adds its gradient into the input's gradient
    /// this way, instead of building a zero-padded copy and adding that.
    ///
    /// Writes in place when `self` is the only owner of its whole,
    /// contiguous buffer; otherwise `self` is first copied, so tensors that
    /// shared its buffer never see the change. `src` is read through its
    /// strides.
    ///
    /// # Shapes
    /// `src` has `self`'s shape except along `dim`, where it fits inside.
    ///
    /// # Errors
    /// [`TensorError::ShapeMismatch`] if `src` does not fit,
    /// [`TensorError::DType`] if the dtypes differ or are not f32/f64.
    pub fn add_assign_slice(&mut self, src: &Tensor, dim: impl Dim, start: usize) -> Result<()> {
        const OP: &str = "add_assign_slice";
        let region = self.slice_region(OP, src, dim, start)?;
        self.add_in_place(OP, &region, src, src.layout())
    }

    /// The positions `start..start + src.shape()[dim]` along `dim` of a
    /// contiguous buffer shaped like `self`, after checking that `src` fits
    /// there and has `self`'s dtype.
    fn slice_region(
        &self,
        op: &'static str,
        src: &Tensor,
        dim: impl Dim,
        start: usize,
    ) -> Result<Layout> {
        let d = dim.resolve(op, self.shape())?;
        crate::ops::binary::same_dtype(op, self, src)?;
        let fits = src.rank() == self.rank()
            && src
                .shape()
                .iter()
                .zip(self.shape())
                .enumerate()
                .all(|(k, (&a, &b))| if k == d { start + a <= b } else { a == b });
        if !fits {
            return Err(TensorError::ShapeMismatch {
                op,
                expected: self.shape().to_vec(),
                got: src.shape().to_vec(),
            });
        }
        Layout::contiguous(self.shape()).narrow(d, start, src.shape()[d])
    }

    /// Concatenates along `dim` (`torch.cat`). All tensors must share dtype
    /// and every size except `dim`'s.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] for an empty list,
    /// [`TensorError::ShapeMismatch`] / [`TensorError::DType`] for
    /// incompatible inputs.
    pub fn cat(tensors: &[&Tensor], dim: impl Dim) -> Result<Tensor> {
        const OP: &str = "cat";
        let first = tensors.first().ok_or_else(|| TensorError::Invalid {
            op: OP,
            shape: vec![],
            msg: "needs at least one tensor".into(),
        })?;
        let d = dim.resolve(OP, first.shape())?;
        let mut shape = first.shape().to_vec();
        shape[d] = 0;
        for t in tensors {
            crate::ops::binary::same_dtype(OP, first, t)?;
            let fits = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(k, (a, b))| k == d || a == b);
            if !fits {
                return Err(TensorError::ShapeMismatch {
                    op: OP,
                    expected: first.shape().to_vec(),
                    got: t.shape().to_vec(),
                });
            }
            shape[d] += t.shape()[d];
        }
        let outer: usize = shape[..d].iter().product();
        let inner: usize = shape[d + 1..].iter().product();
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.contiguous()).collect();
        with_any!(first.dtype(), |T| {
            let slices: Vec<&[T]> = parts
                .iter()
                .map(|p| p.as_slice::<T>())
                .collect::<Result<_>>()?;
            let mut out = Vec::with_capacity(shape.iter().product());
            for o in 0..outer {
                for (p, s) in parts.iter().zip(&slices) {
                    let run = p.shape()[d] * inner;
                    out.extend_from_slice(&s[o * run..(o + 1) * run]);
                }
            }
            Tensor::from_vec(out, &shape)
        })
    }

    /// Stacks equal-shaped tensors along a new dim (`torch.stack`).
    ///
    /// # Errors
    /// As [`Tensor::cat`].
    pub fn stack(tensors: &[&Tensor], dim: impl Dim) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| TensorError::Invalid {
            op: "stack",
            shape: vec![],
            msg: "needs at least one tensor".into(),
        })?;
        let d = crate::shape::resolve_dim("stack", dim.raw(), first.rank() + 1, first.shape())?;
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(TensorError::ShapeMismatch {
                    op: "stack",
                    expected: first.shape().to_vec(),
                    got: t.shape().to_vec(),
                });
            }
        }
        let parts: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.unsqueeze(d))
            .collect::<Result<_>>()?;
        Tensor::cat(&parts.iter().collect::<Vec<_>>(), d)
    }

    /// Splits into views of `sizes[i]` entries along `dim`
    /// (`torch.split(x, sizes, dim)`).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if the sizes do not add up to the dim's size.
    pub fn split_sizes(&self, sizes: &[usize], dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.resolve("split", self.shape())?;
        if sizes.iter().sum::<usize>() != self.shape()[d] {
            return Err(TensorError::Invalid {
                op: "split",
                shape: self.shape().to_vec(),
                msg: format!(
                    "sizes {sizes:?} do not add up to {} along dim {d}",
                    self.shape()[d]
                ),
            });
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let v = self.narrow(d, start, s);
                start += s;
                v
            })
            .collect()
    }

    /// Splits into views of `size` entries along `dim`; the last may be
    /// smaller (`torch.split(x, size, dim)`).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if `size` is 0.
    pub fn split(&self, size: usize, dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.resolve("split", self.shape())?;
        if size == 0 {
            return Err(TensorError::Invalid {
                op: "split",
                shape: self.shape().to_vec(),
                msg: "split size must be positive".into(),
            });
        }
        let n = self.shape()[d];
        let sizes: Vec<usize> = (0..n).step_by(size).map(|s| size.min(n - s)).collect();
        self.split_sizes(&sizes, d)
    }

    /// Splits into `chunks` views of `ceil(size / chunks)` entries along
    /// `dim` (the last may be smaller, and there may be fewer than `chunks`),
    /// as `torch.chunk`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if `chunks` is 0.
    pub fn chunk(&self, chunks: usize, dim: impl Dim) -> Result<Vec<Tensor>> {
        let d = dim.resolve("chunk", self.shape())?;
        if chunks == 0 {
            return Err(TensorError::Invalid {
                op: "chunk",
                shape: self.shape().to_vec(),
                msg: "number of chunks must be positive".into(),
            });
        }
        let n = self.shape()[d];
        self.split(n.div_ceil(chunks).max(1), d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn cat_then_split_round_trips() {
        let a = Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[2, 3]).unwrap();
        let b = Tensor::from_vec((6..10).map(|v| v as f32).collect(), &[2, 2]).unwrap();
        let c = Tensor::cat(&[&a, &b], 1).unwrap();
        assert_eq!(
            c.to_vec::<f32>().unwrap(),
            vec![0., 1., 2., 6., 7., 3., 4., 5., 8., 9.]
        );
        let parts = c.split_sizes(&[3, 2], 1).unwrap();
        assert_eq!(
            parts[0].to_vec::<f32>().unwrap(),
            a.to_vec::<f32>().unwrap()
        );
        assert_eq!(
            parts[1].to_vec::<f32>().unwrap(),
            b.to_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn chunk_like_torch() {
        let x = Tensor::zeros(&[5], DType::F32);
        let sizes: Vec<usize> = x
            .chunk(3, 0)
            .unwrap()
            .iter()
            .map(|t| t.shape()[0])
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn stack_adds_a_dim() {
        let a = Tensor::ones(&[2], DType::F64);
        let s = Tensor::stack(&[&a, &a, &a], 1).unwrap();
        assert_eq!(s.shape(), &[2, 3]);
    }
}

#[cfg(test)]
mod slice_scatter_tests {
    use crate::{DType, Rng, Tensor, TensorError};

    /// Writing a (transposed) slice over zeros is zero-padding it.
    #[test]
    fn add_assign_slice_adds_into_the_slice_only() {
        let mut rng = Rng::new(4);
        let base = Tensor::randn(&[2, 3, 9], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let g = Tensor::randn(&[2, 5, 3], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let g = g.transpose(1, 2).unwrap(); // [2, 3, 5], strided
        let padded = Tensor::zeros(&[2, 3, 9], DType::F32)
            .slice_scatter(&g, 2, 3)
            .unwrap();
        let want = base.add(&padded).unwrap().to_vec::<f32>().unwrap();
        // Owned: in place.
        let mut x = base.add_scalar(0.0).unwrap();
        let before = x.as_slice::<f32>().unwrap().as_ptr();
        x.add_assign_slice(&g, 2, 3).unwrap();
        assert_eq!(x.as_slice::<f32>().unwrap().as_ptr(), before);
        assert_eq!(x.to_vec::<f32>().unwrap(), want);
        // Shared: copied first, the other owner unchanged.
        let mut y = base.clone();
        y.add_assign_slice(&g, -1, 3).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), want);
        assert_ne!(base.to_vec::<f32>().unwrap(), want);
        // Along the first dim.
        let mut z = Tensor::zeros(&[4, 2], DType::F32);
        z.add_assign_slice(&Tensor::ones(&[2, 2], DType::F32), 0, 1)
            .unwrap();
        assert_eq!(
            z.to_vec::<f32>().unwrap(),
            vec![0., 0., 1., 1., 1., 1., 0., 0.]
        );
        // A slice that does not fit is an error that leaves self alone.
        let err = z.add_assign_slice(&Tensor::ones(&[2, 2], DType::F32), 0, 3);
        assert!(matches!(err, Err(TensorError::ShapeMismatch { .. })));
        assert_eq!(
            z.to_vec::<f32>().unwrap(),
            vec![0., 0., 1., 1., 1., 1., 0., 0.]
        );
    }

    #[test]
    fn slice_scatter_pads_like_cat() {
        let mut rng = Rng::new(3);
        let g = Tensor::randn(&[2, 5, 3], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let g = g.transpose(1, 2).unwrap(); // [2, 3, 5], strided
        let base = Tensor::zeros(&[2, 3, 9], DType::F32);
        let got = base.slice_scatter(&g, 2, 3).unwrap();
        let z0 = Tensor::zeros(&[2, 3, 3], DType::F32);
        let z1 = Tensor::zeros(&[2, 3, 1], DType::F32);
        let want = Tensor::cat(&[&z0, &g, &z1], 2).unwrap();
        assert_eq!(got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        // Elsewhere `self` is kept, along any dim.
        let ones = Tensor::ones(&[4, 3, 5], DType::F32);
        let got = ones
            .slice_scatter(&g, 0, 1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(got[..15].iter().all(|&v| v == 1.0));
        assert_eq!(&got[15..45], &g.to_vec::<f32>().unwrap()[..]);
        assert!(got[45..].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn slice_scatter_rejects_what_does_not_fit() {
        let base = Tensor::zeros(&[2, 4], DType::F32);
        let src = Tensor::zeros(&[2, 3], DType::F32);
        assert!(base.slice_scatter(&src, 1, 1).is_ok());
        let err = base.slice_scatter(&src, 1, 2).unwrap_err().to_string();
        assert!(err.contains("slice_scatter"), "{err}");
        assert!(base
            .slice_scatter(&Tensor::zeros(&[3, 3], DType::F32), 1, 0)
            .is_err());
        assert!(base
            .slice_scatter(&Tensor::zeros(&[2, 3], DType::F64), 1, 0)
            .is_err());
    }
}
