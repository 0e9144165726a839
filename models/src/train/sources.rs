//! Training text from files: `.txt` (one document per file), and the rows
//! of a text column in `.parquet` (what the hub's datasets are stored as) or
//! `.jsonl` (one JSON object per line) files.
//!
//! Rows are tokenised one by one and the ids concatenated with nothing
//! between them, as transformers' `examples/pytorch/language-modeling/run_clm.py`
//! does (`tokenizer(examples["text"])`, then `group_texts`), so a Kiln run
//! trains on exactly the token stream a transformers run does. Text files
//! keep Kiln's rule: documents joined by `<|endoftext|>`.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;

use crate::tokenizer::Tokenizer;
use crate::{ModelError, Result};

/// How a file's text is read, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A UTF-8 text file: one document.
    Text,
    /// A parquet file: the rows of a string column.
    Parquet,
    /// JSON lines: the rows of a string field.
    JsonLines,
}

impl SourceKind {
    /// The kind of `path`: `.parquet`, `.jsonl` (or `.json` lines), else
    /// text.
    pub fn of(path: &Path) -> SourceKind {
        match path.extension().and_then(|e| e.to_str()) {
            Some("parquet") => SourceKind::Parquet,
            Some("jsonl") => SourceKind::JsonLines,
            _ => SourceKind::Text,
        }
    }
}

fn bad_data(path: &Path, msg: String) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    }
}

/// The strings of column `column` of a parquet file, in row order — what
/// `datasets.load_dataset("parquet", ...)["text"]` holds.
///
/// # Errors
/// [`ModelError::Io`] naming the file for an unreadable or malformed file,
/// a missing column (listing those present), or a row that is not a string.
pub fn parquet_rows(path: &Path, column: &str) -> Result<Vec<String>> {
    let pq = |e: parquet::errors::ParquetError| bad_data(path, e.to_string());
    let file = std::fs::File::open(path).map_err(|error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let reader = SerializedFileReader::new(file).map_err(pq)?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let fields = schema.root_schema().get_fields();
    let Some(field) = fields.iter().find(|f| f.name() == column) else {
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        return Err(bad_data(
            path,
            format!(
                "no column {column:?} (columns: {}); choose one with --text-column",
                names.join(", ")
            ),
        ));
    };
    let projection = Type::group_type_builder("schema")
        .with_fields(vec![field.clone()])
        .build()
        .map_err(pq)?;
    let mut rows = Vec::with_capacity(reader.metadata().file_metadata().num_rows() as usize);
    for (i, row) in reader
        .get_row_iter(Some(projection))
        .map_err(pq)?
        .enumerate()
    {
        let row = row.map_err(pq)?;
        match row.get_column_iter().next().map(|(_, f)| f) {
            Some(Field::Str(s)) => rows.push(s.clone()),
            other => {
                return Err(bad_data(
                    path,
                    format!("row {i}: column {column:?} is {other:?}, not a string"),
                ))
            }
        }
    }
    Ok(rows)
}

/// The strings of field `column` of each line of a JSON-lines file (blank
/// lines skipped).
///
/// # Errors
/// [`ModelError::Io`] naming the file and line for a line that is not a
/// JSON object with a string `column`.
pub fn jsonl_rows(path: &Path, text: &str, column: &str) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| bad_data(path, format!("line {}: {e}", i + 1)))?;
        match v.get(column).and_then(|s| s.as_str()) {
            Some(s) => rows.push(s.to_string()),
            None => {
                return Err(bad_data(
                    path,
                    format!(
                        "line {}: no string field {column:?}; choose one with --text-column",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok(rows)
}

/// One file's text, read.
pub(crate) enum Source {
    /// A text file: one document.
    Document(String),
    /// A table's rows.
    Rows(Vec<String>),
}

/// Reads `path` as its [`SourceKind`] says; `raw` is the file's bytes.
pub(crate) fn read_source(path: &Path, raw: &[u8], column: &str) -> Result<Source> {
    let utf8 = || {
        std::str::from_utf8(raw).map_err(|e| {
            bad_data(
                path,
                format!(
                    "not valid UTF-8 text (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            )
        })
    };
    Ok(match SourceKind::of(path) {
        SourceKind::Text => Source::Document(utf8()?.to_string()),
        SourceKind::JsonLines => Source::Rows(jsonl_rows(path, utf8()?, column)?),
        SourceKind::Parquet => Source::Rows(parquet_rows(path, column)?),
    })
}

/// The token stream of `sources`: text documents joined by
/// `<|endoftext|>`, table rows each encoded and concatenated (run_clm.py).
pub(crate) fn tokenize_sources(sources: &[Source], tok: &Tokenizer) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut last_was_document = false;
    for s in sources {
        match s {
            Source::Document(text) => {
                if last_was_document {
                    ids.push(tok.eot_id());
                }
                ids.extend(tok.encode(text));
                last_was_document = true;
            }
            Source::Rows(rows) => {
                for row in rows {
                    ids.extend(tok.encode(row));
                }
                last_was_document = false;
            }
        }
    }
    ids
}
