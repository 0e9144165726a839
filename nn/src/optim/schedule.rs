//! Learning-rate schedules: the LR to use at each optimizer step.
//!
//! `step` counts optimizer steps from 0 (the LR for the first update).

use std::f64::consts::PI;

/// A learning-rate schedule relative to a base rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The base rate at every step.
    Constant,
    /// transformers' `get_linear_schedule_with_warmup`: the factor rises
    /// linearly `step/warmup` from 0, then falls linearly to 0 at `total`:
    /// `max(0, (total − step)/(total − warmup))`.
    LinearWarmupDecay {
        /// Warmup steps.
        warmup: usize,
        /// Total training steps.
        total: usize,
    },
    /// nanoGPT's schedule: linear warmup `lr·(step+1)/(warmup+1)`, then a
    /// cosine from `lr` down to `min_lr` at `total`, then `min_lr`.
    WarmupCosine {
        /// Warmup steps.
        warmup: usize,
        /// Step at which the decay reaches `min_lr`.
        total: usize,
        /// The floor.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// The learning rate at optimizer step `step` for base rate `lr`.
    pub fn lr_at(&self, step: usize, lr: f64) -> f64 {
        match *self {
            LrSchedule::Constant => lr,
            LrSchedule::LinearWarmupDecay { warmup, total } => {
                let factor = if step < warmup {
                    step as f64 / warmup.max(1) as f64
                } else {
                    ((total as f64 - step as f64) / (total as f64 - warmup as f64).max(1.0))
                        .max(0.0)
                };
                lr * factor
            }
            LrSchedule::WarmupCosine {
                warmup,
                total,
                min_lr,
            } => {
                if step < warmup {
                    return lr * (step + 1) as f64 / (warmup + 1) as f64;
                }
                if step > total {
                    return min_lr;
                }
                let ratio = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                let coeff = 0.5 * (1.0 + (PI * ratio).cos());
                min_lr + coeff * (lr - min_lr)
            }
        }
    }
}
