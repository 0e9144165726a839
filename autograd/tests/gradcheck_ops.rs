//! Finite-difference checks of every differentiable op, on random shapes,
//! with broadcasting and non-contiguous (transposed, narrowed, expanded)
//! inputs. Each case builds a small composite around the op so the check
//! also exercises the engine's unbroadcasting and accumulation.

use kiln_autograd::{gradcheck, GradcheckOptions, Result, Var};
use kiln_tensor::{DType, Rng, Tensor};
use proptest::prelude::*;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, DType::F64, &mut Rng::new(seed)).unwrap()
}

#[track_caller]
fn check(f: impl Fn(&[Var]) -> Result<Var>, inputs: Vec<Tensor>) {
    let report = gradcheck(f, &inputs, &GradcheckOptions::default()).unwrap();
    assert!(report.passed(), "{report}");
    assert!(report.checked > 0);
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..4, 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn binary_ops_broadcast(s in shape(), seed in 0u64..1000, drop_lead in any::<bool>()) {
        // rhs broadcasts: size-1 dims in place of some, maybe fewer dims.
        let rs: Vec<usize> = s.iter().enumerate().map(|(i, &d)| if (seed >> i) & 1 == 1 { 1 } else { d }).collect();
        let rs = if drop_lead && rs.len() > 1 { rs[1..].to_vec() } else { rs };
        let a = randn(&s, seed);
        // keep the divisor away from zero
        let b = randn(&rs, seed + 1).abs().unwrap().add_scalar(0.5).unwrap();
        check(|v| v[0].add(&v[1]), vec![a.clone(), b.clone()]);
        check(|v| v[0].sub(&v[1]), vec![a.clone(), b.clone()]);
        check(|v| v[0].mul(&v[1]), vec![a.clone(), b.clone()]);
        check(|v| v[0].div(&v[1]), vec![a.clone(), b.clone()]);
        check(|v| v[1].div(&v[0].exp()?), vec![a, b]);
    }

    #[test]
    fn unary_ops(s in shape(), seed in 0u64..1000) {
        let x = randn(&s, seed);
        let pos = x.abs().unwrap().add_scalar(0.3).unwrap();
        check(|v| v[0].exp(), vec![x.clone()]);
        check(|v| v[0].log(), vec![pos.clone()]);
        check(|v| v[0].sqrt(), vec![pos.clone()]);
        check(|v| v[0].powf(1.7), vec![pos]);
        check(|v| v[0].tanh(), vec![x.clone()]);
        // f64 → f32 → f64 rounds, so check the exact round trip f64 → f64
        // and that a cast in the middle leaves the gradient's dtype whole.
        check(|v| v[0].to_dtype(DType::F64)?.mul_scalar(2.0), vec![x.clone()]);
        check(|v| v[0].sigmoid(), vec![x.clone()]);
        check(|v| v[0].gelu(), vec![x.clone()]);
        check(|v| v[0].neg()?.mul_scalar(3.0)?.add_scalar(1.0)?.div_scalar(2.0), vec![x.clone()]);
        // relu's kink at 0 is avoided by shifting values away from it
        let away = x.mul(&x.abs().unwrap().add_scalar(0.1).unwrap()).unwrap();
        check(|v| v[0].relu(), vec![away]);
    }

    #[test]
    fn reductions(s in shape(), seed in 0u64..1000, keep in any::<bool>()) {
        let x = randn(&s, seed);
        let d = (seed as usize) % s.len();
        check(|v| v[0].sum(&[d], keep), vec![x.clone()]);
        check(|v| v[0].mean(&[d], keep), vec![x.clone()]);
        check(|v| v[0].sum_all(), vec![x.clone()]);
        // max: distinct values 0.1 apart (a permutation of 0..n), so the
        // maximum is unique and stays put under ±ε
        let n = x.numel();
        let step = (1..n.max(2)).find(|k| gcd(*k, n) == 1).unwrap_or(1);
        let distinct = Tensor::from_vec((0..n).map(|i| ((i * step) % n) as f64 * 0.1).collect::<Vec<_>>(), &s).unwrap();
        check(|v| v[0].max(&[d], keep), vec![distinct]);
    }

    #[test]
    fn movement_and_views(s in prop::collection::vec(2usize..4, 2..4), seed in 0u64..1000) {
        let x = randn(&s, seed);
        let r = s.len();
        let perm: Vec<usize> = (0..r).rev().collect();
        let w = randn(&perm.iter().map(|&p| s[p]).collect::<Vec<_>>(), seed + 7);
        check(|v| v[0].permute(&perm)?.mul(&v[1]), vec![x.clone(), w]);
        check(|v| v[0].transpose(0, -1)?.reshape(&[x.numel()])?.mul_scalar(2.0), vec![x.clone()]);
        check(|v| v[0].narrow(-1, 1, s[r - 1] - 1)?.exp(), vec![x.clone()]);
        // Narrows of a node: their gradients are added into slices of the
        // node's gradient in place, overlapping, mixed with a full one.
        check(|v| {
            let y = v[0].mul(&v[0])?;
            let l = s[r - 1];
            let a = y.narrow(-1, 0, l - l / 2)?.exp()?.sum_all()?;
            let b = y.narrow(-1, l / 2, l - l / 2)?.tanh()?.sum_all()?;
            a.add(&b)?.add(&y.mul_scalar(0.5)?.sum_all()?)
        }, vec![x.clone()]);
        check(|v| v[0].unsqueeze(1)?.squeeze(1)?.tanh(), vec![x.clone()]);
        let mut big = vec![2];
        big.extend(&s);
        check(|v| v[0].broadcast_to(&big)?.sin_var(), vec![x.clone()]);
        check(|v| {
            let parts = v[0].chunk(2, 0)?;
            Var::cat(&[&parts[1], &parts[0].exp()?], 0)
        }, vec![x.clone()]);
        // a non-contiguous input: the transposed view goes in as is
        let xt = x.transpose(0, 1).unwrap();
        check(|v| v[0].mul(&v[0])?.sum(&[0], false), vec![xt]);
    }

    #[test]
    fn matmul_batched_and_broadcast(m in 1usize..4, k in 1usize..4, n in 1usize..4, b in 1usize..3, seed in 0u64..1000) {
        let a = randn(&[b, m, k], seed);
        let w = randn(&[k, n], seed + 1);
        check(|v| v[0].matmul(&v[1]), vec![a.clone(), w.clone()]);
        let bb = randn(&[b, 1, k, n], seed + 2);
        check(|v| v[0].matmul(&v[1]), vec![a.clone(), bb]);
        // transposed operands and vectors
        let wt = randn(&[n, k], seed + 3);
        check(|v| v[0].matmul(&v[1].t()?), vec![a, wt]);
        let x = randn(&[k], seed + 4);
        check(|v| v[0].matmul(&v[1]), vec![x.clone(), w.clone()]);
        check(|v| v[1].t()?.matmul(&v[0]), vec![x, w]);
    }

    #[test]
    fn softmax_family(s in shape(), seed in 0u64..1000) {
        let x = randn(&s, seed).mul_scalar(3.0).unwrap();
        let d = (seed as usize) % s.len();
        check(|v| v[0].softmax(d), vec![x.clone()]);
        check(|v| v[0].log_softmax(d), vec![x.clone()]);
        if s.len() >= 2 {
            check(|v| v[0].causal_softmax(1.7, (seed as usize) % 3), vec![x.clone()]);
        }
    }

    #[test]
    fn layer_norm_affine(rows in 1usize..4, c in 2usize..6, seed in 0u64..1000) {
        let x = randn(&[rows, c], seed);
        let w = randn(&[c], seed + 1);
        let b = randn(&[c], seed + 2);
        check(|v| v[0].layer_norm(Some(&v[1]), Some(&v[2]), 1e-5), vec![x.clone(), w, b]);
        check(|v| v[0].layer_norm(None, None, 1e-5), vec![x]);
    }

    #[test]
    fn cross_entropy_with_ignore(n in 1usize..5, c in 2usize..6, seed in 0u64..1000) {
        let x = randn(&[n, c], seed);
        let mut r = Rng::new(seed);
        let mut t: Vec<i64> = (0..n).map(|_| r.below(c as u64) as i64).collect();
        if n > 1 {
            t[0] = -100;
        }
        let targets = Tensor::from_vec(t, &[n]).unwrap();
        check(|v| v[0].cross_entropy(&targets, -100), vec![x]);
    }

    #[test]
    fn indexing(v in 2usize..6, c in 1usize..4, n in 1usize..6, seed in 0u64..1000) {
        let w = randn(&[v, c], seed);
        let mut r = Rng::new(seed);
        let ids = Tensor::from_vec((0..n).map(|_| r.below(v as u64) as i64).collect::<Vec<_>>(), &[n]).unwrap();
        check(|x| x[0].index_select(0, &ids)?.tanh(), vec![w.clone()]);
        let g = Tensor::from_vec((0..v).map(|_| r.below(c as u64) as i64).collect::<Vec<_>>(), &[v, 1]).unwrap();
        check(|x| x[0].gather(1, &g), vec![w.clone()]);
        let mask = w.gt_scalar(0.0).unwrap();
        check(|x| x[0].masked_fill(&mask, -5.0)?.exp(), vec![w.clone()]);
        let other = randn(&[c], seed + 9);
        check(|x| Var::where_(&mask, &x[0], &x[1]), vec![w, other]);
    }
}

#[test]
fn dropout_gradient_uses_the_same_mask() {
    let x = randn(&[4, 5], 3);
    let report = gradcheck(
        |v| {
            let mut rng = Rng::new(11);
            v[0].dropout(0.3, &mut rng)
        },
        &[x],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(report.passed(), "{report}");
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

trait SinVar {
    fn sin_var(&self) -> Result<Var>;
}
impl SinVar for Var {
    fn sin_var(&self) -> Result<Var> {
        self.tanh()?.mul_scalar(2.0)
    }
}
