//! The loaded models, each behind its batching thread: what the routes share. Loading
//! happens once at start, one [`Kind`] after the other (`kinds/`); a model that fails to load
//! stops the server with an error naming it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::Device;
use tokio::sync::Semaphore;

use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::generation::Cancel;
pub use crate::kinds::classify::Classifier;
use crate::kinds::embed::Encoders;
pub use crate::kinds::embed::{Embedded, Embedder};
pub use crate::kinds::generate::Generator;
pub use crate::kinds::image::ImageClassifier;
pub use crate::kinds::recommend::Recommend;
pub use crate::kinds::search::Search;
use crate::kinds::{Extensions, Kind, KindLoader, LoadContext};
use crate::metrics::Metrics;

/// Everything the routes share.
pub struct AppState {
    /// The configuration the server started with.
    pub config: ServeConfig,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The models' device.
    pub device: Device,
    /// Embedding models by name.
    pub embedders: BTreeMap<String, Embedder>,
    /// The search corpus.
    pub search: Option<Search>,
    /// The recommender.
    pub recommend: Option<Recommend>,
    /// Text classifiers by name.
    pub classifiers: BTreeMap<String, Classifier<String>>,
    /// Image classifiers by name.
    pub image_classifiers: BTreeMap<String, ImageClassifier>,
    /// Decoders by name.
    pub generators: BTreeMap<String, Generator>,
    /// Raised when the shutdown's grace period is over: every generation stops.
    pub shutdown: Cancel,
    /// Bytes of request bodies in flight, in KiB permits (`limits.max_body_bytes_in_flight`).
    pub body_budget: Arc<Semaphore>,
    /// Requests in flight per client address.
    pub clients: Arc<crate::admission::Clients>,
    /// When the server started.
    pub started: Instant,
    /// The models of the kinds the program added ([`AppState::load_with`]).
    pub extensions: Extensions,
}

impl AppState {
    /// Loads every model the configuration names (blocking: seconds for large ones).
    ///
    /// # Errors
    /// [`ServeError::Invalid`] from
    /// [`ServeConfig::validate`](crate::config::ServeConfig::validate); [`ServeError::Model`]
    /// naming the model that fails to load; [`ServeError::Core`] for a backend this build lacks.
    pub fn load(config: ServeConfig, metrics: Metrics) -> Result<Self, ServeError> {
        Self::load_with(config, metrics, &[])
    }

    /// [`Self::load`], then the program's own kinds (see [`crate::kinds`]), after the
    /// built-in ones.
    ///
    /// # Errors
    /// As [`Self::load`]; the added kinds' own loading errors.
    pub fn load_with(
        config: ServeConfig,
        metrics: Metrics,
        kinds: &[KindLoader],
    ) -> Result<Self, ServeError> {
        config.validate()?;
        let device = kiln_core::backend::device(&config.backend)?;
        let shutdown = Cancel::new();
        let none = Encoders(BTreeMap::new());
        let mut ctx = LoadContext {
            config: &config,
            device: &device,
            metrics: &metrics,
            shutdown: &shutdown,
            encoders: &none,
        };
        let encoders = Encoders::load(&ctx)?;
        ctx.encoders = &encoders;
        let search = Search::load(&ctx)?;
        let recommend = Recommend::load(&ctx)?;
        let classifiers = Classifier::<String>::load(&ctx)?;
        let image_classifiers = ImageClassifier::load(&ctx)?;
        let generators = Generator::load(&ctx)?;
        let extensions = Extensions::load(kinds, &ctx)?;
        let embedders = Embedder::spawn_all(encoders, &config.batching, &metrics)?;
        let body_budget = Arc::new(Semaphore::new(crate::admission::kib(
            config.limits.max_body_bytes_in_flight,
        )));
        Ok(Self {
            config,
            metrics,
            device,
            embedders,
            search,
            recommend,
            classifiers,
            image_classifiers,
            generators,
            shutdown,
            body_budget,
            clients: Arc::default(),
            started: Instant::now(),
            extensions,
        })
    }
}
