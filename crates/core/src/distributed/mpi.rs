//! [`ProcessGroup`](super::ProcessGroup)'s link to MPI: one thread owns the MPI library
//! (it initialises it, makes every MPI call and finalises it), and the training threads hand
//! it buffers over channels.
//!
//! Why a thread: MPI handles are not `Send`, while the trainer runs on whichever thread the
//! caller (or the CPU pool) gives it; with one owning thread MPI runs at its
//! `MPI_THREAD_FUNNELED` level and this crate needs no unchecked `Send` claim. The channel
//! also gives every collective a deadline: a caller that has no answer within the step
//! timeout gets an error naming the operation instead of waiting forever on a rank that
//! hangs.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use mpi::collective::SystemOperation;
use mpi::traits::*;

/// The most floats one MPI call carries. Buffers are reduced in buckets of this size: MPI
/// counts are C `int`s, and a bucket bounds the staging copy (16 MiB).
pub(crate) const BUCKET: usize = 1 << 22;

enum Request {
    AllReduce(Vec<f32>),
    Broadcast { values: Vec<f32>, root: usize },
    Abort(i32),
}

/// The thread that owns MPI, and the channels to it.
pub(crate) struct MpiLink {
    rank: usize,
    world: usize,
    library: String,
    requests: Option<Sender<Request>>,
    replies: Receiver<Vec<f32>>,
    thread: Option<JoinHandle<()>>,
    /// Set when a collective timed out: the MPI thread may be stuck in it for good, so it
    /// is neither used nor joined again.
    stuck: bool,
}

impl MpiLink {
    /// Starts the MPI thread, which initialises MPI (rank and world come from the launcher:
    /// `mpirun`, `srun`, or a single process of one rank).
    pub(crate) fn init() -> Result<Self, String> {
        let (requests, incoming) = channel::<Request>();
        let (answer, replies) = channel::<Vec<f32>>();
        let (ready, started) = channel::<Result<(usize, usize, String), String>>();
        let thread = std::thread::Builder::new()
            .name("kiln-mpi".into())
            .spawn(move || serve(incoming, answer, ready))
            .map_err(|e| format!("cannot start the MPI thread: {e}"))?;
        match started.recv() {
            Ok(Ok((rank, world, library))) => Ok(MpiLink {
                rank,
                world,
                library,
                requests: Some(requests),
                replies,
                thread: Some(thread),
                stuck: false,
            }),
            Ok(Err(reason)) => {
                let _ = thread.join();
                Err(reason)
            }
            Err(_) => {
                let _ = thread.join();
                Err("the MPI thread ended while initialising MPI".into())
            }
        }
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn world(&self) -> usize {
        self.world
    }

    /// The MPI library's own version line (`Open MPI v4.1.4, ...`).
    pub(crate) fn library(&self) -> &str {
        &self.library
    }

    /// Sums `values` element-wise over all ranks.
    pub(crate) fn all_reduce(
        &mut self,
        values: Vec<f32>,
        timeout: Duration,
    ) -> Result<Vec<f32>, String> {
        self.call(Request::AllReduce(values), "all-reduce", timeout)
    }

    /// Replaces `values` on every rank by `root`'s.
    pub(crate) fn broadcast(
        &mut self,
        values: Vec<f32>,
        root: usize,
        timeout: Duration,
    ) -> Result<Vec<f32>, String> {
        self.call(Request::Broadcast { values, root }, "broadcast", timeout)
    }

    /// Ends every process of the job with `code` (`MPI_Abort`).
    pub(crate) fn abort(&mut self, code: i32) -> ! {
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request::Abort(code));
            // MPI_Abort does not return; wait for it to take the process down.
            let _ = self.replies.recv_timeout(Duration::from_secs(30));
        }
        std::process::exit(code);
    }

    fn call(
        &mut self,
        request: Request,
        what: &str,
        timeout: Duration,
    ) -> Result<Vec<f32>, String> {
        if self.stuck {
            return Err(format!(
                "the MPI thread is still in an earlier {what} that timed out"
            ));
        }
        let requests = self.requests.as_ref().ok_or("MPI was finalised")?;
        requests
            .send(request)
            .map_err(|_| "the MPI thread has ended".to_string())?;
        match self.replies.recv_timeout(timeout) {
            Ok(values) => Ok(values),
            Err(RecvTimeoutError::Timeout) => {
                self.stuck = true;
                Err(format!(
                    "no {what} answer from the other ranks within {timeout:?}: a rank has died, \
                     hangs or is behind (raise the step timeout for long steps)"
                ))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(format!("the MPI thread ended during an {what}"))
            }
        }
    }
}

impl Drop for MpiLink {
    /// Finalises MPI (its thread drops the universe), unless the thread is stuck in a
    /// collective: then the process ends without finalising and the launcher ends the job.
    fn drop(&mut self) {
        self.requests = None;
        if !self.stuck
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// The MPI thread: initialises MPI, serves requests until the link is dropped, finalises.
fn serve(
    incoming: Receiver<Request>,
    answer: Sender<Vec<f32>>,
    ready: Sender<Result<(usize, usize, String), String>>,
) {
    let Some((universe, _level)) = mpi::initialize_with_threading(mpi::Threading::Funneled) else {
        let _ = ready.send(Err(
            "MPI is already initialised (or was finalised) in this process: create one \
             ProcessGroup and keep it (it can be cloned) for the whole run"
                .into(),
        ));
        return;
    };
    let world = universe.world();
    let library = mpi::environment::library_version().unwrap_or_default();
    // "Open MPI v4.1.4, package: ..." -> "Open MPI v4.1.4"
    let library = library.trim_end_matches('\0');
    let library = library
        .split([',', '\n'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if ready
        .send(Ok((world.rank() as usize, world.size() as usize, library)))
        .is_err()
    {
        return;
    }
    let mut staging: Vec<f32> = Vec::new();
    while let Ok(request) = incoming.recv() {
        let values = match request {
            Request::AllReduce(mut values) => {
                for bucket in values.chunks_mut(BUCKET) {
                    staging.clear();
                    staging.extend_from_slice(bucket);
                    world.all_reduce_into(&staging[..], bucket, SystemOperation::sum());
                }
                values
            }
            Request::Broadcast { mut values, root } => {
                let root = world.process_at_rank(root as i32);
                for bucket in values.chunks_mut(BUCKET) {
                    root.broadcast_into(bucket);
                }
                values
            }
            Request::Abort(code) => world.abort(code),
        };
        if answer.send(values).is_err() {
            break;
        }
    }
    drop(universe);
}
