//! A small team of threads that wait for work by spinning: for loops of many short parallel
//! parts, such as a language model's decode step (some 120 matrix-vector products of 1-7 MB
//! each, with a few microseconds of serial work between them).
//!
//! rayon puts an idle thread to sleep after a few dozen yields, and a thread outside its pool
//! sleeps while the pool works; at a decode step that is a futex wake-up per product, about a
//! tenth of the step on two cores. Here the helpers spin (with the CPU's pause hint) for a
//! bounded time after each job, then park; [`SpinPool::run`] posts a job, works on it too,
//! and returns once every task is done and every helper has left the job.
//!
//! The one `unsafe` is the lifetime of the job: the helpers hold a pointer to the caller's
//! closure, which [`SpinPool::run`] keeps alive until no helper can reach it (see there).

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A job: a task index in, nothing out.
type Job = dyn Fn(usize) + Sync;

/// How long a helper spins for the next job before it parks.
const SPIN: Duration = Duration::from_micros(300);

struct Shared {
    /// Bumped for every job; helpers wait for it to change.
    epoch: AtomicUsize,
    /// The current job (a `*const Job` split into a thin pointer to a boxed fat pointer).
    job: AtomicPtr<&'static Job>,
    tasks: AtomicUsize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// Helpers between reading `job` and leaving it.
    inside: AtomicUsize,
    /// A task panicked on a helper.
    poisoned: AtomicBool,
    stop: AtomicBool,
}

/// A team of `threads - 1` helper threads plus the caller (see the module docs).
pub struct SpinPool {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// One job at a time: [`SpinPool::run`] from two threads would share the counters.
    running: Mutex<()>,
}

impl std::fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl SpinPool {
    /// A team of `threads` (at least 1: the caller alone).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let helpers = (1..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("kiln-spin-{i}"))
                    .spawn(move || helper(&shared))
                    .expect("spawning a thread of the spin pool")
            })
            .collect();
        Self {
            shared,
            helpers,
            running: Mutex::new(()),
        }
    }

    /// Threads working on a job, the caller's included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `job(i)` for every `i` in `0..tasks` on the team (the caller too), each index
    /// once, and returns when all have run.
    ///
    /// # Panics
    /// When a task panics (after every helper has left the job).
    pub fn run(&self, tasks: usize, job: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.helpers.is_empty() || tasks == 1 {
            (0..tasks).for_each(job);
            return;
        }
        let _one_at_a_time = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // `inside` may be non-zero here: a helper that saw the previous job's epoch late (it
        // was descheduled between the epoch check and its increment) counts itself in after
        // that job returned, then finds `job` null (or this job, once posted: it is then
        // counted and waited for like any helper). Only `job` being null is an invariant.
        // Only the lifetime is erased below. Helpers dereference the job only between
        // incrementing `inside` and decrementing it, after reading the epoch; this function
        // does not return (so `job` and `slot` stay alive) until `inside` is zero and every
        // task is done, and it clears `job` first, so a helper that arrives late finds null
        // and never reads a stale job.
        debug_assert!(s.job.load(Ordering::SeqCst).is_null());
        let job: &'static Job =
            // SAFETY: the lifetime erasure justified above.
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Job>(job) };
        let mut slot: &'static Job = job;
        s.tasks.store(tasks, Ordering::SeqCst);
        s.next.store(0, Ordering::SeqCst);
        s.done.store(0, Ordering::SeqCst);
        s.poisoned.store(false, Ordering::SeqCst);
        s.job.store(&mut slot, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        for h in &self.helpers {
            h.thread().unpark();
        }
        // A panic here must not unwind past the helpers still using `job`: caught, and
        // resumed once they have left.
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(s, job)));
        match &mine {
            Ok(ran) => {
                s.done.fetch_add(*ran, Ordering::SeqCst);
            }
            Err(_) => s.poisoned.store(true, Ordering::SeqCst),
        }
        while s.done.load(Ordering::SeqCst) < tasks && !s.poisoned.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), Ordering::SeqCst);
        while s.inside.load(Ordering::SeqCst) > 0 {
            std::hint::spin_loop();
        }
        match mine {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(_) if s.poisoned.load(Ordering::SeqCst) => {
                panic!("a task of the spin pool panicked on a helper thread")
            }
            Ok(_) => {}
        }
    }
}

/// Claims and runs tasks until none is left; returns how many it ran.
fn work(s: &Shared, job: &Job) -> usize {
    let tasks = s.tasks.load(Ordering::SeqCst);
    let mut ran = 0;
    loop {
        let i = s.next.fetch_add(1, Ordering::SeqCst);
        if i >= tasks {
            return ran;
        }
        job(i);
        ran += 1;
    }
}

fn helper(s: &Shared) {
    let mut seen = s.epoch.load(Ordering::SeqCst);
    loop {
        let started = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::SeqCst) {
                return;
            }
            if s.epoch.load(Ordering::SeqCst) != seen {
                break;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && started.elapsed() > SPIN {
                // Parked until the next job's unpark (or a timeout, to re-check `stop`).
                std::thread::park_timeout(Duration::from_millis(50));
            }
        }
        seen = s.epoch.load(Ordering::SeqCst);
        s.inside.fetch_add(1, Ordering::SeqCst);
        let ptr = s.job.load(Ordering::SeqCst);
        if !ptr.is_null() {
            debug_assert!(s.inside.load(Ordering::SeqCst) > 0);
            // SAFETY: `inside` was incremented before this load and `run` clears `job` then
            // waits for `inside` to reach zero before its closure and `slot` go away; a
            // non-null pointer is therefore the live job of this epoch (or of a later one,
            // equally live while `inside` counts this helper).
            let job: &Job = unsafe { *ptr };
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(s, job))) {
                Ok(ran) => {
                    s.done.fetch_add(ran, Ordering::SeqCst);
                }
                Err(_) => s.poisoned.store(true, Ordering::SeqCst),
            }
        }
        s.inside.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for h in self.helpers.drain(..) {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_once_on_every_team_size() {
        for threads in [1, 2, 3, 5] {
            let pool = SpinPool::new(threads);
            assert_eq!(pool.threads(), threads);
            for tasks in [0usize, 1, 2, 7, 64] {
                for _ in 0..50 {
                    let hits: Vec<AtomicU64> = (0..tasks).map(|_| AtomicU64::new(0)).collect();
                    pool.run(tasks, &|i| {
                        hits[i].fetch_add(1, Ordering::SeqCst);
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1));
                }
            }
        }
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_pool_goes_on() {
        let pool = SpinPool::new(2);
        for bad in [0usize, 5] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run(8, &|i| {
                    if i == bad {
                        panic!("task {i}");
                    }
                    std::thread::sleep(Duration::from_micros(200));
                });
            }));
            assert!(r.is_err());
        }
        let count = AtomicU64::new(0);
        pool.run(16, &|_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 16);
    }

    #[test]
    fn jobs_after_a_pause_wake_the_parked_helpers() {
        let pool = SpinPool::new(2);
        let sum = AtomicU64::new(0);
        for round in 0..3u64 {
            std::thread::sleep(Duration::from_millis(5));
            pool.run(10, &|i| {
                sum.fetch_add(i as u64 + round, Ordering::SeqCst);
            });
        }
        assert_eq!(sum.load(Ordering::SeqCst), 3 * 45 + 10 * 3);
    }

    #[test]
    fn pools_on_more_threads_than_cores_count_every_task_once() {
        // Several pools busy at once on a 2-core machine: helpers are descheduled at any
        // point, so some see a job's epoch only after it returned and come in between two
        // jobs (the case `run` once wrongly asserted against). Every task still runs once.
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                scope.spawn(move || {
                    let pool = SpinPool::new(3);
                    for round in 0..3000u64 {
                        let tasks = (round % 5 + 1) as usize;
                        let sum = AtomicU64::new(0);
                        pool.run(tasks, &|i| {
                            sum.fetch_add(i as u64 + t, Ordering::SeqCst);
                        });
                        let n = tasks as u64;
                        assert_eq!(sum.load(Ordering::SeqCst), n * (n - 1) / 2 + n * t);
                    }
                });
            }
        });
    }
}
