//! Ops defined outside the crate with `custom_op`: checked by finite
//! differences, broadcast gradients undone by the engine, and a rule that
//! returns the wrong number of gradients is an error naming the op.

use kiln_autograd::{custom_op, gradcheck, no_grad, trace, AutogradError, GradcheckOptions, Var};
use kiln_tensor::{DType, Rng, Tensor};

/// `x · eᵇ` with `b` broadcast over `x`'s rows; the rule returns
/// output-shaped gradients for both inputs and leaves `b`'s reduction to
/// the engine.
fn scale_exp(x: &Var, b: &Var) -> kiln_autograd::Result<Var> {
    let (xv, bv) = (x.value(), b.value());
    let eb = bv.map(|v: f64| v.exp())?;
    let out = xv.zip_map(&eb, |x: f64, e: f64| x * e)?;
    let saved = out.clone();
    custom_op("scale_exp", &[x, b], out, move |g| {
        // d/dx = g·eᵇ, d/db = g·x·eᵇ = g·out
        Ok(vec![
            Some(g.zip_map(&eb, |g: f64, e: f64| g * e)?),
            Some(g.zip_map(&saved, |g: f64, y: f64| g * y)?),
        ])
    })
}

#[test]
fn a_custom_op_passes_gradcheck_with_broadcasting() {
    let mut rng = Rng::new(3);
    let x = Tensor::randn(&[3, 4], 0.0, 1.0, DType::F64, &mut rng).unwrap();
    let b = Tensor::randn(&[4], 0.0, 0.5, DType::F64, &mut rng).unwrap();
    let report = gradcheck(
        |v| scale_exp(&v[0], &v[1]),
        &[x, b],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.checked, 12 + 4);
}

#[test]
fn a_custom_op_matches_the_same_function_composed() {
    let x = Var::parameter(Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 3.0], &[2, 2]).unwrap());
    let b = Var::parameter(Tensor::from_vec(vec![0.25f64, -0.5], &[2]).unwrap());
    scale_exp(&x, &b)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (gx, gb) = (x.grad().unwrap(), b.grad().unwrap());
    x.zero_grad();
    b.zero_grad();
    x.mul(&b.exp().unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let close = |a: &Tensor, b: &Tensor| {
        let (a, b) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-12)
    };
    assert!(close(&gx, &x.grad().unwrap()) && close(&gb, &b.grad().unwrap()));
}

#[test]
fn the_trace_names_a_custom_op() {
    let x = Var::parameter(Tensor::ones(&[2], DType::F64));
    let y = custom_op(
        "twice",
        &[&x],
        x.value().map(|v: f64| 2.0 * v).unwrap(),
        |g| Ok(vec![Some(g.mul_scalar(2.0)?)]),
    )
    .unwrap();
    assert!(trace::tape().to_string().contains("twice"));
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![2.0, 2.0]);
}

#[test]
fn a_rule_with_the_wrong_number_of_gradients_is_an_error() {
    let x = Var::parameter(Tensor::ones(&[2], DType::F64));
    let y = custom_op("bad", &[&x], x.value(), |g| Ok(vec![Some(g.clone()), None])).unwrap();
    let err = y.sum_all().unwrap().backward().unwrap_err();
    assert!(
        matches!(&err, AutogradError::Invalid { op: "bad", .. })
            && err.to_string().contains("2 gradient(s) for 1 input(s)"),
        "{err}"
    );
}

#[test]
fn without_recording_a_custom_op_is_a_constant() {
    let x = Var::parameter(Tensor::ones(&[2], DType::F64));
    let y =
        no_grad(|| custom_op("c", &[&x], x.value(), |_| unreachable!("never recorded")).unwrap());
    assert!(!y.requires_grad());
}
