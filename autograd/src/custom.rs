//! Custom differentiable ops from outside the crate: Kiln's answer to
//! `torch.autograd.Function`.
//!
//! A custom op is a forward value computed however you like (usually with
//! tensor kernels such as [`Tensor::map`] and [`Tensor::zip_map`]) and a
//! backward rule, a closure from the output's gradient to one gradient per
//! input. [`custom_op`] records it on the tape exactly as Kiln's own ops
//! are recorded, so the engine undoes broadcasting, frees what the rule
//! saved once it has run, and shows the op in [`crate::trace`];
//! [`crate::gradcheck`] checks the rule against finite differences.

use kiln_tensor::Tensor;

use crate::tape::record;
use crate::{AutogradError, Result, Var};

/// Records `output = op(inputs)` with the backward rule `backward`: given
/// the gradient of the output (shaped like `output`), it returns one
/// gradient per input, in order (`None` for an input that needs none), each
/// shaped like that input or like the output (the engine sums a broadcast
/// gradient back down). The rule runs at most once, in the next
/// `backward()`; what it captures (saved inputs, the output) is freed after.
///
/// With recording off ([`crate::no_grad`]) or no input requiring grad, the
/// result is a constant and `backward` is dropped at once.
///
/// PyTorch: a `torch.autograd.Function` with `forward` (here: computing
/// `output` before the call) and `backward` (here: the closure), applied
/// with `.apply(*inputs)`.
///
/// ```
/// use kiln_autograd::{custom_op, gradcheck, GradcheckOptions, Var};
/// use kiln_tensor::Tensor;
///
/// // cube(x) = x³ with its own rule: dx = g·3x².
/// fn cube(x: &Var) -> kiln_autograd::Result<Var> {
///     let xv = x.value();
///     let out = xv.map(|v: f64| v * v * v)?;
///     custom_op("cube", &[x], out, move |g| {
///         Ok(vec![Some(xv.zip_map(g, |x: f64, g: f64| g * 3.0 * x * x)?)])
///     })
/// }
///
/// let x = Tensor::from_vec(vec![-1.5f64, 0.5, 2.0], &[3])?;
/// let report = gradcheck(|v| cube(&v[0]), &[x], &GradcheckOptions::default())?;
/// assert!(report.passed(), "{report}");
/// # Ok::<(), kiln_autograd::AutogradError>(())
/// ```
///
/// # Errors
/// [`AutogradError::StaleTape`] when an input was recorded on a tape that
/// was already played back. At backward: [`AutogradError::Invalid`] when
/// the rule returns a number of gradients other than the number of
/// inputs; [`AutogradError::GradShape`] when a gradient's shape does not
/// reduce to its input's; whatever the rule itself returns.
pub fn custom_op(
    op: &'static str,
    inputs: &[&Var],
    output: Tensor,
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Result<Var> {
    let n = inputs.len();
    record(
        op,
        "custom",
        inputs,
        output,
        Box::new(move |g| {
            let grads = backward(g)?;
            if grads.len() != n {
                return Err(AutogradError::Invalid {
                    op,
                    msg: format!(
                        "its backward returned {} gradient(s) for {n} input(s)",
                        grads.len()
                    ),
                });
            }
            Ok(grads)
        }),
    )
}
