//! Shape algebra: element counts, contiguous strides, NumPy broadcasting, and
//! PyTorch-style dims that may be negative (`-1` is the last dim).

use crate::{Result, TensorError};

/// Number of elements of a shape (1 for a scalar `[]`).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major (C order) strides, in elements, for `shape`.
///
/// The last dim has stride 1; each earlier dim's stride is the product of the
/// sizes after it. Example: `[2, 3, 4]` → `[12, 4, 1]`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i];
    }
    strides
}

/// The shape two shapes broadcast to, by NumPy's rule: align trailing dims;
/// each pair must be equal or contain a 1, and the result takes the larger.
///
/// # Errors
/// [`TensorError::Broadcast`] naming `op` and both shapes if a pair differs
/// and neither is 1.
pub fn broadcast_shapes(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let l = if i + lhs.len() >= rank {
            lhs[i + lhs.len() - rank]
        } else {
            1
        };
        let r = if i + rhs.len() >= rank {
            rhs[i + rhs.len() - rank]
        } else {
            1
        };
        out[i] = match (l, r) {
            (a, b) if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => {
                return Err(TensorError::Broadcast {
                    op,
                    lhs: lhs.to_vec(),
                    rhs: rhs.to_vec(),
                })
            }
        };
    }
    Ok(out)
}

/// A dimension index that may count from the end, as in PyTorch
/// (`-1` is the last dim). Implemented for the integer types.
pub trait Dim: Copy {
    /// The raw value, for error messages.
    fn raw(self) -> i64;

    /// Resolves the dim against a rank.
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] if it is not in `-rank..rank`.
    fn resolve(self, op: &'static str, shape: &[usize]) -> Result<usize> {
        resolve_dim(op, self.raw(), shape.len(), shape)
    }
}

pub(crate) fn resolve_dim(
    op: &'static str,
    dim: i64,
    rank: usize,
    shape: &[usize],
) -> Result<usize> {
    let r = rank as i64;
    let d = if dim < 0 { dim + r } else { dim };
    if d < 0 || d >= r {
        return Err(TensorError::DimOutOfRange {
            op,
            dim,
            shape: shape.to_vec(),
        });
    }
    Ok(d as usize)
}

macro_rules! impl_dim {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            fn raw(self) -> i64 {
                self as i64
            }
        }
    )*};
}
impl_dim!(usize, isize, i32, i64, u32);

/// Resolves a list of dims, rejecting duplicates; returns them sorted.
pub(crate) fn resolve_dims<D: Dim>(
    op: &'static str,
    dims: &[D],
    shape: &[usize],
) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        let r = d.resolve(op, shape)?;
        if out.contains(&r) {
            return Err(TensorError::Invalid {
                op,
                shape: shape.to_vec(),
                msg: format!("dim {} appears twice", d.raw()),
            });
        }
        out.push(r);
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn broadcast_examples() {
        assert_eq!(
            broadcast_shapes("add", &[2, 1, 4], &[3, 1]).unwrap(),
            vec![2, 3, 4]
        );
        assert_eq!(broadcast_shapes("add", &[], &[5]).unwrap(), vec![5]);
        let err = broadcast_shapes("add", &[2, 3], &[4]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "add: shapes [2, 3] and [4] cannot be broadcast together"
        );
    }

    #[test]
    fn negative_dims_resolve() {
        assert_eq!((-1).resolve("x", &[2, 3]).unwrap(), 1);
        assert!(2usize.resolve("x", &[2, 3]).is_err());
        assert!((-3).resolve("x", &[2, 3]).is_err());
    }

    proptest! {
        // The broadcast rule is symmetric, and broadcasting a shape with itself
        // (or with a shape of ones) leaves it unchanged.
        #[test]
        fn broadcast_rule(a in prop::collection::vec(1usize..4, 0..4), b in prop::collection::vec(1usize..4, 0..4)) {
            let ab = broadcast_shapes("t", &a, &b);
            let ba = broadcast_shapes("t", &b, &a);
            prop_assert_eq!(ab.is_ok(), ba.is_ok());
            if let (Ok(x), Ok(y)) = (ab, ba) {
                prop_assert_eq!(&x, &y);
                prop_assert_eq!(x.len(), a.len().max(b.len()));
                for (i, &s) in x.iter().rev().enumerate() {
                    let ai = a.len().checked_sub(i + 1).map_or(1, |j| a[j]);
                    let bi = b.len().checked_sub(i + 1).map_or(1, |j| b[j]);
                    prop_assert!(s == ai.max(bi) && (ai == s || ai == 1) && (bi == s || bi == 1));
                }
            }
            prop_assert_eq!(broadcast_shapes("t", &a, &a).unwrap(), a.clone());
            let ones = vec![1; a.len()];
            prop_assert_eq!(broadcast_shapes("t", &a, &ones).unwrap(), a);
        }
    }
}
