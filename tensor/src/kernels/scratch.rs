//! The reusable scratch buffers of the matmul kernels.
//!
//! Packing A and B (and gemv's block partial sums) needs buffers of up to a
//! few MiB per call. Allocating them fresh costs page faults on every call,
//! so each thread keeps one buffer per role in a thread-local and lends it
//! out through [`with_scratch`].

use std::cell::Cell;
use std::thread::LocalKey;

/// 64 bytes of floats: the unit scratch buffers are allocated in, so every
/// panel starts on a cache line (the kernels use aligned loads on B).
#[repr(C, align(64))]
#[derive(Clone, Copy, Default)]
pub(crate) struct Line(pub [f32; 16]);

thread_local! {
    /// The shared A block of a GEMM, owned by the thread that drives the
    /// call (bf16 products and gemv reuse it for their own packing).
    pub(crate) static PACK_A: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    /// Each GEMM task's packed B block, owned by the thread running the task.
    pub(crate) static PACK_B: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    /// The block partial sums of gemv's split along `k`.
    pub(crate) static PARTIALS: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with a 64-byte-aligned scratch buffer of at least `len` floats,
/// reused across calls on this thread.
///
/// The buffer is taken out of the thread-local while in use, so a nested
/// call on the same thread (the pool may run another job here while this
/// one waits) gets a fresh buffer instead of aliasing this one.
pub(crate) fn with_scratch<R>(
    key: &'static LocalKey<Cell<Vec<Line>>>,
    len: usize,
    f: impl FnOnce(*mut f32) -> R,
) -> R {
    let mut buf = key.take();
    let lines = len.div_ceil(16);
    if buf.len() < lines {
        buf = vec![Line::default(); lines];
    }
    let r = f(buf.as_mut_ptr().cast::<f32>());
    key.set(buf);
    r
}
