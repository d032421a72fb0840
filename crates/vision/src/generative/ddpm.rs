//! A class-conditional denoising diffusion model (Ho et al., 2020): a [`UNet`] trained to
//! predict the noise `eps` added to an image at a random step of the forward process
//! ([`NoiseSchedule`]), the class replaced by "no class" with probability `class_dropout`
//! (classifier-free guidance, Ho & Salimans, 2022); sampled by DDPM's ancestral steps or by
//! DDIM in fewer steps, with a guidance scale `w`: `eps = eps_none + w (eps_class - eps_none)`.
//!
//! Images are `[0, 1]` pixels (a batcher without normalisation) mapped to `[-1, 1]` inside.

use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_core::{StepOutput, TrainStep};
use serde::{Deserialize, Serialize};

use super::schedule::{NoiseSchedule, Schedule};
use super::unet::{UNet, UNetConfig};
use crate::batch::ImageBatch;
use crate::error::{Result, VisionError};

/// Configuration of [`Ddpm`].
#[derive(Config, Debug)]
pub struct DdpmConfig {
    /// The noise predictor.
    pub unet: UNetConfig,
    /// Diffusion steps `T`.
    #[config(default = 1000)]
    pub steps: usize,
    /// The noise schedule.
    #[config(default = "Schedule::Cosine { s: 0.008 }")]
    pub schedule: Schedule,
    /// The probability of training a batch element without its class.
    #[config(default = 0.1)]
    pub class_dropout: f64,
}

impl DdpmConfig {
    /// Checks the network and the schedule.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] naming the bad setting.
    pub fn check(&self) -> Result<NoiseSchedule> {
        self.unet.check()?;
        if !(0.0..1.0).contains(&self.class_dropout) {
            return Err(VisionError::Parameter {
                name: "class_dropout",
                reason: format!("{}: expected a probability in [0, 1)", self.class_dropout),
            });
        }
        NoiseSchedule::new(self.schedule, self.steps)
    }

    /// Builds the model on `device`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn init(&self, device: &Device) -> Result<Ddpm> {
        let schedule = self.check()?;
        Ok(Ddpm {
            unet: self.unet.init(device),
            schedule,
            class_dropout: self.class_dropout,
        })
    }
}

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Sampler {
    /// DDPM's ancestral sampling through every one of the `T` steps.
    Ddpm,
    /// Deterministic DDIM (`eta = 0`) in `steps` evenly spaced steps.
    Ddim {
        /// The number of steps.
        steps: usize,
    },
}

/// The diffusion model: the noise predictor and its schedule.
#[derive(Module, Debug)]
pub struct Ddpm {
    /// The noise predictor.
    pub unet: UNet,
    #[module(skip)]
    schedule: NoiseSchedule,
    #[module(skip)]
    class_dropout: f64,
}

impl Ddpm {
    /// The schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The denoising loss of a batch: the mean squared error between the added noise and the
    /// predicted one, at uniformly drawn steps (the device's random stream).
    pub fn loss(&self, batch: ImageBatch, drop_classes: bool) -> Tensor<1> {
        let device = batch.images.device();
        let [n, c, h, w] = batch.images.dims();
        let steps = self.schedule.steps();
        let t = Tensor::<1>::random([n], Distribution::Uniform(0.0, steps as f64), &device)
            .floor()
            .clamp(0.0, (steps - 1) as f64);
        let ab: Vec<f32> = (0..steps)
            .map(|s| self.schedule.alpha_bar(Some(s)) as f32)
            .collect();
        let ab = Tensor::<1>::from_floats(ab.as_slice(), &device)
            .select(0, t.clone().int())
            .reshape([n, 1, 1, 1]);
        let x0 = batch.images * 2.0 - 1.0;
        let eps = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let xt = x0 * ab.clone().sqrt() + eps.clone() * (ab.neg() + 1.0).sqrt();
        let mut classes = batch.targets;
        if drop_classes && self.class_dropout > 0.0 {
            let drop = Tensor::<1>::random([n], Distribution::Uniform(0.0, 1.0), &device)
                .lower_elem(self.class_dropout);
            classes = classes.mask_fill(drop, self.unet.num_classes() as i64);
        }
        let predicted = self.unet.forward(xt, t, classes);
        (predicted - eps).powi_scalar(2).mean().reshape([1])
    }

    /// The guided noise prediction at step `t` for `classes`.
    fn eps(&self, x: Tensor<4>, t: usize, classes: &Tensor<1, Int>, guidance: f64) -> Tensor<4> {
        let device = x.device();
        let n = x.dims()[0];
        if guidance == 1.0 {
            let t = Tensor::<1>::full([n], t as f32, &device);
            return self.unet.forward(x, t, classes.clone());
        }
        let none = Tensor::<1, Int>::full([n], self.unet.num_classes() as i64, &device);
        let both = self.unet.forward(
            Tensor::cat(vec![x.clone(), x], 0),
            Tensor::<1>::full([2 * n], t as f32, &device),
            Tensor::cat(vec![classes.clone(), none], 0),
        );
        let conditional = both.clone().narrow(0, 0, n);
        let unconditional = both.narrow(0, n, n);
        unconditional.clone() + (conditional - unconditional) * guidance
    }

    /// Generates one image per entry of `classes` (each below the number of classes), from
    /// noise drawn after seeding the device with `seed`; pixels in `[0, 1]`, `[N, C, S, S]`.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] for a class out of range, an empty list, a shape the U-Net
    /// cannot take (other channels, sides not multiples of 4), a guidance scale that is not
    /// finite or a DDIM step count out of `1..=T`.
    pub fn sample(
        &self,
        classes: &[usize],
        shape: [usize; 3],
        sampler: Sampler,
        guidance: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Tensor<4>> {
        let k = self.unet.num_classes();
        if classes.is_empty() {
            return Err(VisionError::Parameter {
                name: "classes",
                reason: "no images asked for".into(),
            });
        }
        if let Some(c) = classes.iter().find(|&&c| c >= k) {
            return Err(VisionError::Parameter {
                name: "classes",
                reason: format!("class {c}: expected below {k}"),
            });
        }
        let [c, h, w] = shape;
        if c != self.unet.channels()
            || h == 0
            || w == 0
            || !h.is_multiple_of(4)
            || !w.is_multiple_of(4)
        {
            return Err(VisionError::Parameter {
                name: "shape",
                reason: format!(
                    "{c}x{h}x{w}: expected {} channels and sides that are positive multiples of 4",
                    self.unet.channels()
                ),
            });
        }
        if !guidance.is_finite() {
            return Err(VisionError::Parameter {
                name: "guidance",
                reason: format!("{guidance}: expected a finite scale"),
            });
        }
        let n = classes.len();
        device.seed(seed);
        let labels: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
        let labels = Tensor::<1, Int>::from_ints(labels.as_slice(), device);
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), device);
        let x = denoise(&self.schedule, sampler, x, |x, t| {
            self.eps(x, t, &labels, guidance)
        })?;
        Ok(((x + 1.0) / 2.0).clamp(0.0, 1.0))
    }
}

/// The reverse process from `x` (pure noise at the last step) to `x_0` in `[-1, 1]`, with the
/// noise predictions of `eps(x_t, t)`: every step with DDPM's ancestral sampler (fresh noise
/// from the device's stream), or DDIM's deterministic steps. At each step the predicted
/// `x_0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)` is clipped to `[-1, 1]`; DDIM then uses the
/// noise consistent with the clipped `x_0`.
///
/// # Errors
/// [`VisionError::Parameter`] for a DDIM step count out of `1..=T`.
pub fn denoise(
    schedule: &NoiseSchedule,
    sampler: Sampler,
    mut x: Tensor<4>,
    eps: impl Fn(Tensor<4>, usize) -> Tensor<4>,
) -> Result<Tensor<4>> {
    let plan: Vec<(usize, Option<usize>)> = match sampler {
        Sampler::Ddpm => (0..schedule.steps())
            .rev()
            .map(|t| (t, t.checked_sub(1)))
            .collect(),
        Sampler::Ddim { steps } => schedule.ddim_steps(steps)?,
    };
    for (t, prev) in plan {
        let predicted = eps(x.clone(), t);
        let ab = schedule.alpha_bar(Some(t));
        let x0 = ((x.clone() - predicted * (1.0 - ab).sqrt()) / ab.sqrt()).clamp(-1.0, 1.0);
        x = match sampler {
            Sampler::Ddpm => {
                let p = schedule.ddpm_step(t);
                let mean = x0 * p.x0 + x.clone() * p.xt;
                if p.sigma > 0.0 {
                    mean + x.random_like(Distribution::Normal(0.0, 1.0)) * p.sigma
                } else {
                    mean
                }
            }
            Sampler::Ddim { .. } => {
                let ab_prev = schedule.alpha_bar(prev);
                let noise = (x - x0.clone() * ab.sqrt()) / (1.0 - ab).sqrt();
                x0 * ab_prev.sqrt() + noise * (1.0 - ab_prev).sqrt()
            }
        };
    }
    Ok(x)
}

impl TrainStep<ImageBatch> for Ddpm {
    fn train_step(&self, batch: ImageBatch) -> StepOutput {
        let n = batch.targets.dims()[0];
        StepOutput::loss_only(self.loss(batch, true), n)
    }

    fn valid_step(&self, batch: ImageBatch) -> StepOutput {
        let n = batch.targets.dims()[0];
        StepOutput::loss_only(self.loss(batch, false), n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(device: &Device) -> Ddpm {
        device.seed(3);
        DdpmConfig::new(
            UNetConfig::new()
                .with_widths([8, 8, 8])
                .with_groups(4)
                .with_embed_dim(8)
                .with_num_classes(3),
        )
        .with_steps(20)
        .init(device)
        .unwrap()
    }

    #[test]
    fn sampling_is_seeded_bounded_and_guided() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        let model = tiny(&device);
        let run = |sampler, guidance, seed| {
            model
                .sample(&[0, 2], [1, 8, 8], sampler, guidance, seed, &device)
                .unwrap()
                .into_data()
                .try_to_vec_as::<f32>()
                .unwrap()
        };
        let a = run(Sampler::Ddim { steps: 5 }, 2.0, 1);
        assert_eq!(a.len(), 2 * 64);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(
            a,
            run(Sampler::Ddim { steps: 5 }, 2.0, 1),
            "same seed, same images"
        );
        assert_ne!(a, run(Sampler::Ddim { steps: 5 }, 2.0, 2));
        assert_ne!(
            a,
            run(Sampler::Ddim { steps: 5 }, 1.0, 1),
            "guidance changes the images"
        );
        for shape in [[1, 6, 8], [2, 8, 8], [1, 0, 8]] {
            let err = model.sample(&[0], shape, Sampler::Ddim { steps: 2 }, 1.0, 0, &device);
            assert!(err.unwrap_err().to_string().contains("multiples of 4"));
        }
        let ancestral = run(Sampler::Ddpm, 1.0, 1);
        assert!(ancestral.iter().all(|v| (0.0..=1.0).contains(v)));
        for (classes, sampler, guidance) in [
            (vec![3], Sampler::Ddim { steps: 5 }, 1.0),
            (vec![], Sampler::Ddim { steps: 5 }, 1.0),
            (vec![0], Sampler::Ddim { steps: 0 }, 1.0),
            (vec![0], Sampler::Ddim { steps: 21 }, 1.0),
            (vec![0], Sampler::Ddpm, f64::NAN),
        ] {
            assert!(
                model
                    .sample(&classes, [1, 8, 8], sampler, guidance, 0, &device)
                    .is_err()
            );
        }
    }

    #[test]
    fn with_the_true_noise_both_samplers_return_the_one_image() {
        // A data set of one image x*: the ideal noise predictor is
        // eps(x_t) = (x_t - sqrt(ab_t) x*) / sqrt(1 - ab_t), and both reverse processes must
        // land on x* exactly (the predicted x_0 is x* at every step).
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        device.seed(11);
        let target = Tensor::<4>::random([2, 1, 4, 4], Distribution::Uniform(-0.9, 0.9), &device);
        for (schedule, sampler) in [
            (Schedule::cosine(), Sampler::Ddim { steps: 10 }),
            (Schedule::linear(), Sampler::Ddim { steps: 1 }),
            (Schedule::cosine(), Sampler::Ddpm),
            (Schedule::linear(), Sampler::Ddpm),
        ] {
            let s = NoiseSchedule::new(schedule, 100).unwrap();
            let noise = Tensor::<4>::random([2, 1, 4, 4], Distribution::Normal(0.0, 1.0), &device);
            let oracle = |x: Tensor<4>, t: usize| {
                let ab = s.alpha_bar(Some(t));
                (x - target.clone() * ab.sqrt()) / (1.0 - ab).sqrt()
            };
            let out = denoise(&s, sampler, noise, oracle).unwrap();
            let err = (out - target.clone()).abs().max().into_scalar::<f32>();
            assert!(err < 1e-4, "{schedule:?} {sampler:?}: off by {err}");
        }
    }

    #[test]
    fn the_denoising_loss_trains() {
        let _rng = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        let model = tiny(&device);
        let batch = |device: &Device| ImageBatch {
            images: Tensor::<4>::ones([4, 1, 8, 8], device) * 0.8,
            targets: Tensor::<1, Int>::from_ints([0, 1, 2, 0], device),
        };
        // The same noise and steps each time: the loss of one fixed draw must fall.
        kiln_dev::conformance::check_training("ddpm", &model, &device, 15, 1e-2, |m, d| {
            d.seed(9);
            m.loss(batch(d), false)
        });
        assert!(
            DdpmConfig::new(UNetConfig::new())
                .with_class_dropout(1.0)
                .init(&device)
                .is_err()
        );
        let bad = UNetConfig::new().with_widths([8, 12, 8]).with_groups(8);
        assert!(bad.check().unwrap_err().to_string().contains("width 12"));
    }
}
