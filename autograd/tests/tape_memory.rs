//! Memory returns to its starting level after forward + backward: the tape
//! and every activation it saved are freed by backward, and nothing leaks
//! through the leaves. Measured with a counting global allocator, so this
//! file holds a single test (other tests' threads would be counted too).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use kiln_autograd::{tape_len, Var};
use kiln_tensor::{DType, Rng, Tensor};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator,
// which upholds GlobalAlloc's contract; counting has no effect on it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` with this layout (the caller's promise).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn step(w1: &Var, w2: &Var, x: &Tensor, targets: &Tensor) {
    let x = Var::constant(x.clone());
    let h = x.matmul(w1).unwrap().gelu().unwrap();
    let logits = h.matmul(w2).unwrap().softmax(-1).unwrap().log().unwrap();
    let loss = logits
        .neg()
        .unwrap()
        .gather(1, targets)
        .unwrap()
        .mean_all()
        .unwrap();
    assert!(tape_len() > 0);
    loss.backward().unwrap();
    assert_eq!(tape_len(), 0, "backward frees the tape");
}

#[test]
fn forward_backward_returns_memory() {
    kiln_tensor::parallel::set_num_threads(1);
    let mut rng = Rng::new(0);
    let w1 = Var::parameter(Tensor::randn(&[64, 128], 0.0, 0.1, DType::F32, &mut rng).unwrap());
    let w2 = Var::parameter(Tensor::randn(&[128, 10], 0.0, 0.1, DType::F32, &mut rng).unwrap());
    let x = Tensor::randn(&[32, 64], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let targets =
        Tensor::from_vec((0..32).map(|i| i % 10).collect::<Vec<i64>>(), &[32, 1]).unwrap();
    // Warm up: thread-locals, the pool and lazily sized buffers allocate
    // during the first steps and are then reused.
    for _ in 0..2 {
        step(&w1, &w2, &x, &targets);
        w1.zero_grad();
        w2.zero_grad();
    }
    let before = LIVE.load(Ordering::SeqCst);
    let mut peak_growth = 0;
    for _ in 0..5 {
        // Growth within one step: threads of the pool replaced above may
        // still be exiting (freeing their buffers) during the first one.
        let start = LIVE.load(Ordering::SeqCst);
        step(&w1, &w2, &x, &targets);
        peak_growth = peak_growth.max(LIVE.load(Ordering::SeqCst) - start);
        w1.zero_grad();
        w2.zero_grad();
    }
    let after = LIVE.load(Ordering::SeqCst);
    // The gradients alone are 37 KiB; a leaked tape would be far more.
    assert!(
        peak_growth > 30_000,
        "gradients were allocated ({peak_growth} B)"
    );
    // Other threads (the test harness) may free a little meanwhile; only
    // growth would mean a leak.
    assert!(
        after - before < 1024,
        "live bytes grew by {} after 5 steps",
        after - before
    );
}
