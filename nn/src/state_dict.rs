//! Named tensors saved and loaded as [safetensors] files.
//!
//! A [`StateDict`] maps parameter names (`h.0.attn.c_attn.weight`, the
//! PyTorch / Hugging Face checkpoint keys) to [`Tensor`]s, plus optional
//! string metadata (safetensors' `__metadata__`). It is the Rust side of
//! `model.state_dict()` / `safetensors.torch.{save_file, load_file}`:
//!
//! - [`StateDict::load`] memory-maps the file, validates the whole header
//!   before touching any data, and copies each tensor into owned storage. A
//!   broken or hostile file gives a [`StateDictError`] naming the file, the
//!   tensor and the problem; it never panics or reads out of bounds.
//! - [`StateDict::save`] writes atomically: a crash or a full disk leaves the
//!   previous file at the path untouched.
//! - [`StateDict::check_against`] compares the entries with the parameters a
//!   model expects (strict or non-strict, like PyTorch's
//!   `load_state_dict(strict=...)`).
//!
//! ```
//! use kiln_nn::state_dict::StateDict;
//! use kiln_tensor::{DType, Tensor};
//!
//! let mut sd = StateDict::new();
//! sd.insert("ln_f.weight", Tensor::ones(&[4], DType::F32));
//! sd.insert("ln_f.bias", Tensor::zeros(&[4], DType::F32));
//! let path = std::env::temp_dir().join(format!("kiln-doc-{}.safetensors", std::process::id()));
//! sd.save(&path)?;
//!
//! let back = StateDict::load(&path)?;
//! assert_eq!(back.get("ln_f.weight").unwrap().to_vec::<f32>()?, vec![1.0; 4]);
//! let report = back.check_against(&[("ln_f.weight".into(), vec![4])], false)?;
//! assert_eq!(report.unexpected, vec!["ln_f.bias".to_string()]);
//! # std::fs::remove_file(&path).unwrap();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

mod error;
mod load;
mod save;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_tensor::{DType, Tensor};

pub use error::StateDictError;

/// Options for [`StateDict::load_with`] and [`StateDict::from_bytes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Keep `F16` and `BF16` tensors in their stored dtype. When `false` (the
    /// default) they are widened to `F32`, Kiln's compute type; the
    /// conversion is exact. Other dtypes always load as stored.
    pub keep_dtype: bool,
    /// Copy every tensor into memory Kiln owns, closing the file. When
    /// `false` (the default), [`StateDict::load_with`] leaves tensors whose
    /// stored dtype is the loaded dtype in the memory-mapped file and reads
    /// them in place (like `safetensors.torch.load_file`), so loading costs
    /// no copy; writing to such a tensor copies it first.
    pub copy: bool,
    /// Round (or widen) every 2-D floating-point tensor — the weight
    /// matrices — to this dtype while reading, one tensor at a time, so a
    /// whole model never sits in memory in the stored dtype first: an f32
    /// gpt2-xl read as bf16 peaks at its 3 GB of bf16 matrices, not 6 GB of
    /// f32. The conversion is [`kiln_tensor::Tensor::to_dtype`]'s (round to
    /// nearest even), so the result equals loading and then casting. A load
    /// that casts anything copies the other tensors (biases and norms:
    /// small), so no scattered mapped pages stay resident either; a load
    /// that casts nothing follows the fields above. `None` (the default)
    /// casts nothing.
    pub cast_matrices: Option<DType>,
}

/// Named tensors with optional string metadata, ordered by name.
///
/// Names are unique; [`StateDict::insert`] replaces. Cloning is cheap: the
/// tensors share storage.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    tensors: BTreeMap<String, Tensor>,
    metadata: BTreeMap<String, String>,
    /// The file this dict was loaded from, for error messages.
    source: Option<PathBuf>,
}

impl StateDict {
    /// An empty state dict.
    pub fn new() -> StateDict {
        StateDict::default()
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Mutable access to the tensor called `name` (e.g. to transpose a
    /// Conv1D weight in place before loading it).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Tensor> {
        self.tensors.get_mut(name)
    }

    /// Adds or replaces the tensor called `name`; returns the old one.
    ///
    /// The name `__metadata__` is reserved by safetensors: such an entry is
    /// kept here but [`StateDict::save`] refuses it.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.tensors.insert(name.into(), tensor)
    }

    /// Removes and returns the tensor called `name`.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.tensors.remove(name)
    }

    /// Whether a tensor is called `name`.
    pub fn contains_key(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The names, in sorted order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.tensors.keys().map(String::as_str)
    }

    /// Names and tensors, in sorted order of name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Tensor)> + '_ {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of elements over all tensors.
    pub fn numel(&self) -> usize {
        self.tensors.values().map(Tensor::numel).sum()
    }

    /// The string metadata (`__metadata__` in the file), sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Mutable access to the metadata. An empty map writes no
    /// `__metadata__` entry.
    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }

    /// The file this dict was loaded from, if it came from
    /// [`StateDict::load`]; errors from [`StateDict::check_against`] name it.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Loads a safetensors file, widening `F16`/`BF16` to `F32`
    /// (`safetensors.torch.load_file` followed by `.float()` on the halves).
    /// See [`StateDict::load_with`].
    ///
    /// # Errors
    /// As [`StateDict::load_with`].
    pub fn load(path: impl AsRef<Path>) -> Result<StateDict, StateDictError> {
        StateDict::load_with(path, LoadOptions::default())
    }

    /// Loads a safetensors file.
    ///
    /// The file is memory-mapped, not read into a buffer. The whole header
    /// is checked before any data byte is touched: the length prefix, UTF-8,
    /// JSON, every entry's dtype, shape and offsets, that the byte count is
    /// shape × dtype size, and that the tensors tile the data section with no
    /// overlap, gap or trailing bytes. Then each tensor whose stored dtype
    /// is the one it loads as (and whose bytes are aligned) is read in place
    /// from the map, unless [`LoadOptions::copy`] is set; the others are
    /// copied (in parallel for big ones) into owned storage. `BOOL` bytes
    /// other than 0 or 1 are rejected. Supported dtypes: `F32`, `F64`, `F16`, `BF16`,
    /// `I64`, `BOOL`.
    ///
    /// As with any memory-mapped loader, another process truncating the file
    /// while it loads can crash this process (`SIGBUS`); files being
    /// rewritten by [`StateDict::save`] are replaced by rename, which is safe.
    ///
    /// # Errors
    /// [`StateDictError::Io`] if the file cannot be opened or mapped, and
    /// one variant per format problem ([`StateDictError::TooShort`],
    /// [`StateDictError::HeaderPastEnd`], [`StateDictError::HeaderJson`],
    /// [`StateDictError::UnknownDtype`], [`StateDictError::OffsetsPastEnd`],
    /// [`StateDictError::Overlap`], [`StateDictError::ByteCount`],
    /// [`StateDictError::DuplicateName`], …), each naming the file and, where
    /// there is one, the tensor.
    pub fn load_with(
        path: impl AsRef<Path>,
        options: LoadOptions,
    ) -> Result<StateDict, StateDictError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let io = |source| StateDictError::Io {
            path: shown.clone(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        if meta.len() < 8 {
            return Err(StateDictError::TooShort {
                file: shown,
                len: meta.len(),
            });
        }
        // SAFETY: the map is read-only; tensors that read it in place keep
        // it alive through an `Arc`. The hazard inherent to mmap, another
        // process shrinking the file meanwhile, is documented above.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?);
        let header = load::validate(&map, &shown)?;
        let options = load::resolve(&header, options);
        // The header is sound. Mapped tensors: ask the kernel to fault the
        // data in now, in one pass, rather than a page at a time during the
        // first forward pass. Copied tensors: drop each one's pages from
        // this process once copied, so the peak resident set is the tensors
        // alone, not the file's pages on top (a gpt2-xl checkpoint is 6 GB).
        #[cfg(target_os = "linux")]
        if !options.copy {
            let _ = map.advise(memmap2::Advice::PopulateRead);
        }
        let release = |offset: usize, len: usize| {
            // SAFETY: the map is a read-only mapping of a file; MADV_DONTNEED
            // only drops this process's page-table entries, and a later read
            // of the range faults the same bytes in from the file again.
            #[cfg(unix)]
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
            #[cfg(not(unix))]
            let _ = (offset, len);
        };
        let shared: Arc<dyn AsRef<[u8]> + Send + Sync> = map.clone();
        let (tensors, metadata) = load::read_tensors(
            map.as_ref(),
            Some(shared),
            header,
            &shown,
            options,
            Some(&release),
        )?;
        Ok(StateDict {
            tensors,
            metadata,
            source: Some(path.to_path_buf()),
        })
    }

    /// Reads a safetensors image from memory, with the same checks as
    /// [`StateDict::load_with`]. `label` names it in errors, as a path
    /// would (`safetensors.torch.load(bytes)`).
    ///
    /// # Errors
    /// As [`StateDict::load_with`], except [`StateDictError::Io`].
    pub fn from_bytes(
        bytes: &[u8],
        label: &str,
        options: LoadOptions,
    ) -> Result<StateDict, StateDictError> {
        let header = load::validate(bytes, label)?;
        let options = load::resolve(&header, options);
        let (tensors, metadata) = load::read_tensors(bytes, None, header, label, options, None)?;
        Ok(StateDict {
            tensors,
            metadata,
            source: None,
        })
    }

    /// Writes the dict as a safetensors file, atomically
    /// (`safetensors.torch.save_file`).
    ///
    /// Each tensor is written contiguous in its own dtype, sorted by
    /// descending dtype alignment then name, exactly as
    /// `safetensors::serialize` lays files out; the output is deterministic.
    /// The bytes go to a temporary file `<path>.<pid>-<n>.kiln-tmp` in the
    /// same directory, which is `fsync`ed and renamed over `path`; the
    /// directory is then `fsync`ed where the platform allows. A crash or
    /// failure at any point leaves the previous file at `path` intact, and
    /// the temporary file is removed on failure. If `path` is a symlink, the
    /// link itself is replaced by the new file.
    ///
    /// # Errors
    /// [`StateDictError::Save`] naming `path` and the step that failed
    /// (creating, writing, syncing or renaming the temporary file);
    /// [`StateDictError::ReservedName`] for a tensor named `__metadata__`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), StateDictError> {
        save::save(self, path.as_ref())
    }

    /// The safetensors file image in memory, byte-identical to what
    /// [`StateDict::save`] writes (`safetensors.torch.save`).
    ///
    /// # Errors
    /// [`StateDictError::ReservedName`] for a tensor named `__metadata__`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, StateDictError> {
        save::to_bytes(self)
    }

    /// Compares the entries with the parameters a model expects, as
    /// `(name, shape)` pairs (`module.load_state_dict(sd, strict)` without
    /// the copy).
    ///
    /// Returns the [`LoadReport`]: expected names the dict lacks
    /// (`missing`) and entries nothing expects (`unexpected`), both sorted.
    /// With `strict`, either list being non-empty is an error; without, the
    /// caller decides. A shape mismatch is always an error.
    ///
    /// # Errors
    /// [`StateDictError::ShapeMismatch`] naming the first mismatching tensor
    /// (in `expected` order), both shapes, and how many more mismatch;
    /// [`StateDictError::KeyMismatch`] listing missing and unexpected names
    /// when `strict`; [`StateDictError::DuplicateParameter`] if `expected`
    /// names a parameter twice.
    pub fn check_against(
        &self,
        expected: &[(String, Vec<usize>)],
        strict: bool,
    ) -> Result<LoadReport, StateDictError> {
        let file = self.source.as_ref().map(|p| p.display().to_string());
        let mut seen = HashSet::with_capacity(expected.len());
        let mut missing = Vec::new();
        let mut mismatches = Vec::new();
        for (name, shape) in expected {
            if !seen.insert(name.as_str()) {
                return Err(StateDictError::DuplicateParameter {
                    tensor: name.clone(),
                });
            }
            match self.tensors.get(name) {
                None => missing.push(name.clone()),
                Some(t) if t.shape() != shape.as_slice() => mismatches.push((name, shape, t)),
                Some(_) => {}
            }
        }
        if let Some(&(name, shape, t)) = mismatches.first() {
            return Err(StateDictError::ShapeMismatch {
                file,
                tensor: name.clone(),
                expected: shape.clone(),
                found: t.shape().to_vec(),
                more: mismatches.len() - 1,
            });
        }
        missing.sort();
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !seen.contains(k.as_str()))
            .cloned()
            .collect();
        if strict && (!missing.is_empty() || !unexpected.is_empty()) {
            return Err(StateDictError::KeyMismatch {
                file,
                missing,
                unexpected,
            });
        }
        Ok(LoadReport {
            missing,
            unexpected,
        })
    }
}

impl FromIterator<(String, Tensor)> for StateDict {
    fn from_iter<I: IntoIterator<Item = (String, Tensor)>>(iter: I) -> Self {
        StateDict {
            tensors: iter.into_iter().collect(),
            ..StateDict::default()
        }
    }
}

impl Extend<(String, Tensor)> for StateDict {
    fn extend<I: IntoIterator<Item = (String, Tensor)>>(&mut self, iter: I) {
        self.tensors.extend(iter);
    }
}

impl IntoIterator for StateDict {
    type Item = (String, Tensor);
    type IntoIter = std::collections::btree_map::IntoIter<String, Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.into_iter()
    }
}

/// What [`StateDict::check_against`] found besides shape mismatches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Expected parameters with no entry in the state dict, sorted.
    pub missing: Vec<String>,
    /// State-dict entries that no parameter expects, sorted.
    pub unexpected: Vec<String>,
}

impl LoadReport {
    /// Whether every expected parameter was present and nothing else was.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} missing key(s) {:?}, {} unexpected key(s) {:?}",
            self.missing.len(),
            self.missing,
            self.unexpected.len(),
            self.unexpected
        )
    }
}
