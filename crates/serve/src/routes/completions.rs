//! `POST /v1/chat/completions` and `POST /v1/completions` in OpenAI's shapes, with
//! server-sent events when `"stream": true` (`data: {chunk}` lines, then `data: [DONE]`).
//! One generation runs at a time per model (decoding is bound by memory bandwidth); up to
//! `batching.queue` requests wait, past that the answer is 429.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use kiln_nlp::chat::ChatMessage;
use kiln_nlp::generate::{GenerationConfig, StopReason};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, OneOrMany, Shared, blocking, pick};
use crate::error::ApiError;

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
}

/// A chat request.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    messages: Vec<ChatMessage>,
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

enum Prompt {
    Chat(Vec<ChatMessage>),
    Text(String),
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
    run(state, Prompt::Chat(req.messages), req.sampling, true).await
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
    run(state, Prompt::Text(req.prompt), req.sampling, false).await
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

fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::MaxNewTokens => "length",
        _ => "stop",
    }
}

async fn run(
    state: Shared,
    prompt: Prompt,
    sampling: Sampling,
    chat: bool,
) -> Result<Response, ApiError> {
    let (name, generator) = pick(&state.generators, sampling.model.as_deref(), "generator")?;
    let name = name.to_owned();
    let config = generation_config(&sampling, state.config.limits.max_new_tokens)?;
    let permit = generator
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded(&name))?;
    let model = generator.model.clone();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!(
        "{}-{created}-{}",
        if chat { "chatcmpl" } else { "cmpl" },
        next_id()
    );
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };

    if !sampling.stream {
        let out = blocking(move || {
            let _permit = permit;
            let model = model
                .lock()
                .map_err(|_| ApiError::internal("the model is poisoned"))?;
            let ids = encode(&model, &prompt)?;
            let out = model
                .generate(&ids, &config, |_| true)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let text = model
                .decode(&out.ids)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok((ids.len(), out, text))
        })
        .await?;
        let (prompt_tokens, generation, text) = out;
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(&generation.stop)})
        } else {
            json!({"index": 0, "text": text, "finish_reason": finish_reason(&generation.stop)})
        };
        return Ok(Json(json!({
            "id": id,
            "object": object,
            "created": created,
            "model": name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": generation.ids.len(),
                "total_tokens": prompt_tokens + generation.ids.len(),
            },
        }))
        .into_response());
    }

    // Streaming: the model thread sends each piece of new text as a chunk.
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(64);
    let chunk = move |delta: Value, finish: Option<&str>| -> Value {
        if chat {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        } else {
            json!({"id": id, "object": "text_completion", "created": created, "model": name,
                   "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "finish_reason": finish}]})
        }
    };
    // Errors before the first token (prompt too long, no chat template) are the request's.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let Ok(model) = model.lock() else {
            let _ = ready_tx.send(Err(ApiError::internal("the model is poisoned")));
            return;
        };
        let ids = match encode(&model, &prompt) {
            Ok(ids) => ids,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        if chat {
            let _ = tx.blocking_send(chunk(json!({"role": "assistant", "content": ""}), None));
        }
        let mut new_ids = Vec::new();
        let mut sent = String::new();
        let result = model.generate(&ids, &config, |id| {
            new_ids.push(id);
            let Ok(text) = model.decode(&new_ids) else {
                return true;
            };
            // Wait for the rest of a character split across tokens.
            if text.ends_with('\u{FFFD}') || text.len() <= sent.len() {
                return true;
            }
            let delta = text.get(sent.len()..).unwrap_or("").to_string();
            if !text.starts_with(&sent) || delta.is_empty() {
                return true;
            }
            sent = text;
            // A closed channel: the client has gone, stop generating.
            tx.blocking_send(chunk(json!({"content": delta}), None))
                .is_ok()
        });
        // What was held back (a character still incomplete at the end) goes out now.
        if let Ok(text) = model.decode(&new_ids)
            && text.len() > sent.len()
            && text.starts_with(&sent)
        {
            let _ = tx.blocking_send(chunk(json!({"content": &text[sent.len()..]}), None));
        }
        let finish = match &result {
            Ok(g) => finish_reason(&g.stop),
            Err(_) => "error",
        };
        let _ = tx.blocking_send(chunk(json!({}), Some(finish)));
    });
    ready_rx
        .await
        .map_err(|_| ApiError::internal("the generation thread stopped"))??;
    let events = stream::unfold((rx, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        match rx.recv().await {
            Some(v) => Some((
                Ok::<_, Infallible>(Event::default().data(v.to_string())),
                (rx, false),
            )),
            None => Some((Ok(Event::default().data("[DONE]")), (rx, true))),
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn encode(
    model: &kiln_nlp::generator::TextGenerator,
    prompt: &Prompt,
) -> Result<Vec<u32>, ApiError> {
    let ids = match prompt {
        Prompt::Chat(messages) => model.encode_chat(messages),
        Prompt::Text(text) => model.encode(text),
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if ids.is_empty() {
        return Err(ApiError::bad_request("the prompt has no tokens"));
    }
    if ids.len() >= model.max_positions() {
        return Err(ApiError::too_large(format!(
            "the prompt has {} tokens, the model takes at most {}",
            ids.len(),
            model.max_positions() - 1
        )));
    }
    Ok(ids)
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
