//! The gradient all-reduce: every rank ends with the sum of all ranks'
//! gradients, added in rank order, so that N ranks each running one
//! micro-batch get the bits one process gets by accumulating the same N
//! micro-batches (`--gradient-accumulation-steps N`).
//!
//! Why it is deterministic: MPI only moves bytes here. Each bucket of
//! gradients is cut into one chunk per rank; an all-to-all sends chunk `k`
//! of every rank to rank `k`, which adds the copies in rank order
//! (`((g0 + g1) + g2) + …`, the order one process accumulates its
//! micro-batches in: the first gradient is taken as is, each later one is
//! added to it); an all-gather returns the summed chunks to everyone. This
//! is the reduce-scatter / all-gather pair ring all-reduce is made of, so
//! each rank sends and receives `2·(N−1)/N` of the gradients, as torch DDP's
//! NCCL ring does. `MPI_Allreduce` would be as cheap but adds in an order
//! the implementation chooses (it may depend on message sizes and the
//! process layout), so its result is not reproducible across world sizes.
//!
//! Overlap ([`GradReducer::overlapped`]): as torch DDP does, a bucket can
//! be reduced while backward is still computing the gradients of the layers
//! below it. A post-accumulate hook on each parameter counts the bucket's
//! finished gradients; a communication thread reduces buckets strictly in
//! bucket order (the same collectives in the same order on every rank,
//! whenever each rank's backward finishes them), and
//! [`GradReducer::all_reduce`] sends what is left and waits. The sums are
//! the same bits either way.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kiln_autograd::{GradHookHandle, Var};

use crate::bucket::{reduce_bucket, Plan};
use crate::{DistributedError, Result, World};

pub use crate::bucket::{chunk_bounds, sum_in_rank_order};

/// torch DDP's default bucket size (`bucket_cap_mb=25`).
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// What a [`GradReducer`] has moved and how long it waited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReduceStats {
    /// Calls to [`GradReducer::all_reduce`].
    pub calls: u64,
    /// Gradient elements reduced, summed over calls.
    pub elements: u64,
    /// Bytes this rank sent to other ranks, summed over calls.
    pub bytes_sent: u64,
    /// Seconds the training loop spent inside [`GradReducer::all_reduce`]
    /// (moving data, and waiting for slower ranks or for buckets still in
    /// flight), summed over calls. With overlap, communication during
    /// backward is not counted: it is hidden.
    pub seconds: f64,
}

/// Sums gradients across the ranks of a [`World`] in rank order; see the
/// module docs. Buckets bound the extra memory (about three buffers of one
/// bucket) and the size of each message.
///
/// PyTorch: what `DistributedDataParallel` does in `loss.backward()`,
/// without its division by the world size: Kiln scales each micro-batch's
/// loss by its share of the step's tokens before backward, so the sum is
/// already the step's gradient.
#[derive(Debug)]
pub struct GradReducer {
    bucket_elems: usize,
    stats: ReduceStats,
    plan: Option<Plan>,
    overlap: Option<Overlap>,
}

impl Default for GradReducer {
    fn default() -> Self {
        GradReducer::with_bucket_bytes(DEFAULT_BUCKET_BYTES)
    }
}

impl GradReducer {
    /// A reducer with buckets of [`DEFAULT_BUCKET_BYTES`] that reduces
    /// after backward.
    pub fn new() -> GradReducer {
        GradReducer::default()
    }

    /// A reducer whose buckets hold about `bytes` of f32 gradients.
    pub fn with_bucket_bytes(bytes: usize) -> GradReducer {
        GradReducer {
            bucket_elems: (bytes / 4).max(1),
            stats: ReduceStats::default(),
            plan: None,
            overlap: None,
        }
    }

    /// A reducer for exactly `params` that reduces each bucket as soon as
    /// backward has finished its gradients (module docs), on a
    /// communication thread. Call [`GradReducer::arm`] before the backward
    /// pass that completes the step's gradients (the last micro-batch's);
    /// without it every bucket waits for [`GradReducer::all_reduce`]. In a
    /// world of one rank it is [`GradReducer::with_bucket_bytes`].
    ///
    /// A parameter must receive its gradient once per armed backward pass:
    /// one shared by two checkpointed segments gets two, which is an error
    /// at `all_reduce` (as DDP's "marked ready twice").
    ///
    /// # Errors
    /// [`DistributedError::Mismatch`] when the ranks' parameter lists differ.
    pub fn overlapped(world: &World, params: &[Var], bucket_bytes: usize) -> Result<GradReducer> {
        let mut r = GradReducer::with_bucket_bytes(bucket_bytes);
        if world.size() == 1 {
            return Ok(r);
        }
        r.check_structure(world, params)?;
        let plan = r.plan.clone().expect("planned by check_structure");
        r.overlap = Some(Overlap::start(world.clone(), params, plan)?);
        Ok(r)
    }

    /// What the reducer has done so far.
    pub fn stats(&self) -> ReduceStats {
        self.stats
    }

    /// Whether buckets are reduced during backward.
    pub fn is_overlapped(&self) -> bool {
        self.overlap.is_some()
    }

    /// Marks the next backward pass as the one that completes this step's
    /// gradients: its buckets go out as they are ready. No-op unless
    /// [`GradReducer::overlapped`].
    pub fn arm(&self) {
        if let Some(o) = &self.overlap {
            let mut st = o.shared.lock().unwrap_or_else(|e| e.into_inner());
            st.armed = true;
            st.marked.fill(false);
            st.ready.fill(0);
        }
    }

    /// Plans the buckets and checks, once, that every rank has the same
    /// parameter list.
    fn check_structure(&mut self, world: &World, params: &[Var]) -> Result<()> {
        if let Some(p) = &self.plan {
            if p.bucket_of.len() == params.len() {
                return Ok(());
            }
        }
        let plan = Plan::new(params, self.bucket_elems);
        let all = world.all_gather_f64(&[params.len() as f64, plan.elements as f64])?;
        for r in 1..world.size() {
            let theirs = &all[2 * r..2 * r + 2];
            if theirs != &all[..2] {
                return Err(DistributedError::Mismatch {
                    rank: r,
                    what: format!(
                        "has {} trainable tensors of {} elements",
                        theirs[0], theirs[1]
                    ),
                    expected: format!("{} of {}", all[0], all[1]),
                });
            }
        }
        self.plan = Some(plan);
        Ok(())
    }

    /// Replaces every rank's `params` gradients by their sum over ranks
    /// (rank order, module docs) and returns `scalars` summed over ranks
    /// the same way (`0 + s0 + s1 + …`: a step's loss parts, token
    /// counts). Every rank must call it with the same parameters in the
    /// same order. A parameter no rank has a gradient for keeps none.
    ///
    /// # Errors
    /// [`DistributedError::Mismatch`] when ranks pass different parameter
    /// lists or numbers of scalars; [`DistributedError::Parameter`] for a
    /// gradient that is not f32, or (overlapped) one that arrived twice.
    pub fn all_reduce(
        &mut self,
        world: &World,
        params: &[Var],
        scalars: &[f64],
    ) -> Result<Vec<f64>> {
        let started = Instant::now();
        self.stats.calls += 1;
        if world.size() == 1 {
            self.stats.seconds += started.elapsed().as_secs_f64();
            return Ok(scalars.iter().map(|&s| 0.0 + s).collect());
        }
        self.check_structure(world, params)?;
        let plan = self.plan.as_ref().expect("planned");
        let sent = match &self.overlap {
            Some(o) => o.finish()?,
            None => {
                let mut sent = 0;
                for (slots, len) in &plan.buckets {
                    sent += reduce_bucket(world, params, slots, *len)?;
                }
                sent
            }
        };
        let all = world.all_gather_f64(scalars)?;
        let k = scalars.len();
        let sums = (0..k)
            .map(|i| (0..world.size()).fold(0.0, |acc, r| acc + all[r * k + i]))
            .collect();
        self.stats.elements += plan.elements as u64;
        self.stats.bytes_sent += sent;
        self.stats.seconds += started.elapsed().as_secs_f64();
        Ok(sums)
    }
}

/// Per-step bookkeeping shared with the parameters' hooks.
#[derive(Debug)]
struct Step {
    armed: bool,
    marked: Vec<bool>,
    ready: Vec<usize>,
    twice: Option<usize>,
}

enum Job {
    Ready(usize),
    Flush,
    Stop,
}

/// The overlapped reducer's communication thread and hooks.
struct Overlap {
    shared: Arc<Mutex<Step>>,
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Result<u64>>,
    thread: Option<JoinHandle<()>>,
    _hooks: Vec<GradHookHandle>,
}

impl std::fmt::Debug for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlap").finish_non_exhaustive()
    }
}

impl Overlap {
    fn start(world: World, params: &[Var], plan: Plan) -> Result<Overlap> {
        let buckets = plan.buckets.len();
        let shared = Arc::new(Mutex::new(Step {
            armed: false,
            marked: vec![false; params.len()],
            ready: vec![0; buckets],
            twice: None,
        }));
        let (jobs, rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let mut hooks = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            let b = plan.bucket_of[i];
            let size = plan.buckets[b].0.len();
            let (shared, jobs) = (shared.clone(), jobs.clone());
            hooks.push(p.register_post_accumulate_grad_hook(move || {
                let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                if !st.armed {
                    return;
                }
                if std::mem::replace(&mut st.marked[i], true) {
                    st.twice.get_or_insert(i);
                    return;
                }
                st.ready[b] += 1;
                if st.ready[b] == size {
                    let _ = jobs.send(Job::Ready(b));
                }
            })?);
        }
        let params = params.to_vec();
        let thread = std::thread::Builder::new()
            .name("kiln-allreduce".into())
            .spawn(move || {
                let mut ready = vec![false; buckets];
                let (mut next, mut sent, mut failed) = (0, 0u64, None);
                // A step ends at its flush, after which every bucket below
                // `next` has been reduced exactly once.
                let mut flushed = false;
                for job in rx {
                    match job {
                        Job::Ready(b) => ready[b] = true,
                        Job::Flush => {
                            ready.fill(true);
                            flushed = true;
                        }
                        Job::Stop => return,
                    }
                    // Strictly in bucket order: every rank issues the same
                    // collectives in the same order.
                    while next < buckets && ready[next] {
                        let (slots, len) = &plan.buckets[next];
                        if failed.is_none() {
                            match reduce_bucket(&world, &params, slots, *len) {
                                Ok(s) => sent += s,
                                Err(e) => failed = Some(e),
                            }
                        }
                        next += 1;
                    }
                    if next == buckets && flushed {
                        let r = failed.take().map_or(Ok(sent), Err);
                        if done_tx.send(r).is_err() {
                            return;
                        }
                        ready.fill(false);
                        (next, sent, flushed) = (0, 0, false);
                    }
                }
            })
            .map_err(|e| {
                DistributedError::Init(format!("cannot start the all-reduce thread: {e}"))
            })?;
        Ok(Overlap {
            shared,
            jobs,
            done,
            thread: Some(thread),
            _hooks: hooks,
        })
    }

    /// Sends the buckets not yet sent and waits for all of them.
    fn finish(&self) -> Result<u64> {
        let twice = {
            let mut st = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            st.armed = false;
            st.twice.take()
        };
        let gone = || DistributedError::Init("the all-reduce thread stopped".into());
        self.jobs.send(Job::Flush).map_err(|_| gone())?;
        let sent = self.done.recv().map_err(|_| gone())??;
        if let Some(index) = twice {
            return Err(DistributedError::Parameter {
                index,
                shape: Vec::new(),
                msg: "its gradient arrived twice in one backward pass (shared by two checkpointed segments?), so its bucket went out early; use GradReducer::new, which reduces after backward".into(),
            });
        }
        Ok(sent)
    }
}

impl Drop for Overlap {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies rank 0's parameter values to every rank, as
/// `DistributedDataParallel` does when it wraps a module, so that all ranks
/// start from the same weights even when each initialised its own.
///
/// # Errors
/// [`DistributedError::Parameter`] for a parameter that is not f32.
pub fn broadcast_parameters(world: &World, params: &[Var]) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    for (i, p) in params.iter().enumerate() {
        let v = p.value();
        if v.dtype() != kiln_tensor::DType::F32 {
            return Err(DistributedError::Parameter {
                index: i,
                shape: v.shape().to_vec(),
                msg: format!("it is {:?}; only f32 parameters are broadcast", v.dtype()),
            });
        }
        let mut buf = v.contiguous().to_vec::<f32>()?;
        world.broadcast_f32(&mut buf);
        p.set_value(kiln_tensor::Tensor::from_vec(buf, v.shape())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tensor::Tensor;

    #[test]
    fn one_rank_keeps_its_gradients_and_sums_its_scalars() {
        let w = World::single();
        let p = Var::parameter(Tensor::from_vec(vec![1f32, 2.0], &[2]).unwrap());
        p.mul_scalar(3.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut r = GradReducer::overlapped(&w, std::slice::from_ref(&p), 64).unwrap();
        assert!(!r.is_overlapped(), "one rank has nothing to overlap");
        r.arm();
        assert_eq!(
            r.all_reduce(&w, std::slice::from_ref(&p), &[2.5, 1.0])
                .unwrap(),
            vec![2.5, 1.0]
        );
        assert_eq!(p.grad().unwrap().to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
        assert_eq!((r.stats().calls, r.stats().bytes_sent), (1, 0));
    }
}
