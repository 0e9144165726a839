#!/usr/bin/env bash
# Regenerates the book's rendered figures from the library's own output:
#
#     docs/figures.sh
#
# docs/src/figures/autodiff_by_hand.dot is the tape of the autodiff_by_hand
# example, written by Trace::to_dot_named (autograd/src/dot.rs);
# tests/book_figures.rs checks that the committed file is what the library
# writes today. The .svg is rendered from it by Graphviz's `dot`
# (apt-get install graphviz).
#
# attention_mask.svg, attention_mask_cached.svg (Tensor::triu_mask and
# Tensor::causal_softmax) and matmul_blocking.svg (the AVX-512 GEMM's
# MR/NR/KC/MC/NC) are drawn by tests/book_figures.rs itself: with
# KILN_WRITE_FIGURES=1 its tests write the figures they otherwise compare.
#
# mlp_boundary.svg is the decision regions of examples/train_mlp.rs after
# training, drawn by its --svg option.
#
# demo_loss.svg is the loss curve of the demo (`cargo run --release`: 450
# steps, minutes on two cores, so this script does not run it). When
# runs/demo/log.jsonl exists it is redrawn from that log by
# `kiln plot-loss`, which draws what the trainer's own loss.svg does
# (tests/cli_train.rs checks the two are identical).
set -euo pipefail
cd "$(dirname "$0")/.."
fig=docs/src/figures
cargo run --quiet --example autodiff_by_hand -- --dot "$fig/autodiff_by_hand.dot" >/dev/null
KILN_WRITE_FIGURES=1 cargo test --quiet --release --test book_figures >/dev/null
echo "docs/figures.sh: $fig/attention_mask.svg, $fig/attention_mask_cached.svg, $fig/matmul_blocking.svg"
cargo run --quiet --release --example train_mlp -- --svg "$fig/mlp_boundary.svg" >/dev/null
echo "docs/figures.sh: $fig/mlp_boundary.svg"
if [ -f runs/demo/log.jsonl ]; then
    cargo run --quiet --release -- plot-loss runs/demo/log.jsonl --output "$fig/demo_loss.svg"
else
    echo "docs/figures.sh: kept $fig/demo_loss.svg: no runs/demo/log.jsonl (run the demo, cargo run --release, to redraw it)" >&2
fi
command -v dot >/dev/null || { echo "docs/figures.sh: Graphviz's dot is not installed" >&2; exit 1; }
for f in "$fig"/*.dot; do
    dot -Tsvg "$f" -o "${f%.dot}.svg"
    echo "docs/figures.sh: ${f%.dot}.svg"
done
