//! `POST /v1/chat/completions` and `POST /v1/completions` in OpenAI's shapes, with
//! server-sent events when `"stream": true` (`data: {chunk}` lines, then `data: [DONE]`).
//! Requests go to the model's scheduler ([`crate::generation`]), which stops a generation at
//! the next token once its client has gone (this future dropped), its deadline has passed or
//! the server is stopping; up to `batching.queue` requests run or wait per model, past that
//! the answer is 429. Fields OpenAI defines that Kiln does not honour are a 400 naming them,
//! never silently ignored.

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use kiln_nlp::chat::ChatMessage;
use kiln_nlp::generation::GenerationConfig;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::tools::ToolFields;
use super::{ApiJson, OneOrMany, Shared, pick};
use crate::error::ApiError;
use crate::generation::{Cancel, Finished, Job, Prompt, Sink};

/// Pieces of streamed text a slow reader may have waiting before the generation pauses its
/// sending (and, after `limits.stream_stall_secs`, drops the reader).
const STREAM_BUFFER: usize = 64;

/// Sampling fields both endpoints share.
#[derive(Debug, Deserialize)]
pub struct Sampling {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<OneOrMany>,
    #[serde(default)]
    stream: bool,
    /// `{"include_usage": true}`: a last chunk with the token counts (OpenAI's).
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Choices per request: 1 only.
    #[serde(default)]
    n: Option<u32>,
    /// Log-probabilities: not produced, so only `false`.
    #[serde(default)]
    logprobs: Option<Value>,
    /// `{"type": "text"}` only.
    #[serde(default)]
    response_format: Option<Value>,
    /// The end user's id (OpenAI's abuse monitoring): accepted, unused.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
    /// Every other field: refused by name.
    #[serde(flatten)]
    unknown: Map<String, Value>,
}

/// OpenAI's `stream_options`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` (and no choices) before `[DONE]`.
    #[serde(default)]
    include_usage: bool,
}

impl Sampling {
    /// Refuses the fields and values Kiln does not honour, naming them.
    fn check(&self) -> Result<(), ApiError> {
        if !self.unknown.is_empty() {
            let names: Vec<&str> = self.unknown.keys().map(String::as_str).collect();
            return Err(ApiError::bad_request(format!(
                "unsupported field(s) {names:?}; supported: model, messages or prompt, \
                 max_tokens, max_completion_tokens, temperature, top_p, seed, stop, stream, \
                 stream_options (include_usage), n (1), logprobs (false), response_format (text), user"
            )));
        }
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad_request(format!(
                "n is {n}: one choice per request is supported"
            )));
        }
        if let Some(l) = self
            .logprobs
            .as_ref()
            .filter(|l| **l != json!(false) && !l.is_null())
        {
            return Err(ApiError::bad_request(format!(
                "logprobs is {l}: log-probabilities are not produced"
            )));
        }
        if let Some(f) = &self.response_format
            && f.get("type").and_then(Value::as_str) != Some("text")
        {
            return Err(ApiError::bad_request(format!(
                "response_format is {f}: only {{\"type\": \"text\"}} is supported"
            )));
        }
        Ok(())
    }
}

/// A chat request.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    messages: Vec<ChatMessage>,
    /// Declared before `sampling`, whose catch-all takes every field left.
    #[serde(flatten)]
    tools: ToolFields,
    #[serde(flatten)]
    sampling: Sampling,
}

/// A completion request.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    prompt: String,
    #[serde(flatten)]
    sampling: Sampling,
}

pub async fn chat(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_request("messages is an empty list"));
    }
    let limit = state.config.limits.max_input_bytes * state.config.limits.max_inputs;
    let size: usize = req.messages.iter().map(|m| m.content.len()).sum();
    if size > limit {
        return Err(ApiError::too_large(format!(
            "the messages hold {size} bytes, at most {limit} are allowed"
        )));
    }
    let tools = req.tools.resolve()?;
    let mut messages = req.messages;
    super::tools::arguments_as_objects(&mut messages);
    let with_tools = tools.is_some();
    let prompt = Prompt::Chat { messages, tools };
    run(
        state,
        prompt,
        req.sampling,
        Kind::Chat { tools: with_tools },
    )
    .await
}

pub async fn completions(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    if req.prompt.is_empty() {
        return Err(ApiError::bad_request("prompt is empty"));
    }
    if req.prompt.len() > state.config.limits.max_input_bytes {
        return Err(ApiError::too_large(format!(
            "prompt has {} bytes, at most {} are allowed",
            req.prompt.len(),
            state.config.limits.max_input_bytes
        )));
    }
    run(
        state,
        Prompt::Text(req.prompt),
        req.sampling,
        Kind::Completion,
    )
    .await
}

fn generation_config(s: &Sampling, max_allowed: usize) -> Result<GenerationConfig, ApiError> {
    let max_new = s
        .max_completion_tokens
        .or(s.max_tokens)
        .unwrap_or(128.min(max_allowed));
    if max_new == 0 || max_new > max_allowed {
        return Err(ApiError::bad_request(format!(
            "max_tokens is {max_new}, expected 1..={max_allowed}"
        )));
    }
    let temperature = s.temperature.unwrap_or(0.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::bad_request(format!(
            "temperature is {temperature}, expected 0..=2"
        )));
    }
    let mut config = if temperature == 0.0 {
        GenerationConfig::greedy(max_new)
    } else {
        GenerationConfig::sampling(max_new, temperature, s.seed.unwrap_or(0))
    };
    if let Some(p) = s.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::bad_request(format!(
                "top_p is {p}, expected (0, 1]"
            )));
        }
        if p < 1.0 {
            config = config.with_top_p(p);
        }
    }
    if let Some(stop) = &s.stop {
        let stops = match stop {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        };
        if stops.len() > 4 || stops.iter().any(|s| s.is_empty() || s.len() > 256) {
            return Err(ApiError::bad_request(
                "stop: at most 4 strings of 1-256 bytes",
            ));
        }
        config = config.with_stop_strings(stops);
    }
    config
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(config)
}

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `/v1/chat/completions`; `tools`: the answer is read for tool calls.
    Chat { tools: bool },
    /// `/v1/completions`.
    Completion,
}

async fn run(
    state: Shared,
    prompt: Prompt,
    sampling: Sampling,
    kind: Kind,
) -> Result<Response, ApiError> {
    sampling.check()?;
    let (name, generator) = pick(&state.generators, sampling.model.as_deref(), "generator")?;
    let name = name.to_owned();
    let config = generation_config(&sampling, state.config.limits.max_new_tokens)?;
    let permit = generator.slots.clone().try_acquire_owned().map_err(|_| {
        state.metrics.rejected.with_label_values(&[&name]).inc();
        ApiError::overloaded(&name)
    })?;
    let meta = Meta::new(name, kind);
    let limits = &state.config.limits;
    let cancel = Cancel::new();
    // Raised when this future is dropped: the client left, or the timeout answered 503.
    let guard = cancel.guard();

    if !sampling.stream || meta.tools {
        let (reply, answer) = oneshot::channel();
        generator.scheduler.submit(Job {
            prompt,
            config,
            cancel,
            deadline: Instant::now() + Duration::from_secs_f64(limits.timeout_secs),
            sink: Sink::Whole(reply),
        })?;
        let done = answer
            .await
            .map_err(|_| ApiError::internal("the model's thread stopped"))??;
        drop((guard, permit));
        return Ok(whole_response(&meta, &done, &sampling));
    }

    let (ready, started) = oneshot::channel();
    let (text, pieces) = mpsc::channel(STREAM_BUFFER);
    let (done, end) = oneshot::channel();
    generator.scheduler.submit(Job {
        prompt,
        config,
        cancel,
        deadline: Instant::now() + Duration::from_secs_f64(limits.stream_timeout_secs),
        sink: Sink::Stream { ready, text, done },
    })?;
    // Errors before the first token (prompt too long, no chat template) are the request's.
    started
        .await
        .map_err(|_| ApiError::internal("the model's thread stopped"))??;
    // The stream holds the queue slot and the cancellation guard: both go when the client
    // stops reading and the body is dropped.
    Ok(stream_response(
        meta,
        &sampling,
        pieces,
        end,
        (guard, permit),
    ))
}

/// What every answer of a request carries: its id, time, model and endpoint.
#[derive(Clone)]
struct Meta {
    id: String,
    created: u64,
    name: String,
    chat: bool,
    tools: bool,
}

impl Meta {
    fn new(name: String, kind: Kind) -> Self {
        let chat = matches!(kind, Kind::Chat { .. });
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!(
            "{}-{created}-{}",
            if chat { "chatcmpl" } else { "cmpl" },
            next_id()
        );
        Self {
            id,
            created,
            name,
            chat,
            tools: matches!(kind, Kind::Chat { tools: true }),
        }
    }

    /// The `object` of a streamed chunk.
    fn chunk_object(&self) -> &'static str {
        if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        }
    }

    /// A streamed chunk of `delta` (the finish reason once at the end).
    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        let choice = if self.chat {
            json!({"index": 0, "delta": delta, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "finish_reason": finish})
        };
        json!({"id": self.id, "object": self.chunk_object(), "created": self.created,
               "model": self.name, "choices": [choice]})
        .to_string()
    }

    /// The last chunk of a stream that asked for `include_usage`.
    fn usage_chunk(&self, done: &Finished) -> String {
        json!({"id": self.id, "object": self.chunk_object(), "created": self.created,
               "model": self.name, "choices": [], "usage": usage(done)})
        .to_string()
    }
}

fn include_usage(sampling: &Sampling) -> bool {
    sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage)
}

/// The whole answer (or, with tools and `stream`, its events at once).
fn whole_response(meta: &Meta, done: &Finished, sampling: &Sampling) -> Response {
    if meta.tools {
        let (message, finish) = super::tools::answer(&done.text, done.finish_reason, &meta.id);
        if sampling.stream {
            return tool_stream(meta, &message, finish, sampling, done);
        }
        return Json(json!({
            "id": meta.id, "object": "chat.completion", "created": meta.created,
            "model": meta.name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage(done),
        }))
        .into_response();
    }
    let choice = if meta.chat {
        json!({"index": 0, "message": {"role": "assistant", "content": done.text}, "finish_reason": done.finish_reason})
    } else {
        json!({"index": 0, "text": done.text, "finish_reason": done.finish_reason})
    };
    Json(json!({
        "id": meta.id,
        "object": if meta.chat { "chat.completion" } else { "text_completion" },
        "created": meta.created,
        "model": meta.name,
        "choices": [choice],
        "usage": usage(done),
    }))
    .into_response()
}

/// Server-sent events of a generation as it runs, holding `held` until the body is dropped.
fn stream_response(
    meta: Meta,
    sampling: &Sampling,
    pieces: mpsc::Receiver<String>,
    end: oneshot::Receiver<Result<Finished, ApiError>>,
    held: (
        crate::generation::CancelOnDrop,
        tokio::sync::OwnedSemaphorePermit,
    ),
) -> Response {
    let usage_chunk: Option<UsageChunk> = include_usage(sampling).then(|| {
        let meta = meta.clone();
        Box::new(move |done: &Finished| meta.usage_chunk(done)) as _
    });
    let first = meta
        .chat
        .then(|| meta.chunk(json!({"role": "assistant", "content": ""}), None));
    let state = StreamBody {
        first,
        pieces,
        end: Some(end),
        tail: Vec::new(),
        chunk: Box::new(move |delta, finish| meta.chunk(delta, finish)),
        usage_chunk,
        _held: held,
    };
    let events = stream::unfold(state, |mut s| async move {
        let data = s.next().await?;
        Some((Ok::<_, Infallible>(Event::default().data(data)), s))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

type Chunk = Box<dyn Fn(Value, Option<&str>) -> String + Send>;
type UsageChunk = Box<dyn Fn(&Finished) -> String + Send>;

/// The events of a stream: the role, the pieces of text, the end, `[DONE]`.
struct StreamBody {
    first: Option<String>,
    pieces: mpsc::Receiver<String>,
    end: Option<oneshot::Receiver<Result<Finished, ApiError>>>,
    /// Events left after the end.
    tail: Vec<String>,
    chunk: Chunk,
    /// The usage chunk, when the request asked for it.
    usage_chunk: Option<UsageChunk>,
    _held: (
        crate::generation::CancelOnDrop,
        tokio::sync::OwnedSemaphorePermit,
    ),
}

impl StreamBody {
    async fn next(&mut self) -> Option<String> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if let Some(end) = self.end.take() {
            if let Some(piece) = self.pieces.recv().await {
                self.end = Some(end);
                return Some((self.chunk)(json!({"content": piece}), None));
            }
            let mut tail = Vec::new();
            match end.await {
                Ok(Ok(done)) => {
                    if !done.text.is_empty() {
                        tail.push((self.chunk)(json!({"content": done.text}), None));
                    }
                    tail.push((self.chunk)(json!({}), Some(done.finish_reason)));
                    if let Some(usage) = &self.usage_chunk {
                        tail.push(usage(&done));
                    }
                }
                Ok(Err(e)) => tail.push(
                    json!({"error": {"message": e.message, "type": e.kind(), "code": e.status.as_u16()}})
                        .to_string(),
                ),
                Err(_) => tail.push((self.chunk)(json!({}), Some("error"))),
            }
            tail.push("[DONE]".into());
            tail.reverse();
            self.tail = tail;
        }
        self.tail.pop()
    }
}

/// A streamed answer with tools, sent whole at its end: the role, the content or the calls,
/// the finish reason, the usage if asked for, `[DONE]`.
fn tool_stream(
    meta: &Meta,
    message: &Value,
    finish: &str,
    sampling: &Sampling,
    done: &Finished,
) -> Response {
    let mut events = vec![
        meta.chunk(json!({"role": "assistant", "content": ""}), None),
        meta.chunk(super::tools::delta(message), None),
        meta.chunk(json!({}), Some(finish)),
    ];
    if include_usage(sampling) {
        events.push(meta.usage_chunk(done));
    }
    events.push("[DONE]".into());
    let events = stream::iter(
        events
            .into_iter()
            .map(|data| Ok::<_, Infallible>(Event::default().data(data))),
    );
    Sse::new(events).into_response()
}

fn usage(done: &Finished) -> Value {
    json!({
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    })
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
