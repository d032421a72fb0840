//! The scheduler's loop for models with continuous batching ([`ContinuousBatch`]): requests
//! join the running batch at the next step, in the order they came, as soon as it has room
//! (sequences and cache budget, `--max-batch` and `--kv-cache-mib`), and leave when done,
//! cancelled, past their deadline or at shutdown; each step reads one prefill chunk of a
//! newcomer and decodes one token for every running sequence.
//!
//! Cancellation, streams and panics follow the module above: cancelled requests leave at
//! the next step, a stalled stream is dropped after the stall time, and a panic in the
//! shared step fails the requests of that step (500) while the model goes on serving the
//! next ones.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use kiln_nlp::generation::{Admission, ContinuousBatch, Event, SequenceId};
use kiln_nlp::generation::{Generation, StopReason};
use tokio::sync::{mpsc, oneshot};

use super::{Cancel, Decoder, Finished, Job, Sink, StreamState, Worker, panic_message, refuse};
use crate::error::ApiError;

/// A job with its prompt encoded, waiting for room in the batch.
struct Waiting {
    job: Job,
    ids: Vec<u32>,
}

/// Where a running request's output goes.
enum Out {
    Whole(oneshot::Sender<Result<Finished, ApiError>>),
    Stream {
        text: mpsc::Sender<String>,
        done: oneshot::Sender<Result<Finished, ApiError>>,
    },
}

/// A request in the batch.
struct Running {
    cancel: Cancel,
    deadline: Instant,
    prompt_tokens: usize,
    /// The new ids so far.
    ids: Vec<u32>,
    out: Out,
    stream: StreamState,
}

impl Running {
    fn fail(self, error: ApiError) {
        let _ = match self.out {
            Out::Whole(reply) => reply.send(Err(error)),
            Out::Stream { done, .. } => done.send(Err(error)),
        };
    }

    /// Answers with the whole text, or the end of the stream.
    fn finish<D: Decoder>(self, model: &D, generation: &Generation) {
        let text = model.decode(&self.ids).unwrap_or_default();
        let (done, text) = match self.out {
            Out::Whole(reply) => (reply, text),
            Out::Stream { done, .. } => {
                // What the stream has not sent yet: held-back pieces and the rest.
                let rest = text.get(self.stream.sent.len()..).unwrap_or("").to_string();
                (done, rest)
            }
        };
        let _ = done.send(Ok(Finished {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.ids.len(),
            text,
            finish_reason: match generation.stop {
                StopReason::MaxNewTokens => "length",
                _ => "stop",
            },
        }));
    }
}

/// The batch's view of the queue, the waiting jobs and the running requests.
struct Loop<'w, 'm, D> {
    worker: &'w Worker<D>,
    batch: ContinuousBatch<'m>,
    queue: VecDeque<Job>,
    waiting: VecDeque<Waiting>,
    running: HashMap<SequenceId, Running>,
}

/// Serves the worker's jobs on `batch` until every sender is gone.
pub(super) fn run<D: Decoder>(worker: &Worker<D>, batch: ContinuousBatch<'_>) {
    let mut state = Loop {
        worker,
        batch,
        queue: VecDeque::new(),
        waiting: VecDeque::new(),
        running: HashMap::new(),
    };
    while state.take_work() {
        state.admit();
        state.leave();
        if !state.batch.is_empty() {
            state.step();
        }
    }
}

impl<D: Decoder> Loop<'_, '_, D> {
    /// Takes new jobs (waiting for one when idle), encodes them and drops the cancelled
    /// waiting ones; `false` once every sender is gone and nothing is left.
    fn take_work(&mut self) -> bool {
        let idle = self.batch.is_empty() && self.queue.is_empty() && self.waiting.is_empty();
        if idle {
            match self.worker.rx.recv() {
                Ok(job) => self.queue.push_back(job),
                Err(_) => return false,
            }
        }
        let open = self.worker.sweep(&mut self.queue);
        let now = Instant::now();
        self.waiting
            .retain(|w| !w.job.cancel.is_cancelled() && w.job.deadline > now);
        while let Some(job) = self.queue.pop_front() {
            match self.worker.model.encode(&job.prompt) {
                Ok(ids) => self.waiting.push_back(Waiting { job, ids }),
                Err(e) => refuse(job.sink, e),
            }
        }
        self.worker.config.depth.set(self.waiting.len() as i64);
        open || !self.waiting.is_empty() || !self.batch.is_empty()
    }

    /// Admits waiting jobs, first come first, while the batch has room.
    fn admit(&mut self) {
        while let Some(w) = self.waiting.pop_front() {
            match self.batch.admit(&w.ids, &w.job.config) {
                Ok(Admission::Started(seq)) => match start(w) {
                    Some(running) => {
                        self.running.insert(seq, running);
                    }
                    None => {
                        self.batch.cancel(seq);
                    }
                },
                Ok(Admission::Full) => {
                    self.waiting.push_front(w);
                    break;
                }
                Err(e) => refuse(w.job.sink, ApiError::bad_request(e.to_string())),
            }
        }
        self.worker.config.depth.set(self.waiting.len() as i64);
    }

    /// Ends the requests whose client has gone, whose deadline has passed, or all of them
    /// once the server shuts down.
    fn leave(&mut self) {
        let shutdown = self.worker.config.shutdown.is_cancelled();
        let now = Instant::now();
        let gone: Vec<SequenceId> = self
            .running
            .iter()
            .filter(|(_, r)| shutdown || r.cancel.is_cancelled() || r.deadline <= now)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in gone {
            self.stop(seq);
        }
    }

    /// Takes `seq` out of the batch and answers with what it has.
    fn stop(&mut self, seq: SequenceId) {
        self.batch.cancel(seq);
        if let Some(r) = self.running.remove(&seq) {
            let generation = Generation {
                ids: r.ids.clone(),
                stop: StopReason::Callback,
            };
            r.finish(&self.worker.model, &generation);
        }
    }

    /// One step of the batch, its tokens sent on.
    fn step(&mut self) {
        let events = match std::panic::catch_unwind(AssertUnwindSafe(|| self.batch.step())) {
            Ok(events) => events,
            Err(panic) => {
                let message = panic_message(&panic);
                self.batch.clear();
                for (_, r) in self.running.drain() {
                    r.fail(ApiError::internal(format!(
                        "the generation failed: {message}"
                    )));
                }
                return;
            }
        };
        let stall = self.worker.config.stall;
        for event in events {
            match event {
                Event::Token { seq, token } => {
                    let Some(r) = self.running.get_mut(&seq) else {
                        continue;
                    };
                    r.ids.push(token);
                    let keep = match &r.out {
                        Out::Stream { text, .. } => {
                            r.stream.push(&self.worker.model, &r.ids, text, stall)
                        }
                        Out::Whole(_) => true,
                    };
                    if !keep {
                        self.stop(seq);
                    }
                }
                Event::Finished { seq, generation } => {
                    if let Some(r) = self.running.remove(&seq) {
                        r.finish(&self.worker.model, &generation);
                    }
                }
                Event::Failed { seq, error } => {
                    if let Some(r) = self.running.remove(&seq) {
                        r.fail(ApiError::bad_request(error.to_string()));
                    }
                }
            }
        }
    }
}

/// A request entering the batch (a stream learns its prompt's size); `None` when a
/// streaming client has already gone.
fn start(w: Waiting) -> Option<Running> {
    let Job {
        cancel,
        deadline,
        sink,
        ..
    } = w.job;
    let prompt_tokens = w.ids.len();
    let out = match sink {
        Sink::Whole(reply) => Out::Whole(reply),
        Sink::Stream { ready, text, done } => {
            ready.send(Ok(prompt_tokens)).ok()?;
            Out::Stream { text, done }
        }
    };
    Some(Running {
        cancel,
        deadline,
        prompt_tokens,
        ids: Vec::new(),
        out,
        stream: StreamState::default(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use kiln_nlp::generation::BatchLimits;
    use kiln_nlp::generation::GenerationConfig;
    use kiln_nlp::models::{LlamaCpu, Precision};

    use super::super::{Prompt, Scheduler, SchedulerConfig};
    use super::*;

    /// The tiny Llama fixture on the batched path. While `armed`, the batch's stop-string
    /// check (called inside the shared step) panics once.
    struct Tiny {
        model: LlamaCpu,
        armed: Arc<AtomicBool>,
    }

    impl Decoder for Tiny {
        fn encode(&self, prompt: &Prompt) -> Result<Vec<u32>, ApiError> {
            match prompt {
                Prompt::Text(t) => Ok(t.bytes().map(|b| u32::from(b) % 64 + 1).collect()),
                Prompt::Chat { .. } => Err(ApiError::bad_request("no template")),
            }
        }

        fn generate(
            &self,
            _: &[u32],
            _: &GenerationConfig,
            _: &mut dyn FnMut(u32) -> bool,
        ) -> Result<Generation, String> {
            Err("this model runs on the batched path".into())
        }

        fn decode(&self, ids: &[u32]) -> Result<String, String> {
            Ok(ids.iter().map(|i| format!("<{i}>")).collect())
        }

        fn batch(&self, limits: BatchLimits) -> Option<ContinuousBatch<'_>> {
            let armed = self.armed.clone();
            let decode = move |_: &[u32]| {
                if armed.swap(false, Ordering::SeqCst) {
                    panic!("injected");
                }
                String::new()
            };
            ContinuousBatch::new(&self.model, &[], decode, limits).ok()
        }
    }

    fn whole(s: &Scheduler, config: GenerationConfig) -> Result<Finished, ApiError> {
        let (tx, rx) = oneshot::channel();
        s.submit(Job {
            prompt: Prompt::Text("hello".into()),
            config,
            cancel: Cancel::new(),
            deadline: Instant::now() + Duration::from_secs(60),
            sink: Sink::Whole(tx),
        })
        .unwrap();
        rx.blocking_recv().unwrap()
    }

    #[test]
    fn a_panic_in_the_shared_step_fails_its_request_and_the_model_goes_on() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../nlp/tests/fixtures/decoders/llama-tiny");
        let (_, model) = LlamaCpu::from_folder(fixture, Precision::F32).unwrap();
        let armed = Arc::new(AtomicBool::new(false));
        let config = SchedulerConfig {
            stall: Duration::from_secs(1),
            shutdown: Cancel::new(),
            depth: prometheus::IntGauge::new("depth", "queued").unwrap(),
            batch: Some(BatchLimits::default()),
        };
        let tiny = Tiny {
            model,
            armed: armed.clone(),
        };
        let s = Scheduler::spawn("tiny", tiny, config).unwrap();
        let good = whole(&s, GenerationConfig::greedy(5)).unwrap();
        assert_eq!(good.completion_tokens, 5);
        // A stop string makes the step check the text, where the panic is injected.
        armed.store(true, Ordering::SeqCst);
        let stops = GenerationConfig::greedy(5).with_stop_strings(vec!["never".into()]);
        let err = whole(&s, stops.clone()).unwrap_err();
        assert_eq!(err.status.as_u16(), 500);
        assert!(err.message.contains("injected"), "{}", err.message);
        // The model serves the next requests, with the same answers.
        let again = whole(&s, GenerationConfig::greedy(5)).unwrap();
        assert_eq!(again.text, good.text);
        assert_eq!(whole(&s, stops).unwrap().text, good.text);
    }
}
