//! Elementwise functions of two tensors, with NumPy broadcasting.
//!
//! # Broadcasting
//! Shapes are aligned at their last dim; each pair of sizes must be equal or
//! one of them 1, and the output takes the larger (`[2, 1, 4] ⊕ [3, 1] →
//! [2, 3, 4]`). Broadcasting is a stride-0 view: nothing is copied.

use std::mem::MaybeUninit;

use crate::dtype::{Element, FloatElement};
use crate::kernels::fastmath::{self, Binary, Isa};
use crate::shape::broadcast_shapes;
use crate::strided::{Walk, PAR_CHUNK, PAR_UNIT};
use crate::{Result, Tensor, TensorError};

/// Checks that both operands have the same dtype.
pub(crate) fn same_dtype(op: &'static str, lhs: &Tensor, rhs: &Tensor) -> Result<()> {
    if lhs.dtype() != rhs.dtype() {
        return Err(TensorError::DType {
            op,
            got: rhs.dtype(),
            expected: format!("{} (the dtype of the left operand)", lhs.dtype()),
        });
    }
    Ok(())
}

/// Broadcasts `lhs` and `rhs` together and applies `f` elementwise.
pub(crate) fn zip_map<A: Element, B: Element, O: Element>(
    op: &'static str,
    lhs: &Tensor,
    rhs: &Tensor,
    f: impl Fn(A, B) -> O + Sync,
) -> Result<Tensor> {
    let shape = broadcast_shapes(op, lhs.shape(), rhs.shape())?;
    let (a, b) = (lhs.typed::<A>(op)?, rhs.typed::<B>(op)?);
    let la = lhs.layout().broadcast_to(&shape)?;
    let lb = rhs.layout().broadcast_to(&shape)?;
    // SAFETY: every branch writes each element of the run.
    let out = unsafe {
        Walk::new([&la, &lb]).collect(|dst: &mut [MaybeUninit<O>], [oa, ob], [sa, sb]| {
            let n = dst.len();
            if sa == 1 && sb == 1 {
                for ((d, &x), &y) in dst.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                    d.write(f(x, y));
                }
            } else if sa == 1 && sb == 0 {
                let y = b[ob];
                for (d, &x) in dst.iter_mut().zip(&a[oa..oa + n]) {
                    d.write(f(x, y));
                }
            } else if sa == 0 && sb == 1 {
                let x = a[oa];
                for (d, &y) in dst.iter_mut().zip(&b[ob..ob + n]) {
                    d.write(f(x, y));
                }
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    d.write(f(a[oa + i * sa], b[ob + i * sb]));
                }
            }
        })
    };
    Tensor::from_vec(out, &shape)
}

/// A float binary op: checks dtypes, dispatches on f32/f64.
///
/// The ops are closures, not `fn` pointers, so each is inlined into its own
/// copy of the loops and vectorised (a pointer would be an indirect call per
/// element).
/// f32 ops with a kernel in `kernels::fastmath` (`fast`) run that, compiled
/// for the CPU's widest vectors.
fn float_zip(
    op: &'static str,
    lhs: &Tensor,
    rhs: &Tensor,
    fast: Option<Binary>,
    f32op: impl Fn(f32, f32) -> f32 + Sync,
    f64op: impl Fn(f64, f64) -> f64 + Sync,
) -> Result<Tensor> {
    same_dtype(op, lhs, rhs)?;
    match lhs.dtype() {
        crate::DType::F32 if fast.is_some() => {
            let shape = broadcast_shapes(op, lhs.shape(), rhs.shape())?;
            let (a, b) = (lhs.typed::<f32>(op)?, rhs.typed::<f32>(op)?);
            let la = lhs.layout().broadcast_to(&shape)?;
            let lb = rhs.layout().broadcast_to(&shape)?;
            let (isa, fast) = (Isa::detect(), fast.expect("checked"));
            // SAFETY: `fastmath::binary` writes every element of the run.
            let out = unsafe {
                Walk::new([&la, &lb]).collect(|dst, [oa, ob], [sa, sb]| {
                    fastmath::binary(isa, fast, &a[oa..], sa, &b[ob..], sb, dst)
                })
            };
            Tensor::from_vec(out, &shape)
        }
        crate::DType::F32 => zip_map::<f32, f32, f32>(op, lhs, rhs, f32op),
        crate::DType::F64 => zip_map::<f64, f64, f64>(op, lhs, rhs, f64op),
        other => Err(TensorError::DType {
            op,
            got: other,
            expected: "f32 or f64".into(),
        }),
    }
}

fn nan_max<T: FloatElement>(a: T, b: T) -> T {
    // torch.maximum propagates NaN from either side.
    if a.is_nan() || b.is_nan() {
        T::nan()
    } else if a >= b {
        a
    } else {
        b
    }
}

fn nan_min<T: FloatElement>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        T::nan()
    } else if a <= b {
        a
    } else {
        b
    }
}

macro_rules! binary_op {
    ($(#[$doc:meta])* $name:ident, $fast:expr, |$a:ident, $b:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// Broadcasts per NumPy rules (see the module docs).
        ///
        /// # Errors
        /// [`TensorError::Broadcast`] for incompatible shapes,
        /// [`TensorError::DType`] if the dtypes differ or are not f32/f64.
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            float_zip(stringify!($name), self, rhs, $fast, |$a: f32, $b: f32| $body, |$a: f64, $b: f64| $body)
        }
    };
}

impl Tensor {
    /// `f(a, b)` for every pair of elements of `self` and `other`, both
    /// `T` tensors (`f32` or `f64`), broadcast together as NumPy does: a
    /// new contiguous tensor of the broadcast shape. With [`Tensor::map`],
    /// what a custom op's backward needs (`g · f'(x)` in one pass).
    ///
    /// ```
    /// use kiln_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1f64, 2.0, 3.0], &[3])?;
    /// let g = Tensor::from_vec(vec![0.5f64], &[1])?; // broadcast
    /// let y = x.zip_map(&g, |x: f64, g: f64| g * 2.0 * x)?;
    /// assert_eq!(y.to_vec::<f64>()?, vec![1.0, 2.0, 3.0]);
    /// # Ok::<(), kiln_tensor::TensorError>(())
    /// ```
    ///
    /// # Errors
    /// [`TensorError::DType`] when either tensor does not hold `T`;
    /// [`TensorError::Broadcast`] when the shapes do not broadcast.
    pub fn zip_map<T: FloatElement>(
        &self,
        other: &Tensor,
        f: impl Fn(T, T) -> T + Sync,
    ) -> Result<Tensor> {
        zip_map("zip_map", self, other, f)
    }

    binary_op!(
        /// `lhs + rhs` (`torch.add`).
        add, Some(Binary::Add), |a, b| a + b);
    binary_op!(
        /// `lhs − rhs` (`torch.sub`).
        sub, Some(Binary::Sub), |a, b| a - b);
    binary_op!(
        /// `lhs · rhs`, elementwise (`torch.mul`).
        mul, Some(Binary::Mul), |a, b| a * b);
    binary_op!(
        /// `lhs / rhs`, elementwise (`torch.div`).
        div, Some(Binary::Div), |a, b| a / b);
    binary_op!(
        /// Elementwise maximum, NaN-propagating (`torch.maximum`).
        maximum, None, |a, b| nan_max(a, b));
    binary_op!(
        /// Elementwise minimum, NaN-propagating (`torch.minimum`).
        minimum, None, |a, b| nan_min(a, b));
    binary_op!(
        /// `lhs ^ rhs`, elementwise (`torch.pow(lhs, rhs)`).
        pow, None, |a, b| a.powf(b));
}

impl Tensor {
    /// `self += rhs` (`torch.Tensor.add_`), with `rhs` broadcast to
    /// `self`'s shape.
    ///
    /// When `self` is the only owner of its whole, contiguous buffer (a
    /// fresh result, an accumulated gradient) the sum is written in place;
    /// otherwise `self` becomes `self + rhs`, a new tensor, and whatever
    /// shared the old buffer never sees the change. Either way the bits equal
    /// those of [`Tensor::add`].
    ///
    /// # Errors
    /// [`TensorError::Broadcast`] if `rhs` does not broadcast to `self`'s
    /// shape, [`TensorError::DType`] if the dtypes differ or are not f32/f64.
    pub fn add_assign(&mut self, rhs: &Tensor) -> Result<()> {
        const OP: &str = "add_assign";
        same_dtype(OP, self, rhs)?;
        let src = rhs
            .layout()
            .broadcast_to(self.shape())
            .map_err(|_| TensorError::Broadcast {
                op: OP,
                lhs: self.shape().to_vec(),
                rhs: rhs.shape().to_vec(),
            })?;
        if !self.owns_buffer() {
            *self = self.add(rhs)?;
            return Ok(());
        }
        let region = crate::Layout::contiguous(self.shape());
        self.add_in_place(OP, &region, rhs, &src)
    }

    /// Adds `src` (viewed through `src_layout`) into the elements of `self`
    /// that `region` picks out, in place and in parallel. `region` indexes a
    /// contiguous buffer of `self`'s shape and has `src_layout`'s shape; no
    /// two of its positions may name the same element. A `self` that shares
    /// or only views its buffer is first copied (copy-on-write).
    pub(crate) fn add_in_place(
        &mut self,
        op: &'static str,
        region: &crate::Layout,
        src: &Tensor,
        src_layout: &crate::Layout,
    ) -> Result<()> {
        fn run<T: FloatElement>(dst: &mut [T], from: &[T], walk: &Walk<2>, numel: usize) {
            let dst = crate::parallel::SharedPtr(dst.as_mut_ptr());
            let units = numel.div_ceil(PAR_UNIT);
            crate::parallel::for_each_range(units, PAR_CHUNK / PAR_UNIT, |r| {
                walk.for_runs(
                    r.start * PAR_UNIT,
                    r.end * PAR_UNIT,
                    |[o, i], len, [so, si]| {
                        // SAFETY: `region` maps distinct positions to distinct
                        // elements inside the buffer, and the ranges handed out
                        // are disjoint, so each element is written by one thread.
                        unsafe {
                            let d = dst.get().add(o);
                            if so == 1 && si == 1 {
                                let d = std::slice::from_raw_parts_mut(d, len);
                                for (x, &y) in d.iter_mut().zip(&from[i..i + len]) {
                                    *x += y;
                                }
                            } else {
                                for e in 0..len {
                                    *d.add(e * so) += from[i + e * si];
                                }
                            }
                        }
                    },
                );
            });
        }
        same_dtype(op, self, src)?;
        let walk = Walk::new([region, src_layout]);
        let numel = src_layout.numel();
        match self.dtype() {
            crate::DType::F32 => {
                let from = src.typed::<f32>(op)?;
                run(self.data_mut::<f32>()?, from, &walk, numel);
            }
            crate::DType::F64 => {
                let from = src.typed::<f64>(op)?;
                run(self.data_mut::<f64>()?, from, &walk, numel);
            }
            other => {
                return Err(TensorError::DType {
                    op,
                    got: other,
                    expected: "f32 or f64".into(),
                })
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_add_row_and_column() {
        let col = Tensor::from_vec(vec![10.0f32, 20.0], &[2, 1]).unwrap();
        let row = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        let s = col.add(&row).unwrap();
        assert_eq!(s.shape(), &[2, 3]);
        assert_eq!(
            s.to_vec::<f32>().unwrap(),
            vec![11.0, 12.0, 13.0, 21.0, 22.0, 23.0]
        );
    }

    #[test]
    fn mismatched_shapes_name_both() {
        let a = Tensor::zeros(&[2, 3], crate::DType::F32);
        let b = Tensor::zeros(&[4], crate::DType::F32);
        let e = a.mul(&b).unwrap_err().to_string();
        assert_eq!(e, "mul: shapes [2, 3] and [4] cannot be broadcast together");
    }

    #[test]
    fn mixed_dtypes_are_rejected() {
        let a = Tensor::zeros(&[2], crate::DType::F32);
        let b = Tensor::zeros(&[2], crate::DType::F64);
        assert!(matches!(a.add(&b), Err(TensorError::DType { .. })));
    }

    #[test]
    fn maximum_propagates_nan() {
        let a = Tensor::from_vec(vec![1.0f32, f32::NAN], &[2]).unwrap();
        let b = Tensor::from_vec(vec![f32::NAN, 0.0], &[2]).unwrap();
        assert!(a
            .maximum(&b)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_nan()));
    }

    fn addr(t: &Tensor) -> usize {
        t.as_slice::<f32>().unwrap().as_ptr() as usize
    }

    #[test]
    fn add_assign_is_add_in_place() {
        let mut rng = crate::Rng::new(5);
        let a = Tensor::randn(&[3, 70_000], 0.0, 1.0, crate::DType::F32, &mut rng).unwrap();
        let b = Tensor::randn(&[3, 70_000], 0.0, 1.0, crate::DType::F32, &mut rng).unwrap();
        let want = a.add(&b).unwrap().to_vec::<f32>().unwrap();
        // An owned buffer is written in place (big enough to run in parallel).
        let mut x = a.add_scalar(0.0).unwrap();
        let before = addr(&x);
        x.add_assign(&b).unwrap();
        assert_eq!(addr(&x), before);
        assert_eq!(x.to_vec::<f32>().unwrap(), want);
        // A shared buffer is not: the other owner keeps its values.
        let mut y = a.clone();
        y.add_assign(&b).unwrap();
        assert_eq!(y.to_vec::<f32>().unwrap(), want);
        assert_ne!(a.to_vec::<f32>().unwrap(), want);
        // Broadcast and strided right-hand sides, f64 too.
        let row = Tensor::randn(&[5], 0.0, 1.0, crate::DType::F64, &mut rng).unwrap();
        let m = Tensor::randn(&[5, 4], 0.0, 1.0, crate::DType::F64, &mut rng).unwrap();
        let mut z = Tensor::zeros(&[4, 5], crate::DType::F64);
        z.add_assign(&row).unwrap();
        z.add_assign(&m.t().unwrap()).unwrap();
        let want = row.add(&m.t().unwrap()).unwrap();
        assert_eq!(z.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
    }

    #[test]
    fn add_assign_rejects_what_does_not_fit() {
        let mut x = Tensor::zeros(&[2, 3], crate::DType::F32);
        let wide = Tensor::zeros(&[4, 3], crate::DType::F32);
        assert!(matches!(
            x.add_assign(&wide),
            Err(TensorError::Broadcast { .. })
        ));
        let f64s = Tensor::zeros(&[2, 3], crate::DType::F64);
        assert!(matches!(
            x.add_assign(&f64s),
            Err(TensorError::DType { .. })
        ));
        assert_eq!(x.to_vec::<f32>().unwrap(), vec![0.0; 6]);
    }
}
