//! A class-conditional convolutional variational autoencoder (Kingma & Welling, 2014) for
//! 28x28 images: two stride-2 convolutions encode the image, with the class one-hot beside
//! the features, to the mean and log-variance of a Gaussian posterior; a sample
//! `z = mu + sigma * eps` (the reparameterisation) with the class goes through a dense layer
//! and two stride-2 transposed convolutions back to pixel logits.
//!
//! The loss is the negative ELBO per image: the Bernoulli reconstruction term (binary cross
//! entropy summed over the pixels) plus `KL(q(z | x, y) || N(0, I))
//! = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2)`; both are reported as terms (`recon`, `kl`:
//! add `kiln_core::metrics::Term`s to the trainer).

use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::{relu, sigmoid, softplus};
use kiln_core::StepOutput;
use kiln_core::TrainStep;
use kiln_core::metrics::Output;

use crate::batch::ImageBatch;
use crate::error::{Result, VisionError};

/// Configuration of [`Vae`].
#[derive(Config, Debug)]
pub struct VaeConfig {
    /// Image channels (28x28 images).
    #[config(default = 1)]
    pub channels: usize,
    /// The number of classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// The latent size.
    #[config(default = 16)]
    pub latent: usize,
    /// The convolutions' widths.
    #[config(default = "[32, 64]")]
    pub widths: [usize; 2],
    /// The dense layer's width.
    #[config(default = 256)]
    pub hidden: usize,
}

impl VaeConfig {
    /// Checks the sizes.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] for a zero size.
    pub fn check(&self) -> Result<()> {
        let sizes = [
            self.channels,
            self.num_classes,
            self.latent,
            self.widths[0],
            self.widths[1],
            self.hidden,
        ];
        if sizes.contains(&0) {
            return Err(VisionError::Parameter {
                name: "vae",
                reason: format!("sizes {sizes:?}: every size must be at least 1"),
            });
        }
        Ok(())
    }

    /// Builds the model on `device`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn init(&self, device: &Device) -> Result<Vae> {
        self.check()?;
        let [w0, w1] = self.widths;
        let down = |cin, cout| {
            Conv2dConfig::new([cin, cout], [4, 4])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let up = |cin, cout| {
            ConvTranspose2dConfig::new([cin, cout], [4, 4])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .init(device)
        };
        let flat = w1 * 7 * 7;
        let k = self.num_classes;
        Ok(Vae {
            enc1: down(self.channels, w0),
            enc2: down(w0, w1),
            enc_fc: LinearConfig::new(flat + k, self.hidden).init(device),
            mu: LinearConfig::new(self.hidden, self.latent).init(device),
            log_var: LinearConfig::new(self.hidden, self.latent).init(device),
            dec_fc1: LinearConfig::new(self.latent + k, self.hidden).init(device),
            dec_fc2: LinearConfig::new(self.hidden, flat).init(device),
            dec1: up(w1, w0),
            dec2: up(w0, self.channels),
            num_classes: k,
            latent: self.latent,
            width: w1,
        })
    }
}

/// The class-conditional VAE.
#[derive(Module, Debug)]
pub struct Vae {
    enc1: Conv2d,
    enc2: Conv2d,
    enc_fc: Linear,
    mu: Linear,
    log_var: Linear,
    dec_fc1: Linear,
    dec_fc2: Linear,
    dec1: ConvTranspose2d,
    dec2: ConvTranspose2d,
    num_classes: usize,
    latent: usize,
    width: usize,
}

impl Vae {
    fn one_hot(&self, classes: Tensor<1, Int>) -> Tensor<2> {
        classes.one_hot::<2>(self.num_classes).float()
    }

    /// The posterior's mean and log-variance.
    ///
    /// # Shapes
    /// - `images`: `[N, C, 28, 28]` in `[0, 1]`, `classes`: `[N]`
    /// - output: two `[N, latent]`
    pub fn encode(&self, images: Tensor<4>, classes: Tensor<1, Int>) -> (Tensor<2>, Tensor<2>) {
        let h = relu(self.enc1.forward(images));
        let h: Tensor<2> = relu(self.enc2.forward(h)).flatten(1, 3);
        let h = relu(
            self.enc_fc
                .forward(Tensor::cat(vec![h, self.one_hot(classes)], 1)),
        );
        (self.mu.forward(h.clone()), self.log_var.forward(h))
    }

    /// Pixel logits of latents `z` for `classes`.
    ///
    /// # Shapes
    /// - `z`: `[N, latent]`, `classes`: `[N]`
    /// - output: `[N, C, 28, 28]`
    pub fn decode_logits(&self, z: Tensor<2>, classes: Tensor<1, Int>) -> Tensor<4> {
        let n = z.dims()[0];
        let h = relu(
            self.dec_fc1
                .forward(Tensor::cat(vec![z, self.one_hot(classes)], 1)),
        );
        let h = relu(self.dec_fc2.forward(h)).reshape([n, self.width, 7, 7]);
        self.dec2.forward(relu(self.dec1.forward(h)))
    }

    /// The negative ELBO per image and its two terms (reconstruction, KL), each `[1]`; the
    /// posterior sample from the device's random stream.
    pub fn loss_terms(&self, batch: ImageBatch) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let n = batch.targets.dims()[0] as f64;
        let (mu, log_var) = self.encode(batch.images.clone(), batch.targets.clone());
        let eps = mu.random_like(Distribution::Normal(0.0, 1.0));
        let z = mu.clone() + (log_var.clone() * 0.5).exp() * eps;
        let logits = self.decode_logits(z, batch.targets);
        // BCE with logits: softplus(l) - x l, stable for any l.
        let recon = (softplus(logits.clone(), 1.0) - batch.images * logits).sum() / n;
        let kl = (log_var.clone() + 1.0 - mu.powi_scalar(2) - log_var.exp()).sum() * (-0.5 / n);
        let (recon, kl) = (recon.reshape([1]), kl.reshape([1]));
        (recon.clone() + kl.clone(), recon, kl)
    }

    /// Images for `classes` from latents drawn after seeding the device with `seed`; pixels
    /// in `[0, 1]` (the decoder's Bernoulli means), `[N, C, 28, 28]`.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] for no classes or a class out of range.
    pub fn sample(&self, classes: &[usize], seed: u64, device: &Device) -> Result<Tensor<4>> {
        if classes.is_empty() {
            return Err(VisionError::Parameter {
                name: "classes",
                reason: "no images asked for".into(),
            });
        }
        if let Some(c) = classes.iter().find(|&&c| c >= self.num_classes) {
            return Err(VisionError::Parameter {
                name: "classes",
                reason: format!("class {c}: expected below {}", self.num_classes),
            });
        }
        device.seed(seed);
        let z = Tensor::<2>::random(
            [classes.len(), self.latent],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let labels: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
        let labels = Tensor::<1, Int>::from_ints(labels.as_slice(), device);
        Ok(sigmoid(self.decode_logits(z, labels)))
    }
}

impl TrainStep<ImageBatch> for Vae {
    fn train_step(&self, batch: ImageBatch) -> StepOutput {
        let n = batch.targets.dims()[0];
        let (loss, recon, kl) = self.loss_terms(batch);
        StepOutput {
            loss,
            batch_size: n,
            output: Output::Terms(vec![("recon", recon), ("kl", kl)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elbo_terms_sample_and_training() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        device.seed(4);
        let model = VaeConfig::new()
            .with_widths([4, 8])
            .with_hidden(16)
            .with_latent(3)
            .init(&device)
            .unwrap();
        let batch = |device: &Device| ImageBatch {
            images: Tensor::<4>::random([3, 1, 28, 28], Distribution::Uniform(0.0, 1.0), device)
                .greater_elem(0.7)
                .float(),
            targets: Tensor::<1, Int>::from_ints([0, 5, 9], device),
        };
        let (loss, recon, kl) = model.loss_terms(batch(&device));
        let [loss, recon, kl] = [loss, recon, kl].map(|t| t.into_scalar::<f64>());
        // Binary images: the reconstruction term is at least 0 per pixel; KL is non-negative.
        assert!(recon > 0.0 && kl >= 0.0, "{recon} {kl}");
        assert!((loss - recon - kl).abs() < 1e-3 * loss);
        let images = model.sample(&[1, 2], 7, &device).unwrap();
        assert_eq!(images.dims(), [2, 1, 28, 28]);
        let again = model.sample(&[1, 2], 7, &device).unwrap();
        assert_eq!(
            images.into_data().try_to_vec_as::<f32>().unwrap(),
            again.into_data().try_to_vec_as::<f32>().unwrap()
        );
        assert!(model.sample(&[10], 0, &device).is_err());
        assert!(model.sample(&[], 0, &device).is_err());
        assert!(VaeConfig::new().with_latent(0).init(&device).is_err());
        kiln_dev::conformance::check_training("vae", &model, &device, 10, 1e-2, |m, d| {
            d.seed(5);
            m.loss_terms(batch(d)).0
        });
    }
}
