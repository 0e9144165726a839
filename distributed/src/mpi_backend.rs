//! The MPI transport (rsmpi over the system's MPI), behind the `mpi`
//! feature. Only data moves through MPI: every sum is computed by Kiln in
//! rank order ([`crate::reduce`]), never by `MPI_Allreduce`, whose order of
//! additions the standard leaves to the implementation.

use std::sync::{Mutex, MutexGuard};

use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Threading;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Count;

use crate::{DistributedError, Result};

pub(crate) struct Mpi {
    // Every call goes through this lock: MPI is initialised with
    // MPI_THREAD_SERIALIZED, which allows calls from any thread but never
    // two at once. (The gradient reducer's communication thread calls MPI
    // while the main thread runs backward.)
    comm: Mutex<Comm>,
    rank: usize,
    size: usize,
}

struct Comm {
    world: SimpleCommunicator,
    // Dropping the universe finalises MPI; `world` is a handle into it.
    _universe: mpi::environment::Universe,
}

// SAFETY: MPI handles are process-wide integers or pointers that any
// thread may use under MPI_THREAD_SERIALIZED as long as calls do not
// overlap; `Mpi::init` requires that level and every use of `Comm` holds
// the mutex, so no two threads are ever inside MPI at once.
unsafe impl Send for Comm {}

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
        let (universe, provided) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                DistributedError::Init("MPI was already initialised in this process".into())
            })?;
        if provided < Threading::Serialized {
            return Err(DistributedError::Init(format!(
                "this MPI offers thread level {provided:?}; Kiln needs MPI_THREAD_SERIALIZED"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Mpi {
            comm: Mutex::new(Comm {
                world,
                _universe: universe,
            }),
            rank,
            size,
        })
    }

    fn world(&self) -> MutexGuard<'_, Comm> {
        self.comm.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn barrier(&self) {
        self.world().world.barrier();
    }

    pub(crate) fn all_gather_f64(&self, local: &[f64], size: usize) -> Vec<f64> {
        let mut out = vec![0f64; local.len() * size];
        self.world().world.all_gather_into(local, &mut out[..]);
        out
    }

    pub(crate) fn broadcast_f32(&self, buf: &mut [f32]) {
        self.world().world.process_at_rank(0).broadcast_into(buf);
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
        self.world()
            .world
            .all_to_all_varcount_into(&send, &mut recv);
    }

    pub(crate) fn all_gather_varcount_f32(&self, mine: &[f32], counts: &[usize], recv: &mut [f32]) {
        let (c, d) = counts_displs(counts);
        let mut recv = PartitionMut::new(recv, &c[..], &d[..]);
        self.world().world.all_gather_varcount_into(mine, &mut recv);
    }

    pub(crate) fn abort(&self, code: i32) -> ! {
        // Not behind the lock: aborting must work while another thread is
        // blocked inside a collective.
        // SAFETY: MPI_Abort may be called from any thread at any time after
        // MPI_Init (which `init` did; the universe lives as long as `self`),
        // and MPI_COMM_WORLD is a valid communicator until finalisation.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
        // MPI_Abort does not return; should an implementation return, the
        // process must still end.
        std::process::exit(code)
    }
}
