//! The `/v1/recommend` model: a `RecommenderBundle` file, with its titles embedded when it
//! serves new users by text.

use kiln_recsys::{Persist, RecommenderBundle};

use super::{Kind, LoadContext, model_err};
use crate::error::ServeError;

/// The recommender of `/v1/recommend`.
pub struct Recommend {
    /// Model, ids, titles.
    pub bundle: RecommenderBundle,
    /// The embedder of descriptions, with the items' title vectors (normalised).
    pub by_text: Option<(String, Vec<Vec<f32>>)>,
}

impl Kind for Recommend {
    type Loaded = Option<Recommend>;

    /// The recommender bundle, with its titles embedded when it serves new users by text.
    fn load(ctx: &LoadContext<'_>) -> Result<Self::Loaded, ServeError> {
        let LoadContext {
            config, encoders, ..
        } = *ctx;
        let Some(r) = &config.recommend else {
            return Ok(None);
        };
        let path = config.resolve(&r.path)?;
        let bundle = RecommenderBundle::load(&path).map_err(|e| model_err("recommend", e))?;
        let by_text = match &r.embedder {
            None => None,
            Some(name) => {
                let titles: Vec<&str> = bundle.titles().iter().map(String::as_str).collect();
                let vectors = encoders.0[name]
                    .encode(&titles, config.batching.max_batch)
                    .map_err(|e| model_err(name, e))?;
                Some((name.clone(), vectors))
            }
        };
        Ok(Some(Recommend { bundle, by_text }))
    }
}
