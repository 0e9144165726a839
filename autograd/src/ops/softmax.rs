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

    /// Causal attention probabilities: softmax over the last dim of
    /// `self / divisor` with column `j` of row `r` (dim −2) hidden when
    /// `j > offset + r` (see [`Tensor::causal_softmax`]); one op instead of
    /// div, masked_fill and softmax.
    ///
    /// # Errors
    /// The tensor error below rank 2 or for a non-float dtype.
    pub fn causal_softmax(&self, divisor: f64, offset: usize) -> Result<Var> {
        let out = self.value().causal_softmax(divisor, offset)?;
        let y = out.clone();
        // Hidden entries have y = 0, so the softmax rule gives them 0 too.
        record(
            "causal_softmax",
            "dx = y·(g − Σ g·y)/d",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(Tensor::causal_softmax_backward(&y, g, divisor)?)])),
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
