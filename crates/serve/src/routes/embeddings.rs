//! `POST /v1/embeddings` in OpenAI's shape: `{"input": "text" | ["text", ...], "model": "..."}`
//! gives `{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [...]}],
//! "model": "...", "usage": {"prompt_tokens": N, "total_tokens": N}}`. Concurrent requests
//! are batched ([`crate::batcher`]).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, OneOrMany, Shared, pick};
use crate::error::ApiError;

/// The request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    input: OneOrMany,
    #[serde(default)]
    model: Option<String>,
    /// Only `float` is served.
    #[serde(default)]
    encoding_format: Option<String>,
    /// Accepted when equal to the model's dimension.
    #[serde(default)]
    dimensions: Option<usize>,
    /// OpenAI's end-user id (ignored).
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

pub async fn embeddings(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    let (name, embedder) = pick(&state.embedders, req.model.as_deref(), "embedding")?;
    if let Some(f) = req.encoding_format.as_deref().filter(|f| *f != "float") {
        return Err(ApiError::bad_request(format!(
            "encoding_format {f:?} is not served; use \"float\""
        )));
    }
    if let Some(d) = req.dimensions.filter(|d| *d != embedder.dim) {
        return Err(ApiError::bad_request(format!(
            "dimensions {d}: {name} makes {}-dimensional vectors",
            embedder.dim
        )));
    }
    let texts = req.input.checked(&state, "input")?;
    let out = embedder.batcher.submit(texts).await?;
    let tokens: usize = out.iter().map(|(_, n)| n).sum();
    let data: Vec<Value> = out
        .into_iter()
        .enumerate()
        .map(|(i, (v, _))| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}
