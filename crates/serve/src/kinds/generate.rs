//! Chat and completion models: each decoder folder or GGUF file of `[[generators]]` on its
//! scheduler's thread (continuous batching where the model has it), stopped by the
//! server's shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kiln_nlp::generation::{Engine, TextGenerator};
use kiln_nlp::models::Precision;
use tokio::sync::Semaphore;

use super::{Kind, LoadContext, model_err};
use crate::error::ServeError;
use crate::generation::{Scheduler, SchedulerConfig};

/// A decoder on its scheduler's thread, with a bounded number of running and waiting
/// requests.
pub struct Generator {
    /// The model's queue.
    pub scheduler: Scheduler,
    /// Permits for running and waiting requests (the batching queue's size).
    pub slots: Arc<Semaphore>,
}

impl Kind for Generator {
    type Loaded = BTreeMap<String, Generator>;

    /// The decoders of `config`, each on its scheduler's thread (continuous batching where the
    /// model has it), stopped by `shutdown`.
    fn load(ctx: &LoadContext<'_>) -> Result<Self::Loaded, ServeError> {
        let LoadContext {
            config,
            device,
            metrics,
            shutdown,
            ..
        } = *ctx;
        let mut generators = BTreeMap::new();
        for m in &config.generators {
            let dir = config.resolve(&m.path)?;
            let model = TextGenerator::load(&dir, device, Engine::Auto, Precision::F32)
                .map_err(|e| model_err(&m.name, e))?
                .with_activations(m.activations.unwrap_or_default().into());
            let scheduler = Scheduler::spawn(
                &m.name,
                model,
                SchedulerConfig {
                    stall: Duration::from_secs_f64(config.limits.stream_stall_secs),
                    shutdown: shutdown.clone(),
                    depth: metrics.queue_depth.with_label_values(&[&m.name]),
                    batch: Some(config.batching.chat_limits()),
                },
            )
            .map_err(|e| model_err(&m.name, e))?;
            generators.insert(
                m.name.clone(),
                Generator {
                    scheduler,
                    slots: Arc::new(Semaphore::new(config.batching.queue)),
                },
            );
        }
        Ok(generators)
    }
}
