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
//!
//! Every parallel kernel (elementwise, row and reduction kernels, both
//! GEMMs and the gemvs, the batch loop of a batched matmul) runs through
//! the crate's `for_each_range`, a parallel-for on this pool in which the
//! calling thread works too and pool threads stay awake (spinning, up to
//! 1 ms) between back-to-back ops, as OpenMP's do; [`join`] runs two
//! independent pieces side by side. rayon supplies the pool's threads.

use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

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

/// The number of threads Kiln's kernels currently use (1 inside one side
/// of a [`join`]).
pub fn num_threads() -> usize {
    if SERIAL.get() {
        1
    } else {
        pool().current_num_threads()
    }
}

thread_local! {
    /// Set while this thread runs one side of a [`join`]: kernels then stay
    /// on it instead of spreading over the pool.
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `a` and `b` at the same time on two threads of Kiln's pool, each
/// computing serially (kernels inside them see one thread), and returns
/// both results. With one thread configured it runs `a`, then `b`.
///
/// For two independent pieces of about equal work that are each big enough
/// to keep a core busy — the two gradient products of a matmul's backward,
/// `g·bᵀ` and `aᵀ·g`, have exactly the same number of multiply-adds — one
/// piece per core beats running each across all cores: a product split
/// between threads packs its operands twice or meets at barriers. Which
/// thread runs which piece does not change any result.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if num_threads() <= 1 {
        return (a(), b());
    }
    install(|| rayon::join(|| serially(a), || serially(b)))
}

/// Runs `f` with kernels inside it seeing one thread: for a piece of work
/// that is itself one of several run in parallel ([`join`], the batch loop
/// of a batched matmul).
pub(crate) fn serially<R>(f: impl FnOnce() -> R) -> R {
    let was = SERIAL.replace(true);
    let r = f();
    SERIAL.set(was);
    r
}

/// Runs `f` inside Kiln's pool, so rayon iterators in `f` use its threads.
///
/// Even with one thread the closure moves to the pool's thread: run on the
/// caller, rayon iterators would fall back to rayon's global pool (one
/// thread per CPU). Callers keep small work out of this function, since
/// the hand-off to a sleeping pool thread costs microseconds.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

/// Chunks each part of a [`for_each_range`] job is cut into, so a thread
/// that finishes early can take over part of a slower thread's work.
const CHUNKS_PER_PART: usize = 4;

/// How long a pool thread that helped with a [`for_each_range`] job keeps
/// spinning, waiting for the next one, before it goes back to sleep. Ops in
/// a training step follow each other within microseconds; waking a sleeping
/// thread costs tens of microseconds, and on a busy machine it may not get a
/// core for milliseconds. OpenMP runtimes (and so PyTorch) spin the same way
/// (libgomp for a few hundred thousand polls, Intel's runtime for 200 ms).
const SPIN: Duration = Duration::from_millis(1);

/// The job most recently started by [`for_each_range`], for spinning
/// helpers to pick up, and a counter bumped whenever it changes.
static CURRENT: Mutex<Option<Arc<Job>>> = Mutex::new(None);
static GENERATION: AtomicUsize = AtomicUsize::new(0);
/// Pool threads engaged as helpers: woken for a job, helping with one, or
/// spinning in [`spin_for_jobs`] for the next. A new job wakes a thread only
/// for the parts no engaged helper will take. (Counting only the spinning
/// ones woke a second pool thread whenever the helper was still finishing
/// its last chunk; with the caller that made three busy threads on two
/// cores, and one product in ten of a 1024³ run took 15–20 % longer.)
static HELPERS: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` over `0..units` cut into disjoint ranges, on the calling thread
/// and on the pool's threads, returning when every range is done. Ranges
/// hold at least `min_units` units unless the whole job is smaller; a job
/// under `2 · min_units` runs inline in one call.
///
/// The work is split into one part per thread, each cut into a few chunks.
/// The calling thread works too: it starts on part 0 while helpers (pool
/// threads still spinning after the previous job, or newly woken ones) start
/// on the other parts; whoever finishes its own part takes chunks of the
/// others. The caller never waits for a helper that has not started, so on
/// a busy machine, where a pool thread may be slow to get a core, the op
/// runs on fewer threads instead of stalling. Only use it where the result
/// does not depend on where ranges are cut (elementwise ops, whole rows), so
/// results are identical at every thread count. (PyTorch's C++ equivalent
/// is `at::parallel_for(begin, end, grain_size, f)`.)
///
/// ```
/// use kiln_tensor::parallel::{for_each_range, SharedMut};
/// let mut squares = vec![0u64; 10_000];
/// let out = SharedMut::new(&mut squares);
/// for_each_range(10_000, 1_000, |r| {
///     // SAFETY: the ranges for_each_range hands out are disjoint.
///     let chunk = unsafe { out.range(r.clone()) };
///     for (x, i) in chunk.iter_mut().zip(r) {
///         *x = (i * i) as u64;
///     }
/// });
/// assert_eq!(squares[99], 9_801);
/// ```
pub fn for_each_range(units: usize, min_units: usize, f: impl Fn(Range<usize>) + Sync) {
    let pool = pool();
    let threads = num_threads();
    let parts = (units / min_units.max(1)).clamp(1, threads);
    if parts == 1 {
        if units > 0 {
            f(0..units);
        }
        return;
    }
    let f: &(dyn Fn(Range<usize>) + Sync) = &f;
    // SAFETY: the job's pointer to `f` is only dereferenced by a thread that
    // has claimed a chunk, and this function returns only after every
    // claimed chunk has finished (`wait`), so `f` outlives every use. A
    // helper that arrives later finds no chunk to claim and never touches it.
    let f = unsafe {
        std::mem::transmute::<
            *const (dyn Fn(Range<usize>) + Sync + '_),
            *const (dyn Fn(Range<usize>) + Sync + 'static),
        >(f)
    };
    let job = Arc::new(Job {
        f,
        units,
        parts,
        next: (0..parts).map(|_| AtomicUsize::new(0)).collect(),
        next_home: AtomicUsize::new(1),
        pending: AtomicUsize::new(parts * CHUNKS_PER_PART),
        panic: Mutex::new(None),
        done: (Mutex::new(false), Condvar::new()),
    });
    *lock(&CURRENT) = Some(job.clone());
    // SeqCst on GENERATION and HELPERS (here and where a helper stops
    // spinning): either this call sees the helper gone and wakes another,
    // or the helper sees this job and takes it.
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    // Wake as many pool threads as there are parts without a helper.
    let engaged = HELPERS.load(Ordering::SeqCst);
    for _ in engaged..parts - 1 {
        HELPERS.fetch_add(1, Ordering::SeqCst);
        let job = job.clone();
        pool.spawn(move || {
            job.help();
            drop(job);
            let mut seen = generation;
            loop {
                seen = spin_for_jobs(seen);
                HELPERS.fetch_sub(1, Ordering::SeqCst);
                // A job published while this thread was giving up counted
                // it as a helper and woke nobody: it would run on its
                // caller alone. Look once more after leaving the count.
                if GENERATION.load(Ordering::SeqCst) == seen {
                    break;
                }
                HELPERS.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    job.work(0);
    job.wait();
    {
        let mut cur = lock(&CURRENT);
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &job)) {
            *cur = None;
        }
    }
    let panic = lock(&job.panic).take();
    if let Some(p) = panic {
        resume_unwind(p);
    }
}

/// Calls `f(range, &mut data[range])` for each `chunk`-element piece of
/// `data` (the last may be shorter), spread over the threads as
/// [`for_each_range`] spreads units: the safe form of the common case, one
/// output slice written chunk by chunk (`par_chunks_mut` in rayon).
pub fn for_each_chunk<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(Range<usize>, &mut [T]) + Sync,
) {
    let (len, chunk) = (data.len(), chunk.max(1));
    let shared = SharedMut::new(data);
    for_each_range(len.div_ceil(chunk), 1, |chunks| {
        for c in chunks {
            let r = c * chunk..((c + 1) * chunk).min(len);
            // SAFETY: chunk c is handed to this iteration only (the ranges
            // of for_each_range are disjoint).
            f(r.clone(), unsafe { shared.range(r) });
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs on a pool thread after it helped: helps with each job that
/// [`for_each_range`] publishes after generation `seen`, until none has
/// come for [`SPIN`], and returns the last generation it saw. Other rayon
/// work queued meanwhile is run too (`rayon::yield_now`), so spinning never
/// holds it up.
fn spin_for_jobs(mut seen: usize) -> usize {
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    loop {
        let g = GENERATION.load(Ordering::SeqCst);
        if g != seen {
            seen = g;
            let job = lock(&CURRENT).clone();
            if let Some(job) = job {
                job.help();
            }
            idle_since = Instant::now();
            continue;
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(64) {
            if let Some(rayon::Yield::Executed) = rayon::yield_now() {
                idle_since = Instant::now();
            }
            if idle_since.elapsed() > SPIN {
                return seen;
            }
        }
        std::hint::spin_loop();
    }
}

/// The shared state of one [`for_each_range`] call.
struct Job {
    f: *const (dyn Fn(Range<usize>) + Sync),
    units: usize,
    parts: usize,
    /// Per part: the next chunk to claim (`≥ CHUNKS_PER_PART`: none left).
    next: Vec<AtomicUsize>,
    /// The part the next helper starts on.
    next_home: AtomicUsize,
    /// Chunks not yet finished.
    pending: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    done: (Mutex<bool>, Condvar),
}

// SAFETY: `f` points to a `Sync` closure (see `for_each_range` for why it is
// alive whenever it is used); everything else is atomics and mutexes.
unsafe impl Send for Job {}
// SAFETY: as above.
unsafe impl Sync for Job {}

impl Job {
    /// Units of chunk `c` of part `p`.
    fn chunk(&self, p: usize, c: usize) -> Range<usize> {
        let k = p * CHUNKS_PER_PART + c;
        let n = self.parts * CHUNKS_PER_PART;
        k * self.units / n..(k + 1) * self.units / n
    }

    /// Works as a helper, starting on the next part nobody started on.
    fn help(&self) {
        let home = self.next_home.fetch_add(1, Ordering::Relaxed) % self.parts;
        self.work(home);
    }

    /// Claims and runs chunks: part `home` first, then the others.
    fn work(&self, home: usize) {
        for k in 0..self.parts {
            let p = (home + k) % self.parts;
            loop {
                let c = self.next[p].fetch_add(1, Ordering::Relaxed);
                if c >= CHUNKS_PER_PART {
                    break;
                }
                // SAFETY: a chunk is claimed, so the caller is still waiting
                // and `f` is alive.
                let f = unsafe { &*self.f };
                let range = self.chunk(p, c);
                if let Err(e) = catch_unwind(AssertUnwindSafe(|| f(range))) {
                    lock(&self.panic).get_or_insert(e);
                }
                if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let (done, cv) = &self.done;
                    *lock(done) = true;
                    cv.notify_all();
                }
            }
        }
    }

    /// Blocks until every chunk has finished.
    fn wait(&self) {
        // Helpers are usually a few microseconds behind: spin briefly first.
        for _ in 0..1 << 12 {
            if self.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            std::hint::spin_loop();
        }
        let (done, cv) = &self.done;
        let mut d = lock(done);
        while !*d {
            d = cv.wait(d).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A raw pointer that may be shared with the pool's threads, for kernels
/// that address their output through strides rather than as a slice (where
/// [`SharedMut`] fits better).
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr<T>(pub *mut T);
// SAFETY: users write disjoint elements through it (documented at each use).
unsafe impl<T> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    /// The pointer. A method, so closures capture the whole `Send` wrapper
    /// rather than the raw field.
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// A mutable slice that several threads may write, each through its own
/// disjoint range (what [`for_each_range`] hands out): how a parallel loop
/// writes chunks of several slices at once (AdamW's parameters and both
/// moments).
pub struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: it only hands out `&mut` to disjoint ranges (the caller's promise
// in `range`), which may live on different threads when `T: Send`.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Shares `s` for the length of its borrow.
    pub fn new(s: &'a mut [T]) -> Self {
        SharedMut {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _slice: std::marker::PhantomData,
        }
    }

    /// The elements `r` of the slice.
    ///
    /// # Safety
    /// Ranges borrowed at the same time must not overlap.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, r: Range<usize>) -> &'a mut [T] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "range {r:?} of {}",
            self.len
        );
        // SAFETY: in bounds (checked), and the caller guarantees no other
        // live borrow overlaps it.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_is_visited_once() {
        for (units, min) in [(0, 4), (7, 4), (100, 4), (1001, 1), (100_000, 10)] {
            let mut data = vec![0u32; units];
            let shared = SharedMut::new(&mut data);
            for_each_range(units, min, |r| {
                // SAFETY: the ranges are disjoint.
                let s = unsafe { shared.range(r.clone()) };
                for (i, v) in r.zip(s) {
                    *v += i as u32 + 1;
                }
            });
            assert!(data.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
        }
    }

    #[test]
    fn join_runs_both_sides_serially() {
        let outer = num_threads();
        let (a, b) = join(
            || (num_threads(), (0..1000u64).sum::<u64>()),
            || (num_threads(), "b"),
        );
        assert_eq!((a, b), ((1, 499_500), (1, "b")));
        assert_eq!(num_threads(), outer);
        // A kernel inside a side still covers all of its work.
        let (v, _) = join(
            || {
                let mut data = vec![0u8; 100_000];
                let shared = SharedMut::new(&mut data);
                // SAFETY: the ranges are disjoint.
                for_each_range(100_000, 10, |r| unsafe { shared.range(r).fill(1) });
                data
            },
            || (),
        );
        assert!(v.iter().all(|&x| x == 1));
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            for_each_range(1000, 1, |r| {
                if r.contains(&999) {
                    panic!("boom");
                }
            })
        });
        assert!(r.is_err());
    }
}
