//! Named tensors saved and loaded as safetensors files (placeholder: being
//! written on the `state-dict` branch).

/// Errors reading or writing a state dict.
#[derive(Debug, thiserror::Error)]
pub enum StateDictError {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}
