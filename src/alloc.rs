//! The allocator of the `kiln` binary (and of the benches, which include
//! this file): mimalloc, told to keep freed memory.
//!
//! A training step frees and reallocates the same large activations every
//! step (a baby GPT's logits and their gradient are 154 MB each). glibc
//! hands blocks that big back to the kernel at once, and mimalloc by
//! default after a short delay; either way the next step's first writes
//! fault in fresh pages that the kernel must zero, which measured a third
//! of a baby-GPT step. Keeping the memory makes the process hold its peak
//! footprint, which is what a training run needs anyway. Libraries cannot
//! choose the allocator; programs built on Kiln may do the same.
//!
//! It is wrapped in [`kiln_tensor::memory::CountingAlloc`] so that
//! `kiln train --memory-report` can say what the heap holds.

#[global_allocator]
static GLOBAL: kiln_tensor::memory::CountingAlloc<mimalloc::MiMalloc> =
    kiln_tensor::memory::CountingAlloc(mimalloc::MiMalloc);

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (the same index in
/// its v2 and v3 headers); the Rust bindings do not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed memory to the OS (purge delay −1). Call once, first
/// thing in `main`.
pub fn keep_freed_memory() {
    // SAFETY: setting an option is always allowed; it only changes when
    // mimalloc purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
