//! The run folder's files (see the `train` module docs): `config.json`, `metrics.jsonl`, the
//! `last` and `best` checkpoints and `curves.svg`. The epoch loop writes through
//! [`RunFolder`]; only rank 0 of a process group holds one.

use super::*;

/// The path of the latest checkpoint of a run folder.
pub(super) fn last_checkpoint(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints").join("last.ckpt")
}

/// The path of the best checkpoint of a run folder.
pub(super) fn best_checkpoint(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints").join("best.ckpt")
}

/// A run folder being written.
pub(super) struct RunFolder {
    dir: PathBuf,
}

impl RunFolder {
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    fn jsonl(&self) -> PathBuf {
        self.dir.join("metrics.jsonl")
    }

    /// A new run: the log of an earlier run in the same folder is removed.
    pub(super) fn start_fresh(&self) -> Result<()> {
        let jsonl = self.jsonl();
        if jsonl.exists() {
            std::fs::remove_file(&jsonl).map_err(|e| Error::io(&jsonl, e))?;
        }
        Ok(())
    }

    /// A resumed run: the log goes back to the checkpoint's epochs (a run killed after it
    /// logged an epoch but before that epoch's checkpoint), which the run then continues.
    pub(super) fn rewind_log(&self, history: &[EpochRecord]) -> Result<()> {
        history::rewrite_jsonl(history, &self.jsonl())
    }

    /// Writes `config.json`.
    pub(super) fn write_config(&self, config: &TrainerConfig) -> Result<()> {
        let json = serde_json::to_vec_pretty(config).map_err(|e| Error::Json {
            context: "trainer config".into(),
            source: e,
        })?;
        checkpoint::write_atomic(&self.dir.join("config.json"), |w| {
            std::io::Write::write_all(w, &json)
        })
    }

    /// Appends an epoch to `metrics.jsonl`.
    pub(super) fn log(&self, record: &EpochRecord) -> Result<()> {
        record.append_jsonl(&self.jsonl())
    }

    /// Saves the `last` checkpoint, and the `best` one too when the epoch `improved`.
    pub(super) fn save_checkpoint(&self, sections: &Sections, improved: bool) -> Result<()> {
        sections.save(&last_checkpoint(&self.dir))?;
        if improved {
            sections.save(&best_checkpoint(&self.dir))?;
        }
        Ok(())
    }

    /// Draws `curves.svg`.
    pub(super) fn write_curves(&self, history: &[EpochRecord]) -> Result<()> {
        write_curves(history, &self.dir.join("curves.svg"))
    }
}
