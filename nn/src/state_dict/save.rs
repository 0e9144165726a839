//! Writing safetensors: the header with the `safetensors` crate's
//! `TensorInfo`, the data contiguous in each tensor's own dtype, and the file
//! replaced atomically.
//!
//! Layout and order match `safetensors::serialize`: tensors sorted by
//! descending dtype alignment, then by name, so every tensor starts at a
//! multiple of its element size once the header is padded to 8 bytes. The
//! header lists `__metadata__` first (its keys sorted, so the bytes are
//! deterministic), then the tensors in file order.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use half::{bf16, f16};
use kiln_tensor::{DType, Tensor};
use safetensors::tensor::TensorInfo;

use super::load::MAX_HEADER_LEN;
use super::{StateDict, StateDictError};

/// Distinguishes temporary files of concurrent saves within one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A state dict laid out for writing: the 8-byte prefix plus padded header,
/// then the (contiguous) tensors in file order.
struct Plan<'a> {
    head: Vec<u8>,
    tensors: Vec<(&'a str, Tensor)>,
}

fn st_dtype(dtype: DType) -> safetensors::Dtype {
    match dtype {
        DType::F32 => safetensors::Dtype::F32,
        DType::F64 => safetensors::Dtype::F64,
        DType::F16 => safetensors::Dtype::F16,
        DType::BF16 => safetensors::Dtype::BF16,
        DType::I64 => safetensors::Dtype::I64,
        DType::Bool => safetensors::Dtype::BOOL,
    }
}

fn plan<'a>(dict: &'a StateDict, path: &str) -> Result<Plan<'a>, StateDictError> {
    let encode_err = |e: serde_json::Error| StateDictError::Save {
        path: path.to_string(),
        action: "encoding the header".into(),
        source: io::Error::other(e),
    };
    let mut order: Vec<(&str, &Tensor)> = dict.iter().collect();
    order.sort_by(|(ln, lt), (rn, rt)| {
        st_dtype(rt.dtype())
            .cmp(&st_dtype(lt.dtype()))
            .then(ln.cmp(rn))
    });

    let mut header = String::from("{");
    if !dict.metadata().is_empty() {
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(dict.metadata()).map_err(encode_err)?);
    }
    let mut offset = 0usize;
    let mut tensors = Vec::with_capacity(order.len());
    for (name, tensor) in order {
        if name == "__metadata__" {
            return Err(StateDictError::ReservedName {
                path: path.to_string(),
                tensor: name.to_string(),
            });
        }
        let nbytes = tensor.numel() * tensor.dtype().size_in_bytes();
        let info = TensorInfo {
            dtype: st_dtype(tensor.dtype()),
            shape: tensor.shape().to_vec(),
            data_offsets: (offset, offset + nbytes),
        };
        offset += nbytes;
        if header.len() > 1 {
            header.push(',');
        }
        header.push_str(&serde_json::to_string(name).map_err(encode_err)?);
        header.push(':');
        header.push_str(&serde_json::to_string(&info).map_err(encode_err)?);
        tensors.push((name, tensor.contiguous()));
    }
    header.push('}');
    // Pad with spaces so the data section starts 8-byte aligned.
    let padded = header.len().next_multiple_of(8);
    if padded as u64 > MAX_HEADER_LEN {
        return Err(StateDictError::Save {
            path: path.to_string(),
            action: "encoding the header".into(),
            source: io::Error::other(format!(
                "header of {padded} bytes exceeds the {MAX_HEADER_LEN}-byte limit"
            )),
        });
    }
    let mut head = Vec::with_capacity(8 + padded);
    head.extend_from_slice(&(padded as u64).to_le_bytes());
    head.extend_from_slice(header.as_bytes());
    head.resize(8 + padded, b' ');
    Ok(Plan { head, tensors })
}

/// Writes the whole file image to `w`.
fn write_plan(plan: &Plan, w: &mut impl Write) -> io::Result<()> {
    w.write_all(&plan.head)?;
    for (name, tensor) in &plan.tensors {
        write_tensor(name, tensor, w)?;
    }
    Ok(())
}

/// Writes a contiguous tensor's elements as little-endian bytes. (A dtype
/// error cannot happen here; it is reported as an I/O error naming the
/// tensor rather than a panic.)
fn write_tensor(name: &str, t: &Tensor, w: &mut impl Write) -> io::Result<()> {
    let bad = |e: kiln_tensor::TensorError| io::Error::other(format!("tensor {name}: {e}"));
    match t.dtype() {
        DType::F32 => write_le(t.as_slice::<f32>().map_err(bad)?, w),
        DType::F64 => write_le(t.as_slice::<f64>().map_err(bad)?, w),
        DType::F16 => write_le(t.as_slice::<f16>().map_err(bad)?, w),
        DType::BF16 => write_le(t.as_slice::<bf16>().map_err(bad)?, w),
        DType::I64 => write_le(t.as_slice::<i64>().map_err(bad)?, w),
        // A Rust bool is one byte, 0 or 1: exactly safetensors' BOOL.
        DType::Bool => {
            let bools = t.as_slice::<bool>().map_err(bad)?;
            w.write_all(bytemuck::cast_slice::<bool, u8>(bools))
        }
    }
}

fn write_le<T: bytemuck::Pod>(data: &[T], w: &mut impl Write) -> io::Result<()> {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    if cfg!(target_endian = "little") {
        return w.write_all(bytes);
    }
    let size = std::mem::size_of::<T>();
    for block in bytes.chunks(size * 16384) {
        let mut swapped = block.to_vec();
        for element in swapped.chunks_exact_mut(size) {
            element.reverse();
        }
        w.write_all(&swapped)?;
    }
    Ok(())
}

/// The file image in memory.
pub(super) fn to_bytes(dict: &StateDict) -> Result<Vec<u8>, StateDictError> {
    let plan = plan(dict, "<memory>")?;
    let mut out = Vec::new();
    write_plan(&plan, &mut out).map_err(|source| StateDictError::Save {
        path: "<memory>".into(),
        action: "serialising".into(),
        source,
    })?;
    Ok(out)
}

/// Writes `dict` to `path` atomically: a temporary file in the same
/// directory, `fsync`, rename over `path`, then `fsync` of the directory
/// (best effort: the file is already complete by then).
pub(super) fn save(dict: &StateDict, path: &Path) -> Result<(), StateDictError> {
    let shown = path.display().to_string();
    let fail = |action: String, source: io::Error| StateDictError::Save {
        path: shown.clone(),
        action,
        source,
    };
    let plan = plan(dict, &shown)?;
    let Some(file_name) = path.file_name() else {
        return Err(fail(
            "choosing a temporary file".into(),
            io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
        ));
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = OsString::from(file_name);
    tmp_name.push(format!(
        ".{}-{}.kiln-tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);

    let result = write_synced(&plan, &tmp).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| {
            (
                format!("renaming temporary file {} over it", tmp.display()),
                e,
            )
        })
    });
    if let Err((action, source)) = result {
        // Never leave the temporary behind; `path` itself was not touched.
        let _ = fs::remove_file(&tmp);
        return Err(fail(action, source));
    }
    sync_dir(&dir);
    Ok(())
}

/// Creates `tmp` (never an existing file), writes the image and syncs it.
fn write_synced(plan: &Plan, tmp: &Path) -> Result<(), (String, io::Error)> {
    let shown = tmp.display();
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| (format!("creating temporary file {shown}"), e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let write_err = |e| (format!("writing temporary file {shown}"), e);
    write_plan(plan, &mut w).map_err(write_err)?;
    let file = w.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all()
        .map_err(|e| (format!("syncing temporary file {shown}"), e))
}

/// Makes the rename durable where the platform allows syncing a directory.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
