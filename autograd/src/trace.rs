//! A readable trace of a recorded tape, for learners and for performance
//! work: each op with its inputs' and output's shapes and strides, whether
//! the output is a view of an input or new memory (and how many bytes), and
//! the backward rule that will run (or ran).
//!
//! ```
//! use kiln_autograd::{trace, Var};
//! use kiln_tensor::{DType, Tensor};
//! let w = Var::parameter(Tensor::ones(&[3, 2], DType::F32));
//! let x = Var::constant(Tensor::ones(&[4, 3], DType::F32));
//! let y = x.matmul(&w)?.t()?.sum_all()?;
//! print!("{}", trace::tape());        // the forward ops, one line each
//! y.backward()?;
//! print!("{}", trace::last_backward()); // the rules that ran
//! # Ok::<(), kiln_autograd::AutogradError>(())
//! ```

use std::fmt;

use kiln_tensor::Tensor;

/// Where one input of a recorded op came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TraceInput {
    /// The output of the op at this index on the same tape.
    Node(usize),
    /// A leaf that requires grad (a parameter). The number is the same for
    /// every use of one leaf (e.g. GPT-2's tied `wte`), and is the
    /// leaf's address: unique while the leaf lives.
    Leaf(usize),
    /// A value that needs no gradient.
    Constant,
}

/// One recorded op.
#[derive(Debug, Clone)]
pub struct TraceEntry {
    /// PyTorch-style op name.
    pub op: &'static str,
    /// The backward rule, as math.
    pub rule: &'static str,
    /// Where each input came from, in order (the graph's edges).
    pub inputs: Vec<TraceInput>,
    /// Shapes of the inputs.
    pub input_shapes: Vec<Vec<usize>>,
    /// Strides of the inputs (non-contiguous inputs are read in place).
    pub input_strides: Vec<Vec<usize>>,
    /// Output shape.
    pub output_shape: Vec<usize>,
    /// Output strides.
    pub output_strides: Vec<usize>,
    /// Whether the output shares storage with an input (a view: no copy).
    pub is_view: bool,
    /// Bytes of new storage the op allocated (0 for a view).
    pub bytes: usize,
    /// Why a copy happened where a view might have been expected.
    pub note: Option<&'static str>,
}

impl TraceEntry {
    pub(crate) fn new(
        op: &'static str,
        rule: &'static str,
        sources: Vec<TraceInput>,
        inputs: &[Tensor],
        out: &Tensor,
    ) -> TraceEntry {
        let is_view = inputs.iter().any(|i| i.shares_storage(out));
        let copied_for_layout = op == "reshape" && !is_view;
        TraceEntry {
            op,
            rule,
            inputs: sources,
            input_shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
            input_strides: inputs.iter().map(|t| t.strides().to_vec()).collect(),
            output_shape: out.shape().to_vec(),
            output_strides: out.strides().to_vec(),
            is_view,
            bytes: if is_view { 0 } else { out.storage_bytes() },
            note: copied_for_layout
                .then_some("input strides cannot be viewed in the new shape, so it was copied"),
        }
    }
}

/// The entries of a tape, printable as a table.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The recorded ops, oldest first.
    pub entries: Vec<TraceEntry>,
}

impl Trace {
    /// Total bytes allocated by the recorded ops.
    pub fn total_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }
}

fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>4}  {:<16} {:<40} {:<28} {:<10} {:<10} backward",
            "#", "op", "inputs (shape@strides)", "output (shape@strides)", "memory", "bytes"
        )?;
        for (i, e) in self.entries.iter().enumerate() {
            let ins = e
                .input_shapes
                .iter()
                .zip(&e.input_strides)
                .map(|(s, st)| format!("{s:?}@{st:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            let out = format!("{:?}@{:?}", e.output_shape, e.output_strides);
            let kind = if e.is_view { "view" } else { "new" };
            writeln!(
                f,
                "{i:>4}  {:<16} {ins:<40} {out:<28} {kind:<10} {:<10} {}",
                e.op,
                human(e.bytes),
                e.rule
            )?;
            if let Some(note) = e.note {
                writeln!(f, "      note: {note}")?;
            }
        }
        writeln!(
            f,
            "      {} ops, {} allocated",
            self.entries.len(),
            human(self.total_bytes())
        )
    }
}

/// The ops recorded so far on this thread's tape.
pub fn tape() -> Trace {
    Trace {
        entries: crate::tape::tape_entries(),
    }
}

/// One backward rule that ran.
#[derive(Debug, Clone)]
pub struct BackwardStep {
    /// Node index on the tape.
    pub node: usize,
    /// The op.
    pub op: &'static str,
    /// Its rule.
    pub rule: &'static str,
    /// Wall time of the rule plus adding its gradients into the inputs'.
    pub elapsed: std::time::Duration,
}

/// The rules run by this thread's last backward pass, in order.
#[derive(Debug, Clone)]
pub struct BackwardTrace {
    /// The steps, in the order they ran (reverse of recording).
    pub steps: Vec<BackwardStep>,
}

impl fmt::Display for BackwardTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            let us = s.elapsed.as_secs_f64() * 1e6;
            writeln!(f, "{:>4}  {:<16} {us:>10.1} µs  {}", s.node, s.op, s.rule)?;
        }
        let total: f64 = self.steps.iter().map(|s| s.elapsed.as_secs_f64()).sum();
        writeln!(f, "      total {:>16.1} µs", total * 1e6)
    }
}

/// The backward rules that ran in this thread's last backward pass.
pub fn last_backward() -> BackwardTrace {
    BackwardTrace {
        steps: crate::tape::last_backward(),
    }
}
