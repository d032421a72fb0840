//! The HTTP routes and the layers around them, outermost first: metrics, the in-flight gauge
//! and JSON error bodies; handler panics caught into a JSON 500; the `Host` check and the
//! admission of the request (client share, body budget, [`crate::admission`]); the body
//! limit; the request timeout; the bearer token (on `/v1/*` and `/metrics`).

mod admission;
mod classify;
mod completions;
mod embeddings;
mod health;
mod page;
mod recommend;
mod search;
mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// Shared state of every handler.
pub type Shared = Arc<AppState>;

/// The router with every route and layer, and a program's own routes (its kinds'), among the API's: behind the token and
/// every layer the built-in routes have.
pub fn router_with(state: Shared, extra: Router<Shared>) -> Router {
    let limit = state.config.limits.max_body_bytes;
    let api = Router::new()
        .route("/v1/models", get(health::models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/search", post(search::search))
        .route("/v1/recommend", post(recommend::recommend))
        .route("/v1/classify", post(classify::classify))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/metrics", get(health::metrics))
        .merge(extra)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(page::index))
        .route("/static/{file}", get(page::asset))
        .route("/health", get(health::health))
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), timeout))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admission::admit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admission::check_host,
        ))
        .layer(catch_panics())
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Turns a handler's panic into a JSON 500 for that request; the server goes on.
fn catch_panics()
-> tower_http::catch_panic::CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> Response> {
    fn answer(panic: Box<dyn std::any::Any + Send>) -> Response {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        ApiError::internal(format!("the handler failed: {what}")).into_response()
    }
    tower_http::catch_panic::CatchPanicLayer::custom(answer as fn(_) -> _)
}

/// Counts a request in `kiln_requests_in_flight` for as long as it lives: the decrement runs
/// when the request ends or its client leaves (the future dropped).
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

/// Checks `Authorization: Bearer <token>` when the server has a token.
async fn require_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.config.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(req).await
}

/// Equality in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers 503 when the handler takes longer than `limits.timeout_secs` (streams: until their
/// headers).
async fn timeout(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let secs = state.config.limits.timeout_secs;
    match tokio::time::timeout(Duration::from_secs_f64(secs), next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::unavailable(format!("the request took longer than {secs} s")).into_response()
        }
    }
}

/// Counts and times every request, and gives error responses that lack one a JSON body
/// (the body-limit layer's 413, a method not allowed).
async fn observe(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| route_of(req.uri().path()), |p| p.as_str().to_owned());
    let started = Instant::now();
    let m = &state.metrics;
    let in_flight = InFlight::enter(&m.in_flight);
    let response = next.run(req).await;
    drop(in_flight);
    let status = response.status();
    let response = if (status.is_client_error() || status.is_server_error())
        && !response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
    {
        let body = axum::body::to_bytes(response.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        };
        ApiError::new(status, message).into_response()
    } else {
        response
    };
    m.latency
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

/// The route label of a path no route matched (kept to a fixed set).
fn route_of(path: &str) -> String {
    const KNOWN: [&str; 10] = [
        "/",
        "/health",
        "/metrics",
        "/v1/models",
        "/v1/embeddings",
        "/v1/search",
        "/v1/recommend",
        "/v1/classify",
        "/v1/chat/completions",
        "/v1/completions",
    ];
    KNOWN
        .iter()
        .find(|k| **k == path)
        .map_or("unmatched", |k| k)
        .to_string()
}

/// `Json<T>` whose rejections (no JSON content type, bad syntax, wrong types, too large) are
/// [`ApiError`]s with a JSON body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        // Every request body is a JSON object: serde would read a top-level array into a
        // struct's fields by position (`["hello", "model"]`).
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(ApiError::bad_request(
                "the body must be a JSON object ({...})",
            ));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `application/json` or `application/*+json`, with any parameters.
fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn json_rejection(r: JsonRejection) -> ApiError {
    ApiError::new(r.status(), r.body_text())
}

/// One text or a list of them (OpenAI's `input`).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The texts, checked against the limits: at least one, none empty, at most
    /// `max_inputs`, each at most `max_input_bytes`.
    pub fn checked(self, state: &AppState, field: &str) -> Result<Vec<String>, ApiError> {
        let texts = match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        };
        let l = &state.config.limits;
        if texts.is_empty() {
            return Err(ApiError::bad_request(format!("{field} is an empty list")));
        }
        if texts.len() > l.max_inputs {
            return Err(ApiError::too_large(format!(
                "{field} has {} texts, at most {} are allowed",
                texts.len(),
                l.max_inputs
            )));
        }
        for (i, t) in texts.iter().enumerate() {
            if t.trim().is_empty() {
                return Err(ApiError::bad_request(format!("{field}[{i}] is empty")));
            }
            if t.len() > l.max_input_bytes {
                return Err(ApiError::too_large(format!(
                    "{field}[{i}] has {} bytes, at most {} are allowed",
                    t.len(),
                    l.max_input_bytes
                )));
            }
        }
        Ok(texts)
    }
}

/// Looks `name` up among `models` (the only model when `name` is absent and there is one).
pub fn pick<'a, T>(
    models: &'a std::collections::BTreeMap<String, T>,
    name: Option<&str>,
    kind: &str,
) -> Result<(&'a str, &'a T), ApiError> {
    match name {
        Some(n) => {
            crate::config::check_name(n).map_err(ApiError::bad_request)?;
            models
                .get_key_value(n)
                .map(|(k, v)| (k.as_str(), v))
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no {kind} model named {n:?} (loaded: {})",
                        names(models)
                    ))
                })
        }
        None if models.len() == 1 => models
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| ApiError::not_found(format!("no {kind} model is loaded"))),
        None if models.is_empty() => Err(ApiError::not_found(format!("no {kind} model is loaded"))),
        None => Err(ApiError::bad_request(format!(
            "model is required: several {kind} models are loaded ({})",
            names(models)
        ))),
    }
}

fn names<T>(models: &std::collections::BTreeMap<String, T>) -> String {
    models.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// `k` checked against 1..=max_k (`default` when absent).
pub fn checked_k(k: Option<usize>, default: usize, state: &AppState) -> Result<usize, ApiError> {
    let k = k.unwrap_or(default);
    let max = state.config.limits.max_k;
    if k == 0 {
        return Err(ApiError::bad_request("k must be at least 1"));
    }
    if k > max {
        return Err(ApiError::too_large(format!(
            "k is {k}, at most {max} is allowed"
        )));
    }
    Ok(k)
}

/// Runs blocking model work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the worker failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_handler_panic_is_a_json_500_and_the_router_goes_on() {
        async fn boom() -> &'static str {
            panic!("injected")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "ok" }))
            .layer(catch_panics());
        let call = |path: &str| {
            let req = axum::http::Request::get(path).body(Body::empty()).unwrap();
            app.clone().oneshot(req)
        };
        let r = call("/boom").await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], 500);
        assert!(v["error"]["message"].as_str().unwrap().contains("injected"));
        assert_eq!(call("/fine").await.unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for bad in ["text/plain", "application/jsonx", "", "json"] {
            assert!(!is_json(bad), "{bad}");
        }
    }
}
