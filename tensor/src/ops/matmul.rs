//! Matrix products: 2-D, batched, and with broadcast batch dims
//! (`torch.matmul` semantics).
//!
//! Operands are passed to the GEMM kernel with their strides, so transposed
//! or sliced views are read in place (the kernel's packing step absorbs the
//! layout); nothing is copied first. Batches run in parallel when there are
//! several; each GEMM parallelises over blocks of the output itself.

use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::dtype::Element;
use crate::kernels::matmul_bf16::{Elems, GemmBf16, Operand, PackedB};
use crate::kernels::matmul_packed::{gemm_f32, gemm_f64, Gemm};
use crate::shape::broadcast_shapes;
use crate::{DType, Layout, Result, Tensor, TensorError};

/// What a product computes in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Precision {
    /// The operands' own dtype (f32 or f64).
    Native,
    /// bf16-rounded operands, f32 accumulation and result.
    Bf16,
}

/// One operand as the kernel sees it: base offset plus row/column strides.
#[derive(Clone, Copy)]
struct Mat {
    offset: usize,
    rs: isize,
    cs: isize,
}

impl Mat {
    /// The matrix of `layout`'s last two dims, starting at `offset`.
    fn of(layout: &Layout, offset: usize) -> Mat {
        let s = layout.strides();
        Mat {
            offset,
            rs: s[s.len() - 2] as isize,
            cs: s[s.len() - 1] as isize,
        }
    }
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
fn gemm<T: Element>(
    (m, k, n): (usize, usize, usize),
    (a, am): (&[T], Mat),
    (b, bm): (&[T], Mat),
    c: &mut [MaybeUninit<T>],
) {
    debug_assert_eq!(c.len(), m * n);
    // SAFETY: `am`/`bm` come from layouts validated against their storage
    // (`Tensor::from_storage` checks the extent), so every element
    // `offset + i·rs + j·cs` for i < rows, j < cols lies inside `a`/`b`;
    // `c` is exactly m·n contiguous elements (rs = n, cs = 1).
    unsafe {
        let (a, b) = (a.as_ptr().add(am.offset), b.as_ptr().add(bm.offset));
        let (rsa, csa, rsb, csb) = (am.rs, am.cs, bm.rs, bm.cs);
        let (rsc, csc) = (n as isize, 1);
        match T::DTYPE {
            DType::F32 => gemm_f32(Gemm {
                m,
                k,
                n,
                alpha: 1.0,
                a: a.cast::<f32>(),
                rsa,
                csa,
                b: b.cast::<f32>(),
                rsb,
                csb,
                beta: 0.0,
                c: c.as_mut_ptr().cast::<f32>(),
                rsc,
                csc,
            }),
            DType::F64 => gemm_f64(Gemm {
                m,
                k,
                n,
                alpha: 1.0,
                a: a.cast::<f64>(),
                rsa,
                csa,
                b: b.cast::<f64>(),
                rsb,
                csb,
                beta: 0.0,
                c: c.as_mut_ptr().cast::<f64>(),
                rsc,
                csc,
            }),
            _ => unreachable!("matmul checks the dtype first"),
        }
    }
}

/// The product's sizes `(m, k, n)` and, for every batch entry, the lhs and
/// rhs matrices as the kernels see them.
fn batch_mats(
    la: &Layout,
    lb: &Layout,
    out_shape: &[usize],
) -> ((usize, usize, usize), Vec<(Mat, Mat)>) {
    let r = out_shape.len();
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let k = la.shape()[la.rank() - 1];
    let mats = batch_offsets(la)
        .into_iter()
        .zip(batch_offsets(lb))
        .map(|(ao, bo)| (Mat::of(la, ao), Mat::of(lb, bo)))
        .collect();
    ((m, k, n), mats)
}

fn typed_matmul<T: Element>(
    lhs: &Tensor,
    rhs: &Tensor,
    la: &Layout,
    lb: &Layout,
    out_shape: &[usize],
) -> Result<Tensor> {
    let ((m, k, n), mats) = batch_mats(la, lb, out_shape);
    let (a, b) = (lhs.typed::<T>("matmul")?, rhs.typed::<T>("matmul")?);
    // SAFETY: `gemm` writes every element of each m·n chunk.
    unsafe {
        each_product(mats.len(), (m, k, n), out_shape, |i, c| {
            let (am, bm) = mats[i];
            gemm((m, k, n), (a, am), (b, bm), c)
        })
    }
}

/// Builds the output of `batches` products of `m×k · k×n`, each computed by
/// `one(batch, c)` into its contiguous `m×n` chunk `c`; several batches run
/// in parallel when the work is worth it.
///
/// # Safety
///
/// `one` must write every element of the chunk it is given.
unsafe fn each_product<T: Element>(
    batches: usize,
    (m, k, n): (usize, usize, usize),
    out_shape: &[usize],
    one: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Result<Tensor> {
    let len: usize = out_shape.iter().product();
    if m * n == 0 {
        return Tensor::from_vec(vec![T::default(); len], out_shape);
    }
    // No zero fill: every product writes all of its C (beta = 0), and a
    // fill would touch every fresh page of a large output twice.
    // Small batches (a baby model's attention scores) run on the calling
    // thread: handing them to the pool costs more than the products.
    let fmas = batches.saturating_mul(m * n).saturating_mul(k);
    let fill = |out: &mut [MaybeUninit<T>]| {
        if batches > 1 && batches >= crate::parallel::num_threads() && fmas >= 64 * 64 * 64 {
            // One product per thread at a time, each on one thread (a
            // product split between threads packs its operands twice).
            // Fewer products than threads take the loop below, each
            // product spreading over the threads itself.
            crate::parallel::for_each_chunk(out, m * n, |r, c| {
                crate::parallel::serially(|| one(r.start / (m * n), c))
            });
        } else {
            out.chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, c)| one(i, c));
        }
    };
    // SAFETY: `one` writes every element of each m·n chunk (the contract).
    let out = unsafe { crate::uninit::build(len, fill) };
    Tensor::from_vec(out, out_shape)
}

/// The bf16 GEMM's view of one operand: f32 rounded when packed, or bf16.
fn bf16_operand(t: &Tensor, Mat { offset, rs, cs }: Mat) -> Result<Operand> {
    let data = match t.dtype() {
        DType::F32 => Elems::F32(t.typed::<f32>("matmul")?[offset..].as_ptr()),
        DType::BF16 => {
            let s = t.typed::<half::bf16>("matmul")?;
            Elems::Bf16(s[offset..].as_ptr().cast::<u16>())
        }
        other => {
            return Err(TensorError::DType {
                op: "matmul",
                got: other,
                expected: "f32 or bf16".into(),
            })
        }
    };
    Ok(Operand { data, rs, cs })
}

/// The products of [`typed_matmul`] on bf16-rounded operands with f32
/// accumulation ([`crate::kernels::matmul_bf16`]), into an f32 result.
fn bf16_matmul(
    lhs: &Tensor,
    rhs: &Tensor,
    la: &Layout,
    lb: &Layout,
    out_shape: &[usize],
    pre: Option<&PackedB>,
) -> Result<Tensor> {
    let ((m, k, n), mats) = batch_mats(la, lb, out_shape);
    let ops: Vec<(Operand, Operand)> = mats
        .into_iter()
        .map(|(am, bm)| Ok((bf16_operand(lhs, am)?, bf16_operand(rhs, bm)?)))
        .collect::<Result<_>>()?;
    struct Ops(Vec<(Operand, Operand)>);
    // SAFETY: the operands point into `lhs` and `rhs`, which outlive the
    // products and are only read.
    unsafe impl Sync for Ops {}
    impl Ops {
        // A method, so the closure below captures the whole `Sync` wrapper.
        fn get(&self, i: usize) -> (Operand, Operand) {
            self.0[i]
        }
    }
    let ops = Ops(ops);
    // SAFETY: every operand offset comes from a layout validated against its
    // storage, so all elements `i < m, p < k, j < n` are in bounds; C is the
    // chunk's m·n contiguous elements, written whole with beta = 0; `pre`
    // was packed from rhs (the caller's promise), which is immutable.
    unsafe {
        each_product::<f32>(ops.0.len(), (m, k, n), out_shape, |i, c| {
            let (a, b) = ops.get(i);
            let g = GemmBf16 {
                m,
                k,
                n,
                alpha: 1.0,
                a,
                b,
                beta: 0.0,
                c: c.as_mut_ptr().cast::<f32>(),
                rsc: n as isize,
                csc: 1,
            };
            // `pre` was packed from the rhs every product here reads (one
            // 2-D matrix, broadcast over the batch).
            match pre {
                Some(p) => crate::kernels::matmul_bf16::gemm_bf16_prepacked(g, p),
                None => crate::kernels::matmul_bf16::gemm_bf16(g),
            }
        })
    }
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
    /// bf16: `bf16 · bf16` is computed as [`Tensor::matmul_bf16`] (f32
    /// accumulation) and rounded to a bf16 result, as torch does; `f32 ·
    /// bf16` (either order: a bf16 model's weights and f32 activations, an
    /// error in torch) is [`Tensor::matmul_bf16`], with an f32 result.
    ///
    /// # Errors
    /// [`TensorError::MatmulInner`] when the inner dims differ,
    /// [`TensorError::Broadcast`] for incompatible batch dims,
    /// [`TensorError::DType`] unless both are f32, both f64, or at least one
    /// bf16 and the other f32 or bf16,
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
        let (l, r) = (self.dtype(), rhs.dtype());
        if l == DType::BF16 || r == DType::BF16 {
            return self.bf16_product(rhs, None);
        }
        crate::ops::binary::same_dtype("matmul", self, rhs)?;
        if !l.is_compute_float() {
            return Err(TensorError::DType {
                op: "matmul",
                got: l,
                expected: "f32, f64 or bf16".into(),
            });
        }
        self.product(rhs, Precision::Native, None)
    }

    /// Matrix product on bf16-rounded operands with f32 accumulation and an
    /// f32 result: what a matmul inside `torch.autocast("cpu",
    /// dtype=torch.bfloat16)` computes (autocast then rounds the result to
    /// bf16; this keeps it in f32). Each operand may be f32 (rounded to
    /// nearest-even bf16 as it is packed, never copied) or bf16. Shapes and
    /// broadcasting as [`Tensor::matmul`]. On CPUs with AVX512-BF16 it runs
    /// the `vdpbf16ps` kernel, about twice the f32 kernel's FLOP/s; elsewhere
    /// it widens the rounded operands and runs the f32 kernel (same
    /// operands, same accuracy bound: see
    /// [`crate::kernels::matmul_bf16`]).
    ///
    /// # Errors
    /// As [`Tensor::matmul`]; [`TensorError::DType`] for an operand that is
    /// neither f32 nor bf16.
    ///
    /// ```
    /// use kiln_tensor::Tensor;
    /// // 1 + 2⁻⁹ rounds to 1 in bf16, so the product sees 1·1 + 1·1.
    /// let a = Tensor::from_vec(vec![1.0f32 + 1.0 / 512.0, 1.0], &[1, 2])?;
    /// let b = Tensor::from_vec(vec![1.0f32, 1.0], &[2, 1])?;
    /// assert_eq!(a.matmul_bf16(&b)?.to_vec::<f32>()?, vec![2.0]);
    /// # Ok::<(), kiln_tensor::TensorError>(())
    /// ```
    pub fn matmul_bf16(&self, rhs: &Tensor) -> Result<Tensor> {
        for t in [self, rhs] {
            if !matches!(t.dtype(), DType::F32 | DType::BF16) {
                return Err(TensorError::DType {
                    op: "matmul_bf16",
                    got: t.dtype(),
                    expected: "f32 or bf16".into(),
                });
            }
        }
        self.product(rhs, Precision::Bf16, None)
    }

    /// The shape logic of [`Tensor::matmul`], computing at `precision`
    /// (bf16 products read B's panels from `pre`, packed from `rhs`).
    fn product(&self, rhs: &Tensor, precision: Precision, pre: Option<&PackedB>) -> Result<Tensor> {
        const OP: &str = "matmul";
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
        let product = |la: &Layout, lb: &Layout, shape: &[usize]| match (precision, self.dtype()) {
            (Precision::Bf16, _) => bf16_matmul(&a, &b, la, lb, shape, pre),
            (_, DType::F32) => typed_matmul::<f32>(&a, &b, la, lb, shape),
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

/// A 2-D bf16 matrix packed once as the right-hand side of many products:
/// a bf16 model's weight, which every prompt multiplies again. Built by
/// [`Tensor::prepack_rhs`], used by [`Tensor::matmul_prepacked`].
///
/// It holds the matrix (shared, not copied) and its panels in the layout
/// the bf16 GEMM's micro-kernel reads (the same bytes again: the price of
/// not re-packing them on every call; see
/// [`crate::kernels::matmul_bf16::PackedB`]). On a CPU without a bf16 GEMM
/// kernel there are no panels, and the products are plain
/// [`Tensor::matmul`]s. PyTorch has no such type; Intel's extension for it
/// (`ipex.optimize(model, dtype=torch.bfloat16)`) prepacks the weights of a
/// model's linear layers the same way.
#[derive(Clone, Debug)]
pub struct PackedRhs {
    rhs: Tensor,
    packed: Option<Arc<PackedB>>,
}

impl PackedRhs {
    /// The matrix it was packed from.
    pub fn tensor(&self) -> &Tensor {
        &self.rhs
    }

    /// Bytes the packed panels take (0 where there are none).
    pub fn packed_bytes(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| p.bytes())
    }
}

impl Tensor {
    /// Packs this 2-D bf16 matrix `[k, n]` (any strides) for use as the
    /// right-hand side of [`Tensor::matmul_prepacked`].
    ///
    /// # Errors
    /// [`TensorError::DType`] unless bf16, [`TensorError::Invalid`] unless
    /// 2-D.
    ///
    /// ```
    /// use kiln_tensor::{DType, Tensor};
    /// let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?
    ///     .to_dtype(DType::BF16);
    /// let packed = w.prepack_rhs()?;
    /// let x = Tensor::from_vec(vec![1.0f32, 1.0, 0.5, -1.0], &[2, 2])?;
    /// // The same bits as x.matmul(&w), without re-packing w.
    /// assert_eq!(
    ///     x.matmul_prepacked(&packed)?.to_vec::<f32>()?,
    ///     x.matmul(&w)?.to_vec::<f32>()?
    /// );
    /// # Ok::<(), kiln_tensor::TensorError>(())
    /// ```
    pub fn prepack_rhs(&self) -> Result<PackedRhs> {
        const OP: &str = "prepack_rhs";
        if self.dtype() != DType::BF16 {
            return Err(TensorError::DType {
                op: OP,
                got: self.dtype(),
                expected: "bf16".into(),
            });
        }
        if self.rank() != 2 {
            return Err(TensorError::Invalid {
                op: OP,
                shape: self.shape().to_vec(),
                msg: "the right-hand side of a matrix product is 2-D [k, n]".into(),
            });
        }
        let (k, n) = (self.shape()[0], self.shape()[1]);
        let b = bf16_operand(self, Mat::of(self.layout(), self.layout().offset()))?;
        let isa = crate::kernels::isa::Isa::detect();
        // SAFETY: the layout was validated against the storage, so every
        // element (p < k, j < n) is in bounds; a tensor's storage is
        // immutable while shared (writes copy first).
        let packed = unsafe { PackedB::new(isa, &b, k, n) }.map(Arc::new);
        Ok(PackedRhs {
            rhs: self.clone(),
            packed,
        })
    }

    /// `self.matmul(rhs.tensor())`, the same bits, reading the packed
    /// panels instead of packing the matrix again (see [`PackedRhs`]).
    /// Shapes and broadcasting as [`Tensor::matmul`] with a 2-D rhs:
    /// `[..., m, k] · [k, n] → [..., m, n]`.
    ///
    /// # Errors
    /// As [`Tensor::matmul`].
    pub fn matmul_prepacked(&self, rhs: &PackedRhs) -> Result<Tensor> {
        self.bf16_product(&rhs.rhs, rhs.packed.as_deref())
    }

    /// [`Tensor::matmul`] with a bf16 operand (B's panels from `pre`, if
    /// packed from `rhs`): f32 accumulation, rounded to a bf16 result when
    /// both operands are bf16, as torch does.
    fn bf16_product(&self, rhs: &Tensor, pre: Option<&PackedB>) -> Result<Tensor> {
        let out = self.product(rhs, Precision::Bf16, pre)?;
        Ok(if self.dtype() == rhs.dtype() {
            out.to_dtype(DType::BF16)
        } else {
            out
        })
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

    /// `x.matmul_prepacked(&w.prepack_rhs())` is `x.matmul(&w)` bit for
    /// bit: f32 and bf16 x, merged and unmerged batch dims, a transposed
    /// weight view, a decode row (gemv), and K blocks past one.
    #[test]
    fn prepacked_products_equal_matmul() {
        let mut rng = crate::Rng::new(3);
        let w = Tensor::randn(&[800, 300], 0.0, 1.0, DType::F32, &mut rng)
            .unwrap()
            .to_dtype(DType::BF16);
        let wt = Tensor::randn(&[300, 800], 0.0, 1.0, DType::F32, &mut rng)
            .unwrap()
            .to_dtype(DType::BF16)
            .t()
            .unwrap();
        let x = Tensor::randn(&[2, 70, 800], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let xs = [
            x.clone(),
            x.to_dtype(DType::BF16),
            x.transpose(0, 1).unwrap(),
            x.narrow(0, 0, 1)
                .unwrap()
                .narrow(1, 0, 1)
                .unwrap()
                .reshape(&[800])
                .unwrap(),
        ];
        for w in [&w, &wt] {
            let p = w.prepack_rhs().unwrap();
            assert!(p.tensor().shape() == w.shape());
            for x in &xs {
                let (got, want) = (x.matmul_prepacked(&p).unwrap(), x.matmul(w).unwrap());
                assert_eq!(got.shape(), want.shape());
                assert_eq!(got.dtype(), want.dtype());
                assert_eq!(
                    got.to_dtype(DType::F32).to_vec::<f32>().unwrap(),
                    want.to_dtype(DType::F32).to_vec::<f32>().unwrap(),
                    "x {:?} {:?}",
                    x.shape(),
                    x.dtype()
                );
            }
        }
    }

    #[test]
    fn prepacking_needs_a_2d_bf16_matrix() {
        let f = Tensor::zeros(&[4, 4], DType::F32);
        assert!(matches!(f.prepack_rhs(), Err(TensorError::DType { .. })));
        let b = Tensor::zeros(&[2, 4, 4], DType::BF16);
        assert!(matches!(b.prepack_rhs(), Err(TensorError::Invalid { .. })));
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
