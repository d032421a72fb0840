//! Dynamic batching: concurrent requests for one model are gathered, up to a maximum number of
//! inputs and a maximum wait after the first, and run through the model as one call on the
//! model's own thread. The queue of waiting requests is bounded: a request that finds it full
//! is refused at once ([`ApiError::overloaded`], 429) instead of growing memory. A request
//! whose client has gone (timed out, disconnected) is dropped before the model sees it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::Batching;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// What a model call returns: one output per input, or a message.
pub type BatchResult<O> = Result<Vec<O>, String>;

struct Job<I, O> {
    inputs: Vec<I>,
    reply: oneshot::Sender<BatchResult<O>>,
}

/// A model behind a bounded queue and a batching thread.
pub struct Batcher<I, O> {
    name: String,
    tx: SyncSender<Job<I, O>>,
    depth: Arc<AtomicI64>,
    metrics: Metrics,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            tx: self.tx.clone(),
            depth: self.depth.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the thread of model `name`, which calls `run` on each gathered batch (its
    /// output must have one entry per input, in order); an error when the system refuses a
    /// thread.
    ///
    /// # Errors
    /// The system's refusal to start a thread.
    pub fn spawn(
        name: &str,
        config: &Batching,
        metrics: &Metrics,
        mut run: impl FnMut(Vec<I>) -> BatchResult<O> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job<I, O>>(config.queue);
        let depth = Arc::new(AtomicI64::new(0));
        let (max_batch, max_wait) = (config.max_batch, Duration::from_millis(config.max_wait_ms));
        let gauge = metrics.queue_depth.with_label_values(&[name]);
        let sizes = metrics.batch_size.with_label_values(&[name]);
        let worker_depth = depth.clone();
        let thread_name = format!("kiln-batch-{name}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                // Ends when every sender (the server's state) is gone.
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    let mut count = jobs[0].inputs.len();
                    let deadline = Instant::now() + max_wait;
                    while count < max_batch {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(job) => {
                                count += job.inputs.len();
                                jobs.push(job);
                            }
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                break;
                            }
                        }
                    }
                    let now = worker_depth.fetch_sub(jobs.len() as i64, Ordering::SeqCst)
                        - jobs.len() as i64;
                    gauge.set(now.max(0));
                    // Clients that have gone get nothing computed for them.
                    jobs.retain(|j| !j.reply.is_closed());
                    if jobs.is_empty() {
                        continue;
                    }
                    let lens: Vec<usize> = jobs.iter().map(|j| j.inputs.len()).collect();
                    let mut inputs = Vec::with_capacity(lens.iter().sum());
                    let mut replies = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        inputs.extend(job.inputs);
                        replies.push(job.reply);
                    }
                    sizes.observe(inputs.len() as f64);
                    let total = inputs.len();
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(inputs)))
                        .unwrap_or_else(|_| Err("the model panicked on this batch".into()));
                    match result {
                        Ok(outputs) if outputs.len() == total => {
                            let mut outputs = outputs.into_iter();
                            for (reply, n) in replies.into_iter().zip(lens) {
                                let part: Vec<O> = outputs.by_ref().take(n).collect();
                                let _ = reply.send(Ok(part));
                            }
                        }
                        Ok(outputs) => {
                            let msg = format!(
                                "the model returned {} outputs for {total} inputs",
                                outputs.len()
                            );
                            for reply in replies {
                                let _ = reply.send(Err(msg.clone()));
                            }
                        }
                        Err(msg) => {
                            for reply in replies {
                                let _ = reply.send(Err(msg.clone()));
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            name: name.to_owned(),
            tx,
            depth,
            metrics: metrics.clone(),
        })
    }

    /// Queues `inputs` and waits for their outputs. A full queue is 429 at once; a model
    /// error is 500 with its message.
    ///
    /// # Errors
    /// A 429 when the queue is full, a 500 with the model's message when it fails, a 503 when the
    /// model's thread has stopped.
    pub async fn submit(&self, inputs: Vec<I>) -> Result<Vec<O>, ApiError> {
        let (reply, answer) = oneshot::channel();
        // Counted before sending, so that the worker's decrement never runs first.
        let depth = self.depth.fetch_add(1, Ordering::SeqCst) + 1;
        match self.tx.try_send(Job { inputs, reply }) {
            Ok(()) => {
                self.metrics
                    .queue_depth
                    .with_label_values(&[&self.name])
                    .set(depth);
            }
            Err(e) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                return Err(match e {
                    TrySendError::Full(_) => {
                        self.metrics.rejected.with_label_values(&[&self.name]).inc();
                        ApiError::overloaded(&self.name)
                    }
                    TrySendError::Disconnected(_) => {
                        ApiError::unavailable(format!("model {}: stopped", self.name))
                    }
                });
            }
        }
        match answer.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(msg)) => Err(ApiError::internal(format!("model {}: {msg}", self.name))),
            Err(_) => Err(ApiError::unavailable(format!(
                "model {}: stopped",
                self.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_keep_their_order() {
        let metrics = Metrics::new();
        let config = Batching {
            max_batch: 64,
            max_wait_ms: 50,
            queue: 64,
            ..Batching::default()
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let b = Batcher::spawn("double", &config, &metrics, move |xs: Vec<u32>| {
            log.lock().unwrap().push(xs.len());
            Ok(xs.into_iter().map(|x| x * 2).collect())
        })
        .unwrap();
        let mut tasks = Vec::new();
        for r in 0..16u32 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                b.submit(vec![r * 10, r * 10 + 1]).await
            }));
        }
        for (r, t) in tasks.into_iter().enumerate() {
            let r = r as u32;
            assert_eq!(t.await.unwrap().unwrap(), vec![r * 20, r * 20 + 2]);
        }
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 32);
        assert!(batches.len() < 16, "no batching happened: {batches:?}");
        assert!(
            metrics
                .render()
                .contains("kiln_batch_size_count{model=\"double\"}")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_refused_at_once_and_errors_reach_the_caller() {
        let metrics = Metrics::new();
        let config = Batching {
            max_batch: 1,
            max_wait_ms: 0,
            queue: 2,
            ..Batching::default()
        };
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate_rx);
        let b = Batcher::spawn("slow", &config, &metrics, move |xs: Vec<u32>| {
            let _ = gate.lock().unwrap().recv();
            if xs[0] == 99 {
                return Err("bad input 99".into());
            }
            Ok(xs)
        })
        .unwrap();
        // One request runs (blocked), two wait, the fourth finds the queue full.
        let mut waiting = Vec::new();
        for x in [1u32, 2, 3] {
            let b = b.clone();
            waiting.push(tokio::spawn(async move { b.submit(vec![x]).await }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = b.submit(vec![4]).await.unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
        }
        for (t, x) in waiting.into_iter().zip([1u32, 2, 3]) {
            assert_eq!(t.await.unwrap().unwrap(), vec![x]);
        }
        gate_tx.send(()).unwrap();
        let err = b.submit(vec![99]).await.unwrap_err();
        assert_eq!(err.status.as_u16(), 500);
        assert!(err.message.contains("bad input 99"), "{err}");
        assert!(
            metrics
                .render()
                .contains("kiln_rejected_total{model=\"slow\"} 1")
        );
    }
}
