//! Reading safetensors bytes: parse and validate the header completely, then
//! turn each tensor's bytes into a [`Tensor`], read in place from a memory
//! map where no conversion is needed, else copied into owned storage.
//!
//! A safetensors file is
//!
//! ```text
//! [ n: u64 little-endian ][ header: n bytes of UTF-8 JSON ][ data section ]
//! header = { "__metadata__": {str: str}?,
//!            name: { "dtype": "F32", "shape": [d0, d1, …], "data_offsets": [start, end] }, … }
//! ```
//!
//! with `data_offsets` counted from the start of the data section. Every
//! check below runs before a single data byte is read, and all arithmetic on
//! header numbers is checked, so no input can panic or index out of bounds;
//! each failure becomes a [`StateDictError`] naming the file and the tensor.
//! The rules match the `safetensors` crate's (tensors must tile the data
//! section exactly), and once they pass the crate parses the header too, as
//! a second opinion.

use std::collections::{BTreeMap, HashSet};

use half::{bf16, f16};
use std::sync::Arc;

use kiln_tensor::parallel::for_each_chunk;
use kiln_tensor::{DType, Layout, Storage, Tensor};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::{LoadOptions, StateDictError};

/// The largest header accepted: the `safetensors` crate's limit (100 MB).
pub(super) const MAX_HEADER_LEN: u64 = 100_000_000;

/// Tensors at least this big are copied by several threads.
const PARALLEL_BYTES: usize = 1 << 20;
/// Bytes per parallel work item (a multiple of every element size).
const CHUNK_BYTES: usize = 1 << 20;

/// One validated header entry. Offsets are relative to the data section and
/// known to lie inside it, and `end - start` is exactly shape × dtype size.
#[derive(Debug)]
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A validated header.
#[derive(Debug)]
pub(super) struct Header {
    entries: Vec<Entry>,
    metadata: BTreeMap<String, String>,
    /// Byte offset of the data section in the file.
    data_start: usize,
}

/// The contents of a safetensors file: tensors by name and the metadata.
pub(super) type Loaded = (BTreeMap<String, Tensor>, BTreeMap<String, String>);

/// Validates a whole safetensors file held in `bytes` (a memory map or a
/// buffer) without reading its data section. `file` names it in errors.
pub(super) fn validate(bytes: &[u8], file: &str) -> Result<Header, StateDictError> {
    let header = parse_header(bytes, file)?;
    // Second opinion from the safetensors crate. Our checks guarantee the
    // offsets lie inside `bytes`, so its own arithmetic cannot overflow.
    if let Err(e) = safetensors::SafeTensors::read_metadata(bytes) {
        return Err(StateDictError::Format {
            file: file.to_string(),
            msg: e.to_string(),
        });
    }
    Ok(header)
}

/// Converts the tensors of a header [`validate`]d against the same `bytes`,
/// with `options` [`resolve`]d for it.
///
/// With `shared` (the same bytes, shareable), tensors that need no
/// conversion read their elements in place from it instead of copying
/// (unless `options.copy`), and tensors cast by `options.cast_matrices` are converted
/// straight from it. `release(offset, len)` is called for each
/// tensor's bytes once nothing reads them in place any more, so a mapped
/// file's pages leave the process as the load goes.
pub(super) fn read_tensors(
    bytes: &[u8],
    shared: Option<Arc<dyn AsRef<[u8]> + Send + Sync>>,
    header: Header,
    file: &str,
    options: LoadOptions,
    release: Option<&dyn Fn(usize, usize)>,
) -> Result<Loaded, StateDictError> {
    let data = bytes
        .get(header.data_start..)
        .ok_or_else(|| StateDictError::TooShort {
            file: file.to_string(),
            len: bytes.len() as u64,
        })?;
    let copy = options.copy;
    let mut tensors = BTreeMap::new();
    for entry in header.entries {
        let cast = cast_target(&entry, options);
        if let Some(to) = cast {
            // f32 ↔ bf16/f16 straight from the bytes, a piece at a time,
            // each piece's pages released once read.
            let base = header.data_start + entry.start;
            let src = entry_bytes(data, &entry, file)?;
            let piece_read = |offset: usize, len: usize| {
                if let Some(release) = release {
                    release(base + offset, len);
                }
            };
            if let Some(tensor) = cast_streaming(src, entry.dtype, to, &piece_read) {
                let tensor =
                    Tensor::from_storage(Arc::new(tensor), Layout::contiguous(&entry.shape))
                        .map_err(|source| StateDictError::Tensor {
                            tensor: entry.name.clone(),
                            source,
                        })?;
                tensors.insert(entry.name, tensor);
                continue;
            }
        }
        // Read in place unless f16/bf16 are widened (`Storage::mapped`
        // itself declines bools, misaligned bytes and big-endian machines):
        // kept mapped, or only for as long as the cast reads it.
        let widens = !options.keep_dtype && matches!(entry.dtype, DType::F16 | DType::BF16);
        let in_place = cast.is_some() || (!widens && !copy);
        let mapped = shared.as_ref().filter(|_| in_place).and_then(|bytes| {
            let numel = entry.shape.iter().product();
            Storage::mapped(
                bytes.clone(),
                header.data_start + entry.start,
                numel,
                entry.dtype,
            )
        });
        let keeps_map = mapped.is_some() && cast.is_none();
        let tensor = match mapped {
            Some(storage) => {
                Tensor::from_storage(Arc::new(storage), Layout::contiguous(&entry.shape)).map_err(
                    |source| StateDictError::Tensor {
                        tensor: entry.name.clone(),
                        source,
                    },
                )?
            }
            None => convert(data, &entry, file, options)?,
        };
        let tensor = match cast {
            Some(d) => tensor.to_dtype(d),
            None => tensor,
        };
        if let Some(release) = release.filter(|_| !keeps_map) {
            release(header.data_start + entry.start, entry.end - entry.start);
        }
        tensors.insert(entry.name, tensor);
    }
    Ok((tensors, header.metadata))
}

/// The dtype `options.cast_matrices` turns this entry into, if it changes it:
/// 2-D floating-point tensors only.
fn cast_target(entry: &Entry, options: LoadOptions) -> Option<DType> {
    let floating = |d: DType| matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16);
    options
        .cast_matrices
        .filter(|&d| entry.shape.len() == 2 && d != entry.dtype)
        .filter(|&d| floating(d) && floating(entry.dtype))
}

/// `options` as this load will run them: a load that casts any tensor
/// copies the rest too (biases and norms, small), because a few scattered
/// tensors left mapped would keep far more of the file resident than their
/// own bytes, through the kernel's fault-around. (So a load that will not
/// copy is one worth prefaulting.)
pub(super) fn resolve(header: &Header, options: LoadOptions) -> LoadOptions {
    let casts = header
        .entries
        .iter()
        .any(|e| cast_target(e, options).is_some());
    LoadOptions {
        copy: options.copy || casts,
        ..options
    }
}

/// A validated entry's bytes in the data section.
fn entry_bytes<'a>(data: &'a [u8], entry: &Entry, file: &str) -> Result<&'a [u8], StateDictError> {
    // Validation guarantees the range; `get` keeps even a bug panic-free.
    data.get(entry.start..entry.end)
        .ok_or_else(|| StateDictError::OffsetsPastEnd {
            file: file.to_string(),
            tensor: entry.name.clone(),
            start: entry.start as u64,
            end: entry.end as u64,
            data_len: data.len() as u64,
        })
}

/// Source bytes per piece of a streamed cast: each piece's pages are
/// released before the next is read, so a 150 MB matrix costs its output
/// and 4 MiB of mapped file, not both whole.
const CAST_PIECE_BYTES: usize = 4 << 20;

/// Casts little-endian f32 bytes to bf16/f16 or bf16/f16 bytes to f32, a
/// piece at a time, calling `piece_read(offset, len)` (offsets within
/// `src`) after each piece. Elements convert as `Tensor::to_dtype`
/// converts them: round to nearest even when narrowing, exact when
/// widening. `None` for any other pair of dtypes.
fn cast_streaming(
    src: &[u8],
    from: DType,
    to: DType,
    piece_read: &dyn Fn(usize, usize),
) -> Option<Storage> {
    Some(match (from, to) {
        (DType::F32, DType::BF16) => Storage::BF16(narrow::<bf16>(src, piece_read)),
        (DType::F32, DType::F16) => Storage::F16(narrow::<f16>(src, piece_read)),
        (DType::BF16, DType::F32) => Storage::F32(widen_pieces::<bf16>(src, piece_read)),
        (DType::F16, DType::F32) => Storage::F32(widen_pieces::<f16>(src, piece_read)),
        _ => return None,
    })
}

/// f32 bytes → `H`, a piece at a time (see [`cast_streaming`]).
fn narrow<H: Half>(src: &[u8], piece_read: &dyn Fn(usize, usize)) -> Vec<H> {
    const PIECE: usize = CAST_PIECE_BYTES / 4;
    let mut out: Vec<H> = fresh_vec(src.len() / 4);
    for (i, dst) in out.chunks_mut(PIECE).enumerate() {
        let bytes = &src[4 * i * PIECE..4 * (i * PIECE + dst.len())];
        for_each_chunk(dst, CHUNK_BYTES / 4, |r, d| {
            for (o, b) in d
                .iter_mut()
                .zip(bytes[4 * r.start..4 * r.end].chunks_exact(4))
            {
                *o = H::narrow(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
        });
        piece_read(4 * i * PIECE, bytes.len());
    }
    out
}

/// `H` bytes → f32, a piece at a time (see [`cast_streaming`]).
fn widen_pieces<H: Half>(src: &[u8], piece_read: &dyn Fn(usize, usize)) -> Vec<f32> {
    const PIECE: usize = CAST_PIECE_BYTES / 2;
    let mut out: Vec<f32> = fresh_vec(src.len() / 2);
    for (i, dst) in out.chunks_mut(PIECE).enumerate() {
        let bytes = &src[2 * i * PIECE..2 * (i * PIECE + dst.len())];
        widen_into::<H>(bytes, dst);
        piece_read(2 * i * PIECE, bytes.len());
    }
    out
}

/// Validates the length prefix, the header JSON and every entry, without
/// reading the data section.
fn parse_header(bytes: &[u8], file: &str) -> Result<Header, StateDictError> {
    let file_len = bytes.len() as u64;
    let prefix: [u8; 8] = match bytes.get(..8).and_then(|p| p.try_into().ok()) {
        Some(p) => p,
        None => {
            return Err(StateDictError::TooShort {
                file: file.to_string(),
                len: file_len,
            })
        }
    };
    let header_len = u64::from_le_bytes(prefix);
    if header_len > MAX_HEADER_LEN {
        return Err(StateDictError::HeaderTooLarge {
            file: file.to_string(),
            header_len,
            limit: MAX_HEADER_LEN,
        });
    }
    // header_len ≤ 100 MB, so this neither overflows nor truncates.
    let data_start = 8 + header_len as usize;
    let header_bytes = bytes
        .get(8..data_start)
        .ok_or_else(|| StateDictError::HeaderPastEnd {
            file: file.to_string(),
            header_len,
            file_len,
        })?;
    let text = std::str::from_utf8(header_bytes).map_err(|e| StateDictError::HeaderNotUtf8 {
        file: file.to_string(),
        valid_up_to: e.valid_up_to(),
    })?;
    let raw: RawHeader = serde_json::from_str(text).map_err(|e| StateDictError::HeaderJson {
        file: file.to_string(),
        msg: e.to_string(),
    })?;
    let data_len = bytes.len() - data_start;

    let mut metadata = None;
    let mut seen = HashSet::with_capacity(raw.0.len());
    let mut entries = Vec::with_capacity(raw.0.len());
    for (name, value) in raw.0 {
        if name == "__metadata__" {
            if metadata.is_some() {
                return Err(StateDictError::BadMetadata {
                    file: file.to_string(),
                    msg: "appears more than once in the header".into(),
                });
            }
            metadata = Some(parse_metadata(value, file)?);
            continue;
        }
        if !seen.insert(name.clone()) {
            return Err(StateDictError::DuplicateName {
                file: file.to_string(),
                tensor: name,
            });
        }
        entries.push(parse_entry(name, &value, data_len, file)?);
    }
    check_tiling(&mut entries, data_len, file)?;
    Ok(Header {
        entries,
        metadata: metadata.unwrap_or_default(),
        data_start,
    })
}

/// The header's top-level object as a list, keeping repeated keys (a
/// `serde_json::Map` would silently keep only the last of them).
struct RawHeader(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = RawHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object mapping tensor names to {dtype, shape, data_offsets}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(RawHeader(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

fn parse_metadata(value: Value, file: &str) -> Result<BTreeMap<String, String>, StateDictError> {
    let bad = |msg: String| StateDictError::BadMetadata {
        file: file.to_string(),
        msg,
    };
    // `null` means no metadata, as the safetensors crate reads it.
    if value.is_null() {
        return Ok(BTreeMap::new());
    }
    let Value::Object(map) = value else {
        return Err(bad(format!(
            "must be an object of strings, found {}",
            brief(&value)
        )));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(bad(format!(
                "entry {k:?} must be a string, found {}",
                brief(&other)
            ))),
        })
        .collect()
}

/// Checks one tensor entry on its own: fields, dtype, shape, offsets, size.
fn parse_entry(
    name: String,
    value: &Value,
    data_len: usize,
    file: &str,
) -> Result<Entry, StateDictError> {
    let bad = |name: &str, msg: String| StateDictError::BadEntry {
        file: file.to_string(),
        tensor: name.to_string(),
        msg,
    };
    let Value::Object(obj) = value else {
        return Err(bad(
            &name,
            format!(
                "entry must be an object with dtype, shape and data_offsets, found {}",
                brief(value)
            ),
        ));
    };
    let field = |key: &str| {
        obj.get(key)
            .ok_or_else(|| bad(&name, format!("entry has no {key:?} field")))
    };

    let dtype_str = match field("dtype")? {
        Value::String(s) => s.clone(),
        other => {
            return Err(bad(
                &name,
                format!("dtype must be a string, found {}", brief(other)),
            ))
        }
    };
    // The safetensors crate knows every dtype name the format defines, so it
    // tells an unknown name from a real dtype Kiln cannot hold.
    let st_dtype = serde_json::from_value::<safetensors::Dtype>(Value::String(dtype_str.clone()))
        .map_err(|_| StateDictError::UnknownDtype {
        file: file.to_string(),
        tensor: name.clone(),
        dtype: dtype_str.clone(),
    })?;
    let dtype = match st_dtype {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F64 => DType::F64,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::I64 => DType::I64,
        safetensors::Dtype::BOOL => DType::Bool,
        other => {
            return Err(StateDictError::UnsupportedDtype {
                file: file.to_string(),
                tensor: name,
                dtype: other.to_string(),
            })
        }
    };

    let shape_value = field("shape")?;
    let shape = shape_value
        .as_array()
        .and_then(|dims| dims.iter().map(as_usize).collect::<Option<Vec<usize>>>())
        .ok_or_else(|| {
            bad(
                &name,
                format!(
                    "shape must be an array of non-negative integers, found {}",
                    brief(shape_value)
                ),
            )
        })?;
    let offsets = field("data_offsets")?;
    let pair = match offsets.as_array().map(Vec::as_slice) {
        Some([s, e]) => s.as_u64().zip(e.as_u64()),
        _ => None,
    };
    let Some((start, end)) = pair else {
        return Err(bad(
            &name,
            format!(
                "data_offsets must be two non-negative integers [start, end], found {}",
                brief(offsets)
            ),
        ));
    };
    if start > end {
        return Err(StateDictError::ReversedOffsets {
            file: file.to_string(),
            tensor: name,
            start,
            end,
        });
    }
    if end > data_len as u64 {
        return Err(StateDictError::OffsetsPastEnd {
            file: file.to_string(),
            tensor: name,
            start,
            end,
            data_len: data_len as u64,
        });
    }
    // Every size the tensor crate may compute (strides are products of
    // trailing dims, which can exceed the element count when a dim is 0)
    // is bounded by the product of max(dim, 1), so bound that product.
    let elem = dtype.size_in_bytes() as u64;
    let bounded = shape
        .iter()
        .try_fold(elem, |acc, &d| acc.checked_mul((d as u64).max(1)))
        .filter(|&b| b <= isize::MAX as u64);
    if bounded.is_none() {
        return Err(StateDictError::ShapeOverflow {
            file: file.to_string(),
            tensor: name,
            shape,
            dtype: st_dtype.to_string(),
        });
    }
    let expected = if shape.contains(&0) {
        0
    } else {
        bounded.unwrap_or(0)
    };
    if end - start != expected {
        return Err(StateDictError::ByteCount {
            file: file.to_string(),
            tensor: name,
            shape,
            dtype: st_dtype.to_string(),
            expected,
            start,
            end,
        });
    }
    Ok(Entry {
        name,
        dtype,
        shape,
        // end ≤ data_len, a usize, so both fit.
        start: start as usize,
        end: end as usize,
    })
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// Sorts entries by offset and checks that they tile `[0, data_len)`: no
/// overlap, no gap, nothing after the last tensor.
fn check_tiling(entries: &mut [Entry], data_len: usize, file: &str) -> Result<(), StateDictError> {
    entries.sort_by_key(|e| (e.start, e.end));
    // `covered` is the furthest end seen so far and `owner` the entry that
    // reaches it, so an overlap names the tensor actually overlapped.
    let mut covered = 0usize;
    let mut owner: Option<usize> = None;
    for (i, e) in entries.iter().enumerate() {
        if e.start < covered {
            let other = &entries[owner.unwrap_or(i)];
            return Err(StateDictError::Overlap {
                file: file.to_string(),
                tensor: e.name.clone(),
                start: e.start as u64,
                end: e.end as u64,
                other: other.name.clone(),
                other_start: other.start as u64,
                other_end: other.end as u64,
            });
        }
        if e.start > covered {
            return Err(StateDictError::Gap {
                file: file.to_string(),
                tensor: e.name.clone(),
                start: e.start as u64,
                end: e.end as u64,
                gap_start: covered as u64,
            });
        }
        if e.end >= covered {
            covered = e.end;
            owner = Some(i);
        }
    }
    if covered != data_len {
        return Err(StateDictError::TrailingBytes {
            file: file.to_string(),
            last: owner.map(|i| entries[i].name.clone()),
            covered: covered as u64,
            data_len: data_len as u64,
        });
    }
    Ok(())
}

/// A JSON value for an error message, cut short if long.
fn brief(v: &Value) -> String {
    const MAX: usize = 60;
    let s = v.to_string();
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

// ---- converting data bytes to tensors -----------------------------------

/// Builds the tensor for a validated entry from the data section.
fn convert(
    data: &[u8],
    entry: &Entry,
    file: &str,
    options: LoadOptions,
) -> Result<Tensor, StateDictError> {
    let src = entry_bytes(data, entry, file)?;
    let shape = &entry.shape;
    let result = match (entry.dtype, options.keep_dtype) {
        (DType::F32, _) => Tensor::from_vec(copy_le::<f32>(src), shape),
        (DType::F64, _) => Tensor::from_vec(copy_le::<f64>(src), shape),
        (DType::I64, _) => Tensor::from_vec(copy_le::<i64>(src), shape),
        (DType::F16, true) => Tensor::from_vec(copy_le::<f16>(src), shape),
        (DType::BF16, true) => Tensor::from_vec(copy_le::<bf16>(src), shape),
        (DType::F16, false) => Tensor::from_vec(widen::<f16>(src), shape),
        (DType::BF16, false) => Tensor::from_vec(widen::<bf16>(src), shape),
        (DType::Bool, _) => {
            let bools = to_bools(src).map_err(|(index, byte)| StateDictError::InvalidBool {
                file: file.to_string(),
                tensor: entry.name.clone(),
                index,
                byte,
            })?;
            Tensor::from_vec(bools, shape)
        }
    };
    result.map_err(|source| StateDictError::Tensor {
        tensor: entry.name.clone(),
        source,
    })
}

/// A zeroed `Vec` of `n` elements about to be overwritten in full.
///
/// A big buffer comes straight from the kernel, untouched, and filling it
/// page by page costs a fault per 4 KiB page; on Linux it is first marked
/// for transparent huge pages, one fault per 2 MiB. On a GPT-2-small load
/// that halves the time (faults on fresh memory dominate: see
/// benches/state_dict.rs).
fn fresh_vec<T: bytemuck::Pod>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = bytemuck::zeroed_vec(n);
    #[cfg(target_os = "linux")]
    advise_huge_pages(bytemuck::cast_slice_mut::<T, u8>(&mut v));
    v
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    // Whole 2 MiB blocks inside the buffer (also page-aligned for any page
    // size Linux uses); nothing to do for a buffer smaller than two blocks.
    let lo = start.next_multiple_of(HUGE);
    let hi = (start + buf.len()) & !(HUGE - 1);
    if hi <= lo {
        return;
    }
    // SAFETY: [lo, hi) lies inside `buf`, which we borrow mutably, and
    // MADV_HUGEPAGE only changes how the kernel backs those pages, never
    // their contents. Failure (e.g. THP disabled) just means small pages.
    unsafe {
        libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
    }
}

/// Copies little-endian elements into a new `Vec<T>`: a plain `memcpy` on
/// little-endian machines (split across Kiln's threads for big tensors).
/// `src.len()` must be a multiple of `size_of::<T>()` (validated).
fn copy_le<T: bytemuck::Pod + Send + Sync>(src: &[u8]) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    let mut out: Vec<T> = fresh_vec(src.len() / size);
    let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
    let src = &src[..dst.len()];
    if dst.len() >= PARALLEL_BYTES {
        for_each_chunk(dst, CHUNK_BYTES, |r, d| d.copy_from_slice(&src[r]));
    } else {
        dst.copy_from_slice(src);
    }
    if cfg!(target_endian = "big") {
        for element in dst.chunks_exact_mut(size) {
            element.reverse();
        }
    }
    out
}

/// A 16-bit float stored in a file, widened to `f32` on load (or an f32
/// narrowed to it by `LoadOptions::cast_matrices`).
trait Half: bytemuck::Pod + Send + Sync {
    fn from_le_bytes(b: [u8; 2]) -> Self;
    /// Rounds to nearest even (`half`'s `from_f32`, as `Tensor::to_dtype`).
    fn narrow(x: f32) -> Self;
    fn widen_into(src: &[Self], dst: &mut [f32]);
}

impl Half for f16 {
    fn from_le_bytes(b: [u8; 2]) -> Self {
        f16::from_le_bytes(b)
    }
    fn narrow(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}

impl Half for bf16 {
    fn from_le_bytes(b: [u8; 2]) -> Self {
        bf16::from_le_bytes(b)
    }
    fn narrow(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn widen_into(src: &[Self], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}

/// Converts little-endian f16/bf16 bytes to `f32` (exact: every half value
/// is an f32). Reads the bytes in place when they are aligned on a
/// little-endian machine, as they are in any file whose header is padded to
/// 8 bytes; otherwise decodes them two bytes at a time.
fn widen<H: Half>(src: &[u8]) -> Vec<f32> {
    let mut out: Vec<f32> = fresh_vec(src.len() / 2);
    widen_into::<H>(src, &mut out);
    out
}

/// [`widen`] into `out` (`src.len() / 2` elements).
fn widen_into<H: Half>(src: &[u8], out: &mut [f32]) {
    const CHUNK: usize = CHUNK_BYTES / 2;
    let aligned: Option<&[H]> = if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice(src).ok()
    } else {
        None
    };
    let run = |dst: &mut [f32], i: usize| {
        let lo = i * CHUNK;
        match aligned {
            Some(halves) => H::widen_into(&halves[lo..lo + dst.len()], dst),
            None => {
                let bytes = &src[2 * lo..2 * (lo + dst.len())];
                let halves: Vec<H> = bytes
                    .chunks_exact(2)
                    .map(|b| H::from_le_bytes([b[0], b[1]]))
                    .collect();
                H::widen_into(&halves, dst);
            }
        }
    };
    if src.len() >= PARALLEL_BYTES {
        for_each_chunk(out, CHUNK, |r, dst| run(dst, r.start / CHUNK));
    } else {
        for (i, dst) in out.chunks_mut(CHUNK).enumerate() {
            run(dst, i);
        }
    }
}

/// Bytes to bools, rejecting any byte but 0 and 1 (a Rust `bool` may hold
/// nothing else). Returns the first bad `(index, byte)`.
fn to_bools(src: &[u8]) -> Result<Vec<bool>, (usize, u8)> {
    if let Some(index) = src.iter().position(|&b| b > 1) {
        return Err((index, src[index]));
    }
    Ok(src.iter().map(|&b| b == 1).collect())
}
