//! The flat buffer behind a tensor. Many tensors (views) may share one
//! storage through an `Arc`; a [`Layout`](crate::Layout) says which elements a
//! tensor sees.

use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};

use crate::DType;

/// A typed, flat buffer of elements: owned, or borrowed read-only from a
/// shared byte buffer such as a memory-mapped file ([`Storage::mapped`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// IEEE half elements.
    F16(Vec<f16>),
    /// bfloat16 elements.
    BF16(Vec<bf16>),
    /// 64-bit integer elements.
    I64(Vec<i64>),
    /// Boolean elements.
    Bool(Vec<bool>),
    /// Elements read in place from shared bytes (see [`Storage::mapped`]).
    /// Read-only: writing through a tensor (`Tensor::data_mut`) first
    /// copies them into an owned buffer.
    Mapped(Mapped),
}

/// Elements of one dtype lying at a byte offset in a shared buffer, e.g. a
/// tensor inside a memory-mapped safetensors file: loading then costs no
/// copy, and pages are read from disk (or the page cache) on first use.
#[derive(Clone)]
pub struct Mapped {
    bytes: Arc<dyn AsRef<[u8]> + Send + Sync>,
    offset: usize,
    len: usize,
    dtype: DType,
}

impl Mapped {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The elements' bytes.
    pub fn bytes(&self) -> &[u8] {
        let size = self.dtype.size_in_bytes();
        &(*self.bytes).as_ref()[self.offset..self.offset + self.len * size]
    }
}

impl fmt::Debug for Mapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Mapped({} × {} at byte {})",
            self.len, self.dtype, self.offset
        )
    }
}

impl PartialEq for Mapped {
    fn eq(&self, other: &Mapped) -> bool {
        self.dtype == other.dtype && self.bytes() == other.bytes()
    }
}

impl Storage {
    /// Storage that reads `len` elements of `dtype` in place from
    /// `bytes[offset..]` (little-endian, as safetensors stores them).
    ///
    /// Returns `None` when they cannot be read in place: the range is out of
    /// bounds, the offset is not aligned for the element type, the dtype is
    /// bool (its bytes need checking), or this machine is big-endian. The
    /// caller then copies.
    pub fn mapped(
        bytes: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
        dtype: DType,
    ) -> Option<Storage> {
        let size = dtype.size_in_bytes();
        let buf = (*bytes).as_ref();
        let end = len.checked_mul(size)?.checked_add(offset)?;
        let aligned = (buf.as_ptr() as usize + offset).is_multiple_of(size);
        if cfg!(target_endian = "big") || dtype == DType::Bool || end > buf.len() || !aligned {
            return None;
        }
        Some(Storage::Mapped(Mapped {
            bytes,
            offset,
            len,
            dtype,
        }))
    }

    /// Whether the elements are read in place from shared bytes.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Storage::Mapped(_))
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
            Storage::I64(_) => DType::I64,
            Storage::Bool(_) => DType::Bool,
            Storage::Mapped(m) => m.dtype,
        }
    }

    /// Number of elements in the buffer.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
            Storage::F16(v) => v.len(),
            Storage::BF16(v) => v.len(),
            Storage::I64(v) => v.len(),
            Storage::Bool(v) => v.len(),
            Storage::Mapped(m) => m.len,
        }
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the buffer in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.len() * self.dtype().size_in_bytes()
    }
}
