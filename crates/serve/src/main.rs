//! `kiln-serve`: loads the models a config file or flags name and serves them until SIGTERM.
//!
//! ```text
//! kiln-serve --models ../shared/models --embeddings all-MiniLM-L6-v2
//! kiln-serve --config serve.toml --port 9000
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln_serve::config::{ActivationsSetting, ModelEntry, RecommendEntry, SearchEntry};
use kiln_serve::{AppState, Metrics, ServeConfig, ServeError};

/// Serve Kiln models over HTTP.
#[derive(Parser, Debug)]
#[command(name = "kiln-serve")]
struct Args {
    /// A TOML config file (flags override it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The models folder: every model path is relative to it.
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1].
    #[arg(long)]
    host: Option<String>,
    /// Port (0: any free port) [default: 8080].
    #[arg(long)]
    port: Option<u16>,
    /// Bearer token for /v1/* and /metrics (also KILN_SERVE_TOKEN).
    #[arg(long, env = "KILN_SERVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Backend: cpu, flex, ndarray, wgpu, cuda.
    #[arg(long)]
    backend: Option<String>,
    /// An embedding model: PATH (named after its folder) or NAME=PATH.
    #[arg(long, value_name = "[NAME=]PATH")]
    embeddings: Vec<String>,
    /// A text file (one document per line) to search, embedded at start.
    #[arg(long, value_name = "PATH")]
    search_corpus: Option<PathBuf>,
    /// The embedding model of the search (default: the only one).
    #[arg(long, value_name = "NAME")]
    search_embedder: Option<String>,
    /// A recommender bundle (`movielens --export`).
    #[arg(long, value_name = "PATH")]
    recommend: Option<PathBuf>,
    /// Embed item titles with this model: new users get items by their description.
    #[arg(long, value_name = "NAME")]
    recommend_embedder: Option<String>,
    /// A text classifier folder (`finetune --export`): [NAME=]PATH.
    #[arg(long, value_name = "[NAME=]PATH")]
    classifier: Vec<String>,
    /// An image classifier folder (`mnist --export`): [NAME=]PATH.
    #[arg(long, value_name = "[NAME=]PATH")]
    image_classifier: Vec<String>,
    /// A decoder folder for chat and completions: [NAME=]PATH.
    #[arg(long, value_name = "[NAME=]PATH")]
    generator: Vec<String>,
    /// How the `--generator` GGUF files' products treat their activations: f32 (the
    /// default) or int8 (llama.cpp's arithmetic, faster).
    #[arg(long, value_enum)]
    activations: Option<ActivationsSetting>,
    /// Most inputs per model call.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Milliseconds the first request of a batch waits for others.
    #[arg(long)]
    max_wait_ms: Option<u64>,
    /// Requests that may wait per model before 429.
    #[arg(long)]
    queue: Option<usize>,
    /// Chat requests decoding together per generator (continuous batching).
    #[arg(long)]
    chat_batch: Option<usize>,
    /// MiB of key/value cache a generator's running requests may reserve.
    #[arg(long)]
    kv_cache_mib: Option<usize>,
    /// Prompt tokens a generator reads per step beside the running decodes.
    #[arg(long)]
    prefill_chunk: Option<usize>,
    /// Largest request body in bytes.
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Most inputs per request.
    #[arg(long)]
    max_inputs: Option<usize>,
    /// Seconds before a request is answered 503.
    #[arg(long)]
    timeout_secs: Option<f64>,
    /// Seconds a streamed generation may run in all.
    #[arg(long)]
    stream_timeout_secs: Option<f64>,
    /// Seconds a streaming client may read nothing before it is dropped.
    #[arg(long)]
    stream_stall_secs: Option<f64>,
    /// Seconds a connection may take to send its request headers (and stay idle).
    #[arg(long)]
    header_timeout_secs: Option<f64>,
    /// Seconds the requests in flight get at SIGTERM before connections are closed.
    #[arg(long)]
    shutdown_grace_secs: Option<f64>,
    /// Open connections at most.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Bytes of request bodies in flight at most, over all connections.
    #[arg(long)]
    max_body_bytes_in_flight: Option<usize>,
    /// Requests one client address may have in flight.
    #[arg(long)]
    max_requests_per_client: Option<usize>,
    /// Serve beyond loopback without a token.
    #[arg(long)]
    allow_public: bool,
    /// A host name accepted in the Host header on loopback (besides localhost, 127.0.0.1, [::1]).
    #[arg(long, value_name = "NAME")]
    allowed_host: Vec<String>,
    /// Threads of the HTTP side (parsing, routing, answering); the models compute on their
    /// own threads.
    #[arg(long, default_value_t = 2)]
    http_threads: usize,
}

fn entry(spec: &str) -> ModelEntry {
    match spec.split_once('=') {
        Some((name, path)) => ModelEntry::new(name, path),
        None => {
            let path = PathBuf::from(spec);
            let name = path
                .file_stem()
                .map_or_else(|| spec.to_owned(), |n| n.to_string_lossy().into_owned());
            ModelEntry::new(name, path)
        }
    }
}

fn config(args: Args) -> Result<ServeConfig, ServeError> {
    let mut c = match (&args.config, &args.models) {
        (Some(file), _) => ServeConfig::from_file(file)?,
        (None, Some(dir)) => ServeConfig::new(dir),
        (None, None) => {
            return Err(ServeError::Invalid {
                field: "--models".into(),
                reason: "is required without --config (the folder the models are in)".into(),
            });
        }
    };
    if let Some(dir) = args.models {
        c.models_dir = dir;
    }
    if let Some(h) = args.host {
        c.host = h;
    }
    if let Some(p) = args.port {
        c.port = p;
    }
    if args.token.is_some() {
        c.token = args.token;
    }
    if let Some(b) = args.backend {
        c.backend = b;
    }
    c.embeddings
        .extend(args.embeddings.iter().map(|s| entry(s)));
    c.classifiers
        .extend(args.classifier.iter().map(|s| entry(s)));
    c.image_classifiers
        .extend(args.image_classifier.iter().map(|s| entry(s)));
    if args.activations.is_some() && args.generator.is_empty() {
        return Err(ServeError::Invalid {
            field: "--activations".into(),
            reason: "applies to the --generator entries and there is none".into(),
        });
    }
    c.generators
        .extend(args.generator.iter().map(|s| ModelEntry {
            activations: args.activations,
            ..entry(s)
        }));
    let only_embedder = || (c.embeddings.len() == 1).then(|| c.embeddings[0].name.clone());
    if let Some(corpus) = args.search_corpus {
        let embedder =
            args.search_embedder
                .or_else(only_embedder)
                .ok_or_else(|| ServeError::Invalid {
                    field: "--search-embedder".into(),
                    reason: "is required when there is not exactly one --embeddings".into(),
                })?;
        c.search = Some(SearchEntry {
            embedder,
            corpus: Some(corpus),
            index: None,
        });
    }
    if let Some(path) = args.recommend {
        c.recommend = Some(RecommendEntry {
            path,
            embedder: args.recommend_embedder,
        });
    }
    let (b, l) = (&mut c.batching, &mut c.limits);
    b.max_batch = args.max_batch.unwrap_or(b.max_batch);
    b.max_wait_ms = args.max_wait_ms.unwrap_or(b.max_wait_ms);
    b.queue = args.queue.unwrap_or(b.queue);
    b.chat_batch = args.chat_batch.unwrap_or(b.chat_batch);
    b.kv_cache_mib = args.kv_cache_mib.unwrap_or(b.kv_cache_mib);
    b.prefill_chunk = args.prefill_chunk.unwrap_or(b.prefill_chunk);
    l.max_body_bytes = args.max_body_bytes.unwrap_or(l.max_body_bytes);
    l.max_inputs = args.max_inputs.unwrap_or(l.max_inputs);
    l.timeout_secs = args.timeout_secs.unwrap_or(l.timeout_secs);
    l.stream_timeout_secs = args.stream_timeout_secs.unwrap_or(l.stream_timeout_secs);
    l.stream_stall_secs = args.stream_stall_secs.unwrap_or(l.stream_stall_secs);
    l.header_timeout_secs = args.header_timeout_secs.unwrap_or(l.header_timeout_secs);
    l.shutdown_grace_secs = args.shutdown_grace_secs.unwrap_or(l.shutdown_grace_secs);
    l.max_connections = args.max_connections.unwrap_or(l.max_connections);
    l.max_body_bytes_in_flight = args
        .max_body_bytes_in_flight
        .unwrap_or(l.max_body_bytes_in_flight);
    l.max_requests_per_client = args
        .max_requests_per_client
        .unwrap_or(l.max_requests_per_client);
    c.allow_public |= args.allow_public;
    c.allowed_hosts.extend(args.allowed_host);
    c.validate()?;
    if !c.is_loopback() && c.token.is_none() {
        eprintln!(
            "kiln-serve: warning: serving {} without a token (--allow-public): anyone who can \
             reach it can use the models",
            c.host
        );
    }
    Ok(c)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-serve: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), ServeError> {
    if args.http_threads == 0 || args.http_threads > 256 {
        return Err(ServeError::Invalid {
            field: "--http-threads".into(),
            reason: format!("is {}, expected 1..=256", args.http_threads),
        });
    }
    let http_threads = args.http_threads;
    let config = config(args)?;
    let started = std::time::Instant::now();
    let state = AppState::load(config, Metrics::new())?;
    eprintln!(
        "kiln-serve: models loaded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(http_threads)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Invalid {
            field: "runtime".into(),
            reason: e.to_string(),
        })?;
    runtime.block_on(async {
        let server = kiln_serve::start(state).await?;
        // Scripts and tests read the address from this line.
        println!("kiln-serve: listening on http://{}", server.addr());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        kiln_serve::termination().await;
        eprintln!(
            "kiln-serve: stopping, finishing the requests in flight (a second signal exits now)"
        );
        tokio::spawn(async {
            kiln_serve::termination().await;
            eprintln!("kiln-serve: second signal, exiting now");
            std::process::exit(1);
        });
        server.shutdown().await.map_err(|e| ServeError::Invalid {
            field: "shutdown".into(),
            reason: e.to_string(),
        })?;
        eprintln!("kiln-serve: stopped");
        Ok(())
    })
}
