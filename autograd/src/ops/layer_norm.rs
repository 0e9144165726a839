//! Layer norm with a fused backward (one kernel for dx, dw and db).

use kiln_tensor::Tensor;

use crate::tape::record;
use crate::{Result, Var};

impl Var {
    /// Layer norm over the last dim with optional affine `weight`/`bias`
    /// of shape `[C]` (`F.layer_norm(x, [C], weight, bias, eps)`).
    ///
    /// # Errors
    /// The tensor error if weight/bias are not `[C]` or dtypes differ.
    pub fn layer_norm(&self, weight: Option<&Var>, bias: Option<&Var>, eps: f64) -> Result<Var> {
        let x = self.value();
        let w = weight.map(|w| w.value());
        let b = bias.map(|b| b.value());
        let (out, stats) = x.layer_norm_forward(w.as_ref(), b.as_ref(), eps)?;
        let mut inputs: Vec<&Var> = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        // x̂ = (x − μ)·rstd, y = x̂·w + b:
        // dx = rstd·(g·w − mean(g·w) − x̂·mean(g·w·x̂)), dw = Σ g·x̂, db = Σ g
        record(
            "layer_norm",
            "dx = rstd·(ĝ − mean ĝ − x̂·mean(ĝx̂)), dw = Σ g·x̂, db = Σ g",
            &inputs,
            out,
            Box::new(move |g| {
                let (dx, dw, db) = Tensor::layer_norm_backward(&x, w.as_ref(), &stats, g)?;
                let mut grads = vec![Some(dx)];
                if has_w {
                    grads.push(Some(dw));
                }
                if has_b {
                    grads.push(Some(db));
                }
                Ok(grads)
            }),
        )
    }
}
