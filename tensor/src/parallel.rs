//! The thread pool every parallel kernel in Kiln runs on.
//!
//! Kiln keeps its own [`rayon::ThreadPool`] instead of using rayon's global
//! pool so that the thread count can be changed at any time with
//! [`set_num_threads`] (rayon's global pool can only be configured once).
//! The default is the `KILN_NUM_THREADS` environment variable if set, else
//! the number of logical CPUs.
//!
//! Kernels never split a reduction across a thread-count–dependent number of
//! pieces, so every result is bit-identical whatever the thread count.

use std::sync::{Arc, OnceLock, RwLock};

use rayon::ThreadPool;

static POOL: OnceLock<RwLock<Arc<ThreadPool>>> = OnceLock::new();

fn build(threads: usize) -> Arc<ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("kiln-{i}"))
            .build()
            .expect("building a rayon thread pool only fails if threads cannot be spawned"),
    )
}

fn default_threads() -> usize {
    std::env::var("KILN_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn cell() -> &'static RwLock<Arc<ThreadPool>> {
    POOL.get_or_init(|| RwLock::new(build(default_threads())))
}

/// Returns the pool that Kiln's kernels run on.
pub fn pool() -> Arc<ThreadPool> {
    cell().read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Sets the number of threads Kiln's kernels use (at least 1).
///
/// This is the one way to choose the thread count from code; the
/// `KILN_NUM_THREADS` environment variable sets the initial value.
/// Work already running keeps the pool it started on.
pub fn set_num_threads(threads: usize) {
    *cell().write().unwrap_or_else(|e| e.into_inner()) = build(threads);
}

/// The number of threads Kiln's kernels currently use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Runs `f` inside Kiln's pool, so rayon iterators in `f` use its threads.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let pool = pool();
    if pool.current_num_threads() == 1 {
        return f();
    }
    pool.install(f)
}
