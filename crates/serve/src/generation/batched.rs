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

use kiln_nlp::generate::continuous::{Admission, ContinuousBatch, Event, SequenceId};
use kiln_nlp::generate::{Generation, StopReason};
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
