//! The loaded models, each behind its batching thread: what the routes share. Loading
//! happens once at start; a model that fails to load stops the server with an error naming it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::prelude::Device;
use kiln_nlp::generation::{Engine, TextGenerator};
use kiln_nlp::models::Precision;
use kiln_nlp::{SemanticIndex, SentenceEncoder, TextClassifierModel};
use kiln_recsys::{Persist, RecommenderBundle};
use kiln_vision::{ExportedClassifier, ImageItem, UploadDecoder};
use tokio::sync::Semaphore;

use crate::batcher::Batcher;
use crate::config::{Batching, ServeConfig};
use crate::error::ServeError;
use crate::generation::{Cancel, Scheduler, SchedulerConfig};
use crate::metrics::Metrics;

/// An embedding: the vector and the number of tokens it was computed from.
pub type Embedded = (Vec<f32>, usize);

/// A sentence encoder behind its batcher.
#[derive(Clone)]
pub struct Embedder {
    /// Requests' texts in, vectors and token counts out.
    pub batcher: Batcher<String, Embedded>,
    /// Dimension of the vectors.
    pub dim: usize,
}

/// The corpus of `/v1/search`.
pub struct Search {
    /// The embedder of queries.
    pub embedder: String,
    /// The indexed corpus.
    pub index: SemanticIndex,
}

/// The recommender of `/v1/recommend`.
pub struct Recommend {
    /// Model, ids, titles.
    pub bundle: RecommenderBundle,
    /// The embedder of descriptions, with the items' title vectors (normalised).
    pub by_text: Option<(String, Vec<Vec<f32>>)>,
}

/// A classifier behind its batcher.
#[derive(Clone)]
pub struct Classifier<I> {
    /// Inputs in, class probabilities (or a per-input error) out.
    pub batcher: Batcher<I, Result<Vec<f32>, String>>,
    /// Class names.
    pub labels: Arc<Vec<String>>,
}

/// A decoder on its scheduler's thread, with a bounded number of running and waiting
/// requests.
pub struct Generator {
    /// The model's queue.
    pub scheduler: Scheduler,
    /// Permits for running and waiting requests (the batching queue's size).
    pub slots: Arc<Semaphore>,
}

/// An image classifier: uploads are checked and decoded on the request's side (a blocking
/// task), the model's thread sees only decoded inputs.
#[derive(Clone)]
pub struct ImageClassifier {
    /// Decoded pictures in, class probabilities out.
    pub batcher: Batcher<ImageItem, Result<Vec<f32>, String>>,
    /// Class names.
    pub labels: Arc<Vec<String>>,
    /// The model's input shape, for decoding.
    pub decoder: UploadDecoder,
}

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
}

fn model_err(name: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Model {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

/// The decoders of `config`, each on its scheduler's thread (continuous batching where the
/// model has it), stopped by `shutdown`.
fn load_generators(
    config: &ServeConfig,
    device: &Device,
    metrics: &Metrics,
    shutdown: &Cancel,
) -> Result<BTreeMap<String, Generator>, ServeError> {
    let mut generators = BTreeMap::new();
    for m in &config.generators {
        let dir = config.resolve(&m.path)?;
        let model = TextGenerator::load(&dir, device, Engine::Auto, Precision::F32)
            .map_err(|e| model_err(&m.name, e))?
            .with_activations(m.activations.unwrap_or_default().into());
        let scheduler = Scheduler::spawn(
            &m.name,
            model,
            SchedulerConfig {
                stall: Duration::from_secs_f64(config.limits.stream_stall_secs),
                shutdown: shutdown.clone(),
                depth: metrics.queue_depth.with_label_values(&[&m.name]),
                batch: Some(config.batching.chat_limits()),
            },
        )
        .map_err(|e| model_err(&m.name, e))?;
        generators.insert(
            m.name.clone(),
            Generator {
                scheduler,
                slots: Arc::new(Semaphore::new(config.batching.queue)),
            },
        );
    }
    Ok(generators)
}

/// The sentence encoders of `config`, by name (used at start for the corpus and the titles,
/// then moved to their batchers' threads).
fn load_encoders(
    config: &ServeConfig,
    device: &Device,
) -> Result<BTreeMap<String, SentenceEncoder>, ServeError> {
    let mut encoders = BTreeMap::new();
    for m in &config.embeddings {
        let dir = config.resolve(&m.path)?;
        let encoder = SentenceEncoder::load(&dir, device).map_err(|e| model_err(&m.name, e))?;
        encoders.insert(m.name.clone(), encoder);
    }
    Ok(encoders)
}

/// The search corpus: a saved index, or a text file (one document per line) embedded now;
/// its vectors' width checked against the embedder's.
fn load_search(
    config: &ServeConfig,
    encoders: &BTreeMap<String, SentenceEncoder>,
) -> Result<Option<Search>, ServeError> {
    let Some(s) = &config.search else {
        return Ok(None);
    };
    let index = if let Some(index) = &s.index {
        let path = config.resolve(index)?;
        SemanticIndex::load(&path).map_err(|e| model_err("search", e))?
    } else {
        let path = config.resolve(s.corpus.as_deref().unwrap_or("".as_ref()))?;
        index_corpus(
            &path,
            &encoders[&s.embedder],
            &s.embedder,
            config.batching.max_batch,
        )?
    };
    let dim = encoders[&s.embedder].dim();
    if index.dim() != dim {
        return Err(model_err(
            "search",
            format!(
                "the index holds {}-dimensional vectors, {} makes {dim}",
                index.dim(),
                s.embedder
            ),
        ));
    }
    Ok(Some(Search {
        embedder: s.embedder.clone(),
        index,
    }))
}

/// The non-empty lines of the text file `path` embedded by `encoder` (`name`) into an index.
fn index_corpus(
    path: &std::path::Path,
    encoder: &SentenceEncoder,
    name: &str,
    max_batch: usize,
) -> Result<SemanticIndex, ServeError> {
    let bytes = std::fs::read(path).map_err(|e| ServeError::Io {
        path: path.to_owned(),
        source: e,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let docs: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if docs.is_empty() {
        return Err(model_err(
            "search",
            format!("{}: the corpus has no text", path.display()),
        ));
    }
    SemanticIndex::from_corpus(encoder, &docs, max_batch).map_err(|e| model_err(name, e))
}

/// The recommender bundle, with its titles embedded when it serves new users by text.
fn load_recommend(
    config: &ServeConfig,
    encoders: &BTreeMap<String, SentenceEncoder>,
) -> Result<Option<Recommend>, ServeError> {
    let Some(r) = &config.recommend else {
        return Ok(None);
    };
    let path = config.resolve(&r.path)?;
    let bundle = RecommenderBundle::load(&path).map_err(|e| model_err("recommend", e))?;
    let by_text = match &r.embedder {
        None => None,
        Some(name) => {
            let titles: Vec<&str> = bundle.titles().iter().map(String::as_str).collect();
            let vectors = encoders[name]
                .encode(&titles, config.batching.max_batch)
                .map_err(|e| model_err(name, e))?;
            Some((name.clone(), vectors))
        }
    };
    Ok(Some(Recommend { bundle, by_text }))
}

/// Each encoder on its batcher's thread.
fn spawn_embedders(
    encoders: BTreeMap<String, SentenceEncoder>,
    batching: &Batching,
    metrics: &Metrics,
) -> Result<BTreeMap<String, Embedder>, ServeError> {
    let mut embedders = BTreeMap::new();
    for (name, encoder) in encoders {
        let dim = encoder.dim();
        let max_batch = batching.max_batch;
        let batcher = Batcher::spawn(&name, batching, metrics, move |texts: Vec<String>| {
            // Tokenized once (the counts are the usage), longest first so that each
            // forward pass pads little, as `SentenceEncoder::encode` does.
            let ids = texts
                .iter()
                .map(|t| encoder.tokenize(t).map(|e| e.ids))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
            let mut out = vec![(Vec::new(), 0); ids.len()];
            for chunk in order.chunks(max_batch) {
                let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
                let vectors = encoder.embed_ids(&batch).map_err(|e| e.to_string())?;
                for (&i, v) in chunk.iter().zip(vectors) {
                    out[i] = (v, ids[i].len());
                }
            }
            Ok(out)
        })
        .map_err(|e| model_err(&name, e))?;
        embedders.insert(name, Embedder { batcher, dim });
    }
    Ok(embedders)
}

/// The text classifiers, each on its batcher's thread.
fn load_classifiers(
    config: &ServeConfig,
    device: &Device,
    metrics: &Metrics,
) -> Result<BTreeMap<String, Classifier<String>>, ServeError> {
    let mut classifiers = BTreeMap::new();
    for m in &config.classifiers {
        let dir = config.resolve(&m.path)?;
        let model = TextClassifierModel::load(&dir, device).map_err(|e| model_err(&m.name, e))?;
        let labels = Arc::new(model.labels().to_vec());
        let batcher = Batcher::spawn(
            &m.name,
            &config.batching,
            metrics,
            move |texts: Vec<String>| {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let rows = model.classify(&refs).map_err(|e| e.to_string())?;
                Ok(rows.into_iter().map(Ok).collect())
            },
        )
        .map_err(|e| model_err(&m.name, e))?;
        classifiers.insert(m.name.clone(), Classifier { batcher, labels });
    }
    Ok(classifiers)
}

/// The image classifiers, each on its batcher's thread.
fn load_image_classifiers(
    config: &ServeConfig,
    device: &Device,
    metrics: &Metrics,
) -> Result<BTreeMap<String, ImageClassifier>, ServeError> {
    let mut image_classifiers = BTreeMap::new();
    for m in &config.image_classifiers {
        let dir = config.resolve(&m.path)?;
        let model = ExportedClassifier::load(&dir, device).map_err(|e| model_err(&m.name, e))?;
        let labels = Arc::new(model.labels().to_vec());
        let decoder = model.decoder();
        let batcher = Batcher::spawn(
            &m.name,
            &config.batching,
            metrics,
            move |images: Vec<ImageItem>| {
                let n = images.len();
                let probs = model.classify(images);
                if probs.len() != n {
                    return Err(format!("{} outputs for {n} pictures", probs.len()));
                }
                Ok(probs.into_iter().map(Ok).collect())
            },
        )
        .map_err(|e| model_err(&m.name, e))?;
        image_classifiers.insert(
            m.name.clone(),
            ImageClassifier {
                batcher,
                labels,
                decoder,
            },
        );
    }
    Ok(image_classifiers)
}

impl AppState {
    /// Loads every model the configuration names (blocking: seconds for large ones).
    ///
    /// # Errors
    /// [`ServeError::Invalid`] from
    /// [`ServeConfig::validate`](crate::config::ServeConfig::validate); [`ServeError::Model`]
    /// naming the model that fails to load; [`ServeError::Core`] for a backend this build lacks.
    pub fn load(config: ServeConfig, metrics: Metrics) -> Result<Self, ServeError> {
        config.validate()?;
        let device = kiln_core::backend::device(&config.backend)?;
        let encoders = load_encoders(&config, &device)?;
        let search = load_search(&config, &encoders)?;
        let recommend = load_recommend(&config, &encoders)?;
        let embedders = spawn_embedders(encoders, &config.batching, &metrics)?;
        let classifiers = load_classifiers(&config, &device, &metrics)?;
        let image_classifiers = load_image_classifiers(&config, &device, &metrics)?;
        let shutdown = Cancel::new();
        let generators = load_generators(&config, &device, &metrics, &shutdown)?;
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
        })
    }
}
