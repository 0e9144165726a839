//! Shared helpers for the property tests: a tiny value generator, a naive
//! n-d array (`Nd`, row-major `f64`) that the references are written
//! against, and random strided views.
//!
//! A case builds a storage of random values, takes a *view* of it
//! (contiguous with an offset, permuted, narrowed, broadcast, or permuted and
//! narrowed), and reads the view's logical elements through
//! [`Layout::index_of`] — the one-line definition of a strided layout — to get
//! the reference input. Kiln sees only the view, so every kernel's strided
//! path is exercised against data it cannot have pre-arranged.
#![allow(dead_code)] // each test binary uses a different subset

use kiln_tensor::{DType, Tensor};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// SplitMix64: enough randomness for test values, and independent of Kiln's
/// own generator so a bug there cannot hide a bug here.
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A random permutation of `0..n` (Fisher–Yates).
    pub fn perm(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

// ---- naive n-d arrays -------------------------------------------------------

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Every multi-index of `shape`, in row-major order.
pub fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n = numel(shape);
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0; shape.len()];
    for _ in 0..n {
        out.push(idx.clone());
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Row-major position of `idx` in `shape`.
pub fn flat(shape: &[usize], idx: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &s)| acc * s + i)
}

/// A row-major array of `f64`: what every reference is computed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Nd {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Nd {
    pub fn from_fn(shape: &[usize], mut f: impl FnMut(&[usize]) -> f64) -> Nd {
        let data = indices(shape).iter().map(|i| f(i)).collect();
        Nd {
            shape: shape.to_vec(),
            data,
        }
    }

    pub fn get(&self, idx: &[usize]) -> f64 {
        self.data[flat(&self.shape, idx)]
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Nd {
        Nd {
            shape: self.shape.clone(),
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// As an f64 tensor, for `assert_close`.
    pub fn tensor(&self) -> Tensor {
        Tensor::from_vec(self.data.clone(), &self.shape).unwrap()
    }
}

/// The elements of any tensor as `f64`, row-major.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).to_vec::<f64>().unwrap()
}

/// Compares with `kiln_tensor::testing::check_close`, as a proptest failure.
pub fn check(
    what: &str,
    actual: &Tensor,
    expected: &Nd,
    rtol: f64,
    atol: f64,
) -> Result<(), TestCaseError> {
    kiln_tensor::testing::check_close(actual, &expected.tensor(), rtol, atol)
        .map_err(|r| TestCaseError::fail(format!("{what}: {r}")))
}

/// Tolerances for a result that is a few roundings away from the exact value:
/// f64 is checked nearly exactly; f32 gets a few units in the last place
/// (2⁻²³ ≈ 1.2e-7) of relative slack, plus an absolute floor for results that
/// cancel towards zero.
pub fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-12, 1e-12),
        _ => (2e-6, 1e-6),
    }
}

/// Rounds `v` as storing it in `dtype` would.
pub fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => v as f32 as f64,
        DType::F64 => v,
        DType::I64 => v.trunc(),
        DType::Bool => (v != 0.0) as u8 as f64,
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
    }
}

/// A tensor of `dtype` holding `data` (already representable).
pub fn tensor_of(data: &[f64], shape: &[usize], dtype: DType) -> Tensor {
    match dtype {
        DType::F32 => Tensor::from_vec(data.iter().map(|&v| v as f32).collect(), shape),
        DType::F64 => Tensor::from_vec(data.to_vec(), shape),
        DType::I64 => Tensor::from_vec(data.iter().map(|&v| v as i64).collect(), shape),
        DType::Bool => Tensor::from_vec(data.iter().map(|&v| v != 0.0).collect(), shape),
        DType::F16 => Tensor::from_vec(
            data.iter().map(|&v| half::f16::from_f64(v)).collect(),
            shape,
        ),
        DType::BF16 => Tensor::from_vec(
            data.iter().map(|&v| half::bf16::from_f64(v)).collect(),
            shape,
        ),
    }
    .unwrap()
}

// ---- random values and views ------------------------------------------------

/// Which values to draw.
#[derive(Clone, Copy, Debug)]
pub enum Dom {
    /// Uniform in `[-3, 3)`.
    Normal,
    /// Uniform in `[0.1, 3)` (for log, sqrt, pow bases, divisors).
    Positive,
    /// Integers `-2..=2`, so comparisons see ties.
    Small,
    /// Magnitudes up to 90 with about one value in eight `-inf` (masked
    /// attention scores).
    Wide,
}

pub fn draw(g: &mut Gen, dom: Dom) -> f64 {
    match dom {
        Dom::Normal => g.range(-3.0, 3.0),
        Dom::Positive => g.range(0.1, 3.0),
        Dom::Small => g.below(5) as f64 - 2.0,
        Dom::Wide => {
            if g.below(8) == 0 {
                f64::NEG_INFINITY
            } else {
                g.range(-90.0, 90.0)
            }
        }
    }
}

/// How a tensor is laid out over its storage.
#[derive(Clone, Copy, Debug)]
pub enum View {
    Contiguous,
    /// Contiguous but starting at a non-zero storage offset.
    Offset,
    /// A permutation of a contiguous tensor (transposes included).
    Permuted,
    /// A slice of a larger tensor along every dim.
    Narrowed,
    /// Size-1 (or missing leading) dims expanded with stride 0.
    Broadcast,
    PermutedNarrowed,
}

pub fn arb_view() -> impl Strategy<Value = View> {
    prop_oneof![
        Just(View::Contiguous),
        Just(View::Offset),
        Just(View::Permuted),
        Just(View::Narrowed),
        Just(View::Broadcast),
        Just(View::PermutedNarrowed),
    ]
}

/// Views that keep every element distinct (no broadcast), for ops whose
/// references assume distinct values.
pub fn arb_distinct_view() -> impl Strategy<Value = View> {
    prop_oneof![
        Just(View::Contiguous),
        Just(View::Offset),
        Just(View::Permuted),
        Just(View::Narrowed),
        Just(View::PermutedNarrowed),
    ]
}

/// A tensor of logical `shape` laid out as `view`, with values from `dom`
/// rounded to `dtype`, and its logical values read through its layout.
pub fn make(shape: &[usize], view: View, dtype: DType, dom: Dom, seed: u64) -> (Tensor, Nd) {
    let mut g = Gen(seed);
    let rank = shape.len();
    let perm = g.perm(rank);
    let mut inv = vec![0; rank];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let extra: Vec<usize> = (0..rank).map(|_| g.below(3)).collect();
    let start: Vec<usize> = extra.iter().map(|&e| g.below(e + 1)).collect();
    let offset = 1 + g.below(5);
    let lead = g.below(rank + 1);
    let ones: Vec<bool> = (0..rank).map(|_| g.below(2) == 0).collect();

    let base_shape: Vec<usize> = match view {
        View::Contiguous => shape.to_vec(),
        View::Offset => vec![numel(shape) + offset],
        View::Permuted => perm.iter().map(|&p| shape[p]).collect(),
        View::Narrowed => shape.iter().zip(&extra).map(|(s, e)| s + e).collect(),
        View::Broadcast => (lead..rank)
            .map(|d| if ones[d] { 1 } else { shape[d] })
            .collect(),
        View::PermutedNarrowed => perm
            .iter()
            .zip(&extra)
            .map(|(&p, e)| shape[p] + e)
            .collect(),
    };
    let raw: Vec<f64> = (0..numel(&base_shape))
        .map(|_| round_to(dtype, draw(&mut g, dom)))
        .collect();
    let base = tensor_of(&raw, &base_shape, dtype);
    let t = match view {
        View::Contiguous => base,
        View::Offset => base
            .narrow(0, offset, numel(shape))
            .unwrap()
            .reshape(shape)
            .unwrap(),
        View::Permuted => base.permute(&inv).unwrap(),
        View::Narrowed => (0..rank).fold(base, |t, d| t.narrow(d, start[d], shape[d]).unwrap()),
        View::Broadcast => base.expand(shape).unwrap(),
        View::PermutedNarrowed => (0..rank)
            .fold(base, |t, d| t.narrow(d, start[d], shape[perm[d]]).unwrap())
            .permute(&inv)
            .unwrap(),
    };
    assert_eq!(t.shape(), shape, "{view:?}");
    let layout = t.layout().clone();
    let nd = Nd::from_fn(shape, |idx| raw[layout.index_of(idx)]);
    (t, nd)
}

/// A random shape `s'` that broadcasts to `shape`: some leading dims dropped,
/// some others set to 1.
pub fn broadcastable(shape: &[usize], g: &mut Gen) -> Vec<usize> {
    let lead = g.below(shape.len() + 1);
    shape[lead..]
        .iter()
        .map(|&s| if g.below(3) == 0 { 1 } else { s })
        .collect()
}

/// NumPy's broadcast of two shapes, written out naively (assumes they are
/// compatible).
pub fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let x = if i + a.len() >= rank {
                a[i + a.len() - rank]
            } else {
                1
            };
            let y = if i + b.len() >= rank {
                b[i + b.len() - rank]
            } else {
                1
            };
            if x == 1 {
                y
            } else {
                x
            }
        })
        .collect()
}

/// Reads `x` at an index of the broadcast shape it was broadcast into.
pub fn get_broadcast(x: &Nd, out_idx: &[usize]) -> f64 {
    let lead = out_idx.len() - x.shape.len();
    let idx: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(k, &s)| if s == 1 { 0 } else { out_idx[lead + k] })
        .collect();
    x.get(&idx)
}

/// `default` cases per property, or `PROPTEST_CASES` when set (for a long
/// soak: `PROPTEST_CASES=5000 cargo test -p kiln-tensor --test props`).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn shape_strategy(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=max_dim, 0..=max_rank)
}

/// Shapes that may contain zero-size dims.
pub fn shape_with_zeros(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![1 => Just(0usize), 6 => 1usize..=max_dim],
        0..=max_rank,
    )
}

pub fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F64)]
}
