//! [`StateDictError`]: everything that can go wrong reading, writing or
//! checking a state dict. Every message names the file (when there is one),
//! the tensor and what is wrong, e.g.
//! `model.safetensors: tensor h.0.attn.c_attn.weight: data [1000, 5000) lies
//! past the end of the data section (4096 bytes)`.

use kiln_tensor::TensorError;

/// Errors reading, writing or checking a state dict.
///
/// Variants that come from a file carry `file`, the path as given by the
/// caller (or the label passed to [`StateDict::from_bytes`]); variants about
/// one tensor carry its name. Offsets (`start`, `end`, `data_len`) count bytes
/// from the start of the data section, as safetensors' `data_offsets` do.
///
/// [`StateDict::from_bytes`]: crate::state_dict::StateDict::from_bytes
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDictError {
    /// Opening, measuring or mapping a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The file cannot even hold the 8-byte header-length prefix.
    #[error("{file}: file is {len} bytes, shorter than the 8-byte header-length prefix")]
    TooShort {
        /// The file.
        file: String,
        /// Its length in bytes.
        len: u64,
    },

    /// The header-length prefix is beyond any sane header (100 MB, the
    /// safetensors limit): a corrupt prefix or not a safetensors file.
    #[error(
        "{file}: header length {header_len} bytes exceeds the {limit}-byte limit \
         (corrupt prefix, or not a safetensors file?)"
    )]
    HeaderTooLarge {
        /// The file.
        file: String,
        /// The length read from the first 8 bytes.
        header_len: u64,
        /// The largest accepted header.
        limit: u64,
    },

    /// The header-length prefix points past the end of the file.
    #[error(
        "{file}: header length {header_len} bytes runs past the end of the file: \
         the header would end at byte {}, but the file is {file_len} bytes (truncated?)",
        header_len.saturating_add(8)
    )]
    HeaderPastEnd {
        /// The file.
        file: String,
        /// The length read from the first 8 bytes.
        header_len: u64,
        /// The file's length.
        file_len: u64,
    },

    /// The header bytes are not UTF-8.
    #[error("{file}: header is not UTF-8 (invalid byte at header offset {valid_up_to})")]
    HeaderNotUtf8 {
        /// The file.
        file: String,
        /// Bytes of the header that are valid UTF-8 before the first bad one.
        valid_up_to: usize,
    },

    /// The header is not a JSON object.
    #[error("{file}: header is not a safetensors JSON object: {msg}")]
    HeaderJson {
        /// The file.
        file: String,
        /// The JSON parser's message, with line and column.
        msg: String,
    },

    /// The `__metadata__` entry is not a map of strings to strings.
    #[error("{file}: __metadata__ {msg}")]
    BadMetadata {
        /// The file.
        file: String,
        /// What is wrong with it.
        msg: String,
    },

    /// Two header entries share a name.
    #[error("{file}: tensor {tensor}: the header names this tensor more than once")]
    DuplicateName {
        /// The file.
        file: String,
        /// The repeated name.
        tensor: String,
    },

    /// A tensor entry lacks a field or has one of the wrong JSON type.
    #[error("{file}: tensor {tensor}: {msg}")]
    BadEntry {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// What is wrong with the entry.
        msg: String,
    },

    /// The dtype is not one safetensors defines.
    #[error("{file}: tensor {tensor}: unknown dtype {dtype:?} (not a safetensors dtype)")]
    UnknownDtype {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// The dtype string as written in the header.
        dtype: String,
    },

    /// The dtype is a safetensors dtype that Kiln's tensors cannot hold.
    #[error(
        "{file}: tensor {tensor}: dtype {dtype} is not supported \
         (Kiln reads F32, F64, F16, BF16, I64 and BOOL)"
    )]
    UnsupportedDtype {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// The safetensors dtype name.
        dtype: String,
    },

    /// The shape's element count (or its byte size) does not fit in memory
    /// arithmetic.
    #[error(
        "{file}: tensor {tensor}: shape {shape:?} of {dtype} is too large: its size overflows"
    )]
    ShapeOverflow {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// The shape from the header.
        shape: Vec<usize>,
        /// The safetensors dtype name.
        dtype: String,
    },

    /// `data_offsets` end before they start.
    #[error("{file}: tensor {tensor}: data_offsets [{start}, {end}) end before they start")]
    ReversedOffsets {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },

    /// `data_offsets` reach past the end of the data section.
    #[error(
        "{file}: tensor {tensor}: data [{start}, {end}) lies past the end of the data section \
         ({data_len} bytes)"
    )]
    OffsetsPastEnd {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// Length of the data section.
        data_len: u64,
    },

    /// The byte range does not hold exactly shape × dtype size bytes.
    #[error(
        "{file}: tensor {tensor}: shape {shape:?} of {dtype} needs {expected} bytes, \
         but data [{start}, {end}) holds {}",
        end.saturating_sub(*start)
    )]
    ByteCount {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// The shape from the header.
        shape: Vec<usize>,
        /// The safetensors dtype name.
        dtype: String,
        /// Bytes the shape and dtype need.
        expected: u64,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },

    /// Two tensors claim the same bytes.
    #[error(
        "{file}: tensor {tensor}: data [{start}, {end}) overlaps tensor {other} \
         at [{other_start}, {other_end})"
    )]
    Overlap {
        /// The file.
        file: String,
        /// The tensor found to overlap.
        tensor: String,
        /// Its first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The tensor it overlaps.
        other: String,
        /// The other tensor's first byte.
        other_start: u64,
        /// One past the other tensor's last byte.
        other_end: u64,
    },

    /// Bytes between two tensors belong to neither (safetensors requires the
    /// tensors to tile the data section).
    #[error(
        "{file}: tensor {tensor}: data [{start}, {end}) leaves bytes [{gap_start}, {start}) \
         before it unclaimed by any tensor"
    )]
    Gap {
        /// The file.
        file: String,
        /// The tensor after the gap.
        tensor: String,
        /// Its first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// Where the gap begins (the end of the tensors before it).
        gap_start: u64,
    },

    /// The data section goes on after the last tensor.
    #[error(
        "{file}: bytes [{covered}, {data_len}) at the end of the data section belong to no tensor \
         ({})",
        match last { Some(t) => format!("the last tensor, {t}, ends at byte {covered}"), None => "the header lists no tensors".to_string() }
    )]
    TrailingBytes {
        /// The file.
        file: String,
        /// The tensor with the highest end offset, if any.
        last: Option<String>,
        /// Bytes covered by tensors.
        covered: u64,
        /// Length of the data section.
        data_len: u64,
    },

    /// A `BOOL` tensor holds a byte other than 0 or 1.
    #[error("{file}: tensor {tensor}: element {index} is byte {byte:#04x}, not a bool (0 or 1)")]
    InvalidBool {
        /// The file.
        file: String,
        /// The tensor.
        tensor: String,
        /// Flat index of the bad element.
        index: usize,
        /// Its byte.
        byte: u8,
    },

    /// The `safetensors` crate rejected a file that passed Kiln's own checks
    /// (a second opinion; should not happen).
    #[error("{file}: rejected by the safetensors parser: {msg}")]
    Format {
        /// The file.
        file: String,
        /// The crate's message.
        msg: String,
    },

    /// A tensor name that safetensors reserves.
    #[error("{path}: tensor name {tensor:?} is reserved for safetensors metadata")]
    ReservedName {
        /// The file being written.
        path: String,
        /// The name.
        tensor: String,
    },

    /// Writing a file failed. Any previous file at `path` is untouched.
    #[error("{path}: {action}: {source}")]
    Save {
        /// The file being written.
        path: String,
        /// The step that failed, naming the temporary file where relevant.
        action: String,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A tensor op failed while preparing a tensor.
    #[error("tensor {tensor}: {source}")]
    Tensor {
        /// The tensor.
        tensor: String,
        /// The tensor error.
        source: TensorError,
    },

    /// A tensor's shape differs from the parameter it should load into.
    #[error(
        "{}{tensor}: expected {expected:?}, found {found:?}{}{}",
        file_prefix(file),
        transpose_hint(expected, found),
        more_hint(*more)
    )]
    ShapeMismatch {
        /// The file the state dict came from, if any.
        file: Option<String>,
        /// The tensor.
        tensor: String,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The state dict's shape.
        found: Vec<usize>,
        /// How many further tensors also mismatch.
        more: usize,
    },

    /// A strict check found missing or unexpected keys.
    #[error(
        "{}strict load: {} missing key(s) {}; {} unexpected key(s) {}",
        file_prefix(file),
        missing.len(),
        name_list(missing),
        unexpected.len(),
        name_list(unexpected)
    )]
    KeyMismatch {
        /// The file the state dict came from, if any.
        file: Option<String>,
        /// Expected parameters the state dict lacks.
        missing: Vec<String>,
        /// State-dict entries no parameter expects.
        unexpected: Vec<String>,
    },

    /// The list of expected parameters names one twice (a module bug).
    #[error("{tensor}: the expected-parameter list names this parameter more than once")]
    DuplicateParameter {
        /// The repeated name.
        tensor: String,
    },
}

fn file_prefix(file: &Option<String>) -> String {
    match file {
        Some(f) => format!("{f}: "),
        None => String::new(),
    }
}

fn transpose_hint(expected: &[usize], found: &[usize]) -> &'static str {
    if expected.len() == 2 && expected[0] != expected[1] && found == [expected[1], expected[0]] {
        " (the transpose: GPT-2 checkpoints store Conv1D weights as [in, out])"
    } else {
        ""
    }
}

fn more_hint(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!(" (and {n} more shape mismatch(es))"),
    }
}

/// `[a, b, c]`, or the first ten names and a count of the rest.
fn name_list(names: &[String]) -> String {
    const SHOW: usize = 10;
    let shown: Vec<&str> = names.iter().take(SHOW).map(String::as_str).collect();
    let rest = names.len().saturating_sub(SHOW);
    if rest == 0 {
        format!("[{}]", shown.join(", "))
    } else {
        format!("[{}, … and {rest} more]", shown.join(", "))
    }
}
