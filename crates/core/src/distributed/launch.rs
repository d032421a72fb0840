//! What the launcher (`mpirun`, `mpiexec`, Slurm's `srun`) tells a process through its
//! environment: whether it is one rank of several, before MPI is touched. A build without
//! the `mpi` feature uses this to refuse a multi-process launch with a message, instead of
//! training the same model on every rank without exchanging a gradient.

/// A process started as one rank of a multi-process job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The launcher the variables belong to.
    pub launcher: &'static str,
    /// This process's rank.
    pub rank: usize,
    /// The number of processes.
    pub world: usize,
}

/// The (rank, world) variable pairs of the launchers Kiln recognises, most specific first.
const LAUNCHERS: [(&str, &str, &str); 3] = [
    (
        "Open MPI's mpirun",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
    ),
    (
        "an MPICH/Hydra or Intel MPI mpiexec",
        "PMI_RANK",
        "PMI_SIZE",
    ),
    ("Slurm's srun", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS"),
];

/// The job this process belongs to when a launcher started it as one of two or more ranks,
/// read from `var` (the environment, in practice). `None` for a lone process.
pub fn detect(var: impl Fn(&str) -> Option<String>) -> Option<Launch> {
    LAUNCHERS.iter().find_map(|&(launcher, rank, world)| {
        let number = |name: &str| var(name)?.trim().parse::<usize>().ok();
        let (rank, world) = (number(rank)?, number(world)?);
        (world > 1).then_some(Launch {
            launcher,
            rank,
            world,
        })
    })
}

/// [`detect`] on this process's environment.
pub fn from_env() -> Option<Launch> {
    detect(|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn launchers_are_recognised_and_lone_processes_are_not() {
        let open_mpi = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "4")];
        assert_eq!(
            detect(env(&open_mpi)),
            Some(Launch {
                launcher: "Open MPI's mpirun",
                rank: 1,
                world: 4
            })
        );
        let hydra = [("PMI_RANK", "0"), ("PMI_SIZE", "2")];
        assert_eq!(detect(env(&hydra)).map(|l| l.world), Some(2));
        let srun = [("SLURM_PROCID", "3"), ("SLURM_STEP_NUM_TASKS", "8")];
        assert_eq!(detect(env(&srun)).map(|l| l.rank), Some(3));
        // One rank, an sbatch script's own shell, or garbage: not a multi-process job.
        assert_eq!(
            detect(env(&[
                ("OMPI_COMM_WORLD_RANK", "0"),
                ("OMPI_COMM_WORLD_SIZE", "1")
            ])),
            None
        );
        assert_eq!(
            detect(env(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0")])),
            None
        );
        assert_eq!(detect(env(&[("PMI_RANK", "x"), ("PMI_SIZE", "2")])), None);
        assert_eq!(detect(env(&[])), None);
    }
}
