//! [`TrainModel`]: what the [`super::Trainer`] needs of a model — a loss
//! from token ids, and saving and restoring its weights — so it trains any
//! language model built from Kiln modules, not only GPT-2.

use std::path::Path;

use kiln_autograd::Var;
use kiln_nn::state_dict::{LoadOptions, StateDict};
use kiln_nn::{Dropout, Module};
use kiln_tensor::Tensor;

use crate::gpt2::{ForwardOptions, Gpt2};
use crate::memory::ActivationEstimate;
use crate::{ModelError, Result};

/// The weights file a checkpoint or `final/` holds (Hugging Face's name):
/// [`TrainModel::save_pretrained`] must write it, unless the model saves a
/// LoRA adapter instead ([`super::checkpoint::ADAPTER_FILES`]).
pub const MODEL_WEIGHTS: &str = "model.safetensors";

/// A language model the [`super::Trainer`] can train: a [`Module`] (its
/// parameters and train/eval mode) that computes the mean next-token loss
/// of a batch. Checkpoints, rotation, exact resume, evaluation and logging
/// come with the trainer; the hooks with defaults are what GPT-2 adds
/// (dropout reseeding, gradient checkpointing, memory estimates, LoRA
/// adapters).
///
/// A minimal implementation provides [`TrainModel::vocab_size`],
/// [`TrainModel::max_context`] and [`TrainModel::lm_loss`]; the default
/// [`TrainModel::save_pretrained`] / [`TrainModel::load_weights`] write
/// and read every parameter by name in `model.safetensors`.
///
/// The PyTorch equivalent is a `nn.Module` whose `forward(input_ids,
/// labels=…)` returns a loss, as transformers' `Trainer` expects.
pub trait TrainModel: Module {
    /// Token ids the model embeds: every training and validation id must be
    /// below it (the trainer checks before the first step).
    fn vocab_size(&self) -> usize;

    /// The longest row the model takes (GPT-2's `n_positions`), or `None`
    /// when any length works. The trainer refuses a longer `block_size`.
    fn max_context(&self) -> Option<usize>;

    /// The mean cross-entropy of predicting `targets` from `inputs`, both
    /// `[B, T]` token ids (i64), over the positions whose target is not
    /// [`kiln_nn::loss::IGNORE_INDEX`] (−100): `targets[b, t]` is the token
    /// after `inputs[b, t]`. A 0-d tensor with a tape back to the
    /// parameters.
    ///
    /// # Errors
    /// Whatever the model's forward pass reports.
    fn lm_loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Var>;

    /// Writes the model into the folder `dir` (which exists) for a
    /// checkpoint or `final/`: by default every parameter by its dotted
    /// name in [`MODEL_WEIGHTS`]; GPT-2 writes its Hugging Face directory
    /// (`config.json`, `model.safetensors`) or, with LoRA, its PEFT adapter.
    ///
    /// # Errors
    /// I/O errors naming the file.
    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        save_parameters(self, dir)
    }

    /// Puts the weights [`TrainModel::save_pretrained`] wrote into `dir`
    /// into this model's parameters (resuming, loading the best
    /// checkpoint).
    ///
    /// # Errors
    /// [`ModelError::Nn`] naming the file for a missing, unexpected or
    /// mis-shaped tensor; [`ModelError::Weights`] for one of another dtype.
    fn load_weights(&self, dir: &Path) -> Result<()> {
        load_parameters(self, dir)
    }

    /// Every dropout layer, in a fixed order: the trainer reseeds them for
    /// each micro-batch from the run's seed and the micro-batch's number,
    /// so masks are the same after a resume. Default: none.
    fn dropouts(&self) -> Vec<&Dropout> {
        Vec::new()
    }

    /// Turns on gradient checkpointing (`TrainConfig::gradient_checkpointing`).
    ///
    /// # Errors
    /// By default [`ModelError::Input`]: the model does not support it.
    fn gradient_checkpointing_enable(&mut self) -> Result<()> {
        Err(ModelError::Input(
            "this model does not support gradient checkpointing".into(),
        ))
    }

    /// Whether gradient checkpointing is on. Default: `false`.
    fn is_gradient_checkpointing(&self) -> bool {
        false
    }

    /// The activations a micro-batch of `batch` rows of `block` tokens keeps
    /// for backward, for the memory check before training and the memory
    /// report; `None` (the default) when unknown, and only weights,
    /// gradients and optimizer state are counted.
    fn activation_estimate(&self, _batch: usize, _block: usize) -> Option<ActivationEstimate> {
        None
    }

    /// What to suggest when a run would not fit in memory.
    fn memory_hint(&self, _checkpointing: bool) -> &'static str {
        "lower the batch size or the block size, or train a smaller model"
    }
}

/// Saves every parameter of `model` by name to `dir/model.safetensors`.
fn save_parameters<M: Module + ?Sized>(model: &M, dir: &Path) -> Result<()> {
    let mut dict: StateDict = model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.value()))
        .collect();
    dict.metadata_mut().insert("format".into(), "pt".into());
    dict.save(dir.join(MODEL_WEIGHTS))
        .map_err(kiln_nn::NnError::from)?;
    Ok(())
}

/// Reads a checkpoint file into memory Kiln owns (not mapped: the folder
/// may be rotated away while training goes on).
fn load_copied(file: &Path) -> Result<StateDict> {
    let copy = LoadOptions {
        copy: true,
        ..Default::default()
    };
    Ok(StateDict::load_with(file, copy).map_err(kiln_nn::NnError::from)?)
}

/// Loads `dir/model.safetensors` into `model`'s parameters: exactly the
/// same names and shapes (copied into memory, not mapped: the folder may
/// be rotated away while training goes on).
fn load_parameters<M: Module + ?Sized>(model: &M, dir: &Path) -> Result<()> {
    let file = dir.join(MODEL_WEIGHTS);
    let dict = load_copied(&file)?;
    let params = model.named_parameters();
    let expected: Vec<(String, Vec<usize>)> = params
        .iter()
        .map(|(n, p)| (n.clone(), p.value().shape().to_vec()))
        .collect();
    dict.check_against(&expected, true)
        .map_err(kiln_nn::NnError::from)?;
    for (name, p) in params {
        let t = dict
            .get(&name)
            .expect("checked: every parameter is present");
        set_weight(&p, t, &file, &name)?;
    }
    Ok(())
}

/// The mean loss of windows `ids` `[B, L]`, each position predicting the
/// next and the last nothing: [`TrainModel::lm_loss`] with the targets
/// shifted left and −100 at the end (what GPT-2's `forward_with_loss`
/// does, so its evaluation is unchanged).
pub(super) fn window_loss<M: TrainModel + ?Sized>(model: &M, ids: &Tensor) -> Result<Var> {
    let (b, t) = (ids.shape()[0], ids.shape()[1]);
    let l = ids.to_vec::<i64>()?;
    let mut targets = Vec::with_capacity(b * t);
    for row in l.chunks(t) {
        targets.extend_from_slice(&row[1..]);
        targets.push(kiln_nn::loss::IGNORE_INDEX);
    }
    model.lm_loss(ids, &Tensor::from_vec(targets, &[b, t])?)
}

/// GPT-2 trains as it always has: logits from [`Gpt2::forward`] and
/// `cross_entropy` on them; checkpoints hold its Hugging Face directory or
/// its PEFT adapter.
impl TrainModel for Gpt2 {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_context(&self) -> Option<usize> {
        Some(self.config.n_positions)
    }

    fn lm_loss(&self, inputs: &Tensor, targets: &Tensor) -> Result<Var> {
        let logits = self.forward(inputs, ForwardOptions::default())?;
        Ok(logits.cross_entropy(targets, kiln_nn::loss::IGNORE_INDEX)?)
    }

    fn save_pretrained(&self, dir: &Path) -> Result<()> {
        // As transformers' Trainer saves a PEFT model: the adapter only.
        if self.lora.is_some() {
            self.save_adapter(dir)
        } else {
            crate::gpt2::save_model_dir(self, dir)
        }
    }

    fn load_weights(&self, dir: &Path) -> Result<()> {
        if dir.join(crate::gpt2::ADAPTER_CONFIG).exists() {
            return copy_adapter(self, dir);
        }
        let from = crate::gpt2::load_model_dir_with(
            dir,
            LoadOptions {
                copy: true,
                ..Default::default()
            },
            kiln_tensor::DType::F32,
        )?;
        copy_weights(self, &from, dir)
    }

    fn dropouts(&self) -> Vec<&Dropout> {
        Gpt2::dropouts(self)
    }

    fn gradient_checkpointing_enable(&mut self) -> Result<()> {
        Gpt2::gradient_checkpointing_enable(self);
        Ok(())
    }

    fn is_gradient_checkpointing(&self) -> bool {
        self.gradient_checkpointing
    }

    fn activation_estimate(&self, batch: usize, block: usize) -> Option<ActivationEstimate> {
        Some(ActivationEstimate::gpt2(&self.config, batch, block))
    }

    fn memory_hint(&self, checkpointing: bool) -> &'static str {
        match (checkpointing, self.lora.is_some()) {
            (true, true) => "lower --batch-size or --block-size",
            (true, false) => {
                "fine-tune LoRA adapters instead (--lora-r 8), lower --batch-size or --block-size, or train a smaller model"
            }
            (false, _) => {
                "pass --gradient-checkpointing, lower --batch-size or --block-size, or fine-tune LoRA adapters (--lora-r 8)"
            }
        }
    }
}

/// Copies a loaded checkpoint's GPT-2 weights into `model`.
fn copy_weights(model: &Gpt2, from: &Gpt2, dir: &Path) -> Result<()> {
    if from.config != model.config {
        return Err(ModelError::Config {
            path: dir.join("config.json"),
            msg: "the checkpoint's model config differs from this run's model".into(),
        });
    }
    for ((name, p), (_, q)) in model
        .named_parameters()
        .into_iter()
        .zip(from.named_parameters())
    {
        p.set_value(q.value()).map_err(|e| ModelError::Weights {
            file: dir.join(MODEL_WEIGHTS),
            tensor: name.clone(),
            msg: e.to_string(),
        })?;
    }
    Ok(())
}

/// Puts a LoRA checkpoint's adapter weights into `model`'s adapters.
fn copy_adapter(model: &Gpt2, dir: &Path) -> Result<()> {
    let file = dir.join(crate::gpt2::ADAPTER_WEIGHTS);
    let dict = load_copied(&file)?;
    let adapter: std::collections::BTreeMap<String, Tensor> = dict
        .iter()
        .map(|(k, v)| {
            let name = k.strip_prefix(crate::gpt2::PEFT_PREFIX).unwrap_or(k);
            (name.to_string(), v.clone())
        })
        .collect();
    let mine: Vec<(String, Var)> = model
        .named_parameters()
        .into_iter()
        .filter(|(n, _)| crate::gpt2::is_lora_param(n))
        .collect();
    if mine.len() != adapter.len() {
        return Err(ModelError::Weights {
            file,
            tensor: String::new(),
            msg: format!(
                "{} adapter tensors for a model with {} (was the run started with the same --lora-* flags?)",
                adapter.len(),
                mine.len()
            ),
        });
    }
    for (name, p) in mine {
        let t = adapter.get(&name).ok_or_else(|| ModelError::Weights {
            file: file.clone(),
            tensor: name.clone(),
            msg: "missing".into(),
        })?;
        set_weight(&p, t, &file, &name)?;
    }
    Ok(())
}

/// Puts a checkpoint tensor into parameter `p`, naming the file and the
/// tensor if it does not fit.
fn set_weight(p: &Var, t: &Tensor, file: &Path, name: &str) -> Result<()> {
    p.set_value(t.clone()).map_err(|e| ModelError::Weights {
        file: file.to_path_buf(),
        tensor: name.to_string(),
        msg: e.to_string(),
    })
}
