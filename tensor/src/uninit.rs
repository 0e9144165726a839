//! Output buffers that kernels fill without zeroing them first.
//!
//! Every op allocates its result. `vec![0.0; n]` would write each element
//! twice — once with zero, once with the answer — and for an op as cheap as
//! `add` the zeroing alone costs more than the op. Instead a kernel gets the
//! buffer's uninitialised memory as `&mut [MaybeUninit<T>]`, writes every
//! element, and the buffer becomes a `Vec<T>`.
//!
//! Parallel fills cut the buffer into ranges; kernels that use them compute
//! each element (or each row) on its own, so the result does not depend on
//! where the cuts fall.

use std::mem::MaybeUninit;

use crate::parallel::{for_each_range, SharedMut};

/// A `Vec<T>` of `n` elements initialised by `fill`.
///
/// # Safety
/// `fill` must write every element of the slice it is given (unless it
/// panics, in which case the buffer is freed without being read).
pub(crate) unsafe fn build<T>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller guarantees `fill` initialised all `n` elements.
    unsafe { v.set_len(n) };
    v
}

/// Like [`build`], but fills the buffer on several threads (see
/// [`for_each_range`]): the buffer is `n / unit` units of `unit` elements (a
/// row, or a few cache lines) plus any leftover elements, which go with the
/// last unit; each call gets at least `min_units` units unless the buffer is
/// small, which is filled inline. `fill(start, chunk)` must initialise
/// `chunk`, which holds elements `start..start + chunk.len()`.
///
/// # Safety
/// As [`build`]: every call must write its whole chunk.
pub(crate) unsafe fn build_par<T: Send>(
    n: usize,
    unit: usize,
    min_units: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let unit = unit.max(1);
    let units = n / unit;
    let fill_all = |out: &mut [MaybeUninit<T>]| {
        if units == 0 {
            if n > 0 {
                fill(0, out);
            }
            return;
        }
        let shared = SharedMut::new(out);
        for_each_range(units, min_units, |r| {
            let start = r.start * unit;
            let end = if r.end == units { n } else { r.end * unit };
            // SAFETY: `for_each_range` hands out disjoint ranges.
            fill(start, unsafe { shared.range(start..end) })
        });
    };
    // SAFETY: forwarded; the ranges cover every element exactly once.
    unsafe { build(n, fill_all) }
}

/// Views a fully written slice as initialised.
///
/// # Safety
/// Every element of `s` must have been written.
pub(crate) unsafe fn assume_init_mut<T>(s: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the caller guarantees
    // every element is initialised.
    unsafe { &mut *(s as *mut [MaybeUninit<T>] as *mut [T]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_fill_covers_every_element_once() {
        let n = 100_003;
        // SAFETY: the closure writes its whole chunk.
        let v: Vec<usize> = unsafe {
            build_par(n, 16, 256, |start, chunk| {
                for (i, d) in chunk.iter_mut().enumerate() {
                    d.write(start + i);
                }
            })
        };
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
        // SAFETY: as above.
        let empty: Vec<u8> = unsafe { build_par(0, 16, 1, |_, c| c.fill(MaybeUninit::new(0))) };
        assert!(empty.is_empty());
    }
}
