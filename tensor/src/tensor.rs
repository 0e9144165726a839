//! `Tensor`: shared storage plus a layout. Cloning a tensor never copies data;
//! view ops return a new tensor over the same storage.

use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};

use crate::dtype::Element;
use crate::shape::{numel, Dim};
use crate::strided::Walk;
use crate::{with_any, DType, Layout, Result, Storage, TensorError};

/// A strided n-dimensional array on the CPU.
///
/// A tensor is an `Arc` to a flat [`Storage`] plus a [`Layout`] (shape,
/// strides in elements, offset). Views (`reshape` when possible, `permute`,
/// `transpose`, `narrow`, `broadcast_to`, `squeeze`, `unsqueeze`) share the
/// storage; `clone` is O(1). Every op returns a new tensor and leaves its
/// inputs untouched, except [`Tensor::data_mut`], which copies first if the
/// storage is shared (copy-on-write).
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
}

impl Tensor {
    /// Wraps a storage and a layout.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if the layout reaches past the end of storage.
    pub fn from_storage(storage: Arc<Storage>, layout: Layout) -> Result<Tensor> {
        if layout.storage_extent() > storage.len() {
            return Err(TensorError::Invalid {
                op: "from_storage",
                shape: layout.shape().to_vec(),
                msg: format!(
                    "layout reaches element {} but storage holds {}",
                    layout.storage_extent(),
                    storage.len()
                ),
            });
        }
        Ok(Tensor { storage, layout })
    }

    pub(crate) fn from_parts(storage: Storage, shape: &[usize]) -> Tensor {
        debug_assert_eq!(storage.len(), numel(shape));
        Tensor {
            storage: Arc::new(storage),
            layout: Layout::contiguous(shape),
        }
    }

    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor {
            storage: self.storage.clone(),
            layout,
        }
    }

    /// A contiguous tensor owning `data`, viewed as `shape`
    /// (`torch.tensor(data).reshape(shape)`).
    ///
    /// # Errors
    /// [`TensorError::ElementCount`] if `data.len()` is not the shape's size.
    ///
    /// ```
    /// use kiln_tensor::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(t.shape(), &[2, 3]);
    /// # Ok::<(), kiln_tensor::TensorError>(())
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(TensorError::ElementCount {
                op: "from_vec",
                len: data.len(),
                shape: shape.to_vec(),
            });
        }
        Ok(Tensor::from_parts(T::into_storage(data), shape))
    }

    /// Like [`Tensor::from_vec`], copying from a slice.
    ///
    /// # Errors
    /// [`TensorError::ElementCount`] if the length does not fit the shape.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::from_parts(T::into_storage(vec![value]), &[])
    }

    /// A tensor of `shape` filled with `value` converted to `dtype`
    /// (`torch.full`).
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let n = numel(shape);
        with_any!(dtype, |T| Tensor::from_parts(
            T::into_storage(vec![T::from_f64(value); n]),
            shape
        ))
    }

    /// A tensor of zeros (`torch.zeros`).
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 0.0, dtype)
    }

    /// A tensor of ones (`torch.ones`).
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 1.0, dtype)
    }

    /// Zeros with the shape and dtype of `self`.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.shape(), self.dtype())
    }

    /// Values `start, start + step, …` below `end` (above, for negative
    /// `step`), as a 1-D tensor (`torch.arange`).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if `step` is zero or not finite.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() {
            return Err(TensorError::Invalid {
                op: "arange",
                shape: vec![],
                msg: format!("step must be finite and non-zero, got {step}"),
            });
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        Ok(with_any!(dtype, |T| {
            let data: Vec<T> = (0..n)
                .map(|i| T::from_f64(start + i as f64 * step))
                .collect();
            Tensor::from_parts(T::into_storage(data), &[n])
        }))
    }

    /// A `[rows, cols]` boolean mask, true where `col <= row + diagonal`
    /// (the lower triangle, as `torch.ones(rows, cols).tril(diagonal).bool()`).
    /// With `diagonal = 0` this is the causal-attention mask of allowed
    /// positions.
    pub fn tril_mask(rows: usize, cols: usize, diagonal: i64) -> Tensor {
        let data: Vec<bool> = (0..rows * cols)
            .map(|i| ((i % cols) as i64) <= (i / cols) as i64 + diagonal)
            .collect();
        Tensor::from_parts(Storage::Bool(data), &[rows, cols])
    }

    /// A `[rows, cols]` boolean mask, true where `col >= row + diagonal`
    /// (`torch.ones(rows, cols).triu(diagonal).bool()`). With `diagonal = 1`
    /// it marks the future positions a causal attention must hide.
    pub fn triu_mask(rows: usize, cols: usize, diagonal: i64) -> Tensor {
        let data: Vec<bool> = (0..rows * cols)
            .map(|i| ((i % cols) as i64) >= (i / cols) as i64 + diagonal)
            .collect();
        Tensor::from_parts(Storage::Bool(data), &[rows, cols])
    }

    /// The sizes of each dim.
    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    /// Size of one dim (negative counts from the end).
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] for a bad dim.
    pub fn size(&self, dim: impl Dim) -> Result<usize> {
        Ok(self.shape()[dim.resolve("size", self.shape())?])
    }

    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// The layout (shape, strides, offset).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Strides in elements.
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }

    /// The shared storage.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Whether the elements are row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// Whether two tensors view the same storage buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// Bytes of the storage buffer (shared by all views of it).
    pub fn storage_bytes(&self) -> usize {
        self.storage.size_in_bytes()
    }

    /// The elements in row-major order as a `Vec<T>` (copies; reads through
    /// the strides).
    ///
    /// # Errors
    /// [`TensorError::DType`] if `T` is not the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let src = self.typed::<T>("to_vec")?;
        if self.is_contiguous() {
            let o = self.layout.offset();
            return Ok(src[o..o + self.numel()].to_vec());
        }
        Ok(crate::strided::gather(src, &self.layout))
    }

    /// The single value of a one-element tensor (`torch.Tensor.item`).
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if the tensor has more or fewer than one
    /// element, [`TensorError::DType`] if `T` is not its dtype.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.numel() != 1 {
            return Err(TensorError::Invalid {
                op: "item",
                shape: self.shape().to_vec(),
                msg: "only a one-element tensor has an item".into(),
            });
        }
        let src = self.typed::<T>("item")?;
        Ok(src[self.layout.offset()])
    }

    /// The storage as a `&[T]`, checking the dtype; indices follow the layout.
    pub(crate) fn typed<T: Element>(&self, op: &'static str) -> Result<&[T]> {
        T::slice(&self.storage).ok_or_else(|| TensorError::DType {
            op,
            got: self.dtype(),
            expected: T::DTYPE.to_string(),
        })
    }

    /// The elements as a slice, without copying, if the tensor is contiguous.
    ///
    /// # Errors
    /// [`TensorError::DType`] for the wrong `T`, [`TensorError::Invalid`] if
    /// the tensor is not contiguous (call [`Tensor::contiguous`] first).
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        let src = self.typed::<T>("as_slice")?;
        if !self.is_contiguous() {
            return Err(TensorError::Invalid {
                op: "as_slice",
                shape: self.shape().to_vec(),
                msg: format!("strides {:?} are not contiguous", self.strides()),
            });
        }
        let o = self.layout.offset();
        Ok(&src[o..o + self.numel()])
    }

    /// Mutable access to the elements, in row-major order.
    ///
    /// Copy-on-write: if the storage is shared with another tensor, is read
    /// in place from a mapped file, or this tensor is a non-contiguous or
    /// partial view, the elements are first
    /// copied into a fresh contiguous buffer owned by `self` alone, so other
    /// tensors never see the writes. Optimizers use this for in-place steps.
    ///
    /// # Errors
    /// [`TensorError::DType`] if `T` is not the tensor's dtype.
    pub fn data_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        self.typed::<T>("data_mut")?;
        if !self.views_whole_buffer() {
            let data = self.to_vec::<T>()?;
            *self = Tensor::from_parts(T::into_storage(data), self.shape());
        }
        let storage = Arc::make_mut(&mut self.storage);
        Ok(T::slice_mut(storage).expect("dtype checked above"))
    }

    /// Whether `self` is the only owner of its whole buffer, laid out
    /// contiguously from its start in memory Kiln may write (not a mapped
    /// file): then [`Tensor::data_mut`] writes in place without copying.
    pub(crate) fn owns_buffer(&mut self) -> bool {
        self.views_whole_buffer() && Arc::get_mut(&mut self.storage).is_some()
    }

    /// Whether `self` views its whole, writable buffer contiguously from
    /// the start (it may still share that buffer with other tensors).
    fn views_whole_buffer(&self) -> bool {
        self.is_contiguous()
            && self.layout.offset() == 0
            && self.numel() == self.storage.len()
            && !self.storage.is_mapped()
    }

    /// A contiguous tensor with the same elements: `self` (no copy) when
    /// already contiguous, else a row-major copy (`torch.Tensor.contiguous`).
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        with_any!(self.dtype(), |T| {
            let data = self.to_vec::<T>().expect("dtype matches storage");
            Tensor::from_parts(T::into_storage(data), self.shape())
        })
    }

    /// Converts elements to `dtype` (`torch.Tensor.to(dtype)`); returns
    /// `self` unchanged when the dtype already matches. Float conversions
    /// round to nearest even; float → i64 truncates toward zero; anything →
    /// bool is `!= 0`.
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let src = self.contiguous();
        // Fast, exact paths for the storage formats used by checkpoints.
        match (src.dtype(), dtype) {
            (DType::F16, DType::F32) | (DType::BF16, DType::F32) => {
                let mut out = vec![0f32; src.numel()];
                match src.dtype() {
                    DType::F16 => {
                        use half::slice::HalfFloatSliceExt;
                        src.as_slice::<f16>()
                            .expect("f16")
                            .convert_to_f32_slice(&mut out);
                    }
                    _ => {
                        use half::slice::HalfFloatSliceExt;
                        src.as_slice::<bf16>()
                            .expect("bf16")
                            .convert_to_f32_slice(&mut out);
                    }
                }
                return Tensor::from_parts(Storage::F32(out), src.shape());
            }
            (DType::F32, DType::F16) => {
                let data = src
                    .as_slice::<f32>()
                    .expect("f32")
                    .iter()
                    .map(|&v| f16::from_f32(v))
                    .collect();
                return Tensor::from_parts(Storage::F16(data), src.shape());
            }
            (DType::F32, DType::BF16) => {
                let data = src
                    .as_slice::<f32>()
                    .expect("f32")
                    .iter()
                    .map(|&v| bf16::from_f32(v))
                    .collect();
                return Tensor::from_parts(Storage::BF16(data), src.shape());
            }
            _ => {}
        }
        with_any!(src.dtype(), |S| {
            let input = src.as_slice::<S>().expect("dtype matches storage");
            with_any!(dtype, |D| {
                let data: Vec<D> = input.iter().map(|&v| D::from_f64(v.as_f64())).collect();
                Tensor::from_parts(D::into_storage(data), src.shape())
            })
        })
    }

    // ---- views ---------------------------------------------------------

    /// Views the elements, in row-major order, with a new shape
    /// (`torch.reshape`). Returns a view sharing storage whenever the strides
    /// allow it; otherwise (e.g. a transposed matrix) it **copies** into a
    /// contiguous buffer. Use [`Tensor::view`] to insist on no copy.
    ///
    /// # Errors
    /// [`TensorError::Reshape`] if the element counts differ.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        match self.layout.reshape_view(shape)? {
            Some(layout) => Ok(self.with_layout(layout)),
            None => self.contiguous().reshape(shape),
        }
    }

    /// Like [`Tensor::reshape`] but never copies (`torch.Tensor.view`).
    ///
    /// # Errors
    /// [`TensorError::Reshape`] if the counts differ, [`TensorError::Invalid`]
    /// if the strides do not allow a view.
    pub fn view(&self, shape: &[usize]) -> Result<Tensor> {
        match self.layout.reshape_view(shape)? {
            Some(layout) => Ok(self.with_layout(layout)),
            None => Err(TensorError::Invalid {
                op: "view",
                shape: self.shape().to_vec(),
                msg: format!(
                    "strides {:?} cannot be viewed as {shape:?} without a copy; use reshape",
                    self.strides()
                ),
            }),
        }
    }

    /// Flattens to one dim (a view when contiguous).
    pub fn flatten_all(&self) -> Tensor {
        self.reshape(&[self.numel()]).expect("same element count")
    }

    /// Reorders dims (`torch.permute`): result dim `i` is input dim `dims[i]`.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] unless `dims` is a permutation of `0..rank`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.permute(dims)?))
    }

    /// Swaps two dims (`torch.transpose`). A view.
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] for a bad dim.
    pub fn transpose(&self, dim0: impl Dim, dim1: impl Dim) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.transpose(dim0, dim1)?))
    }

    /// Transpose of the last two dims (`x.mT`). A view.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] for a tensor of rank below 2.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(TensorError::Invalid {
                op: "t",
                shape: self.shape().to_vec(),
                msg: "needs at least 2 dims".into(),
            });
        }
        self.transpose(-2, -1)
    }

    /// `len` entries of `dim` from `start` (`torch.narrow`). A view.
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`], or [`TensorError::Invalid`] if the
    /// range exceeds the dim.
    pub fn narrow(&self, dim: impl Dim, start: usize, len: usize) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.narrow(dim, start, len)?))
    }

    /// Broadcasts to `shape` (`torch.Tensor.expand`): stride-0 view, no copy.
    ///
    /// # Errors
    /// [`TensorError::Broadcast`] if the shapes are incompatible.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.broadcast_to(shape)?))
    }

    /// Alias of [`Tensor::broadcast_to`], PyTorch's name.
    ///
    /// # Errors
    /// As [`Tensor::broadcast_to`].
    pub fn expand(&self, shape: &[usize]) -> Result<Tensor> {
        self.broadcast_to(shape)
    }

    /// Removes a size-1 dim (`torch.squeeze(dim)`). A view.
    ///
    /// # Errors
    /// [`TensorError::Invalid`] if that dim's size is not 1.
    pub fn squeeze(&self, dim: impl Dim) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.squeeze(dim)?))
    }

    /// Inserts a size-1 dim (`torch.unsqueeze`). A view.
    ///
    /// # Errors
    /// [`TensorError::DimOutOfRange`] outside `-(rank+1)..=rank`.
    pub fn unsqueeze(&self, dim: impl Dim) -> Result<Tensor> {
        Ok(self.with_layout(self.layout.unsqueeze(dim)?))
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor[{:?}, {}", self.shape(), self.dtype())?;
        const SHOW: usize = 8;
        with_any!(self.dtype(), |T| {
            let v = self.narrow_flat_prefix::<T>(SHOW);
            write!(f, ", {v:?}")?;
            if self.numel() > SHOW {
                write!(f, " …")?;
            }
            Ok::<(), fmt::Error>(())
        })?;
        write!(f, "]")
    }
}

impl Tensor {
    fn narrow_flat_prefix<T: Element>(&self, n: usize) -> Vec<T> {
        let src = match self.typed::<T>("debug") {
            Ok(s) => s,
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        Walk::new([&self.layout]).for_runs(0, n, |[o], len, [s]| {
            out.extend((0..len).map(|i| src[o + i * s]));
        });
        out
    }
}
