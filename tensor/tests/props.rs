//! Property tests of kiln-tensor's math ops against naive `f64` references
//! written out plainly below (loops over multi-indices), on random shapes and
//! on non-contiguous inputs (see `common/mod.rs` for how views are made).
//!
//! Movement, indexing, matmul and dtype conversion are in `props_views.rs`.

mod common;

use common::*;
use kiln_tensor::{DType, Tensor};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Cases per property: enough to cover every view kind and dtype many times
/// over while the whole file runs in a couple of seconds.
const CASES: u32 = 64;

// ---- references ---------------------------------------------------------------

fn gelu_ref(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

type UnaryCase = (&'static str, fn(&Tensor) -> Tensor, fn(f64) -> f64, Dom);

/// Every unary op: (name, Kiln, reference, input domain).
fn unary_cases() -> Vec<UnaryCase> {
    vec![
        ("neg", |t| t.neg().unwrap(), |x| -x, Dom::Normal),
        ("exp", |t| t.exp().unwrap(), f64::exp, Dom::Normal),
        ("log", |t| t.log().unwrap(), f64::ln, Dom::Positive),
        ("sqrt", |t| t.sqrt().unwrap(), f64::sqrt, Dom::Positive),
        (
            "rsqrt",
            |t| t.rsqrt().unwrap(),
            |x| 1.0 / x.sqrt(),
            Dom::Positive,
        ),
        ("tanh", |t| t.tanh().unwrap(), f64::tanh, Dom::Normal),
        ("relu", |t| t.relu().unwrap(), |x| x.max(0.0), Dom::Normal),
        (
            "sigmoid",
            |t| t.sigmoid().unwrap(),
            |x| 1.0 / (1.0 + (-x).exp()),
            Dom::Normal,
        ),
        ("abs", |t| t.abs().unwrap(), f64::abs, Dom::Normal),
        ("square", |t| t.square().unwrap(), |x| x * x, Dom::Normal),
        ("recip", |t| t.recip().unwrap(), |x| 1.0 / x, Dom::Positive),
        ("gelu", |t| t.gelu().unwrap(), gelu_ref, Dom::Normal),
        (
            "powf",
            |t| t.powf(1.7).unwrap(),
            |x| x.powf(1.7),
            Dom::Positive,
        ),
        ("powf2", |t| t.powf(2.0).unwrap(), |x| x * x, Dom::Normal),
        (
            "add_scalar",
            |t| t.add_scalar(0.25).unwrap(),
            |x| x + 0.25,
            Dom::Normal,
        ),
        (
            "sub_scalar",
            |t| t.sub_scalar(1.5).unwrap(),
            |x| x - 1.5,
            Dom::Normal,
        ),
        (
            "mul_scalar",
            |t| t.mul_scalar(-3.0).unwrap(),
            |x| x * -3.0,
            Dom::Normal,
        ),
        (
            "div_scalar",
            |t| t.div_scalar(7.0).unwrap(),
            |x| x / 7.0,
            Dom::Normal,
        ),
        (
            "affine",
            |t| t.affine(2.0, -0.5).unwrap(),
            |x| x * 2.0 - 0.5,
            Dom::Normal,
        ),
        (
            "clamp",
            |t| t.clamp(-1.0, 0.5).unwrap(),
            |x| x.clamp(-1.0, 0.5),
            Dom::Normal,
        ),
    ]
}

type BinaryCase = (
    &'static str,
    fn(&Tensor, &Tensor) -> Tensor,
    fn(f64, f64) -> f64,
    Dom,
    Dom,
);

fn binary_cases() -> Vec<BinaryCase> {
    vec![
        (
            "add",
            |a, b| a.add(b).unwrap(),
            |x, y| x + y,
            Dom::Normal,
            Dom::Normal,
        ),
        (
            "sub",
            |a, b| a.sub(b).unwrap(),
            |x, y| x - y,
            Dom::Normal,
            Dom::Normal,
        ),
        (
            "mul",
            |a, b| a.mul(b).unwrap(),
            |x, y| x * y,
            Dom::Normal,
            Dom::Normal,
        ),
        (
            "div",
            |a, b| a.div(b).unwrap(),
            |x, y| x / y,
            Dom::Normal,
            Dom::Positive,
        ),
        (
            "maximum",
            |a, b| a.maximum(b).unwrap(),
            f64::max,
            Dom::Small,
            Dom::Normal,
        ),
        (
            "minimum",
            |a, b| a.minimum(b).unwrap(),
            f64::min,
            Dom::Normal,
            Dom::Small,
        ),
        (
            "pow",
            |a, b| a.pow(b).unwrap(),
            f64::powf,
            Dom::Positive,
            Dom::Normal,
        ),
        ("op+", |a, b| a + b, |x, y| x + y, Dom::Normal, Dom::Normal),
        ("op*", |a, b| a * b, |x, y| x * y, Dom::Normal, Dom::Normal),
    ]
}

/// Reduces `x` over `dims` (sorted, distinct) the naive way: gather the
/// values that land on each output element, in row-major order, then `f`.
fn reduce_ref(x: &Nd, dims: &[usize], keepdim: bool, f: impl Fn(&[f64]) -> f64) -> Nd {
    let kept_shape: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(d, &s)| if dims.contains(&d) { 1 } else { s })
        .collect();
    let mut groups = vec![Vec::new(); numel(&kept_shape)];
    for idx in indices(&x.shape) {
        let o: Vec<usize> = idx
            .iter()
            .enumerate()
            .map(|(d, &i)| if dims.contains(&d) { 0 } else { i })
            .collect();
        groups[flat(&kept_shape, &o)].push(x.get(&idx));
    }
    let shape = if keepdim {
        kept_shape
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !dims.contains(d))
            .map(|(_, &s)| s)
            .collect()
    };
    Nd {
        shape,
        data: groups.iter().map(|g| f(g)).collect(),
    }
}

fn lse_ref(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Applies `f` to every row along `dim` (the 1-D slices with all other
/// indices fixed), writing each row's results back in place.
fn along_dim(x: &Nd, dim: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Nd {
    let mut out = x.clone();
    for idx in indices(&x.shape) {
        if idx[dim] != 0 {
            continue;
        }
        let row_idx = |j: usize| {
            let mut i = idx.clone();
            i[dim] = j;
            i
        };
        let row: Vec<f64> = (0..x.shape[dim]).map(|j| x.get(&row_idx(j))).collect();
        for (j, v) in f(&row).into_iter().enumerate() {
            let p = flat(&x.shape, &row_idx(j));
            out.data[p] = v;
        }
    }
    out
}

fn softmax_ref(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return vec![f64::NAN; row.len()];
    }
    let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
    row.iter().map(|v| (v - m).exp() / s).collect()
}

fn log_softmax_ref(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return vec![f64::NAN; row.len()];
    }
    let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    row.iter().map(|v| v - lse).collect()
}

/// Layer norm of one row, written from the definition.
fn layer_norm_row(x: &[f64], w: Option<&[f64]>, b: Option<&[f64]>, eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mu = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    (0..x.len())
        .map(|j| {
            let h = (x[j] - mu) * rstd;
            h * w.map_or(1.0, |w| w[j]) + b.map_or(0.0, |b| b[j])
        })
        .collect()
}

fn dims_from_mask(rank: usize, mask: u8) -> Vec<usize> {
    (0..rank).filter(|d| mask & (1 << d) != 0).collect()
}

/// Dims as the user might pass them: some negative, in any order.
fn as_user_dims(dims: &[usize], rank: usize, neg: u8) -> Vec<i64> {
    let mut v: Vec<i64> = dims
        .iter()
        .map(|&d| {
            if neg & (1 << d) != 0 {
                d as i64 - rank as i64
            } else {
                d as i64
            }
        })
        .collect();
    v.reverse();
    v
}

proptest! {
    #![proptest_config(Config::with_cases(cases(CASES)))]

    #[test]
    fn unary_ops_match_reference(
        shape in shape_with_zeros(4, 4), view in arb_view(), dtype in float_dtype(), seed in any::<u64>()
    ) {
        let (rtol, atol) = tol(dtype);
        for (name, op, reference, dom) in unary_cases() {
            let (x, xr) = make(&shape, view, dtype, dom, seed);
            let y = op(&x);
            prop_assert_eq!(y.dtype(), dtype);
            prop_assert!(y.is_contiguous());
            check(name, &y, &xr.map(reference), rtol, atol)?;
        }
    }

    #[test]
    fn binary_ops_broadcast_like_numpy(
        shape in shape_with_zeros(4, 3),
        va in arb_view(), vb in arb_view(), dtype in float_dtype(),
        seed in any::<u64>(), swap in any::<bool>()
    ) {
        let (rtol, atol) = tol(dtype);
        let mut g = Gen(seed);
        let sa = broadcastable(&shape, &mut g);
        let sb = if swap { shape.clone() } else { broadcastable(&shape, &mut g) };
        let out_shape = broadcast(&sa, &sb);
        for (name, op, reference, da, db) in binary_cases() {
            let (a, ar) = make(&sa, va, dtype, da, g.next());
            let (b, br) = make(&sb, vb, dtype, db, g.next());
            let expected = Nd::from_fn(&out_shape, |i| {
                reference(get_broadcast(&ar, i), get_broadcast(&br, i))
            });
            check(name, &op(&a, &b), &expected, rtol, atol)?;
        }
    }

    #[test]
    fn comparisons_where_and_masked_fill(
        shape in shape_with_zeros(3, 3),
        va in arb_view(), vb in arb_view(), vc in arb_view(),
        dtype in prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::I64)],
        seed in any::<u64>()
    ) {
        let mut g = Gen(seed);
        let (sa, sb, sc) = (broadcastable(&shape, &mut g), broadcastable(&shape, &mut g), broadcastable(&shape, &mut g));
        let (a, ar) = make(&sa, va, dtype, Dom::Small, g.next());
        let (b, br) = make(&sb, vb, dtype, Dom::Small, g.next());
        let ab = broadcast(&sa, &sb);
        type Cmp = (&'static str, fn(&Tensor, &Tensor) -> Tensor, fn(f64, f64) -> bool);
        let cmps: [Cmp; 6] = [
            ("eq", |a, b| a.eq(b).unwrap(), |x, y| x == y),
            ("ne", |a, b| a.ne(b).unwrap(), |x, y| x != y),
            ("lt", |a, b| a.lt(b).unwrap(), |x, y| x < y),
            ("le", |a, b| a.le(b).unwrap(), |x, y| x <= y),
            ("gt", |a, b| a.gt(b).unwrap(), |x, y| x > y),
            ("ge", |a, b| a.ge(b).unwrap(), |x, y| x >= y),
        ];
        for (name, op, reference) in cmps {
            let m = op(&a, &b);
            prop_assert_eq!(m.dtype(), DType::Bool);
            let expected = Nd::from_fn(&ab, |i| reference(get_broadcast(&ar, i), get_broadcast(&br, i)) as u8 as f64);
            check(name, &m, &expected, 0.0, 0.0)?;
        }
        // where(cond, a, b) with all three broadcast together.
        let (c, cr) = make(&sc, vc, DType::Bool, Dom::Small, g.next());
        let abc = broadcast(&ab, &sc);
        let w = Tensor::where_(&c, &a, &b).unwrap();
        let expected = Nd::from_fn(&abc, |i| {
            if get_broadcast(&cr, i) != 0.0 { get_broadcast(&ar, i) } else { get_broadcast(&br, i) }
        });
        check("where", &w, &expected, 0.0, 0.0)?;
        // masked_fill: the mask broadcasts to the input's shape.
        if dtype != DType::I64 {
            let (x, xr) = make(&shape, va, dtype, Dom::Normal, g.next());
            let ms = broadcastable(&shape, &mut g);
            let (m, mr) = make(&ms, vb, DType::Bool, Dom::Small, g.next());
            let f = x.masked_fill(&m, f64::NEG_INFINITY).unwrap();
            let expected = Nd::from_fn(&shape, |i| {
                if get_broadcast(&mr, i) != 0.0 { f64::NEG_INFINITY } else { xr.get(i) }
            });
            check("masked_fill", &f, &expected, 0.0, 0.0)?;
        }
    }

    #[test]
    fn reductions_over_any_dims(
        shape in shape_with_zeros(4, 4), view in arb_view(), dtype in float_dtype(),
        mask in any::<u8>(), neg in any::<u8>(), keepdim in any::<bool>(), seed in any::<u64>()
    ) {
        let rank = shape.len();
        let dims = dims_from_mask(rank, mask);
        let udims = as_user_dims(&dims, rank, neg);
        let (x, xr) = make(&shape, view, dtype, Dom::Normal, seed);
        let (rtol, atol) = match dtype { DType::F64 => (1e-12, 1e-12), _ => (1e-6, 1e-6) };
        // r elements reduce into each of k outputs.
        let r: usize = dims.iter().map(|&d| shape[d]).product();
        let k: usize = (0..rank).filter(|d| !dims.contains(d)).map(|d| shape[d]).product();

        let sum = reduce_ref(&xr, &dims, keepdim, |v| v.iter().sum());
        check("sum", &x.sum(&udims, keepdim).unwrap(), &sum, rtol, atol)?;
        let mean = reduce_ref(&xr, &dims, keepdim, |v| v.iter().sum::<f64>() / v.len() as f64);
        check("mean", &x.mean(&udims, keepdim).unwrap(), &mean, rtol, atol)?;
        let lse = reduce_ref(&xr, &dims, keepdim, lse_ref);
        let lse_rtol = if dtype == DType::F64 { rtol } else { 2e-6 };
        check("logsumexp", &x.logsumexp(&udims, keepdim).unwrap(), &lse, lse_rtol, atol)?;
        for c in [0usize, 1] {
            let var = reduce_ref(&xr, &dims, keepdim, |v| {
                let m = v.iter().sum::<f64>() / v.len() as f64;
                v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() as f64 - c as f64)
            });
            check("var", &x.var(&udims, c, keepdim).unwrap(), &var, rtol, atol)?;
        }
        if r == 0 && k > 0 {
            prop_assert!(x.max(&udims, keepdim).is_err());
            prop_assert!(x.min(&udims, keepdim).is_err());
        } else {
            let max = reduce_ref(&xr, &dims, keepdim, |v| v.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
            check("max", &x.max(&udims, keepdim).unwrap(), &max, 0.0, 0.0)?;
            let min = reduce_ref(&xr, &dims, keepdim, |v| v.iter().cloned().fold(f64::INFINITY, f64::min));
            check("min", &x.min(&udims, keepdim).unwrap(), &min, 0.0, 0.0)?;
        }
        // argmax along one dim: the first index of the maximum.
        if rank > 0 {
            let d = (mask as usize) % rank;
            if shape[d] > 0 {
                let am = reduce_ref(&xr, &[d], keepdim, |v| {
                    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    v.iter().position(|&x| x == m).unwrap() as f64
                });
                let got = x.argmax(d as i64 - if neg & 1 == 1 { rank as i64 } else { 0 }, keepdim).unwrap();
                prop_assert_eq!(got.dtype(), DType::I64);
                check("argmax", &got, &am, 0.0, 0.0)?;
            }
        }
        // sum_all and mean_all are the reductions over every dim.
        let total: f64 = xr.data.iter().sum();
        check("sum_all", &x.sum_all().unwrap(), &Nd { shape: vec![], data: vec![total] }, rtol, atol)?;
    }

    #[test]
    fn softmax_and_log_softmax_along_any_dim(
        shape in shape_strategy(4, 5), view in arb_view(), dtype in float_dtype(),
        wide in any::<bool>(), dim_pick in any::<u8>(), seed in any::<u64>()
    ) {
        prop_assume!(!shape.is_empty());
        let rank = shape.len();
        let d = dim_pick as usize % rank;
        let user_dim = if dim_pick & 0x80 != 0 { d as i64 - rank as i64 } else { d as i64 };
        let dom = if wide { Dom::Wide } else { Dom::Normal };
        let (x, xr) = make(&shape, view, dtype, dom, seed);
        let (rtol, atol) = match dtype { DType::F64 => (1e-12, 1e-13), _ => (1e-5, 1e-6) };
        check("softmax", &x.softmax(user_dim).unwrap(), &along_dim(&xr, d, softmax_ref), rtol, atol)?;
        // log_softmax's absolute error follows the inputs' magnitude: x − lse
        // is rounded at the scale of |x|.
        let scale = xr.data.iter().filter(|v| v.is_finite()).fold(1.0f64, |m, v| m.max(v.abs()));
        check("log_softmax", &x.log_softmax(user_dim).unwrap(), &along_dim(&xr, d, log_softmax_ref), rtol, atol * scale * 4.0)?;
    }

    #[test]
    fn softmax_backward_kernels(
        shape in shape_strategy(3, 5), vy in arb_view(), vg in arb_view(), dtype in float_dtype(),
        dim_pick in any::<u8>(), seed in any::<u64>()
    ) {
        prop_assume!(!shape.is_empty());
        let d = dim_pick as usize % shape.len();
        let (y, yr) = make(&shape, vy, dtype, Dom::Positive, seed);
        let (dy, dyr) = make(&shape, vg, dtype, Dom::Normal, seed ^ 1);
        let (rtol, atol) = match dtype { DType::F64 => (1e-12, 1e-12), _ => (1e-5, 1e-5) };
        // dx = y ⊙ (dy − Σ_dim dy ⊙ y)
        let mut expected = yr.clone();
        let dot = along_dim(&Nd { shape: shape.clone(), data: yr.data.iter().zip(&dyr.data).map(|(a, b)| a * b).collect() }, d,
            |row| vec![row.iter().sum(); row.len()]);
        for i in 0..expected.data.len() {
            expected.data[i] = yr.data[i] * (dyr.data[i] - dot.data[i]);
        }
        check("softmax_backward", &Tensor::softmax_backward(&y, &dy, d).unwrap(), &expected, rtol, atol)?;
        // dx = dy − exp(y) · Σ_dim dy   (y = log-probabilities)
        let ylog = y.neg().unwrap();
        let sdy = along_dim(&dyr, d, |row| vec![row.iter().sum(); row.len()]);
        let expected = Nd::from_fn(&shape, |i| {
            let p = flat(&shape, i);
            dyr.data[p] - (-yr.data[p]).exp() * sdy.data[p]
        });
        check("log_softmax_backward", &Tensor::log_softmax_backward(&ylog, &dy, d).unwrap(), &expected, rtol, atol)?;
    }

    #[test]
    fn layer_norm_matches_definition(
        lead in shape_strategy(2, 4), c in 1usize..12, view in arb_distinct_view(), vw in arb_view(),
        dtype in float_dtype(), affine in 0u8..4, seed in any::<u64>()
    ) {
        let mut shape = lead.clone();
        shape.push(c);
        let (x, xr) = make(&shape, view, dtype, Dom::Normal, seed);
        let (w, wr) = make(&[c], vw, dtype, Dom::Normal, seed ^ 1);
        let (b, br) = make(&[c], vw, dtype, Dom::Normal, seed ^ 2);
        let (use_w, use_b) = (affine & 1 != 0, affine & 2 != 0);
        let eps = 1e-5;
        let got = x.layer_norm(use_w.then_some(&w), use_b.then_some(&b), eps).unwrap();
        let expected = along_dim(&xr, shape.len() - 1, |row| {
            layer_norm_row(row, use_w.then_some(&wr.data[..]), use_b.then_some(&br.data[..]), eps)
        });
        // The error of x̂ = (x − μ)·rstd is a few roundings of |x| + |μ|,
        // magnified by rstd (large for rows of nearly equal values) and by |w|.
        let ys = values(&got);
        let u = match dtype { DType::F64 => f64::EPSILON, _ => f32::EPSILON as f64 };
        for (r, row) in xr.data.chunks(c).enumerate() {
            let mu = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (j, &xj) in row.iter().enumerate() {
                let p = r * c + j;
                let wj = if use_w { wr.data[j].abs() } else { 1.0 };
                let bound = 16.0 * u * ((xj.abs() + mu.abs()) * rstd * wj + expected.data[p].abs() + 1.0);
                prop_assert!((ys[p] - expected.data[p]).abs() <= bound,
                    "layer_norm row {r} col {j}: got {} expected {} (bound {bound})", ys[p], expected.data[p]);
            }
        }
    }
}

proptest! {
    // Finite differences cost 2·numel forward passes per case: fewer cases.
    #![proptest_config(Config::with_cases(cases(16)))]

    #[test]
    fn layer_norm_backward_matches_finite_differences(
        rows in 1usize..4, c in 2usize..7, vx in arb_distinct_view(), vw in arb_view(), seed in any::<u64>()
    ) {
        let shape = [rows, c];
        let (x, xr) = make(&shape, vx, DType::F64, Dom::Normal, seed);
        let (w, wr) = make(&[c], vw, DType::F64, Dom::Normal, seed ^ 1);
        let (b, br) = make(&[c], vw, DType::F64, Dom::Normal, seed ^ 2);
        let (dy, dyr) = make(&shape, View::Contiguous, DType::F64, Dom::Normal, seed ^ 3);
        let eps = 1e-5;
        let (_, stats) = x.layer_norm_forward(Some(&w), Some(&b), eps).unwrap();
        let (dx, dw, db) = Tensor::layer_norm_backward(&x, Some(&w), &stats, &dy).unwrap();
        // loss(x, w, b) = Σ layer_norm(x)·dy, from the naive forward.
        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            x.chunks(c).zip(dyr.data.chunks(c))
                .map(|(row, g)| layer_norm_row(row, Some(w), Some(b), eps).iter().zip(g).map(|(y, g)| y * g).sum::<f64>())
                .sum()
        };
        let h = 1e-6;
        let fd = |which: usize, i: usize| {
            let mut args = [xr.data.clone(), wr.data.clone(), br.data.clone()];
            args[which][i] += h;
            let up = loss(&args[0], &args[1], &args[2]);
            args[which][i] -= 2.0 * h;
            let down = loss(&args[0], &args[1], &args[2]);
            (up - down) / (2.0 * h)
        };
        for (which, got) in [(0, values(&dx)), (1, values(&dw)), (2, values(&db))] {
            for (i, &g) in got.iter().enumerate() {
                let f = fd(which, i);
                prop_assert!((f - g).abs() <= 1e-6 * (1.0 + f.abs()),
                    "grad {} [{i}]: analytic {g} vs finite difference {f}", ["x", "w", "b"][which]);
            }
        }
    }
}

/// Results are bit-identical whatever the thread count: no op splits a
/// reduction across a thread-count–dependent number of pieces. The inputs
/// are large enough to take every parallel path.
#[test]
fn results_do_not_depend_on_thread_count() {
    let mut g = Gen(42);
    let data: Vec<f32> = (0..300 * 700).map(|_| g.range(-4.0, 4.0) as f32).collect();
    let x = Tensor::from_vec(data, &[300, 700]).unwrap();
    let w = Tensor::from_vec(
        (0..700).map(|i| 1.0 + i as f32 * 1e-3).collect::<Vec<_>>(),
        &[700],
    )
    .unwrap();
    let targets = Tensor::from_vec(
        (0..300)
            .map(|n| if n % 7 == 6 { -100 } else { n * 13 % 700 })
            .collect::<Vec<i64>>(),
        &[300],
    )
    .unwrap();
    let run = || -> Vec<Vec<u32>> {
        let (loss, stats) = x.cross_entropy_forward(&targets, -100).unwrap();
        let one = Tensor::full(&[], 1.0, kiln_tensor::DType::F32);
        let outs = [
            Tensor::cross_entropy_backward(&x, &stats, &one).unwrap(),
            loss,
            x.softmax(-1).unwrap(),
            x.softmax(0).unwrap(),
            x.log_softmax(-1).unwrap(),
            x.layer_norm(Some(&w), Some(&w), 1e-5).unwrap(),
            x.sum(&[0], false).unwrap(),
            x.sum(&[1], false).unwrap(),
            x.sum_all().unwrap(),
            x.var(&[1], 1, false).unwrap(),
            x.logsumexp(&[0], false).unwrap(),
            x.exp().unwrap(),
            x.gelu().unwrap(),
            x.tanh().unwrap(),
            x.add(&w).unwrap(),
            x.t().unwrap().contiguous(),
            x.matmul(&x.t().unwrap()).unwrap(),
            // A batch of six 50×700 · 700×50 products (one per task).
            x.reshape(&[6, 50, 700])
                .unwrap()
                .matmul(&x.reshape(&[6, 50, 700]).unwrap().transpose(1, 2).unwrap())
                .unwrap(),
        ];
        outs.iter()
            .map(|t| {
                t.to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect()
    };
    let before = kiln_tensor::parallel::num_threads();
    kiln_tensor::parallel::set_num_threads(1);
    let one = run();
    kiln_tensor::parallel::set_num_threads(3);
    let three = run();
    kiln_tensor::parallel::set_num_threads(before);
    for (i, (a, b)) in one.iter().zip(&three).enumerate() {
        assert!(a == b, "output {i} differs between 1 and 3 threads");
    }
}
