//! Walking strided operands in row-major order.
//!
//! Every elementwise kernel reduces to this: N operands viewed with the same
//! logical shape (already broadcast), each with its own strides and offset,
//! visited in row-major order of that shape. [`Walk`] first *coalesces* the
//! dims (drops size-1 dims and merges neighbours that are contiguous in every
//! operand) so a contiguous tensor becomes one long run, then hands the
//! kernel maximal runs along the innermost dim: `(offsets, len, inner
//! strides)`. Kernels loop over a run with a simple stride, which the compiler
//! vectorises when the stride is 1.

use rayon::prelude::*;

use crate::Layout;

/// Elements per parallel task: large enough that scheduling costs little.
pub(crate) const PAR_CHUNK: usize = 1 << 15;

/// N operands walking one logical shape; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Walk<const N: usize> {
    shape: Vec<usize>,
    strides: [Vec<usize>; N],
    offsets: [usize; N],
    numel: usize,
}

impl<const N: usize> Walk<N> {
    /// `layouts` must all have the same shape (broadcast them first).
    pub(crate) fn new(layouts: [&Layout; N]) -> Self {
        let full_shape = layouts[0].shape();
        debug_assert!(layouts.iter().all(|l| l.shape() == full_shape));
        let numel = full_shape.iter().product();
        let mut shape: Vec<usize> = Vec::with_capacity(full_shape.len());
        let mut strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
        for (d, &size) in full_shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            // Merge into the previous kept dim when every operand steps over
            // this dim exactly as if it were the continuation of that one.
            if !shape.is_empty() {
                let mergeable =
                    (0..N).all(|i| *strides[i].last().unwrap() == layouts[i].strides()[d] * size);
                if mergeable {
                    *shape.last_mut().unwrap() *= size;
                    for (i, s) in strides.iter_mut().enumerate() {
                        *s.last_mut().unwrap() = layouts[i].strides()[d];
                    }
                    continue;
                }
            }
            shape.push(size);
            for (i, s) in strides.iter_mut().enumerate() {
                s.push(layouts[i].strides()[d]);
            }
        }
        Walk {
            shape,
            strides,
            offsets: std::array::from_fn(|i| layouts[i].offset()),
            numel,
        }
    }

    /// Visits linear (row-major) positions `start..end` as runs along the
    /// innermost dim: `f(offsets, len, inner_strides)`.
    pub(crate) fn for_runs(
        &self,
        start: usize,
        end: usize,
        mut f: impl FnMut([usize; N], usize, [usize; N]),
    ) {
        let end = end.min(self.numel);
        if start >= end {
            return;
        }
        let rank = self.shape.len();
        if rank == 0 {
            f(self.offsets, 1, [0; N]);
            return;
        }
        let inner = self.shape[rank - 1];
        let inner_strides: [usize; N] = std::array::from_fn(|i| self.strides[i][rank - 1]);
        let mut idx = vec![0; rank];
        let mut rem = start;
        for d in (0..rank).rev() {
            idx[d] = rem % self.shape[d];
            rem /= self.shape[d];
        }
        let mut pos = start;
        loop {
            let offs: [usize; N] = std::array::from_fn(|i| {
                self.offsets[i]
                    + idx
                        .iter()
                        .zip(&self.strides[i])
                        .map(|(a, b)| a * b)
                        .sum::<usize>()
            });
            let len = (inner - idx[rank - 1]).min(end - pos);
            f(offs, len, inner_strides);
            pos += len;
            if pos >= end {
                return;
            }
            idx[rank - 1] = 0;
            for d in (0..rank - 1).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }

    /// Produces a contiguous output of `numel()` elements, computing runs in
    /// parallel chunks: `f(out_run, offsets, inner_strides)` fills `out_run`
    /// (whose length is the run length).
    pub(crate) fn collect<O>(&self, f: impl Fn(&mut [O], [usize; N], [usize; N]) + Sync) -> Vec<O>
    where
        O: Copy + Default + Send,
    {
        let n = self.numel;
        let mut out = vec![O::default(); n];
        let run_chunk = |start: usize, chunk: &mut [O]| {
            let mut pos = 0;
            self.for_runs(start, start + chunk.len(), |offs, len, st| {
                f(&mut chunk[pos..pos + len], offs, st);
                pos += len;
            });
        };
        if n >= 2 * PAR_CHUNK {
            crate::parallel::install(|| {
                out.par_chunks_mut(PAR_CHUNK)
                    .enumerate()
                    .for_each(|(c, chunk)| run_chunk(c * PAR_CHUNK, chunk));
            });
        } else {
            run_chunk(0, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_coalesces_to_one_run() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let w = Walk::new([&l]);
        let mut runs = Vec::new();
        w.for_runs(0, 24, |o, len, s| runs.push((o[0], len, s[0])));
        assert_eq!(runs, vec![(0, 24, 1)]);
    }

    #[test]
    fn transposed_runs_step_by_stride() {
        let l = Layout::contiguous(&[2, 3]).transpose(0, 1).unwrap();
        let w = Walk::new([&l]);
        let mut runs = Vec::new();
        w.for_runs(1, 5, |o, len, s| runs.push((o[0], len, s[0])));
        // logical rows: [0,3] [1,4] [2,5]; positions 1..5 → 3 | 1 4 | 2
        assert_eq!(runs, vec![(3, 1, 3), (1, 2, 3), (2, 1, 3)]);
    }
}
