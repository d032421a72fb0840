//! How an optimizer step's loss and gradients are computed: one [`Strategy`] per execution
//! mode, behind one trait, so that the epoch loop (`run.rs`) is the same for all of them.
//!
//! - [`SingleDevice`]: Burn's data loader on one device, `accumulate` micro-batches summed per
//!   step;
//! - [`Replicas`](super::parallel::Replicas): every batch sharded over several devices of this
//!   process, the replicas' gradients summed on the first;
//! - [`Distributed`](super::parallel::Distributed): the replicas' gradients then summed over an
//!   MPI process group (`parallel.rs`).

use super::*;

/// What one optimizer step computed before the update.
pub(super) struct StepResult {
    /// The mean loss over the (global) batch.
    pub(super) loss: f64,
    /// The number of examples in the (global) batch.
    pub(super) examples: usize,
    /// One host output per batch or shard, for the metrics.
    pub(super) outputs: Vec<BatchOutput>,
    pub(super) grads: GradientsParams,
    /// Seconds since the start of training, as rank 0 counts them.
    pub(super) elapsed: f64,
}

/// The optimizer steps of one epoch, in order.
pub(super) trait EpochSteps<M> {
    /// The next step's loss, outputs and gradients on `model` (`clock`: seconds of training
    /// so far, read when the step's time is taken); `None` when the epoch is over.
    fn next(&mut self, model: &M, clock: &dyn Fn() -> f64) -> Result<Option<StepResult>>;
}

/// An execution mode of the [`Trainer`]: where the batches of a step run and how their
/// gradients are summed.
pub(super) trait Strategy<M, I, B> {
    /// Makes the model the same on every worker before training (a process group broadcasts
    /// rank 0's weights); the identity by default.
    fn prepare(&self, model: M) -> Result<M> {
        Ok(model)
    }

    /// The steps of the epoch whose shuffle is seeded by `seed`.
    fn epoch<'a>(
        &'a mut self,
        train: &'a Data<I, B>,
        seed: u64,
    ) -> Result<Box<dyn EpochSteps<M> + 'a>>;

    /// Returns once every worker has finished training (a process group's barrier, so that no
    /// rank reads the run folder before rank 0 has written it); at once by default.
    fn finish(&self) -> Result<()> {
        Ok(())
    }
}

/// What every strategy needs of the configuration.
#[derive(Clone, Copy)]
pub(super) struct StepPlan {
    pub(super) batch_size: usize,
    pub(super) accumulate: usize,
    pub(super) shuffle: bool,
    /// Whether a metric besides the loss reads the model's outputs.
    pub(super) needs_outputs: bool,
}

/// One device, reading Burn's data loader (`num_workers` threads when set).
pub(super) struct SingleDevice<I, B> {
    /// The autodiff device the batches are made on.
    pub(super) device: Device,
    pub(super) plan: StepPlan,
    pub(super) num_workers: usize,
    /// The current epoch's loader, which the steps borrow.
    pub(super) loader: Option<Arc<dyn burn::data::dataloader::DataLoader<B>>>,
    pub(super) items: std::marker::PhantomData<I>,
}

impl<M, I, B> Strategy<M, I, B> for SingleDevice<I, B>
where
    M: TrainStep<B>,
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    B: Send + Clone + std::fmt::Debug + 'static,
{
    fn epoch<'a>(
        &'a mut self,
        train: &'a Data<I, B>,
        seed: u64,
    ) -> Result<Box<dyn EpochSteps<M> + 'a>> {
        let mut builder = DataLoaderBuilder::new(SharedBatcher(train.batcher.clone()))
            .batch_size(self.plan.batch_size)
            .set_device(self.device.clone());
        if self.plan.shuffle {
            builder = builder.shuffle(seed);
        }
        if self.num_workers > 0 {
            builder = builder.num_workers(self.num_workers);
        }
        let loader = self.loader.insert(builder.build(train.dataset.clone()));
        Ok(Box::new(LoaderSteps {
            batches: loader.iter(),
            plan: self.plan,
        }))
    }
}

/// The steps of one epoch on one device.
struct LoaderSteps<'a, B> {
    batches: Box<dyn burn::data::dataloader::DataLoaderIterator<B> + 'a>,
    plan: StepPlan,
}

impl<M: TrainStep<B>, B> EpochSteps<M> for LoaderSteps<'_, B> {
    /// Up to `accumulate` micro-batches, each loss weighted by its size (the sum is divided
    /// by the step's examples at the end).
    fn next(&mut self, model: &M, clock: &dyn Fn() -> f64) -> Result<Option<StepResult>> {
        let accumulating = self.plan.accumulate > 1;
        let mut micro = MicroBatches::new();
        for _ in 0..self.plan.accumulate {
            let Some(item) = self.batches.next() else {
                break;
            };
            let batch = item.map_err(|e| Error::Data(e.to_string()))?;
            let (loss_tensor, host) = to_host(model.train_step(batch), self.plan.needs_outputs)?;
            let (loss, n) = (host.loss, host.batch_size);
            let grads = if !loss.is_finite() {
                GradientsParams::new()
            } else if accumulating {
                let weighted = loss_tensor * (n as f32);
                GradientsParams::from_grads(weighted.backward(), model)
            } else {
                GradientsParams::from_grads(loss_tensor.backward(), model)
            };
            micro.add(model, grads, loss, n as f64, n, vec![host]);
        }
        let Some(first_loss) = micro.first_loss() else {
            return Ok(None);
        };
        let examples = micro.examples;
        let mut grads = micro.grads();
        let loss = if micro.count == 1 {
            first_loss
        } else {
            micro.weighted_loss / examples.max(1) as f64
        };
        if accumulating {
            grads = scale_grads(model, grads, 1.0 / examples.max(1) as f32);
        }
        Ok(Some(StepResult {
            loss,
            examples,
            outputs: micro.outputs,
            grads,
            elapsed: clock(),
        }))
    }
}

/// Reads a training step's loss and copies its outputs to the host for the metrics (only when
/// a metric needs them). Returns the loss tensor, still in the graph, and the host copy.
pub(super) fn to_host(out: StepOutput, needs_outputs: bool) -> Result<(Tensor<1>, BatchOutput)> {
    let host = BatchOutput {
        loss: out.loss.clone().into_scalar::<f64>(),
        batch_size: out.batch_size,
        output: if needs_outputs {
            HostOutput::from_output(out.output)?
        } else {
            HostOutput::None
        },
    };
    Ok((out.loss, host))
}
