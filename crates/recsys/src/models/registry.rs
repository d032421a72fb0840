//! Every recommender of the crate in one place:
//!
//! - [`AnyModel`]: any of the crate's serialisable models, so a model whose kind is not known
//!   in advance (a blend's members, a served bundle) is saved and loaded as one file
//!   ([`Persist::load`]);
//! - [`RECOMMENDERS`]: each model by name (`mf`, `bpr`, `lightfm`, ...), its task and how it
//!   is fitted from [`Settings`] (the common overrides and the side information some models
//!   need); [`recommender`] looks a name up. The `movielens` example fits through it.
//!
//! Adding a recommender to the crate: its file in `models/` (a config implementing [`Fit`],
//! a model implementing [`Recommender`] and [`Persist`]), a line in the [`AnyModel`] enum
//! and in the `any_model!` list, and an [`Entry`] in [`RECOMMENDERS`]. A program adds its
//! own without editing the crate: the same two traits, [`register_custom`] for its files to
//! load, [`AnyModel::custom`] in its [`Entry`], and [`Registry::with`].

use std::sync::Arc;

use burn::tensor::Device;
use kiln_core::train::{ProgressMode, StopRules};
use serde::{Deserialize, Serialize};

use crate::data::{FeatureMatrix, Interactions};
use crate::error::{RecsysError, Result};
use crate::models::{
    Als, AlsConfig, Baseline, BaselineConfig, Blend, BlendConfig, Bpr, BprConfig, Content,
    ContentConfig, GlobalMean, GlobalMeanConfig, Knn, KnnConfig, KnnPrediction, LightFm,
    LightFmConfig, NeuMf, NeuMfConfig, Popularity, PopularityConfig, Similarity, Svd, SvdConfig,
    SvdPp, SvdPpConfig,
};
use crate::recommender::{Fit, Persist, Recommender};
use crate::trainset::TrainSet;

/// Any serialisable model of the crate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)] // One variant per model type, named after it.
pub enum AnyModel {
    GlobalMean(GlobalMean),
    Baseline(Baseline),
    Popularity(Popularity),
    Knn(Box<Knn>),
    Svd(Svd),
    SvdPp(SvdPp),
    Bpr(Bpr),
    Als(Als),
    LightFm(Box<LightFm>),
    NeuMf(Box<NeuMf>),
    Content(Content),
    Blend(Box<Blend>),
    /// A model defined outside this crate ([`CustomModel`], [`register_custom`]).
    Custom(CustomBox),
}

macro_rules! any_model {
    ($($variant:ident($ty:ty) $(boxed $b:tt)?),* $(,)?) => {
        $(impl From<$ty> for AnyModel {
            fn from(m: $ty) -> Self {
                AnyModel::$variant(any_model!(@wrap m $($b)?))
            }
        })*
        impl AnyModel {
            fn inner(&self) -> &dyn Recommender {
                match self {
                    $(AnyModel::$variant(m) => any_model!(@deref m $($b)?),)*
                    AnyModel::Custom(m) => m.0.as_recommender(),
                }
            }

            fn check_inner(&self) -> std::result::Result<(), String> {
                match self {
                    $(AnyModel::$variant(m) => Persist::check(any_model!(@deref m $($b)?)),)*
                    AnyModel::Custom(m) => m.0.check_model(),
                }
            }
        }
    };
    (@wrap $m:ident) => { $m };
    (@wrap $m:ident +) => { Box::new($m) };
    (@deref $m:ident) => { $m };
    (@deref $m:ident +) => { &**$m };
}

any_model!(
    GlobalMean(GlobalMean),
    Baseline(Baseline),
    Popularity(Popularity),
    Knn(Knn) boxed +,
    Svd(Svd),
    SvdPp(SvdPp),
    Bpr(Bpr),
    Als(Als),
    LightFm(LightFm) boxed +,
    NeuMf(NeuMf) boxed +,
    Content(Content),
    Blend(Blend) boxed +,
);

impl Recommender for AnyModel {
    fn train_set(&self) -> &TrainSet {
        self.inner().train_set()
    }
    fn score(&self, user: u32, item: u32) -> f32 {
        self.inner().score(user, item)
    }
    fn score_all(&self, user: u32, out: &mut Vec<f32>) {
        self.inner().score_all(user, out)
    }
    fn predict(&self, user: u32, item: u32) -> f32 {
        self.inner().predict(user, item)
    }
    fn recommend(&self, user: u32, k: usize) -> Vec<crate::Scored> {
        self.inner().recommend(user, k)
    }
    fn recommend_excluding(&self, user: u32, k: usize, exclude: &[u32]) -> Vec<crate::Scored> {
        self.inner().recommend_excluding(user, k, exclude)
    }
    fn item_embedding(&self, item: u32) -> Option<Vec<f32>> {
        self.inner().item_embedding(item)
    }
    fn similar_items(&self, item: u32, k: usize) -> Vec<crate::Scored> {
        self.inner().similar_items(item, k)
    }
}

impl Persist for AnyModel {
    fn check(&self) -> std::result::Result<(), String> {
        self.check_inner()
    }
    const KIND: &'static str = "any";
}

/// Parameters that fit into an [`AnyModel`]: every [`Fit`] whose model converts into one.
pub trait FitAny: Send + Sync {
    /// Fits and wraps the model.
    ///
    /// # Errors
    /// The model's fitting errors.
    fn fit_any(&self, train: &Interactions) -> Result<AnyModel>;
}

impl<F> FitAny for F
where
    F: Fit + Send + Sync,
    F::Model: Into<AnyModel>,
{
    fn fit_any(&self, train: &Interactions) -> Result<AnyModel> {
        Ok(self.fit(train)?.into())
    }
}

impl AnyModel {
    /// Wraps a model defined outside this crate (its type registered with
    /// [`register_custom`] for it to load back).
    pub fn custom(model: impl CustomModel + 'static) -> Self {
        AnyModel::Custom(CustomBox(Box::new(model)))
    }
}

/// A recommender defined outside this crate, as [`AnyModel::Custom`] holds it: any type
/// that is a [`Recommender`] and [`Persist`] (and `Clone + Debug`) is one. Saved as
/// `{"kind": Persist::KIND, "state": the model as JSON}`; loading finds the type by its kind
/// among those given to [`register_custom`].
pub trait CustomModel: Recommender + std::fmt::Debug {
    /// [`Persist::KIND`].
    fn kind(&self) -> &'static str;
    /// The model as JSON.
    ///
    /// # Errors
    /// serde's, for a model that does not serialise to JSON.
    fn state(&self) -> serde_json::Result<serde_json::Value>;
    /// [`Persist::check`].
    ///
    /// # Errors
    /// The reason the model's parts do not hold together.
    fn check_model(&self) -> std::result::Result<(), String>;
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn CustomModel>;
    /// Itself as a [`Recommender`].
    fn as_recommender(&self) -> &dyn Recommender;
}

impl<T> CustomModel for T
where
    T: Recommender + Persist + Clone + std::fmt::Debug + 'static,
{
    fn kind(&self) -> &'static str {
        T::KIND
    }
    fn state(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(self)
    }
    fn check_model(&self) -> std::result::Result<(), String> {
        Persist::check(self)
    }
    fn clone_box(&self) -> Box<dyn CustomModel> {
        Box::new(self.clone())
    }
    fn as_recommender(&self) -> &dyn Recommender {
        self
    }
}

/// A boxed [`CustomModel`] (cloned, printed and saved through the trait).
pub struct CustomBox(Box<dyn CustomModel>);

impl CustomBox {
    /// The model.
    pub fn model(&self) -> &dyn CustomModel {
        &*self.0
    }
}

impl Clone for CustomBox {
    fn clone(&self) -> Self {
        CustomBox(self.0.clone_box())
    }
}

impl std::fmt::Debug for CustomBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for CustomBox {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let state = self.0.state().map_err(S::Error::custom)?;
        let mut s = serializer.serialize_struct("CustomModel", 2)?;
        s.serialize_field("kind", self.0.kind())?;
        s.serialize_field("state", &state)?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for CustomBox {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        struct Saved {
            kind: String,
            state: serde_json::Value,
        }
        let saved = Saved::deserialize(deserializer)?;
        let loaders = CUSTOM.read().unwrap_or_else(|e| e.into_inner());
        let Some((_, load)) = loaders.iter().find(|(kind, _)| *kind == saved.kind) else {
            return Err(D::Error::custom(format!(
                "a custom recommender of kind '{}' that this program has not registered \
                 (kiln_recsys::models::register_custom)",
                saved.kind
            )));
        };
        load(saved.state).map(CustomBox).map_err(D::Error::custom)
    }
}

/// Reads a [`CustomModel`]'s state back.
type CustomLoader = fn(serde_json::Value) -> serde_json::Result<Box<dyn CustomModel>>;

/// The custom model types this program has registered, by kind.
static CUSTOM: std::sync::RwLock<Vec<(&'static str, CustomLoader)>> =
    std::sync::RwLock::new(Vec::new());

/// Lets [`AnyModel`] files (bundles, blends) that hold a `T` load in this program: call it
/// once before loading them (registering a kind again replaces it).
pub fn register_custom<T>()
where
    T: Recommender + Persist + Clone + std::fmt::Debug + 'static,
{
    let load: CustomLoader = |state| Ok(Box::new(serde_json::from_value::<T>(state)?));
    let mut loaders = CUSTOM.write().unwrap_or_else(|e| e.into_inner());
    loaders.retain(|(kind, _)| *kind != T::KIND);
    loaders.push((T::KIND, load));
}

/// What a recommender is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Rating prediction (RMSE, MAE), fitted on the ratings.
    Rating,
    /// Top-k ranking, fitted on implicit positives.
    Ranking,
}

/// What every recommender name takes besides the training data: overrides of the model's
/// defaults (`None`: the default) and the side information some models need.
#[derive(Clone, Default)]
pub struct Settings {
    /// Latent factors (mf, svdpp, bpr, als, lightfm).
    pub factors: Option<usize>,
    /// Epochs (mf, svdpp, bpr, lightfm, content, neumf); alternations for als.
    pub epochs: Option<usize>,
    /// Learning rate (mf, svdpp, bpr, lightfm, neumf).
    pub lr: Option<f32>,
    /// Regularisation (mf, svdpp, bpr, als).
    pub reg: Option<f32>,
    /// Neighbours (knn-*, and hybrid's item KNN).
    pub neighbours: Option<usize>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Item features of the content model (content, and hybrid's content member).
    pub content_features: Option<Arc<FeatureMatrix>>,
    /// User and item features of lightfm (`None`: one identity feature each, pure
    /// collaborative filtering).
    pub lightfm_features: Option<(Arc<FeatureMatrix>, Arc<FeatureMatrix>)>,
    /// The device of the Burn models (content, neumf); `None`: the CPU.
    pub device: Option<Device>,
    /// Progress of the Burn models' training (`None`: the models' default, quiet).
    pub progress: Option<ProgressMode>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("factors", &self.factors)
            .field("epochs", &self.epochs)
            .field("lr", &self.lr)
            .field("reg", &self.reg)
            .field("neighbours", &self.neighbours)
            .field("seed", &self.seed)
            .field("content_features", &self.content_features.is_some())
            .field("lightfm_features", &self.lightfm_features.is_some())
            .finish()
    }
}

impl Settings {
    fn device(&self) -> Result<Device> {
        match &self.device {
            Some(d) => Ok(d.clone()),
            None => Ok(kiln_core::backend::device("cpu")?),
        }
    }

    /// An SGD matrix factorisation's config with the overrides.
    fn sgd(&self, mut c: SvdConfig) -> SvdConfig {
        c.factors = self.factors.unwrap_or(c.factors);
        c.epochs = self.epochs.unwrap_or(c.epochs);
        if let Some(lr) = self.lr {
            c.lr = lr;
            c.lr_bias = lr;
        }
        c.reg = self.reg.unwrap_or(c.reg);
        c.seed = self.seed;
        c
    }

    fn knn(&self, c: KnnConfig) -> KnnConfig {
        let k = self.neighbours.unwrap_or(c.k);
        c.with_k(k)
    }

    fn svdpp(&self) -> SvdPpConfig {
        let p = SvdPpConfig::new();
        let sgd = self.sgd(p.sgd);
        p.with_sgd(sgd)
    }

    /// The content model's config: needs [`Settings::content_features`].
    fn content(&self, name: &'static str) -> Result<ContentConfig> {
        let features = self.content_features.clone().ok_or_else(|| {
            RecsysError::Data(format!(
                "{name} needs item features (Settings::content_features)"
            ))
        })?;
        let mut c = ContentConfig::new(features, &self.device()?);
        if let Some(epochs) = self.epochs {
            c.trainer.stop = StopRules::epochs(epochs);
        }
        c.trainer.seed = self.seed;
        c.trainer.progress = self.progress.unwrap_or(c.trainer.progress);
        Ok(c)
    }
}

/// Fits a registered model.
pub type FitFn = fn(&Settings, &Interactions) -> Result<AnyModel>;

/// One recommender by name.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its name (`mf`, `knn-item`, ...).
    pub name: &'static str,
    /// The task it is made for.
    pub task: Task,
    /// One line on what it is.
    pub summary: &'static str,
    fit: FitFn,
}

impl Entry {
    /// An entry: `fit` makes the model from the settings and the training data (a model of
    /// another crate goes in [`AnyModel::custom`]).
    pub const fn new(name: &'static str, task: Task, summary: &'static str, fit: FitFn) -> Self {
        Self {
            name,
            task,
            summary,
            fit,
        }
    }

    /// Fits the model on `train` with `settings`.
    ///
    /// # Errors
    /// The model's own parameter checks ([`RecsysError::InvalidParam`]), data it cannot be fitted
    /// on, or side information it needs and `settings` lacks.
    pub fn fit(&self, settings: &Settings, train: &Interactions) -> Result<AnyModel> {
        (self.fit)(settings, train)
    }

    /// Whether it is fitted on implicit positives (the ranking models).
    pub fn implicit(&self) -> bool {
        self.task == Task::Ranking
    }
}

fn any<F: Fit>(config: F, train: &Interactions) -> Result<AnyModel>
where
    F::Model: Into<AnyModel>,
{
    Ok(config.fit(train)?.into())
}

/// Every recommender by name, in the order `movielens --help` lists them.
pub const RECOMMENDERS: &[Entry] = &[
    Entry {
        name: "mean",
        task: Task::Rating,
        summary: "the global mean rating",
        fit: |_, t| any(GlobalMeanConfig, t),
    },
    Entry {
        name: "baseline",
        task: Task::Rating,
        summary: "global mean plus user and item biases (ALS)",
        fit: |_, t| any(BaselineConfig::new(), t),
    },
    Entry {
        name: "popularity",
        task: Task::Ranking,
        summary: "items by their number of positives",
        fit: |_, t| any(PopularityConfig::default(), t),
    },
    Entry {
        name: "knn-user",
        task: Task::Rating,
        summary: "user-based KNN, Pearson similarity, with means",
        fit: |s, t| {
            let c = KnnConfig::user_based()
                .with_similarity(Similarity::Pearson)
                .with_prediction(KnnPrediction::WithMeans);
            any(s.knn(c), t)
        },
    },
    Entry {
        name: "knn-item",
        task: Task::Rating,
        summary: "item-based KNN, Pearson similarity, with means",
        fit: |s, t| {
            let c = KnnConfig::item_based()
                .with_similarity(Similarity::Pearson)
                .with_prediction(KnnPrediction::WithMeans);
            any(s.knn(c), t)
        },
    },
    Entry {
        name: "knn-baseline",
        task: Task::Rating,
        summary: "item-based KNN with baselines (Pearson-baseline similarity)",
        fit: |s, t| any(s.knn(KnnConfig::item_baseline()), t),
    },
    Entry {
        name: "content",
        task: Task::Rating,
        summary: "the seed's linear content model over item features, on Burn",
        fit: |s, t| any(s.content("content")?, t),
    },
    Entry {
        name: "hybrid",
        task: Task::Rating,
        summary: "SVD++, item KNN with baselines and content, blended on held-out ratings",
        fit: |s, t| {
            let members: Vec<Box<dyn FitAny>> = vec![
                Box::new(s.svdpp()),
                Box::new(s.knn(KnnConfig::item_baseline())),
                Box::new(s.content("hybrid")?),
            ];
            any(BlendConfig::new(members).with_seed(s.seed), t)
        },
    },
    Entry {
        name: "mf",
        task: Task::Rating,
        summary: "biased matrix factorisation by SGD (Surprise's SVD)",
        fit: |s, t| any(s.sgd(SvdConfig::new()), t),
    },
    Entry {
        name: "svdpp",
        task: Task::Rating,
        summary: "SVD++: factorisation with implicit feedback",
        fit: |s, t| any(s.svdpp(), t),
    },
    Entry {
        name: "bpr",
        task: Task::Ranking,
        summary: "Bayesian personalised ranking",
        fit: |s, t| {
            let mut c = BprConfig::new().with_seed(s.seed);
            c.factors = s.factors.unwrap_or(c.factors);
            c.epochs = s.epochs.unwrap_or(c.epochs);
            c.lr = s.lr.unwrap_or(c.lr);
            c.reg = s.reg.unwrap_or(c.reg);
            any(c, t)
        },
    },
    Entry {
        name: "als",
        task: Task::Ranking,
        summary: "implicit ALS (confidence-weighted, conjugate gradient); epochs = alternations",
        fit: |s, t| {
            let mut c = AlsConfig::new().with_seed(s.seed);
            c.factors = s.factors.unwrap_or(c.factors);
            c.iterations = s.epochs.unwrap_or(c.iterations);
            c.reg = s.reg.unwrap_or(c.reg);
            any(c, t)
        },
    },
    Entry {
        name: "neumf",
        task: Task::Ranking,
        summary: "neural collaborative filtering (GMF + MLP), on Burn",
        fit: |s, t| {
            let mut c = NeuMfConfig::new(&s.device()?);
            if let Some(epochs) = s.epochs {
                c.trainer.stop = StopRules::epochs(epochs);
            }
            if let Some(lr) = s.lr {
                c.trainer.lr = kiln_core::optim::LrSchedule::constant(f64::from(lr));
            }
            c.trainer.seed = s.seed;
            c.trainer.progress = s.progress.unwrap_or(c.trainer.progress);
            any(c, t)
        },
    },
    Entry {
        name: "lightfm",
        task: Task::Ranking,
        summary: "LightFM-style WARP over user and item feature embeddings",
        fit: |s, t| {
            let mut c = LightFmConfig::new().with_seed(s.seed);
            if let Some((users, items)) = &s.lightfm_features {
                c = c
                    .with_user_features(users.clone())
                    .with_item_features(items.clone());
            }
            c.components = s.factors.unwrap_or(c.components);
            c.epochs = s.epochs.unwrap_or(c.epochs);
            c.lr = s.lr.unwrap_or(c.lr);
            any(c, t)
        },
    },
];

/// The recommender called `name` among [`RECOMMENDERS`].
///
/// # Errors
/// [`RecsysError::InvalidParam`] naming the known names when there is none of that name.
pub fn recommender(name: &str) -> Result<&'static Entry> {
    RECOMMENDERS
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| RecsysError::InvalidParam {
            context: "recommender",
            param: "name",
            value: name.to_string(),
            expected: "one of mean, baseline, popularity, knn-user, knn-item, knn-baseline, \
                       content, hybrid, mf, svdpp, bpr, als, neumf, lightfm",
        })
}

/// [`RECOMMENDERS`] plus a program's own entries: how a recommender defined outside this
/// crate joins the names (see [`CustomModel`]).
#[derive(Debug, Clone)]
pub struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// The crate's recommenders.
    pub fn builtin() -> Self {
        Self {
            entries: RECOMMENDERS.to_vec(),
        }
    }

    /// Adds an entry (replacing one of the same name).
    pub fn with(mut self, entry: Entry) -> Self {
        self.entries.retain(|e| e.name != entry.name);
        self.entries.push(entry);
        self
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// The entry called `name`.
    ///
    /// # Errors
    /// [`RecsysError::Data`] naming the known names when there is none of that name.
    pub fn get(&self, name: &str) -> Result<&Entry> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            RecsysError::Data(format!(
                "no recommender named '{name}' (known: {})",
                self.names().join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_each_one_is_found() {
        let mut names: Vec<&str> = RECOMMENDERS.iter().map(|e| e.name).collect();
        for name in &names {
            assert_eq!(recommender(name).unwrap().name, *name);
        }
        let err = recommender("svd").unwrap_err().to_string();
        assert!(err.contains("svd") && err.contains("lightfm"), "{err}");
        // The error's list is the table's.
        for name in &names {
            assert!(err.contains(name), "{name} missing from: {err}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RECOMMENDERS.len());
    }
}
