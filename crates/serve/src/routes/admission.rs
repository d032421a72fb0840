//! What a request must pass before a handler sees it, as middleware: the `Host` header on
//! loopback (DNS rebinding), the client's share (requests in flight per peer address), and
//! the server's budget of request-body bytes in flight (reserved from `Content-Length`, or
//! the body limit without one, before a byte of the body is read). What they count is
//! [`crate::admission`]'s.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shared;
use crate::admission::{host_allowed, kib};
use crate::error::ApiError;

/// Refuses, on a loopback server, a `Host` that is not loopback or allowed: a page on
/// another site that resolves its name to 127.0.0.1 (DNS rebinding) cannot reach the API.
pub async fn check_host(State(state): State<Shared>, req: Request, next: Next) -> Response {
    if state.config.is_loopback() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !host.is_some_and(|h| host_allowed(h, &state.config.allowed_hosts)) {
            state.metrics.refused.with_label_values(&["host"]).inc();
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "Host {:?} is not this loopback server's (localhost, 127.0.0.1, [::1]; \
                     more with --allowed-host)",
                    host.unwrap_or("")
                ),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Admits a request within its client's share and the body budget, holding both until the
/// response is made (or the client leaves).
pub async fn admit(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let limits = &state.config.limits;
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let _client = match peer {
        Some(ip) => match state.clients.enter(ip, limits.max_requests_per_client) {
            Some(slot) => Some(slot),
            None => {
                state
                    .metrics
                    .refused
                    .with_label_values(&["client_share"])
                    .inc();
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "this client has {} requests in flight, the most allowed; retry later",
                        limits.max_requests_per_client
                    ),
                )
                .into_response();
            }
        },
        None => None,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    // Larger than the body limit: the limit layer answers 413 without reading it.
    let bytes = match declared {
        Some(n) => n.min(limits.max_body_bytes),
        None if chunked => limits.max_body_bytes,
        None => 0,
    };
    let _body = if bytes > 0 {
        let permits = u32::try_from(kib(bytes)).unwrap_or(u32::MAX);
        match state.body_budget.clone().try_acquire_many_owned(permits) {
            Ok(p) => Some(p),
            Err(_) => {
                state
                    .metrics
                    .refused
                    .with_label_values(&["body_budget"])
                    .inc();
                return ApiError::unavailable(format!(
                    "the server is reading {} bytes of request bodies, its most; retry later",
                    limits.max_body_bytes_in_flight
                ))
                .into_response();
            }
        }
    } else {
        None
    };
    next.run(req).await
}
