//! Sentence encoders (`[[embeddings]]`): loaded first, since search and the recommender embed
//! with them at start ([`Encoders`]), then each moved to its batcher's thread
//! (`Embedder::spawn_all`).

use std::collections::BTreeMap;

use kiln_nlp::SentenceEncoder;

use super::{Kind, LoadContext, model_err};
use crate::batcher::Batcher;
use crate::config::Batching;
use crate::error::ServeError;
use crate::metrics::Metrics;

/// An embedding: the vector and the number of tokens it was computed from.
pub type Embedded = (Vec<f32>, usize);

/// A sentence encoder behind its batcher.
#[derive(Clone)]
pub struct Embedder {
    /// Requests' texts in, vectors and token counts out.
    pub batcher: Batcher<String, Embedded>,
    /// Dimension of the vectors.
    pub dim: usize,
}

/// The sentence encoders of the configuration, by name, before they go to their threads.
pub struct Encoders(pub BTreeMap<String, SentenceEncoder>);

impl Kind for Encoders {
    type Loaded = Encoders;

    /// The sentence encoders of `config`, by name (used at start for the corpus and the titles,
    /// then moved to their batchers' threads).
    fn load(ctx: &LoadContext<'_>) -> Result<Self::Loaded, ServeError> {
        let LoadContext { config, device, .. } = *ctx;
        let mut encoders = BTreeMap::new();
        for m in &config.embeddings {
            let dir = config.resolve(&m.path)?;
            let encoder = SentenceEncoder::load(&dir, device).map_err(|e| model_err(&m.name, e))?;
            encoders.insert(m.name.clone(), encoder);
        }
        Ok(Encoders(encoders))
    }
}

impl Embedder {
    /// Each encoder on its batcher's thread.
    pub(crate) fn spawn_all(
        encoders: Encoders,
        batching: &Batching,
        metrics: &Metrics,
    ) -> Result<BTreeMap<String, Embedder>, ServeError> {
        let mut embedders = BTreeMap::new();
        for (name, encoder) in encoders.0 {
            let dim = encoder.dim();
            let max_batch = batching.max_batch;
            let batcher = Batcher::spawn(&name, batching, metrics, move |texts: Vec<String>| {
                // Tokenized once (the counts are the usage), longest first so that each
                // forward pass pads little, as `SentenceEncoder::encode` does.
                let ids = texts
                    .iter()
                    .map(|t| encoder.tokenize(t).map(|e| e.ids))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let mut order: Vec<usize> = (0..ids.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
                let mut out = vec![(Vec::new(), 0); ids.len()];
                for chunk in order.chunks(max_batch) {
                    let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                    let vectors = encoder.embed_ids(&batch).map_err(|e| e.to_string())?;
                    for (&i, v) in chunk.iter().zip(vectors) {
                        out[i] = (v, ids[i].len());
                    }
                }
                Ok(out)
            })
            .map_err(|e| model_err(&name, e))?;
            embedders.insert(name, Embedder { batcher, dim });
        }
        Ok(embedders)
    }
}
