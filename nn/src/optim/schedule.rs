//! Learning-rate schedules: the LR to use at each optimizer step.
//!
//! [`ScheduleKind`] is the schedule a user picks by name (transformers'
//! `lr_scheduler_type`; Kiln's `TrainConfig::schedule` and `kiln train
//! --lr-scheduler`); [`ScheduleKind::schedule`] turns it, with the warmup
//! and the run's length, into the [`LrSchedule`] that gives each step's
//! rate. `step` counts optimizer steps from 0 (the LR for the first update).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// Which learning-rate schedule to use after warmup: the one list of
/// schedule names, shared by the trainer's configuration and the command
/// line (with the `clap` feature it is a `clap::ValueEnum`: `linear`,
/// `cosine`, `constant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ScheduleKind {
    /// Linear decay to 0 at the last step (transformers' default).
    Linear,
    /// Cosine decay to a tenth of the peak (nanoGPT).
    Cosine,
    /// No decay (and no warmup).
    Constant,
}

impl ScheduleKind {
    /// The schedule of this kind for a run of `total` optimizer steps with
    /// `warmup` warmup steps and peak rate `lr`:
    /// [`LrSchedule::LinearWarmupDecay`], [`LrSchedule::WarmupCosine`] down
    /// to `lr / 10`, or [`LrSchedule::Constant`].
    pub fn schedule(self, warmup: usize, total: usize, lr: f64) -> LrSchedule {
        match self {
            ScheduleKind::Linear => LrSchedule::LinearWarmupDecay { warmup, total },
            ScheduleKind::Cosine => LrSchedule::WarmupCosine {
                warmup,
                total,
                min_lr: lr / 10.0,
            },
            ScheduleKind::Constant => LrSchedule::Constant,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_names_its_schedule() {
        assert_eq!(
            ScheduleKind::Linear.schedule(3, 20, 0.5),
            LrSchedule::LinearWarmupDecay {
                warmup: 3,
                total: 20
            }
        );
        assert_eq!(
            ScheduleKind::Cosine.schedule(3, 20, 0.5),
            LrSchedule::WarmupCosine {
                warmup: 3,
                total: 20,
                min_lr: 0.05
            }
        );
        assert_eq!(
            ScheduleKind::Constant.schedule(3, 20, 0.5),
            LrSchedule::Constant
        );
    }
}
