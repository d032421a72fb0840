//! One module per kind of served model (embeddings, search, recommendations, text and image
//! classification, generation), each loading its models behind the [`Kind`] trait: what
//! `AppState::load` calls after reading the configuration. A kind's module holds what the
//! routes share of it (the model behind its batcher or scheduler, labels, dimensions).

pub mod classify;
pub mod embed;
pub mod generate;
pub mod image;
pub mod recommend;
pub mod search;

use burn::prelude::Device;

use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::generation::Cancel;
use crate::metrics::Metrics;

/// What a kind's loader may use.
#[derive(Clone, Copy)]
pub struct LoadContext<'a> {
    /// The configuration (already validated).
    pub config: &'a ServeConfig,
    /// The models' device.
    pub device: &'a Device,
    /// Prometheus metrics (queue depths, batch sizes).
    pub metrics: &'a Metrics,
    /// Raised at the end of the shutdown's grace period.
    pub shutdown: &'a Cancel,
    /// The sentence encoders, for kinds that embed at start (empty while they load).
    pub encoders: &'a embed::Encoders,
}

/// A kind of served model: how its models load.
pub trait Kind {
    /// What the server holds of this kind (all of its models).
    type Loaded;

    /// Loads every model of this kind that the configuration names (blocking).
    ///
    /// # Errors
    /// [`ServeError::Model`] naming a model that fails to load; [`ServeError::Io`] or
    /// [`ServeError::OutsideModels`] for a path that is missing or leaves the models folder.
    fn load(ctx: &LoadContext<'_>) -> Result<Self::Loaded, ServeError>;
}

fn model_err(name: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Model {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}
