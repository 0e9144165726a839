//! Property tests of layouts, movement, indexing, matmul and dtype
//! conversion against naive references (see `common/mod.rs` for how the
//! random strided views are made).

mod common;

use common::*;
use half::{bf16, f16};
use kiln_tensor::{DType, Layout, Tensor};
use proptest::prelude::*;
use proptest::test_runner::Config;

const CASES: u32 = 64;

/// Storage positions of a layout's elements in row-major order.
fn positions(l: &Layout) -> Vec<usize> {
    indices(l.shape()).iter().map(|i| l.index_of(i)).collect()
}

/// Whether the elements of `l`, in row-major order, can be described by a
/// layout of `shape` over the same storage — decided naively: the stride of
/// each new dim is forced (the storage step to its first neighbour), so
/// derive it and check every element.
fn view_possible(l: &Layout, shape: &[usize]) -> bool {
    let pos = positions(l);
    if pos.is_empty() {
        return true;
    }
    let mut step = vec![1; shape.len()]; // row-major steps of `shape`
    for k in (0..shape.len().saturating_sub(1)).rev() {
        step[k] = step[k + 1] * shape[k + 1];
    }
    let strides: Vec<isize> = (0..shape.len())
        .map(|k| {
            if shape[k] > 1 {
                pos[step[k]] as isize - pos[0] as isize
            } else {
                0
            }
        })
        .collect();
    indices(shape).iter().enumerate().all(|(p, idx)| {
        let at: isize = idx
            .iter()
            .zip(&strides)
            .map(|(&i, &s)| i as isize * s)
            .sum();
        pos[p] as isize == pos[0] as isize + at
    })
}

/// A random shape with `n` elements: `n`'s prime factors grouped at random,
/// with 1s sprinkled in (a 0 somewhere when `n` is 0).
fn shape_with_numel(n: usize, g: &mut Gen) -> Vec<usize> {
    let mut factors = Vec::new();
    let mut m = n;
    let mut p = 2;
    while m > 1 && p * p <= m {
        while m.is_multiple_of(p) {
            factors.push(p);
            m /= p;
        }
        p += 1;
    }
    if m > 1 {
        factors.push(m);
    }
    let rank = 1 + g.below(4);
    let mut shape = vec![1usize; rank];
    for f in factors {
        shape[g.below(rank)] *= f;
    }
    if n == 0 {
        shape[g.below(rank)] = 0;
    }
    shape
}

/// Matrix product the textbook way, in f64: batch dims broadcast,
/// 1-D operands promoted as `torch.matmul` does and the added dim dropped.
fn matmul_ref(a: &Nd, b: &Nd) -> (Nd, Nd) {
    let a2 = if a.shape.len() == 1 {
        Nd {
            shape: vec![1, a.shape[0]],
            data: a.data.clone(),
        }
    } else {
        a.clone()
    };
    let b2 = if b.shape.len() == 1 {
        Nd {
            shape: vec![b.shape[0], 1],
            data: b.data.clone(),
        }
    } else {
        b.clone()
    };
    let (ar, br) = (a2.shape.len(), b2.shape.len());
    let (m, k, n) = (a2.shape[ar - 2], a2.shape[ar - 1], b2.shape[br - 1]);
    let batch = broadcast(&a2.shape[..ar - 2], &b2.shape[..br - 2]);
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let mut out = Nd::from_fn(&out_shape, |_| 0.0);
    // Σ|a·b| per element: the scale of the rounding error of the sum.
    let mut mag = out.clone();
    for idx in indices(&out_shape) {
        let (i, j) = (idx[idx.len() - 2], idx[idx.len() - 1]);
        let bidx = &idx[..idx.len() - 2];
        let (mut s, mut t) = (0.0, 0.0);
        for p in 0..k {
            let mut ai = bidx.to_vec();
            ai.extend([i, p]);
            let mut bi = bidx.to_vec();
            bi.extend([p, j]);
            let v = get_broadcast(&a2, &ai) * get_broadcast(&b2, &bi);
            s += v;
            t += v.abs();
        }
        let q = flat(&out_shape, &idx);
        out.data[q] = s;
        mag.data[q] = t;
    }
    let mut final_shape = out_shape.clone();
    if b.shape.len() == 1 {
        final_shape.remove(final_shape.len() - 1);
    }
    if a.shape.len() == 1 {
        final_shape.remove(final_shape.len() - if b.shape.len() == 1 { 1 } else { 2 });
    }
    out.shape = final_shape.clone();
    mag.shape = final_shape;
    (out, mag)
}

proptest! {
    #![proptest_config(Config::with_cases(cases(CASES)))]

    /// `contiguous()` and `to_vec` read exactly the elements a strided walk
    /// of the layout visits; `is_contiguous` holds exactly when that walk is
    /// `offset, offset + 1, …`.
    #[test]
    fn contiguous_equals_strided_walk(
        shape in shape_with_zeros(4, 4), view in arb_view(),
        dtype in prop_oneof![Just(DType::F32), Just(DType::F64), Just(DType::I64), Just(DType::Bool), Just(DType::F16)],
        seed in any::<u64>()
    ) {
        let (x, xr) = make(&shape, view, dtype, Dom::Small, seed);
        let c = x.contiguous();
        prop_assert!(c.is_contiguous());
        prop_assert_eq!(c.dtype(), dtype);
        prop_assert_eq!(values(&c), xr.data.clone());
        let pos = positions(x.layout());
        let dense = pos.iter().enumerate().all(|(i, &p)| p == pos[0] + i);
        if !pos.is_empty() {
            prop_assert_eq!(x.is_contiguous(), dense);
        }
        if x.is_contiguous() {
            prop_assert!(c.shares_storage(&x));
        }
    }

    /// `reshape` returns a view exactly when one exists (decided naively),
    /// copies otherwise, and reshaping back restores the tensor.
    #[test]
    fn reshape_round_trips_and_views_when_possible(
        shape in shape_with_zeros(4, 4), view in arb_view(), seed in any::<u64>()
    ) {
        let (x, xr) = make(&shape, view, DType::F64, Dom::Normal, seed);
        let mut g = Gen(seed ^ 7);
        let target = shape_with_numel(numel(&shape), &mut g);
        let y = x.reshape(&target).unwrap();
        prop_assert_eq!(y.shape(), &target[..]);
        prop_assert_eq!(values(&y), xr.data.clone());
        let possible = view_possible(x.layout(), &target);
        prop_assert_eq!(y.shares_storage(&x), possible,
            "layout {:?} → {:?}: view possible = {}", x.layout(), target, possible);
        prop_assert_eq!(x.view(&target).is_ok(), possible);
        let back = y.reshape(&shape).unwrap();
        prop_assert_eq!(values(&back), xr.data.clone());
        // A wrong element count is an error naming both shapes.
        let mut bad = target.clone();
        bad.push(2);
        if numel(&bad) != numel(&shape) {
            let e = x.reshape(&bad).unwrap_err().to_string();
            prop_assert!(e.contains(&format!("{shape:?}")) && e.contains(&format!("{bad:?}")), "{}", e);
        }
    }

    #[test]
    fn index_select_and_index_add(
        shape in shape_strategy(3, 4), view in arb_view(), vs in arb_view(), dtype in float_dtype(),
        dim_pick in any::<u8>(), nidx in 0usize..5, seed in any::<u64>()
    ) {
        prop_assume!(!shape.is_empty());
        let d = dim_pick as usize % shape.len();
        let mut g = Gen(seed);
        let idx: Vec<i64> = (0..nidx).map(|_| g.below(shape[d]) as i64).collect();
        let it = Tensor::from_vec(idx.clone(), &[nidx]).unwrap();
        let (x, xr) = make(&shape, view, dtype, Dom::Normal, g.next());
        let mut sshape = shape.clone();
        sshape[d] = nidx;
        let expected = Nd::from_fn(&sshape, |i| {
            let mut j = i.to_vec();
            j[d] = idx[i[d]] as usize;
            xr.get(&j)
        });
        check("index_select", &x.index_select(d, &it).unwrap(), &expected, 0.0, 0.0)?;

        let (src, sr) = make(&sshape, vs, dtype, Dom::Normal, g.next());
        let mut out = xr.clone();
        for i in indices(&sshape) {
            let mut j = i.clone();
            j[d] = idx[i[d]] as usize;
            let p = flat(&shape, &j);
            out.data[p] += sr.get(&i);
        }
        let (rtol, atol) = tol(dtype);
        check("index_add", &x.index_add(d, &it, &src).unwrap(), &out, rtol, atol)?;
        // An index out of range is reported with the size and dim.
        let bad = Tensor::from_vec(vec![shape[d] as i64], &[1]).unwrap();
        let e = x.index_select(d, &bad).unwrap_err().to_string();
        prop_assert!(e.contains(&format!("index {} is out of range for size {} along dim {d}", shape[d], shape[d])), "{}", e);
    }

    #[test]
    fn gather_and_scatter_add(
        shape in shape_strategy(3, 4), view in arb_view(), vs in arb_view(), dtype in float_dtype(),
        dim_pick in any::<u8>(), seed in any::<u64>()
    ) {
        prop_assume!(!shape.is_empty());
        let d = dim_pick as usize % shape.len();
        let mut g = Gen(seed);
        // index: same rank, no larger than `self` except along `dim`.
        let ishape: Vec<usize> = shape.iter().enumerate()
            .map(|(k, &s)| if k == d { g.below(5) } else { g.below(s + 1) })
            .collect();
        let idx = Nd::from_fn(&ishape, |_| g.below(shape[d]) as f64);
        let it = tensor_of(&idx.data, &ishape, DType::I64);
        let (x, xr) = make(&shape, view, dtype, Dom::Normal, g.next());
        let expected = Nd::from_fn(&ishape, |i| {
            let mut j = i.to_vec();
            j[d] = idx.get(i) as usize;
            xr.get(&j)
        });
        check("gather", &x.gather(d, &it).unwrap(), &expected, 0.0, 0.0)?;

        let (src, sr) = make(&ishape, vs, dtype, Dom::Normal, g.next());
        let mut out = xr.clone();
        for i in indices(&ishape) {
            let mut j = i.clone();
            j[d] = idx.get(&i) as usize;
            let p = flat(&shape, &j);
            out.data[p] += sr.get(&i);
        }
        let (rtol, atol) = tol(dtype);
        check("scatter_add", &x.scatter_add(d, &it, &src).unwrap(), &out, rtol, atol)?;
    }

    #[test]
    fn cat_stack_split_chunk_round_trip(
        shape in shape_strategy(3, 5), views in prop::collection::vec(arb_view(), 1..4),
        dim_pick in any::<u8>(), seed in any::<u64>()
    ) {
        prop_assume!(!shape.is_empty());
        let d = dim_pick as usize % shape.len();
        let mut g = Gen(seed);
        // cat of views of different sizes along `d` = naive concatenation.
        let parts: Vec<(Tensor, Nd)> = views.iter().map(|&v| {
            let mut s = shape.clone();
            s[d] = g.below(4);
            make(&s, v, DType::F32, Dom::Normal, g.next())
        }).collect();
        let refs: Vec<&Tensor> = parts.iter().map(|p| &p.0).collect();
        let c = Tensor::cat(&refs, d).unwrap();
        let mut cshape = shape.clone();
        cshape[d] = parts.iter().map(|p| p.1.shape[d]).sum();
        let expected = Nd::from_fn(&cshape, |i| {
            let mut j = i.to_vec();
            for (_, pr) in &parts {
                if j[d] < pr.shape[d] {
                    return pr.get(&j);
                }
                j[d] -= pr.shape[d];
            }
            unreachable!()
        });
        check("cat", &c, &expected, 0.0, 0.0)?;

        // split into random sizes, then cat back: the identity, and views.
        let (x, xr) = make(&shape, views[0], DType::F64, Dom::Normal, g.next());
        let mut sizes = Vec::new();
        let mut left = shape[d];
        while left > 0 {
            let s = 1 + g.below(left);
            sizes.push(s);
            left -= s;
        }
        let pieces = x.split_sizes(&sizes, d).unwrap();
        prop_assert!(pieces.iter().all(|p| p.shares_storage(&x)));
        let back = Tensor::cat(&pieces.iter().collect::<Vec<_>>(), d).unwrap();
        prop_assert_eq!(values(&back), xr.data.clone());

        // chunk: ceil(n / chunks) per piece, the last smaller; cat restores.
        let chunks = 1 + g.below(5);
        let ch = x.chunk(chunks, d).unwrap();
        let per = shape[d].div_ceil(chunks);
        prop_assert!(ch.len() <= chunks);
        for (i, p) in ch.iter().enumerate() {
            let want = per.min(shape[d] - i * per);
            prop_assert_eq!(p.shape()[d], want);
        }
        let back = Tensor::cat(&ch.iter().collect::<Vec<_>>(), d).unwrap();
        prop_assert_eq!(values(&back), xr.data.clone());

        // stack along any new dim: slice i of the result is tensor i.
        let sd = g.below(shape.len() + 1);
        let same: Vec<(Tensor, Nd)> = views.iter().map(|&v| make(&shape, v, DType::F64, Dom::Normal, g.next())).collect();
        let s = Tensor::stack(&same.iter().map(|p| &p.0).collect::<Vec<_>>(), sd).unwrap();
        let mut sshape = shape.clone();
        sshape.insert(sd, same.len());
        let expected = Nd::from_fn(&sshape, |i| {
            let mut j = i.to_vec();
            let which = j.remove(sd);
            same[which].1.get(&j)
        });
        check("stack", &s, &expected, 0.0, 0.0)?;
    }

    /// topk agrees with a full stable sort of each row: best first, equal
    /// values in index order.
    #[test]
    fn topk_matches_full_sort(
        shape in shape_strategy(3, 6), view in arb_view(), dtype in float_dtype(),
        dim_pick in any::<u8>(), kpick in any::<u8>(), largest in any::<bool>(),
        ties in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(!shape.is_empty());
        let d = dim_pick as usize % shape.len();
        let k = kpick as usize % (shape[d] + 1);
        let (x, xr) = make(&shape, view, dtype, if ties { Dom::Small } else { Dom::Normal }, seed);
        let (v, i) = x.topk(k, d, largest).unwrap();
        let mut oshape = shape.clone();
        oshape[d] = k;
        let sorted_row = |row: &[f64]| -> Vec<(usize, f64)> {
            let mut r: Vec<(usize, f64)> = row.iter().cloned().enumerate().collect();
            r.sort_by(|a, b| {
                let o = a.1.partial_cmp(&b.1).unwrap();
                (if largest { o.reverse() } else { o }).then(a.0.cmp(&b.0))
            });
            r
        };
        let pick = |i: &[usize], what: usize| {
            let row: Vec<f64> = (0..shape[d]).map(|j| { let mut q = i.to_vec(); q[d] = j; xr.get(&q) }).collect();
            let s = sorted_row(&row)[i[d]];
            if what == 0 { s.1 } else { s.0 as f64 }
        };
        check("topk values", &v, &Nd::from_fn(&oshape, |i| pick(i, 0)), 0.0, 0.0)?;
        check("topk indices", &i, &Nd::from_fn(&oshape, |i| pick(i, 1)), 0.0, 0.0)?;
    }

    /// matmul against a triple loop, on transposed, sliced, broadcast and
    /// batched operands, with 1-D operands and zero-size dims.
    #[test]
    fn matmul_matches_triple_loop(
        batch in shape_strategy(2, 3), m in 0usize..6, k in 0usize..7, n in 0usize..6,
        va in arb_view(), vb in arb_view(), dtype in float_dtype(),
        one_d in 0u8..4, seed in any::<u64>()
    ) {
        let mut g = Gen(seed);
        let mut sa = broadcastable(&batch, &mut g);
        sa.extend([m, k]);
        let mut sb = broadcastable(&batch, &mut g);
        sb.extend([k, n]);
        if one_d & 1 != 0 { sa = vec![k]; }
        if one_d & 2 != 0 { sb = vec![k]; }
        let (a, ar) = make(&sa, va, dtype, Dom::Normal, g.next());
        let (b, br) = make(&sb, vb, dtype, Dom::Normal, g.next());
        let c = a.matmul(&b).unwrap();
        let (expected, mag) = matmul_ref(&ar, &br);
        prop_assert_eq!(c.shape(), &expected.shape[..]);
        // Recursive summation of k products errs by at most about k·u·Σ|a·b|
        // (u = unit roundoff); blocked kernels do no worse.
        let u = match dtype { DType::F64 => f64::EPSILON / 2.0, _ => f32::EPSILON as f64 / 2.0 };
        let got = values(&c);
        for (p, (&x, &e)) in got.iter().zip(&expected.data).enumerate() {
            let bound = 2.0 * (k as f64 + 2.0) * u * mag.data[p] + f64::MIN_POSITIVE;
            prop_assert!((x - e).abs() <= bound, "element {p}: got {x}, expected {e}, bound {bound}");
        }
    }
}

/// Decodes an IEEE binary16 bit pattern from its definition.
fn f16_value(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let man = (bits & 0x3ff) as f64;
    match exp {
        0 => sign * man * 2f64.powi(-24),
        31 if man == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + man / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Every f16 bit pattern converts to the exact f32 value its definition
/// gives, and converts back to the same bits (NaNs stay NaN with their sign).
#[test]
fn every_f16_round_trips_through_f32() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let h = Tensor::from_vec(
        bits.iter().map(|&b| f16::from_bits(b)).collect(),
        &[bits.len()],
    )
    .unwrap();
    let f = h.to_dtype(DType::F32);
    let fv = f.to_vec::<f32>().unwrap();
    let back = f.to_dtype(DType::F16).to_vec::<f16>().unwrap();
    let via_f64 = h.to_dtype(DType::F64).to_vec::<f64>().unwrap();
    for (i, &b) in bits.iter().enumerate() {
        let exact = f16_value(b);
        if exact.is_nan() {
            assert!(fv[i].is_nan() && back[i].is_nan(), "{b:#06x}");
            assert_eq!(fv[i].is_sign_negative(), b & 0x8000 != 0, "{b:#06x} sign");
            assert_eq!(back[i].to_bits() & 0x8000, b & 0x8000, "{b:#06x} sign back");
        } else {
            assert_eq!(fv[i] as f64, exact, "{b:#06x} → f32");
            assert_eq!(via_f64[i], exact, "{b:#06x} → f64");
            assert_eq!(back[i].to_bits(), b, "{b:#06x} → f32 → f16");
        }
    }
}

/// Every bf16 bit pattern is the top half of an f32: conversion is a shift,
/// and it converts back to the same bits.
#[test]
fn every_bf16_round_trips_through_f32() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let h = Tensor::from_vec(
        bits.iter().map(|&b| bf16::from_bits(b)).collect(),
        &[bits.len()],
    )
    .unwrap();
    let f = h.to_dtype(DType::F32);
    let fv = f.to_vec::<f32>().unwrap();
    let back = f.to_dtype(DType::BF16).to_vec::<bf16>().unwrap();
    for (i, &b) in bits.iter().enumerate() {
        let exact = f32::from_bits((b as u32) << 16);
        if exact.is_nan() {
            assert!(fv[i].is_nan() && back[i].is_nan(), "{b:#06x}");
            assert_eq!(back[i].to_bits() & 0x8000, b & 0x8000, "{b:#06x} sign");
        } else {
            assert_eq!(fv[i].to_bits(), exact.to_bits(), "{b:#06x} → f32");
            assert_eq!(back[i].to_bits(), b, "{b:#06x} → f32 → bf16");
        }
    }
}

/// f32 → f16 and f32 → bf16 round to nearest, ties to even, overflowing to
/// ±inf, checked against a search over every finite value of the format.
#[test]
fn f32_to_half_formats_round_to_nearest_even() {
    // All finite non-negative values of each format, ascending, with bits.
    let table = |decode: &dyn Fn(u16) -> f64, max_bits: u16| -> Vec<(f64, u16)> {
        (0..=max_bits).map(|b| (decode(b), b)).collect()
    };
    let f16s = table(&f16_value, 0x7bff);
    let bf16s = table(&|b| f32::from_bits((b as u32) << 16) as f64, 0x7f7f);
    let nearest = |v: f64, tab: &[(f64, u16)], overflow: f64| -> u16 {
        let a = v.abs();
        let sign = if v.is_sign_negative() { 0x8000 } else { 0 };
        if a >= overflow {
            return sign | (tab.last().unwrap().1 + 1); // the infinity pattern
        }
        let i = tab.partition_point(|&(x, _)| x < a);
        let bits = if i == 0 {
            tab[0].1
        } else if i == tab.len() {
            tab[i - 1].1
        } else {
            let (lo, hi) = (tab[i - 1], tab[i]);
            let (dl, dh) = (a - lo.0, hi.0 - a);
            if dl < dh || (dl == dh && lo.1 % 2 == 0) {
                lo.1
            } else {
                hi.1
            }
        };
        sign | bits
    };
    let mut g = Gen(3);
    let mut xs: Vec<f32> = (0..20_000)
        .map(|_| {
            // Random bit patterns of finite floats across the whole range,
            // plus values near the formats' interesting edges.
            let v = f32::from_bits(g.next() as u32);
            if v.is_finite() {
                v
            } else {
                1.0
            }
        })
        .collect();
    xs.extend([
        0.0,
        -0.0,
        65504.0,
        65519.99,
        65520.0,
        -65520.0,
        6.0e-8,
        2.98e-8,
        2.99e-8,
        5.96e-8,
        1.0 + 1.0 / 2048.0,
        1.0 + 3.0 / 2048.0,
    ]);
    let t = Tensor::from_vec(xs.clone(), &[xs.len()]).unwrap();
    let h = t.to_dtype(DType::F16).to_vec::<f16>().unwrap();
    let b = t.to_dtype(DType::BF16).to_vec::<bf16>().unwrap();
    // Overflow thresholds: halfway between the largest finite value and the
    // next power of two (which rounds to even, i.e. to infinity).
    let f16_over = 65520.0;
    let bf16_over = 2f64.powi(128) - 2f64.powi(119);
    for (i, &x) in xs.iter().enumerate() {
        let want = nearest(x as f64, &f16s, f16_over);
        assert_eq!(h[i].to_bits(), want, "f16 of {x:e}");
        let want = nearest(x as f64, &bf16s, bf16_over);
        assert_eq!(b[i].to_bits(), want, "bf16 of {x:e}");
    }
}
