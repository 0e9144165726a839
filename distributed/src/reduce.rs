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

use std::time::Instant;

use kiln_autograd::Var;
use kiln_tensor::{DType, Tensor};

use crate::{DistributedError, Result, World};

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
    /// Seconds spent inside collectives (moving data and waiting for
    /// slower ranks), summed over calls.
    pub seconds: f64,
}

/// Sums gradients across the ranks of a [`World`] in rank order; see the
/// module docs. Buckets bound the extra memory (three buffers of one
/// bucket each) and the size of each message.
///
/// PyTorch: what `DistributedDataParallel` does after `loss.backward()`,
/// without its division by the world size: Kiln scales each micro-batch's
/// loss by its share of the step's tokens before backward, so the sum is
/// already the step's gradient.
#[derive(Debug, Clone)]
pub struct GradReducer {
    bucket_elems: usize,
    stats: ReduceStats,
}

impl Default for GradReducer {
    fn default() -> Self {
        GradReducer::with_bucket_bytes(DEFAULT_BUCKET_BYTES)
    }
}

/// The chunk boundaries of `len` elements over `ranks` ranks: chunk `k` is
/// `bounds[k]..bounds[k + 1]`, sizes differing by at most one.
pub fn chunk_bounds(len: usize, ranks: usize) -> Vec<usize> {
    (0..=ranks).map(|k| k * len / ranks.max(1)).collect()
}

/// Sums rank copies of one chunk in rank order: `recv` holds `ranks`
/// copies of `out.len()` elements back to back; `segments` cover `out`
/// with `(start, end, present)`, where `present[r]` says whether rank `r`
/// had a gradient for the parameter there (a rank that had none adds
/// nothing, as a skipped micro-batch adds nothing in one process).
pub fn sum_in_rank_order(recv: &[f32], segments: &[(usize, usize, Vec<bool>)], out: &mut [f32]) {
    let width = out.len();
    for (a, b, present) in segments {
        let mut ranks = present
            .iter()
            .enumerate()
            .filter(|(_, &p)| p)
            .map(|(r, _)| r);
        let Some(first) = ranks.next() else {
            out[*a..*b].fill(0.0);
            continue;
        };
        out[*a..*b].copy_from_slice(&recv[first * width + a..first * width + b]);
        for r in ranks {
            let copy = &recv[r * width + a..r * width + b];
            for (o, &g) in out[*a..*b].iter_mut().zip(copy) {
                *o += g;
            }
        }
    }
}

/// One parameter's place in a bucket.
struct Slot {
    param: usize,
    offset: usize,
    len: usize,
}

impl GradReducer {
    /// A reducer with buckets of [`DEFAULT_BUCKET_BYTES`].
    pub fn new() -> GradReducer {
        GradReducer::default()
    }

    /// A reducer whose buckets hold about `bytes` of f32 gradients.
    pub fn with_bucket_bytes(bytes: usize) -> GradReducer {
        GradReducer {
            bucket_elems: (bytes / 4).max(1),
            stats: ReduceStats::default(),
        }
    }

    /// What the reducer has done so far.
    pub fn stats(&self) -> ReduceStats {
        self.stats
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
    /// gradient that is not f32.
    pub fn all_reduce(
        &mut self,
        world: &World,
        params: &[Var],
        scalars: &[f64],
    ) -> Result<Vec<f64>> {
        let started = Instant::now();
        let grads: Vec<Option<Tensor>> = params.iter().map(Var::grad).collect();
        let total: usize = params.iter().map(|p| p.value().numel()).sum();
        let mut local = vec![params.len() as f64, total as f64];
        local.extend_from_slice(scalars);
        local.extend(grads.iter().map(|g| f64::from(u8::from(g.is_some()))));
        let all = world.all_gather_f64(&local)?;
        let (n, width) = (world.size(), local.len());
        for r in 1..n {
            let theirs = &all[r * width..r * width + 2];
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
        let sums = (0..scalars.len())
            .map(|k| (0..n).fold(0.0, |acc, r| acc + all[r * width + 2 + k]))
            .collect();
        self.stats.calls += 1;
        if n == 1 {
            self.stats.seconds += started.elapsed().as_secs_f64();
            return Ok(sums);
        }
        let present = |p: usize| -> Vec<bool> {
            (0..n)
                .map(|r| all[r * width + 2 + scalars.len() + p] != 0.0)
                .collect()
        };
        let mut bucket: Vec<Slot> = Vec::new();
        let mut filled = 0;
        for (i, p) in params.iter().enumerate() {
            if !present(i).contains(&true) {
                continue;
            }
            let len = p.value().numel();
            bucket.push(Slot {
                param: i,
                offset: filled,
                len,
            });
            filled += len;
            if filled >= self.bucket_elems {
                self.reduce_bucket(world, params, &grads, &bucket, filled, &present)?;
                bucket.clear();
                filled = 0;
            }
        }
        if !bucket.is_empty() {
            self.reduce_bucket(world, params, &grads, &bucket, filled, &present)?;
        }
        self.stats.seconds += started.elapsed().as_secs_f64();
        Ok(sums)
    }

    fn reduce_bucket(
        &mut self,
        world: &World,
        params: &[Var],
        grads: &[Option<Tensor>],
        bucket: &[Slot],
        len: usize,
        present: &dyn Fn(usize) -> Vec<bool>,
    ) -> Result<()> {
        let (n, me) = (world.size(), world.rank());
        let mut send = vec![0f32; len];
        for s in bucket {
            if let Some(g) = &grads[s.param] {
                if g.dtype() != DType::F32 {
                    return Err(DistributedError::Parameter {
                        index: s.param,
                        shape: g.shape().to_vec(),
                        msg: format!(
                            "its gradient is {:?}; gradients are reduced as f32",
                            g.dtype()
                        ),
                    });
                }
                send[s.offset..s.offset + s.len].copy_from_slice(g.contiguous().as_slice::<f32>()?);
            }
        }
        let bounds = chunk_bounds(len, n);
        let counts: Vec<usize> = bounds.windows(2).map(|w| w[1] - w[0]).collect();
        let (lo, hi) = (bounds[me], bounds[me + 1]);
        let mut recv = vec![0f32; n * (hi - lo)];
        world.all_to_all_f32(&send, &counts, &mut recv);
        // The parameters overlapping this rank's chunk, in chunk coordinates.
        let segments: Vec<(usize, usize, Vec<bool>)> = bucket
            .iter()
            .filter(|s| s.offset < hi && s.offset + s.len > lo)
            .map(|s| {
                let a = s.offset.max(lo) - lo;
                let b = (s.offset + s.len).min(hi) - lo;
                (a, b, present(s.param))
            })
            .collect();
        let mut mine = vec![0f32; hi - lo];
        sum_in_rank_order(&recv, &segments, &mut mine);
        drop(recv);
        world.all_gather_f32(&mine, &counts, &mut send);
        for s in bucket {
            let shape = params[s.param].shape();
            let g = Tensor::from_vec(send[s.offset..s.offset + s.len].to_vec(), &shape)?;
            params[s.param].set_grad(Some(g))?;
        }
        let sent = (len - (hi - lo)) + (n - 1) * (hi - lo);
        self.stats.elements += len as u64;
        self.stats.bytes_sent += 4 * sent as u64;
        Ok(())
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
        if v.dtype() != DType::F32 {
            return Err(DistributedError::Parameter {
                index: i,
                shape: v.shape().to_vec(),
                msg: format!("it is {:?}; only f32 parameters are broadcast", v.dtype()),
            });
        }
        let mut buf = v.contiguous().to_vec::<f32>()?;
        world.broadcast_f32(&mut buf);
        p.set_value(Tensor::from_vec(buf, v.shape())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_bucket_in_order() {
        for (len, n) in [(10, 3), (2, 3), (0, 2), (7, 1)] {
            let b = chunk_bounds(len, n);
            assert_eq!((b[0], b[n], b.len()), (0, len, n + 1));
            assert!(b
                .windows(2)
                .all(|w| w[1] >= w[0] && w[1] - w[0] <= len.div_ceil(n)));
        }
    }

    /// The owner's sum is the sequential one-process accumulation: the first
    /// present rank's value as is, then each later present rank added.
    #[test]
    fn ranks_are_added_in_order_and_absent_ranks_skipped() {
        // Three ranks, a chunk of 3 elements: two parameters' segments.
        let recv = [
            1.0f32, 1e-8, -0.0, // rank 0
            3e-8, 2.0, 5.0, // rank 1
            3e-8, 3.0, -0.0, // rank 2
        ];
        let segments = vec![
            (0, 2, vec![true, true, true]),
            (2, 3, vec![false, true, true]),
        ];
        let mut out = [9f32; 3];
        sum_in_rank_order(&recv, &segments, &mut out);
        let seq = |xs: &[f32]| xs[1..].iter().fold(xs[0], |a, &b| a + b);
        assert_eq!(out[0].to_bits(), seq(&[1.0, 3e-8, 3e-8]).to_bits());
        assert_eq!(out[1].to_bits(), seq(&[1e-8, 2.0, 3.0]).to_bits());
        // -0.0 from rank 2 added to 5.0; rank 0's -0.0 is not part of it.
        assert_eq!(out[2], 5.0);
        assert_eq!(out[0], 1.0, "1 + 3e-8 rounds back to 1 at each step");
    }

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
        let mut r = GradReducer::new();
        assert_eq!(
            r.all_reduce(&w, std::slice::from_ref(&p), &[2.5, 1.0])
                .unwrap(),
            vec![2.5, 1.0]
        );
        assert_eq!(p.grad().unwrap().to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
        assert_eq!((r.stats().calls, r.stats().bytes_sent), (1, 0));
    }
}
