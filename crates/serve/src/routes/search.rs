//! `POST /v1/search`: `{"query": "text" | [...], "k": 5}` gives, per query, the `k` corpus
//! texts closest by cosine of their embeddings: `{"model": "...", "results": [[{"index",
//! "score", "text"}, ...], ...]}`. Queries are embedded through the embedder's batcher, after
//! its query prompt when the model has one (EmbeddingGemma; the corpus was embedded with
//! its document prompt).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, OneOrMany, Shared, blocking, checked_k};
use crate::error::ApiError;

/// The request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    query: OneOrMany,
    #[serde(default)]
    k: Option<usize>,
}

pub async fn search(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let search = state
        .search
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no search corpus is loaded"))?;
    let k = checked_k(req.k, 5, &state)?;
    let mut queries = req.query.checked(&state, "query")?;
    if let Some(prompt) = &search.query_prompt {
        queries = queries
            .into_iter()
            .map(|q| format!("{prompt}{q}"))
            .collect();
    }
    let embedder = &state.embedders[&search.embedder];
    let vectors: Vec<Vec<f32>> = embedder
        .batcher
        .submit(queries)
        .await?
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    let shared = state.clone();
    let hits = blocking(move || {
        let search = shared.search.as_ref().expect("checked above");
        search
            .index
            .search(&vectors, k, &shared.device)
            .map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    let results: Vec<Value> = hits
        .into_iter()
        .map(|list| {
            list.into_iter()
                .map(|h| json!({"index": h.index, "score": h.score, "text": h.text}))
                .collect()
        })
        .collect();
    Ok(Json(json!({
        "model": search.embedder,
        "corpus_size": search.index.len(),
        "results": results,
    })))
}
