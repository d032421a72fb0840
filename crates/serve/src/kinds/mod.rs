//! One module per kind of served model (embeddings, search, recommendations, text and image
//! classification, generation), each loading its models behind the [`Kind`] trait: what
//! `AppState::load` calls after reading the configuration. A kind's module holds what the
//! routes share of it (the model behind its batcher or scheduler, labels, dimensions).
//!
//! A program adds a kind of its own without editing the crate: a type implementing [`Kind`],
//! given to [`AppState::load_with`](crate::AppState::load_with) as a [`KindLoader`] (its
//! models land in [`AppState::extensions`](crate::AppState::extensions)), and its routes given
//! to [`start_with`](crate::start_with), behind the same layers as the built-in ones.

pub mod classify;
pub mod embed;
pub mod generate;
pub mod image;
pub mod recommend;
pub mod search;

use std::any::{Any, TypeId};
use std::collections::HashMap;

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

/// How a program's own kind loads: [`KindLoader::of`].
type LoadAny = fn(&LoadContext<'_>) -> Result<Box<dyn Any + Send + Sync>, ServeError>;

/// A kind added by a program, loaded with the built-in ones; its models are kept in
/// [`Extensions`] under their `Loaded` type.
#[derive(Clone, Copy)]
pub struct KindLoader {
    id: TypeId,
    load: LoadAny,
}

impl KindLoader {
    /// The loader of kind `K`.
    pub fn of<K: Kind>() -> Self
    where
        K::Loaded: Send + Sync + 'static,
    {
        Self {
            id: TypeId::of::<K::Loaded>(),
            load: |ctx| Ok(Box::new(K::load(ctx)?)),
        }
    }
}

/// The models of the kinds a program added, by their `Loaded` type.
#[derive(Default)]
pub struct Extensions(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Extensions {
    /// Loads each kind of `loaders` (a later one of the same `Loaded` type replaces an
    /// earlier one).
    ///
    /// # Errors
    /// The first loader's error.
    pub(crate) fn load(loaders: &[KindLoader], ctx: &LoadContext<'_>) -> Result<Self, ServeError> {
        let mut map = HashMap::new();
        for loader in loaders {
            map.insert(loader.id, (loader.load)(ctx)?);
        }
        Ok(Self(map))
    }

    /// The models of the kind whose `Loaded` type is `T`, if it was loaded.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }
}
