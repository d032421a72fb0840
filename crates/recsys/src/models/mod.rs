//! Recommender models, one file per model family.
//!
//! Classical models are plain Rust, fitted in linfa's style (`Config::fit(&train)` returns a
//! [`Recommender`](crate::Recommender)); neural ones are Burn modules trained by the
//! `kiln-core` trainer.
//!
//! | name | file | kind |
//! |---|---|---|
//! | global mean, [`Baseline`], [`Popularity`] | `baseline.rs` | biases, counts |
//! | [`Knn`] (user / item, basic / means / baseline) | `knn.rs` | neighbourhood CF |
//! | [`Svd`] | `svd.rs` | biased MF, SGD |
//! | [`SvdPp`] | `svdpp.rs` | MF with implicit feedback |
//! | [`Bpr`] | `bpr.rs` | MF for implicit ranking |
//! | [`Als`] | `als.rs` | implicit ALS (confidence-weighted MF, conjugate gradient) |
//! | [`LightFm`] | `lightfm.rs` | feature-based factorisation, WARP / BPR |
//! | [`NeuMf`] | `neumf.rs` | GMF + MLP for implicit ranking, on Burn |
//! | [`Content`] | `content.rs` | the seed's linear content model, on Burn |
//! | [`Blend`] | `hybrid.rs` | validation-tuned blend of any models |
//! | [`BiasedMf`] | `mf.rs` | biased MF as a Burn module |
//! | [`AnyModel`], [`RECOMMENDERS`] | `registry.rs` | every model: one type to save and load, each by name |

mod als;
mod baseline;
mod bpr;
mod content;
mod hybrid;
mod knn;
mod lightfm;
mod mf;
mod neumf;
mod registry;
mod svd;
mod svdpp;
mod vecmath;

pub(crate) use vecmath::{dot, squared_distance};

pub use als::{Als, AlsConfig};
pub use baseline::{
    Baseline, BaselineConfig, BaselineMethod, Biases, GlobalMean, GlobalMeanConfig, Popularity,
    PopularityConfig,
};
pub use bpr::{Bpr, BprConfig};
pub use content::{Content, ContentBatch, ContentConfig, ContentNet};
pub use hybrid::{Blend, BlendConfig};
pub use knn::{Knn, KnnConfig, KnnPrediction, Similarity};
pub use lightfm::{LightFm, LightFmConfig, RankLoss};
pub use mf::{BiasedMf, BiasedMfConfig};
pub use neumf::{NeuMf, NeuMfConfig, NeuMfNet, NeuMfNetConfig};
pub use registry::{
    AnyModel, CustomBox, CustomModel, Entry, FitAny, FitFn, RECOMMENDERS, Registry, Settings, Task,
    recommender, register_custom,
};
pub use svd::{Svd, SvdConfig};
pub use svdpp::{SvdPp, SvdPpConfig};

/// `x > 0` and finite, false for NaN (parameter checks).
pub(crate) fn positive(x: f32) -> bool {
    x.is_finite() && x > 0.0
}

/// `x >= 0` and finite, false for NaN (parameter checks).
pub(crate) fn non_negative(x: f32) -> bool {
    x.is_finite() && x >= 0.0
}

/// Checks a model's parameters one by one, so that the error names the first that does not
/// fit ([`RecsysError::InvalidParam`]).
pub(crate) struct Params {
    context: &'static str,
}

impl Params {
    pub(crate) fn new(context: &'static str) -> Self {
        Self { context }
    }

    fn check(
        self,
        ok: bool,
        param: &'static str,
        value: impl std::fmt::Display,
        expected: &'static str,
    ) -> crate::Result<Self> {
        if ok {
            Ok(self)
        } else {
            Err(crate::RecsysError::param(
                self.context,
                param,
                value,
                expected,
            ))
        }
    }

    /// A count of at least 1.
    pub(crate) fn count(self, param: &'static str, value: usize) -> crate::Result<Self> {
        self.check(value >= 1, param, value, "at least 1")
    }

    /// A finite rate above 0.
    pub(crate) fn positive(self, param: &'static str, value: f32) -> crate::Result<Self> {
        self.check(positive(value), param, value, "a finite number above 0")
    }

    /// A finite number of at least 0.
    pub(crate) fn non_negative(self, param: &'static str, value: f32) -> crate::Result<Self> {
        self.check(
            non_negative(value),
            param,
            value,
            "a finite number of at least 0",
        )
    }
}

/// A trained weight matrix copied to the host, row-major (empty if it cannot be read as f32).
pub(crate) fn host(t: burn::tensor::Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap_or_default()
}
