//! `{}` for tensors, as PyTorch prints them: `tensor([[ 1.5000, -2.2500], …])`.
//!
//! The rules are torch's (`torch/_tensor_str.py`, default print options):
//! one format for all shown elements, chosen from their values (integers
//! as `1.`; four decimals; or `1.0000e-06` when the magnitudes span more
//! than three decades, pass 1e8 or fall below 1e-4), right-aligned to one
//! width; rows wrapped at 80 columns; past 1,000 elements, only the first
//! and last three of each dimension, with `...` between; the dtype
//! appended unless it is the default (f32, i64, bool).

use std::fmt;

use crate::{DType, Tensor};

/// Elements above which a tensor is summarised (torch's `threshold`).
const THRESHOLD: usize = 1000;
/// Elements kept at each end of a summarised dimension (`edgeitems`).
const EDGE: usize = 3;
/// Line width for wrapping rows (`linewidth`).
const LINE: usize = 80;

/// The shown elements (all, or each dimension's ends when summarising) as
/// f64 / i64 / bool, walked in row-major order.
enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

/// Indices shown along a dimension of `size` (`None` marks the `...`).
fn shown(size: usize, summarize: bool) -> Vec<Option<usize>> {
    if summarize && size > 2 * EDGE {
        (0..EDGE)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((size - EDGE..size).map(Some))
            .collect()
    } else {
        (0..size).map(Some).collect()
    }
}

/// Python's `{:.4e}`: at least two exponent digits, with a sign.
fn sci(v: f64) -> String {
    let s = format!("{v:.4e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// torch's `_Formatter` for floats: one rule for every shown value.
fn float_strings(vals: &[f64]) -> Vec<String> {
    let finite: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
    let nonzero: Vec<f64> = finite
        .iter()
        .map(|v| v.abs())
        .filter(|&v| v != 0.0)
        .collect();
    let int_mode = finite.iter().all(|v| v.fract() == 0.0);
    let (lo, hi) = nonzero
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let wide = !nonzero.is_empty() && (hi / lo > 1000.0 || hi > 1e8);
    let sci_mode = wide || (!int_mode && !nonzero.is_empty() && lo < 1e-4);
    vals.iter()
        .map(|&v| {
            if !v.is_finite() {
                if v.is_nan() {
                    "nan".to_string()
                } else if v > 0.0 {
                    "inf".to_string()
                } else {
                    "-inf".to_string()
                }
            } else if sci_mode {
                sci(v)
            } else if int_mode {
                format!("{v:.0}.")
            } else {
                format!("{v:.4}")
            }
        })
        .collect()
}

impl Tensor {
    fn shown_values(&self, summarize: bool) -> Values {
        let shape = self.shape();
        let picks: Vec<Vec<Option<usize>>> = shape.iter().map(|&n| shown(n, summarize)).collect();
        // Row-major flat indices of the shown elements.
        let mut flat = vec![0usize];
        let strides = crate::shape::contiguous_strides(shape);
        for (pick, &step) in picks.iter().zip(&strides) {
            flat = flat
                .iter()
                .flat_map(|&base| pick.iter().flatten().map(move |&i| base + i * step))
                .collect();
        }
        let t = self.contiguous();
        match t.dtype() {
            DType::I64 => {
                let v = t.to_vec::<i64>().unwrap_or_default();
                Values::Int(flat.iter().map(|&i| v[i]).collect())
            }
            DType::Bool => {
                let v = t.to_vec::<bool>().unwrap_or_default();
                Values::Bool(flat.iter().map(|&i| v[i]).collect())
            }
            _ => {
                let v = t.to_dtype(DType::F64).to_vec::<f64>().unwrap_or_default();
                Values::Float(flat.iter().map(|&i| v[i]).collect())
            }
        }
    }
}

/// Writes dimension `dim` onward of the shown elements, consuming them
/// from `items`; `indent` is the column this bracket opens at.
fn nested(
    shape: &[usize],
    dim: usize,
    summarize: bool,
    indent: usize,
    width: usize,
    items: &mut std::slice::Iter<'_, String>,
    out: &mut String,
) {
    let picks = shown(shape[dim], summarize);
    out.push('[');
    if dim + 1 == shape.len() {
        let cells: Vec<String> = picks
            .iter()
            .map(|p| match p {
                Some(_) => format!("{:>width$}", items.next().map_or("", |s| s.as_str())),
                None => " ...".to_string(),
            })
            .collect();
        let per_line = ((LINE.saturating_sub(indent)) / (width + 2)).max(1);
        let lines: Vec<String> = cells.chunks(per_line).map(|c| c.join(", ")).collect();
        out.push_str(&lines.join(&format!(",\n{}", " ".repeat(indent + 1))));
    } else {
        let sep = format!(
            ",{}{}",
            "\n".repeat(shape.len() - dim - 1),
            " ".repeat(indent + 1)
        );
        for (k, p) in picks.iter().enumerate() {
            if k > 0 {
                out.push_str(&sep);
            }
            match p {
                Some(_) => nested(shape, dim + 1, summarize, indent + 1, width, items, out),
                None => out.push_str("..."),
            }
        }
    }
    out.push(']');
}

/// Prints like `print(t)` in PyTorch (module docs):
///
/// ```
/// use kiln_tensor::Tensor;
/// let t = Tensor::from_vec(vec![1.5f32, -2.25, 3.0, 4.0, 5.0, 6.125], &[2, 3])?;
/// assert_eq!(
///     t.to_string(),
///     "tensor([[ 1.5000, -2.2500,  3.0000],\n        [ 4.0000,  5.0000,  6.1250]])"
/// );
/// # Ok::<(), kiln_tensor::TensorError>(())
/// ```
impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = self.shape().to_vec();
        let summarize = self.numel() > THRESHOLD;
        // torch sizes a float column by its finite nonzero values only
        // (`nan` and `inf` may stick out); integers and booleans by all.
        let (strings, width) = match self.shown_values(summarize) {
            Values::Float(v) => {
                let s = float_strings(&v);
                let w = s
                    .iter()
                    .zip(&v)
                    .filter(|(_, x)| x.is_finite() && **x != 0.0)
                    .map(|(s, _)| s.chars().count())
                    .fold(1, usize::max);
                (s, w)
            }
            Values::Int(v) => {
                let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                let w = s.iter().map(|s| s.len()).fold(1, usize::max);
                (s, w)
            }
            Values::Bool(v) => {
                let w = if v.contains(&false) { 5 } else { 4 };
                let s = v
                    .iter()
                    .map(|&b| if b { "True" } else { "False" }.to_string())
                    .collect();
                (s, w)
            }
        };
        let mut body = String::new();
        if shape.is_empty() {
            body.push_str(strings.first().map_or("", |s| s.as_str()));
        } else if self.numel() == 0 {
            body.push_str("[]");
        } else {
            let prefix = "tensor(".len();
            nested(
                &shape,
                0,
                summarize,
                prefix,
                width,
                &mut strings.iter(),
                &mut body,
            );
        }
        let mut suffix = String::new();
        if self.numel() == 0 && shape.len() > 1 {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            suffix.push_str(&format!(", size=({})", dims.join(", ")));
        }
        if !matches!(self.dtype(), DType::F32 | DType::I64 | DType::Bool) {
            suffix.push_str(&format!(", dtype={}", self.dtype()));
        }
        write!(f, "tensor({body}{suffix})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each expected string is what torch 2.15 prints for the same tensor.
    #[test]
    fn prints_as_torch_does() {
        let f = |v: Vec<f32>, s: &[usize]| Tensor::from_vec(v, s).unwrap().to_string();
        assert_eq!(f(vec![1.0, 2.0, 3.0], &[3]), "tensor([1., 2., 3.])");
        assert_eq!(f(vec![3.5], &[]), "tensor(3.5000)");
        assert_eq!(f(vec![1e-6, 1.0], &[2]), "tensor([1.0000e-06, 1.0000e+00])");
        assert_eq!(
            f(vec![1.0, f32::NAN, f32::INFINITY], &[3]),
            "tensor([1., nan, inf])"
        );
        assert_eq!(f(vec![], &[0, 3]), "tensor([], size=(0, 3))");
        assert_eq!(
            f((0..24).map(|i| i as f32).collect(), &[2, 3, 4]),
            "tensor([[[ 0.,  1.,  2.,  3.],\n         [ 4.,  5.,  6.,  7.],\n         [ 8.,  9., 10., 11.]],\n\n        [[12., 13., 14., 15.],\n         [16., 17., 18., 19.],\n         [20., 21., 22., 23.]]])"
        );
        let ints = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap();
        assert_eq!(ints.to_string(), "tensor([[1, 2],\n        [3, 4]])");
        let mask = Tensor::from_vec(vec![true, false], &[2]).unwrap();
        assert_eq!(mask.to_string(), "tensor([ True, False])");
        let f64s = Tensor::from_vec(vec![1f64, 2.0], &[2]).unwrap();
        assert_eq!(f64s.to_string(), "tensor([1., 2.], dtype=f64)");
    }

    #[test]
    fn large_tensors_show_their_ends_and_wrap_at_80_columns() {
        let t = Tensor::from_vec((0..2000).map(|i| i as f32).collect(), &[2, 1000]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([[0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 9.9700e+02, 9.9800e+02,\n         9.9900e+02],\n        [1.0000e+03, 1.0010e+03, 1.0020e+03,  ..., 1.9970e+03, 1.9980e+03,\n         1.9990e+03]])"
        );
        // A strided view prints its own elements.
        let col = t.narrow(1, 1, 1).unwrap();
        assert_eq!(
            col.to_string(),
            "tensor([[1.0000e+00],\n        [1.0010e+03]])"
        );
    }
}
