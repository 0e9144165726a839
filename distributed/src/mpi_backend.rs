//! The MPI transport (rsmpi over the system's MPI), behind the `mpi`
//! feature. Only data moves through MPI: every sum is computed by Kiln in
//! rank order ([`crate::reduce`]), never by `MPI_Allreduce`, whose order of
//! additions the standard leaves to the implementation.

use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;

use crate::{DistributedError, Result};

pub(crate) struct Mpi {
    // Dropping the universe finalises MPI; `world` is a handle into it.
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

fn counts_displs(counts: &[usize]) -> (Vec<Count>, Vec<Count>) {
    let c: Vec<Count> = counts.iter().map(|&n| n as Count).collect();
    let d = c
        .iter()
        .scan(0, |at, &n| {
            let here = *at;
            *at += n;
            Some(here)
        })
        .collect();
    (c, d)
}

impl Mpi {
    pub(crate) fn init() -> Result<Mpi> {
        // The main thread alone calls MPI; Kiln's thread pool never does.
        let universe = mpi::initialize().ok_or_else(|| {
            DistributedError::Init("MPI was already initialised in this process".into())
        })?;
        Ok(Mpi {
            world: universe.world(),
            _universe: universe,
        })
    }

    pub(crate) fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    pub(crate) fn size(&self) -> usize {
        self.world.size() as usize
    }

    pub(crate) fn barrier(&self) {
        self.world.barrier();
    }

    pub(crate) fn all_gather_f64(&self, local: &[f64], size: usize) -> Vec<f64> {
        let mut out = vec![0f64; local.len() * size];
        self.world.all_gather_into(local, &mut out[..]);
        out
    }

    pub(crate) fn broadcast_f32(&self, buf: &mut [f32]) {
        self.world.process_at_rank(0).broadcast_into(buf);
    }

    pub(crate) fn all_to_all_f32(
        &self,
        send: &[f32],
        counts: &[usize],
        me: usize,
        recv: &mut [f32],
    ) {
        let (sc, sd) = counts_displs(counts);
        let (rc, rd) = counts_displs(&vec![counts[me]; counts.len()]);
        let send = Partition::new(send, &sc[..], &sd[..]);
        let mut recv = PartitionMut::new(recv, &rc[..], &rd[..]);
        self.world.all_to_all_varcount_into(&send, &mut recv);
    }

    pub(crate) fn all_gather_varcount_f32(&self, mine: &[f32], counts: &[usize], recv: &mut [f32]) {
        let (c, d) = counts_displs(counts);
        let mut recv = PartitionMut::new(recv, &c[..], &d[..]);
        self.world.all_gather_varcount_into(mine, &mut recv);
    }

    pub(crate) fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
