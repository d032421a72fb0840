//! [`ProcessGroup`]: the processes of one data-parallel run, as MPI sees them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[cfg(feature = "mpi")]
use super::DEFAULT_STEP_TIMEOUT;
use crate::error::{Error, Result};

/// The processes of one data-parallel run: this process's rank, the number of processes,
/// and the collectives the trainer needs (a sum over all ranks, a broadcast from one).
///
/// Built on MPI (the `mpi` feature): start the program with `mpirun -np N` (or `srun`) and
/// call [`ProcessGroup::from_launcher`]; rank and world come from MPI itself. Handles are
/// cheap to clone and share one MPI link; MPI is finalised when the last one is dropped, so
/// keep one for the whole run.
///
/// ```no_run
/// # fn main() -> kiln_core::Result<()> {
/// use kiln_core::distributed::ProcessGroup;
/// // Under `mpirun -np 2 ./train`: Some(group) on both ranks; None for a lone process.
/// if let Some(group) = ProcessGroup::from_launcher()? {
///     let mut values = vec![group.rank() as f32, 1.0];
///     group.all_reduce_sum(&mut values)?; // [0 + 1, 1 + 1] on both ranks
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProcessGroup {
    link: Arc<Mutex<Link>>,
    rank: usize,
    world: usize,
    timeout: Duration,
}

/// The transport: MPI, or nothing at all in a build without the `mpi` feature (where no
/// group can be made: the enum is empty).
enum Link {
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::MpiLink),
}

impl Link {
    #[cfg(feature = "mpi")]
    fn rank_world(&self) -> (usize, usize) {
        match self {
            Link::Mpi(mpi) => (mpi.rank(), mpi.world()),
        }
    }
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "mpi")]
static MPI: Mutex<std::sync::Weak<Mutex<Link>>> = Mutex::new(std::sync::Weak::new());

impl ProcessGroup {
    /// The group of the MPI job this process runs in (one rank of one for a process started
    /// without a launcher). MPI is initialised on the first call; later calls, while a handle
    /// lives, return the same group.
    ///
    /// # Errors
    /// [`Error::Distributed`](crate::Error::Distributed) when MPI cannot be initialised (or
    /// was initialised and finalised before) or its thread cannot start.
    #[cfg(feature = "mpi")]
    pub fn mpi() -> Result<Self> {
        let mut shared = MPI.lock().unwrap_or_else(|e| e.into_inner());
        let link = match shared.upgrade() {
            Some(link) => link,
            None => {
                let link = super::mpi::MpiLink::init().map_err(|reason| Error::Distributed {
                    rank: 0,
                    world: 1,
                    reason,
                })?;
                let link = Arc::new(Mutex::new(Link::Mpi(link)));
                *shared = Arc::downgrade(&link);
                link
            }
        };
        let (rank, world) = link.lock().unwrap_or_else(|e| e.into_inner()).rank_world();
        Ok(ProcessGroup {
            link,
            rank,
            world,
            timeout: DEFAULT_STEP_TIMEOUT,
        })
    }

    /// The group this process was launched into, or `None` for a lone process.
    ///
    /// A process that `mpirun`, `mpiexec` or `srun` started as one of several ranks joins
    /// their MPI job. Without the `mpi` feature that is an error naming the feature (and
    /// the packages MPI needs), never a silent single-process run on every rank.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when `KILN_WORLD_SIZE` is set, when a launcher started several
    /// ranks in a build without the `mpi` feature, or when MPI's rank and size disagree with the
    /// launcher's; MPI's own initialisation errors.
    pub fn from_launcher() -> Result<Option<Self>> {
        if std::env::var_os("KILN_WORLD_SIZE").is_some() {
            return Err(Error::InvalidConfig(
                "KILN_WORLD_SIZE is set, but Kiln's own TCP process group is gone: start the \
                 processes with mpirun or srun, in a build with the `mpi` feature"
                    .into(),
            ));
        }
        let Some(launch) = super::launch::from_env() else {
            return Ok(None);
        };
        #[cfg(feature = "mpi")]
        {
            let group = Self::mpi()?;
            if (group.rank, group.world) != (launch.rank, launch.world) {
                return Err(Error::Distributed {
                    rank: group.rank,
                    world: group.world,
                    reason: format!(
                        "{} started this process as rank {} of {}, but MPI says rank {} of \
                         {}: is the program linked against another MPI than the launcher's?",
                        launch.launcher, launch.rank, launch.world, group.rank, group.world
                    ),
                });
            }
            Ok(Some(group))
        }
        #[cfg(not(feature = "mpi"))]
        Err(Error::Distributed {
            rank: launch.rank,
            world: launch.world,
            reason: format!(
                "{} started this process as one of {} ranks, but it was built without Kiln's \
                 `mpi` feature: rebuild with `--features mpi` (it links the MPI library: on \
                 Debian `apt install openmpi-bin libopenmpi-dev libclang-dev`)",
                launch.launcher, launch.world
            ),
        })
    }

    /// How long one collective may wait for the other ranks before it fails (default 30
    /// minutes). Every rank waits through the slowest rank's step (and rank 0's
    /// validation), so keep it above the longest step plus one validation pass. A rank that
    /// dies is noticed at once by the launcher, which ends the job.
    pub fn with_step_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This process's rank (rank 0 writes the run folder).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The transport, for logs: the MPI library's version line.
    pub fn describe(&self) -> String {
        match *self.lock() {
            #[cfg(feature = "mpi")]
            Link::Mpi(ref mpi) => {
                format!("{} (rank {} of {})", mpi.library(), self.rank, self.world)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, reason: String) -> Error {
        Error::Distributed {
            rank: self.rank,
            world: self.world,
            reason,
        }
    }

    /// Replaces `values` on every rank by the element-wise sum over all ranks. Every rank
    /// must call this with a buffer of the same length, in the same order.
    ///
    /// # Errors
    /// [`Error::Distributed`] when a rank fails or the step timeout passes (the job is then
    /// aborted).
    pub fn all_reduce_sum(&self, values: &mut [f32]) -> Result<()> {
        let sum = self.all_reduce_sum_vec(values.to_vec())?;
        values.copy_from_slice(&sum);
        Ok(())
    }

    /// [`all_reduce_sum`](Self::all_reduce_sum) on an owned buffer, returned summed (no
    /// copy of it on MPI: what the trainer uses).
    ///
    /// # Errors
    /// As [`all_reduce_sum`](Self::all_reduce_sum).
    pub fn all_reduce_sum_vec(&self, values: Vec<f32>) -> Result<Vec<f32>> {
        let _ = &values;
        match *self.lock() {
            #[cfg(feature = "mpi")]
            Link::Mpi(ref mut mpi) => mpi
                .all_reduce(values, self.timeout)
                .map_err(|r| self.fail(r)),
        }
    }

    /// Returns once every rank has called it.
    ///
    /// # Errors
    /// As [`all_reduce_sum`](Self::all_reduce_sum).
    pub fn barrier(&self) -> Result<()> {
        self.all_reduce_sum(&mut [0.0])
    }

    /// Replaces `values` on every rank by rank `root`'s. Every rank must call this with a
    /// buffer of the same length.
    ///
    /// # Errors
    /// [`Error::Distributed`] for a `root` past the group's size, a failed rank or the step
    /// timeout.
    pub fn broadcast(&self, values: &mut [f32], root: usize) -> Result<()> {
        if root >= self.world {
            return Err(self.fail(format!("broadcast from rank {root} of {}", self.world)));
        }
        let _ = &values;
        match *self.lock() {
            #[cfg(feature = "mpi")]
            Link::Mpi(ref mut mpi) => {
                let out = mpi
                    .broadcast(values.to_vec(), root, self.timeout)
                    .map_err(|r| self.fail(r))?;
                values.copy_from_slice(&out);
                Ok(())
            }
        }
    }

    /// Ends every process of the job with exit status `code` (`MPI_Abort`): what a rank
    /// that cannot go on calls, so that the others do not wait for it until the timeout.
    pub fn abort(&self, code: i32) -> ! {
        let _ = code;
        match *self.lock() {
            #[cfg(feature = "mpi")]
            Link::Mpi(ref mut mpi) => mpi.abort(code),
        }
    }
}
