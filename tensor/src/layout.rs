//! `Layout`: how a tensor's logical elements map onto its flat storage.
//!
//! A layout is a shape, strides (in elements, never bytes) and an offset.
//! Element `[i0, i1, …]` lives at `offset + Σ i_k · strides[k]`. Every view op
//! (permute, transpose, narrow, broadcast, squeeze, unsqueeze, reshape when
//! possible) is a pure function from layout to layout: storage is untouched.
//!
//! ```text
//!   storage: [a b c d e f]          shape [2, 3], strides [3, 1], offset 0
//!              row 0 = a b c        transpose → shape [3, 2], strides [1, 3]
//!              row 1 = d e f        narrow(1, 1, 2) → shape [2, 2], offset 1
//! ```

use crate::shape::{contiguous_strides, numel, Dim};
use crate::{Result, TensorError};

/// Shape, strides and offset of a strided view.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A row-major contiguous layout of `shape` starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// Builds a layout from its parts.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if `shape` and `strides` differ in length.
    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Result<Self> {
        if shape.len() != strides.len() {
            return Err(TensorError::Invalid {
                op: "layout",
                shape,
                msg: format!("{} strides given", strides.len()),
            });
        }
        Ok(Layout {
            shape,
            strides,
            offset,
        })
    }

    /// The sizes of each dim.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The strides of each dim, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Position of element `[0, 0, …]` in storage.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Whether elements are laid out row-major without gaps (any offset).
    /// Dims of size 1 may have any stride.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&s, &st) in self.shape.iter().zip(&self.strides).rev() {
            if s != 1 && st != expected {
                return false;
            }
            expected *= s;
        }
        true
    }

    /// One past the largest storage index this layout touches (0 if empty).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&s, &st)| (s - 1) * st)
                .sum::<usize>()
            + 1
    }

    /// Storage index of the element at `index` (one entry per dim, in range).
    pub fn index_of(&self, index: &[usize]) -> usize {
        self.offset
            + index
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }

    /// Reorders dims: result dim `i` is input dim `dims[i]` (`torch.permute`).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] unless `dims` is a permutation of `0..rank`.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if dims.len() != rank
            || dims
                .iter()
                .any(|&d| d >= rank || std::mem::replace(&mut seen[d], true))
        {
            return Err(TensorError::Invalid {
                op: "permute",
                shape: self.shape.clone(),
                msg: format!("{dims:?} is not a permutation of 0..{rank}"),
            });
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    /// Swaps two dims (`torch.transpose`).
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] for a bad dim.
    pub fn transpose(&self, dim0: impl Dim, dim1: impl Dim) -> Result<Layout> {
        let a = dim0.resolve("transpose", &self.shape)?;
        let b = dim1.resolve("transpose", &self.shape)?;
        let mut out = self.clone();
        out.shape.swap(a, b);
        out.strides.swap(a, b);
        Ok(out)
    }

    /// Keeps `len` entries of `dim` starting at `start` (`torch.narrow`).
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] or [`TensorError::Invalid`] if
    /// `start + len` exceeds the dim's size.
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Layout> {
        let d = dim.resolve("narrow", &self.shape)?;
        if start.checked_add(len).is_none_or(|end| end > self.shape[d]) {
            return Err(TensorError::Invalid {
                op: "narrow",
                shape: self.shape.clone(),
                msg: format!(
                    "range {start}..{} exceeds size {} of dim {d}",
                    start.saturating_add(len),
                    self.shape[d]
                ),
            });
        }
        let mut out = self.clone();
        if len > 0 {
            out.offset += start * self.strides[d];
        }
        out.shape[d] = len;
        Ok(out)
    }

    /// Views the layout as `shape` by NumPy broadcasting: new leading dims
    /// and size-1 dims get stride 0 (`torch.Tensor.expand`).
    ///
    /// # Errors
    /// [`TensorError::Broadcast`] if a dim is neither equal nor 1.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        let err = || TensorError::Broadcast {
            op: "broadcast_to",
            lhs: self.shape.clone(),
            rhs: shape.to_vec(),
        };
        if shape.len() < self.rank() {
            return Err(err());
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for (i, &target) in shape.iter().enumerate().skip(lead) {
            let (s, st) = (self.shape[i - lead], self.strides[i - lead]);
            strides[i] = if s == target {
                st
            } else if s == 1 {
                0
            } else {
                return Err(err());
            };
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Removes `dim`, which must have size 1 (`torch.squeeze(dim)`).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if the dim's size is not 1.
    pub fn squeeze(&self, dim: impl Dim) -> Result<Layout> {
        let d = dim.resolve("squeeze", &self.shape)?;
        if self.shape[d] != 1 {
            return Err(TensorError::Invalid {
                op: "squeeze",
                shape: self.shape.clone(),
                msg: format!("dim {d} has size {}, not 1", self.shape[d]),
            });
        }
        let mut out = self.clone();
        out.shape.remove(d);
        out.strides.remove(d);
        Ok(out)
    }

    /// Inserts a size-1 dim at position `dim` (`torch.unsqueeze`); `dim` may
    /// be `rank` (append) or negative (`-1` appends).
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] outside `-(rank+1)..=rank`.
    pub fn unsqueeze(&self, dim: impl Dim) -> Result<Layout> {
        let d = crate::shape::resolve_dim("unsqueeze", dim.raw(), self.rank() + 1, &self.shape)?;
        let mut out = self.clone();
        let stride = if d < self.rank() {
            self.shape[d] * self.strides[d]
        } else {
            1
        };
        out.shape.insert(d, 1);
        out.strides.insert(d, stride);
        Ok(out)
    }

    /// Tries to view the same elements, in row-major order, as `shape`
    /// without moving data. Returns `None` when the strides make that
    /// impossible (e.g. reshaping a transposed matrix); the caller must copy.
    ///
    /// Works by grouping the old dims into runs that are contiguous with each
    /// other and splitting or merging sizes only inside a run, like PyTorch's
    /// `view`.
    ///
    /// # Errors
    /// [`TensorError::Reshape`] if the element counts differ.
    pub fn reshape_view(&self, shape: &[usize]) -> Result<Option<Layout>> {
        if numel(shape) != self.numel() {
            return Err(TensorError::Reshape {
                from: self.shape.clone(),
                to: shape.to_vec(),
            });
        }
        if self.is_contiguous() {
            return Ok(Some(Layout {
                shape: shape.to_vec(),
                strides: contiguous_strides(shape),
                offset: self.offset,
            }));
        }
        if self.numel() == 0 {
            return Ok(Some(Layout::contiguous(shape)));
        }
        // Drop size-1 dims: they constrain nothing.
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&s, _)| s != 1)
            .map(|(&s, &st)| (s, st))
            .collect();
        // New dims of size 1 constrain nothing either; match the others.
        let new_dims: Vec<usize> = (0..shape.len()).filter(|&k| shape[k] != 1).collect();
        let mut new_strides = vec![1; shape.len()];
        let (mut oi, mut ni) = (0, 0);
        while oi < old.len() {
            // Take a maximal run of old dims [oi, oj) that are contiguous with
            // each other: stride[k] == size[k+1] * stride[k+1].
            let mut oj = oi + 1;
            while oj < old.len() && old[oj - 1].1 == old[oj].0 * old[oj].1 {
                oj += 1;
            }
            let run: usize = old[oi..oj].iter().map(|p| p.0).product();
            // Consume new dims until their product covers this run exactly;
            // inside a run any split of the sizes is a valid view.
            let start = ni;
            let mut prod = 1;
            while ni < new_dims.len() && prod < run {
                prod *= shape[new_dims[ni]];
                ni += 1;
            }
            if prod != run {
                return Ok(None);
            }
            let mut st = old[oj - 1].1;
            for &k in new_dims[start..ni].iter().rev() {
                new_strides[k] = st;
                st *= shape[k];
            }
            oi = oj;
        }
        Ok(Some(Layout {
            shape: shape.to_vec(),
            strides: new_strides,
            offset: self.offset,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Storage indices of every element in row-major order.
    fn walk(l: &Layout) -> Vec<usize> {
        let mut out = Vec::new();
        let mut idx = vec![0; l.rank()];
        for _ in 0..l.numel() {
            out.push(l.index_of(&idx));
            for d in (0..l.rank()).rev() {
                idx[d] += 1;
                if idx[d] < l.shape()[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    }

    #[test]
    fn transpose_and_narrow() {
        let l = Layout::contiguous(&[2, 3]);
        let t = l.transpose(0, 1).unwrap();
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(walk(&t), vec![0, 3, 1, 4, 2, 5]);
        let n = l.narrow(1, 1, 2).unwrap();
        assert_eq!(walk(&n), vec![1, 2, 4, 5]);
        assert!(l.narrow(1, 2, 2).is_err());
    }

    #[test]
    fn reshape_of_transposed_needs_copy() {
        let t = Layout::contiguous(&[2, 3]).transpose(0, 1).unwrap();
        assert_eq!(t.reshape_view(&[6]).unwrap(), None);
        assert!(t.reshape_view(&[3, 2, 1]).unwrap().is_some());
    }

    #[test]
    fn reshape_of_sliced_rows_is_a_view() {
        // Narrowing the last dim breaks contiguity, but splitting the first
        // dim is still a view.
        let l = Layout::contiguous(&[4, 6]).narrow(1, 0, 3).unwrap();
        let v = l.reshape_view(&[2, 2, 3]).unwrap().unwrap();
        assert_eq!(walk(&v), walk(&l));
    }

    fn arb_layout() -> impl Strategy<Value = Layout> {
        prop::collection::vec(1usize..4, 1..5).prop_flat_map(|shape| {
            let rank = shape.len();
            (
                Just(shape),
                Just(()).prop_perturb(move |_, mut rng| {
                    let mut p: Vec<usize> = (0..rank).collect();
                    for i in (1..rank).rev() {
                        p.swap(i, rng.random_range(0..=i));
                    }
                    p
                }),
            )
                .prop_map(|(shape, perm)| Layout::contiguous(&shape).permute(&perm).unwrap())
        })
    }

    proptest! {
        #[test]
        fn permute_then_inverse_is_identity(l in arb_layout(), seed in 0u64..1000) {
            let rank = l.rank();
            let mut perm: Vec<usize> = (0..rank).collect();
            perm.rotate_left((seed as usize) % rank.max(1));
            let mut inv = vec![0; rank];
            for (i, &p) in perm.iter().enumerate() { inv[p] = i; }
            let back = l.permute(&perm).unwrap().permute(&inv).unwrap();
            prop_assert_eq!(back, l);
        }

        #[test]
        fn reshape_view_preserves_order(l in arb_layout(), split in 0usize..3) {
            // Any shape with the same count: flatten, or split the flat order.
            let n = l.numel();
            let target = match split {
                0 => vec![n],
                1 => vec![1, n, 1],
                _ => if n % 2 == 0 { vec![2, n / 2] } else { vec![n] },
            };
            if let Some(v) = l.reshape_view(&target).unwrap() {
                prop_assert_eq!(walk(&v), walk(&l));
            } else {
                prop_assert!(!l.is_contiguous());
            }
        }

        #[test]
        fn broadcast_repeats_elements(shape in prop::collection::vec(1usize..4, 1..4)) {
            let l = Layout::contiguous(&shape);
            let mut big = vec![3];
            big.extend(shape.iter().map(|&s| if s == 1 { 2 } else { s }));
            let b = l.broadcast_to(&big).unwrap();
            let w = walk(&b);
            prop_assert_eq!(w.len(), b.numel());
            // The leading broadcast dim repeats the same block three times.
            let block = w.len() / 3;
            prop_assert_eq!(&w[..block], &w[block..2 * block]);
        }
    }
}
