//! Tokenizers: text to token ids and back. [`Tokenizer`] is the interface every text model
//! takes: encode, decode, truncate, pad into batches with attention masks. Three
//! implementations: [`HfTokenizer`] reads a Hugging Face `tokenizer.json` through the
//! `tokenizers` crate, so that ids are exactly those the Python pipeline produces;
//! [`WordTokenizer`](crate::vocab::WordTokenizer) and
//! [`CharTokenizer`](crate::vocab::CharTokenizer) build their vocabulary from a corpus.

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

impl Encoding {
    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Keeps the first `max_len` tokens.
    pub fn truncate(&mut self, max_len: usize) {
        self.ids.truncate(max_len);
        self.tokens.truncate(max_len);
    }
}

/// Token-id sequences padded to one length, with their attention mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    /// Row-major `[rows, len]` ids, padding filled with the pad id.
    pub ids: Vec<u32>,
    /// Row-major `[rows, len]`, true on real tokens.
    pub mask: Vec<bool>,
    /// The number of sequences.
    pub rows: usize,
    /// The padded length.
    pub len: usize,
}

impl PaddedBatch {
    /// Pads `sequences` with `pad_id` to the longest (at least 1), truncating each to `max_len`
    /// tokens when given.
    pub fn new(sequences: &[&[u32]], pad_id: u32, max_len: Option<usize>) -> Self {
        let limit = max_len.unwrap_or(usize::MAX);
        let len = sequences
            .iter()
            .map(|s| s.len().min(limit))
            .max()
            .unwrap_or(0)
            .max(1);
        let rows = sequences.len();
        let mut ids = vec![pad_id; rows * len];
        let mut mask = vec![false; rows * len];
        for (row, seq) in sequences.iter().enumerate() {
            for (t, &id) in seq.iter().take(len).enumerate() {
                ids[row * len + t] = id;
                mask[row * len + t] = true;
            }
        }
        Self {
            ids,
            mask,
            rows,
            len,
        }
    }

    /// The ids and mask as tensors.
    ///
    /// # Shapes
    /// - output: ids `[rows, len]`, mask `[rows, len]`
    pub fn to_tensors(
        &self,
        device: &burn::tensor::Device,
    ) -> (
        burn::tensor::Tensor<2, burn::tensor::Int>,
        burn::tensor::Tensor<2, burn::tensor::Bool>,
    ) {
        use burn::tensor::{Bool, Int, Tensor, TensorData};
        let ids: Vec<i64> = self.ids.iter().map(|&i| i as i64).collect();
        let shape = [self.rows, self.len];
        (
            Tensor::<1, Int>::from_ints(ids.as_slice(), device).reshape(shape),
            Tensor::<2, Bool>::from_bool(TensorData::new(self.mask.clone(), shape), device),
        )
    }
}

/// Text to token ids and back.
pub trait Tokenizer: Send + Sync {
    /// Encodes one text (with the model's special tokens, truncated to the configured length).
    ///
    /// # Errors
    /// [`NlpError::Tokenizer`] when the text cannot be encoded.
    fn encode(&self, text: &str) -> Result<Encoding>;

    /// Ids back to text; special tokens (padding, begin and end of sequence) are left out.
    ///
    /// # Errors
    /// [`NlpError::Tokenizer`] for an id past the vocabulary.
    fn decode(&self, ids: &[u32]) -> Result<String>;

    /// Encodes several texts.
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }

    /// Size of the vocabulary.
    fn vocab_size(&self) -> usize;

    /// The id used to pad sequences.
    fn pad_id(&self) -> u32;

    /// Encodes `texts`, truncates each to `max_len` tokens when given, and pads them into one
    /// batch with its attention mask.
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    fn encode_padded(&self, texts: &[&str], max_len: Option<usize>) -> Result<PaddedBatch> {
        let encodings = self.encode_batch(texts)?;
        let ids: Vec<&[u32]> = encodings.iter().map(|e| e.ids.as_slice()).collect();
        Ok(PaddedBatch::new(&ids, self.pad_id(), max_len))
    }
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
    ///
    /// # Errors
    /// [`NlpError::Tokenizer`] naming the file when it cannot be read or parsed.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(NlpError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no tokenizer.json here"),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| NlpError::Tokenizer {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_inner(inner, path, None)
    }

    /// A tokenizer from the text of a `tokenizer.json` built elsewhere (a GGUF file's
    /// vocabulary); `origin` names it in errors, `pad_id` overrides the padding id.
    ///
    /// # Errors
    /// [`NlpError::Tokenizer`] naming `origin` when the JSON does not make a tokenizer.
    pub fn from_json(json: &str, origin: &Path, pad_id: Option<u32>) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json.parse().map_err(|e| NlpError::Tokenizer {
            path: origin.to_owned(),
            reason: format!("{e}"),
        })?;
        Self::from_inner(inner, origin, pad_id)
    }

    fn from_inner(
        mut inner: tokenizers::Tokenizer,
        path: &Path,
        pad_id: Option<u32>,
    ) -> Result<Self> {
        inner.with_padding(None);
        let pad_id = pad_id
            .or_else(|| inner.token_to_id("[PAD]"))
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
    ///
    /// # Errors
    /// [`NlpError::Tokenizer`] when the tokenizer refuses the length.
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

    /// Encodes `text` without adding the tokenizer's special tokens (as transformers encodes
    /// a rendered chat template, which writes its own).
    ///
    /// # Errors
    /// [`NlpError::Tokenizer`] when the text cannot be encoded.
    pub fn encode_plain(&self, text: &str) -> Result<Encoding> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special_tokens: bool) -> Result<Encoding> {
        let e = self
            .inner
            .encode(text, special_tokens)
            .map_err(|e| NlpError::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot encode {text:?}: {e}"),
            })?;
        Ok(Encoding {
            ids: e.get_ids().to_vec(),
            tokens: e.get_tokens().to_vec(),
        })
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Encoding> {
        self.encode_with(text, true)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| NlpError::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot decode {ids:?}: {e}"),
            })
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn pad_id(&self) -> u32 {
        self.pad_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_batch_truncates_pads_and_masks() {
        let b = PaddedBatch::new(&[&[5, 6, 7, 8], &[3]], 0, Some(3));
        assert_eq!((b.rows, b.len), (2, 3));
        assert_eq!(b.ids, vec![5, 6, 7, 3, 0, 0]);
        assert_eq!(b.mask, vec![true, true, true, true, false, false]);
        let empty = PaddedBatch::new(&[&[]], 9, None);
        assert_eq!((empty.ids, empty.mask), (vec![9], vec![false]));
    }
}
