//! Losses, as thin, documented wrappers over Burn's own (`burn::nn::loss`), plus a serde-able
//! [`LossConfig`] so a run's loss can be chosen from a config file.
//!
//! | function | formula | Burn type |
//! |---|---|---|
//! | [`mse`] | `1/N sum (y - y_hat)^2` | `MseLoss` |
//! | [`half_mse`] | `1/(2N) sum (y - y_hat)^2`, the seed's `L` | `MseLoss` |
//! | [`mae`] | `1/N sum abs(y - y_hat)` | `LpLoss::l1` |
//! | [`huber`] | quadratic below `delta`, linear above | `HuberLoss` |
//! | [`CrossEntropy`] | softmax cross-entropy, label smoothing, ignore index | `CrossEntropyLoss` |
//! | [`bce_with_logits`] | sigmoid + binary cross-entropy, numerically stable | `BinaryCrossEntropyLoss` |
//!
//! Every function returns a one-element tensor (shape `[1]`) that can be back-propagated.

use burn::nn::loss::{
    BinaryCrossEntropyLossConfig, CrossEntropyLoss, CrossEntropyLossConfig, HuberLossConfig,
    LpLossConfig, MseLoss, Reduction,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Mean squared error, `1/N sum (y - y_hat)^2` over every element.
pub fn mse<const D: usize>(predictions: Tensor<D>, targets: Tensor<D>) -> Tensor<1> {
    MseLoss::new().forward(predictions, targets, Reduction::Mean)
}

/// The seed's loss, `L = 1/(2N) sum (y - y_hat)^2`: half the mean squared error, so that its
/// gradient is `1/N sum (y_hat - y) d y_hat` without the factor 2.
pub fn half_mse<const D: usize>(predictions: Tensor<D>, targets: Tensor<D>) -> Tensor<1> {
    mse(predictions, targets).mul_scalar(0.5)
}

/// Mean absolute error, `1/N sum abs(y - y_hat)`.
pub fn mae<const D: usize>(predictions: Tensor<D>, targets: Tensor<D>) -> Tensor<1> {
    LpLossConfig::l1().forward(predictions, targets, Reduction::Mean)
}

/// Huber loss with threshold `delta`: `0.5 r^2` for `|r| <= delta`, `delta (|r| - delta/2)`
/// above, averaged over every element.
pub fn huber<const D: usize>(predictions: Tensor<D>, targets: Tensor<D>, delta: f32) -> Tensor<1> {
    HuberLossConfig::new(delta)
        .init()
        .forward(predictions, targets, Reduction::Mean)
}

/// Binary cross-entropy on logits (the sigmoid is applied inside, stably), averaged.
///
/// `targets` hold 0 or 1 and have the same shape as `logits`.
pub fn bce_with_logits<const D: usize>(logits: Tensor<D>, targets: Tensor<D, Int>) -> Tensor<1> {
    BinaryCrossEntropyLossConfig::new()
        .with_logits(true)
        .init(&logits.device())
        .forward(logits, targets)
}

/// Softmax cross-entropy over class logits, with optional label smoothing and an ignored
/// target index (padding in sequence models).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrossEntropy {
    /// Label smoothing `alpha` in `[0, 1]`: the target distribution becomes
    /// `(1 - alpha) one_hot + alpha / C`.
    pub smoothing: Option<f32>,
    /// A target class whose positions contribute nothing to the loss nor to its mean (padding).
    pub ignore_index: Option<usize>,
}

impl CrossEntropy {
    /// Plain cross-entropy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the label smoothing `alpha`.
    pub fn with_smoothing(mut self, alpha: f32) -> Self {
        self.smoothing = Some(alpha);
        self
    }

    /// Sets the ignored target index.
    pub fn with_ignore_index(mut self, index: usize) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// Builds Burn's loss module on `device`.
    ///
    /// # Panics
    /// If `smoothing` is outside `[0, 1]` (Burn's own check); validate user input first with
    /// [`CrossEntropy::validate`].
    pub fn init(&self, device: &Device) -> CrossEntropyLoss {
        CrossEntropyLossConfig::new()
            .with_smoothing(self.smoothing)
            .with_pad_tokens(self.ignore_index.map(|i| vec![i]))
            .init(device)
    }

    /// Checks the smoothing factor.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for a smoothing factor outside `[0,
    /// 1]`.
    pub fn validate(&self) -> crate::Result<()> {
        match self.smoothing {
            Some(alpha) if !(0.0..=1.0).contains(&alpha) => Err(crate::Error::InvalidConfig(
                format!("label smoothing must be in [0, 1], got {alpha}"),
            )),
            _ => Ok(()),
        }
    }

    /// The loss for `logits` `[N, C]` and class `targets` `[N]`.
    ///
    /// When every target is the ignored index the mean is over zero elements and is NaN; the
    /// trainer stops on it with [`Error::NonFiniteLoss`](crate::Error::NonFiniteLoss).
    ///
    /// On flex (f32, no smoothing) the loss is one fused operation with the same value and
    /// gradient (`kiln_kernels::flex::cross_entropy`); elsewhere it is Burn's `CrossEntropyLoss`.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        #[cfg(feature = "flex")]
        if self.smoothing.is_none_or(|a| a == 0.0)
            && crate::Backend::of(&logits.device()) == Some(crate::Backend::Flex)
            && let Some(loss) = kiln_kernels::flex::cross_entropy::cross_entropy(
                &logits,
                &targets,
                self.ignore_index,
            )
        {
            return loss;
        }
        self.init(&logits.device()).forward(logits, targets)
    }
}

/// A regression loss chosen by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LossConfig {
    /// [`mse`]
    Mse,
    /// [`half_mse`], the seed's loss.
    HalfMse,
    /// [`mae`]
    Mae,
    /// [`huber`] with its threshold.
    Huber {
        /// The threshold between the quadratic and the linear part.
        delta: f32,
    },
}

impl LossConfig {
    /// The loss of `predictions` against `targets`.
    pub fn forward<const D: usize>(&self, predictions: Tensor<D>, targets: Tensor<D>) -> Tensor<1> {
        match *self {
            LossConfig::Mse => mse(predictions, targets),
            LossConfig::HalfMse => half_mse(predictions, targets),
            LossConfig::Mae => mae(predictions, targets),
            LossConfig::Huber { delta } => huber(predictions, targets, delta),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tolerance;

    fn t1(values: &[f32]) -> Tensor<1> {
        Tensor::from_floats(values, &crate::test_device())
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    // Hand-computed: residuals r = y_hat - y = [1, -2, 0.5].
    #[test]
    fn regression_losses_match_hand_computed_values() {
        let (p, y) = (t1(&[2.0, 0.0, 3.5]), t1(&[1.0, 2.0, 3.0]));
        // 1/N sum r^2 = (1 + 4 + 0.25) / 3
        assert!((scalar(mse(p.clone(), y.clone())) - 1.75).abs() < 1e-6);
        assert!((scalar(half_mse(p.clone(), y.clone())) - 0.875).abs() < 1e-6);
        // (1 + 2 + 0.5) / 3
        assert!((scalar(mae(p.clone(), y.clone())) - 3.5 / 3.0).abs() < 1e-6);
        // delta 1: [0.5*1, 1*(2-0.5), 0.5*0.25] / 3
        let expected = (0.5 + 1.5 + 0.125) / 3.0;
        assert!((scalar(huber(p.clone(), y.clone(), 1.0)) - expected).abs() < 1e-6);
        let cfg = LossConfig::Huber { delta: 1.0 };
        assert!((scalar(cfg.forward(p, y)) - expected).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_matches_hand_computed_values() {
        let device = crate::test_device();
        // logits [0, ln 3] -> p = [0.25, 0.75]
        let logits = Tensor::<2>::from_floats([[0.0, 3f32.ln()], [3f32.ln(), 0.0]], &device);
        let targets = Tensor::<1, Int>::from_ints([1, 1], &device);
        let plain = scalar(CrossEntropy::new().forward(logits.clone(), targets.clone()));
        let expected = (-(0.75f32.ln()) - 0.25f32.ln()) / 2.0;
        assert!((plain - expected).abs() < 1e-5, "{plain} vs {expected}");

        // Ignoring class 0 changes nothing here; ignoring class 1 leaves nothing: NaN.
        let ignore_one = CrossEntropy::new().with_ignore_index(1);
        assert!(scalar(ignore_one.forward(logits.clone(), targets.clone())).is_nan());
        let mixed = Tensor::<1, Int>::from_ints([1, 0], &device);
        let only_first = scalar(
            CrossEntropy::new()
                .with_ignore_index(0)
                .forward(logits.clone(), mixed),
        );
        assert!((only_first + 0.75f32.ln()).abs() < 1e-5);

        // Smoothing 0.2 over 2 classes: target [0.1, 0.9].
        let smooth = scalar(
            CrossEntropy::new()
                .with_smoothing(0.2)
                .forward(logits, targets),
        );
        let row1 = -(0.1 * 0.25f32.ln() + 0.9 * 0.75f32.ln());
        let row2 = -(0.1 * 0.75f32.ln() + 0.9 * 0.25f32.ln());
        assert!((smooth - (row1 + row2) / 2.0).abs() < 1e-5);
        assert!(CrossEntropy::new().with_smoothing(1.5).validate().is_err());
    }

    #[test]
    fn bce_with_logits_matches_hand_computed_values() {
        let device = crate::test_device();
        let logits = Tensor::<1>::from_floats([0.0, 2.0], &device);
        let targets = Tensor::<1, Int>::from_ints([1, 0], &device);
        let sigmoid2 = 1.0 / (1.0 + (-2f32).exp());
        let expected = (-(0.5f32.ln()) - (1.0 - sigmoid2).ln()) / 2.0;
        let got = bce_with_logits(logits, targets);
        got.into_data()
            .assert_approx_eq::<f32>(&TensorData::from([expected]), Tolerance::absolute(1e-5));
    }
}
