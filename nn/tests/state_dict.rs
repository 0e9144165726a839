//! State dicts: round trips, PyTorch interop, every broken-file case, a
//! fuzz property, atomic saves and strict / non-strict checks.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use kiln_nn::state_dict::{LoadOptions, LoadReport, StateDict, StateDictError};
use kiln_tensor::testing::{assert_close, load_safetensors};
use kiln_tensor::{DType, Tensor};
use proptest::prelude::*;

// ---- helpers -------------------------------------------------------------

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kiln-sd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Every file name in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/nn")
        .join(name)
}

fn t<T: kiln_tensor::Element>(data: Vec<T>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// One tensor of every dtype, plus a scalar, an empty tensor and metadata.
fn every_dtype() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert(
        "f32",
        t(vec![1.5f32, -2.0, 0.0, 3.25, 1e-30, -7.0], &[2, 3]),
    );
    sd.insert("f64", t(vec![0.1f64, -1e300, 5e-324], &[3]));
    sd.insert(
        "f16",
        t(
            [1.0f32, -0.5, 65504.0, 6.0e-8, -0.0]
                .map(f16::from_f32)
                .to_vec(),
            &[5],
        ),
    );
    sd.insert(
        "bf16",
        t(
            [1.0f32, -3.0, 1e38, -0.0].map(bf16::from_f32).to_vec(),
            &[2, 2],
        ),
    );
    sd.insert("i64", t(vec![0i64, -1, i64::MAX, i64::MIN], &[4]));
    sd.insert("bool", t(vec![true, false, false, true, true], &[5]));
    sd.insert("scalar", Tensor::scalar(3.5f32));
    sd.insert("empty", Tensor::zeros(&[0, 3], DType::F32));
    sd.metadata_mut().insert("format".into(), "pt".into());
    sd
}

/// Exact equality of dtype, shape and bits (NaN-safe).
fn assert_same(a: &Tensor, b: &Tensor, name: &str) {
    assert_eq!(a.dtype(), b.dtype(), "{name}: dtype");
    assert_eq!(a.shape(), b.shape(), "{name}: shape");
    let bits = |t: &Tensor| -> Vec<u64> {
        match t.dtype() {
            DType::F32 => t
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64)
                .collect(),
            DType::F64 => t
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
            DType::F16 => t
                .to_vec::<f16>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64)
                .collect(),
            DType::BF16 => t
                .to_vec::<bf16>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64)
                .collect(),
            DType::I64 => t
                .to_vec::<i64>()
                .unwrap()
                .iter()
                .map(|&v| v as u64)
                .collect(),
            DType::Bool => t
                .to_vec::<bool>()
                .unwrap()
                .iter()
                .map(|&v| v as u64)
                .collect(),
        }
    };
    assert_eq!(bits(a), bits(b), "{name}: values");
}

fn assert_dicts_equal(a: &StateDict, b: &StateDict) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, ta) in a.iter() {
        assert_same(ta, b.get(name).unwrap(), name);
    }
    assert_eq!(a.metadata(), b.metadata());
}

/// A raw safetensors image from a header string (not padded) and data.
fn image(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Writes `bytes` to a file called `name` and loads it, expecting an error;
/// checks that the message names the file.
fn load_err(name: &str, bytes: &[u8]) -> StateDictError {
    let dir = TempDir::new(&format!("err-{name}"));
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    let err = StateDict::load(&path).expect_err("a broken file must not load");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    err
}

fn assert_names(err: &StateDictError, parts: &[&str]) {
    let msg = err.to_string();
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
}

// ---- round trips ---------------------------------------------------------

#[test]
fn round_trip_every_dtype_keeping_dtype() {
    let dir = TempDir::new("rt");
    let path = dir.path("all.safetensors");
    let sd = every_dtype();
    sd.save(&path).unwrap();
    let back = StateDict::load_with(
        &path,
        LoadOptions {
            keep_dtype: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_dicts_equal(&sd, &back);
    assert_eq!(back.source(), Some(path.as_path()));
    assert_eq!(dir.listing(), vec!["all.safetensors"], "no temporary left");
}

#[test]
fn half_types_widen_to_f32_exactly_by_default() {
    let sd = every_dtype();
    let back =
        StateDict::from_bytes(&sd.to_bytes().unwrap(), "mem", LoadOptions::default()).unwrap();
    for name in ["f16", "bf16"] {
        let stored = sd.get(name).unwrap();
        let loaded = back.get(name).unwrap();
        assert_eq!(loaded.dtype(), DType::F32, "{name}");
        // Via f64, an independent exact path: every half value is an f32.
        let via_f64: Vec<f32> = stored
            .to_dtype(DType::F64)
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect();
        let got = loaded.to_vec::<f32>().unwrap();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            via_f64.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{name}"
        );
    }
    // Other dtypes are untouched.
    assert_eq!(back.get("f64").unwrap().dtype(), DType::F64);
    assert_eq!(back.get("i64").unwrap().dtype(), DType::I64);
    assert_eq!(back.get("bool").unwrap().dtype(), DType::Bool);
}

#[test]
fn every_f16_and_bf16_bit_pattern_widens_exactly() {
    // All 65536 patterns, 17 times over (2.1 MiB per tensor: above the
    // parallel threshold, three chunks, the last one ragged), and once more
    // behind an odd-length header so the data is misaligned and takes the
    // byte-by-byte path.
    const REPEAT: usize = 17;
    let f16s: Vec<f16> = (0..REPEAT)
        .flat_map(|_| (0..=u16::MAX).map(f16::from_bits))
        .collect();
    let bf16s: Vec<bf16> = (0..REPEAT)
        .flat_map(|_| (0..=u16::MAX).map(bf16::from_bits))
        .collect();
    let mut sd = StateDict::new();
    sd.insert("a", t(f16s.clone(), &[REPEAT, 256, 256]));
    sd.insert("b", t(bf16s.clone(), &[REPEAT * 65536]));
    let aligned = sd.to_bytes().unwrap();

    let n = u64::from_le_bytes(aligned[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&aligned[8..8 + n]).unwrap().trim_end();
    let odd_header = format!("{header} "); // make its length odd
    let odd_header = if odd_header.len() % 2 == 1 {
        odd_header
    } else {
        format!("{odd_header} ")
    };
    let misaligned = image(&odd_header, &aligned[8 + n..]);

    for bytes in [&aligned, &misaligned] {
        let back = StateDict::from_bytes(bytes, "mem", LoadOptions::default()).unwrap();
        let a = back.get("a").unwrap().to_vec::<f32>().unwrap();
        let b = back.get("b").unwrap().to_vec::<f32>().unwrap();
        for (i, (x, h)) in a.iter().zip(&f16s).enumerate() {
            let want = h.to_f32();
            assert!(
                x.to_bits() == want.to_bits() || (x.is_nan() && want.is_nan()),
                "f16 #{i}: {x} vs {want}"
            );
        }
        for (i, (x, h)) in b.iter().zip(&bf16s).enumerate() {
            let want = h.to_f32();
            assert!(
                x.to_bits() == want.to_bits() || (x.is_nan() && want.is_nan()),
                "bf16 #{i}: {x} vs {want}"
            );
        }
    }
}

#[test]
fn big_tensors_round_trip_through_the_parallel_copy() {
    // 3 MiB of f32 and 6 MiB each of i64 and f64: above the parallel
    // threshold, with a ragged last chunk.
    let n = 3 * (1 << 18) + 7;
    let mut sd = StateDict::new();
    sd.insert("w", t((0..n).map(|i| i as f32 * 0.5 - 3.0).collect(), &[n]));
    sd.insert("ids", t((0..n as i64).map(|i| i * 7 - 11).collect(), &[n]));
    sd.insert("x", t((0..n).map(|i| i as f64 / 3.0).collect(), &[n]));
    let dir = TempDir::new("big");
    let path = dir.path("big.safetensors");
    sd.save(&path).unwrap();
    assert_dicts_equal(&sd, &StateDict::load(&path).unwrap());
}

#[test]
fn non_contiguous_tensors_are_saved_contiguous() {
    let base = t((0..6).map(|v| v as f32).collect(), &[2, 3]);
    let mut sd = StateDict::new();
    sd.insert("t", base.t().unwrap()); // [3, 2] view, strides [1, 3]
    sd.insert("n", base.narrow(1, 1, 2).unwrap()); // [2, 2] view with offset
    let back =
        StateDict::from_bytes(&sd.to_bytes().unwrap(), "mem", LoadOptions::default()).unwrap();
    assert_eq!(back.get("t").unwrap().shape(), &[3, 2]);
    assert_eq!(
        back.get("t").unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    );
    assert_eq!(
        back.get("n").unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 4.0, 5.0]
    );
}

#[test]
fn bytes_match_the_safetensors_crate_and_it_reads_ours() {
    let sd = every_dtype(); // one metadata key, so key order cannot differ
    let ours = sd.to_bytes().unwrap();

    struct View<'a>(&'a Tensor, Vec<u8>);
    impl safetensors::View for View<'_> {
        fn dtype(&self) -> safetensors::Dtype {
            match self.0.dtype() {
                DType::F32 => safetensors::Dtype::F32,
                DType::F64 => safetensors::Dtype::F64,
                DType::F16 => safetensors::Dtype::F16,
                DType::BF16 => safetensors::Dtype::BF16,
                DType::I64 => safetensors::Dtype::I64,
                DType::Bool => safetensors::Dtype::BOOL,
            }
        }
        fn shape(&self) -> &[usize] {
            self.0.shape()
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            std::borrow::Cow::Borrowed(&self.1)
        }
        fn data_len(&self) -> usize {
            self.1.len()
        }
    }
    let le = |t: &Tensor| -> Vec<u8> {
        match t.dtype() {
            DType::F32 => t
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::F64 => t
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::F16 => t
                .to_vec::<f16>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::BF16 => t
                .to_vec::<bf16>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::I64 => t
                .to_vec::<i64>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::Bool => t
                .to_vec::<bool>()
                .unwrap()
                .iter()
                .map(|&v| v as u8)
                .collect(),
        }
    };
    let views: Vec<(String, View)> = sd
        .iter()
        .map(|(k, v)| (k.to_string(), View(v, le(v))))
        .collect();
    let meta: std::collections::HashMap<String, String> =
        sd.metadata().clone().into_iter().collect();
    let theirs = safetensors::serialize(views, Some(meta)).unwrap();
    assert_eq!(ours, theirs, "same bytes as safetensors::serialize");

    let parsed = safetensors::SafeTensors::deserialize(&ours).unwrap();
    assert_eq!(parsed.len(), sd.len());
    for (name, view) in parsed.tensors() {
        assert_eq!(view.shape(), sd.get(&name).unwrap().shape(), "{name}");
        assert_eq!(view.data(), le(sd.get(&name).unwrap()).as_slice(), "{name}");
    }
}

#[test]
fn save_is_deterministic_and_matches_to_bytes() {
    let dir = TempDir::new("det");
    let mut sd = every_dtype();
    sd.metadata_mut().insert("b".into(), "2".into());
    sd.metadata_mut().insert("a".into(), "1".into());
    let path = dir.path("x.safetensors");
    sd.save(&path).unwrap();
    let first = std::fs::read(&path).unwrap();
    assert_eq!(first, sd.to_bytes().unwrap());
    sd.save(&path).unwrap();
    assert_eq!(first, std::fs::read(&path).unwrap());
    // Loading and saving again reproduces the file.
    let back = StateDict::load_with(
        &path,
        LoadOptions {
            keep_dtype: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(back.to_bytes().unwrap(), first);
}

#[test]
fn empty_dict_round_trips() {
    let sd = StateDict::new();
    let bytes = sd.to_bytes().unwrap();
    assert_eq!(&bytes[8..], b"{}      ");
    let back = StateDict::from_bytes(&bytes, "mem", LoadOptions::default()).unwrap();
    assert!(back.is_empty());
}

#[test]
fn dict_api() {
    let mut sd: StateDict = [
        ("b".to_string(), Tensor::ones(&[2], DType::F32)),
        ("a".to_string(), Tensor::zeros(&[3], DType::F32)),
    ]
    .into_iter()
    .collect();
    assert_eq!(sd.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(sd.len(), 2);
    assert_eq!(sd.numel(), 5);
    assert!(sd.insert("a", Tensor::ones(&[1], DType::F32)).is_some());
    assert!(sd.contains_key("a"));
    assert_eq!(sd.remove("b").unwrap().shape(), &[2]);
    assert_eq!(sd.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec!["a"]);
    sd.extend([("c".to_string(), Tensor::scalar(1i64))]);
    assert_eq!(sd.clone().into_iter().count(), 2);
    assert!(sd.source().is_none());
}

#[test]
fn metadata_round_trips_and_reserved_name_is_refused() {
    let mut sd = StateDict::new();
    sd.metadata_mut().insert("step".into(), "1200".into());
    sd.metadata_mut()
        .insert("note".into(), "ünïcode \"quoted\"".into());
    sd.insert("w", Tensor::ones(&[2], DType::F32));
    let back =
        StateDict::from_bytes(&sd.to_bytes().unwrap(), "mem", LoadOptions::default()).unwrap();
    assert_eq!(back.metadata(), sd.metadata());

    let dir = TempDir::new("reserved");
    sd.insert("__metadata__", Tensor::ones(&[1], DType::F32));
    let path = dir.path("r.safetensors");
    let err = sd.save(&path).unwrap_err();
    assert!(matches!(err, StateDictError::ReservedName { .. }), "{err}");
    assert_names(&err, &["r.safetensors", "__metadata__"]);
    assert!(dir.listing().is_empty());
}

// ---- PyTorch interop -----------------------------------------------------

/// Written by scripts/reference/gen_state_dict_fixtures.py with
/// `safetensors.torch.save_file`:
///
/// ```python
/// "f16": torch.tensor([1.0, -2.5, 65504.0, 2.0**-24, 2.0**-14, -0.0, inf, -inf, nan, 0.1],
///                     dtype=torch.float16),
/// "bf16": torch.tensor([[1.0, -2.5, 3.0e38, 2.0**-133], [-0.0, inf, nan, 0.1]],
///                      dtype=torch.bfloat16),
/// "i64": torch.tensor([[0, -1, 2**53 + 1], [-(2**63), 2**63 - 1, 42]], dtype=torch.int64),
/// ...
/// expected = {name: t.double() if t.dtype.is_floating_point else t.clone()}
/// ```
#[test]
fn loads_torch_written_file() {
    let path = fixture("torch_written.safetensors");
    let sd = StateDict::load(&path).unwrap();
    // The expected values are read by kiln-tensor's independent fixture
    // reader (std::fs::read + safetensors), not by the code under test.
    let expected = load_safetensors(fixture("torch_written_expected.safetensors")).unwrap();
    assert_eq!(
        sd.keys().collect::<Vec<_>>(),
        expected.keys().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(sd.metadata().get("format").map(String::as_str), Some("pt"));
    for (name, want) in &expected {
        let got = sd.get(name).unwrap();
        match want.dtype() {
            DType::F64 => {
                let want_dtype = if name == "f64" {
                    DType::F64
                } else {
                    DType::F32
                };
                assert_eq!(got.dtype(), want_dtype, "{name}: halves load as f32");
                // Exact: rtol = atol = 0, NaN matches NaN, inf matches inf.
                assert_close(&got.to_dtype(DType::F64), want, 0.0, 0.0);
                // And signed zeros keep their sign.
                let signs = |t: &Tensor| -> Vec<bool> {
                    t.to_dtype(DType::F64)
                        .to_vec::<f64>()
                        .unwrap()
                        .iter()
                        .map(|v| v.is_sign_negative())
                        .collect()
                };
                assert_eq!(signs(got), signs(want), "{name}: signs");
            }
            _ => assert_same(got, want, name),
        }
    }
    // With keep_dtype the halves stay halves, with torch's exact bits.
    let kept = StateDict::load_with(
        &path,
        LoadOptions {
            keep_dtype: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(kept.get("f16").unwrap().dtype(), DType::F16);
    assert_eq!(kept.get("bf16").unwrap().dtype(), DType::BF16);
    assert_close(
        &kept.get("bf16").unwrap().to_dtype(DType::F64),
        &expected["bf16"],
        0.0,
        0.0,
    );
    assert_eq!(
        sd.get("i64").unwrap().to_vec::<i64>().unwrap(),
        vec![0, -1, (1 << 53) + 1, i64::MIN, i64::MAX, 42]
    );
}

/// The dict behind fixtures/nn/kiln_written.safetensors. Mirrored, value for
/// value, by `KILN_WRITTEN` in scripts/reference/gen_state_dict_fixtures.py,
/// which reads the file with `safetensors.torch.load_file`:
///
/// ```python
/// "h.0.attn.c_attn.weight": (torch.float32, [2, 3], [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75]),
/// "half.bf16": (torch.bfloat16, [3], [1.0, -3.0, 2.0**100]),
/// "tokens": (torch.int64, [4], [0, -1, 2**53 + 1, 2**63 - 1]),
/// ...
/// ```
fn kiln_written_dict() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert(
        "h.0.attn.c_attn.weight",
        t((0..6).map(|i| i as f32 * 0.25 - 0.5).collect(), &[2, 3]),
    );
    sd.insert("h.0.attn.c_attn.bias", t(vec![1.5f32, -2.0, 3.25], &[3]));
    sd.insert("wte.f64", t(vec![0.1f64, -0.2, 1e-300, 1e300], &[2, 2]));
    sd.insert(
        "half.f16",
        t(
            [1.0f32, -0.5, 65504.0, 2f32.powi(-14), 2f32.powi(-24)]
                .map(f16::from_f32)
                .to_vec(),
            &[5],
        ),
    );
    sd.insert(
        "half.bf16",
        t(
            [1.0f32, -3.0, 2f32.powi(100)].map(bf16::from_f32).to_vec(),
            &[3],
        ),
    );
    sd.insert("tokens", t(vec![0i64, -1, (1 << 53) + 1, i64::MAX], &[4]));
    sd.insert("mask", t(vec![true, false, false, true], &[2, 2]));
    sd.insert("scalar", Tensor::scalar(3.5f32));
    sd.insert("empty", Tensor::zeros(&[0, 3], DType::F32));
    sd.metadata_mut().insert("format".into(), "pt".into());
    sd.metadata_mut().insert("producer".into(), "kiln".into());
    sd
}

/// fixtures/nn/kiln_written.safetensors is what Kiln writes for
/// `kiln_written_dict()`, byte for byte, and re-saving the loaded file
/// reproduces it. Regenerate (then rerun the Python script, which reads it
/// with PyTorch) with
///
/// ```text
/// KILN_BLESS=1 cargo test -p kiln-nn --test state_dict kiln_written
/// ```
#[test]
fn kiln_written_fixture_is_byte_stable() {
    let path = fixture("kiln_written.safetensors");
    let sd = kiln_written_dict();
    if std::env::var_os("KILN_BLESS").is_some() {
        sd.save(&path).unwrap();
    }
    let committed = std::fs::read(&path).unwrap();
    assert_eq!(sd.to_bytes().unwrap(), committed, "saving the dict again");
    let back = StateDict::load_with(
        &path,
        LoadOptions {
            keep_dtype: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_dicts_equal(&sd, &back);
    assert_eq!(
        back.to_bytes().unwrap(),
        committed,
        "re-saving the loaded file"
    );
}

// ---- broken files: one test per case -------------------------------------

/// A valid two-tensor file used as the base of the broken-file tests.
fn valid_image() -> Vec<u8> {
    let mut sd = StateDict::new();
    sd.insert("h.0.attn.c_attn.weight", Tensor::ones(&[4, 6], DType::F32));
    sd.insert("h.0.attn.c_attn.bias", Tensor::zeros(&[6], DType::F32));
    sd.to_bytes().unwrap()
}

#[test]
fn truncated_file_at_several_lengths() {
    let full = valid_image();
    let n = u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    for len in [0, 1, 7] {
        let err = load_err("short.safetensors", &full[..len]);
        assert!(
            matches!(err, StateDictError::TooShort { .. }),
            "{len}: {err}"
        );
        assert_names(&err, &[&format!("file is {len} bytes")]);
    }
    for len in [8, 9, 8 + n / 2, 8 + n - 1] {
        let err = load_err("cut_header.safetensors", &full[..len]);
        assert!(
            matches!(err, StateDictError::HeaderPastEnd { .. }),
            "{len}: {err}"
        );
        assert_names(&err, &[&format!("file is {len} bytes")]);
    }
    // Cut inside the data section: a tensor runs off the end.
    for len in [8 + n, 8 + n + 1, full.len() - 1] {
        let err = load_err("cut_data.safetensors", &full[..len]);
        assert!(
            matches!(err, StateDictError::OffsetsPastEnd { .. }),
            "{len}: {err}"
        );
        assert_names(&err, &["tensor h.0.attn.c_attn.", "lies past the end"]);
    }
}

#[test]
fn header_length_past_end_of_file() {
    let mut bytes = 1000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let err = load_err("past.safetensors", &bytes);
    assert!(matches!(
        err,
        StateDictError::HeaderPastEnd {
            header_len: 1000,
            file_len: 10,
            ..
        }
    ));
    assert_names(&err, &["header length 1000", "byte 1008", "10 bytes"]);
}

#[test]
fn absurd_header_length() {
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    let err = load_err("huge.safetensors", &bytes);
    assert!(
        matches!(err, StateDictError::HeaderTooLarge { .. }),
        "{err}"
    );
}

#[test]
fn header_not_utf8() {
    let header = b"{\"\xff\":1}";
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    let err = load_err("latin1.safetensors", &bytes);
    assert!(
        matches!(err, StateDictError::HeaderNotUtf8 { valid_up_to: 2, .. }),
        "{err}"
    );
}

#[test]
fn garbage_json() {
    for header in ["{not json", "[1, 2, 3]", "\"a string\"", "{\"a\": 1,}", ""] {
        let err = load_err("garbage.safetensors", &image(header, b""));
        assert!(
            matches!(err, StateDictError::HeaderJson { .. }),
            "{header}: {err}"
        );
    }
}

#[test]
fn unknown_dtype() {
    let h = r#"{"h.0.mlp.weight":{"dtype":"XYZ","shape":[2],"data_offsets":[0,8]}}"#;
    let err = load_err("xyz.safetensors", &image(h, &[0; 8]));
    assert!(matches!(err, StateDictError::UnknownDtype { .. }), "{err}");
    assert_names(&err, &["tensor h.0.mlp.weight", "unknown dtype \"XYZ\""]);
}

#[test]
fn unsupported_dtype() {
    for (dtype, bytes) in [("F8_E4M3", 2), ("I32", 8), ("U8", 2), ("C64", 16)] {
        let h = format!(
            r#"{{"q.weight":{{"dtype":"{dtype}","shape":[2],"data_offsets":[0,{bytes}]}}}}"#
        );
        let err = load_err("f8.safetensors", &image(&h, &vec![0; bytes]));
        assert!(
            matches!(err, StateDictError::UnsupportedDtype { .. }),
            "{err}"
        );
        assert_names(
            &err,
            &[
                "tensor q.weight",
                &format!("dtype {dtype} is not supported"),
            ],
        );
    }
}

#[test]
fn malformed_entries() {
    let cases = [
        (
            r#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#,
            "no \"dtype\" field",
        ),
        (
            r#"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#,
            "no \"shape\" field",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1]}}"#,
            "no \"data_offsets\" field",
        ),
        (
            r#"{"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}}"#,
            "dtype must be a string",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            "shape must be",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#,
            "shape must be",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
            "data_offsets must be",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}}"#,
            "data_offsets must be",
        ),
        (r#"{"w":[1,2]}"#, "entry must be an object"),
    ];
    for (h, what) in cases {
        let err = load_err("entry.safetensors", &image(h, &[0; 4]));
        assert!(matches!(err, StateDictError::BadEntry { .. }), "{h}: {err}");
        assert_names(&err, &["tensor w", what]);
    }
}

#[test]
fn bad_metadata() {
    for h in [r#"{"__metadata__":{"epoch":3}}"#, r#"{"__metadata__":[1]}"#] {
        let err = load_err("meta.safetensors", &image(h, b""));
        assert!(
            matches!(err, StateDictError::BadMetadata { .. }),
            "{h}: {err}"
        );
    }
    // `null` is no metadata, as the safetensors crate reads it.
    let sd = StateDict::from_bytes(
        &image(r#"{"__metadata__":null}"#, b""),
        "null",
        LoadOptions::default(),
    )
    .unwrap();
    assert!(sd.metadata().is_empty());
}

#[test]
fn offsets_out_of_range() {
    let h =
        r#"{"h.0.attn.c_attn.weight":{"dtype":"F32","shape":[1000],"data_offsets":[1000,5000]}}"#;
    let dir = TempDir::new("oob");
    let path = dir.path("model.safetensors");
    std::fs::write(&path, image(h, &[0; 4096])).unwrap();
    let err = StateDict::load(&path).unwrap_err();
    assert!(
        matches!(err, StateDictError::OffsetsPastEnd { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}: tensor h.0.attn.c_attn.weight: data [1000, 5000) lies past the end of the data \
             section (4096 bytes)",
            path.display()
        )
    );
    // Offsets near u64::MAX must not overflow anywhere.
    let h = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}}"#;
    let err = load_err("max.safetensors", &image(h, &[0; 4]));
    assert!(
        matches!(err, StateDictError::OffsetsPastEnd { .. }),
        "{err}"
    );
}

#[test]
fn reversed_offsets() {
    let h = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#;
    let err = load_err("rev.safetensors", &image(h, &[0; 4]));
    assert!(
        matches!(err, StateDictError::ReversedOffsets { .. }),
        "{err}"
    );
    assert_names(&err, &["tensor w", "[4, 0)"]);
}

#[test]
fn overlapping_tensors() {
    let h = r#"{"a.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                "b.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let err = load_err("overlap.safetensors", &image(h, &[0; 12]));
    assert!(matches!(err, StateDictError::Overlap { .. }), "{err}");
    assert_names(
        &err,
        &[
            "tensor b.weight",
            "[4, 12)",
            "overlaps tensor a.weight at [0, 8)",
        ],
    );
    // Two tensors on the very same bytes (aliasing) is an overlap too.
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                "b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let err = load_err("alias.safetensors", &image(h, &[0; 8]));
    assert!(matches!(err, StateDictError::Overlap { .. }), "{err}");
    // An empty tensor inside another one's bytes.
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                "e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#;
    let err = load_err("inside.safetensors", &image(h, &[0; 8]));
    assert!(matches!(err, StateDictError::Overlap { .. }), "{err}");
    assert_names(&err, &["tensor e", "overlaps tensor a"]);
}

#[test]
fn gap_and_trailing_bytes() {
    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                "b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let err = load_err("gap.safetensors", &image(h, &[0; 12]));
    assert!(matches!(err, StateDictError::Gap { .. }), "{err}");
    assert_names(&err, &["tensor b", "bytes [4, 8)"]);

    let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let err = load_err("trailing.safetensors", &image(h, &[0; 10]));
    assert!(matches!(err, StateDictError::TrailingBytes { .. }), "{err}");
    assert_names(
        &err,
        &["bytes [4, 10)", "the last tensor, a, ends at byte 4"],
    );
}

#[test]
fn wrong_byte_count_for_shape() {
    let h = r#"{"h.1.ln_1.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    let err = load_err("count.safetensors", &image(h, &[0; 20]));
    assert!(
        matches!(err, StateDictError::ByteCount { expected: 24, .. }),
        "{err}"
    );
    assert_names(
        &err,
        &[
            "tensor h.1.ln_1.weight",
            "[2, 3] of F32 needs 24 bytes",
            "holds 20",
        ],
    );
}

#[test]
fn duplicate_names() {
    let h = r#"{"wte.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                "wte.weight":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let err = load_err("dup.safetensors", &image(h, &[0; 8]));
    assert!(matches!(err, StateDictError::DuplicateName { .. }), "{err}");
    assert_names(&err, &["tensor wte.weight", "more than once"]);
}

#[test]
fn shape_whose_size_overflows() {
    // Zero elements, so zero bytes would "match", but the strides of
    // [2^40, 2^40, 0] overflow: refused before any tensor is built.
    let h = r#"{"z":{"dtype":"F32","shape":[1099511627776,1099511627776,0],"data_offsets":[0,0]}}"#;
    let err = load_err("overflow.safetensors", &image(h, b""));
    assert!(matches!(err, StateDictError::ShapeOverflow { .. }), "{err}");
    assert_names(&err, &["tensor z", "too large"]);
    let h = r#"{"z":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
    let err = load_err("overflow2.safetensors", &image(h, &[0; 8]));
    assert!(matches!(err, StateDictError::ShapeOverflow { .. }), "{err}");
}

#[test]
fn invalid_bool_byte() {
    let h = r#"{"attn.mask":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"#;
    let err = load_err("bool.safetensors", &image(h, &[1, 0, 7]));
    assert!(
        matches!(
            err,
            StateDictError::InvalidBool {
                index: 2,
                byte: 7,
                ..
            }
        ),
        "{err}"
    );
    assert_names(&err, &["tensor attn.mask", "element 2 is byte 0x07"]);
}

#[test]
fn missing_file_and_directory_name_the_path() {
    let dir = TempDir::new("io");
    for path in [dir.path("nope.safetensors"), dir.0.clone()] {
        let err = StateDict::load(&path).unwrap_err();
        assert!(matches!(err, StateDictError::Io { .. }), "{err}");
        assert_names(&err, &[&path.display().to_string()]);
    }
}

// ---- fuzzing: no input panics ---------------------------------------------

/// Applies `(position, byte)` overwrites and then truncates to `keep` bytes.
fn mutate(base: &[u8], edits: &[(usize, u8)], keep: usize) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(pos, b) in edits {
        let i = pos % bytes.len();
        bytes[i] = b;
    }
    bytes.truncate(keep.min(bytes.len()));
    bytes
}

/// A loaded dict must be internally consistent: each tensor has exactly
/// its shape's element count, and it survives a save/load round trip.
fn check_loaded(sd: &StateDict) {
    for (name, t) in sd.iter() {
        assert_eq!(t.numel(), t.shape().iter().product::<usize>(), "{name}");
    }
    let again = StateDict::from_bytes(
        &sd.to_bytes().unwrap(),
        "again",
        LoadOptions {
            keep_dtype: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(again.len(), sd.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random byte overwrites and truncations of a valid file: errors are
    /// fine, panics are not. Edits land anywhere, but half of them target
    /// the header and its length prefix, where the parsing happens.
    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((0usize..400, any::<u8>()), 0..6),
        keep in 0usize..1000,
        dtype_bool in any::<bool>(),
    ) {
        let mut sd = every_dtype();
        if dtype_bool {
            sd.metadata_mut().clear();
        }
        let base = sd.to_bytes().unwrap();
        let bytes = mutate(&base, &edits, keep);
        for keep_dtype in [false, true] {
            if let Ok(loaded) = StateDict::from_bytes(&bytes, "fuzz", LoadOptions { keep_dtype, ..Default::default() }) {
                check_loaded(&loaded);
            }
        }
    }

    /// Headers built from random, mostly plausible entries (dtypes real,
    /// unsupported and made up; shapes and offsets small, huge or crossed)
    /// over a random data section: reaches the offset and size checks that
    /// byte flips rarely get past the JSON parser to.
    #[test]
    fn random_headers_never_panic(
        entries in prop::collection::vec(
            (
                prop::sample::select(vec!["F32", "F16", "BF16", "F64", "I64", "BOOL", "I32", "F8_E4M3", "Q4"]),
                prop::collection::vec(prop_oneof![0u64..5, Just(u64::MAX), Just(1u64 << 33)], 0..4),
                prop_oneof![0u64..64, Just(u64::MAX - 1)],
                prop_oneof![0u64..64, Just(u64::MAX)],
                0usize..3,
            ),
            0..5,
        ),
        data_len in 0usize..64,
        data_byte in prop_oneof![Just(0u8), Just(1u8), any::<u8>()],
    ) {
        let names = ["a", "b", "a"];
        let body: Vec<String> = entries
            .iter()
            .map(|(dtype, shape, s, e, n)| {
                format!(r#""{}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{s},{e}]}}"#, names[*n])
            })
            .collect();
        let header = format!("{{{}}}", body.join(","));
        let bytes = image(&header, &vec![data_byte; data_len]);
        if let Ok(loaded) = StateDict::from_bytes(&bytes, "fuzz", LoadOptions::default()) {
            check_loaded(&loaded);
        }
    }
}

#[test]
fn mutated_files_through_the_mmap_path() {
    // A few deterministic mutations through real files, so the mmap path is
    // fuzzed too (the property above runs in memory for speed).
    let base = valid_image();
    let dir = TempDir::new("mmapfuzz");
    let path = dir.path("m.safetensors");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pos = (state % base.len() as u64) as usize;
        let keep = ((state >> 32) % (base.len() as u64 + 1)) as usize;
        let bytes = mutate(&base, &[(pos, (state >> 24) as u8)], keep);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(sd) = StateDict::load(&path) {
            check_loaded(&sd);
        }
    }
}

// ---- atomic saves ---------------------------------------------------------

#[test]
fn save_replaces_an_existing_file_and_leaves_no_temporary() {
    let dir = TempDir::new("replace");
    let path = dir.path("ckpt.safetensors");
    let mut a = StateDict::new();
    a.insert("w", Tensor::ones(&[3], DType::F32));
    a.save(&path).unwrap();
    let mut b = StateDict::new();
    b.insert("w", Tensor::zeros(&[5], DType::F64));
    b.save(&path).unwrap();
    assert_dicts_equal(&b, &StateDict::load(&path).unwrap());
    assert_eq!(dir.listing(), vec!["ckpt.safetensors"]);
}

#[test]
fn failed_save_when_parent_is_a_file() {
    let dir = TempDir::new("parentfile");
    let parent = dir.path("not_a_dir");
    std::fs::write(&parent, b"keep me").unwrap();
    let path = parent.join("model.safetensors");
    let err = every_dtype().save(&path).unwrap_err();
    assert!(matches!(err, StateDictError::Save { .. }), "{err}");
    assert_names(
        &err,
        &[&path.display().to_string(), "creating temporary file"],
    );
    assert_eq!(std::fs::read(&parent).unwrap(), b"keep me");
    assert_eq!(dir.listing(), vec!["not_a_dir"]);
}

#[test]
fn failed_rename_leaves_target_and_no_temporary() {
    // The target is a non-empty directory: writing the temporary succeeds,
    // the rename fails, and the temporary must be cleaned up.
    let dir = TempDir::new("rename");
    let path = dir.path("model.safetensors");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("inside"), b"x").unwrap();
    let err = every_dtype().save(&path).unwrap_err();
    assert!(matches!(err, StateDictError::Save { .. }), "{err}");
    assert_names(&err, &["model.safetensors", "renaming temporary file"]);
    assert_eq!(dir.listing(), vec!["model.safetensors"]);
    assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"x");
}

#[cfg(unix)]
#[test]
fn failed_save_into_read_only_directory_keeps_old_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("readonly");
    let path = dir.path("model.safetensors");
    let old = every_dtype();
    old.save(&path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions; the disk-full test below covers it.
    let probe = dir.path("probe");
    let writable = std::fs::write(&probe, b"").is_ok();
    if !writable {
        let err = kiln_written_dict().save(&path).unwrap_err();
        assert!(matches!(err, StateDictError::Save { .. }), "{err}");
        assert_names(&err, &[&path.display().to_string(), "Permission denied"]);
        assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
    } else {
        std::fs::remove_file(&probe).unwrap();
    }
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(dir.listing(), vec!["model.safetensors"]);
}

/// Disk full, simulated with a file-size limit (`ulimit -f`, which binds
/// root too): the test binary re-runs itself as a child under the limit and
/// tries to overwrite an existing checkpoint with a bigger one. The write
/// fails mid-file with EFBIG; the old file must be intact and no temporary
/// left behind.
#[cfg(target_os = "linux")]
#[test]
fn failed_write_mid_file_keeps_old_file() {
    let dir = TempDir::new("diskfull");
    let path = dir.path("model.safetensors");
    let old = every_dtype();
    old.save(&path).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();

    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new("sh")
        .arg("-c")
        // Ignore SIGXFSZ (inherited across exec) so write() returns EFBIG;
        // limit files to 64 blocks (32 or 64 KiB depending on the shell).
        .arg(r#"trap '' XFSZ; ulimit -f 64 && exec "$0" "$@""#)
        .arg(exe)
        .args([
            "--exact",
            "disk_full_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_SD_DISK_FULL_PATH", &path)
        .output()
        .unwrap();
    assert!(
        child.status.success() && String::from_utf8_lossy(&child.stderr).contains("child saw"),
        "child failed: {}\n{}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert_eq!(std::fs::read(&path).unwrap(), old_bytes, "old file intact");
    assert_eq!(
        dir.listing(),
        vec!["model.safetensors"],
        "no temporary left"
    );
    let back = StateDict::load_with(
        &path,
        LoadOptions {
            keep_dtype: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_dicts_equal(&old, &back);
}

/// The child half of `failed_write_mid_file_keeps_old_file`; does nothing
/// unless that test runs it.
#[test]
fn disk_full_child() {
    let Some(path) = std::env::var_os("KILN_SD_DISK_FULL_PATH") else {
        return;
    };
    let mut big = StateDict::new();
    big.insert("w", Tensor::ones(&[1 << 18], DType::F32)); // 1 MiB
    let err = big.save(&path).unwrap_err();
    assert!(matches!(err, StateDictError::Save { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("writing temporary file"), "{msg}");
    assert!(
        msg.contains(&Path::new(&path).display().to_string()),
        "{msg}"
    );
    eprintln!("child saw: {msg}");
}

// ---- strict / non-strict checks -------------------------------------------

fn gpt2_block_dict() -> StateDict {
    let mut sd = StateDict::new();
    sd.insert("h.0.ln_1.weight", Tensor::ones(&[8], DType::F32));
    sd.insert(
        "h.0.attn.c_attn.weight",
        Tensor::zeros(&[8, 24], DType::F32),
    );
    sd.insert("h.0.attn.c_attn.bias", Tensor::zeros(&[24], DType::F32));
    sd.insert("h.0.attn.masked_bias", Tensor::scalar(-1e4f32));
    sd
}

fn expected(params: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    params
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect()
}

#[test]
fn strict_check_passes_on_exact_match() {
    let sd = gpt2_block_dict();
    let all: Vec<(String, Vec<usize>)> = sd
        .iter()
        .map(|(k, t)| (k.to_string(), t.shape().to_vec()))
        .collect();
    let report = sd.check_against(&all, true).unwrap();
    assert!(report.is_exact());
    assert_eq!(report, LoadReport::default());
}

#[test]
fn non_strict_reports_missing_and_unexpected() {
    let sd = gpt2_block_dict();
    let want = expected(&[
        ("h.0.ln_1.weight", &[8]),
        ("h.0.ln_1.bias", &[8]),
        ("h.0.attn.c_attn.weight", &[8, 24]),
        ("h.0.attn.c_attn.bias", &[24]),
    ]);
    let report = sd.check_against(&want, false).unwrap();
    assert_eq!(report.missing, vec!["h.0.ln_1.bias"]);
    assert_eq!(report.unexpected, vec!["h.0.attn.masked_bias"]);
    assert!(!report.is_exact());
    assert!(report.to_string().contains("h.0.ln_1.bias"));

    let err = sd.check_against(&want, true).unwrap_err();
    assert!(matches!(err, StateDictError::KeyMismatch { .. }), "{err}");
    assert_names(
        &err,
        &[
            "strict load",
            "1 missing key(s) [h.0.ln_1.bias]",
            "1 unexpected key(s) [h.0.attn.masked_bias]",
        ],
    );
}

#[test]
fn shape_mismatch_fails_strict_or_not() {
    let mut sd = StateDict::new();
    sd.insert(
        "h.0.attn.c_attn.weight",
        Tensor::zeros(&[2304, 768], DType::F32),
    );
    sd.insert("h.0.ln_1.weight", Tensor::zeros(&[7], DType::F32));
    let want = expected(&[
        ("h.0.attn.c_attn.weight", &[768, 2304]),
        ("h.0.ln_1.weight", &[768]),
    ]);
    for strict in [false, true] {
        let err = sd.check_against(&want, strict).unwrap_err();
        assert!(
            matches!(err, StateDictError::ShapeMismatch { more: 1, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "h.0.attn.c_attn.weight: expected [768, 2304], found [2304, 768] (the transpose: \
             GPT-2 checkpoints store Conv1D weights as [in, out]) (and 1 more shape mismatch(es))"
        );
    }
}

#[test]
fn check_errors_name_the_source_file() {
    let dir = TempDir::new("checkfile");
    let path = dir.path("gpt2.safetensors");
    gpt2_block_dict().save(&path).unwrap();
    let sd = StateDict::load(&path).unwrap();
    let err = sd
        .check_against(&expected(&[("h.0.ln_1.weight", &[9])]), false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: h.0.ln_1.weight: expected [9], found [8]",
            path.display()
        )
    );
}

#[test]
fn duplicate_expected_parameter_is_an_error() {
    let sd = gpt2_block_dict();
    let want = expected(&[("h.0.ln_1.weight", &[8]), ("h.0.ln_1.weight", &[8])]);
    let err = sd.check_against(&want, false).unwrap_err();
    assert!(
        matches!(err, StateDictError::DuplicateParameter { .. }),
        "{err}"
    );
}

#[test]
fn long_key_lists_are_shortened() {
    let sd = StateDict::new();
    let want: Vec<(String, Vec<usize>)> = (0..25).map(|i| (format!("p{i:02}"), vec![1])).collect();
    let err = sd.check_against(&want, true).unwrap_err();
    assert_names(&err, &["25 missing key(s)", "p09, … and 15 more]"]);
}

/// Loading leaves tensors that need no conversion in the mapped file;
/// writing to one copies it first and leaves the file alone; `copy` and
/// widened halves give owned storage.
#[test]
fn loads_read_in_place_from_the_map_and_copy_on_write() {
    let dir = TempDir::new("map");
    let path = dir.path("w.safetensors");
    let mut sd = StateDict::new();
    sd.insert("w", t((0..1000).map(|i| i as f32).collect(), &[10, 100]));
    sd.insert("h", t(vec![f16::from_f32(1.5); 6], &[6]));
    sd.save(&path).unwrap();

    let back = StateDict::load(&path).unwrap();
    let w = back.get("w").unwrap();
    assert!(w.storage().is_mapped());
    assert!(
        !back.get("h").unwrap().storage().is_mapped(),
        "widened to f32: a copy"
    );
    assert_eq!(w.to_vec::<f32>().unwrap()[999], 999.0);
    let kept = StateDict::load_with(
        &path,
        LoadOptions {
            keep_dtype: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(kept.get("h").unwrap().storage().is_mapped());

    let mut w2 = w.clone();
    w2.data_mut::<f32>().unwrap()[0] = -1.0;
    assert!(!w2.storage().is_mapped());
    assert_eq!(
        w.to_vec::<f32>().unwrap()[0],
        0.0,
        "the mapped tensor is unchanged"
    );
    let again = StateDict::load(&path).unwrap();
    assert_eq!(
        again.get("w").unwrap().to_vec::<f32>().unwrap()[0],
        0.0,
        "the file is unchanged"
    );

    let copied = StateDict::load_with(
        &path,
        LoadOptions {
            copy: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!copied.get("w").unwrap().storage().is_mapped());
    assert_dicts_equal(&back, &copied);
}
