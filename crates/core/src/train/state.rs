//! The trainer's state in a checkpoint: [`TrainerState`] and the sections (model,
//! optimizer, scheduler, state; `trained` beside a moving average) written by `snapshot` and read back by `restore`; and
//! [`Trainer::model_digest`], which tells whether two runs ended with the same weights.

use super::*;

/// The trainer's own state, saved in every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct TrainerState {
    /// Completed epochs.
    pub(super) epoch: usize,
    /// Optimizer steps taken.
    pub(super) step: usize,
    /// The seed; with `epoch` this is the whole RNG state (see the module docs).
    pub(super) seed: u64,
    pub(super) best: Option<Best>,
    pub(super) epochs_without_improvement: usize,
    pub(super) elapsed_secs: f64,
    pub(super) history: Vec<EpochRecord>,
}

pub(super) fn record_err(what: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Record {
        what,
        reason: e.to_string(),
    }
}

/// The checkpoint's sections: `state`, `model` (the moving average when there is one, with
/// the trained weights as `trained`), `optimizer`, `scheduler`.
pub(super) fn snapshot<M: Module>(
    model: &M,
    average: Option<&M>,
    optim: &burn::optim::ModuleOptimizer,
    scheduler: &burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler,
    state: &TrainerState,
) -> Result<Sections> {
    let mut sections = Sections::new();
    let state_json = serde_json::to_vec(state).map_err(|e| Error::Json {
        context: "trainer state".into(),
        source: e,
    })?;
    sections.insert("state", state_json);
    let weights = |m: &M| -> Result<Vec<u8>> {
        Ok(m.clone()
            .into_record()
            .into_bytes()
            .map_err(|e| record_err("model", e))?
            .to_vec())
    };
    match average {
        Some(average) => {
            sections.insert("model", weights(average)?);
            sections.insert("trained", weights(model)?);
        }
        None => sections.insert("model", weights(model)?),
    }
    let optim_bytes = optim.into_bytes().map_err(|e| record_err("optimizer", e))?;
    sections.insert("optimizer", optim_bytes.to_vec());
    let sched_bytes = scheduler
        .to_record()
        .into_bytes()
        .map_err(|e| record_err("scheduler", e))?;
    sections.insert("scheduler", sched_bytes.to_vec());
    Ok(sections)
}

pub(super) fn restore<M: Module>(
    model: M,
    sections: &Sections,
    path: &Path,
) -> Result<(M, TrainerState)> {
    let missing = |name: &str| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("missing section `{name}`"),
    };
    let state: TrainerState = serde_json::from_slice(
        sections.get("state").ok_or_else(|| missing("state"))?,
    )
    .map_err(|e| Error::Json {
        context: format!("trainer state in {}", path.display()),
        source: e,
    })?;
    let bytes = sections.get("model").ok_or_else(|| missing("model"))?;
    Ok((load_weights(model, bytes, "model", path)?, state))
}

/// Section `name`'s weights (`bytes`) loaded into `model`.
pub(super) fn load_weights<M: Module>(
    model: M,
    bytes: &[u8],
    name: &str,
    path: &Path,
) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| record_err("model", e))?;
    model
        .try_load_record(record)
        .map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("the weights of section `{name}` do not match the model: {e}"),
        })
}

impl Trainer {
    /// The SHA-256 (hex) of `model`'s float parameters, in module order: each one's shape,
    /// then its values as little-endian float32 (parameter ids, which differ between model
    /// instances, are left out). Equal digests, equal weights: for comparing runs, e.g. a
    /// resumed run with an uninterrupted one.
    ///
    /// # Errors
    /// [`Error::Record`] when a parameter's values cannot be read as float32.
    pub fn model_digest<M: Module>(model: &M) -> Result<String> {
        use burn::module::{ModuleVisitor, Param};
        use sha2::{Digest, Sha256};
        struct Hash {
            hasher: Sha256,
            failure: Option<String>,
        }
        impl ModuleVisitor for Hash {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let tensor = param.val();
                for dim in tensor.dims() {
                    self.hasher.update((dim as u64).to_le_bytes());
                }
                match tensor.into_data().convert::<f32>().try_into_vec::<f32>() {
                    Ok(values) => values
                        .iter()
                        .for_each(|v| self.hasher.update(v.to_le_bytes())),
                    Err(e) => {
                        self.failure.get_or_insert(format!("{e:?}"));
                    }
                }
            }
        }
        let mut hash = Hash {
            hasher: Sha256::new(),
            failure: None,
        };
        model.visit(&mut hash);
        if let Some(reason) = hash.failure {
            return Err(record_err("model", reason));
        }
        Ok(hash
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }
}
