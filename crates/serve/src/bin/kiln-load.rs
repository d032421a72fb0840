//! `kiln-load`: a load generator for `/v1/embeddings`, or with `--chat` for streamed
//! `/v1/chat/completions` (the one `cargo xtask load` runs; any OpenAI-shaped server, such
//! as llama.cpp's, takes the chat load).
//!
//! Closed loop (`--clients N`): N clients each send a request as soon as their last one is
//! answered, for `--seconds`. Open loop (`--rate R`): R requests a second whatever the
//! answers, the way traffic past the sustainable rate arrives. Texts come from `--input` (one
//! per line) in turn. A JSON report gives requests by status, texts embedded per second and
//! latency percentiles; for chat, each text is a user message answered greedily with at most
//! `--max-tokens` tokens, and the report adds the new tokens per second over all clients
//! (`usage.completion_tokens` of the last chunk, else one per content chunk), the time to the
//! first token and the time between tokens (between content chunks).
//!
//! ```text
//! kiln-load --url http://127.0.0.1:8080 --input sentences.txt --clients 64 --seconds 30
//! kiln-load --url http://127.0.0.1:8080 --input prompts.txt --chat --max-tokens 64 --clients 16
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

/// Load a Kiln server's /v1/embeddings.
#[derive(Parser, Debug)]
#[command(name = "kiln-load")]
struct Args {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    url: String,
    /// Texts, one per line.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Closed loop: this many concurrent clients.
    #[arg(long, conflicts_with = "rate")]
    clients: Option<usize>,
    /// Open loop: requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: most requests outstanding (past it, ticks are counted as not sent).
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// How long to send.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Texts per request.
    #[arg(long, default_value_t = 1)]
    per_request: usize,
    /// The model name to send (none: the server's only one).
    #[arg(long)]
    model: Option<String>,
    /// Bearer token.
    #[arg(long, env = "KILN_SERVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where to write the JSON report (also printed).
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Streamed chat completions instead of embeddings.
    #[arg(long)]
    chat: bool,
    /// Chat: most new tokens per answer.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, usize>,
    latencies_ms: Vec<f64>,
    texts_ok: usize,
    /// Chat: new tokens of the answered requests.
    tokens: usize,
    /// Chat: time to the first content chunk.
    first_ms: Vec<f64>,
    /// Chat: times between content chunks.
    gaps_ms: Vec<f64>,
}

/// What one streamed chat answer gave.
#[derive(Default)]
struct ChatAnswer {
    tokens: usize,
    first_ms: Option<f64>,
    gaps_ms: Vec<f64>,
}

/// Reads a chat completion's server-sent events: content chunks timed, the usage counted.
async fn read_chat(response: reqwest::Response, sent: Instant) -> Result<ChatAnswer, String> {
    use futures_util::StreamExt;
    let mut answer = ChatAnswer::default();
    let mut chunks = 0usize;
    let mut usage = None;
    let mut last: Option<Instant> = None;
    let mut pending = String::new();
    let mut body = response.bytes_stream();
    while let Some(bytes) = body.next().await {
        let bytes = bytes.map_err(|e| e.to_string())?;
        pending.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            let Some(data) = line.trim().strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                usage = Some(n as usize);
            }
            let content = v["choices"][0]["delta"]["content"].as_str().unwrap_or("");
            if !content.is_empty() {
                let now = Instant::now();
                match last {
                    None => answer.first_ms = Some((now - sent).as_secs_f64() * 1e3),
                    Some(t) => answer.gaps_ms.push((now - t).as_secs_f64() * 1e3),
                }
                last = Some(now);
                chunks += 1;
            }
        }
    }
    answer.tokens = usage.unwrap_or(chunks);
    Ok(answer)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &Args) -> Result<(), String> {
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err(format!("--seconds {} must be in (0, 3600]", args.seconds));
    }
    if args.per_request == 0 {
        return Err("--per-request must be at least 1".into());
    }
    if args.chat && !(1..=1 << 20).contains(&args.max_tokens) {
        return Err(format!(
            "--max-tokens {} must be in 1..=1048576",
            args.max_tokens
        ));
    }
    match (args.clients, args.rate) {
        (Some(0), _) => Err("--clients must be at least 1".into()),
        (None, Some(r)) if !(r.is_finite() && r > 0.0 && r <= 1e6) => {
            Err(format!("--rate {r} must be in (0, 1e6]"))
        }
        (None, None) => Err("give --clients N (closed loop) or --rate R (open loop)".into()),
        _ => Ok(()),
    }
}

fn run(args: Args) -> Result<(), String> {
    validate(&args)?;
    let text = std::fs::read(&args.input).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let texts: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if texts.is_empty() {
        return Err(format!("{}: no text", args.input.display()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime.block_on(load(&args, Arc::new(texts)))?;
    let line = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{line}");
    if let Some(path) = &args.report {
        std::fs::write(path, &line).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn one(
    client: &reqwest::Client,
    args: &Args,
    texts: &[String],
    next: &AtomicUsize,
    tally: &Mutex<Tally>,
) {
    let start = next.fetch_add(args.per_request, Ordering::Relaxed);
    let input: Vec<&str> = (0..args.per_request)
        .map(|i| texts[(start + i) % texts.len()].as_str())
        .collect();
    let (mut body, route) = if args.chat {
        let body = json!({
            "messages": [{"role": "user", "content": input.join(" ")}],
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        (body, "chat/completions")
    } else {
        (json!({ "input": input }), "embeddings")
    };
    if let Some(m) = &args.model {
        body["model"] = json!(m);
    }
    let mut request = client.post(format!("{}/v1/{route}", args.url)).json(&body);
    if let Some(t) = &args.token {
        request = request.bearer_auth(t);
    }
    let sent = Instant::now();
    let mut chat = None;
    let status = match request.send().await {
        Ok(r) if args.chat && r.status().is_success() => {
            let status = r.status().as_u16().to_string();
            match read_chat(r, sent).await {
                Ok(answer) => {
                    chat = Some(answer);
                    status
                }
                Err(_) => "body error".to_string(),
            }
        }
        Ok(r) => {
            let status = r.status().as_u16().to_string();
            // Read the whole body: the answer is complete only then.
            match r.bytes().await {
                Ok(_) => status,
                Err(_) => "body error".to_string(),
            }
        }
        Err(e) if e.is_connect() => "connect error".to_string(),
        Err(e) if e.is_timeout() => "client timeout".to_string(),
        Err(_) => "request error".to_string(),
    };
    let ms = sent.elapsed().as_secs_f64() * 1e3;
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    if status == "200" {
        t.texts_ok += args.per_request;
        t.latencies_ms.push(ms);
        if let Some(answer) = chat {
            t.tokens += answer.tokens;
            t.first_ms.extend(answer.first_ms);
            t.gaps_ms.extend(answer.gaps_ms);
        }
    }
    *t.statuses.entry(status).or_default() += 1;
}

async fn load(args: &Args, texts: Arc<Vec<String>>) -> Result<serde_json::Value, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| e.to_string())?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let args = Arc::new(ArgsView::from(args));
    let duration = Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut not_sent = 0usize;
    let mut tasks = Vec::new();
    if let Some(clients) = args.clients {
        for _ in 0..clients {
            let (client, args, texts, next, tally) = (
                client.clone(),
                args.clone(),
                texts.clone(),
                next.clone(),
                tally.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while started.elapsed() < duration {
                    one(&client, &args.0, &texts, &next, &tally).await;
                }
            }));
        }
    } else {
        let rate = args.rate.unwrap_or(1.0);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let in_flight = Arc::new(AtomicUsize::new(0));
        while started.elapsed() < duration {
            ticker.tick().await;
            if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                not_sent += 1;
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (client, args, texts, next, tally, in_flight) = (
                client.clone(),
                args.clone(),
                texts.clone(),
                next.clone(),
                tally.clone(),
                in_flight.clone(),
            );
            tasks.push(tokio::spawn(async move {
                one(&client, &args.0, &texts, &next, &tally).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            }));
        }
    }
    let sending = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    t.latencies_ms.sort_by(f64::total_cmp);
    t.first_ms.sort_by(f64::total_cmp);
    t.gaps_ms.sort_by(f64::total_cmp);
    let of = |v: &[f64], p: f64| -> Option<f64> {
        let n = v.len();
        (n > 0).then(|| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1])
    };
    let pct = |p: f64| of(&t.latencies_ms, p);
    let requests: usize = t.statuses.values().sum();
    let chat = args.chat.then(|| {
        json!({
            "max_tokens": args.max_tokens,
            "tokens": t.tokens,
            "tokens_per_second": t.tokens as f64 / elapsed.max(1e-9),
            "first_token_ms_p50": of(&t.first_ms, 0.50),
            "first_token_ms_p99": of(&t.first_ms, 0.99),
            "token_gap_ms_p50": of(&t.gaps_ms, 0.50),
            "token_gap_ms_p90": of(&t.gaps_ms, 0.90),
            "token_gap_ms_p99": of(&t.gaps_ms, 0.99),
        })
    });
    Ok(json!({
        "chat": chat,
        "mode": if args.clients.is_some() { "closed" } else { "open" },
        "clients": args.clients,
        "rate": args.rate,
        "per_request": args.per_request,
        "seconds_sending": sending,
        "seconds": elapsed,
        "requests": requests,
        "not_sent": not_sent,
        "statuses": t.statuses,
        "texts_ok": t.texts_ok,
        "texts_per_second": t.texts_ok as f64 / elapsed.max(1e-9),
        "requests_per_second": requests as f64 / elapsed.max(1e-9),
        "latency_ms_p50": pct(0.50),
        "latency_ms_p90": pct(0.90),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": t.latencies_ms.last(),
    }))
}

/// The arguments, shared by the tasks.
struct ArgsView(Args);

impl From<&Args> for ArgsView {
    fn from(a: &Args) -> Self {
        Self(Args {
            url: a.url.trim_end_matches('/').to_owned(),
            input: a.input.clone(),
            clients: a.clients,
            rate: a.rate,
            max_in_flight: a.max_in_flight,
            seconds: a.seconds,
            per_request: a.per_request,
            model: a.model.clone(),
            token: a.token.clone(),
            report: a.report.clone(),
            chat: a.chat,
            max_tokens: a.max_tokens,
        })
    }
}

impl std::ops::Deref for ArgsView {
    type Target = Args;
    fn deref(&self) -> &Args {
        &self.0
    }
}
