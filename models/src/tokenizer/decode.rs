//! Turning token ids back into text, all at once or token by token.

use super::error::TokenizerError;
use super::Tokenizer;

impl Tokenizer {
    /// The raw bytes of token `id`, or `None` if the vocabulary has no such id.
    ///
    /// A token may hold part of a multi-byte character, so its bytes need not
    /// be valid UTF-8 on their own.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let t = &*self.inner;
        let i = id as usize;
        t.id_to_token.get(i)?.as_ref()?;
        let (start, end) = (t.token_offsets[i] as usize, t.token_offsets[i + 1] as usize);
        Some(&t.token_bytes[start..end])
    }

    fn bytes_or_err(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.token_bytes(id).ok_or(TokenizerError::UnknownId {
            id,
            vocab_size: self.vocab_size(),
        })
    }

    /// The bytes that `ids` stand for, concatenated.
    ///
    /// # Errors
    /// [`TokenizerError::UnknownId`] if an id is not in the vocabulary.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.bytes_or_err(id)?);
        }
        Ok(out)
    }

    /// The text that `ids` stand for; `decode(&encode(s)) == s` for every
    /// string `s`. `<|endoftext|>` decodes to its text.
    ///
    /// # Errors
    /// [`TokenizerError::UnknownId`] if an id is not in the vocabulary, and
    /// [`TokenizerError::InvalidUtf8`] if the ids do not form whole UTF-8
    /// characters (for example a sampled sequence that stops in the middle of
    /// an emoji); [`Tokenizer::decode_lossy`] accepts those.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        String::from_utf8(self.decode_bytes(ids)?).map_err(|e| TokenizerError::InvalidUtf8 {
            valid_up_to: e.utf8_error().valid_up_to(),
        })
    }

    /// Like [`Tokenizer::decode`], but bytes that do not form valid UTF-8
    /// become U+FFFD (as `String::from_utf8_lossy` does), which is what
    /// Hugging Face `tokenizers` returns.
    ///
    /// # Errors
    /// [`TokenizerError::UnknownId`] if an id is not in the vocabulary.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A decoder for ids that arrive one at a time, e.g. while sampling.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self)
    }
}

/// Decodes ids one at a time and hands out text as soon as it is complete.
///
/// A GPT-2 token can end in the middle of a multi-byte UTF-8 character (most
/// emoji and CJK characters take two or more tokens). The stream decoder
/// holds such incomplete bytes back until the tokens that complete them
/// arrive, so every chunk it returns is whole characters. Bytes that can
/// never become valid UTF-8 come out as U+FFFD, so the chunks of
/// [`StreamDecoder::push`] followed by [`StreamDecoder::finish`] always add up
/// to [`Tokenizer::decode_lossy`] of the same ids, and to
/// [`Tokenizer::decode`] whenever that succeeds.
///
/// ```
/// use kiln_models::tokenizer::Tokenizer;
/// let tok = Tokenizer::gpt2();
/// let ids = tok.encode("Hi 👋!");
/// let mut stream = tok.stream_decoder();
/// let mut text = String::new();
/// for &id in &ids {
///     text.push_str(stream.push(id)?);
/// }
/// text.push_str(stream.finish());
/// assert_eq!(text, "Hi 👋!");
/// # Ok::<(), kiln_models::tokenizer::TokenizerError>(())
/// ```
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    /// Bytes of an incomplete character, held back.
    pending: Vec<u8>,
    /// The chunk last handed out.
    out: String,
}

impl StreamDecoder {
    /// A decoder for `tokenizer`'s ids, with nothing held back.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        StreamDecoder {
            tokenizer: tokenizer.clone(),
            pending: Vec::with_capacity(8),
            out: String::new(),
        }
    }

    /// Adds one token and returns the text it completes: possibly empty (the
    /// token ends inside a character), possibly including characters begun
    /// by earlier tokens.
    ///
    /// # Errors
    /// [`TokenizerError::UnknownId`] if `id` is not in the vocabulary; the
    /// decoder's state is then unchanged.
    pub fn push(&mut self, id: u32) -> Result<&str, TokenizerError> {
        let bytes = self.tokenizer.bytes_or_err(id)?;
        self.out.clear();
        if self.pending.is_empty() {
            // Fast path: a token of whole characters needs no buffering.
            if let Ok(s) = std::str::from_utf8(bytes) {
                self.out.push_str(s);
                return Ok(&self.out);
            }
        }
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    self.out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    let good = &self.pending[start..start + valid];
                    self.out
                        .push_str(std::str::from_utf8(good).expect("validated prefix"));
                    start += valid;
                    match e.error_len() {
                        // Bytes that no continuation can repair.
                        Some(n) => {
                            self.out.push(char::REPLACEMENT_CHARACTER);
                            start += n;
                        }
                        // An incomplete character at the end: hold it back.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(&self.out)
    }

    /// Whether bytes of an incomplete character are being held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: returns U+FFFD if an incomplete character was held
    /// back (the ids stopped in the middle of it), else an empty string, and
    /// leaves the decoder ready for a new stream.
    pub fn finish(&mut self) -> &str {
        self.out.clear();
        if !self.pending.is_empty() {
            self.pending.clear();
            self.out.push(char::REPLACEMENT_CHARACTER);
        }
        &self.out
    }
}
