//! Matrix products: 2-D, batched, and with broadcast batch dims
//! (`torch.matmul` semantics).
//!
//! Operands are passed to the GEMM kernel with their strides, so transposed
//! or sliced views are read in place (the kernel's packing step absorbs the
//! layout); nothing is copied first. Batches run in parallel when there are
//! several; each GEMM parallelises over blocks of the output itself.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::dtype::Element;
use crate::shape::broadcast_shapes;
use crate::{DType, Layout, Result, Tensor, TensorError};

/// One operand as the kernel sees it: base offset plus row/column strides.
#[derive(Clone, Copy)]
struct Mat {
    offset: usize,
    rs: isize,
    cs: isize,
}

/// Storage offsets of every batch entry of a layout whose last two dims are
/// the matrix, in row-major order of the batch dims.
fn batch_offsets(layout: &Layout) -> Vec<usize> {
    let r = layout.rank();
    let bshape = &layout.shape()[..r - 2];
    let bstrides = &layout.strides()[..r - 2];
    let n: usize = bshape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; bshape.len()];
    for _ in 0..n {
        out.push(layout.offset() + idx.iter().zip(bstrides).map(|(i, s)| i * s).sum::<usize>());
        for d in (0..bshape.len()).rev() {
            idx[d] += 1;
            if idx[d] < bshape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Runs the kernel for one `m×k · k×n` product into a contiguous `m×n`
/// block. `c` may be uninitialised: with beta = 0 the kernels write every
/// element without reading it.
#[allow(clippy::too_many_arguments)]
fn gemm<T: Element>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    am: Mat,
    b: &[T],
    bm: Mat,
    c: &mut [MaybeUninit<T>],
) {
    debug_assert_eq!(c.len(), m * n);
    // SAFETY: `am`/`bm` come from layouts validated against their storage
    // (`Tensor::from_storage` checks the extent), so every element
    // `offset + i·rs + j·cs` for i < rows, j < cols lies inside `a`/`b`;
    // `c` is exactly m·n contiguous elements (rs = n, cs = 1).
    unsafe {
        match T::DTYPE {
            DType::F32 => crate::kernels::matmul_packed::gemm_f32(
                m,
                k,
                n,
                1.0,
                a.as_ptr().add(am.offset) as *const f32,
                am.rs,
                am.cs,
                b.as_ptr().add(bm.offset) as *const f32,
                bm.rs,
                bm.cs,
                0.0,
                c.as_mut_ptr().cast::<f32>(),
                n as isize,
                1,
            ),
            DType::F64 => crate::kernels::matmul_packed::gemm_f64(
                m,
                k,
                n,
                1.0,
                a.as_ptr().add(am.offset) as *const f64,
                am.rs,
                am.cs,
                b.as_ptr().add(bm.offset) as *const f64,
                bm.rs,
                bm.cs,
                0.0,
                c.as_mut_ptr().cast::<f64>(),
                n as isize,
                1,
            ),
            _ => unreachable!("matmul checks the dtype first"),
        }
    }
}

fn typed_matmul<T: Element>(
    lhs: &Tensor,
    rhs: &Tensor,
    la: &Layout,
    lb: &Layout,
    out_shape: &[usize],
) -> Result<Tensor> {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = la.shape()[la.rank() - 1];
    let (a, b) = (lhs.typed::<T>("matmul")?, rhs.typed::<T>("matmul")?);
    let aoffs = batch_offsets(la);
    let boffs = batch_offsets(lb);
    let st = |l: &Layout| {
        let s = l.strides();
        (s[s.len() - 2] as isize, s[s.len() - 1] as isize)
    };
    let (ars, acs) = st(la);
    let (brs, bcs) = st(lb);
    let len: usize = out_shape.iter().product();
    if m * n == 0 {
        return Tensor::from_vec(vec![T::default(); len], out_shape);
    }
    // No zero fill: every product writes all of its C (beta = 0), and a
    // fill would touch every fresh page of a large output twice.
    let one = |(i, c): (usize, &mut [MaybeUninit<T>])| {
        let am = Mat {
            offset: aoffs[i],
            rs: ars,
            cs: acs,
        };
        let bm = Mat {
            offset: boffs[i],
            rs: brs,
            cs: bcs,
        };
        gemm(m, k, n, a, am, b, bm, c);
    };
    // Small batches (a baby model's attention scores) run on the calling
    // thread: handing them to the pool costs more than the products.
    let fmas = aoffs.len().saturating_mul(m * n).saturating_mul(k);
    // SAFETY: `one` writes every element of each m·n chunk (see `gemm`).
    let out = unsafe {
        crate::uninit::build(len, |out| {
            if aoffs.len() > 1 && fmas >= 64 * 64 * 64 {
                crate::parallel::install(|| out.par_chunks_mut(m * n).enumerate().for_each(one));
            } else {
                out.chunks_mut(m * n).enumerate().for_each(one);
            }
        })
    };
    Tensor::from_vec(out, out_shape)
}

impl Tensor {
    /// Matrix product with `torch.matmul` semantics.
    ///
    /// # Shapes
    /// - `[m, k] · [k, n] → [m, n]`
    /// - `[..., m, k] · [..., k, n] → [..., m, n]`, batch dims broadcast
    ///   (`[b, 1, m, k] · [h, k, n] → [b, h, m, n]`)
    /// - a 1-D lhs `[k]` is treated as `[1, k]`, a 1-D rhs `[k]` as `[k, 1]`,
    ///   and that dim is removed from the result.
    ///
    /// Strided operands (transposes, slices, broadcast views) are read
    /// through their strides without a copy.
    ///
    /// # Errors
    /// [`TensorError::MatmulInner`] when the inner dims differ,
    /// [`TensorError::Broadcast`] for incompatible batch dims,
    /// [`TensorError::DType`] unless both are f32 or both f64,
    /// [`TensorError::Invalid`] for rank-0 operands.
    ///
    /// ```
    /// use kiln_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2])?;
    /// let i = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0], &[2, 2])?;
    /// assert_eq!(a.matmul(&i)?.to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 4.0]);
    /// // a · aᵀ reads the transposed view in place.
    /// assert_eq!(a.matmul(&a.t()?)?.to_vec::<f32>()?, vec![5.0, 11.0, 11.0, 25.0]);
    /// # Ok::<(), kiln_tensor::TensorError>(())
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        const OP: &str = "matmul";
        crate::ops::binary::same_dtype(OP, self, rhs)?;
        if !self.dtype().is_compute_float() {
            return Err(TensorError::DType {
                op: OP,
                got: self.dtype(),
                expected: "f32 or f64".into(),
            });
        }
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(TensorError::Invalid {
                op: OP,
                shape: if self.rank() == 0 {
                    self.shape()
                } else {
                    rhs.shape()
                }
                .to_vec(),
                msg: "both operands need at least one dim".into(),
            });
        }
        let a = if self.rank() == 1 {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        let b = if rhs.rank() == 1 {
            rhs.unsqueeze(1)?
        } else {
            rhs.clone()
        };
        let (ar, br) = (a.rank(), b.rank());
        let (m, ka) = (a.shape()[ar - 2], a.shape()[ar - 1]);
        let (kb, n) = (b.shape()[br - 2], b.shape()[br - 1]);
        if ka != kb {
            return Err(TensorError::MatmulInner {
                op: OP,
                lhs: self.shape().to_vec(),
                rhs: rhs.shape().to_vec(),
                k_lhs: ka,
                k_rhs: kb,
            });
        }
        let batch =
            broadcast_shapes(OP, &a.shape()[..ar - 2], &b.shape()[..br - 2]).map_err(|_| {
                TensorError::Broadcast {
                    op: OP,
                    lhs: self.shape().to_vec(),
                    rhs: rhs.shape().to_vec(),
                }
            })?;
        // A batch of lhs matrices times one rhs matrix (activations times
        // a weight): when the lhs batch and row dims merge into one strided
        // dim, it is a single `[batch·m, k] · [k, n]` product, which the
        // packed kernel blocks far better than `batch` products of m rows.
        let product = |la: &Layout, lb: &Layout, shape: &[usize]| match self.dtype() {
            DType::F32 => typed_matmul::<f32>(&a, &b, la, lb, shape),
            _ => typed_matmul::<f64>(&a, &b, la, lb, shape),
        };
        if br == 2 && ar > 2 && ka > 0 {
            let rows = a.numel() / ka;
            if let Some(la) = a.layout().reshape_view(&[rows, ka])? {
                let mut out_shape = batch.clone();
                out_shape.extend([m, n]);
                let out = product(&la, b.layout(), &[rows, n])?.reshape(&out_shape)?;
                return if rhs.rank() == 1 {
                    out.squeeze(-1)
                } else {
                    Ok(out)
                };
            }
        }
        let mut a_shape = batch.clone();
        a_shape.extend([m, ka]);
        let mut b_shape = batch.clone();
        b_shape.extend([kb, n]);
        let mut out_shape = batch;
        out_shape.extend([m, n]);
        let la = a.layout().broadcast_to(&a_shape)?;
        let lb = b.layout().broadcast_to(&b_shape)?;
        let out = product(&la, &lb, &out_shape)?;
        let out = if self.rank() == 1 {
            out.squeeze(-2)?
        } else {
            out
        };
        if rhs.rank() == 1 {
            out.squeeze(-1)
        } else {
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_dim_error_names_shapes() {
        let a = Tensor::zeros(&[2, 3], DType::F32);
        let b = Tensor::zeros(&[4, 5], DType::F32);
        assert_eq!(
            a.matmul(&b).unwrap_err().to_string(),
            "matmul: lhs [2, 3] · rhs [4, 5]: inner dims 3 ≠ 4"
        );
    }

    #[test]
    fn vector_cases_drop_the_added_dim() {
        let m = Tensor::from_vec(vec![1.0f64, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
        let v = Tensor::from_vec(vec![1.0f64, 1., 1.], &[3]).unwrap();
        let mv = m.matmul(&v).unwrap();
        assert_eq!(mv.shape(), &[2]);
        assert_eq!(mv.to_vec::<f64>().unwrap(), vec![6.0, 15.0]);
        let w = Tensor::from_vec(vec![1.0f64, 1.], &[2]).unwrap();
        assert_eq!(
            w.matmul(&m).unwrap().to_vec::<f64>().unwrap(),
            vec![5.0, 7.0, 9.0]
        );
    }

    #[test]
    fn batch_dims_broadcast() {
        let a = Tensor::ones(&[2, 1, 3, 4], DType::F32);
        let b = Tensor::ones(&[5, 4, 2], DType::F32);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[2, 5, 3, 2]);
        assert!(c.to_vec::<f32>().unwrap().iter().all(|&v| v == 4.0));
    }
}
