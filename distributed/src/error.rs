//! Errors of the distributed layer.

use thiserror::Error;

/// What can go wrong setting up ranks or reducing across them.
#[derive(Debug, Error)]
pub enum DistributedError {
    /// The process was started by an MPI launcher but this build has no
    /// MPI support.
    #[error("this process was started by mpirun as one of {ranks} ranks, but kiln was built without MPI; rebuild with `--features mpi` (needs libopenmpi-dev)")]
    NoMpiSupport {
        /// Ranks the launcher announced.
        ranks: usize,
    },
    /// `MPI_Init` failed or MPI was initialised twice.
    #[error("MPI could not be initialised: {0}")]
    Init(String),
    /// The ranks disagree on what they reduce.
    #[error("rank {rank} {what}, rank 0 {expected}; every rank must train the same model")]
    Mismatch {
        /// The rank that differs from rank 0.
        rank: usize,
        /// What that rank has.
        what: String,
        /// What rank 0 has.
        expected: String,
    },
    /// A gradient or parameter Kiln cannot send.
    #[error("parameter {index} ({shape:?}): {msg}")]
    Parameter {
        /// Position in the parameter list.
        index: usize,
        /// Its shape.
        shape: Vec<usize>,
        /// Why.
        msg: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::TensorError),
    /// An autograd operation failed.
    #[error(transparent)]
    Autograd(#[from] kiln_autograd::AutogradError),
}

/// `Result` with [`DistributedError`].
pub type Result<T> = std::result::Result<T, DistributedError>;
