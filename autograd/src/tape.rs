//! The tape: an arena of recorded ops, played back in reverse by `backward`.
//!
//! Ops append nodes in execution order to a thread-local tape, so a node's
//! inputs always come before it and backward is a plain reverse loop — no
//! topological sort. Each node keeps its backward rule as a closure over the
//! tensors it saved. `backward()` consumes the tape: every closure runs at
//! most once and is dropped right after, so saved activations are freed as
//! the pass goes, and the tape is empty (a new *generation*) afterwards.
//!
//! The engine, not the rules, undoes broadcasting: a rule returns a gradient
//! shaped like the op's output, and the engine sums it back down to each
//! input's shape (see [`unbroadcast`]).
//!
//! ```text
//!   forward:  x ─┐
//!                ├─ mul (node 0) ── sum (node 1) ── loss
//!             w ─┘
//!   backward: loss.grad = 1 → node 1 rule → node 0 rule → x.grad, w.grad
//! ```

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use kiln_tensor::Tensor;

use crate::trace::{BackwardStep, TraceEntry, TraceInput};
use crate::var::{Kind, Leaf, Var};
use crate::{AutogradError, Result};

/// A backward rule: given the gradient of the op's output, the gradients of
/// its inputs (`None` where an input needs none), each shaped like the
/// output or like the input (the engine unbroadcasts).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>>>;

pub(crate) enum Input {
    Node(usize),
    Leaf(Arc<Leaf>),
    Const,
}

impl Input {
    /// The input as the trace shows it: a leaf by its address, so every use
    /// of one parameter gets the same number.
    fn trace_input(&self) -> TraceInput {
        match self {
            Input::Node(i) => TraceInput::Node(*i),
            Input::Leaf(l) => TraceInput::Leaf(Arc::as_ptr(l) as usize),
            Input::Const => TraceInput::Constant,
        }
    }
}

struct Node {
    inputs: Vec<Input>,
    input_shapes: Vec<Vec<usize>>,
    backward: Option<BackwardFn>,
    /// For a narrow (`dim`, `start`): the engine adds the output's gradient
    /// into that slice of a node input's gradient in place, rather than
    /// running the rule, which builds a zero-padded copy to add.
    slice: Option<(usize, usize)>,
    trace: TraceEntry,
}

#[derive(Default)]
struct Tape {
    generation: u64,
    nodes: Vec<Node>,
}

thread_local! {
    static TAPE: RefCell<Tape> = RefCell::new(Tape::default());
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static LAST_BACKWARD: RefCell<Vec<BackwardStep>> = const { RefCell::new(Vec::new()) };
}

/// Whether ops are being recorded on this thread (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Whether an op on `inputs` is recorded on this thread: recording is on
/// and some input requires grad (so its result would too). Code that
/// computes a result outside the tape, because nothing will differentiate
/// it, asks this first.
pub fn records(inputs: &[&Var]) -> bool {
    is_grad_enabled() && inputs.iter().any(|v| v.requires_grad())
}

/// Runs `f` without recording anything (`with torch.no_grad():`): results
/// are constants and no activations are kept. Used for evaluation and
/// generation.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Disables recording until dropped; restores the previous mode.
#[derive(Debug)]
pub struct NoGradGuard {
    _mode: GradMode,
}

impl NoGradGuard {
    /// Starts a no-grad scope.
    pub fn new() -> NoGradGuard {
        NoGradGuard {
            _mode: GradMode::set(false),
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        NoGradGuard::new()
    }
}

/// Sets whether ops are recorded until dropped, then restores the previous
/// mode: behind [`NoGradGuard`], and turned on for a checkpoint's
/// recomputation, which runs inside backward whatever mode the caller is in.
#[derive(Debug)]
pub(crate) struct GradMode {
    prev: bool,
}

impl GradMode {
    pub(crate) fn set(on: bool) -> GradMode {
        GradMode {
            prev: GRAD_ENABLED.with(|g| g.replace(on)),
        }
    }
}

impl Drop for GradMode {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Number of nodes on this thread's tape (for tests and tracing).
pub fn tape_len() -> usize {
    TAPE.with(|t| t.borrow().nodes.len())
}

/// Drops everything recorded on this thread's tape without running backward
/// (for example after a forward pass whose loss is not needed). Values
/// recorded on it can no longer be differentiated.
pub fn clear_tape() {
    TAPE.with(|t| {
        let mut t = t.borrow_mut();
        t.nodes.clear();
        t.generation += 1;
    });
}

pub(crate) fn input_of(op: &'static str, v: &Var) -> Result<Input> {
    Ok(match &v.kind {
        Kind::Const(_) => Input::Const,
        Kind::Leaf(l) if l.requires_grad() => Input::Leaf(l.clone()),
        Kind::Leaf(_) => Input::Const,
        Kind::Node { generation, id, .. } => {
            let current = TAPE.with(|t| t.borrow().generation);
            if *generation != current {
                return Err(AutogradError::StaleTape { op });
            }
            Input::Node(*id)
        }
    })
}

/// Records an op: if recording is on and any input requires grad, appends a
/// node and returns a node `Var`; otherwise returns a constant and drops the
/// rule (and whatever it saved) at once.
pub(crate) fn record(
    op: &'static str,
    rule: &'static str,
    inputs: &[&Var],
    out: Tensor,
    backward: BackwardFn,
) -> Result<Var> {
    push(op, rule, inputs, out, backward, None, false)
}

/// [`record`] that appends a node whenever recording is on, even if no
/// input requires grad: a checkpointed segment's parameters are not among
/// its inputs ([`crate::checkpoint`]).
pub(crate) fn record_always(
    op: &'static str,
    rule: &'static str,
    inputs: &[&Var],
    out: Tensor,
    backward: BackwardFn,
) -> Result<Var> {
    push(op, rule, inputs, out, backward, None, true)
}

/// [`record`] for `out = input.narrow(dim, start, …)`: the gradient is added
/// straight into that slice of the input's gradient when the input is a
/// node; `backward` (the zero-padded gradient) serves a leaf input.
pub(crate) fn record_slice(
    op: &'static str,
    rule: &'static str,
    input: &Var,
    out: Tensor,
    (dim, start): (usize, usize),
    backward: BackwardFn,
) -> Result<Var> {
    push(op, rule, &[input], out, backward, Some((dim, start)), false)
}

fn push(
    op: &'static str,
    rule: &'static str,
    inputs: &[&Var],
    out: Tensor,
    backward: BackwardFn,
    slice: Option<(usize, usize)>,
    always: bool,
) -> Result<Var> {
    let recorded = if always {
        is_grad_enabled()
    } else {
        records(inputs)
    };
    if !recorded {
        return Ok(Var::constant(out));
    }
    let ins: Vec<Input> = inputs
        .iter()
        .map(|v| input_of(op, v))
        .collect::<Result<_>>()?;
    let values: Vec<Tensor> = inputs.iter().map(|v| v.value()).collect();
    let sources = ins.iter().map(Input::trace_input).collect();
    let trace = TraceEntry::new(op, rule, sources, &values, &out);
    let input_shapes = values.iter().map(|v| v.shape().to_vec()).collect();
    let (generation, id) = TAPE.with(|t| {
        let mut t = t.borrow_mut();
        t.nodes.push(Node {
            inputs: ins,
            input_shapes,
            backward: Some(backward),
            slice,
            trace,
        });
        (t.generation, t.nodes.len() - 1)
    });
    Ok(Var {
        kind: Kind::Node {
            value: out,
            generation,
            id,
        },
    })
}

/// Sums a gradient shaped like a broadcast result back to `shape`: leading
/// extra dims are summed away, and dims where `shape` has 1 but the gradient
/// does not are summed with keepdim.
pub fn unbroadcast(grad: Tensor, shape: &[usize]) -> Result<Tensor> {
    if grad.shape() == shape {
        return Ok(grad);
    }
    let extra = grad
        .rank()
        .checked_sub(shape.len())
        .ok_or_else(|| AutogradError::GradShape {
            op: "unbroadcast",
            expected: shape.to_vec(),
            got: grad.shape().to_vec(),
        })?;
    let mut dims: Vec<usize> = (0..extra).collect();
    for (i, &s) in shape.iter().enumerate() {
        if s == 1 && grad.shape()[extra + i] != 1 {
            dims.push(extra + i);
        }
    }
    let summed = if dims.is_empty() {
        grad
    } else {
        grad.sum(&dims, true)?
    };
    Ok(summed.reshape(shape)?)
}

/// Adds `g` into a node's gradient: in place when the gradient so far owns
/// its buffer (else a new sum; see [`Tensor::add_assign`]).
fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    match slot {
        None => *slot = Some(g),
        Some(prev) => prev.add_assign(&g)?,
    }
    Ok(())
}

/// Adds `g` into positions `start..` along `dim` of a node's gradient
/// (shaped `shape`), starting from zeros if it has none yet.
fn accumulate_slice(
    slot: &mut Option<Tensor>,
    g: &Tensor,
    shape: &[usize],
    (dim, start): (usize, usize),
) -> Result<()> {
    let grad = slot.get_or_insert_with(|| Tensor::zeros(shape, g.dtype()));
    grad.add_assign_slice(g, dim, start)?;
    Ok(())
}

impl Var {
    /// Reverse-mode differentiation from a one-element value (`loss.backward()`):
    /// accumulates `d self / d leaf` into every leaf that requires grad, then
    /// frees the tape.
    ///
    /// # Errors
    /// [`AutogradError::NotScalar`] for a value with more than one element,
    /// [`AutogradError::NoGrad`] if nothing upstream requires grad,
    /// [`AutogradError::StaleTape`] if its tape was already played back.
    pub fn backward(&self) -> Result<()> {
        let v = self.value();
        if v.numel() != 1 {
            return Err(AutogradError::NotScalar {
                shape: v.shape().to_vec(),
            });
        }
        self.backward_with(Tensor::ones(v.shape(), v.dtype()))
    }

    /// Reverse-mode differentiation seeded with `grad` (shaped like `self`),
    /// as `out.backward(grad)` in PyTorch.
    ///
    /// # Errors
    /// As [`Var::backward`], plus [`AutogradError::GradShape`].
    pub fn backward_with(&self, grad: Tensor) -> Result<()> {
        run_backward(&[(self, grad)])
    }
}

/// Reverse-mode differentiation from several one-element values in one pass
/// (`torch.autograd.backward([loss1, loss2])`): every leaf gets the sum of
/// its gradients from all of them, as from `(loss1 + loss2).backward()`.
/// This is how two losses that share parameters (or a shared trunk) are
/// differentiated: the tape is played back once, so a second
/// `loss2.backward()` after `loss1.backward()` finds it freed
/// ([`AutogradError::StaleTape`]), where PyTorch would need
/// `retain_graph=True`.
///
/// # Errors
/// As [`Var::backward`] for each value.
pub fn backward_all(losses: &[&Var]) -> Result<()> {
    let mut roots = Vec::with_capacity(losses.len());
    for l in losses {
        let v = l.value();
        if v.numel() != 1 {
            return Err(AutogradError::NotScalar {
                shape: v.shape().to_vec(),
            });
        }
        roots.push((*l, Tensor::ones(v.shape(), v.dtype())));
    }
    run_backward(&roots)
}

/// The engine: plays the tape back from `roots`, each seeded with its
/// gradient.
fn run_backward(roots: &[(&Var, Tensor)]) -> Result<()> {
    let mut seeds: Vec<(usize, Tensor)> = Vec::new();
    let mut any_node = false;
    for (var, grad) in roots {
        let v = var.value();
        if grad.shape() != v.shape() {
            return Err(AutogradError::GradShape {
                op: "backward",
                expected: v.shape().to_vec(),
                got: grad.shape().to_vec(),
            });
        }
        match &var.kind {
            Kind::Const(_) => return Err(AutogradError::NoGrad),
            Kind::Leaf(l) if !l.requires_grad() => return Err(AutogradError::NoGrad),
            Kind::Leaf(_) => {}
            Kind::Node { .. } => match input_of("backward", var)? {
                Input::Node(id) => {
                    seeds.push((id, grad.clone()));
                    any_node = true;
                }
                _ => unreachable!("a node input is a node"),
            },
        }
    }
    // A leaf as its own root: its seed is its gradient.
    for (var, grad) in roots {
        if let Kind::Leaf(l) = &var.kind {
            l.accumulate(grad.clone())?;
        }
    }
    if !any_node {
        return Ok(());
    }
    let root = seeds.iter().map(|(id, _)| *id).max().expect("a node root");
    // Take the whole tape: this pass consumes it.
    let mut nodes = TAPE.with(|t| {
        let mut t = t.borrow_mut();
        t.generation += 1;
        std::mem::take(&mut t.nodes)
    });
    nodes.truncate(root + 1);
    let ids: Vec<usize> = seeds.iter().map(|(id, _)| *id).collect();
    let mut leaves = LeafGrads::count(&nodes, &ids);
    let mut grads: Vec<Option<Tensor>> = (0..nodes.len()).map(|_| None).collect();
    for (id, g) in seeds {
        accumulate(&mut grads[id], g)?;
    }
    let mut steps = Vec::new();
    for i in (0..=root).rev() {
        let Some(g) = grads[i].take() else {
            continue;
        };
        let started = std::time::Instant::now();
        let node = &mut nodes[i];
        let rule = node.backward.take().expect("each node runs once");
        if let (Some(slice), [Input::Node(j)]) = (node.slice, &node.inputs[..]) {
            accumulate_slice(&mut grads[*j], &g, &node.input_shapes[0], slice)?;
            drop(rule);
        } else {
            let in_grads = rule(&g)?;
            for ((input, shape), ig) in node.inputs.iter().zip(&node.input_shapes).zip(in_grads) {
                match (input, ig) {
                    (Input::Node(j), Some(ig)) => {
                        accumulate(&mut grads[*j], unbroadcast(ig, shape)?)?
                    }
                    (Input::Leaf(l), ig) => {
                        let ig = ig.map(|g| unbroadcast(g, shape)).transpose()?;
                        leaves.add(l, ig)?;
                    }
                    _ => {}
                }
            }
        }
        drop(g);
        steps.push(BackwardStep {
            node: i,
            op: node.trace.op,
            rule: node.trace.rule,
            elapsed: started.elapsed(),
        });
        // Free this node's saved tensors and links now.
        node.inputs.clear();
    }
    leaves.flush_rest()?;
    LAST_BACKWARD.with(|b| *b.borrow_mut() = steps);
    Ok(())
}

/// One backward pass's gradients for the leaves, summed per leaf before
/// they reach `param.grad`: as PyTorch's engine sums a leaf's incoming
/// gradients in its input buffer and calls `AccumulateGrad` once per pass.
///
/// So a parameter used twice (GPT-2's tied `wte`) gains `g_pass = g_a + g_b`
/// and after two passes holds `g_pass1 + g_pass2`, not `((g_a1 + g_b1) +
/// g_a2) + g_b2`: accumulating micro-batches in one process adds the same
/// per-pass sums, in the same order, as data-parallel ranks reducing theirs
/// (kiln-distributed), which makes the two bit-identical. A leaf's sum goes
/// to its gradient as soon as the last node that uses it has run, so a
/// parameter used once is never buffered.
struct LeafGrads {
    /// Per leaf (by `Arc` address): its slot, the pass's sum so far, and
    /// the uses not yet played back.
    slots: std::collections::HashMap<*const Leaf, usize>,
    pending: Vec<(Arc<Leaf>, Option<Tensor>, usize)>,
}

impl LeafGrads {
    /// Counts each leaf's uses by the nodes that backward reaches from `roots`.
    fn count(nodes: &[Node], roots: &[usize]) -> LeafGrads {
        let root = roots.iter().copied().max().unwrap_or(0);
        let mut reached = vec![false; root + 1];
        for &r in roots {
            reached[r] = true;
        }
        let mut out = LeafGrads {
            slots: std::collections::HashMap::new(),
            pending: Vec::new(),
        };
        for i in (0..=root).rev() {
            if !reached[i] {
                continue;
            }
            for input in &nodes[i].inputs {
                match input {
                    Input::Node(j) => reached[*j] = true,
                    Input::Leaf(l) => {
                        let next = out.pending.len();
                        let k = *out.slots.entry(Arc::as_ptr(l)).or_insert(next);
                        if k == next {
                            out.pending.push((l.clone(), None, 0));
                        }
                        out.pending[k].2 += 1;
                    }
                    Input::Const => {}
                }
            }
        }
        out
    }

    /// One use of `leaf` played back, with its gradient (if the rule gave
    /// one); after the last use the pass's sum is added to the leaf.
    fn add(&mut self, leaf: &Arc<Leaf>, g: Option<Tensor>) -> Result<()> {
        let Some(&k) = self.slots.get(&Arc::as_ptr(leaf)) else {
            return match g {
                Some(g) => leaf.accumulate(g),
                None => Ok(()),
            };
        };
        let (_, sum, left) = &mut self.pending[k];
        if let Some(g) = g {
            accumulate(sum, g)?;
        }
        *left = left.saturating_sub(1);
        if *left == 0 {
            if let Some(sum) = sum.take() {
                leaf.accumulate(sum)?;
            }
        }
        Ok(())
    }

    /// Leaves whose remaining uses were never reached (a rule returned no
    /// gradient for a node upstream of them).
    fn flush_rest(self) -> Result<()> {
        for (leaf, sum, _) in self.pending {
            if let Some(sum) = sum {
                leaf.accumulate(sum)?;
            }
        }
        Ok(())
    }
}

/// The current tape's entries, oldest first (for [`crate::trace`]).
pub(crate) fn tape_entries() -> Vec<TraceEntry> {
    TAPE.with(|t| t.borrow().nodes.iter().map(|n| n.trace.clone()).collect())
}

/// The backward rules that ran in this thread's last backward pass, in the
/// order they ran.
pub(crate) fn last_backward() -> Vec<BackwardStep> {
    LAST_BACKWARD.with(|b| b.borrow().clone())
}
