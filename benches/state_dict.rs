//! Loading a GPT-2-small-sized checkpoint: 124,439,808 f32 parameters
//! (~498 MB) in GPT-2's 148 tensors, written to a temporary directory at
//! bench time and removed afterwards.
//!
//! ```text
//! cargo bench --bench state_dict
//! ```
//!
//! `load_gpt2_124M_f32` is `StateDict::load` with a warm page cache: mmap,
//! header validation, and a copy of every tensor into owned storage.
//! Throughput is tensor-data bytes per second. scripts/compare_state_dict.py times
//! the same load against `safetensors.torch.load_file`.

#[path = "../src/alloc.rs"]
mod alloc;

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::nn::state_dict::StateDict;
use kiln::tensor::{DType, Tensor};

/// GPT-2 small's parameters, by checkpoint name (Conv1D weights [in, out]).
fn gpt2_small() -> Vec<(String, Vec<usize>)> {
    let (v, t, c, layers) = (50257, 1024, 768, 12);
    let mut p = vec![
        ("wte.weight".to_string(), vec![v, c]),
        ("wpe.weight".to_string(), vec![t, c]),
    ];
    for i in 0..layers {
        for (name, shape) in [
            ("ln_1.weight", vec![c]),
            ("ln_1.bias", vec![c]),
            ("attn.c_attn.weight", vec![c, 3 * c]),
            ("attn.c_attn.bias", vec![3 * c]),
            ("attn.c_proj.weight", vec![c, c]),
            ("attn.c_proj.bias", vec![c]),
            ("ln_2.weight", vec![c]),
            ("ln_2.bias", vec![c]),
            ("mlp.c_fc.weight", vec![c, 4 * c]),
            ("mlp.c_fc.bias", vec![4 * c]),
            ("mlp.c_proj.weight", vec![4 * c, c]),
            ("mlp.c_proj.bias", vec![c]),
        ] {
            p.push((format!("h.{i}.{name}"), shape));
        }
    }
    p.push(("ln_f.weight".to_string(), vec![c]));
    p.push(("ln_f.bias".to_string(), vec![c]));
    p
}

/// The checkpoint file in a fresh temporary directory, removed on drop.
struct Checkpoint {
    dir: PathBuf,
    path: PathBuf,
}

impl Checkpoint {
    fn write() -> Checkpoint {
        let dir = std::env::temp_dir().join(format!("kiln-bench-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the bench directory");
        let path = dir.join("gpt2_124M_f32.safetensors");
        let mut sd = StateDict::new();
        for (i, (name, shape)) in gpt2_small().into_iter().enumerate() {
            sd.insert(name, Tensor::full(&shape, 0.01 * i as f64, DType::F32));
        }
        assert_eq!(sd.numel(), 124_439_808);
        sd.save(&path).expect("writing the bench checkpoint");
        Checkpoint { dir, path }
    }
}

impl Drop for Checkpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bench_load(c: &mut Criterion) {
    alloc::keep_freed_memory();
    let data_bytes: usize = gpt2_small()
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>() * 4)
        .sum();
    // Written on first use, so a filtered-out run (`cargo bench -- other`)
    // never writes 500 MB; removed when this function returns.
    let mut ckpt: Option<Checkpoint> = None;
    let mut group = c.benchmark_group("state_dict");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(data_bytes as u64));
    group.bench_function("load_gpt2_124M_f32", |b| {
        let path = ckpt.get_or_insert_with(Checkpoint::write).path.clone();
        b.iter(|| StateDict::load(&path).expect("load"))
    });
    group.finish();
    drop(ckpt);
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
