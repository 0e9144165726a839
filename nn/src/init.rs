//! Parameter initialisation, seeded and reproducible.
//!
//! GPT-2 (and nanoGPT, and transformers' `GPT2PreTrainedModel._init_weights`)
//! initialise every Linear/Conv1D weight and embedding from `N(0, 0.02²)`,
//! biases to zero, LayerNorm weights to one and biases to zero, and scale the
//! residual projections (`attn.c_proj`, `mlp.c_proj`) down to
//! `N(0, (0.02/√(2·n_layer))²)` so the residual stream's variance does not
//! grow with depth.

use kiln_tensor::{DType, Rng, Tensor};

use crate::Result;

/// The standard deviation GPT-2 initialises weights with.
pub const GPT2_INIT_STD: f64 = 0.02;

/// `N(mean, std²)` samples of `shape`.
///
/// # Errors
/// A dtype error unless `dtype` is f32/f64.
pub fn normal(shape: &[usize], mean: f64, std: f64, dtype: DType, rng: &mut Rng) -> Result<Tensor> {
    Ok(Tensor::randn(shape, mean, std, dtype, rng)?)
}

/// `U(low, high)` samples of `shape`.
///
/// # Errors
/// A dtype error unless `dtype` is f32/f64.
pub fn uniform(
    shape: &[usize],
    low: f64,
    high: f64,
    dtype: DType,
    rng: &mut Rng,
) -> Result<Tensor> {
    Ok(Tensor::rand_uniform(shape, low, high, dtype, rng)?)
}

/// The standard deviation of GPT-2's residual projections:
/// `0.02 / √(2·n_layer)`.
pub fn gpt2_residual_std(n_layer: usize) -> f64 {
    GPT2_INIT_STD / (2.0 * n_layer as f64).sqrt()
}
