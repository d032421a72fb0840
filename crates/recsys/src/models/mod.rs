//! Recommender models, one file per model.

mod mf;

pub use mf::{BiasedMf, BiasedMfConfig};
