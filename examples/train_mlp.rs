//! Train a small MLP to separate three interleaved 2-D spirals (the classic
//! CS231n toy problem): a straight line cannot split them, two hidden layers
//! can. Everything a real training loop has is here, at toy size: named
//! parameters, AdamW with weight decay on the matrices only, a warmup +
//! cosine learning-rate schedule, gradient clipping, and evaluation under
//! `no_grad`.
//!
//! Run:  cargo run --release --example train_mlp [-- --svg FILE]
//! (`--svg` also draws the trained classifier's decision regions with the
//! points, the book's figure: docs/figures.sh writes
//! docs/src/figures/mlp_boundary.svg with it.)
//! Book: docs/src/modules.md. Code: nn/src/module.rs, nn/src/optim/.

use kiln::autograd::{no_grad, Var};
use kiln::nn::loss::{cross_entropy, IGNORE_INDEX};
use kiln::nn::optim::{clip_grad_norm, decay_groups, AdamConfig, AdamW, LrSchedule, Optimizer};
use kiln::nn::{Forward, Linear, Module, Relu, Sequential};
use kiln::tensor::{DType, Rng, Tensor};

/// Points per class, classes, hidden width, optimizer steps.
const N: usize = 100;
const K: usize = 3;
const HIDDEN: usize = 32;
const STEPS: usize = 300;

/// `K` spiral arms of `N` points each: inputs `[N·K, 2]` (f32) and class
/// labels `[N·K]` (i64). Arm `k` winds from the centre outwards; a little
/// angular noise blurs the arms so the problem is not trivially clean.
fn spirals(rng: &mut Rng) -> anyhow::Result<(Tensor, Tensor)> {
    let mut xs = Vec::with_capacity(N * K * 2);
    let mut labels = Vec::with_capacity(N * K);
    for k in 0..K {
        for i in 0..N {
            let r = i as f64 / N as f64;
            let theta = k as f64 * 4.0 + 4.0 * r + 0.2 * rng.normal();
            xs.push((r * theta.sin()) as f32);
            xs.push((r * theta.cos()) as f32);
            labels.push(k as i64);
        }
    }
    Ok((
        Tensor::from_vec(xs, &[N * K, 2])?,
        Tensor::from_vec(labels, &[N * K])?,
    ))
}

/// Cells across each side of the decision-boundary picture, and their size
/// in pixels.
const GRID: usize = 160;
const CELL: usize = 3;
/// The picture spans `[-LIM, LIM]²`; the spirals stay inside the unit disc.
const LIM: f64 = 1.05;
/// Region fill and point colour of each class.
const REGION: [&str; K] = ["#f9d3c4", "#c9e8c9", "#cddaf3"];
const POINT: [&str; K] = ["#d9480f", "#2b8a3e", "#1c5fbf"];

/// The classes `model` predicts over a `GRID × GRID` grid of `[-LIM, LIM]²`
/// as coloured regions, with the training points on top, as SVG text.
fn boundary_svg(
    model: &impl Forward,
    x: &Tensor,
    labels: &Tensor,
    acc: f64,
) -> anyhow::Result<String> {
    // Cell centres, row by row from the top (largest second coordinate).
    let centre = |c: usize| -LIM + (c as f64 + 0.5) * 2.0 * LIM / GRID as f64;
    let mut cells = Vec::with_capacity(GRID * GRID * 2);
    for row in 0..GRID {
        for col in 0..GRID {
            cells.push(centre(col) as f32);
            cells.push(centre(GRID - 1 - row) as f32);
        }
    }
    let cells = Var::constant(Tensor::from_vec(cells, &[GRID * GRID, 2])?);
    let class = no_grad(|| model.forward(&cells))?
        .value()
        .argmax(-1, false)?
        .to_vec::<i64>()?;

    let (left, top, side) = (20, 40, GRID * CELL);
    let (width, height) = (side + 2 * left, top + side + 20);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"14\">\n\
         <!-- Drawn by examples/train_mlp.rs (docs/figures.sh). -->\n\
         <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\n\
         <text x=\"{}\" y=\"26\" text-anchor=\"middle\" font-weight=\"bold\">\
         Classes after {STEPS} steps (training accuracy {acc:.3})</text>\n\
         <g shape-rendering=\"crispEdges\">\n",
        width / 2
    );
    // One rectangle per run of equal cells in a row.
    for row in 0..GRID {
        let mut col = 0;
        while col < GRID {
            let (start, k) = (col, class[row * GRID + col]);
            while col < GRID && class[row * GRID + col] == k {
                col += 1;
            }
            s += &format!(
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{CELL}\" fill=\"{}\"/>\n",
                left + start * CELL,
                top + row * CELL,
                (col - start) * CELL,
                REGION[k as usize]
            );
        }
    }
    s += "</g>\n";
    let to_px = |v: f32| (v as f64 + LIM) / (2.0 * LIM) * side as f64;
    for (p, k) in x.to_vec::<f32>()?.chunks(2).zip(labels.to_vec::<i64>()?) {
        s += &format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" fill=\"{}\" stroke=\"#ffffff\" stroke-width=\"0.8\"/>\n",
            left as f64 + to_px(p[0]),
            top as f64 + side as f64 - to_px(p[1]),
            POINT[k as usize]
        );
    }
    s += "</svg>\n";
    Ok(s)
}

/// Fraction of rows whose largest logit is the label.
fn accuracy(logits: &Tensor, labels: &Tensor) -> anyhow::Result<f64> {
    let predicted = logits.argmax(-1, false)?.to_vec::<i64>()?;
    let labels = labels.to_vec::<i64>()?;
    let right = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(right as f64 / labels.len() as f64)
}

fn main() -> anyhow::Result<()> {
    let mut rng = Rng::new(0);
    let (x, labels) = spirals(&mut rng)?;
    let x = Var::constant(x);

    // 2 → 32 → 32 → 3. Parameters are named by position, as nn.Sequential
    // names them: 0.weight, 0.bias, 2.weight, …
    let model = Sequential::new()
        .push(Linear::new(2, HIDDEN, true, DType::F32, &mut rng)?)
        .push(Relu)
        .push(Linear::new(HIDDEN, HIDDEN, true, DType::F32, &mut rng)?)
        .push(Relu)
        .push(Linear::new(HIDDEN, K, true, DType::F32, &mut rng)?);
    println!("parameters: {}", model.num_parameters());
    for (name, p) in model.named_parameters() {
        println!("  {name:<10} {:?}", p.shape());
    }

    // Weight decay on the matrices, none on the biases (decay_groups splits
    // them by rank, as nanoGPT and transformers' Trainer do).
    let base_lr = 1e-2;
    let groups = decay_groups(model.named_parameters(), base_lr, 1e-4);
    let mut opt = AdamW::new(groups, AdamConfig::default());
    let schedule = LrSchedule::WarmupCosine {
        warmup: 20,
        total: STEPS,
        min_lr: base_lr / 10.0,
    };

    // ANCHOR: loop
    let params = model.parameters();
    for step in 0..STEPS {
        opt.set_lr(schedule.lr_at(step, base_lr));
        // Forward: the ops are recorded on this thread's tape.
        let logits = model.forward(&x)?; // [N·K, K]
        let loss = cross_entropy(&logits, &labels, IGNORE_INDEX)?;
        // Backward: plays the tape in reverse, fills each parameter's grad,
        // frees the tape.
        loss.backward()?;
        let grad_norm = clip_grad_norm(&params, 1.0)?;
        opt.step()?;
        opt.zero_grad();
        if step % 25 == 0 || step == STEPS - 1 {
            println!(
                "step {step:>3}  loss {:.4}  grad norm {grad_norm:>6.3}  lr {:.5}  accuracy {:.2}",
                loss.value().item::<f32>()?,
                opt.lr(),
                accuracy(&logits.value(), &labels)?
            );
        }
    }
    // ANCHOR_END: loop

    // Evaluation records nothing: no tape, no saved activations.
    let logits = no_grad(|| model.forward(&x))?;
    let acc = accuracy(&logits.value(), &labels)?;
    println!("final training accuracy: {acc:.3}");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--svg") {
        let path = args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("--svg needs a file"))?;
        std::fs::write(path, boundary_svg(&model, &x.value(), &labels, acc)?)?;
        println!("wrote {path}");
    }
    // A linear classifier gets about a third of the points; the MLP must do
    // far better, or something is broken.
    assert!(acc > 0.9, "the MLP failed to fit the spirals ({acc:.3})");
    Ok(())
}
