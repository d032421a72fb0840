//! # kiln-serve
//!
//! Kiln's models behind an HTTP API and a web page, on axum and tokio:
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/embeddings` | OpenAI's embeddings shape, any sentence-transformers folder |
//! | `POST /v1/search` | top-k of a corpus embedded at start (or a saved index) |
//! | `POST /v1/recommend` | top-k items for a raw user id, with titles; fallbacks for new users |
//! | `POST /v1/classify` | a text classifier (JSON) or an image classifier (PNG/JPEG upload) |
//! | `POST /v1/chat/completions`, `/v1/completions` | decoders, with server-sent events |
//! | `GET /v1/models`, `/health`, `/metrics` | what is loaded, liveness, Prometheus |
//! | `GET /` | a page: search box, recommendations, image upload |
//!
//! Concurrent requests for one model are batched ([`batcher`]) on a bounded queue (429 when
//! full); bodies, input counts and sizes are limited (413); requests time out (503); an
//! optional bearer token guards `/v1/*` and `/metrics`; every error is a JSON body. The
//! server binds 127.0.0.1 unless told otherwise and shuts down gracefully on SIGTERM.
//!
//! ```no_run
//! # async fn run() -> Result<(), kiln_serve::ServeError> {
//! use kiln_serve::{AppState, Metrics, ServeConfig, config::ModelEntry};
//! let mut config = ServeConfig::new("../shared/models");
//! config.embeddings.push(ModelEntry::new("minilm", "all-MiniLM-L6-v2"));
//! let state = AppState::load(config, Metrics::new())?;
//! let server = kiln_serve::start(state).await?;
//! println!("listening on {}", server.addr());
//! kiln_serve::termination().await;
//! server.shutdown().await.ok();
//! # Ok(()) }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod admission;
pub mod batcher;
pub mod config;
mod error;
pub mod generation;
pub mod kinds;
pub mod metrics;
pub(crate) mod routes;
mod server;
pub mod state;

pub use config::ServeConfig;
pub use error::{ApiError, ServeError};
pub use kinds::{Extensions, Kind, KindLoader, LoadContext};
pub use metrics::Metrics;
pub use routes::Shared;
pub use server::{RunningServer, start, start_with, termination};
pub use state::AppState;
