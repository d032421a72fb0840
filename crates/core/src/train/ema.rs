//! An exponential moving average of the weights ([`Ema`], set with
//! [`TrainerConfig::with_ema`]): after every optimizer step the trainer updates a second copy of
//! the model, `avg <- d * avg + (1 - d) * weights`, and that average is what the run
//! validates, checkpoints as the model (the raw weights ride along for resuming), picks the
//! best epoch by and returns. Diffusion models and GANs are sampled from such an average; any
//! model can use it.
//!
//! Every float tensor of the module is averaged, batch norm's running statistics included
//! (as timm's `ModelEmaV2` and PyTorch's `AveragedModel(use_buffers=True)` do); integer and
//! boolean tensors keep the average's own values.

use burn::module::{ModuleMapper, ModuleVisitor, Param};

use super::*;

/// The moving average's decay, and whether it warms up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ema {
    /// The decay `d` in `[0, 1]`: the weight of the old average at each update (0.999 keeps
    /// roughly the last 1,000 steps).
    pub decay: f64,
    /// Warm-up: at update `n` (counting from 1) the decay is `min(decay, (1 + n) / (10 + n))`,
    /// TensorFlow's `ExponentialMovingAverage(num_updates=n)`, so that the average leaves the
    /// initial weights quickly. Off: `decay` from the first update.
    #[serde(default)]
    pub warmup: bool,
}

impl Ema {
    /// A moving average with `decay` and the warm-up on.
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            warmup: true,
        }
    }

    /// Sets the warm-up.
    pub fn with_warmup(mut self, warmup: bool) -> Self {
        self.warmup = warmup;
        self
    }

    /// The decay used by update `n` (counting from 1).
    pub fn decay_at(&self, n: usize) -> f64 {
        if self.warmup {
            self.decay.min((1.0 + n as f64) / (10.0 + n as f64))
        } else {
            self.decay
        }
    }

    pub(super) fn validate(&self) -> Result<()> {
        if (0.0..=1.0).contains(&self.decay) {
            Ok(())
        } else {
            Err(Error::InvalidConfig(format!(
                "ema decay must be in [0, 1], got {}",
                self.decay
            )))
        }
    }
}

/// `d * average + (1 - d) * current`, parameter by parameter in module order (both modules
/// have the same architecture), the result detached from any graph.
pub(super) fn blend<M: Module>(average: M, current: &M, d: f64) -> M {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().detach().flatten::<1>(0, D - 1));
        }
    }
    struct Blend {
        current: std::vec::IntoIter<Tensor<1>>,
        d: f64,
    }
    impl ModuleMapper for Blend {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let d = self.d;
            let next = self.current.next();
            param.map(|avg| match next {
                Some(cur) => {
                    let cur = cur.reshape(avg.shape());
                    (avg.detach() * d + cur * (1.0 - d)).detach()
                }
                None => avg.detach(),
            })
        }
    }
    let mut collected = Collect(Vec::new());
    current.visit(&mut collected);
    average.map(&mut Blend {
        current: collected.0.into_iter(),
        d,
    })
}
