//! Tokenizer throughput on the Shakespeare corpus, single thread.
//!
//! `cargo bench --bench tokenizer` (criterion). `encode` encodes every corpus
//! file with its own `encode` call, the way `scripts/compare_tokenizer.py`
//! times Hugging Face `tokenizers`; throughput is in corpus bytes per second.

#[path = "../src/alloc.rs"]
mod alloc;

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use kiln::models::tokenizer::Tokenizer;

fn corpus() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn bench_tokenizer(c: &mut Criterion) {
    alloc::keep_freed_memory();
    let texts = corpus();
    let bytes: usize = texts.iter().map(String::len).sum();
    let tok = Tokenizer::gpt2();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t)).collect();

    let mut group = c.benchmark_group("tokenizer");
    group.sample_size(10);
    // Each pass takes tens of milliseconds: time whole passes.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            for text in &texts {
                black_box(tok.encode(black_box(text)));
            }
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            for file_ids in &ids {
                black_box(tok.decode(black_box(file_ids)).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_tokenizer);
criterion_main!(benches);
