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

use std::mem::MaybeUninit;

use crate::uninit::build_par;
use crate::Layout;

/// Elements per parallel task: large enough that scheduling costs little.
/// Ops smaller than twice this run on the calling thread.
pub(crate) const PAR_CHUNK: usize = 1 << 15;

/// Elementwise work is cut between threads at multiples of this many
/// elements (a few cache lines), so no two threads write the same line.
pub(crate) const PAR_UNIT: usize = 64;

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
    /// parallel chunks of [`PAR_CHUNK`] positions: `f(out_run, offsets,
    /// inner_strides)` fills `out_run` (whose length is the run length).
    ///
    /// # Safety
    /// `f` must write every element of `out_run`.
    pub(crate) unsafe fn collect<O>(
        &self,
        f: impl Fn(&mut [MaybeUninit<O>], [usize; N], [usize; N]) + Sync,
    ) -> Vec<O>
    where
        O: Send,
    {
        // SAFETY: the runs `for_runs` visits tile `start..start + len`
        // exactly, and the caller guarantees `f` writes each run.
        unsafe {
            build_par(
                self.numel,
                PAR_UNIT,
                PAR_CHUNK / PAR_UNIT,
                |start, chunk| {
                    let mut pos = 0;
                    self.for_runs(start, start + chunk.len(), |offs, len, st| {
                        f(&mut chunk[pos..pos + len], offs, st);
                        pos += len;
                    });
                },
            )
        }
    }
}

/// Edge of the square tiles a transposing copy moves at a time: 16 f32 are
/// one 64-byte cache line, so a tile reads 16 source lines and writes 16
/// destination lines, all of which stay in L1 while the tile is copied.
const TILE: usize = 16;

/// The elements of `layout` over `src`, in row-major order (what
/// `contiguous()` produces).
///
/// Runs along the innermost dim are copied with a stride. When that stride
/// is not 1 but the next dim out has stride 1 — a transposed matrix, or a
/// batch of them — reading a run would touch one cache line per element, so
/// the copy goes tile by tile instead.
pub(crate) fn gather<T: Copy + Send + Sync>(src: &[T], layout: &Layout) -> Vec<T> {
    let w = Walk::new([layout]);
    let rank = w.shape.len();
    if rank >= 2 && w.strides[0][rank - 1] != 1 && w.strides[0][rank - 2] == 1 {
        return gather_transposed(src, &w);
    }
    // SAFETY: every branch writes the whole run.
    unsafe {
        w.collect(|dst: &mut [MaybeUninit<T>], [o], [s]| {
            let n = dst.len();
            if s == 1 {
                for (d, &v) in dst.iter_mut().zip(&src[o..o + n]) {
                    d.write(v);
                }
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    d.write(src[o + i * s]);
                }
            }
        })
    }
}

/// [`gather`] for a walk whose last two dims `[R, C]` have strides `[1, s]`:
/// output row `g` of the flattened `[outer·R, C]` result reads
/// `src[base(g) + c·s]`. Blocks of whole rows run in parallel.
fn gather_transposed<T: Copy + Send + Sync>(src: &[T], w: &Walk<1>) -> Vec<T> {
    let rank = w.shape.len();
    let (rows, cols) = (w.shape[rank - 2], w.shape[rank - 1]);
    let s = w.strides[0][rank - 1];
    let outer = &w.shape[..rank - 2];
    let outer_strides = &w.strides[0][..rank - 2];
    // Storage offset of the first element of output row g.
    let row_base = |g: usize| {
        let (mut o, mut rest) = (w.offsets[0] + g % rows, g / rows);
        for (&size, &st) in outer.iter().zip(outer_strides).rev() {
            o += (rest % size) * st;
            rest /= size;
        }
        o
    };
    // Parts are cut at whole blocks of TILE rows.
    let block = TILE * cols.max(1);
    // SAFETY: every row of the chunk is written in full: the tiles cover
    // row block × column range without gaps.
    unsafe {
        build_par(w.numel, block, PAR_CHUNK.div_ceil(block), |start, chunk| {
            let first_row = start / cols;
            for (bi, block) in chunk.chunks_mut(TILE * cols).enumerate() {
                let g0 = first_row + bi * TILE;
                let bases: Vec<usize> = (g0..g0 + block.len() / cols).map(row_base).collect();
                for c0 in (0..cols).step_by(TILE) {
                    let c1 = (c0 + TILE).min(cols);
                    for (r, &base) in bases.iter().enumerate() {
                        let dst = &mut block[r * cols + c0..r * cols + c1];
                        for (c, d) in (c0..c1).zip(dst) {
                            d.write(src[base + c * s]);
                        }
                    }
                }
            }
        })
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

    #[test]
    fn tiled_transpose_matches_strided_walk() {
        // Batched, offset and with sizes that are not tile multiples, large
        // enough to be split into parallel chunks.
        let (b, r, c) = (3, 37, 1500);
        let src: Vec<u32> = (0..(b * r * c + 5) as u32).collect();
        let l = Layout::new(vec![b, r, c], vec![r * c, 1, r], 5).unwrap();
        let got = gather(&src, &l);
        let mut want = Vec::new();
        Walk::new([&l]).for_runs(0, l.numel(), |[o], len, [s]| {
            want.extend((0..len).map(|i| src[o + i * s]));
        });
        assert_eq!(got, want);
    }
}
