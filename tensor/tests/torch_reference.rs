//! kiln-tensor against PyTorch, on fixtures written by
//! `scripts/reference/gen_tensor_fixtures.py` (torch 2.15, fixed seeds) into
//! `fixtures/tensor/`. No Python runs here.
//!
//! Each case stores f32 inputs and two torch results from those inputs:
//! `out32` (torch in float32) and `out64` (torch in float64 on the exactly
//! promoted inputs). Every case checks three things:
//! - Kiln f32 vs torch f32, at the f32 tolerance given with the test;
//! - Kiln f32 vs torch f64 (the true value of the f32 inputs), at the same
//!   tolerance: Kiln's f32 kernels must be as accurate as torch's, not merely
//!   close to them;
//! - Kiln f64 vs torch f64 at `F64_TOL`: the f64 paths are the references for
//!   gradient checks, so they must agree to a few units of 2⁻⁵².
//!
//! Tolerances are `|kiln − torch| ≤ atol + rtol·|torch|`, elementwise.

use std::collections::BTreeMap;

use kiln_tensor::testing::{assert_close, load_safetensors};
use kiln_tensor::{DType, Tensor};

/// f64 results of the same formula differ only by the rounding of a few
/// operations (and by torch's SLEEF vs Rust's libm `exp`/`tanh`, each within
/// 1 ulp): 1e-12 leaves three orders of magnitude above 2⁻⁵² ≈ 2.2e-16 for the
/// error growth of short sums, and still catches any algorithmic difference.
const F64_TOL: (f64, f64) = (1e-12, 1e-14);

/// Elementwise f32 results: both sides round each operation to f32 (unit
/// roundoff 6e-8) and use vectorised `exp`/`tanh` good to 1–2 ulp, so they
/// differ by a few ulp, ~5e-7 relative. rtol 1e-5 is a 20× margin over that
/// while a wrong constant or a missing max-subtraction errs by ≥1e-3; atol
/// 1e-6 covers results that cancel towards zero (gelu of negative inputs,
/// tiny probabilities), where relative error is meaningless.
const F32_TOL: (f64, f64) = (1e-5, 1e-6);

fn fixture(name: &str) -> BTreeMap<String, Tensor> {
    let path = format!(
        "{}/../fixtures/tensor/{name}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    load_safetensors(&path).unwrap_or_else(|e| {
        panic!("{e}\n(regenerate with: python scripts/reference/gen_tensor_fixtures.py)")
    })
}

fn get<'a>(m: &'a BTreeMap<String, Tensor>, key: &str) -> &'a Tensor {
    m.get(key)
        .unwrap_or_else(|| panic!("fixture key {key} missing; have {:?}", m.keys()))
}

/// Runs `op` on `case`'s `inputs` in f32 and in f64 and checks it against
/// torch's `out32` and `out64` as described in the module docs.
fn check_case(
    m: &BTreeMap<String, Tensor>,
    case: &str,
    inputs: &[&str],
    f32_tol: (f64, f64),
    f64_tol: (f64, f64),
    op: impl Fn(&[Tensor]) -> Tensor,
) {
    let xs: Vec<Tensor> = inputs
        .iter()
        .map(|k| get(m, &format!("{case}.{k}")).clone())
        .collect();
    assert!(
        xs.iter().all(|x| x.dtype() == DType::F32),
        "{case}: f32 inputs"
    );
    let out32 = get(m, &format!("{case}.out32"));
    let out64 = get(m, &format!("{case}.out64"));
    let (rt, at) = f32_tol;

    let y32 = op(&xs);
    assert_eq!(y32.dtype(), DType::F32, "{case}");
    eprintln!("{case}: f32 vs torch f32");
    assert_close(&y32, out32, rt, at);
    eprintln!("{case}: f32 vs torch f64");
    assert_close(&y32, out64, rt, at);

    let xs64: Vec<Tensor> = xs.iter().map(|x| x.to_dtype(DType::F64)).collect();
    let y64 = op(&xs64);
    assert_eq!(y64.dtype(), DType::F64, "{case}");
    eprintln!("{case}: f64 vs torch f64");
    assert_close(&y64, out64, f64_tol.0, f64_tol.1);
}

/// ```python
/// masked = (torch.randn(6, 9) * 3).masked_fill(torch.ones(6, 9).bool().triu(1), -inf)
/// masked[5] = -inf                                  # a fully masked row → NaN
/// large = torch.randn(4, 17) * 300 + 1000
/// for f in (torch.softmax, torch.log_softmax):
///     f(torch.randn(5, 37) * 2, -1); f(torch.randn(7, 3, 4), 0)
///     f(torch.randn(2, 11, 5), 1); f(masked, -1); f(large, -1)
/// ```
#[test]
fn softmax_and_log_softmax_match_torch() {
    let m = fixture("softmax");
    let dims = [
        ("rows", -1),
        ("dim0", 0),
        ("dim1", 1),
        ("masked", -1),
        ("large", -1),
    ];
    for (case, dim) in dims {
        check_case(
            &m,
            &format!("softmax.{case}"),
            &["x"],
            F32_TOL,
            F64_TOL,
            |x| x[0].softmax(dim).unwrap(),
        );
        // log_softmax of inputs ~1e3 is ~1e2 at most, computed as
        // (x − max) − log Σ: F32_TOL's rtol covers its rounding.
        check_case(
            &m,
            &format!("log_softmax.{case}"),
            &["x"],
            F32_TOL,
            F64_TOL,
            |x| x[0].log_softmax(dim).unwrap(),
        );
    }
}

/// ```python
/// C = 48; w = 1 + 0.5 * torch.randn(C); b = 0.5 * torch.randn(C)
/// F.layer_norm(torch.randn(2, 5, C) * 2, [C], w, b, 1e-5)    # affine
/// F.layer_norm(torch.randn(6, C), [C], None, None, 1e-5)     # plain
/// F.layer_norm(50 + 0.5 * torch.randn(4, C), [C], w, b, 1e-5) # offset
/// ```
#[test]
fn layer_norm_matches_torch() {
    let m = fixture("layer_norm");
    // |x̂·w| reaches ~5, and torch (f32 moments) and Kiln (f64 moments) round
    // μ and rstd differently, a few ulp of x̂·w apart: atol 5e-6 ≈ 4 ulp(5).
    let tol = (1e-5, 5e-6);
    check_case(
        &m,
        "layer_norm.affine",
        &["x", "w", "b"],
        tol,
        F64_TOL,
        |x| x[0].layer_norm(Some(&x[1]), Some(&x[2]), 1e-5).unwrap(),
    );
    check_case(&m, "layer_norm.plain", &["x"], tol, F64_TOL, |x| {
        x[0].layer_norm(None, None, 1e-5).unwrap()
    });
    // Rows at 50 ± 0.5: x − μ loses the bits of ulp(50) = 3.8e-6 when μ is
    // rounded to f32, and rstd ≈ 2 and |w| ≤ 2.5 magnify that to ≈ 2e-5 in
    // the output, in torch's result as much as in Kiln's: atol 5e-5. The same
    // factor |μ|·rstd·|w| ≈ 250 applies in f64: atol 250 · 1e-14 → 5e-12.
    check_case(
        &m,
        "layer_norm.offset",
        &["x", "w", "b"],
        (1e-5, 5e-5),
        (1e-12, 5e-12),
        |x| x[0].layer_norm(Some(&x[1]), Some(&x[2]), 1e-5).unwrap(),
    );
}

/// ```python
/// F.gelu(torch.linspace(-8, 8, 513), approximate="tanh")
/// F.gelu(torch.randn(8, 64) * 2, approximate="tanh")
/// ```
#[test]
fn gelu_new_matches_torch() {
    let m = fixture("gelu");
    // torch computes 0.5·x·(1 + tanh u); for x ≪ 0 the sum cancels and its
    // error is ≈ 0.5·|x|·ulp(1) ≤ 5e-7 at |x| = 8, inside atol 1e-6.
    for case in ["gelu.grid", "gelu.randn"] {
        check_case(&m, case, &["x"], F32_TOL, F64_TOL, |x| x[0].gelu().unwrap());
    }
}

/// ```python
/// x = torch.randn(3, 4, 5) * 2
/// torch.logsumexp(x, -1); torch.logsumexp(x, [0, 2], keepdim=True)
/// torch.logsumexp(torch.randn(3, 10) * 100 + 500, -1); torch.logsumexp(masked, -1)
/// torch.var(x, -1, correction=1); torch.var(x, [0, 1], correction=0, keepdim=True)
/// torch.var(100 + torch.randn(4, 33), -1, correction=1)
/// ```
#[test]
fn logsumexp_and_var_match_torch() {
    let m = fixture("reduce");
    check_case(&m, "logsumexp.last", &["x"], F32_TOL, F64_TOL, |x| {
        x[0].logsumexp(&[-1], false).unwrap()
    });
    check_case(&m, "logsumexp.dims02_keep", &["x"], F32_TOL, F64_TOL, |x| {
        x[0].logsumexp(&[0, 2], true).unwrap()
    });
    check_case(&m, "logsumexp.large", &["x"], F32_TOL, F64_TOL, |x| {
        x[0].logsumexp(&[-1], false).unwrap()
    });
    check_case(&m, "logsumexp.masked", &["x"], F32_TOL, F64_TOL, |x| {
        x[0].logsumexp(&[-1], false).unwrap()
    });
    check_case(&m, "var.last_unbiased", &["x"], F32_TOL, F64_TOL, |x| {
        x[0].var(&[-1], 1, false).unwrap()
    });
    check_case(&m, "var.dims01_pop_keep", &["x"], F32_TOL, F64_TOL, |x| {
        x[0].var(&[0, 1], 0, true).unwrap()
    });
    check_case(&m, "var.offset", &["x"], F32_TOL, F64_TOL, |x| {
        x[0].var(&[-1], 1, false).unwrap()
    });
}

/// ```python
/// torch.randn(7, 13) @ torch.randn(13, 5)
/// at, bt = torch.randn(64, 9), torch.randn(6, 64); at.mT @ bt.mT      # transposed
/// torch.randn(2, 1, 4, 24) @ torch.randn(3, 24, 5)                     # broadcast batch
/// torch.randn(3, 2, 31) @ torch.randn(31)                              # matrix · vector
/// ```
#[test]
fn matmul_matches_torch() {
    let m = fixture("matmul");
    // A k-term dot product of N(0, 1) entries accumulates k roundings of
    // partial sums of size ~√k; blocked FMA kernels (torch's and Kiln's) keep
    // the partial sums shorter, and the observed differences are ≈ u·√k. The
    // tolerance is scaled by √k accordingly: atol 1e-6·√k in f32 (≈ 15 u·√k),
    // and F64_TOL·√k in f64.
    let cases: [(&str, [&str; 2], usize); 4] = [
        ("matmul.plain", ["a", "b"], 13),
        ("matmul.transposed", ["at", "bt"], 64),
        ("matmul.broadcast", ["a", "b"], 24),
        ("matmul.vec", ["a", "v"], 31),
    ];
    for (case, inputs, k) in cases {
        let s = (k as f64).sqrt();
        let op = |x: &[Tensor]| {
            if case == "matmul.transposed" {
                // Transposed views, read in place through their strides.
                x[0].t().unwrap().matmul(&x[1].t().unwrap()).unwrap()
            } else {
                x[0].matmul(&x[1]).unwrap()
            }
        };
        let f64_tol = (F64_TOL.0, F64_TOL.1 * s);
        check_case(&m, case, &inputs, (1e-5, 1e-6 * s), f64_tol, op);
    }
}

/// ```python
/// a.bfloat16() @ b.bfloat16()                                  # .bf16
/// with torch.autocast("cpu", dtype=torch.bfloat16): a @ b      # .autocast
/// a.bfloat16().double() @ b.bfloat16().double()                # .out64
/// ```
/// on plain (21×256 · 256×33), transposed-view and broadcast-batch operands.
#[test]
fn bf16_matmul_matches_torch() {
    let m = fixture("matmul_bf16");
    let f32s = |t: &Tensor| t.to_dtype(DType::F32).to_vec::<f32>().unwrap();
    for case in ["plain", "transposed", "broadcast"] {
        let (a, b) = if case == "transposed" {
            let a = get(&m, "transposed.at").t().unwrap();
            (a, get(&m, "transposed.bt").t().unwrap())
        } else {
            (
                get(&m, &format!("{case}.a")).clone(),
                get(&m, &format!("{case}.b")).clone(),
            )
        };
        // bf16 · bf16 → bf16, as torch: both sides round an f32 sum of the
        // same products, so they differ by at most one bf16 ulp (2⁻⁷
        // relative) where the sums straddle a rounding boundary.
        let (ab, bb) = (a.to_dtype(DType::BF16), b.to_dtype(DType::BF16));
        let got = ab.matmul(&bb).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        for key in ["bf16", "autocast"] {
            let want = f32s(get(&m, &format!("{case}.{key}")));
            for (i, (g, w)) in f32s(&got).iter().zip(&want).enumerate() {
                let tol = w.abs() * 2f32.powi(-7) + 1e-4;
                assert!(
                    (g - w).abs() <= tol,
                    "{case}.{key}[{i}]: kiln {g}, torch {w}"
                );
            }
        }
        // f32 operands rounded as they are packed, f32 result: the exact
        // product of the rounded operands up to f32 summation error.
        let exact = get(&m, &format!("{case}.out64")).to_vec::<f64>().unwrap();
        let k = a.shape()[a.rank() - 1] as f64;
        for (i, (g, w)) in f32s(&a.matmul_bf16(&b).unwrap())
            .iter()
            .zip(&exact)
            .enumerate()
        {
            let tol = 1e-5 * w.abs() + 1e-6 * k.sqrt();
            assert!(
                (*g as f64 - w).abs() <= tol,
                "{case}.out64[{i}]: kiln {g}, exact {w}"
            );
        }
    }
}
