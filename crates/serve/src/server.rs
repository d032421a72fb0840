//! Binding, serving and shutdown. Each connection is served by hyper's HTTP/1 with a timer
//! (axum's `serve` has none): a client must send its request headers within
//! `limits.header_timeout_secs`, and an idle keep-alive connection is closed after as long.
//! At most `limits.max_connections` are open; one more gets a 503 and is closed. On SIGTERM
//! (or Ctrl-C) the server stops accepting, lets the requests in flight finish for up to
//! `limits.shutdown_grace_secs`, then stops the generations, closes what is left and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::error::ServeError;
use crate::routes::{self, Shared};
use crate::state::AppState;

/// A server running on the tokio runtime.
pub struct RunningServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The bound address (the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the requests in flight finish within the grace period, closes
    /// the connections left, and returns.
    ///
    /// # Errors
    /// The accept loop's I/O error, if it ended with one.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

/// Binds `state.config.host:port` and serves in the background.
///
/// # Errors
/// [`ServeError::Bind`] naming the address when it cannot be bound.
pub async fn start(state: AppState) -> Result<RunningServer, ServeError> {
    start_with(state, Router::new()).await
}

/// [`start`] with a program's own routes (its kinds', see [`crate::kinds`]), served behind
/// the same layers as the built-in API (token, admission, limits, timeout, metrics).
///
/// # Errors
/// As [`start`].
pub async fn start_with(
    state: AppState,
    routes: Router<Shared>,
) -> Result<RunningServer, ServeError> {
    let addr = format!("{}:{}", state.config.host, state.config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let state = Arc::new(state);
    let app = routes::router_with(state.clone(), routes);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, state, stopped));
    Ok(RunningServer {
        addr: bound,
        stop,
        task,
    })
}

async fn serve(
    listener: TcpListener,
    app: Router,
    state: Shared,
    mut stopped: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let limits = &state.config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs_f64(limits.header_timeout_secs));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait for some to close.
                        eprintln!("kiln-serve: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    state.metrics.refused.with_label_values(&["connections"]).inc();
                    tasks.spawn(refuse(stream, limits.max_connections));
                    continue;
                };
                let app = app.clone();
                let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tasks.spawn(async move {
                    let _ = conn.await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let grace = Duration::from_secs_f64(limits.shutdown_grace_secs);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "kiln-serve: {} connection(s) still open after the {grace:?} grace period: closing",
            tasks.len()
        );
        state.shutdown.cancel();
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
    state.shutdown.cancel();
    Ok(())
}

/// Answers a connection over the cap with a 503 and closes it (within a second: a client that
/// does not read is not waited for).
async fn refuse(mut stream: TcpStream, cap: usize) {
    let body = format!(
        "{{\"error\":{{\"message\":\"the server has {cap} connections open, its most; retry \
         later\",\"type\":\"service_unavailable\",\"code\":503}}}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
