use std::time::Instant;
use kiln::models::gpt2::{ForwardOptions, Gpt2, Gpt2Config};
use kiln::nn::optim::{decay_groups, AdamConfig, AdamW, Optimizer};
use kiln::nn::Module;
use kiln::tensor::Tensor;
fn main() {
    let mut cfg = Gpt2Config::baby();
    cfg.set_dropout(0.0);
    let model = Gpt2::new(cfg, 0).unwrap();
    let mut opt = AdamW::new(decay_groups(model.named_parameters(), 1e-3, 0.1), AdamConfig::default());
    let x = Tensor::from_vec((0..768).map(|i| (i * 7919 % 50257) as i64).collect::<Vec<i64>>(), &[12, 64]).unwrap();
    for it in 0..4 {
        let t0 = Instant::now();
        let h = model.hidden_states(&x, ForwardOptions::default()).unwrap();
        let t1 = Instant::now();
        let logits = h.matmul(&model.wte.weight.t().unwrap()).unwrap();
        let t2 = Instant::now();
        let loss = logits.cross_entropy(&x, -100).unwrap();
        let t3 = Instant::now();
        loss.backward().unwrap();
        let t4 = Instant::now();
        opt.step().unwrap();
        opt.zero_grad();
        let t5 = Instant::now();
        println!("it {it}: blocks {:?} head {:?} ce {:?} bwd {:?} opt {:?}", t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4);
        if it == 3 { print!("{}", kiln::autograd::trace::last_backward()); }
    }
}
