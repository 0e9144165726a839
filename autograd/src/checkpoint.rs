//! Gradient checkpointing (`torch.utils.checkpoint.checkpoint`): a segment
//! of the forward pass that keeps only its inputs for backward and runs
//! again, recording this time, when backward reaches it.
//!
//! ```text
//!   plain:        x ── [ln → attn → add → ln → mlp → add] ── y    every node saves its tensors
//!   checkpointed: x ── [ one node: saves x and `recompute` ] ── y
//!   backward at y: recompute(x') on a fresh tape → y' ; y'.backward(dy)
//!                  → dx = x'.grad, and the segment's parameters get their
//!                    gradients exactly as in the plain pass
//! ```
//!
//! Activation memory of a stack of L checkpointed blocks is thus L block
//! inputs plus one block's internals (during its recomputation), instead of
//! L blocks' internals.
//!
//! **Bit-identical gradients.** The recomputation runs the same kernels on
//! the same values, so it records the same nodes in the same order and its
//! backward adds the same numbers in the same order as the plain pass. Two
//! things must be replayed for that, and both are the caller's or this
//! module's job:
//! - *state the segment advances*, such as a dropout generator: `recompute`
//!   must be built before `forward` runs, capturing that state by value
//!   (a clone of the module, whose generator is then at the same point), so
//!   it draws the same masks;
//! - *the autocast mode*: recorded with the segment and restored for the
//!   recomputation.

use kiln_tensor::Tensor;

use crate::tape::{is_grad_enabled, record_always, BackwardFn, NoGradGuard};
use crate::{autocast_bf16, is_autocast_bf16, AutogradError, Var};

/// Runs `forward(inputs)` without recording its internals and returns its
/// output as one tape node; when backward reaches that node it runs
/// `recompute` on copies of the inputs, recording, and back-propagates
/// through that — the parameters the segment uses receive their gradients
/// then, and the inputs' gradients flow on.
///
/// `forward` and `recompute` must compute the same function, bit for bit:
/// build `recompute` from a clone of the module taken *before* `forward`
/// runs, so generators it advances (dropout) replay the same stream.
/// Outside a recording context (inside [`crate::no_grad`]) this is just
/// `forward(inputs)`.
///
/// PyTorch: `torch.utils.checkpoint.checkpoint(fn, *inputs,
/// use_reentrant=False, preserve_rng_state=True)`; unlike the reentrant
/// variant, parameters get gradients even when no input requires grad.
///
/// The segment may fail with any error type that an [`AutogradError`]
/// converts into (a module's own error type, say).
///
/// # Errors
/// Whatever `forward` returns. At backward: what `recompute`'s own backward
/// returns, an error of `recompute` as [`AutogradError::Invalid`] with its
/// message, and [`AutogradError::GradShape`] if `recompute`'s output is not
/// shaped like `forward`'s.
pub fn checkpoint<F, R, E>(inputs: &[Var], forward: F, recompute: R) -> std::result::Result<Var, E>
where
    F: FnOnce(&[Var]) -> std::result::Result<Var, E>,
    R: FnOnce(&[Var]) -> std::result::Result<Var, E> + 'static,
    E: From<AutogradError> + std::fmt::Display,
{
    if !is_grad_enabled() {
        return forward(inputs);
    }
    let values: Vec<Tensor> = inputs.iter().map(|v| v.value()).collect();
    let wants: Vec<bool> = inputs.iter().map(|v| v.requires_grad()).collect();
    let out = {
        let _guard = NoGradGuard::new();
        let consts: Vec<Var> = values.iter().cloned().map(Var::constant).collect();
        forward(&consts)?.value()
    };
    let bf16 = is_autocast_bf16();
    let out_shape = out.shape().to_vec();
    let backward: BackwardFn = Box::new(move |grad: &Tensor| {
        // Fresh leaves stand in for the inputs; the parameters inside the
        // segment are the real ones and accumulate their gradients.
        let replicas: Vec<Var> = values
            .into_iter()
            .zip(&wants)
            .map(|(v, &w)| {
                if w {
                    Var::parameter(v)
                } else {
                    Var::constant(v)
                }
            })
            .collect();
        let y = {
            let _grad = crate::tape::GradMode::set(true);
            let run = || recompute(&replicas);
            if bf16 { autocast_bf16(run) } else { run() }.map_err(|e| AutogradError::Invalid {
                op: "checkpoint (recomputing the segment)",
                msg: e.to_string(),
            })?
        };
        if y.value().shape() != out_shape.as_slice() {
            return Err(AutogradError::GradShape {
                op: "checkpoint",
                expected: out_shape,
                got: y.value().shape().to_vec(),
            });
        }
        if y.requires_grad() {
            y.backward_with(grad.clone())?;
        }
        Ok(replicas.iter().map(|r| r.grad()).collect())
    });
    let refs: Vec<&Var> = inputs.iter().collect();
    Ok(record_always(
        "checkpoint",
        "recompute, then backward",
        &refs,
        out,
        backward,
    )?)
}

#[cfg(test)]
mod tests {
    use kiln_tensor::testing::f32_bits;
    use kiln_tensor::{DType, Rng, Tensor};

    use super::*;
    use crate::no_grad;

    /// A two-layer segment with a random mask drawn from `rng`.
    fn segment(x: &Var, w1: &Var, w2: &Var, rng: &mut Rng) -> crate::Result<Var> {
        let h = x.matmul(w1)?.gelu()?.dropout(0.3, rng)?;
        h.matmul(w2)?.add(x)
    }

    fn grads(checkpointed: bool) -> Vec<Vec<u32>> {
        let mut init = Rng::new(5);
        let x = Var::parameter(Tensor::randn(&[4, 8], 0.0, 1.0, DType::F32, &mut init).unwrap());
        let w1 = Var::parameter(Tensor::randn(&[8, 16], 0.0, 1.0, DType::F32, &mut init).unwrap());
        let w2 = Var::parameter(Tensor::randn(&[16, 8], 0.0, 1.0, DType::F32, &mut init).unwrap());
        let mut rng = Rng::new(9);
        let y = if checkpointed {
            let (a, b) = (w1.clone(), w2.clone());
            let mut replay = rng.clone();
            let y = checkpoint(
                std::slice::from_ref(&x),
                |xs| segment(&xs[0], &w1, &w2, &mut rng),
                move |xs| segment(&xs[0], &a, &b, &mut replay),
            )
            .unwrap();
            // Checkpoint twice in a row: the second segment's input is the
            // first one's output node.
            let mut replay2 = rng.clone();
            let (a, b) = (w1.clone(), w2.clone());
            checkpoint(
                &[y],
                |xs| segment(&xs[0], &w1, &w2, &mut rng),
                move |xs| segment(&xs[0], &a, &b, &mut replay2),
            )
            .unwrap()
        } else {
            let y = segment(&x, &w1, &w2, &mut rng).unwrap();
            segment(&y, &w1, &w2, &mut rng).unwrap()
        };
        y.mul(&y).unwrap().sum_all().unwrap().backward().unwrap();
        [&x, &w1, &w2]
            .iter()
            .map(|v| f32_bits(&v.grad().unwrap()))
            .collect()
    }

    #[test]
    fn gradients_are_bit_identical_to_the_plain_pass() {
        assert_eq!(grads(true), grads(false));
    }

    #[test]
    fn internals_are_not_on_the_tape() {
        crate::clear_tape();
        let mut init = Rng::new(1);
        let x = Var::parameter(Tensor::randn(&[2, 4], 0.0, 1.0, DType::F32, &mut init).unwrap());
        let w = Var::parameter(Tensor::randn(&[4, 4], 0.0, 1.0, DType::F32, &mut init).unwrap());
        let w2 = w.clone();
        let y = checkpoint(
            std::slice::from_ref(&x),
            |xs| xs[0].matmul(&w)?.tanh()?.matmul(&w),
            move |xs| xs[0].matmul(&w2)?.tanh()?.matmul(&w2),
        )
        .unwrap();
        assert_eq!(crate::tape_len(), 1);
        y.sum_all().unwrap().backward().unwrap();
        assert!(x.grad().is_some() && w.grad().is_some());
    }

    #[test]
    fn parameters_get_gradients_when_no_input_requires_grad() {
        let mut init = Rng::new(2);
        let x = Var::constant(Tensor::randn(&[2, 4], 0.0, 1.0, DType::F32, &mut init).unwrap());
        let w = Var::parameter(Tensor::randn(&[4, 3], 0.0, 1.0, DType::F32, &mut init).unwrap());
        let w2 = w.clone();
        let y = checkpoint(
            std::slice::from_ref(&x),
            |xs| xs[0].matmul(&w),
            move |xs| xs[0].matmul(&w2),
        )
        .unwrap();
        y.sum_all().unwrap().backward().unwrap();
        let plain = Var::parameter(w.value());
        x.matmul(&plain)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(
            f32_bits(&w.grad().unwrap()),
            f32_bits(&plain.grad().unwrap())
        );
    }

    #[test]
    fn without_recording_it_is_the_forward() {
        let x = Var::parameter(Tensor::ones(&[2, 2], DType::F32));
        let y = no_grad(|| {
            checkpoint(
                &[x],
                |xs| xs[0].mul_scalar(2.0),
                |_| -> crate::Result<Var> { unreachable!() },
            )
        });
        assert!(!y.unwrap().requires_grad());
    }
}
