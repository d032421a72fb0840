//! `POST /v1/classify`: a text classifier for JSON bodies (`{"input": "text" | [...],
//! "model": "..."}`), an image classifier for PNG/JPEG uploads (a `multipart/form-data` field
//! `image`, with an optional field `model`; or the picture as the body with `Content-Type:
//! image/png` or `image/jpeg` and `?model=`). Each input gets its most probable label and
//! every label's probability: `{"model": "...", "data": [{"index", "label", "score",
//! "scores": {...}}]}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::header;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{OneOrMany, Shared, pick};
use crate::error::ApiError;

/// A text request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    input: OneOrMany,
    #[serde(default)]
    model: Option<String>,
}

/// `?model=` of an upload.
#[derive(Debug, Deserialize)]
pub struct ClassifyQuery {
    #[serde(default)]
    model: Option<String>,
}

pub async fn classify(
    State(state): State<Shared>,
    Query(query): Query<ClassifyQuery>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let super::ApiJson(body) = super::ApiJson::<TextRequest>::from_request(req, &state).await?;
        let (name, model) = pick(&state.classifiers, body.model.as_deref(), "text classifier")?;
        let texts = body.input.checked(&state, "input")?;
        let rows = model.batcher.submit(texts).await?;
        return answer(name, &model.labels, rows);
    }
    let (image, name) = if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        let mut image = None;
        let mut name = query.model;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?
        {
            match field.name() {
                Some("image") => {
                    image = Some(
                        field
                            .bytes()
                            .await
                            .map_err(|e| ApiError::new(e.status(), e.body_text()))?,
                    )
                }
                Some("model") => {
                    name = Some(
                        field
                            .text()
                            .await
                            .map_err(|e| ApiError::new(e.status(), e.body_text()))?,
                    )
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unexpected form field {other:?}; send `image` (and `model`)"
                    )));
                }
            }
        }
        let image = image.ok_or_else(|| ApiError::bad_request("the form has no `image` field"))?;
        (image, name)
    } else if content_type.starts_with("image/png") || content_type.starts_with("image/jpeg") {
        let bytes = Bytes::from_request(req, &state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        (bytes, query.model)
    } else {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {content_type:?}: send application/json (text), \
                 multipart/form-data or image/png, image/jpeg (images)"
            ),
        ));
    };
    if image.is_empty() {
        return Err(ApiError::bad_request("the image is empty"));
    }
    let (name, model) = pick(
        &state.image_classifiers,
        name.as_deref(),
        "image classifier",
    )?;
    // The header first: a picture with more pixels than the model's bound is a 413 before
    // any pixel is decoded. Decoding runs on a blocking task, not the model's thread.
    let decoder = model.decoder;
    let (w, h) = decoder
        .dimensions("upload", &image)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels > decoder.max_pixels() {
        return Err(ApiError::too_large(format!(
            "the picture is {w}x{h} ({pixels} pixels), at most {} for model {name}",
            decoder.max_pixels()
        )));
    }
    let item = super::blocking(move || {
        decoder
            .decode("upload", &image)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    })
    .await?;
    let rows = model.batcher.submit(vec![item]).await?;
    answer(name, &model.labels, rows)
}

fn answer(
    name: &str,
    labels: &[String],
    rows: Vec<Result<Vec<f32>, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut data = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let probs = row.map_err(ApiError::bad_request)?;
        let best = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(j, _)| j);
        let scores: Map<String, Value> = labels
            .iter()
            .zip(&probs)
            .map(|(l, p)| (l.clone(), json!(p)))
            .collect();
        data.push(json!({
            "index": i,
            "label": labels.get(best),
            "score": probs.get(best),
            "scores": scores,
        }));
    }
    Ok(Json(json!({"model": name, "data": data})))
}
