//! Differentiable ops on [`Var`](crate::Var), grouped by family. Each op
//! computes its forward with kiln-tensor and records its backward rule right
//! beside it, with the math in a comment.
//!
//! | file | ops |
//! |---|---|
//! | `arith.rs` | add, sub, mul, div, scalar forms, neg, powf |
//! | `unary.rs` | exp, log, sqrt, tanh, relu, gelu, sigmoid |
//! | `movement.rs` | reshape, permute, transpose, narrow, squeeze, unsqueeze, broadcast_to, cat, split, chunk |
//! | `index.rs` | index_select (embedding), gather, masked_fill, where_ |
//! | `reduce.rs` | sum, mean, max |
//! | `matmul.rs` | matmul |
//! | `softmax.rs` | softmax, log_softmax |
//! | `layer_norm.rs` | layer_norm |
//! | `dropout.rs` | dropout |
//! | `cross_entropy.rs` | fused cross-entropy with an ignore index |

mod arith;
mod cross_entropy;
mod dropout;
mod index;
mod layer_norm;
mod matmul;
mod movement;
mod operators;
mod reduce;
mod softmax;
mod unary;
