//! # kiln-recsys
//!
//! Recommenders: the seed's collaborative, content-based and hybrid filtering, and the models
//! practitioners compare (Surprise's baselines, neighbourhood models, SVD and SVD++; BPR and
//! LightFM-style WARP for implicit feedback; neural models on Burn).
//!
//! - [`data`]: interaction files (MovieLens `u.data`, `ratings.csv`, any delimited file with a
//!   column mapping), dense id maps, MovieLens item and user features, splits;
//! - [`models`]: one file per model family, all behind the same API;
//! - [`Fit`] / [`Recommender`] / [`Persist`]: `fit`, `predict`, `recommend` (seen items left
//!   out), `similar_items`, `save` / `load`;
//! - [`metrics`] and [`eval`]: RMSE, MAE, precision / recall / NDCG / MAP / hit rate @k, MRR,
//!   coverage; cross-validation;
//! - [`retrieval`]: exact (GEMM) and approximate (HNSW) top-k over all items for models whose
//!   score is an inner product, with recall@k of the one against the other;
//! - [`batch`]: (user, item, rating) batches for the Burn models;
//! - [`bundle`]: a fitted model with its raw ids and item titles in one file, for serving
//!   (popularity fallback for unknown users).
//!
//! ```no_run
//! use kiln_recsys::{Fit, Recommender, data::{MovieLens, k_fold}, models::SvdConfig};
//! # fn main() -> kiln_recsys::Result<()> {
//! let ml = MovieLens::load("ml-100k")?;
//! let fold = &k_fold(&ml.ratings, 5, 0)?[0];
//! let model = SvdConfig::new().fit(&fold.train)?;
//! let rmse = kiln_recsys::eval::rating_scores(&model, &fold.test).rmse;
//! let top10 = model.recommend(0, 10);
//! # Ok(()) }
//! ```
//!
//! ## Cargo features
//!
//! Backends for the Burn models, forwarded to `kiln-core`: `flex` (default), `ndarray`,
//! `wgpu`, `cuda`.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod batch;
pub mod bundle;
pub mod data;
mod error;
pub mod eval;
pub mod metrics;
pub mod models;
mod recommender;
pub mod retrieval;
mod trainset;

pub use batch::{Rating, RatingBatch, RatingBatcher};
pub use bundle::{BundleItem, RecommenderBundle, Source};
pub use error::{RecsysError, Result};
pub use models::{BiasedMf, BiasedMfConfig};
pub use recommender::{DotForm, Fit, Persist, Recommender, Scored, top_k};
pub use trainset::TrainSet;
