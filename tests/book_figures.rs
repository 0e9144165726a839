//! The book's rendered figures come from the library: each committed `.dot`
//! under `docs/src/figures/` must be what the library writes today, so a
//! change to the tape or to the DOT export that would change a figure fails
//! here until `docs/figures.sh` regenerates it.
//!
//! The SVG figures drawn here (the attention masks, the GEMM's cache
//! blocking) are checked the same way: each test draws its figure from what
//! the library computes today and compares it with the committed file; with
//! `KILN_WRITE_FIGURES=1`, as `docs/figures.sh` runs them, it writes the
//! file instead.

use kiln::autograd::{clear_tape, trace, Var};
use kiln::tensor::kernels::matmul_packed::{Blocking, AVX512_BLOCKING};
use kiln::tensor::{DType, Tensor};

/// `docs/src/figures/autodiff_by_hand.dot`: the forward pass of
/// `examples/autodiff_by_hand.rs` (its `forward` anchor), as that example's
/// `--dot` writes it.
#[test]
fn autodiff_by_hand_figure_is_current() -> Result<(), Box<dyn std::error::Error>> {
    clear_tape();
    let x = Var::constant(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3])?);
    let y = Var::constant(Tensor::from_vec(vec![2.0f64, 4.0, 7.0], &[3])?);
    let w = Var::parameter(Tensor::from_vec(vec![1.5f64], &[1])?);
    let b = Var::parameter(Tensor::from_vec(vec![0.5f64], &[1])?);
    let pred = w.mul(&x)?.add(&b)?;
    let r = pred.sub(&y)?;
    let loss = r.powf(2.0)?.mean_all()?;
    let dot = trace::tape().to_dot_named(&[("w", &w), ("b", &b)]);
    loss.backward()?;
    let committed = include_str!("../docs/src/figures/autodiff_by_hand.dot");
    assert_eq!(
        dot, committed,
        "the figure is out of date: run docs/figures.sh"
    );
    Ok(())
}

/// `KILN_WRITE_FIGURES=1` (set by `docs/figures.sh`) makes each figure test
/// below write its file instead of comparing against it.
fn check_or_write(rel: &str, drawn: &str) -> Result<(), Box<dyn std::error::Error>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if std::env::var_os("KILN_WRITE_FIGURES").is_some() {
        std::fs::write(&path, drawn)?;
        return Ok(());
    }
    let committed = std::fs::read_to_string(&path)?;
    assert!(
        drawn == committed,
        "{rel} is out of date: run docs/figures.sh"
    );
    Ok(())
}

/// An attention mask as an SVG grid: one row per query, one column per key,
/// `past` cached keys before the `t` new ones. A seen cell is filled and
/// shows the weight `causal_softmax` gives it when all scores are equal; a
/// hidden cell (true in `triu_mask(t, past + t, past + 1)`, the mask the
/// attention layer builds) shows 0.
fn mask_svg(t: usize, past: usize) -> Result<String, Box<dyn std::error::Error>> {
    let total = past + t;
    let hidden = Tensor::triu_mask(t, total, past as i64 + 1).to_vec::<bool>()?;
    let weights = Tensor::zeros(&[t, total], DType::F64)
        .causal_softmax(1.0, past)?
        .to_vec::<f64>()?;
    let (cell, labels, top) = (
        44,
        if past > 0 { 190 } else { 100 },
        if past > 0 { 92 } else { 72 },
    );
    // Wide enough for the title; the grid (with its row labels) centred.
    let width = (labels + total * cell + 20).max(560);
    let left = labels + (width - 20 - labels - total * cell) / 2;
    let height = top + t * cell + 56;
    let title = if past > 0 {
        format!("Causal mask after {past} cached positions: {t} new queries, {total} keys")
    } else {
        format!("Causal mask, T = {t}: query i sees keys 0 … i")
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         \x20 <title>{title}</title>\n\
         \x20 <!-- Written by tests/book_figures.rs (docs/figures.sh) from Tensor::triu_mask and Tensor::causal_softmax. -->\n\
         \x20 <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
         \x20 <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-weight=\"bold\">{title}</text>\n",
        width / 2
    );
    let keys_y = top - 10;
    s += &format!("  <text x=\"{}\" y=\"{keys_y}\" text-anchor=\"end\" font-style=\"italic\">key j →</text>\n", left - 10);
    if past > 0 {
        let y = top - 34;
        let mid_cached = left + past * cell / 2;
        let mid_new = left + past * cell + t * cell / 2;
        s += &format!("  <text x=\"{mid_cached}\" y=\"{y}\" text-anchor=\"middle\">cached (in the KV cache)</text>\n");
        s += &format!("  <text x=\"{mid_new}\" y=\"{y}\" text-anchor=\"middle\">new</text>\n");
    }
    for j in 0..total {
        let x = left + j * cell + cell / 2;
        s += &format!("  <text x=\"{x}\" y=\"{keys_y}\" text-anchor=\"middle\">{j}</text>\n");
    }
    for i in 0..t {
        let y = top + i * cell;
        let label = if past > 0 {
            format!("query {i} (position {})", past + i)
        } else {
            format!("query {i}")
        };
        s += &format!(
            "  <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>\n",
            left - 10,
            y + cell / 2 + 5
        );
        for j in 0..total {
            let (h, w) = (hidden[i * total + j], weights[i * total + j]);
            // The fused softmax hides exactly the keys the mask marks.
            assert_eq!(h, w == 0.0, "query {i}, key {j}: mask {h}, weight {w}");
            let x = left + j * cell;
            let (fill, ink, text) = if h {
                ("#eeeeee", "#999999", "0".to_string())
            } else {
                let n = (1.0 / w).round();
                assert!((w * n - 1.0).abs() < 1e-12, "weight {w} is not 1/n");
                let text = if n == 1.0 {
                    "1".to_string()
                } else {
                    format!("1/{n}")
                };
                ("#2f6db0", "#ffffff", text)
            };
            s += &format!(
                "  <rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"{fill}\" stroke=\"#ffffff\" stroke-width=\"2\"/>\n\
                 \x20 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{text}</text>\n",
                x + cell / 2,
                y + cell / 2 + 5
            );
        }
    }
    if past > 0 {
        let x = left + past * cell;
        s += &format!(
            "  <line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#444444\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>\n",
            top - 28,
            top + t * cell + 6
        );
    }
    let (x, y) = (left.min(width - 300), top + t * cell + 24);
    s += &format!(
        "  <rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"#2f6db0\"/>\n\
         \x20 <text x=\"{}\" y=\"{y}\">seen: its weight when all scores are equal</text>\n\
         \x20 <rect x=\"{x}\" y=\"{}\" width=\"14\" height=\"14\" fill=\"#eeeeee\" stroke=\"#999999\"/>\n\
         \x20 <text x=\"{}\" y=\"{}\">hidden (the future): weight 0</text>\n</svg>\n",
        y - 11,
        x + 20,
        y + 9,
        x + 20,
        y + 20
    );
    Ok(s)
}

/// `docs/src/figures/attention_mask.svg`: the training-time mask, `T = 4`.
#[test]
fn attention_mask_figure_is_current() -> Result<(), Box<dyn std::error::Error>> {
    check_or_write("docs/src/figures/attention_mask.svg", &mask_svg(4, 0)?)
}

/// `docs/src/figures/attention_mask_cached.svg`: the same mask shifted by
/// 3 cached positions, for 2 new queries.
#[test]
fn attention_mask_cached_figure_is_current() -> Result<(), Box<dyn std::error::Error>> {
    check_or_write(
        "docs/src/figures/attention_mask_cached.svg",
        &mask_svg(2, 3)?,
    )
}

/// `n` bytes as the book writes them: "18 KiB", "1.5 MiB".
fn bytes(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{} KiB", n as f64 / 1024.0)
    }
}

/// The cache blocking of the f32 GEMM (not to scale), labelled with the
/// AVX-512 kernel's `MR`, `NR`, `KC`, `MC` and `NC`
/// (`tensor/src/kernels/matmul_packed.rs`): `A` left of `C` and `B` above
/// it, so a row of `A` and a column of `B` meet at their element of `C`.
fn blocking_svg() -> Result<String, Box<dyn std::error::Error>> {
    let Blocking { mr, nr, kc, mc, nc } = AVX512_BLOCKING;
    let f32s = std::mem::size_of::<f32>();
    // One zmm register holds 16 f32s.
    let zmm = mr * nr / 16;
    let (a_panel, b_block, a_block) = (
        bytes(mr * kc * f32s),
        bytes(kc * nc * f32s),
        bytes(mc * kc * f32s),
    );
    Ok(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="560" viewBox="0 0 720 560" font-family="sans-serif" font-size="13">
  <title>Cache blocking of Kiln's f32 GEMM (AVX-512 constants, not to scale)</title>
  <!-- Written by tests/book_figures.rs (docs/figures.sh) from AVX512_BLOCKING in tensor/src/kernels/matmul_packed.rs. -->
  <style>
    .mat {{ fill: #f7f7f7; stroke: #444; stroke-width: 1.5 }}
    .l3 {{ fill: #fde2c4; stroke: #c76b00 }}
    .l1 {{ fill: #f39c3c; stroke: #8a4500 }}
    .l2 {{ fill: #cfe3f7; stroke: #1f5f9e }}
    .bp {{ fill: #5b9bd5; stroke: #163f66 }}
    .reg {{ fill: #d62728; stroke: #5a0d0e }}
    .cblk {{ fill: none; stroke: #666; stroke-dasharray: 6 4 }}
    .guide {{ stroke: #999; stroke-dasharray: 2 3 }}
    .note {{ font-size: 12px; fill: #222 }}
    .dim {{ font-size: 14px; font-style: italic; fill: #444 }}
  </style>
  <rect width="720" height="560" fill="#ffffff"/>
  <!-- Matrices -->
  <rect class="mat" x="40" y="230" width="200" height="300"/>
  <rect class="mat" x="280" y="30" width="400" height="170"/>
  <rect class="mat" x="280" y="230" width="400" height="300"/>
  <text x="140" y="550" text-anchor="middle" font-weight="bold">A  (m×k)</text>
  <text x="480" y="20" text-anchor="middle" font-weight="bold">B  (k×n)</text>
  <text x="480" y="550" text-anchor="middle" font-weight="bold">C  (m×n)</text>
  <text class="dim" x="140" y="224" text-anchor="middle">k →</text>
  <text class="dim" x="30" y="380" text-anchor="middle">m</text>
  <text class="dim" x="270" y="120" text-anchor="middle">k</text>
  <text class="dim" x="690" y="120">n</text>
  <!-- A block MC×KC (columns pc..pc+KC, rows ic..ic+MC) -->
  <rect class="l3" x="100" y="270" width="80" height="220"/>
  <!-- A micro-panel MR×KC -->
  <rect class="l1" x="100" y="330" width="80" height="16"/>
  <!-- B block KC×NC (rows pc..pc+KC, columns jc..jc+NC) -->
  <rect class="l2" x="360" y="70" width="240" height="80"/>
  <!-- B micro-panel KC×NR -->
  <rect class="bp" x="440" y="70" width="24" height="80"/>
  <!-- The C block the task owns, MC×NC, and the register tile MR×NR -->
  <rect class="cblk" x="360" y="270" width="240" height="220"/>
  <rect class="reg" x="440" y="330" width="24" height="16"/>
  <line class="guide" x1="180" y1="338" x2="440" y2="338"/>
  <line class="guide" x1="452" y1="150" x2="452" y2="330"/>
  <!-- Labels -->
  <text class="note" x="48" y="262">A block MC×KC = {mc}×{kc}</text>
  <text class="note" x="48" y="506">packed once, shared:</text>
  <text class="note" x="48" y="521">{a_block}: L3</text>
  <text class="note" x="104" y="366">A micro-panel</text>
  <text class="note" x="104" y="381">MR×KC = {mr}×{kc}</text>
  <text class="note" x="104" y="396">{a_panel}: L1</text>
  <text class="note" x="364" y="64">B block KC×NC = {kc}×{nc}, {b_block} per task: L2</text>
  <text class="note" x="470" y="104">B micro-panel KC×NR</text>
  <text class="note" x="470" y="119">= {kc}×{nr}, streams from L2</text>
  <text class="note" x="470" y="338">C tile MR×NR = {mr}×{nr}:</text>
  <text class="note" x="470" y="353">{zmm} zmm accumulators</text>
  <text class="note" x="470" y="368">(registers), loop over KC</text>
  <text class="note" x="364" y="486">C block MC×NC, one task</text>
</svg>
"##
    ))
}

/// `docs/src/figures/matmul_blocking.svg`, labelled with today's constants.
#[test]
fn matmul_blocking_figure_is_current() -> Result<(), Box<dyn std::error::Error>> {
    check_or_write("docs/src/figures/matmul_blocking.svg", &blocking_svg()?)
}
