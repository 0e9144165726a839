//! Element types: which Rust types a tensor can hold, and the float trait the
//! math kernels are written against.

use std::fmt;

use half::{bf16, f16};

use crate::storage::Storage;

/// The element type of a tensor.
///
/// `F32` is the compute type; `F64` serves reference computations and precise
/// gradient checks. `F16` and `BF16` are storage formats: convert them to
/// `F32` with [`Tensor::to_dtype`](crate::Tensor::to_dtype) before doing math.
/// `I64` holds indices and token ids (as PyTorch's `torch.long`), `Bool` the
/// masks produced by comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
    /// 16-bit IEEE half float (storage only).
    F16,
    /// 16-bit brain float (storage only).
    BF16,
    /// 64-bit signed integer (indices).
    I64,
    /// Boolean mask.
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::Bool => 1,
        }
    }

    /// Whether the dtype is a float type that kernels compute in (f32, f64).
    pub fn is_compute_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::Bool => "bool",
        };
        f.write_str(s)
    }
}

/// A Rust type that can be stored in a tensor.
pub trait Element: Copy + Default + Send + Sync + fmt::Debug + PartialEq + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Borrows the storage's buffer if it holds this type.
    fn slice(storage: &Storage) -> Option<&[Self]>;
    /// Mutably borrows the storage's buffer if it holds this type.
    fn slice_mut(storage: &mut Storage) -> Option<&mut [Self]>;
    /// Wraps a buffer of this type as storage.
    fn into_storage(data: Vec<Self>) -> Storage;
    /// Converts to `f64` (booleans become 0 or 1).
    fn as_f64(self) -> f64;
    /// Converts from `f64`, rounding to nearest (integers truncate toward zero).
    fn from_f64(v: f64) -> Self;
}

/// `x` as f32s when `T` is `f32`: lets generic code hand its f32 case to
/// the SIMD kernels, which take concrete slices.
pub(crate) fn as_f32<T: Element>(x: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (its dtype says so), so the layouts are the same.
    (T::DTYPE == DType::F32)
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) })
}

/// [`as_f32`] for a mutable slice.
pub(crate) fn as_f32_mut<T: Element>(x: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`.
    (T::DTYPE == DType::F32)
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) })
}

macro_rules! element {
    ($t:ty, $variant:ident, |$v:ident| $to:expr, |$w:ident| $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn slice(storage: &Storage) -> Option<&[Self]> {
                match storage {
                    Storage::$variant(v) => Some(v),
                    Storage::Mapped(m) if m.dtype() == DType::$variant => {
                        let b = m.bytes();
                        // SAFETY: `Storage::mapped` checked that the bytes are
                        // in bounds and aligned for this type on a
                        // little-endian machine, and that the dtype is not
                        // bool: every bit pattern is a valid value.
                        Some(unsafe {
                            std::slice::from_raw_parts(
                                b.as_ptr().cast::<Self>(),
                                b.len() / std::mem::size_of::<Self>(),
                            )
                        })
                    }
                    _ => None,
                }
            }
            fn slice_mut(storage: &mut Storage) -> Option<&mut [Self]> {
                match storage {
                    Storage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_storage(data: Vec<Self>) -> Storage {
                Storage::$variant(data)
            }
            fn as_f64(self) -> f64 {
                let $v = self;
                $to
            }
            fn from_f64($w: f64) -> Self {
                $from
            }
        }
    };
}

element!(f32, F32, |v| v as f64, |w| w as f32);
element!(f64, F64, |v| v, |w| w);
element!(f16, F16, |v| v.to_f64(), |w| f16::from_f64(w));
element!(bf16, BF16, |v| v.to_f64(), |w| bf16::from_f64(w));
element!(i64, I64, |v| v as f64, |w| w as i64);
element!(bool, Bool, |v| if v { 1.0 } else { 0.0 }, |w| w != 0.0);

/// A float type the math kernels compute in: `f32` or `f64`.
pub trait FloatElement:
    Element
    + num_traits::Float
    + num_traits::FloatConst
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + Default
{
    /// Converts from `f32` exactly (f32 → f64 is exact).
    fn from_f32(v: f32) -> Self;
}

impl FloatElement for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl FloatElement for f64 {
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}

/// Runs `$body` with the type alias `$T` bound to the Rust type of a float
/// dtype (`f32` or `f64`); any other dtype returns a [`TensorError::DType`]
/// naming `$op`.
///
/// [`TensorError::DType`]: crate::TensorError::DType
#[macro_export]
#[doc(hidden)]
macro_rules! with_float {
    ($op:expr, $dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = f64;
                $body
            }
            other => Err($crate::TensorError::DType {
                op: $op,
                got: other,
                expected: "f32 or f64".to_string(),
            }),
        }
    };
}

/// Like [`with_float!`] but for every dtype: binds `$T` to the element type.
#[macro_export]
#[doc(hidden)]
macro_rules! with_any {
    ($dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = f64;
                $body
            }
            $crate::DType::F16 => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = half::f16;
                $body
            }
            $crate::DType::BF16 => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = half::bf16;
                $body
            }
            $crate::DType::I64 => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = i64;
                $body
            }
            $crate::DType::Bool => {
                #[allow(non_camel_case_types, dead_code)]
                type $T = bool;
                $body
            }
        }
    };
}
