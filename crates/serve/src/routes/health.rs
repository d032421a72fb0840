//! `GET /health` (always open: load balancers probe it), `GET /metrics` (Prometheus text
//! format) and `GET /v1/models` (what is loaded, OpenAI's list shape plus each model's kind).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::Shared;

pub async fn health(State(state): State<Shared>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "uptime_secs": state.started.elapsed().as_secs_f64(),
    }))
}

pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub async fn models(State(state): State<Shared>) -> Json<Value> {
    let mut data = Vec::new();
    let mut add = |id: &str, kind: &str| {
        data.push(json!({"id": id, "object": "model", "owned_by": "kiln", "kind": kind}));
    };
    for name in state.embedders.keys() {
        add(name, "embedding");
    }
    for name in state.classifiers.keys() {
        add(name, "text_classifier");
    }
    for name in state.image_classifiers.keys() {
        add(name, "image_classifier");
    }
    for name in state.generators.keys() {
        add(name, "generator");
    }
    Json(json!({
        "object": "list",
        "data": data,
        "search": state.search.as_ref().map(|s| json!({"embedder": s.embedder, "corpus_size": s.index.len()})),
        "recommend": state.recommend.as_ref().map(|r| json!({
            "users": r.bundle.num_users(),
            "items": r.bundle.num_items(),
            "by_text": r.by_text.is_some(),
        })),
    }))
}
