//! One optimizer step: the step's micro-batches, forward and backward on
//! this rank's share of them, the gradient all-reduce across ranks,
//! clipping and the AdamW update.
//!
//! A step draws `gradient_accumulation_steps × world size` micro-batches,
//! the same ones on every rank and the same ones one process draws with
//! `--gradient-accumulation-steps` that product: rank `r` trains on
//! micro-batches `r·a .. (r+1)·a`. Each micro-batch's dropout masks come
//! from generators seeded by (seed, its index in the run), not from a stream
//! shared with the micro-batches before it, so a micro-batch draws the same
//! masks on whichever rank runs it.

use kiln_nn::optim::{clip_grad_norm, Optimizer};
use kiln_tensor::Rng;

use super::super::checkpoint::list_checkpoints;
use super::super::data::Batch;
use super::super::model::TrainModel;
use super::{report, StepStats, Trainer};
use crate::{ModelError, Result};

impl<M: TrainModel> Trainer<M> {
    /// Micro-batches per optimizer step across all ranks.
    pub(super) fn micro_batches_per_step(&self) -> usize {
        self.cfg.gradient_accumulation_steps.max(1) * self.world.size()
    }

    /// The micro-batches of the next optimizer step, from the training data
    /// (as [`Trainer::run`] draws them): `gradient_accumulation_steps ×`
    /// world size of them, every rank's (see the module docs).
    ///
    /// # Errors
    /// Tensor construction errors (not expected).
    pub fn next_batches(&mut self) -> Result<Vec<Batch>> {
        (0..self.micro_batches_per_step())
            .map(|_| self.train.next_batch())
            .collect()
    }

    /// Reseeds every dropout layer for the run's micro-batch number `micro`.
    fn seed_dropouts(&self, micro: u64) {
        let mut seeder = Rng::new(
            self.cfg.seed ^ 0xD80_9C0D ^ micro.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        for d in self.model.dropouts() {
            d.set_rng_state(Rng::new(seeder.next_u64()));
        }
    }

    /// One optimizer step over `batches`, the step's micro-batches of every
    /// rank ([`Trainer::next_batches`]); this rank trains on its share and
    /// the gradients are summed across ranks before clipping. The loss is
    /// the mean over all their predicted tokens, as transformers computes
    /// it. Stops with an error, without updating, if the loss or gradient
    /// norm is not finite.
    ///
    /// # Errors
    /// [`ModelError::Input`] naming the step when training diverges or when
    /// `batches` is not a multiple of the world size; model errors
    /// otherwise.
    pub fn train_step(&mut self, batches: &[Batch]) -> Result<StepStats> {
        let ranks = self.world.size();
        if batches.is_empty() || !batches.len().is_multiple_of(ranks) {
            return Err(ModelError::Input(format!(
                "a step needs a multiple of the {ranks} rank(s) in micro-batches, got {}",
                batches.len()
            )));
        }
        let lr = self.schedule().lr_at(self.step, self.cfg.learning_rate);
        self.opt.set_lr(lr);
        let total: usize = batches.iter().map(|b| b.predicted()).sum();
        let tokens: usize = batches
            .iter()
            .filter(|b| b.predicted() > 0)
            .map(|b| b.input.numel())
            .sum();
        let per_rank = batches.len() / ranks;
        let first = self.world.rank() * per_rank;
        let mut loss_sum = 0f64;
        // The first step's heap, for the memory report (when the program
        // counts its allocations).
        let before = kiln_tensor::memory::live_bytes().filter(|_| self.measured.is_none());
        if before.is_some() {
            kiln_tensor::memory::reset_peak();
        }
        let mut activations = None;
        let last = first + per_rank - 1;
        for (k, b) in batches.iter().enumerate().skip(first).take(per_rank) {
            let n = b.predicted();
            if n == 0 {
                continue;
            }
            if k == last {
                // This backward completes the rank's gradients: with
                // overlap, buckets go out as backward finishes them.
                self.reducer.arm();
            }
            self.seed_dropouts((self.step * batches.len() + k) as u64);
            let forward = || self.model.lm_loss(&b.input, &b.targets);
            let loss = if self.cfg.bf16 {
                kiln_autograd::autocast_bf16(forward)?
            } else {
                forward()?
            };
            if let (Some(before), None) = (before, activations) {
                activations =
                    kiln_tensor::memory::live_bytes().map(|now| now.saturating_sub(before));
            }
            let l = loss.value().item::<f32>()? as f64;
            loss_sum += l * n as f64;
            // Weight each micro-batch by its share of the step's tokens.
            loss.mul_scalar(n as f64 / total as f64)?.backward()?;
        }
        if ranks > 1 {
            // The loss parts are summed in rank order too: the same
            // additions, in the same order, as the loop above in one process.
            loss_sum = self
                .reducer
                .all_reduce(&self.world, &self.params, &[loss_sum])?[0];
        }
        let loss = loss_sum / total.max(1) as f64;
        let grad_norm = if self.cfg.max_grad_norm > 0.0 {
            clip_grad_norm(&self.params, self.cfg.max_grad_norm)?
        } else {
            clip_grad_norm(&self.params, f64::INFINITY)?
        };
        if !loss.is_finite() || !grad_norm.is_finite() {
            self.opt.zero_grad();
            let last = list_checkpoints(&self.cfg.output_dir)
                .pop()
                .map(|(_, p)| p.display().to_string());
            return Err(ModelError::Input(format!(
                "training diverged at step {}: loss {loss}, gradient norm {grad_norm}; no update was applied. Last good checkpoint: {}. Try a lower --learning-rate.",
                self.step + 1,
                last.unwrap_or_else(|| "none".into())
            )));
        }
        self.opt.step()?;
        if let (Some(before), Some(activations), Some(peak)) =
            (before, activations, kiln_tensor::memory::peak_bytes())
        {
            self.measured = Some(report::StepMemory {
                before: before as u64,
                activations: activations as u64,
                peak: peak as u64,
            });
        }
        self.opt.zero_grad();
        self.step += 1;
        self.tokens_seen += tokens as u64;
        Ok(StepStats {
            loss,
            grad_norm,
            lr,
            tokens,
        })
    }

    /// What the gradient all-reduce has moved and waited so far (zero in a
    /// world of one rank).
    pub fn reduce_stats(&self) -> kiln_distributed::ReduceStats {
        self.reducer.stats()
    }

    /// The ranks this trainer trains with.
    pub fn world(&self) -> &kiln_distributed::World {
        &self.world
    }
}
