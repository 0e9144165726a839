//! Counting the heap: how many bytes a program holds now, and the most it
//! has held, so a training run can say where its memory goes
//! (`kiln train --memory-report`).
//!
//! A library cannot choose the allocator, so counting is opt-in: a program
//! wraps its allocator in [`CountingAlloc`] (the `kiln` binary does, around
//! mimalloc) and [`live_bytes`] / [`peak_bytes`] start answering; without
//! it they return `None`. The cost is two relaxed atomic operations per
//! allocation, nothing next to filling the memory.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: kiln_tensor::memory::CountingAlloc<std::alloc::System> =
//!     kiln_tensor::memory::CountingAlloc(std::alloc::System);
//! ```

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The counters, on cache lines of their own: next to other statics (the
/// thread pool's, which idle threads poll) every allocation's write pulled
/// the line away from the spinning reader and back, and the counting took
/// a tenth of a bf16 decode step's time on the calling thread.
#[repr(align(128))]
struct Counters {
    live: AtomicUsize,
    peak: AtomicUsize,
    counting: AtomicBool,
}

static COUNTERS: Counters = Counters {
    live: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    counting: AtomicBool::new(false),
};
static LIVE: &AtomicUsize = &COUNTERS.live;
static PEAK: &AtomicUsize = &COUNTERS.peak;
static COUNTING: &AtomicBool = &COUNTERS.counting;

/// A global allocator that counts the bytes allocated through `A`.
#[derive(Debug, Default)]
pub struct CountingAlloc<A>(pub A);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    // Only a new peak writes (a read is enough to see it is not one).
    if now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
    if !COUNTING.load(Ordering::Relaxed) {
        COUNTING.store(true, Ordering::Relaxed);
    }
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every method forwards to the wrapped allocator with the caller's
// arguments unchanged, so `A`'s guarantees carry over; the counting touches
// only atomics and never allocates.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received (see the impl's note).
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { self.0.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as received.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Bytes allocated and not yet freed, when the program counts
/// ([`CountingAlloc`]); `None` otherwise.
pub fn live_bytes() -> Option<usize> {
    COUNTING
        .load(Ordering::Relaxed)
        .then(|| LIVE.load(Ordering::Relaxed))
}

/// The most bytes held at once since the start or the last
/// [`reset_peak`]; `None` when the program does not count.
pub fn peak_bytes() -> Option<usize> {
    COUNTING
        .load(Ordering::Relaxed)
        .then(|| PEAK.load(Ordering::Relaxed))
}

/// Starts a new peak measurement from what is held now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// The process's peak resident set (`VmHWM` in `/proc/self/status`), the
/// figure `getrusage`'s `ru_maxrss` reports; `None` off Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_through_the_wrapper() {
        let a = CountingAlloc(std::alloc::System);
        let layout = Layout::from_size_align(1 << 20, 64).unwrap();
        let before = LIVE.load(Ordering::Relaxed);
        // SAFETY: a non-zero size layout; the block is freed below with
        // the same layout.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        assert_eq!(live_bytes(), Some(before + (1 << 20)));
        assert!(peak_bytes().unwrap() >= before + (1 << 20));
        // SAFETY: `p` came from `a.alloc(layout)`.
        let q = unsafe { a.realloc(p, layout, 1 << 19) };
        assert_eq!(live_bytes(), Some(before + (1 << 19)));
        // SAFETY: `q` came from realloc to `1 << 19` bytes, same alignment.
        unsafe { a.dealloc(q, Layout::from_size_align(1 << 19, 64).unwrap()) };
        assert_eq!(live_bytes(), Some(before));
        assert!(peak_rss_bytes().unwrap_or(1) > 0);
    }
}
