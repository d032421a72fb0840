//! Optimizers and learning-rate schedules, as serde-able configs over Burn's own
//! implementations (`burn::optim`, `burn::lr_scheduler`). One exception, for speed only: on
//! flex, Adam's update runs as one fused pass per parameter ([`kiln_kernels::flex::adam`], same formulas and
//! state records as Burn's `Adam`, which still runs AMSGrad, weight decay and other backends).
//!
//! - [`OptimizerConfig`]: SGD (momentum, Nesterov, weight decay), Adam, AdamW, RMSprop, AdaGrad.
//!   Each variant holds Burn's own config, so every option Burn has stays reachable.
//! - [`LrSchedule`]: constant, step, exponential, cosine, and linear warm-up followed by a linear
//!   or cosine decay. Schedules advance once per optimizer step; lengths left unset default to
//!   the number of steps the trainer plans to run.

use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::exponential::ExponentialLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::{ModuleLrScheduler, ModuleLrSchedulerConfig};
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::lr_scheduler::step::StepLrSchedulerConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamWConfig, ModuleOptimizer, RmsPropConfig, SgdConfig,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// An optimizer, chosen by configuration. Each variant wraps Burn's config for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// Stochastic gradient descent, optionally with momentum (and Nesterov) and weight decay.
    Sgd(SgdConfig),
    /// Adam (Kingma and Ba, 2015), optionally AMSGrad.
    Adam(AdamConfig),
    /// Adam with decoupled weight decay (Loshchilov and Hutter, 2019).
    AdamW(AdamWConfig),
    /// RMSprop (Hinton, 2012).
    RmsProp(RmsPropConfig),
    /// AdaGrad (Duchi et al., 2011).
    AdaGrad(AdaGradConfig),
}

impl OptimizerConfig {
    /// Plain gradient descent, `W <- W - lr dL/dW` (the seed's update).
    pub fn sgd() -> Self {
        OptimizerConfig::Sgd(SgdConfig::new())
    }

    /// SGD with momentum `momentum` (no dampening, as in PyTorch), Nesterov if asked, and L2
    /// weight decay when `weight_decay > 0`.
    pub fn sgd_momentum(momentum: f64, nesterov: bool, weight_decay: f32) -> Self {
        let config = SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(0.0)
                    .with_nesterov(nesterov),
            ))
            .with_weight_decay(decay(weight_decay));
        OptimizerConfig::Sgd(config)
    }

    /// Adam with PyTorch's defaults (betas 0.9 / 0.999, epsilon 1e-8, no weight decay).
    pub fn adam() -> Self {
        OptimizerConfig::Adam(AdamConfig::new().with_epsilon(1e-8))
    }

    /// AdamW with PyTorch's defaults and the given decoupled weight decay.
    pub fn adamw(weight_decay: f32) -> Self {
        OptimizerConfig::AdamW(
            AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(weight_decay),
        )
    }

    /// RMSprop with PyTorch's defaults (alpha 0.99, epsilon 1e-8, no momentum).
    pub fn rmsprop() -> Self {
        OptimizerConfig::RmsProp(RmsPropConfig::new().with_momentum(0.0).with_epsilon(1e-8))
    }

    /// AdaGrad with PyTorch's defaults (epsilon 1e-10).
    pub fn adagrad() -> Self {
        OptimizerConfig::AdaGrad(AdaGradConfig::new().with_epsilon(1e-10))
    }

    /// A short name for logs: `sgd`, `adam`, `adamw`, `rmsprop`, `adagrad`.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::AdamW(_) => "adamw",
            OptimizerConfig::RmsProp(_) => "rmsprop",
            OptimizerConfig::AdaGrad(_) => "adagrad",
        }
    }

    /// Builds Burn's module optimizer.
    pub fn init(&self) -> ModuleOptimizer {
        match self {
            OptimizerConfig::Sgd(c) => c.init(),
            #[cfg(feature = "flex")]
            OptimizerConfig::Adam(c) => kiln_kernels::flex::adam::init(c),
            #[cfg(not(feature = "flex"))]
            OptimizerConfig::Adam(c) => c.init(),
            OptimizerConfig::AdamW(c) => c.init(),
            OptimizerConfig::RmsProp(c) => c.init(),
            OptimizerConfig::AdaGrad(c) => c.init(),
        }
    }
}

fn decay(weight_decay: f32) -> Option<WeightDecayConfig> {
    (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay))
}

/// How a schedule decays after its warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Linearly to the final rate.
    Linear,
    /// Along half a cosine to the final rate.
    Cosine,
}

/// A learning-rate schedule, advanced once per optimizer step.
///
/// Lengths given as `None` default to the total number of steps the trainer plans
/// (`max_steps`, or `max_epochs` times the batches per epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant {
        /// The learning rate.
        lr: f64,
    },
    /// `lr * gamma^(step / step_size)`.
    Step {
        /// The initial learning rate.
        lr: f64,
        /// Steps between two decays.
        step_size: usize,
        /// The factor applied at each decay.
        gamma: f64,
    },
    /// `lr * gamma^step`.
    Exponential {
        /// The initial learning rate.
        lr: f64,
        /// The factor applied at every step, in `(0, 1]`.
        gamma: f64,
    },
    /// Cosine annealing from `lr` to `min_lr` over `steps`.
    Cosine {
        /// The initial learning rate.
        lr: f64,
        /// The final learning rate.
        min_lr: f64,
        /// The length of the schedule.
        steps: Option<usize>,
    },
    /// A linear warm-up from `lr * 1e-3` to `lr`, then a decay to `final_lr`.
    WarmupDecay {
        /// The peak learning rate, reached at the end of the warm-up.
        lr: f64,
        /// Warm-up length in steps.
        warmup_steps: usize,
        /// The decay's shape.
        decay: Decay,
        /// The final learning rate.
        final_lr: f64,
        /// Total length (warm-up included).
        steps: Option<usize>,
    },
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(lr: f64) -> Self {
        LrSchedule::Constant { lr }
    }

    /// The rate at the first step.
    pub fn initial_lr(&self) -> f64 {
        match *self {
            LrSchedule::Constant { lr }
            | LrSchedule::Step { lr, .. }
            | LrSchedule::Exponential { lr, .. }
            | LrSchedule::Cosine { lr, .. } => lr,
            LrSchedule::WarmupDecay { lr, .. } => lr * 1e-3,
        }
    }

    /// Builds Burn's scheduler; `total_steps` fills the lengths left unset.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a warm-up not shorter than the schedule, or a schedule Burn
    /// refuses (its reason quoted).
    pub fn init(&self, total_steps: usize) -> Result<ModuleLrScheduler> {
        let total = |steps: Option<usize>| steps.unwrap_or(total_steps).max(1);
        let config = match *self {
            LrSchedule::Constant { lr } => LrSchedulerConfig::Constant(lr),
            LrSchedule::Step {
                lr,
                step_size,
                gamma,
            } => {
                LrSchedulerConfig::Step(StepLrSchedulerConfig::new(lr, step_size).with_gamma(gamma))
            }
            LrSchedule::Exponential { lr, gamma } => {
                LrSchedulerConfig::Exponential(ExponentialLrSchedulerConfig::new(lr, gamma))
            }
            LrSchedule::Cosine { lr, min_lr, steps } => LrSchedulerConfig::Cosine(
                CosineAnnealingLrSchedulerConfig::new(lr, total(steps)).with_min_lr(min_lr),
            ),
            LrSchedule::WarmupDecay {
                lr,
                warmup_steps,
                decay,
                final_lr,
                steps,
            } => {
                let total = total(steps);
                if warmup_steps == 0 || warmup_steps >= total {
                    return Err(Error::InvalidConfig(format!(
                        "warm-up of {warmup_steps} steps must be at least 1 and shorter than the \
                         schedule ({total} steps)"
                    )));
                }
                let rest = total - warmup_steps;
                let warmup = LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(
                    lr * 1e-3,
                    lr,
                    warmup_steps,
                ));
                let after = match decay {
                    Decay::Linear => {
                        LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(lr, final_lr, rest))
                    }
                    Decay::Cosine => LrSchedulerConfig::Cosine(
                        CosineAnnealingLrSchedulerConfig::new(lr, rest).with_min_lr(final_lr),
                    ),
                };
                LrSchedulerConfig::Sequential(SequentialLrSchedulerConfig::new(
                    vec![warmup, after],
                    vec![warmup_steps],
                ))
            }
        };
        ModuleLrSchedulerConfig::new(config)
            .init()
            .map_err(|reason| {
                Error::InvalidConfig(format!("learning-rate schedule {self:?}: {reason}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(schedule: &LrSchedule, total: usize, n: usize) -> Vec<f64> {
        let mut s = schedule.init(total).unwrap();
        (0..n).map(|_| s.step().base()).collect()
    }

    #[test]
    fn constant_and_step_schedules() {
        assert_eq!(rates(&LrSchedule::constant(0.1), 10, 3), vec![0.1; 3]);
        let step = LrSchedule::Step {
            lr: 0.1,
            step_size: 2,
            gamma: 0.5,
        };
        let r = rates(&step, 10, 5);
        for (got, want) in r.iter().zip([0.1, 0.1, 0.05, 0.05, 0.025]) {
            assert!((got - want).abs() < 1e-12, "{r:?}");
        }
    }

    #[test]
    fn cosine_ends_at_min_and_warmup_peaks() {
        let cosine = LrSchedule::Cosine {
            lr: 0.1,
            min_lr: 0.001,
            steps: None,
        };
        let r = rates(&cosine, 20, 21);
        assert!(
            (r[0] - 0.1).abs() < 1e-9 && (r[20] - 0.001).abs() < 1e-9,
            "{r:?}"
        );
        assert!(r.windows(2).take(20).all(|w| w[1] <= w[0] + 1e-12));

        let warm = LrSchedule::WarmupDecay {
            lr: 0.01,
            warmup_steps: 5,
            decay: Decay::Linear,
            final_lr: 0.0,
            steps: Some(15),
        };
        let r = rates(&warm, 0, 16);
        let peak = r.iter().cloned().fold(0.0, f64::max);
        assert!((peak - 0.01).abs() < 1e-9, "{r:?}");
        assert!(r[0] < 0.001 && r[15] < 1e-9, "{r:?}");
    }

    #[test]
    fn bad_schedules_are_errors() {
        let warm = LrSchedule::WarmupDecay {
            lr: 0.01,
            warmup_steps: 50,
            decay: Decay::Cosine,
            final_lr: 0.0,
            steps: Some(10),
        };
        assert!(warm.init(10).is_err());
        let cosine = LrSchedule::Cosine {
            lr: 0.1,
            min_lr: 0.5,
            steps: Some(3),
        };
        assert!(cosine.init(3).is_err());
    }

    #[test]
    fn optimizer_config_round_trips_through_json() {
        for config in [
            OptimizerConfig::sgd(),
            OptimizerConfig::sgd_momentum(0.9, true, 1e-4),
            OptimizerConfig::adam(),
            OptimizerConfig::adamw(0.01),
            OptimizerConfig::rmsprop(),
            OptimizerConfig::adagrad(),
        ] {
            let json = serde_json::to_string(&config).unwrap();
            let back: OptimizerConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
            assert!(json.contains(config.name()), "{json}");
        }
    }
}
