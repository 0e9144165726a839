//! Kiln: a from-scratch deep-learning stack in Rust.
//!
//! This crate re-exports the layers, each depending only on the ones before
//! it: [`tensor`] (strided CPU tensors and their kernels), [`autograd`] (the
//! tape), [`nn`] (modules, optimizers, state dicts), [`distributed`]
//! (data-parallel ranks and the gradient all-reduce) and [`models`] (GPT-2,
//! its tokenizer, generation and training).
//!
//! ```
//! use kiln::autograd::Var;
//! use kiln::tensor::{DType, Tensor};
//! let w = Var::parameter(Tensor::ones(&[2, 3], DType::F32));
//! w.mul_scalar(2.0)?.sum_all()?.backward()?;
//! assert_eq!(w.grad().unwrap().to_vec::<f32>()?, vec![2.0; 6]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The book in `docs/` walks through each layer's code (`mdbook build docs`),
//! and `examples/` holds runnable programs for each chapter
//! (`cargo run --release --example tensor_basics`).
#![warn(missing_docs)]

#[doc(inline)]
pub use kiln_autograd as autograd;
#[doc(inline)]
pub use kiln_distributed as distributed;
#[doc(inline)]
pub use kiln_models as models;
#[doc(inline)]
pub use kiln_nn as nn;
#[doc(inline)]
pub use kiln_tensor as tensor;

/// The book's chapters (`docs/src/*.md`) as doctests: every ` ```rust ` block
/// in them is compiled and run by `cargo test --doc -p kiln`, which `cargo
/// test --workspace` includes. Blocks that are not Rust must say what they
/// are (` ```text `, ` ```sh `); see `docs/README.md`.
#[cfg(doctest)]
mod book {
    macro_rules! chapters {
        ($($name:ident => $file:literal),* $(,)?) => {$(
            #[doc = include_str!(concat!("../docs/src/", $file))]
            mod $name {}
        )*};
    }
    chapters! {
        introduction => "introduction.md",
        rust_for_pytorch => "rust_for_pytorch.md",
        tensors => "tensors.md",
        matmul => "matmul.md",
        autodiff => "autodiff.md",
        modules => "modules.md",
        gpt2 => "gpt2.md",
        attention => "attention.md",
        backward_gpt2 => "backward_gpt2.md",
        tokenizer => "tokenizer.md",
        training => "training.md",
        performance => "performance.md",
    }
}
