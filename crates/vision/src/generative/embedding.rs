//! The diffusion step's embedding: sinusoidal features of the step `t` (the Transformer's
//! positional encoding, as DDPM uses it) followed by a two-layer MLP with SiLU, as
//! `diffusers`' `get_timestep_embedding` + `TimestepEmbedding`.
//!
//! `sinusoidal(t, dim)[i] = sin(t * f_i)` for `i < dim / 2` and `cos(t * f_(i - dim/2))` after,
//! with `f_i = exp(-ln(max_period) * i / (dim / 2 - shift))` (`diffusers`: `flip_sin_to_cos`
//! false, `downscale_freq_shift` = `shift`, 1 by default as in the original DDPM code).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

/// The sinusoidal features of steps `t`.
///
/// # Shapes
/// - `t`: `[N]` (float steps)
/// - output: `[N, dim]` (`dim` even)
pub fn sinusoidal(t: Tensor<1>, dim: usize, max_period: f64, shift: f64) -> Tensor<2> {
    let half = dim / 2;
    let device = t.device();
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(max_period.ln()) * i as f64 / (half as f64 - shift)).exp() as f32)
        .collect();
    let freqs = Tensor::<1>::from_floats(freqs.as_slice(), &device).unsqueeze_dim::<2>(0);
    let args = t.unsqueeze_dim::<2>(1) * freqs;
    Tensor::cat(vec![args.clone().sin(), args.cos()], 1)
}

/// Configuration of [`TimeEmbedding`].
#[derive(Config, Debug)]
pub struct TimeEmbeddingConfig {
    /// The sinusoidal features' size (even).
    pub features: usize,
    /// The output size.
    pub dim: usize,
    /// The longest period of the sinusoids.
    #[config(default = 10000.0)]
    pub max_period: f64,
    /// `diffusers`' `downscale_freq_shift`.
    #[config(default = 1.0)]
    pub shift: f64,
}

impl TimeEmbeddingConfig {
    /// Builds the embedding on `device`.
    pub fn init(&self, device: &Device) -> TimeEmbedding {
        TimeEmbedding {
            linear1: LinearConfig::new(self.features, self.dim).init(device),
            linear2: LinearConfig::new(self.dim, self.dim).init(device),
            features: self.features,
            max_period: self.max_period,
            shift: self.shift,
        }
    }
}

/// Sinusoidal features of the step, then `Linear -> SiLU -> Linear`.
#[derive(Module, Debug)]
pub struct TimeEmbedding {
    pub(crate) linear1: Linear,
    pub(crate) linear2: Linear,
    features: usize,
    max_period: f64,
    shift: f64,
}

impl TimeEmbedding {
    /// The embedding of steps `t`.
    ///
    /// # Shapes
    /// - `t`: `[N]`
    /// - output: `[N, dim]`
    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        let x = sinusoidal(t, self.features, self.max_period, self.shift);
        self.linear2.forward(silu(self.linear1.forward(x)))
    }
}
