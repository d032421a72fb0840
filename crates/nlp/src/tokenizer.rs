//! Tokenizers: text to token ids. [`Tokenizer`] is the interface every text model takes;
//! [`HfTokenizer`] reads a Hugging Face `tokenizer.json` through the `tokenizers` crate, so
//! that ids are exactly those the Python pipeline produces.

use std::path::{Path, PathBuf};

use crate::error::{NlpError, Result};

/// Token ids of one text, with the tokens they stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// The tokens as text.
    pub tokens: Vec<String>,
}

/// Text to token ids.
pub trait Tokenizer: Send + Sync {
    /// Encodes one text (with the model's special tokens, truncated to the configured length).
    fn encode(&self, text: &str) -> Result<Encoding>;

    /// Encodes several texts.
    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// Size of the vocabulary.
    fn vocab_size(&self) -> usize;

    /// The id used to pad sequences.
    fn pad_id(&self) -> u32;
}

/// A Hugging Face `tokenizer.json` (WordPiece, BPE, Unigram; normalisers and pre-tokenizers as
/// the file says).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    pad_id: u32,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl HfTokenizer {
    /// Reads `path` (a `tokenizer.json`). Padding is left to the batcher; truncation is off
    /// until [`with_max_length`](Self::with_max_length).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(NlpError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json here"),
            ));
        }
        let mut inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| NlpError::Tokenizer {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        inner.with_padding(None);
        let pad_id = inner
            .token_to_id("[PAD]")
            .or_else(|| inner.token_to_id("<pad>"))
            .unwrap_or(0);
        let mut tok = Self {
            inner,
            path: path.to_owned(),
            pad_id,
        };
        tok.set_truncation(None)?;
        Ok(tok)
    }

    /// Truncates encodings to `max_length` tokens, special tokens included.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.set_truncation(Some(max_length))?;
        Ok(self)
    }

    fn set_truncation(&mut self, max_length: Option<usize>) -> Result<()> {
        let params = max_length.map(|max_length| tokenizers::TruncationParams {
            max_length,
            ..Default::default()
        });
        self.inner
            .with_truncation(params)
            .map_err(|e| NlpError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// The id of `token`, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Encoding> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| NlpError::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot encode {text:?}: {e}"),
            })?;
        Ok(Encoding {
            ids: e.get_ids().to_vec(),
            tokens: e.get_tokens().to_vec(),
        })
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn pad_id(&self) -> u32 {
        self.pad_id
    }
}
