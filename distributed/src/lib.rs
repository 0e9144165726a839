//! # kiln-distributed
//!
//! Data-parallel training across processes and machines: a [`World`] of
//! ranks (MPI's `MPI_COMM_WORLD` under `mpirun` when built with the `mpi`
//! feature, a world of one otherwise) and a [`GradReducer`] that sums the
//! ranks' gradients **in rank order**, so that N ranks each computing one
//! micro-batch produce exactly the bits of one process accumulating the
//! same N micro-batches. The deterministic part is Kiln's own; MPI only
//! moves the bytes ([`reduce`] says how and why).
//!
//! A training loop uses it as a PyTorch one uses DDP:
//!
//! ```
//! use kiln_autograd::Var;
//! use kiln_distributed::{broadcast_parameters, GradReducer, World};
//! use kiln_tensor::Tensor;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let world = World::from_env()?; // rank 0 of 1 unless started by mpirun
//! let w = Var::parameter(Tensor::from_vec(vec![0.5f32, -1.0], &[2])?);
//! broadcast_parameters(&world, &[w.clone()])?; // every rank starts from rank 0's weights
//! let mut reducer = GradReducer::new();
//! // This rank's micro-batch: its loss, scaled by its share of the step.
//! let x = Tensor::from_vec(vec![1.0f32 + world.rank() as f32, 2.0], &[2])?;
//! let loss = w.mul(&Var::constant(x))?.sum_all()?;
//! let part = loss.value().item::<f32>()? as f64;
//! loss.mul_scalar(1.0 / world.size() as f64)?.backward()?;
//! // Sum gradients (and the loss parts) over ranks; then clip and step as usual.
//! let sums = reducer.all_reduce(&world, &[w.clone()], &[part])?;
//! assert_eq!(w.grad().unwrap().shape(), &[2]);
//! assert!(sums[0].is_finite());
//! # Ok(()) }
//! ```
//!
//! | Kiln | PyTorch |
//! |---|---|
//! | [`World::from_env`] | `dist.init_process_group("mpi")` |
//! | [`World::rank`], [`World::size`] | `dist.get_rank()`, `dist.get_world_size()` |
//! | [`broadcast_parameters`] | DDP's initial parameter broadcast |
//! | [`GradReducer::all_reduce`] | DDP's gradient all-reduce, in a fixed order |
//! | [`World::abort`] | `MPI_Abort`: one rank's failure ends every rank |

mod bucket;
mod error;
#[cfg(feature = "mpi")]
mod mpi_backend;
pub mod reduce;
mod world;

pub use error::{DistributedError, Result};
pub use reduce::{broadcast_parameters, GradReducer, ReduceStats, DEFAULT_BUCKET_BYTES};
pub use world::{launched_ranks, World};
