//! What the server loads and how it behaves: a TOML file, overridden by command-line flags.
//! Every model path is relative to the models folder and is resolved only inside it (no
//! absolute paths, no `..`), so neither a config file nor a request can reach other files.
//!
//! ```toml
//! models_dir = "../shared/models"
//! host = "127.0.0.1"        # loopback unless told otherwise
//! port = 8080
//! # token = "..."           # or KILN_SERVE_TOKEN: every /v1 route and /metrics need it
//!
//! [limits]
//! max_body_bytes = 2097152
//! max_inputs = 256
//!
//! [[embeddings]]
//! name = "minilm"
//! path = "all-MiniLM-L6-v2"
//!
//! [search]
//! embedder = "minilm"
//! corpus = "corpus.txt"      # one text per line, embedded at start
//! ```

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ServeError;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The folder every model path is relative to.
    pub models_dir: PathBuf,
    /// Address to bind (loopback by default).
    #[serde(default = "default_host")]
    pub host: String,
    /// Port (0: any free port, printed at start).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Bearer token required on `/v1/*` and `/metrics` (`KILN_SERVE_TOKEN` when unset).
    #[serde(default)]
    pub token: Option<String>,
    /// Bind an address beyond loopback without a token (refused otherwise: anyone on the
    /// network could use the models).
    #[serde(default)]
    pub allow_public: bool,
    /// Host names accepted besides `localhost`, `127.0.0.1` and `[::1]` when bound to
    /// loopback (any other `Host` header is refused: DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Backend of the models: `flex`, `ndarray`, `wgpu`, `cuda`, or `cpu` (the default CPU one).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
    /// Dynamic batching.
    #[serde(default)]
    pub batching: Batching,
    /// Sentence-transformers folders for `/v1/embeddings`.
    #[serde(default)]
    pub embeddings: Vec<ModelEntry>,
    /// The corpus of `/v1/search`.
    #[serde(default)]
    pub search: Option<SearchEntry>,
    /// The recommender of `/v1/recommend`.
    #[serde(default)]
    pub recommend: Option<RecommendEntry>,
    /// Text classifiers (folders written by `finetune --export`).
    #[serde(default)]
    pub classifiers: Vec<ModelEntry>,
    /// Image classifiers (folders written by `mnist --export`).
    #[serde(default)]
    pub image_classifiers: Vec<ModelEntry>,
    /// Decoder folders for `/v1/chat/completions` and `/v1/completions`.
    #[serde(default)]
    pub generators: Vec<ModelEntry>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8080
}
fn default_backend() -> String {
    "cpu".into()
}

/// A named model folder or file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The name requests use (`model` field).
    pub name: String,
    /// Path relative to the models folder.
    pub path: PathBuf,
    /// Generators only: how a GGUF file's quantized products treat their activations,
    /// `"f32"` (the default) or `"int8"` (llama.cpp's arithmetic; faster on every common
    /// type, Q4_0 / Q4_1 / Q8_0 matrices then interleaved into tiles of 16 rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<ActivationsSetting>,
}

impl ModelEntry {
    /// `name` served from `path` (relative to the models folder), default settings.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            activations: None,
        }
    }
}

/// The `activations` of a generator entry (`kiln_nlp::models::LlamaCpu::with_activations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ActivationsSetting {
    /// Kept f32: the dequantize-then-f32 arithmetic.
    #[default]
    F32,
    /// Quantized to 8 bits per block, integer dot products (llama.cpp's arithmetic).
    Int8,
}

impl From<ActivationsSetting> for kiln_nlp::gguf::Activations {
    fn from(a: ActivationsSetting) -> Self {
        match a {
            ActivationsSetting::F32 => Self::F32,
            ActivationsSetting::Int8 => Self::Int8,
        }
    }
}

/// The search corpus: texts embedded at start, or an index saved by `semantic_search`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchEntry {
    /// The embedding model (a name from `embeddings`) that embeds queries (and the corpus).
    pub embedder: String,
    /// A text file, one document per line, relative to the models folder.
    #[serde(default)]
    pub corpus: Option<PathBuf>,
    /// A saved `SemanticIndex`, relative to the models folder.
    #[serde(default)]
    pub index: Option<PathBuf>,
}

/// The recommender: a `RecommenderBundle` file (`movielens --export`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendEntry {
    /// Path relative to the models folder.
    pub path: PathBuf,
    /// An embedding model (a name from `embeddings`): unknown users who send a description get
    /// the items whose titles are closest to it.
    #[serde(default)]
    pub embedder: Option<String>,
}

/// Request limits: past them a request gets 413 (or 503 for the timeout).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most inputs (texts, queries) in one request.
    pub max_inputs: usize,
    /// Longest input text in bytes.
    pub max_input_bytes: usize,
    /// Largest `k` of search and recommendations.
    pub max_k: usize,
    /// Most new tokens a completion may ask for.
    pub max_new_tokens: usize,
    /// Seconds a request may take before it is answered 503 (a generation is stopped then).
    pub timeout_secs: f64,
    /// Seconds a streamed generation may run in all.
    pub stream_timeout_secs: f64,
    /// Seconds a streaming client may read nothing before its generation is dropped.
    pub stream_stall_secs: f64,
    /// Seconds a connection may take to send a request's headers, and may stay idle between
    /// requests.
    pub header_timeout_secs: f64,
    /// Seconds the requests in flight get at shutdown; then the remaining connections are
    /// closed and generations stopped.
    pub shutdown_grace_secs: f64,
    /// Open connections; past it a new one gets a 503 and is closed.
    pub max_connections: usize,
    /// Bytes of request bodies being received or handled at once, over all connections
    /// (each request counts its `Content-Length`, or `max_body_bytes` without one); past
    /// it a request gets a 503 before its body is read.
    pub max_body_bytes_in_flight: usize,
    /// Requests one client (a peer address) may have in flight; past it 429.
    pub max_requests_per_client: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 << 20,
            max_inputs: 256,
            max_input_bytes: 16 << 10,
            max_k: 100,
            max_new_tokens: 512,
            timeout_secs: 30.0,
            stream_timeout_secs: 600.0,
            stream_stall_secs: 10.0,
            header_timeout_secs: 10.0,
            shutdown_grace_secs: 10.0,
            max_connections: 1024,
            max_body_bytes_in_flight: 64 << 20,
            max_requests_per_client: 256,
        }
    }
}

/// Dynamic batching of concurrent requests for one model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most inputs run through the model at once.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others, in milliseconds.
    pub max_wait_ms: u64,
    /// Requests that may wait per model; past it the server answers 429 at once.
    pub queue: usize,
    /// Chat and completion requests decoding together per generator (continuous
    /// batching, on the packed CPU path).
    pub chat_batch: usize,
    /// MiB of keys and values a generator's running requests may reserve (each reserves
    /// its prompt and `max_tokens` at admission; others wait in the queue until it frees).
    pub kv_cache_mib: usize,
    /// Prompt tokens a generator reads per step beside the running decodes (a long prompt
    /// is spread over steps so that it never stalls the others for long).
    pub prefill_chunk: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait_ms: 2,
            queue: 256,
            chat_batch: 16,
            kv_cache_mib: 1024,
            prefill_chunk: 64,
        }
    }
}

impl Batching {
    /// The continuous-batching limits of a generator.
    pub fn chat_limits(&self) -> kiln_nlp::generation::BatchLimits {
        kiln_nlp::generation::BatchLimits {
            max_sequences: self.chat_batch,
            prefill_chunk: self.prefill_chunk,
            kv_budget_bytes: self.kv_cache_mib.saturating_mul(1 << 20),
        }
    }
}

/// Durations in seconds: finite, within a day (`Duration::from_secs_f64` panics past u64
/// seconds; nothing here needs more than a day).
fn check_durations(l: &Limits) -> Result<(), ServeError> {
    let bad = |field: &str, reason: String| ServeError::Invalid {
        field: field.to_owned(),
        reason,
    };
    for (field, value, zero_ok) in [
        ("limits.timeout_secs", l.timeout_secs, false),
        ("limits.stream_timeout_secs", l.stream_timeout_secs, false),
        ("limits.stream_stall_secs", l.stream_stall_secs, false),
        ("limits.header_timeout_secs", l.header_timeout_secs, false),
        ("limits.shutdown_grace_secs", l.shutdown_grace_secs, true),
    ] {
        let above = if zero_ok { value >= 0.0 } else { value > 0.0 };
        if !(value.is_finite() && above && value <= MAX_SECS) {
            let low = if zero_ok { "0" } else { "above 0" };
            return Err(bad(
                field,
                format!("is {value}, expected seconds from {low} to {MAX_SECS}"),
            ));
        }
    }
    Ok(())
}

impl ServeConfig {
    /// A configuration with defaults and no models.
    pub fn new(models_dir: impl Into<PathBuf>) -> Self {
        Self {
            models_dir: models_dir.into(),
            host: default_host(),
            port: default_port(),
            token: None,
            allow_public: false,
            allowed_hosts: Vec::new(),
            backend: default_backend(),
            limits: Limits::default(),
            batching: Batching::default(),
            embeddings: Vec::new(),
            search: None,
            recommend: None,
            classifiers: Vec::new(),
            image_classifiers: Vec::new(),
            generators: Vec::new(),
        }
    }

    /// Reads a TOML file; a relative `models_dir` is relative to the file's folder.
    ///
    /// # Errors
    /// [`ServeError::Io`] when the file cannot be read; [`ServeError::Config`] naming it when it
    /// does not parse (unknown fields included).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ServeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| ServeError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if config.models_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.models_dir = base.join(&config.models_dir);
        }
        Ok(config)
    }

    /// The model lists: names valid and unique per kind, settings only where they apply,
    /// paths inside the models folder.
    fn validate_models(&self) -> Result<(), ServeError> {
        let bad = |field: &str, reason: String| ServeError::Invalid {
            field: field.to_owned(),
            reason,
        };
        let mut names = std::collections::HashSet::new();
        for (kind, list) in [
            ("embeddings", &self.embeddings),
            ("classifiers", &self.classifiers),
            ("image_classifiers", &self.image_classifiers),
            ("generators", &self.generators),
        ] {
            for m in list {
                check_name(&m.name).map_err(|r| bad(&format!("{kind}.name"), r))?;
                if kind != "generators" && m.activations.is_some() {
                    return Err(bad(
                        &format!("{kind}.activations"),
                        "only generators take activations".into(),
                    ));
                }
                if !names.insert((kind, m.name.clone())) {
                    return Err(bad(kind, format!("the name {:?} is used twice", m.name)));
                }
                self.resolve(&m.path)?;
            }
        }
        Ok(())
    }

    /// Checks values and names before anything is loaded.
    ///
    /// # Errors
    /// [`ServeError::Invalid`] naming the first value or name out of range (limits, batching,
    /// duplicate or malformed names, a search or recommender naming an embedder that is not there).
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad = |field: &str, reason: String| ServeError::Invalid {
            field: field.to_owned(),
            reason,
        };
        let l = &self.limits;
        const GIB: usize = 1 << 30;
        for (field, value, max) in [
            ("limits.max_body_bytes", l.max_body_bytes, GIB),
            ("limits.max_inputs", l.max_inputs, 1 << 20),
            ("limits.max_input_bytes", l.max_input_bytes, GIB),
            ("limits.max_k", l.max_k, 1 << 20),
            ("limits.max_new_tokens", l.max_new_tokens, 1 << 20),
            ("limits.max_connections", l.max_connections, 1 << 20),
            (
                "limits.max_body_bytes_in_flight",
                l.max_body_bytes_in_flight,
                64 * GIB,
            ),
            (
                "limits.max_requests_per_client",
                l.max_requests_per_client,
                1 << 20,
            ),
            ("batching.max_batch", self.batching.max_batch, 1 << 16),
            ("batching.queue", self.batching.queue, 1 << 20),
            ("batching.chat_batch", self.batching.chat_batch, 1024),
            ("batching.kv_cache_mib", self.batching.kv_cache_mib, 1 << 20),
            (
                "batching.prefill_chunk",
                self.batching.prefill_chunk,
                1 << 16,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(bad(field, format!("is {value}, expected 1..={max}")));
            }
        }
        if l.max_body_bytes_in_flight < l.max_body_bytes {
            return Err(bad(
                "limits.max_body_bytes_in_flight",
                format!(
                    "is {}, below limits.max_body_bytes ({}): no request could be read",
                    l.max_body_bytes_in_flight, l.max_body_bytes
                ),
            ));
        }
        check_durations(l)?;
        if self.batching.max_wait_ms > 10_000 {
            return Err(bad(
                "batching.max_wait_ms",
                format!("is {}, expected at most 10000", self.batching.max_wait_ms),
            ));
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(bad("token", "is empty".into()));
        }
        if !self.is_loopback() && self.token.is_none() && !self.allow_public {
            return Err(bad(
                "host",
                format!(
                    "is {}, beyond loopback, and no token is set: anyone who can reach it \
                     could use the models. Set a token (--token or KILN_SERVE_TOKEN), or \
                     --allow-public to serve without one",
                    self.host
                ),
            ));
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || h.len() > 253 || h.contains(['/', ' ', '@']) {
                return Err(bad("allowed_hosts", format!("{h:?} is not a host name")));
            }
        }
        self.validate_models()?;
        let embedder_known = |name: &str| self.embeddings.iter().any(|m| m.name == name);
        if let Some(s) = &self.search {
            if !embedder_known(&s.embedder) {
                return Err(bad(
                    "search.embedder",
                    format!("{:?} is not one of the embeddings", s.embedder),
                ));
            }
            match (&s.corpus, &s.index) {
                (Some(p), None) | (None, Some(p)) => {
                    self.resolve(p)?;
                }
                _ => {
                    return Err(bad("search", "give exactly one of corpus and index".into()));
                }
            }
        }
        if let Some(r) = &self.recommend {
            self.resolve(&r.path)?;
            if let Some(e) = r.embedder.as_deref().filter(|e| !embedder_known(e)) {
                return Err(bad(
                    "recommend.embedder",
                    format!("{e:?} is not one of the embeddings"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `host` is a loopback address (or `localhost`).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `relative` inside the models folder: refused when absolute or when it leaves the folder
    /// (`..`), and when it does not exist.
    ///
    /// # Errors
    /// [`ServeError::OutsideModels`] for an absolute path or one that leaves the folder;
    /// [`ServeError::Io`] when it does not exist.
    pub fn resolve(&self, relative: &Path) -> Result<PathBuf, ServeError> {
        let outside = |reason: &str| ServeError::OutsideModels {
            path: relative.to_owned(),
            reason: reason.to_owned(),
        };
        if relative.as_os_str().is_empty() {
            return Err(outside("the path is empty"));
        }
        for c in relative.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => return Err(outside("it contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(outside("it is absolute; paths are relative to models_dir"));
                }
            }
        }
        let path = self.models_dir.join(relative);
        if !path.exists() {
            return Err(ServeError::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
            });
        }
        Ok(path)
    }
}

/// The longest duration a setting may have, in seconds (a day).
pub const MAX_SECS: f64 = 86_400.0;

/// A model name requests may use: 1-64 letters, digits, `.`, `_` or `-`, not `.` or `..`.
///
/// # Errors
/// What is wrong with the name.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a model name (1-64 letters, digits, '.', '_' or '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_models_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        let config = ServeConfig::new(dir.path());
        assert!(config.resolve(Path::new("m")).is_ok());
        for bad in ["../m", "m/../../etc", "/etc/passwd", ""] {
            let err = config.resolve(Path::new(bad)).unwrap_err();
            assert!(
                matches!(err, ServeError::OutsideModels { .. }),
                "{bad}: {err}"
            );
        }
        let err = config.resolve(Path::new("absent")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn generators_take_activations_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        let file = dir.path().join("serve.toml");
        let write = |kind: &str, value: &str| {
            let text = format!(
                "models_dir = {:?}\n[[{kind}]]\nname = \"m\"\npath = \"m\"\nactivations = \"{value}\"\n",
                dir.path()
            );
            std::fs::write(&file, text).unwrap();
            ServeConfig::from_file(&file)
        };
        let config = write("generators", "int8").unwrap();
        assert_eq!(
            config.generators[0].activations,
            Some(ActivationsSetting::Int8)
        );
        assert_eq!(
            kiln_nlp::gguf::Activations::from(ActivationsSetting::Int8),
            kiln_nlp::gguf::Activations::Int8
        );
        let err = write("embeddings", "int8")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("embeddings.activations"), "{err}");
        let err = write("generators", "int4").unwrap_err().to_string();
        assert!(err.contains("int4"), "{err}");
        assert_eq!(ModelEntry::new("a", "b").activations, None);
    }

    #[test]
    fn names_and_values_are_checked() {
        for good in ["all-MiniLM-L6-v2", "a.b_c"] {
            assert!(check_name(good).is_ok());
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::new(dir.path());
        config.limits.max_inputs = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("limits.max_inputs"), "{err}");
        // Durations past a day (1e20 s overflowed Duration in every request), NaN, negative.
        for (value, ok) in [
            (1e20, false),
            (f64::NAN, false),
            (-1.0, false),
            (0.0, false),
            (86_400.0, true),
            (0.5, true),
        ] {
            let mut config = ServeConfig::new(dir.path());
            config.limits.timeout_secs = value;
            assert_eq!(config.validate().is_ok(), ok, "timeout_secs {value}");
        }
        let mut config = ServeConfig::new(dir.path());
        config.limits.shutdown_grace_secs = 0.0;
        assert!(config.validate().is_ok());
        config.limits.max_body_bytes_in_flight = config.limits.max_body_bytes - 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_body_bytes_in_flight"), "{err}");
        // Beyond loopback: a token, or --allow-public.
        let mut config = ServeConfig::new(dir.path());
        config.host = "0.0.0.0".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("host") && err.contains("--allow-public"),
            "{err}"
        );
        config.allow_public = true;
        assert!(config.validate().is_ok());
        config.allow_public = false;
        config.token = Some("t".into());
        assert!(config.validate().is_ok());
        for (host, loopback) in [
            ("127.0.0.1", true),
            ("localhost", true),
            ("::1", true),
            ("[::1]", true),
            ("127.0.0.2", true),
            ("0.0.0.0", false),
            ("192.168.1.2", false),
            ("example.com", false),
        ] {
            config.host = host.into();
            assert_eq!(config.is_loopback(), loopback, "{host}");
        }
        let mut config = ServeConfig::new(dir.path());
        config.search = Some(SearchEntry {
            embedder: "nope".into(),
            corpus: Some("c.txt".into()),
            index: None,
        });
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("search.embedder"), "{err}");
    }

    #[test]
    fn toml_files_parse_and_unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(
            &path,
            "models_dir = \"models\"\nport = 0\n[limits]\nmax_inputs = 8\n\
             [[embeddings]]\nname = \"m\"\npath = \"m\"\n",
        )
        .unwrap();
        let config = ServeConfig::from_file(&path).unwrap();
        assert_eq!(config.models_dir, dir.path().join("models"));
        assert_eq!(config.limits.max_inputs, 8);
        assert_eq!(config.limits.max_k, 100);
        assert_eq!(config.host, "127.0.0.1");
        std::fs::write(&path, "models_dir = \"m\"\nprot = 1\n").unwrap();
        let err = ServeConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("serve.toml") && err.contains("prot"), "{err}");
    }
}
