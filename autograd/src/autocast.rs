//! Mixed precision, as `torch.autocast("cpu", dtype=torch.bfloat16)`: inside
//! [`autocast_bf16`], every matrix product ([`crate::Var::matmul`]) rounds
//! its operands to bf16 and accumulates in f32
//! ([`kiln_tensor::Tensor::matmul_bf16`]), and so do the two gradient
//! products its backward rule computes — the choice is recorded with the op,
//! so `backward()` may run outside the scope. Everything else (layer norms,
//! softmax, the loss, the weights and the optimizer) stays f32. Unlike
//! torch, the products' results stay f32 instead of being rounded to bf16.

use std::cell::Cell;

thread_local! {
    static BF16: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with bf16 matrix products (see the module docs); the previous
/// mode is restored afterwards, even if `f` panics.
pub fn autocast_bf16<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BF16.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BF16.with(|b| b.replace(true)));
    f()
}

/// Whether matrix products on this thread run in bf16 now.
pub fn is_autocast_bf16() -> bool {
    BF16.with(|b| b.get())
}

#[cfg(test)]
mod tests {
    use kiln_tensor::{DType, Rng, Tensor};

    use super::*;
    use crate::Var;

    #[test]
    fn products_and_their_gradients_round_operands_to_bf16() {
        let mut rng = Rng::new(3);
        let x = Tensor::randn(&[3, 5], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let w = Tensor::randn(&[5, 4], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        let (xv, wv) = (Var::parameter(x.clone()), Var::parameter(w.clone()));
        let y = autocast_bf16(|| xv.matmul(&wv)).unwrap();
        assert!(!is_autocast_bf16(), "the scope restores the mode");
        // backward runs outside the scope, in the precision recorded.
        y.sum_all().unwrap().backward().unwrap();
        let g = Tensor::ones(&[3, 4], DType::F32);
        let same =
            |a: &Tensor, b: &Tensor| a.to_vec::<f32>().unwrap() == b.to_vec::<f32>().unwrap();
        assert!(same(&y.value(), &x.matmul_bf16(&w).unwrap()));
        assert!(same(
            &xv.grad().unwrap(),
            &g.matmul_bf16(&w.t().unwrap()).unwrap()
        ));
        assert!(same(
            &wv.grad().unwrap(),
            &x.t().unwrap().matmul_bf16(&g).unwrap()
        ));
        // Outside the scope: f32 products, which differ.
        assert!(!same(&xv.matmul(&wv).unwrap().value(), &y.value()));
    }
}
