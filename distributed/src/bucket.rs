//! Buckets: how parameters' gradients are grouped into messages, and the
//! deterministic reduction of one bucket (see [`crate::reduce`] for why it
//! is deterministic).

use kiln_autograd::Var;
use kiln_tensor::{DType, Tensor};

use crate::{DistributedError, Result, World};

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
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub param: usize,
    pub offset: usize,
    pub len: usize,
}

/// The buckets of a parameter list: in reverse order, as DDP builds them,
/// because backward completes the last layers' gradients first.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub buckets: Vec<(Vec<Slot>, usize)>,
    /// The bucket of each parameter.
    pub bucket_of: Vec<usize>,
    pub elements: usize,
}

impl Plan {
    pub fn new(params: &[Var], bucket_elems: usize) -> Plan {
        let mut buckets = Vec::new();
        let mut bucket_of = vec![0; params.len()];
        let (mut slots, mut filled, mut elements) = (Vec::new(), 0, 0);
        for (i, p) in params.iter().enumerate().rev() {
            let len = p.value().numel();
            bucket_of[i] = buckets.len();
            slots.push(Slot {
                param: i,
                offset: filled,
                len,
            });
            filled += len;
            elements += len;
            if filled >= bucket_elems {
                buckets.push((std::mem::take(&mut slots), filled));
                filled = 0;
            }
        }
        if !slots.is_empty() {
            buckets.push((slots, filled));
        }
        Plan {
            buckets,
            bucket_of,
            elements,
        }
    }
}

/// Reduces one bucket across `world`; returns the bytes this rank sent.
///
/// Each rank sends rank `k` its chunk `k` of the bucket's gradients
/// followed by one presence flag per parameter (whether this rank has a
/// gradient for it: a rank whose micro-batches all predicted nothing has
/// none); rank `k` adds the copies in rank order; an all-gather returns the
/// sums. The gradients are then replaced by the sums, as f32, and a
/// parameter that no rank had a gradient for is left without one.
pub(crate) fn reduce_bucket(
    world: &World,
    params: &[Var],
    slots: &[Slot],
    len: usize,
) -> Result<u64> {
    let (n, me) = (world.size(), world.rank());
    let bounds = chunk_bounds(len, n);
    let flags = slots.len();
    let mut data = vec![0f32; len];
    let mut present = vec![0f32; flags];
    for (k, s) in slots.iter().enumerate() {
        let Some(g) = params[s.param].grad() else {
            continue;
        };
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
        data[s.offset..s.offset + s.len].copy_from_slice(g.contiguous().as_slice::<f32>()?);
        present[k] = 1.0;
    }
    // Rank k's message: chunk k, then the presence flags.
    let mut send = Vec::with_capacity(len + n * flags);
    let mut counts = Vec::with_capacity(n);
    for k in 0..n {
        send.extend_from_slice(&data[bounds[k]..bounds[k + 1]]);
        send.extend_from_slice(&present);
        counts.push(bounds[k + 1] - bounds[k] + flags);
    }
    let (lo, hi) = (bounds[me], bounds[me + 1]);
    let width = hi - lo + flags;
    let mut recv = vec![0f32; n * width];
    world.all_to_all_f32(&send, &counts, &mut recv);
    drop(send);
    // Split what came back into the ranks' chunks and their flags.
    let mut chunks = Vec::with_capacity(n * (hi - lo));
    let mut had: Vec<Vec<bool>> = vec![vec![false; n]; flags];
    for r in 0..n {
        let msg = &recv[r * width..(r + 1) * width];
        chunks.extend_from_slice(&msg[..hi - lo]);
        for (k, &f) in msg[hi - lo..].iter().enumerate() {
            had[k][r] = f != 0.0;
        }
    }
    drop(recv);
    let segments: Vec<(usize, usize, Vec<bool>)> = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.offset < hi && s.offset + s.len > lo)
        .map(|(k, s)| {
            let a = s.offset.max(lo) - lo;
            let b = (s.offset + s.len).min(hi) - lo;
            (a, b, had[k].clone())
        })
        .collect();
    let mut mine = vec![0f32; hi - lo];
    sum_in_rank_order(&chunks, &segments, &mut mine);
    drop(chunks);
    let sizes: Vec<usize> = bounds.windows(2).map(|w| w[1] - w[0]).collect();
    world.all_gather_f32(&mine, &sizes, &mut data);
    for (k, s) in slots.iter().enumerate() {
        // A parameter no rank has a gradient for keeps none, as in one
        // process (AdamW skips it; a zero gradient would still decay it).
        let g = if had[k].contains(&true) {
            let shape = params[s.param].shape();
            Some(Tensor::from_vec(
                data[s.offset..s.offset + s.len].to_vec(),
                &shape,
            )?)
        } else {
            None
        };
        params[s.param].set_grad(g)?;
    }
    let sent = (len + n * flags - width) + (n - 1) * (hi - lo);
    Ok(4 * sent as u64)
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
    fn buckets_hold_parameters_last_first_and_each_once() {
        let p = |n: usize| Var::parameter(Tensor::zeros(&[n], DType::F32));
        let params = [p(3), p(5), p(2), p(4)];
        let plan = Plan::new(&params, 6);
        let order: Vec<Vec<usize>> = plan
            .buckets
            .iter()
            .map(|(s, _)| s.iter().map(|s| s.param).collect())
            .collect();
        assert_eq!(order, vec![vec![3, 2], vec![1, 0]]);
        assert_eq!(plan.bucket_of, vec![1, 1, 0, 0]);
        assert_eq!(
            (plan.buckets[0].1, plan.buckets[1].1, plan.elements),
            (6, 8, 14)
        );
    }
}
