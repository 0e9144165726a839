//! `World`: this process's rank among the processes training together, and
//! the few collectives Kiln needs (the `torch.distributed` process group).

use crate::{DistributedError, Result};

/// The processes training one model together. A world of one rank (the
/// default, and every build without the `mpi` feature) does no
/// communication at all; under `mpirun` with `--features mpi` each process
/// is one rank of `MPI_COMM_WORLD`.
///
/// PyTorch: `torch.distributed.init_process_group("mpi")`, `get_rank()`,
/// `get_world_size()`.
///
/// Clones share the one MPI session, which ends when the last is dropped:
/// a program keeps a clone to [`World::abort`] with after handing one to a
/// trainer.
#[derive(Clone)]
pub struct World {
    rank: usize,
    size: usize,
    #[cfg(feature = "mpi")]
    mpi: Option<std::sync::Arc<crate::mpi_backend::Mpi>>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "World(rank {} of {})", self.rank, self.size)
    }
}

/// How many ranks an MPI launcher (Open MPI's `mpirun`, MPICH's Hydra,
/// PMIx-based launchers such as `srun --mpi=pmix`) announced in this
/// process's environment, if it was started by one.
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
        .or_else(|| std::env::var_os("PMIX_RANK").map(|_| 1))
}

impl World {
    /// A world of this process alone: rank 0 of 1.
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The world this process was started in: MPI's when an MPI launcher
    /// started it (`mpirun -np 4 kiln train …`), else [`World::single`].
    /// Call it once per process (MPI is initialised once); MPI is finalised
    /// when the `World` is dropped.
    ///
    /// # Errors
    /// [`DistributedError::NoMpiSupport`] when started by `mpirun` in a
    /// build without the `mpi` feature (which would otherwise run N
    /// independent copies writing to one folder);
    /// [`DistributedError::Init`] when MPI cannot start.
    pub fn from_env() -> Result<World> {
        let Some(ranks) = launched_ranks() else {
            return Ok(World::single());
        };
        #[cfg(feature = "mpi")]
        {
            let _ = ranks;
            let mpi = crate::mpi_backend::Mpi::init()?;
            Ok(World {
                rank: mpi.rank(),
                size: mpi.size(),
                mpi: Some(std::sync::Arc::new(mpi)),
            })
        }
        #[cfg(not(feature = "mpi"))]
        {
            if ranks == 1 {
                return Ok(World::single());
            }
            Err(DistributedError::NoMpiSupport { ranks })
        }
    }

    /// This process's rank, `0..size` (`torch.distributed.get_rank()`).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks (`get_world_size()`).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0, the one that logs and writes files.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Waits until every rank has called it (`dist.barrier()`).
    pub fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            m.barrier();
        }
    }

    /// Every rank's `local` values, rank 0's first (`dist.all_gather`).
    ///
    /// # Errors
    /// [`DistributedError::Mismatch`] when the ranks pass different lengths.
    pub fn all_gather_f64(&self, local: &[f64]) -> Result<Vec<f64>> {
        // Lengths first, so that a mismatch is an error, not a garbled
        // buffer or a hang.
        let lens = self.gather_raw(&[local.len() as f64]);
        if let Some(rank) = lens.iter().position(|&l| l as usize != local.len()) {
            let rank = if self.rank == rank { 0 } else { rank };
            return Err(DistributedError::Mismatch {
                rank,
                what: format!("sends {} values", lens[rank]),
                expected: format!("{}", lens[0]),
            });
        }
        Ok(self.gather_raw(local))
    }

    fn gather_raw(&self, local: &[f64]) -> Vec<f64> {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return m.all_gather_f64(local, self.size);
        }
        local.to_vec()
    }

    /// Whether `flag` is true on any rank; every rank gets the same answer.
    pub fn any(&self, flag: bool) -> bool {
        self.gather_raw(&[f64::from(u8::from(flag))])
            .iter()
            .any(|&f| f != 0.0)
    }

    /// Copies rank 0's `buf` into every rank's (`dist.broadcast(t, src=0)`).
    /// Every rank must pass the same length.
    pub fn broadcast_f32(&self, buf: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            m.broadcast_f32(buf);
        }
        let _ = buf;
    }

    /// All-to-all: the `k`-th of `send`'s consecutive pieces (lengths
    /// `counts`, the same on every rank) goes to rank `k`; `recv` gets, in
    /// rank order, every rank's piece number `self.rank()`.
    pub(crate) fn all_to_all_f32(&self, send: &[f32], counts: &[usize], recv: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return m.all_to_all_f32(send, counts, self.rank, recv);
        }
        let _ = counts;
        recv.copy_from_slice(send);
    }

    /// All-gather of pieces of lengths `counts` (rank order) into `recv`.
    pub(crate) fn all_gather_f32(&self, mine: &[f32], counts: &[usize], recv: &mut [f32]) {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            return m.all_gather_varcount_f32(mine, counts, recv);
        }
        let _ = counts;
        recv.copy_from_slice(mine);
    }

    /// Ends every rank's process with `code` (`MPI_Abort`): after one rank
    /// fails, the others must not wait for it forever. In a world of one it
    /// exits the process.
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            m.abort(code);
        }
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_world_is_rank_zero_of_one_and_gathers_itself() {
        let w = World::single();
        assert_eq!((w.rank(), w.size(), w.is_main()), (0, 1, true));
        assert_eq!(w.all_gather_f64(&[1.5, -2.0]).unwrap(), vec![1.5, -2.0]);
        assert!(w.any(true) && !w.any(false));
        let mut b = [1f32, 2.0];
        w.broadcast_f32(&mut b);
        assert_eq!(b, [1.0, 2.0]);
    }
}
