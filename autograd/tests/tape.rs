//! Tape behaviour: recording, no_grad, accumulation, stale values, tracing.

use kiln_autograd::{backward_all, no_grad, tape_len, trace, AutogradError, Var};
use kiln_tensor::{DType, Tensor};

fn param(v: Vec<f64>, s: &[usize]) -> Var {
    Var::parameter(Tensor::from_vec(v, s).unwrap())
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let w = param(vec![1.0, 2.0], &[2]);
    for _ in 0..2 {
        w.mul_scalar(3.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec::<f64>().unwrap(), vec![6.0, 6.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

/// A leaf used twice in one pass gains that pass's sum in one addition, as
/// PyTorch's `AccumulateGrad` does: after two passes it holds
/// `(a1 + b1) + (a2 + b2)`, not `((a1 + b1) + a2) + b2`. f32 values are
/// chosen so that the two orders round differently.
#[test]
fn a_pass_adds_its_summed_gradient_to_a_leaf_once() {
    let w = Var::parameter(Tensor::from_vec(vec![0f32], &[1]).unwrap());
    let scales = [(1.0f64, 1e-8f64), (3e-8, 3e-8)];
    for (a, b) in scales {
        let y = w
            .mul_scalar(a)
            .unwrap()
            .add(&w.mul_scalar(b).unwrap())
            .unwrap();
        y.sum_all().unwrap().backward().unwrap();
    }
    let got = w.grad().unwrap().to_vec::<f32>().unwrap()[0];
    // Each use's gradient is its scale, rounded to f32; the engine sums
    // the uses of a pass in the order backward reaches them (b, then a).
    let per_pass: Vec<f32> = scales.iter().map(|&(a, b)| b as f32 + a as f32).collect();
    assert_eq!(got.to_bits(), (per_pass[0] + per_pass[1]).to_bits());
    let sequential =
        ((scales[0].1 as f32 + scales[0].0 as f32) + scales[1].1 as f32) + scales[1].0 as f32;
    assert_ne!(
        got.to_bits(),
        sequential.to_bits(),
        "the test must tell the orders apart"
    );
}

/// The hook runs once per pass, after the pass's whole gradient (both uses
/// of the leaf) is in `.grad`, and no more once its handle is dropped.
#[test]
fn post_accumulate_hooks_see_the_pass_gradient_once() {
    use std::sync::{Arc, Mutex};
    let w = param(vec![1.0, 2.0], &[2]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle = {
        let (w2, seen) = (w.clone(), seen.clone());
        w.register_post_accumulate_grad_hook(move || {
            let g = w2.grad().unwrap().to_vec::<f64>().unwrap();
            seen.lock().unwrap().push(g);
        })
        .unwrap()
    };
    let pass = || {
        let y = w
            .mul_scalar(2.0)
            .unwrap()
            .add(&w.mul_scalar(3.0).unwrap())
            .unwrap();
        y.sum_all().unwrap().backward().unwrap();
    };
    pass();
    pass();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![vec![5.0, 5.0], vec![10.0, 10.0]]
    );
    drop(handle);
    pass();
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(Var::constant(Tensor::ones(&[1], DType::F64))
        .register_post_accumulate_grad_hook(|| {})
        .is_err());
}

/// Two losses from one forward pass with a shared trunk: one pass over
/// both gives what `(l1 + l2).backward()` gives; a second `backward()`
/// after the first is the stale-tape error, which points to `backward_all`.
#[test]
fn two_losses_of_one_forward_in_one_pass() {
    let w = param(vec![0.5, -2.0], &[2]);
    let losses = || {
        let h = w.exp().unwrap(); // the shared trunk
        let l1 = h.sum_all().unwrap();
        let l2 = h.mul(&h).unwrap().sum_all().unwrap();
        (l1, l2)
    };
    let (l1, l2) = losses();
    backward_all(&[&l1, &l2]).unwrap();
    let both = w.grad().unwrap().to_vec::<f64>().unwrap();
    w.zero_grad();
    let (l1, l2) = losses();
    l1.add(&l2).unwrap().backward().unwrap();
    assert_eq!(both, w.grad().unwrap().to_vec::<f64>().unwrap());
    w.zero_grad();
    let (l1, l2) = losses();
    l1.backward().unwrap();
    let err = l2.backward().unwrap_err();
    assert!(
        matches!(err, AutogradError::StaleTape { .. }) && err.to_string().contains("backward_all"),
        "{err}"
    );
}

#[test]
fn no_grad_records_nothing() {
    let w = param(vec![1.0], &[1]);
    let before = tape_len();
    let y = no_grad(|| w.exp().unwrap());
    assert_eq!(tape_len(), before);
    assert!(!y.requires_grad());
    assert!(matches!(
        y.sum_all().unwrap().backward(),
        Err(AutogradError::NoGrad)
    ));
}

#[test]
fn detach_stops_gradients() {
    let w = param(vec![2.0], &[1]);
    let y = w.mul(&w.detach()).unwrap().sum_all().unwrap(); // d/dw (w·c) = c
    y.backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec::<f64>().unwrap(), vec![2.0]);
}

#[test]
fn a_freed_tape_cannot_be_replayed() {
    let w = param(vec![1.0, 2.0], &[2]);
    let y = w.exp().unwrap();
    let loss = y.sum_all().unwrap();
    loss.backward().unwrap();
    let err = y.sum_all().unwrap_err();
    assert!(matches!(err, AutogradError::StaleTape { .. }), "{err}");
    assert!(matches!(
        loss.backward(),
        Err(AutogradError::StaleTape { .. })
    ));
}

#[test]
fn non_scalar_backward_needs_a_gradient() {
    let w = param(vec![1.0, 2.0], &[2]);
    let y = w.exp().unwrap();
    assert!(matches!(y.backward(), Err(AutogradError::NotScalar { .. })));
    y.backward_with(Tensor::ones(&[2], DType::F64)).unwrap();
    assert!(w.grad().is_some());
}

#[test]
fn frozen_parameters_get_no_gradient() {
    let w = param(vec![1.0], &[1]);
    let f = param(vec![5.0], &[1]);
    f.set_requires_grad(false).unwrap();
    w.mul(&f).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(f.grad().is_none());
    assert_eq!(w.grad().unwrap().to_vec::<f64>().unwrap(), vec![5.0]);
}

#[test]
fn trace_shows_views_copies_and_rules() {
    kiln_autograd::clear_tape();
    let w = Var::parameter(Tensor::ones(&[3, 4], DType::F32));
    let t = w.t().unwrap(); // a view
    let r = t.reshape(&[12]).unwrap(); // transposed: must copy
    let loss = r.sum_all().unwrap();
    let tr = trace::tape();
    assert_eq!(tr.entries.len(), 3);
    assert!(tr.entries[0].is_view && tr.entries[0].bytes == 0);
    assert!(!tr.entries[1].is_view && tr.entries[1].bytes == 48);
    assert!(tr.entries[1].note.is_some());
    let text = tr.to_string();
    assert!(
        text.contains("transpose") && text.contains("reshape") && text.contains("view"),
        "{text}"
    );
    loss.backward().unwrap();
    let bt = trace::last_backward();
    let ops: Vec<&str> = bt.steps.iter().map(|s| s.op).collect();
    assert_eq!(ops, vec!["sum", "reshape", "transpose"]);
}

/// A tied head, `h · wᵀ` with `w` a contiguous `[V, C]` parameter, gets its
/// gradient contiguous (no transposing copy) and equal to `gᵀ · h`.
#[test]
fn transposed_weight_gets_a_contiguous_gradient() {
    let w = param((0..12).map(|i| i as f64 * 0.1).collect(), &[4, 3]);
    let h =
        Var::constant(Tensor::from_vec((0..6).map(|i| 1.0 - i as f64).collect(), &[2, 3]).unwrap());
    let y = h.matmul(&w.t().unwrap()).unwrap(); // [2, 4]
    let r = Tensor::from_vec((0..8).map(|i| i as f64).collect(), &[2, 4]).unwrap();
    y.mul(&Var::constant(r.clone()))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = w.grad().unwrap();
    assert!(g.is_contiguous());
    let want = r.t().unwrap().matmul(&h.value()).unwrap(); // [4, 3]
    assert_eq!(g.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
}
