//! `POST /v1/recommend`: `{"user": "196", "k": 10, "description": "..."}` gives the `k` items
//! the saved recommender ranks highest for that user (raw ids, titles, scores), leaving out
//! what they have already seen. An unknown user gets a stated fallback (`"source"`): the
//! items whose titles are closest to `description` when the request has one and the server an
//! embedder for it (`"text"`), else the most popular items (`"popularity"`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, Shared, blocking, checked_k};
use crate::error::ApiError;

/// The request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    user: String,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    description: Option<String>,
}

pub async fn recommend(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<RecommendRequest>,
) -> Result<Json<Value>, ApiError> {
    let rec = state
        .recommend
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no recommender is loaded"))?;
    let k = checked_k(req.k, 10, &state)?;
    let limits = &state.config.limits;
    if req.user.is_empty() || req.user.len() > 256 {
        return Err(ApiError::bad_request("user must be 1-256 bytes"));
    }
    let description = req.description.filter(|d| !d.trim().is_empty());
    if let Some(d) = &description
        && d.len() > limits.max_input_bytes
    {
        return Err(ApiError::too_large(format!(
            "description has {} bytes, at most {} are allowed",
            d.len(),
            limits.max_input_bytes
        )));
    }
    let known = rec.bundle.knows_user(&req.user);
    let (items, source) = match (&rec.by_text, description) {
        (Some((embedder, titles)), Some(d)) if !known => {
            let query = state.embedders[embedder]
                .batcher
                .submit(vec![d])
                .await?
                .remove(0)
                .0;
            let shared = state.clone();
            let items = blocking(move || {
                let (_, titles) = shared
                    .recommend
                    .as_ref()
                    .and_then(|r| r.by_text.as_ref())
                    .expect("checked");
                let scores: Vec<f32> = titles.iter().map(|t| cosine(&query, t)).collect();
                Ok(shared
                    .recommend
                    .as_ref()
                    .expect("checked")
                    .bundle
                    .rank_by(&scores, k))
            })
            .await?;
            (items, "text")
        }
        _ => {
            let shared = state.clone();
            let user = req.user.clone();
            blocking(move || {
                let (items, source) = shared
                    .recommend
                    .as_ref()
                    .expect("checked")
                    .bundle
                    .recommend(&user, k);
                Ok((
                    items,
                    if source == kiln_recsys::Source::Model {
                        "model"
                    } else {
                        "popularity"
                    },
                ))
            })
            .await?
        }
    };
    Ok(Json(json!({
        "user": req.user,
        "known_user": known,
        "source": source,
        "items": items,
    })))
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let d = n(a) * n(b);
    if d > 0.0 { dot / d } else { 0.0 }
}
