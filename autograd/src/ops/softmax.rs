//! Softmax and log-softmax; their backward kernels live in kiln-tensor.

use kiln_tensor::{Dim, Tensor};

use crate::tape::record;
use crate::{Result, Var};

impl Var {
    /// Softmax along `dim` (`torch.softmax`).
    ///
    /// # Errors
    /// The tensor error for a bad dim or dtype.
    pub fn softmax(&self, dim: impl Dim) -> Result<Var> {
        let x = self.value();
        let d = dim.resolve("softmax", x.shape())?;
        let out = x.softmax(d)?;
        let y = out.clone();
        // y = softmax(x): dx = y ⊙ (g − Σ g ⊙ y)
        record(
            "softmax",
            "dx = y·(g − Σ g·y)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(Tensor::softmax_backward(&y, g, d)?)])),
        )
    }

    /// Log-softmax along `dim` (`torch.log_softmax`).
    ///
    /// # Errors
    /// The tensor error for a bad dim or dtype.
    pub fn log_softmax(&self, dim: impl Dim) -> Result<Var> {
        let x = self.value();
        let d = dim.resolve("log_softmax", x.shape())?;
        let out = x.log_softmax(d)?;
        let y = out.clone();
        // y = log_softmax(x): dx = g − exp(y)·Σ g
        record(
            "log_softmax",
            "dx = g − exp(y)·Σ g",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(Tensor::log_softmax_backward(&y, g, d)?)])),
        )
    }
}
