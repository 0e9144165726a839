//! The trainer's memory report ([`crate::train::MemoryReport`]).

use kiln_nn::optim::Optimizer;

use super::super::memory_report::MemoryReport;
use super::super::model::TrainModel;
use super::Trainer;

/// What the first optimizer step measured on the heap.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepMemory {
    /// Heap held before the step.
    pub before: u64,
    /// Heap the first micro-batch's forward pass added (kept for backward).
    pub activations: u64,
    /// The heap's highest point during the step.
    pub peak: u64,
}

impl<M: TrainModel> Trainer<M> {
    /// Where this run's memory goes: estimates from the model's shapes and,
    /// once the first step has run in a program that counts its heap
    /// ([`kiln_tensor::memory::CountingAlloc`]), what it measured. Printed
    /// by `kiln train --memory-report` before and after the first step.
    pub fn memory_report(&self) -> MemoryReport {
        let bytes = |t: &kiln_tensor::Tensor| (t.numel() * t.dtype().size_in_bytes()) as u64;
        let all = kiln_nn::Module::parameters(&self.model);
        let parameters: u64 = all.iter().map(|p| bytes(&p.value())).sum();
        let n_all: u64 = all.iter().map(|p| p.value().numel() as u64).sum();
        // Gradients and optimizer state exist for the trained ones only.
        let n_params: u64 = self.params.iter().map(|p| p.value().numel() as u64).sum();
        let state = self.opt.state_tensors();
        let optimizer_state = if state.is_empty() {
            8 * n_params
        } else {
            state.values().map(bytes).sum()
        };
        let m = self.measured;
        // A bf16 base under f32 adapters (`--dtype bf16` with LoRA).
        let dtypes = || all.iter().map(|p| p.value().dtype());
        let frozen_dtype = match (
            dtypes().min_by_key(|d| d.size_in_bytes()),
            dtypes().max_by_key(|d| d.size_in_bytes()),
        ) {
            (Some(small), Some(large)) if small != large => format!(", frozen weights {small}"),
            _ => String::new(),
        };
        let estimate = self
            .model
            .activation_estimate(self.cfg.batch_size, self.cfg.block_size);
        let checkpointing = self.model.is_gradient_checkpointing();
        MemoryReport {
            title: format!(
                "{:.1}M parameters ({} trained{}){}, batch {} × block {}{}{}",
                n_all as f64 / 1e6,
                if n_params >= 100_000 {
                    format!("{:.2}M", n_params as f64 / 1e6)
                } else {
                    n_params.to_string()
                },
                frozen_dtype,
                estimate
                    .map(|e| format!(", {} layers", e.n_layer))
                    .unwrap_or_default(),
                self.cfg.batch_size,
                self.cfg.block_size,
                if self.cfg.bf16 {
                    ", bf16 autocast"
                } else {
                    ", f32"
                },
                if checkpointing {
                    ", gradient checkpointing"
                } else {
                    ""
                }
            ),
            parameters,
            gradients: 4 * n_params,
            optimizer_state,
            activations: estimate.unwrap_or_default(),
            checkpointing,
            activations_measured: m.map(|m| m.activations),
            peak_heap: m.map(|m| m.peak),
            before_step: m.map(|m| m.before),
            peak_rss: kiln_tensor::memory::peak_rss_bytes(),
            available: crate::memory::available_memory(),
        }
    }
}
