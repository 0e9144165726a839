//! Helpers for checking tensors against references: [`assert_close`] and a
//! loader for safetensors fixture files written by PyTorch.
//!
//! They are public so that downstream crates, and users checking their own
//! code against PyTorch, can use them too.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{DType, Tensor};

/// Compares two tensors elementwise: `|a − e| ≤ atol + rtol·|e|` everywhere.
///
/// Returns `Err` with a report naming the shapes, the max absolute and
/// relative errors, the worst index and the first values of each, so a
/// failing test says what went wrong without a debugger.
///
/// # Errors
/// A readable report if shapes differ or any element is out of tolerance.
pub fn check_close(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if actual.shape() != expected.shape() {
        return Err(format!(
            "shape mismatch: actual {:?} vs expected {:?}",
            actual.shape(),
            expected.shape()
        ));
    }
    let a = to_f64(actual);
    let e = to_f64(expected);
    let mut worst = (0usize, 0f64, 0f64, 0f64); // index, excess, abs err, rel err
    let mut max_abs = 0f64;
    let mut max_rel = 0f64;
    let mut bad = 0usize;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let both_nan = x.is_nan() && y.is_nan();
        let same_inf = x.is_infinite() && x == y;
        if both_nan || same_inf {
            continue;
        }
        let abs = (x - y).abs();
        let rel = abs / y.abs().max(f64::MIN_POSITIVE);
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(if y == 0.0 { 0.0 } else { rel });
        let excess = abs - (atol + rtol * y.abs());
        if excess > 0.0 || abs.is_nan() {
            bad += 1;
            if excess > worst.1 || abs.is_nan() {
                worst = (
                    i,
                    if abs.is_nan() { f64::INFINITY } else { excess },
                    abs,
                    rel,
                );
            }
        }
    }
    if bad == 0 {
        return Ok(());
    }
    let head = |v: &[f64]| {
        v.iter()
            .take(6)
            .map(|x| format!("{x:.6e}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "{bad} of {} elements out of tolerance (rtol {rtol:e}, atol {atol:e}) in shape {:?}\n  \
         max abs err {max_abs:e}, max rel err {max_rel:e}\n  \
         worst at flat index {} (multi-index {:?}): actual {:e}, expected {:e} (abs {:e}, rel {:e})\n  \
         actual:   [{}]\n  expected: [{}]",
        a.len(),
        actual.shape(),
        worst.0,
        unravel(worst.0, actual.shape()),
        a[worst.0],
        e[worst.0],
        worst.2,
        worst.3,
        head(&a),
        head(&e),
    ))
}

/// Panics with [`check_close`]'s report if the tensors differ.
///
/// # Panics
/// If shapes differ or any element is outside `atol + rtol·|expected|`.
#[track_caller]
pub fn assert_close(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) {
    if let Err(report) = check_close(actual, expected, rtol, atol) {
        panic!("assert_close failed: {report}");
    }
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .to_vec::<f64>()
        .expect("converted to f64")
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d].max(1);
        i /= shape[d].max(1);
    }
    idx
}

/// The bit patterns of an f32 tensor's elements, in row-major order: for
/// asserting that two computations are bit-identical (NaNs included).
///
/// # Panics
/// If `t` is not f32.
pub fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.contiguous()
        .as_slice::<f32>()
        .expect("an f32 tensor")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Reads every tensor of a safetensors file into memory (f32, f64, f16,
/// bf16, i64 and bool are supported), keyed by name. Meant for test
/// fixtures; kiln-nn's state dicts are the checked, memory-mapped loader.
///
/// # Errors
/// A message naming the file and tensor on any read or format problem.
pub fn load_safetensors(path: impl AsRef<Path>) -> Result<BTreeMap<String, Tensor>, String> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            safetensors::Dtype::F32 => {
                Tensor::from_vec(le_chunks::<4, f32>(data, f32::from_le_bytes), &shape)
            }
            safetensors::Dtype::F64 => {
                Tensor::from_vec(le_chunks::<8, f64>(data, f64::from_le_bytes), &shape)
            }
            safetensors::Dtype::I64 => {
                Tensor::from_vec(le_chunks::<8, i64>(data, i64::from_le_bytes), &shape)
            }
            safetensors::Dtype::F16 => Tensor::from_vec(
                le_chunks::<2, half::f16>(data, half::f16::from_le_bytes),
                &shape,
            ),
            safetensors::Dtype::BF16 => Tensor::from_vec(
                le_chunks::<2, half::bf16>(data, half::bf16::from_le_bytes),
                &shape,
            ),
            safetensors::Dtype::BOOL => {
                Tensor::from_vec(data.iter().map(|&b| b != 0).collect::<Vec<bool>>(), &shape)
            }
            other => {
                return Err(format!(
                    "{}: tensor {name}: unsupported dtype {other:?}",
                    path.display()
                ))
            }
        }
        .map_err(|e| format!("{}: tensor {name}: {e}", path.display()))?;
        out.insert(name, t);
    }
    Ok(out)
}

fn le_chunks<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_worst_element() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.5], &[3]).unwrap();
        let e = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        let r = check_close(&a, &e, 1e-5, 1e-6).unwrap_err();
        assert!(r.contains("1 of 3 elements"), "{r}");
        assert!(r.contains("multi-index [2]"), "{r}");
        assert!(check_close(&e, &e, 0.0, 0.0).is_ok());
    }
}
