//! The `Module` trait: named parameters, parameter counts, train/eval mode.
//!
//! Parameters are [`Var`] leaves, shared handles: the module, the optimizer
//! and a checkpoint writer all see the same values and gradients. Names are
//! dotted paths built from field names, exactly the Hugging Face / PyTorch
//! checkpoint keys (`h.0.attn.c_attn.weight`).

use kiln_autograd::Var;

use crate::Result;

/// Joins a parent prefix and a child name with a dot (`"h.0" + "attn"`).
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Something with named parameters and a train/eval mode.
///
/// Implementors provide [`Module::visit_params`] (and
/// [`Module::set_training`] if they or their children behave differently in
/// training, like dropout); everything else is derived.
pub trait Module {
    /// Calls `f(name, param)` for every parameter, names prefixed by `prefix`.
    fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(String, &Var));

    /// Switches training mode on or off (dropout is active only in training).
    fn set_training(&mut self, _training: bool) {}

    /// All parameters with their dotted names, in definition order.
    fn named_parameters(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.visit_params("", &mut |n, p| out.push((n, p.clone())));
        out
    }

    /// All parameters, in definition order.
    fn parameters(&self) -> Vec<Var> {
        self.named_parameters()
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// Total number of scalar parameters.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit_params("", &mut |_, p| n += p.value().numel());
        n
    }

    /// Enters training mode (`model.train()`).
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Enters evaluation mode (`model.eval()`).
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// Clears every parameter's gradient (`model.zero_grad()`).
    fn zero_grad(&self) {
        self.visit_params("", &mut |_, p| p.zero_grad());
    }
}

/// A module with one input and one output, like most of `torch.nn`.
pub trait Forward: Module {
    /// Applies the module.
    ///
    /// # Errors
    /// Shape or dtype errors from the underlying ops.
    fn forward(&self, x: &Var) -> Result<Var>;
}
