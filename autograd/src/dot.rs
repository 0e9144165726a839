//! The recorded graph as Graphviz DOT text, micrograd's `draw_dot` for a
//! Kiln tape: one box per parameter, one record per op (its index on the
//! tape, its name, its output's shape, view or new bytes) and an arrow from
//! each input to the op that read it. Render it with
//! `dot -Tsvg tape.dot -o tape.svg`.
//!
//! ```
//! use kiln_autograd::{trace, Var};
//! use kiln_tensor::{DType, Tensor};
//! let w = Var::parameter(Tensor::ones(&[3], DType::F32));
//! let x = Var::constant(Tensor::ones(&[3], DType::F32));
//! let loss = w.mul(&x)?.sum_all()?;
//! let dot = trace::tape().to_dot_named(&[("w", &w)]);
//! assert!(dot.starts_with("digraph tape {"));
//! assert!(dot.contains("\"w\\n[3]\""));
//! loss.backward()?;
//! # Ok::<(), kiln_autograd::AutogradError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::trace::{Trace, TraceInput};
use crate::var::{Kind, Var};

/// A DOT string literal: backslashes and quotes escaped, line breaks as
/// DOT's `\n`.
fn quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// A shape as the trace prints it, `[2, 3]`.
fn shape(s: &[usize]) -> String {
    format!("{s:?}")
}

impl Trace {
    /// The graph as DOT text, parameters labelled by their shape only.
    /// See [`Trace::to_dot_named`].
    pub fn to_dot(&self) -> String {
        self.to_dot_named(&[])
    }

    /// The graph as Graphviz DOT text (micrograd's `draw_dot`), drawn left
    /// to right: a box per parameter (labelled with its name from `names`,
    /// when it is one of them, and its shape), a grey box per constant
    /// input, and a record per op with its tape index, name, output shape
    /// and memory (`view`, or the bytes it allocated). A parameter used
    /// twice (GPT-2's tied `wte`) is one box with two arrows.
    ///
    /// Take the trace before `backward()`, which consumes the tape. The
    /// text depends only on the recorded ops and `names`, so a committed
    /// `.dot` file can be compared with a fresh one.
    pub fn to_dot_named(&self, names: &[(&str, &Var)]) -> String {
        let name_of: BTreeMap<usize, &str> = names
            .iter()
            .filter_map(|(n, v)| match &v.kind {
                Kind::Leaf(l) => Some((std::sync::Arc::as_ptr(l) as usize, *n)),
                _ => None,
            })
            .collect();
        // Leaves numbered in order of first use, so the text does not
        // depend on addresses.
        let mut leaves: BTreeMap<usize, usize> = BTreeMap::new();
        let mut out = String::from(
            "digraph tape {\n    rankdir=LR;\n    node [fontname=\"monospace\", fontsize=10];\n",
        );
        let mut edges = String::new();
        for (i, e) in self.entries.iter().enumerate() {
            let memory = if e.is_view {
                "view".to_string()
            } else {
                format!("{} B", e.bytes)
            };
            let label = format!("{{#{i} {} | {} | {memory}}}", e.op, shape(&e.output_shape));
            // A record label's braces and bars are its fields.
            let _ = writeln!(out, "    n{i} [shape=record, label={}];", quote(&label));
            for (j, (src, sh)) in e.inputs.iter().zip(&e.input_shapes).enumerate() {
                let from = match *src {
                    TraceInput::Node(k) => format!("n{k}"),
                    TraceInput::Leaf(addr) => {
                        let next = leaves.len();
                        let id = *leaves.entry(addr).or_insert_with(|| {
                            let name = name_of.get(&addr).copied().unwrap_or("parameter");
                            let _ = writeln!(
                                out,
                                "    p{next} [shape=box, style=filled, fillcolor=\"#dbe8f6\", label={}];",
                                quote(&format!("{name}\n{}", shape(sh)))
                            );
                            next
                        });
                        format!("p{id}")
                    }
                    TraceInput::Constant => {
                        let _ = writeln!(
                            out,
                            "    c{i}_{j} [shape=box, style=filled, fillcolor=\"#eeeeee\", label={}];",
                            quote(&format!("constant\n{}", shape(sh)))
                        );
                        format!("c{i}_{j}")
                    }
                };
                let _ = writeln!(edges, "    {from} -> n{i};");
            }
        }
        out.push_str(&edges);
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use kiln_tensor::{DType, Tensor};

    use crate::{trace, Var};

    #[test]
    fn a_parameter_used_twice_is_one_box_with_two_arrows() {
        crate::clear_tape();
        let w = Var::parameter(Tensor::ones(&[2, 2], DType::F32));
        let x = Var::constant(Tensor::ones(&[2, 2], DType::F32));
        // x·w + w: w feeds the matmul and the add.
        let y = x.matmul(&w).unwrap().add(&w).unwrap();
        let dot = trace::tape().to_dot_named(&[("w", &w)]);
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            dot,
            "digraph tape {\n    rankdir=LR;\n    node [fontname=\"monospace\", fontsize=10];\n\
             \x20   n0 [shape=record, label=\"{#0 matmul | [2, 2] | 16 B}\"];\n\
             \x20   c0_0 [shape=box, style=filled, fillcolor=\"#eeeeee\", label=\"constant\\n[2, 2]\"];\n\
             \x20   p0 [shape=box, style=filled, fillcolor=\"#dbe8f6\", label=\"w\\n[2, 2]\"];\n\
             \x20   n1 [shape=record, label=\"{#1 add | [2, 2] | 16 B}\"];\n\
             \x20   c0_0 -> n0;\n\
             \x20   p0 -> n0;\n\
             \x20   n0 -> n1;\n\
             \x20   p0 -> n1;\n\
             }\n"
        );
    }

    #[test]
    fn views_are_marked_and_unnamed_parameters_get_their_shape() {
        crate::clear_tape();
        let w = Var::parameter(Tensor::ones(&[2, 3], DType::F32));
        let y = w.t().unwrap();
        let dot = trace::tape().to_dot();
        y.sum_all().unwrap().backward().unwrap();
        assert!(
            dot.contains("label=\"{#0 transpose | [3, 2] | view}\""),
            "{dot}"
        );
        assert!(dot.contains("label=\"parameter\\n[2, 3]\""), "{dot}");
        assert!(dot.contains("p0 -> n0;"), "{dot}");
    }

    #[test]
    fn quotes_in_labels_are_escaped() {
        assert_eq!(super::quote("a \"b\"\n\\"), "\"a \\\"b\\\"\\n\\\\\"");
    }
}
