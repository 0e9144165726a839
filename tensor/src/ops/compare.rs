//! Comparisons that produce boolean masks, and selection by mask.

use crate::dtype::Element;
use crate::ops::binary::{same_dtype, zip_map};
use crate::shape::broadcast_shapes;
use crate::strided::Walk;
use crate::{with_any, DType, Result, Tensor, TensorError};

macro_rules! compare_op {
    ($(#[$doc:meta])* $name:ident, $cmp:tt) => {
        $(#[$doc])*
        ///
        /// Returns a `Bool` tensor of the broadcast shape. Works for every
        /// dtype; both operands must share it.
        ///
        /// # Errors
        /// [`TensorError::Broadcast`] or [`TensorError::DType`].
        pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
            same_dtype(stringify!($name), self, rhs)?;
            // i64 compares as itself: through f64 it would lose every
            // value above 2⁵³ (2⁵³ + 1 == 2⁵³ in f64).
            if self.dtype() == DType::I64 {
                return zip_map::<i64, i64, bool>(stringify!($name), self, rhs, |a, b| a $cmp b);
            }
            with_any!(self.dtype(), |T| zip_map::<T, T, bool>(stringify!($name), self, rhs, |a: T, b: T| {
                a.as_f64() $cmp b.as_f64()
            }))
        }
    };
}

impl Tensor {
    compare_op!(
        /// `lhs == rhs`, elementwise (`torch.eq`).
        eq, ==);
    compare_op!(
        /// `lhs != rhs`, elementwise (`torch.ne`).
        ne, !=);
    compare_op!(
        /// `lhs < rhs`, elementwise (`torch.lt`).
        lt, <);
    compare_op!(
        /// `lhs <= rhs`, elementwise (`torch.le`).
        le, <=);
    compare_op!(
        /// `lhs > rhs`, elementwise (`torch.gt`).
        gt, >);
    compare_op!(
        /// `lhs >= rhs`, elementwise (`torch.ge`).
        ge, >=);

    /// Compares every element with a scalar, `x > c` (`torch.gt(x, c)`).
    ///
    /// # Errors
    /// [`TensorError::DType`] for a bool tensor.
    pub fn gt_scalar(&self, c: f64) -> Result<Tensor> {
        self.gt(&Tensor::full(&[], c, self.dtype()))
    }

    /// Picks `on_true` where `cond` is true, else `on_false`
    /// (`torch.where(cond, on_true, on_false)`). All three broadcast together.
    ///
    /// # Errors
    /// [`TensorError::DType`] if `cond` is not bool or the values' dtypes
    /// differ; [`TensorError::Broadcast`] for incompatible shapes.
    pub fn where_(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "where";
        if cond.dtype() != DType::Bool {
            return Err(TensorError::DType {
                op: OP,
                got: cond.dtype(),
                expected: "bool (the condition)".into(),
            });
        }
        same_dtype(OP, on_true, on_false)?;
        let shape = broadcast_shapes(
            OP,
            &broadcast_shapes(OP, cond.shape(), on_true.shape())?,
            on_false.shape(),
        )?;
        let lc = cond.layout().broadcast_to(&shape)?;
        let lt = on_true.layout().broadcast_to(&shape)?;
        let lf = on_false.layout().broadcast_to(&shape)?;
        let c = cond.typed::<bool>(OP)?;
        with_any!(on_true.dtype(), |T| {
            let (t, f) = (on_true.typed::<T>(OP)?, on_false.typed::<T>(OP)?);
            // SAFETY: every element of each run is written.
            let out = unsafe {
                Walk::new([&lc, &lt, &lf]).collect(|dst, [oc, ot, of], [sc, st, sf]| {
                    for (i, d) in dst.iter_mut().enumerate() {
                        d.write(if c[oc + i * sc] {
                            t[ot + i * st]
                        } else {
                            f[of + i * sf]
                        });
                    }
                })
            };
            Tensor::from_vec(out, &shape)
        })
    }

    /// Replaces elements where `mask` is true by `value`
    /// (`torch.Tensor.masked_fill`). `mask` broadcasts to `self`'s shape
    /// (not the other way round).
    ///
    /// # Errors
    /// [`TensorError::DType`] if `mask` is not bool, [`TensorError::Broadcast`]
    /// if it does not broadcast to `self`.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let mask = mask
            .broadcast_to(self.shape())
            .map_err(|_| TensorError::Broadcast {
                op: "masked_fill",
                lhs: self.shape().to_vec(),
                rhs: mask.shape().to_vec(),
            })?;
        Tensor::where_(&mask, &Tensor::full(&[], value, self.dtype()), self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_masked_fill() {
        let scores = Tensor::zeros(&[3, 3], DType::F32);
        let future = Tensor::triu_mask(3, 3, 1);
        let m = scores.masked_fill(&future, f64::NEG_INFINITY).unwrap();
        let v = m.to_vec::<f32>().unwrap();
        assert_eq!(v[1], f32::NEG_INFINITY);
        assert_eq!(v[3], 0.0);
        assert_eq!(v[8], 0.0);
    }

    #[test]
    fn large_i64_compare_exactly() {
        // Regression: comparing through f64 made 2⁵³ + 1 equal to 2⁵³.
        let a = Tensor::from_vec(vec![(1i64 << 53) + 1, i64::MAX], &[2]).unwrap();
        let b = Tensor::from_vec(vec![1i64 << 53, i64::MAX - 1], &[2]).unwrap();
        assert_eq!(
            a.eq(&b).unwrap().to_vec::<bool>().unwrap(),
            vec![false, false]
        );
        assert_eq!(
            a.gt(&b).unwrap().to_vec::<bool>().unwrap(),
            vec![true, true]
        );
    }

    #[test]
    fn where_broadcasts_three_ways() {
        let c = Tensor::from_vec(vec![true, false], &[2, 1]).unwrap();
        let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap();
        let b = Tensor::full(&[], -1.0, DType::F64);
        let w = Tensor::where_(&c, &a, &b).unwrap();
        assert_eq!(
            w.to_vec::<f64>().unwrap(),
            vec![1.0, 2.0, 3.0, -1.0, -1.0, -1.0]
        );
    }
}
