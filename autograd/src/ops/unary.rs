//! Elementwise functions.

use kiln_tensor::Tensor;

use crate::tape::record;
use crate::{Result, Var};

impl Var {
    /// `eˣ` (`torch.exp`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn exp(&self) -> Result<Var> {
        let out = self.value().exp()?;
        let y = out.clone();
        // y = eˣ: dx = g·y
        record(
            "exp",
            "dx = g·y",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.mul(&y)?)])),
        )
    }

    /// Natural log (`torch.log`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn log(&self) -> Result<Var> {
        let x = self.value();
        let out = x.log()?;
        // y = ln x: dx = g/x
        record(
            "log",
            "dx = g/x",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.div(&x)?)])),
        )
    }

    /// Square root (`torch.sqrt`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn sqrt(&self) -> Result<Var> {
        let out = self.value().sqrt()?;
        let y = out.clone();
        // y = √x: dx = g/(2y)
        record(
            "sqrt",
            "dx = g/(2y)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.div(&y)?.mul_scalar(0.5)?)])),
        )
    }

    /// Hyperbolic tangent (`torch.tanh`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn tanh(&self) -> Result<Var> {
        let out = self.value().tanh()?;
        let y = out.clone();
        // y = tanh x: dx = g·(1 − y²)
        record(
            "tanh",
            "dx = g·(1 − y²)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.mul(&y.square()?.neg()?.add_scalar(1.0)?)?)])),
        )
    }

    /// Logistic sigmoid (`torch.sigmoid`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn sigmoid(&self) -> Result<Var> {
        let out = self.value().sigmoid()?;
        let y = out.clone();
        // y = σ(x): dx = g·y·(1 − y)
        record(
            "sigmoid",
            "dx = g·y·(1 − y)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.mul(&y)?.mul(&y.neg()?.add_scalar(1.0)?)?)])),
        )
    }

    /// `max(x, 0)` (`torch.relu`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn relu(&self) -> Result<Var> {
        let x = self.value();
        let out = x.relu()?;
        // y = max(x, 0): dx = g where x > 0, else 0
        record(
            "relu",
            "dx = g·[x > 0]",
            &[self],
            out,
            Box::new(move |g| {
                let dead = x.gt_scalar(0.0)?;
                Ok(vec![Some(Tensor::where_(
                    &dead,
                    g,
                    &Tensor::zeros(&[], g.dtype()),
                )?)])
            }),
        )
    }

    /// GELU with the tanh approximation, GPT-2's `gelu_new`
    /// (`F.gelu(x, approximate="tanh")`).
    ///
    /// # Errors
    /// A dtype error for non-float values.
    pub fn gelu(&self) -> Result<Var> {
        let x = self.value();
        let out = x.gelu()?;
        // y = gelu(x): dx = g·gelu'(x) (see kiln_tensor::ops::unary::gelu_grad_scalar)
        record(
            "gelu",
            "dx = g·gelu'(x)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(x.gelu_backward(g)?)])),
        )
    }
}
