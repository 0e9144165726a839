//! Dropout (inverted): zero each element with probability `p` and scale the
//! survivors by `1/(1 − p)`, so the expected value is unchanged and eval
//! mode is the identity.

use kiln_tensor::{DType, Rng, Tensor};

use crate::tape::record;
use crate::{AutogradError, Result, Var};

impl Var {
    /// Inverted dropout with drop probability `p`, drawing the mask from
    /// `rng` in row-major order (seeded, reproducible). `p = 0` returns
    /// `self` unchanged. Callers skip it in eval mode (kiln-nn's `Dropout`
    /// does).
    ///
    /// # Errors
    /// [`AutogradError::Invalid`] unless `0 ≤ p < 1`; a dtype error for
    /// non-float values.
    pub fn dropout(&self, p: f64, rng: &mut Rng) -> Result<Var> {
        if !(0.0..1.0).contains(&p) {
            return Err(AutogradError::Invalid {
                op: "dropout",
                msg: format!("drop probability must be in [0, 1), got {p}"),
            });
        }
        if p == 0.0 {
            return Ok(self.clone());
        }
        let x = self.value();
        let scale = 1.0 / (1.0 - p);
        let keep: Vec<f64> = (0..x.numel())
            .map(|_| if rng.uniform() >= p { scale } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(keep, x.shape())?.to_dtype(x.dtype());
        if !matches!(x.dtype(), DType::F32 | DType::F64) {
            return Err(kiln_tensor::TensorError::DType {
                op: "dropout",
                got: x.dtype(),
                expected: "f32 or f64".into(),
            }
            .into());
        }
        let out = x.mul(&mask)?;
        // y = x·m/(1−p): dx = g·m/(1−p)
        record(
            "dropout",
            "dx = g·mask/(1−p)",
            &[self],
            out,
            Box::new(move |g| Ok(vec![Some(g.mul(&mask)?)])),
        )
    }
}
