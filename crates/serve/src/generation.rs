//! The chat models' scheduler: each decoder is owned by one thread, which takes requests from
//! a queue and generates for them, so no lock is held across a generation and a slow client
//! can never block the model.
//!
//! - **Cancellation.** Every job carries a [`Cancel`] flag, raised when its client goes (the
//!   request's future is dropped: a disconnect, the request timeout's 503, the server's
//!   shutdown) or a streaming client stops reading for `limits.stream_stall_secs`; and a
//!   deadline. The generation checks them at every token, and jobs waiting in the queue are
//!   dropped as soon as they are cancelled (the queue is swept at every token), so an abandoned
//!   request frees the model within one token.
//! - **Streams never block.** New text goes to the client over a bounded channel with
//!   `try_send`; a full channel keeps the text for the next token, and a channel full for
//!   longer than the stall time drops the client. The end of a generation goes over a
//!   oneshot channel, so finishing never waits on the reader either.
//! - **Panics fail one request.** A generation that panics answers its request with a 500
//!   and the thread goes on with the next one.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use kiln_nlp::chat::ChatMessage;
use kiln_nlp::generation::TextGenerator;
use kiln_nlp::generation::{BatchLimits, ContinuousBatch};
use kiln_nlp::generation::{Generation, GenerationConfig, StopReason};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

mod batched;

/// What a request asks to continue.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Chat messages, rendered by the model's chat template (with tool definitions, if
    /// any).
    Chat {
        /// The conversation.
        messages: Vec<ChatMessage>,
        /// Function definitions for templates that render them.
        tools: Option<Vec<serde_json::Value>>,
    },
    /// Plain text.
    Text(String),
}

/// The model side of the scheduler: [`TextGenerator`], or a stand-in in tests.
pub trait Decoder: Send + 'static {
    /// The prompt's token ids (an error for the client: no template, too long, ...).
    ///
    /// # Errors
    /// An [`ApiError`] for the client: no template, a prompt past the context, a tokenizer failure.
    fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError>;
    /// Generates after `prompt`; `on_token` sees each new id and returns `false` to stop.
    ///
    /// # Errors
    /// The model's error message.
    fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation, String>;
    /// The text of `ids`.
    ///
    /// # Errors
    /// The tokenizer's error message.
    fn decode(&self, ids: &[u32]) -> Result<String, String>;
    /// A continuous batch on the model, where it has one (the packed CPU path).
    fn batch(&self, _limits: BatchLimits) -> Option<ContinuousBatch<'_>> {
        None
    }
}

impl Decoder for TextGenerator {
    fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
        let ids = match prompt {
            Prompt::Chat { messages, tools } => {
                self.encode_chat_with_tools(messages, tools.as_deref())
            }
            Prompt::Text(text) => TextGenerator::encode(self, text),
        }
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if ids.is_empty() {
            return Err(ApiError::bad_request("the prompt has no tokens"));
        }
        if ids.len() >= self.max_positions() {
            return Err(ApiError::too_large(format!(
                "the prompt has {} tokens, the model takes at most {}",
                ids.len(),
                self.max_positions() - 1
            )));
        }
        Ok(ids)
    }

    fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation, String> {
        TextGenerator::generate(self, prompt, config, on_token).map_err(|e| e.to_string())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        TextGenerator::decode(self, ids).map_err(|e| e.to_string())
    }

    fn batch(&self, limits: BatchLimits) -> Option<ContinuousBatch<'_>> {
        // The limits are checked when the configuration is read.
        self.continuous(limits).ok().flatten()
    }
}

/// A request's cancellation flag; [`Cancel::guard`] raises it when dropped.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A lowered flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether it was raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A guard that raises the flag when dropped (held by the request's future, which is
    /// dropped when its client goes).
    pub fn guard(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// Raises its [`Cancel`] when dropped.
#[derive(Debug)]
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// How a finished generation ended.
#[derive(Debug)]
pub struct Finished {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// New tokens.
    pub completion_tokens: usize,
    /// The whole new text (non-streaming), or what was held back from the stream.
    pub text: String,
    /// OpenAI's `finish_reason`: `stop` or `length`.
    pub finish_reason: &'static str,
}

/// Where a job's output goes.
pub enum Sink {
    /// The whole answer at the end.
    Whole(oneshot::Sender<Result<Finished, ApiError>>),
    /// Text as it comes, then the end.
    Stream {
        /// The prompt's token count once it is encoded, or its error.
        ready: oneshot::Sender<Result<usize, ApiError>>,
        /// New text, bounded.
        text: mpsc::Sender<String>,
        /// The end (the text still held back, the reason) or a failure after the start.
        done: oneshot::Sender<Result<Finished, ApiError>>,
    },
}

/// One request for the model.
pub struct Job {
    /// What to continue.
    pub prompt: Prompt,
    /// Sampling and limits.
    pub config: GenerationConfig,
    /// Raised when the client goes.
    pub cancel: Cancel,
    /// When the generation must stop (as if its client had gone).
    pub deadline: Instant,
    /// The output.
    pub sink: Sink,
}

/// Settings of a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A streaming client that reads nothing for this long is dropped.
    pub stall: Duration,
    /// Raised at shutdown once the grace period is over: every generation stops.
    pub shutdown: Cancel,
    /// The queue-depth gauge of the model.
    pub depth: prometheus::IntGauge,
    /// Continuous batching where the model has it ([`Decoder::batch`]); `None` runs one
    /// generation at a time.
    pub batch: Option<BatchLimits>,
}

/// A model on its own thread, taking [`Job`]s.
#[derive(Clone)]
pub struct Scheduler {
    tx: Sender<Job>,
}

impl Scheduler {
    /// Starts the thread `kiln-gen-{name}` owning `model`.
    ///
    /// # Errors
    /// The system's refusal to start a thread.
    pub fn spawn<D: Decoder>(
        name: &str,
        model: D,
        config: SchedulerConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name(format!("kiln-gen-{name}"))
            .spawn(move || Worker { model, rx, config }.run())?;
        Ok(Self { tx })
    }

    /// Queues `job`; an error when the model's thread has stopped.
    ///
    /// # Errors
    /// A 500 when the model's thread has stopped.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.tx
            .send(job)
            .map_err(|_| ApiError::internal("the model's thread has stopped"))
    }
}

struct Worker<D> {
    model: D,
    rx: Receiver<Job>,
    config: SchedulerConfig,
}

impl<D: Decoder> Worker<D> {
    fn run(self) {
        if let Some(batch) = self
            .config
            .batch
            .and_then(|limits| self.model.batch(limits))
        {
            batched::run(&self, batch);
            return;
        }
        let mut queue = VecDeque::new();
        loop {
            if queue.is_empty() {
                // Idle: wait for work; ends when every sender (the server's state) is gone.
                match self.rx.recv() {
                    Ok(job) => queue.push_back(job),
                    Err(_) => return,
                }
            }
            if !self.sweep(&mut queue) && queue.is_empty() {
                return;
            }
            if let Some(job) = queue.pop_front() {
                self.config.depth.set(queue.len() as i64);
                self.serve(job, &mut queue);
            }
        }
    }

    /// Takes the newly queued jobs and drops the cancelled ones; `false` once every sender
    /// is gone.
    fn sweep(&self, queue: &mut VecDeque<Job>) -> bool {
        let mut open = true;
        loop {
            match self.rx.try_recv() {
                Ok(job) => queue.push_back(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let now = Instant::now();
        queue.retain(|j| !j.cancel.is_cancelled() && j.deadline > now);
        self.config.depth.set(queue.len() as i64);
        open
    }

    fn serve(&self, job: Job, queue: &mut VecDeque<Job>) {
        let Job {
            prompt,
            config,
            cancel,
            deadline,
            sink,
        } = job;
        let ids = match self.model.encode(&prompt) {
            Ok(ids) => ids,
            Err(e) => {
                refuse(sink, e);
                return;
            }
        };
        let prompt_tokens = ids.len();
        let (text_tx, done, whole) = match sink {
            Sink::Whole(reply) => (None, reply, true),
            Sink::Stream { ready, text, done } => {
                if ready.send(Ok(prompt_tokens)).is_err() {
                    return;
                }
                (Some(text), done, false)
            }
        };
        let mut stream = StreamState::default();
        let stall = self.config.stall;
        let shutdown = &self.config.shutdown;
        let model = &self.model;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut new_ids = Vec::new();
            let result = model.generate(&ids, &config, &mut |id| {
                new_ids.push(id);
                self.sweep(queue);
                if cancel.is_cancelled() || shutdown.is_cancelled() || Instant::now() >= deadline {
                    return false;
                }
                match &text_tx {
                    Some(tx) => stream.push(model, &new_ids, tx, stall),
                    None => true,
                }
            });
            result.map(|g| (g, new_ids))
        }));
        let finished = match outcome {
            Ok(Ok((generation, new_ids))) => {
                let text = model.decode(&new_ids).unwrap_or_default();
                let text = if whole {
                    text
                } else {
                    // What the stream has not sent yet: held-back pieces and the rest.
                    text.get(stream.sent.len()..).unwrap_or("").to_string()
                };
                Ok(Finished {
                    prompt_tokens,
                    completion_tokens: generation.ids.len(),
                    text,
                    finish_reason: match generation.stop {
                        StopReason::MaxNewTokens => "length",
                        _ => "stop",
                    },
                })
            }
            Ok(Err(e)) => Err(ApiError::bad_request(e)),
            Err(panic) => Err(ApiError::internal(format!(
                "the generation failed: {}",
                panic_message(&panic)
            ))),
        };
        let _ = done.send(finished);
    }
}

/// The streamed part of a generation.
#[derive(Default)]
struct StreamState {
    /// The text sent so far.
    sent: String,
    /// Since when the channel has been full.
    stalled_since: Option<Instant>,
}

impl StreamState {
    /// Sends the new text of `ids` (whole characters only); `false` when the client is gone
    /// or has read nothing for `stall`.
    fn push<D: Decoder>(
        &mut self,
        model: &D,
        ids: &[u32],
        tx: &mpsc::Sender<String>,
        stall: Duration,
    ) -> bool {
        let Ok(text) = model.decode(ids) else {
            return true;
        };
        // Wait for the rest of a character split across tokens.
        if text.ends_with('\u{FFFD}')
            || text.len() <= self.sent.len()
            || !text.starts_with(&self.sent)
        {
            return true;
        }
        let delta = text[self.sent.len()..].to_string();
        match tx.try_send(delta) {
            Ok(()) => {
                self.sent = text;
                self.stalled_since = None;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The text stays unsent; it goes with the next token that finds room.
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                since.elapsed() < stall
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Answers a job that cannot run with `error`.
fn refuse(sink: Sink, error: ApiError) {
    // A client that has gone needs no answer.
    let _answered = match sink {
        Sink::Whole(reply) => reply.send(Err(error)).is_ok(),
        Sink::Stream { ready, .. } => ready.send(Err(error)).is_ok(),
    };
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that counts: token i of a generation is `prompt.len() + i`; a prompt "panic"
    /// panics; each token takes `step`.
    struct Counter {
        step: Duration,
    }

    impl Decoder for Counter {
        fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
            match prompt {
                Prompt::Text(t) if t.is_empty() => Err(ApiError::bad_request("empty")),
                Prompt::Text(t) => Ok(t.bytes().map(u32::from).collect()),
                Prompt::Chat { .. } => Err(ApiError::bad_request("no template")),
            }
        }

        fn generate(
            &self,
            prompt: &[u32],
            config: &GenerationConfig,
            on_token: &mut dyn FnMut(u32) -> bool,
        ) -> Result<Generation, String> {
            if prompt == b"panic".map(u32::from) {
                panic!("injected");
            }
            let mut ids = Vec::new();
            for i in 0..config.max_new_tokens {
                std::thread::sleep(self.step);
                let id = 97 + (i % 26) as u32;
                ids.push(id);
                if !on_token(id) {
                    return Ok(Generation {
                        ids,
                        stop: StopReason::Callback,
                    });
                }
            }
            Ok(Generation {
                ids,
                stop: StopReason::MaxNewTokens,
            })
        }

        fn decode(&self, ids: &[u32]) -> Result<String, String> {
            Ok(ids.iter().map(|&i| i as u8 as char).collect())
        }
    }

    fn scheduler(step_ms: u64, stall_ms: u64) -> (Scheduler, prometheus::IntGauge) {
        let depth = prometheus::IntGauge::new("depth", "queued").unwrap();
        let config = SchedulerConfig {
            stall: Duration::from_millis(stall_ms),
            shutdown: Cancel::new(),
            depth: depth.clone(),
            batch: None,
        };
        let s = Scheduler::spawn(
            "test",
            Counter {
                step: Duration::from_millis(step_ms),
            },
            config,
        )
        .unwrap();
        (s, depth)
    }

    fn whole(
        s: &Scheduler,
        prompt: &str,
        tokens: usize,
        cancel: &Cancel,
    ) -> oneshot::Receiver<Result<Finished, ApiError>> {
        let (tx, rx) = oneshot::channel();
        s.submit(Job {
            prompt: Prompt::Text(prompt.into()),
            config: GenerationConfig::greedy(tokens),
            cancel: cancel.clone(),
            deadline: Instant::now() + Duration::from_secs(60),
            sink: Sink::Whole(tx),
        })
        .unwrap();
        rx
    }

    #[test]
    fn a_panic_fails_its_request_only() {
        let (s, _) = scheduler(0, 1000);
        let bad = whole(&s, "panic", 4, &Cancel::new())
            .blocking_recv()
            .unwrap();
        let err = bad.unwrap_err();
        assert_eq!(err.status.as_u16(), 500);
        assert!(err.message.contains("injected"), "{err}");
        let good = whole(&s, "hi", 3, &Cancel::new())
            .blocking_recv()
            .unwrap()
            .unwrap();
        assert_eq!((good.text.as_str(), good.finish_reason), ("abc", "length"));
        assert_eq!((good.prompt_tokens, good.completion_tokens), (2, 3));
    }

    #[test]
    fn an_abandoned_request_stops_within_a_token_and_queued_ones_are_dropped() {
        let (s, depth) = scheduler(20, 1000);
        let first = Cancel::new();
        let running = whole(&s, "long", 500, &first);
        // Queued behind it: abandoned while waiting.
        let queued = Cancel::new();
        let waiting = whole(&s, "queued", 5, &queued);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(depth.get(), 1);
        queued.cancel();
        drop(waiting);
        let started = Instant::now();
        drop(first.guard());
        let out = running.blocking_recv().unwrap().unwrap();
        // Stopped at the next token (20 ms a token), far short of 500 tokens (10 s).
        assert!(out.completion_tokens < 20, "{}", out.completion_tokens);
        assert!(started.elapsed() < Duration::from_millis(500));
        // The next request runs at once: the cancelled one was dropped from the queue.
        let next = whole(&s, "x", 2, &Cancel::new());
        let t = Instant::now();
        assert_eq!(next.blocking_recv().unwrap().unwrap().text, "ab");
        assert!(t.elapsed() < Duration::from_millis(300));
        assert_eq!(depth.get(), 0);
    }

    #[test]
    fn a_stalled_stream_is_dropped_and_the_model_goes_on() {
        let (s, _) = scheduler(1, 200);
        let (ready, ready_rx) = oneshot::channel();
        let (text, text_rx) = mpsc::channel(2);
        let (done, done_rx) = oneshot::channel();
        s.submit(Job {
            prompt: Prompt::Text("stream".into()),
            config: GenerationConfig::greedy(100_000),
            cancel: Cancel::new(),
            deadline: Instant::now() + Duration::from_secs(60),
            sink: Sink::Stream { ready, text, done },
        })
        .unwrap();
        assert_eq!(ready_rx.blocking_recv().unwrap().unwrap(), 6);
        // Never read: the channel fills after 2 pieces, and 200 ms later the client is dropped.
        let t = Instant::now();
        let end = done_rx.blocking_recv().unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(end.completion_tokens < 100_000);
        assert_eq!(end.finish_reason, "stop");
        drop(text_rx);
        let next = whole(&s, "x", 2, &Cancel::new());
        assert_eq!(next.blocking_recv().unwrap().unwrap().text, "ab");
    }

    #[test]
    fn a_stream_gets_every_piece_then_the_end() {
        let (s, _) = scheduler(0, 1000);
        let (ready, ready_rx) = oneshot::channel();
        let (text, mut text_rx) = mpsc::channel(64);
        let (done, done_rx) = oneshot::channel();
        s.submit(Job {
            prompt: Prompt::Text("s".into()),
            config: GenerationConfig::greedy(30),
            cancel: Cancel::new(),
            deadline: Instant::now() + Duration::from_secs(60),
            sink: Sink::Stream { ready, text, done },
        })
        .unwrap();
        assert_eq!(ready_rx.blocking_recv().unwrap().unwrap(), 1);
        let mut got = String::new();
        while let Some(piece) = text_rx.blocking_recv() {
            got.push_str(&piece);
        }
        let end = done_rx.blocking_recv().unwrap().unwrap();
        got.push_str(&end.text);
        assert_eq!(got, "abcdefghijklmnopqrstuvwxyzabcd");
        assert_eq!(end.finish_reason, "length");
        // A prompt the model refuses is the request's error before any text.
        let (ready, ready_rx) = oneshot::channel();
        let (text, _text_rx) = mpsc::channel(4);
        let (done, _done_rx) = oneshot::channel();
        s.submit(Job {
            prompt: Prompt::Text(String::new()),
            config: GenerationConfig::greedy(3),
            cancel: Cancel::new(),
            deadline: Instant::now() + Duration::from_secs(60),
            sink: Sink::Stream { ready, text, done },
        })
        .unwrap();
        assert_eq!(
            ready_rx
                .blocking_recv()
                .unwrap()
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
    }
}
