//! What the [`Trainer`] consumes: a model's training step ([`TrainStep`]) and a data set
//! with its batcher ([`Data`]).

use super::*;

/// A model the [`Trainer`] can train on batches of type `B`.
pub trait TrainStep<B>: Module + 'static {
    /// The loss and outputs of a training batch. The model's parameters live on an autodiff
    /// device; the trainer back-propagates the returned loss.
    fn train_step(&self, batch: B) -> StepOutput;

    /// The loss and outputs of a validation batch, on the model's inference copy
    /// ([`Module::valid`]). Defaults to [`TrainStep::train_step`].
    fn valid_step(&self, batch: B) -> StepOutput {
        self.train_step(batch)
    }
}

/// A dataset and the batcher that turns its items into batches of type `B`.
pub struct Data<I, B> {
    pub(super) dataset: Arc<dyn Dataset<I>>,
    pub(super) batcher: Arc<dyn Batcher<I, B>>,
}

impl<I, B> Clone for Data<I, B> {
    fn clone(&self) -> Self {
        Self {
            dataset: self.dataset.clone(),
            batcher: self.batcher.clone(),
        }
    }
}

impl<I, B> Data<I, B> {
    /// Pairs a dataset with its batcher.
    pub fn new(dataset: impl Dataset<I> + 'static, batcher: impl Batcher<I, B> + 'static) -> Self {
        Self {
            dataset: Arc::new(dataset),
            batcher: Arc::new(batcher),
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.dataset.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.dataset.is_empty()
    }
}

/// Lets the data loader own a shared batcher.
pub(super) struct SharedBatcher<I, B>(pub(super) Arc<dyn Batcher<I, B>>);

impl<I, B> Batcher<I, B> for SharedBatcher<I, B> {
    fn batch(&self, items: Vec<I>, device: &Device) -> B {
        self.0.batch(items, device)
    }
}
