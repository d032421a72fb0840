//! What a request must pass before a handler sees it, as middleware: the `Host` header on
//! loopback (DNS rebinding), the client's share (requests in flight per peer address), and
//! the server's budget of request-body bytes in flight (reserved from `Content-Length`, or
//! the body limit without one, before a byte of the body is read).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::routes::Shared;

/// `bytes` in KiB permits, rounded up (semaphores count in `u32`s, and bodies up to 64 GiB
/// in flight fit in them as KiB).
pub fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// Requests in flight per client address.
#[derive(Debug, Default)]
pub struct Clients(Mutex<HashMap<IpAddr, usize>>);

impl Clients {
    /// Counts a request of `ip` unless it already has `max` in flight.
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }

    /// Requests in flight of `ip`.
    pub fn in_flight(&self, ip: IpAddr) -> usize {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip).copied().unwrap_or(0)
    }
}

/// One request of a client; counted out when dropped (the request finished or its client
/// left).
struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Whether `host` (a `Host` header: name or address, with an optional port) names this
/// machine's loopback, or one of `allowed`.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080`
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                n
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        let allowed = vec!["kiln.internal".to_string()];
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST",
            "127.0.0.1",
            "127.0.0.1:9",
            "[::1]",
            "[::1]:8080",
            "kiln.internal:80",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1",
            "",
            "[::2]:80",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn a_client_share_is_counted_out_when_its_requests_end() {
        let clients = Arc::new(Clients::default());
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let a = clients.enter(ip, 2).unwrap();
        let b = clients.enter(ip, 2).unwrap();
        assert!(clients.enter(ip, 2).is_none());
        assert!(clients.enter("10.1.2.4".parse().unwrap(), 2).is_some());
        drop(a);
        assert_eq!(clients.in_flight(ip), 1);
        drop(b);
        assert_eq!(clients.in_flight(ip), 0);
        assert_eq!(kib(1), 1);
        assert_eq!(kib(2048), 2);
        assert_eq!(kib(0), 0);
    }
}
