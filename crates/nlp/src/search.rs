//! Semantic search: an index of L2-normalised embeddings with their texts, exact cosine
//! top-k by one matrix product per batch of queries, saved and loaded as one binary file
//! (`KILNIDX1`, dimension, count, little-endian `f32` vectors, then the texts as JSON).

use std::path::Path;

use burn::prelude::*;

use crate::error::{NlpError, Result};
use crate::sentence::SentenceEncoder;

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Position of the text in the index.
    pub index: usize,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The indexed text.
    pub text: String,
}

/// Embeddings and their texts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SemanticIndex {
    dim: usize,
    vectors: Vec<f32>,
    texts: Vec<String>,
}

const MAGIC: &[u8; 8] = b"KILNIDX1";

fn normalised(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

impl SemanticIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            ..Self::default()
        }
    }

    /// An index of `texts`, embedded by `encoder` `batch_size` at a time as documents
    /// ([`SentenceEncoder::encode_documents`]: with the model's document prompt when it has
    /// one): what a corpus of passages becomes before it is searched (the `semantic_search`
    /// and `rag` examples, kiln-serve's `/v1/search`). Embed the queries with
    /// [`SentenceEncoder::encode_queries`].
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty corpus; the encoder's errors (a bad batch size, the
    /// tokenizer's failures).
    pub fn from_corpus(
        encoder: &SentenceEncoder,
        texts: &[&str],
        batch_size: usize,
    ) -> Result<Self> {
        if texts.is_empty() {
            return Err(NlpError::Input("the corpus has no text to index".into()));
        }
        let mut index = Self::new(encoder.dim());
        index.add(texts, &encoder.encode_documents(texts, batch_size)?)?;
        Ok(index)
    }

    /// Adds texts with their embeddings (normalised on the way in).
    ///
    /// # Errors
    /// [`NlpError::Input`] for a count of texts other than the embeddings', or an embedding of
    /// another dimension.
    pub fn add(&mut self, texts: &[&str], embeddings: &[Vec<f32>]) -> Result<()> {
        if texts.len() != embeddings.len() {
            return Err(NlpError::Input(format!(
                "{} texts but {} embeddings",
                texts.len(),
                embeddings.len()
            )));
        }
        if let Some((i, e)) = embeddings
            .iter()
            .enumerate()
            .find(|(_, e)| e.len() != self.dim)
        {
            return Err(NlpError::Input(format!(
                "embedding {i} has {} values, the index holds {}-dimensional vectors",
                e.len(),
                self.dim
            )));
        }
        for (t, e) in texts.iter().zip(embeddings) {
            self.vectors.extend(normalised(e));
            self.texts.push((*t).to_owned());
        }
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The `k` most similar entries for each query, best first, computed on `device` as one
    /// `[Q, D] x [D, N]` product.
    ///
    /// # Errors
    /// [`NlpError::Input`] for a query of another dimension or `k = 0`.
    pub fn search(&self, queries: &[Vec<f32>], k: usize, device: &Device) -> Result<Vec<Vec<Hit>>> {
        if let Some(q) = queries.iter().find(|q| q.len() != self.dim) {
            return Err(NlpError::Input(format!(
                "a query has {} values, the index holds {}-dimensional vectors",
                q.len(),
                self.dim
            )));
        }
        if queries.is_empty() || self.is_empty() {
            return Ok(vec![Vec::new(); queries.len()]);
        }
        let (nq, n, d) = (queries.len(), self.len(), self.dim);
        let flat: Vec<f32> = queries.iter().flat_map(|q| normalised(q)).collect();
        let q = Tensor::<1>::from_floats(flat.as_slice(), device).reshape([nq, d]);
        let m = Tensor::<1>::from_floats(self.vectors.as_slice(), device).reshape([n, d]);
        let scores: Vec<f32> = q
            .matmul(m.transpose())
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| NlpError::Input(format!("reading scores: {e:?}")))?;
        Ok(scores
            .chunks(n)
            .map(|row| {
                let mut idx: Vec<usize> = (0..n).collect();
                let by = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
                if k < n && k > 0 {
                    idx.select_nth_unstable_by(k - 1, by);
                }
                idx.truncate(k.min(n));
                idx.sort_by(by);
                idx.into_iter()
                    .map(|i| Hit {
                        index: i,
                        score: row[i],
                        text: self.texts[i].clone(),
                    })
                    .collect()
            })
            .collect())
    }

    /// Writes the index to `path` (atomically).
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be written (the old file is kept).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let texts = serde_json::to_vec(&self.texts).map_err(|e| NlpError::Input(e.to_string()))?;
        kiln_core::train::checkpoint::write_atomic(path.as_ref(), |w| {
            use std::io::Write;
            w.write_all(MAGIC)?;
            w.write_all(&(self.dim as u32).to_le_bytes())?;
            w.write_all(&(self.len() as u64).to_le_bytes())?;
            for v in &self.vectors {
                w.write_all(&v.to_le_bytes())?;
            }
            w.write_all(&texts)
        })?;
        Ok(())
    }

    /// Reads an index written by [`save`](Self::save).
    ///
    /// # Errors
    /// [`NlpError::Io`] when the file cannot be read; [`NlpError::Input`] naming it when it is not
    /// an index or is truncated.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| NlpError::io(path, e))?;
        let bad = |reason: String| NlpError::Input(format!("{}: {reason}", path.display()));
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(bad(
                "not a Kiln semantic index (bad magic or too short)".into()
            ));
        }
        let dim = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let n = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
        let end = n
            .checked_mul(dim)
            .and_then(|c| c.checked_mul(4))
            .and_then(|c| c.checked_add(20))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad(format!("truncated: {n} vectors of {dim} values announced")))?;
        let vectors = bytes[20..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let texts: Vec<String> =
            serde_json::from_slice(&bytes[end..]).map_err(|e| bad(format!("texts: {e}")))?;
        if texts.len() != n {
            return Err(bad(format!("{n} vectors but {} texts", texts.len())));
        }
        if dim == 0 && n > 0 {
            return Err(bad(format!("{n} vectors of 0 values")));
        }
        let vectors: Vec<f32> = vectors;
        if let Some(i) = vectors.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "vector {} holds {} (an index stores finite, normalised vectors)",
                i / dim.max(1),
                vectors[i]
            )));
        }
        Ok(Self {
            dim,
            vectors,
            texts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_top_k_and_round_trip() {
        let device = kiln_core::backend::device("cpu").unwrap();
        let mut index = SemanticIndex::new(2);
        index
            .add(
                &["east", "north", "north-east", "west"],
                &[
                    vec![2.0, 0.0],
                    vec![0.0, 1.0],
                    vec![1.0, 1.0],
                    vec![-1.0, 0.0],
                ],
            )
            .unwrap();
        let hits = index
            .search(&[vec![1.0, 0.1], vec![0.0, -1.0]], 2, &device)
            .unwrap();
        let names: Vec<&str> = hits[0].iter().map(|h| h.text.as_str()).collect();
        assert_eq!(names, vec!["east", "north-east"]);
        assert!((hits[0][0].score - 1.0 / 1.01f32.sqrt()).abs() < 1e-6);
        assert_eq!(hits[1][0].text, "east");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.bin");
        index.save(&path).unwrap();
        assert_eq!(SemanticIndex::load(&path).unwrap(), index);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..30]).unwrap();
        let e = SemanticIndex::load(&path).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // A NaN where a vector value should be is named, not searched with.
        let mut nan = bytes.clone();
        nan[20 + 4 * 3..20 + 4 * 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&path, &nan).unwrap();
        let e = SemanticIndex::load(&path).unwrap_err().to_string();
        assert!(e.contains("vector 1 holds NaN"), "{e}");
        assert!(index.add(&["x"], &[vec![1.0]]).is_err());
        assert!(index.search(&[vec![1.0, 2.0, 3.0]], 1, &device).is_err());
    }
}
