//! The tensor crate's error type. Every variant names the op and the shapes
//! involved, so a message alone tells the user what went wrong.

use crate::DType;

/// Errors returned by tensor operations.
///
/// Shapes are printed as `[2, 3]`. The `op` field is the PyTorch-style name of
/// the operation that failed (`matmul`, `reshape`, `softmax`, …).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// Two shapes could not be broadcast together (NumPy rules).
    #[error("{op}: shapes {lhs:?} and {rhs:?} cannot be broadcast together")]
    Broadcast {
        /// The operation.
        op: &'static str,
        /// Left shape.
        lhs: Vec<usize>,
        /// Right shape.
        rhs: Vec<usize>,
    },
    /// Matrix product with mismatched inner dimensions.
    #[error("{op}: lhs {lhs:?} · rhs {rhs:?}: inner dims {k_lhs} ≠ {k_rhs}")]
    MatmulInner {
        /// The operation.
        op: &'static str,
        /// Left shape.
        lhs: Vec<usize>,
        /// Right shape.
        rhs: Vec<usize>,
        /// Inner size of the left operand.
        k_lhs: usize,
        /// Inner size of the right operand.
        k_rhs: usize,
    },
    /// A shape that does not fit what the op requires.
    #[error("{op}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The shape the op needed.
        expected: Vec<usize>,
        /// The shape it was given.
        got: Vec<usize>,
    },
    /// A dimension index outside `-rank..rank`.
    #[error("{op}: dim {dim} is out of range for a tensor of shape {shape:?} (rank {})", shape.len())]
    DimOutOfRange {
        /// The operation.
        op: &'static str,
        /// The dim as given (may be negative).
        dim: i64,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// An index (into a dim, or an element) outside its range.
    #[error(
        "{op}: index {index} is out of range for size {size} along dim {dim} of shape {shape:?}"
    )]
    IndexOutOfRange {
        /// The operation.
        op: &'static str,
        /// The offending index.
        index: i64,
        /// The size of the dim.
        size: usize,
        /// The dim indexed.
        dim: usize,
        /// The shape indexed.
        shape: Vec<usize>,
    },
    /// The number of elements does not match the shape.
    #[error("{op}: {len} elements cannot fill shape {shape:?} ({} needed)", shape.iter().product::<usize>())]
    ElementCount {
        /// The operation.
        op: &'static str,
        /// Elements given.
        len: usize,
        /// The requested shape.
        shape: Vec<usize>,
    },
    /// A reshape to a shape with a different number of elements.
    #[error("reshape: cannot reshape {from:?} ({} elements) into {to:?} ({} elements)", from.iter().product::<usize>(), to.iter().product::<usize>())]
    Reshape {
        /// Source shape.
        from: Vec<usize>,
        /// Requested shape.
        to: Vec<usize>,
    },
    /// The op does not support this dtype (or two operands' dtypes differ).
    #[error("{op}: dtype {got} is not supported here (expected {expected})")]
    DType {
        /// The operation.
        op: &'static str,
        /// The dtype given.
        got: DType,
        /// What the op accepts.
        expected: String,
    },
    /// Any other invalid argument, described in words.
    #[error("{op}: {msg} (shape {shape:?})")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// The shape of the input involved.
        shape: Vec<usize>,
        /// What was wrong.
        msg: String,
    },
}

/// Shorthand for results of tensor operations.
pub type Result<T> = std::result::Result<T, TensorError>;
