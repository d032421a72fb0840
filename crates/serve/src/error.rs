//! Errors: [`ServeError`] for start-up (config, loading, binding), and [`ApiError`], the JSON
//! body every failed request gets, in OpenAI's shape:
//! `{"error": {"message": "...", "type": "invalid_request_error", "code": 400}}`.

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The config file does not parse.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A config value or flag out of range.
    #[error("{field} {reason}")]
    Invalid {
        /// The field or flag.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// A model path that would leave the models folder.
    #[error("{path}: refused, {reason}")]
    OutsideModels {
        /// The path as given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A model could not be loaded.
    #[error("model {name}: {reason}")]
    Model {
        /// The model's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error of the training engine (the backend's device).
    #[error(transparent)]
    Core(#[from] kiln_core::Error),
}

/// A request's failure: its status and message, written as a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What was wrong, for the client.
    pub message: String,
}

impl ApiError {
    /// Any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed or its values are out of range.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: no such model.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 413: more inputs, or longer ones, than the limits allow.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 429: the model's queue is full.
    pub fn overloaded(model: &str) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("model {model}: the queue is full, retry later"),
        )
    }

    /// 503: the request took longer than the timeout, or the server is stopping.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500: the model failed on valid input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// OpenAI's error type for the status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "code": self.status.as_u16(),
            }
        });
        (self.status, Json(body)).into_response()
    }
}
