//! A models folder for the server tests, built in a temporary directory: all-MiniLM-L6-v2
//! (linked from `KILN_MODELS`), a small corpus, a BPR recommender fitted on MovieLens 100K
//! (`KILN_DATA`) with titles, a text classifier (MiniLM with a head), an image classifier
//! (LeNet-5) and a tiny Llama decoder with a ChatML template (kiln-nlp's test fixture).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kiln_nlp::models::BertClassifier;
use kiln_nlp::{ClassifierMeta, SentenceEncoder, export_text_classifier};
use kiln_recsys::data::MovieLens;
use kiln_recsys::models::BprConfig;
use kiln_recsys::{Fit, Persist, RecommenderBundle};
use kiln_serve::config::{ModelEntry, RecommendEntry, SearchEntry};
use kiln_serve::{AppState, Metrics, RunningServer, ServeConfig};
use kiln_vision::{Architecture, ExportMeta, LeNet5Config, Pipeline, export_classifier};

pub const CORPUS: [&str; 8] = [
    "Paris is the capital and largest city of France.",
    "The Great Barrier Reef lies off the coast of Queensland, Australia.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "Alexander Graham Bell patented the first practical telephone.",
    "The Rust programming language guarantees memory safety without a garbage collector.",
    "Mount Everest is the highest mountain above sea level.",
    "A cup of coffee contains about 95 milligrams of caffeine.",
    "The violin is a string instrument played with a bow.",
];

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + \
message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ \
'<|im_start|>assistant\n' }}{% endif %}";

/// The shared model and data folders.
pub fn env_dirs() -> (PathBuf, PathBuf) {
    let models = std::env::var_os("KILN_MODELS").expect("KILN_MODELS is set");
    let data = std::env::var_os("KILN_DATA").expect("KILN_DATA is set");
    (PathBuf::from(models), PathBuf::from(data))
}

pub fn minilm() -> PathBuf {
    env_dirs().0.join("all-MiniLM-L6-v2")
}

pub fn llama_tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nlp/tests/fixtures/decoders/llama-tiny")
}

#[cfg(unix)]
fn link(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).unwrap();
}

/// Builds the models folder (about 2 s: the recommender's fit and the classifier's weights).
pub fn models_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    link(&minilm(), &root.join("minilm"));
    std::fs::write(root.join("corpus.txt"), CORPUS.join("\n")).unwrap();

    let ml = MovieLens::load(env_dirs().1.join("ml-100k")).unwrap();
    let positives = ml.ratings.implicit(4.0);
    let mut bpr = BprConfig::new().with_seed(0);
    bpr.epochs = 20;
    let model = bpr.fit(&positives).unwrap();
    let titles = ml.movies.iter().map(|m| m.title.clone()).collect();
    RecommenderBundle::new(model, &ml.ratings.users, &ml.ratings.items, titles)
        .unwrap()
        .with_seen(&ml.ratings)
        .unwrap()
        .save(root.join("ml100k-bpr.json"))
        .unwrap();

    let device = kiln_core::backend::device("cpu").unwrap();
    let encoder = SentenceEncoder::load(minilm(), &device).unwrap();
    let hidden = encoder.dim();
    let classifier = BertClassifier::new(encoder.into_bert().unwrap(), hidden, 2, &device);
    let meta = ClassifierMeta {
        labels: vec!["ham".into(), "spam".into()],
        max_len: 64,
    };
    export_text_classifier(classifier, minilm(), &meta, root.join("spam")).unwrap();

    let lenet = LeNet5Config::new();
    let meta = ExportMeta {
        architecture: Architecture::Lenet5(lenet.clone()),
        channels: 1,
        height: 28,
        width: 28,
        pipeline: Pipeline::new(),
        labels: (0..10).map(|d| d.to_string()).collect(),
    };
    export_classifier(&lenet.init(&device), &meta, root.join("digits")).unwrap();

    let chat = root.join("chat-tiny");
    std::fs::create_dir(&chat).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        link(&llama_tiny().join(f), &chat.join(f));
    }
    std::fs::write(chat.join("chat_template.jinja"), CHATML).unwrap();
    dir
}

/// A config serving everything in `dir` on a free loopback port.
pub fn full_config(dir: &Path) -> ServeConfig {
    let mut c = ServeConfig::new(dir);
    c.port = 0;
    let entry = |name: &str, path: &str| ModelEntry::new(name, path);
    c.embeddings.push(entry("minilm", "minilm"));
    c.search = Some(SearchEntry {
        embedder: "minilm".into(),
        corpus: Some("corpus.txt".into()),
        index: None,
    });
    c.recommend = Some(RecommendEntry {
        path: "ml100k-bpr.json".into(),
        embedder: Some("minilm".into()),
    });
    c.classifiers.push(entry("spam", "spam"));
    c.image_classifiers.push(entry("digits", "digits"));
    c.generators.push(entry("chat-tiny", "chat-tiny"));
    c
}

/// Loads `config` and serves it; returns the server and its base URL.
pub async fn serve(config: ServeConfig) -> (RunningServer, String) {
    let state = tokio::task::spawn_blocking(move || AppState::load(config, Metrics::new()))
        .await
        .unwrap()
        .unwrap();
    let server = kiln_serve::start(state).await.unwrap();
    let url = format!("http://{}", server.addr());
    (server, url)
}

/// A grey 28x28 PNG.
pub fn png() -> Vec<u8> {
    let img =
        image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
