//! Tensor operations, grouped by family. Each op works on any strided input
//! (contiguous inputs take a fast path) and returns a new contiguous tensor.
//!
//! | file | ops |
//! |---|---|
//! | `unary.rs` | neg, exp, log, sqrt, tanh, relu, gelu, powf, scalar arithmetic |
//! | `binary.rs` | add, sub, mul, div, maximum, minimum (NumPy broadcasting) |
//! | `compare.rs` | eq/ne/lt/le/gt/ge masks, where_, masked_fill |
//! | `reduce.rs` | sum, mean, max, min, argmax, logsumexp, var |
//! | `softmax.rs` | softmax, log_softmax and their backward kernels |
//! | `norm.rs` | layer_norm forward and backward |
//! | `cross_entropy.rs` | fused cross-entropy forward and backward |
//! | `index.rs` | index_select, gather, scatter_add, index_add |
//! | `concat.rs` | cat, stack, split, chunk |
//! | `topk.rs` | topk |
//! | `matmul.rs` | matmul (2-D, batched, broadcast batch dims) |

pub mod binary;
pub mod compare;
pub mod concat;
pub mod cross_entropy;
pub mod index;
pub mod matmul;
pub mod norm;
mod operators;
pub mod reduce;
pub mod softmax;
pub mod topk;
pub mod unary;
