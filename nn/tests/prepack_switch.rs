//! `set_weight_prepacking(false)` keeps bf16 layers from keeping packed
//! weights (its own process: the switch is process-wide).

use kiln_autograd::{no_grad, Var};
use kiln_nn::{
    prepacked_bytes, set_weight_prepacking, weight_prepacking, Conv1D, Forward, PREPACK_MIN_ROWS,
};
use kiln_tensor::{DType, Rng, Tensor};

#[test]
fn with_prepacking_off_a_reused_bf16_weight_is_not_packed() {
    let mut rng = Rng::new(4);
    let mut conv = Conv1D::new(64, 48, 0.5, DType::F32, &mut rng).unwrap();
    conv.weight = Var::parameter(conv.weight.value().to_dtype(DType::BF16));
    let x = Var::constant(
        Tensor::randn(&[PREPACK_MIN_ROWS, 64], 0.0, 1.0, DType::F32, &mut rng).unwrap(),
    );
    assert!(weight_prepacking());
    set_weight_prepacking(false);
    let off: Vec<_> = (0..3)
        .map(|_| no_grad(|| conv.forward(&x)).unwrap().value())
        .collect();
    assert_eq!(prepacked_bytes(&conv.weight), 0);
    // Back on, uses count from now: the second long product packs it,
    // with the same bits.
    set_weight_prepacking(true);
    no_grad(|| conv.forward(&x)).unwrap();
    assert_eq!(prepacked_bytes(&conv.weight), 0);
    let on = no_grad(|| conv.forward(&x)).unwrap().value();
    let isa = kiln_tensor::kernels::isa::Isa::detect();
    assert_eq!(
        prepacked_bytes(&conv.weight) > 0,
        isa.has_amx() || isa.has_bf16_dot()
    );
    for y in off {
        assert_eq!(y.to_vec::<f32>().unwrap(), on.to_vec::<f32>().unwrap());
    }
}
