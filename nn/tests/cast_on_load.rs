//! `LoadOptions::cast_matrices`: weight matrices cast while a safetensors
//! file is read give the bits of loading and then casting, and the heap
//! never holds the model in the stored dtype.
//!
//! This test binary counts its heap (`CountingAlloc`), and it holds a
//! single test so that no other test allocates during the measurement.

use kiln_nn::state_dict::{LoadOptions, StateDict};
use kiln_tensor::memory::{live_bytes, peak_bytes, reset_peak, CountingAlloc};
use kiln_tensor::{DType, Rng, Tensor};

#[global_allocator]
static GLOBAL: CountingAlloc<std::alloc::System> = CountingAlloc(std::alloc::System);

#[test]
fn matrices_cast_while_reading_equal_load_then_cast_at_half_the_heap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut rng = Rng::new(3);
    let mut dict = StateDict::new();
    // Eight 1 MiB f32 matrices, a 6 MiB one, a bias vector and an i64 buffer.
    for i in 0..8 {
        let w = Tensor::randn(&[512, 512], 0.0, 1.0, DType::F32, &mut rng).unwrap();
        dict.insert(format!("h.{i}.weight"), w);
    }
    // One matrix bigger than a piece of the streamed cast (4 MiB).
    let big = Tensor::randn(&[1536, 1024], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    dict.insert("wte.weight", big);
    dict.insert("h.0.bias", Tensor::ones(&[512], DType::F32));
    dict.insert("steps", Tensor::from_vec(vec![7i64, 8], &[2]).unwrap());
    dict.save(&path).unwrap();
    let f32_bytes = (8 * 512 * 512 + 1536 * 1024) * 4;
    drop(dict);

    let plain = StateDict::load(&path).unwrap();
    for copy in [true, false] {
        let options = LoadOptions {
            copy,
            cast_matrices: Some(DType::BF16),
            ..Default::default()
        };
        let before = live_bytes().unwrap();
        reset_peak();
        let cast = StateDict::load_with(&path, options).unwrap();
        let peak = peak_bytes().unwrap() - before;
        // bf16 matrices are half the f32 bytes; reading all of them as f32
        // first (what a load then a cast does) would need the f32 bytes.
        assert!(
            peak < f32_bytes * 3 / 4,
            "copy={copy}: the load peaked at {peak} heap bytes, the f32 matrices are {f32_bytes}"
        );
        for (name, t) in plain.iter() {
            let got = cast.get(name).unwrap();
            let want = if t.rank() == 2 {
                t.to_dtype(DType::BF16)
            } else {
                t.clone()
            };
            assert_eq!(got.dtype(), want.dtype(), "{name}");
            assert_eq!(got.shape(), want.shape(), "{name}");
            let bits = |t: &Tensor| t.to_dtype(DType::F64).to_vec::<f64>().unwrap();
            if want.dtype() == DType::I64 {
                assert_eq!(got.to_vec::<i64>().unwrap(), want.to_vec::<i64>().unwrap());
            } else {
                assert_eq!(bits(got), bits(&want), "{name}");
            }
        }
    }
    // f16 narrows the same way.
    let f16 = StateDict::load_with(
        &path,
        LoadOptions {
            cast_matrices: Some(DType::F16),
            ..Default::default()
        },
    )
    .unwrap();
    let want = plain.get("wte.weight").unwrap().to_dtype(DType::F16);
    let got = f16.get("wte.weight").unwrap();
    assert_eq!(got.dtype(), DType::F16);
    assert_eq!(
        got.to_dtype(DType::F32).to_vec::<f32>().unwrap(),
        want.to_dtype(DType::F32).to_vec::<f32>().unwrap()
    );
    // Widening back to f32 while reading a bf16 file is exact.
    let bf16_path = dir.path().join("bf16.safetensors");
    let mut half = StateDict::new();
    half.insert("w", plain.get("wte.weight").unwrap().to_dtype(DType::BF16));
    half.save(&bf16_path).unwrap();
    let widened = StateDict::load_with(
        &bf16_path,
        LoadOptions {
            keep_dtype: true,
            cast_matrices: Some(DType::F32),
            ..Default::default()
        },
    )
    .unwrap();
    let w = widened.get("w").unwrap();
    assert_eq!(w.dtype(), DType::F32);
    assert_eq!(
        w.to_vec::<f32>().unwrap(),
        half.get("w")
            .unwrap()
            .to_dtype(DType::F32)
            .to_vec::<f32>()
            .unwrap()
    );
}
