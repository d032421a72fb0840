//! The `/v1/search` corpus: a saved index, or a text file (one document per line) embedded
//! at start by one of the configured encoders.

use kiln_nlp::{SemanticIndex, SentenceEncoder};

use super::{Kind, LoadContext, model_err};
use crate::error::ServeError;

/// The corpus of `/v1/search`.
pub struct Search {
    /// The embedder of queries.
    pub embedder: String,
    /// The indexed corpus.
    pub index: SemanticIndex,
    /// The embedder's query prompt (EmbeddingGemma's), put before each query.
    pub query_prompt: Option<String>,
}

impl Kind for Search {
    type Loaded = Option<Search>;

    /// The search corpus: a saved index, or a text file (one document per line) embedded now;
    /// its vectors' width checked against the embedder's.
    fn load(ctx: &LoadContext<'_>) -> Result<Self::Loaded, ServeError> {
        let LoadContext {
            config, encoders, ..
        } = *ctx;
        let Some(s) = &config.search else {
            return Ok(None);
        };
        let index = if let Some(index) = &s.index {
            let path = config.resolve(index)?;
            SemanticIndex::load(&path).map_err(|e| model_err("search", e))?
        } else {
            let path = config.resolve(s.corpus.as_deref().unwrap_or("".as_ref()))?;
            index_corpus(
                &path,
                &encoders.0[&s.embedder],
                &s.embedder,
                config.batching.max_batch,
            )?
        };
        let dim = encoders.0[&s.embedder].dim();
        if index.dim() != dim {
            return Err(model_err(
                "search",
                format!(
                    "the index holds {}-dimensional vectors, {} makes {dim}",
                    index.dim(),
                    s.embedder
                ),
            ));
        }
        Ok(Some(Search {
            embedder: s.embedder.clone(),
            index,
            query_prompt: encoders.0[&s.embedder].prompt("query").map(str::to_owned),
        }))
    }
}

/// The non-empty lines of the text file `path` embedded by `encoder` (`name`) into an index.
fn index_corpus(
    path: &std::path::Path,
    encoder: &SentenceEncoder,
    name: &str,
    max_batch: usize,
) -> Result<SemanticIndex, ServeError> {
    let bytes = std::fs::read(path).map_err(|e| ServeError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let docs: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if docs.is_empty() {
        return Err(model_err(
            "search",
            format!("{}: the corpus has no text", path.display()),
        ));
    }
    SemanticIndex::from_corpus(encoder, &docs, max_batch).map_err(|e| model_err(name, e))
}
