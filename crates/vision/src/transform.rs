//! Image transforms applied in the batcher: normalisation and seeded augmentation (random crop
//! with padding, horizontal flip, small random shifts), in the spirit of torchvision's, and
//! the robustness augmentations that target the conditions of the [corruption
//! suite](crate::corrupt): poor light ([`Photometric`](Transform::Photometric)), sensor noise
//! ([`Noise`](Transform::Noise)), busy backgrounds ([`Clutter`](Transform::Clutter)),
//! occlusion ([`Cutout`](Transform::Cutout)) and pose
//! ([`RandomRotate`](Transform::RandomRotate)). They draw their own parameters (ranges, not
//! the suite's fixed severities) and apply before normalisation, to pixels in `[0, 1]`.
//!
//! Randomness comes from the batch's device (`Tensor::random`), which the `kiln-core` trainer
//! reseeds from `(seed, epoch)` at every epoch: augmentation is reproducible and a resumed run
//! sees the same augmented batches as an uninterrupted one. (With data-loading worker threads
//! the order in which batches draw is not fixed; keep `num_workers` at 0 for bit-exact runs.)

use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_core::data::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::corrupt;
use crate::error::{Result, VisionError};

/// One transform. Geometric transforms fill with 0 (black, before normalisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transform {
    /// `(x - mean[c]) / std[c]` per channel (one value each applies to every channel).
    Normalize {
        /// Per-channel means.
        mean: Vec<f32>,
        /// Per-channel standard deviations.
        std: Vec<f32>,
    },
    /// Pad by `padding` on every side, then crop back to the original size at a random
    /// position (torchvision's `RandomCrop(size, padding)`).
    RandomCrop {
        /// Padding on each side, in pixels.
        padding: usize,
    },
    /// Mirror left-right with probability `p`.
    HorizontalFlip {
        /// Probability of flipping.
        p: f32,
    },
    /// Translate by up to `max` pixels in each direction.
    RandomShift {
        /// The largest shift, in pixels.
        max: usize,
    },
    /// Poor light: with probability `p`, a gamma curve `x^g` with `ln g` uniform in
    /// `[-ln gamma, ln gamma]`, an exposure factor uniform in `[exposure, 1]`, a contrast
    /// factor uniform in `[contrast, 1]` towards the image's mean and an offset uniform in
    /// `[-brightness, brightness]`, in that order, clipped to `[0, 1]`.
    Photometric {
        /// Probability of applying it.
        p: f32,
        /// The largest offset added (`0..=1`).
        brightness: f32,
        /// The smallest contrast factor (`0 < contrast <= 1`).
        contrast: f32,
        /// The largest gamma (`>= 1`; its inverse is the smallest).
        gamma: f32,
        /// The smallest exposure factor (`0 < exposure <= 1`).
        exposure: f32,
    },
    /// Sensor noise: with probability `p`, Gaussian noise of a standard deviation uniform in
    /// `[0, std]`, clipped to `[0, 1]`.
    Noise {
        /// Probability of applying it.
        p: f32,
        /// The largest standard deviation.
        std: f32,
    },
    /// Busy backgrounds: with probability `p`, one of (equally likely) up to `strokes` random
    /// strokes, a grating texture of amplitude up to `texture`, or up to `fragments` 9x9
    /// pieces of other images of the batch (a kind with a zero count is left out).
    Clutter {
        /// Probability of applying it.
        p: f32,
        /// The most strokes.
        strokes: usize,
        /// The largest texture amplitude (`0..=1`).
        texture: f32,
        /// The most fragments.
        fragments: usize,
    },
    /// Occlusion (DeVries and Taylor's cutout): with probability `p`, a `size x size` square
    /// at a random place (its centre inside the image) set to 0.
    Cutout {
        /// Probability of applying it.
        p: f32,
        /// The side of the square, in pixels.
        size: usize,
    },
    /// A rotation about the centre by an angle uniform in `[-degrees, degrees]`.
    RandomRotate {
        /// The largest angle, in degrees.
        degrees: f32,
    },
}

impl Transform {
    /// Random numbers this transform consumes per image.
    fn draws(&self) -> usize {
        match self {
            Transform::Normalize { .. } => 0,
            Transform::RandomCrop { .. } | Transform::RandomShift { .. } => 2,
            Transform::HorizontalFlip { .. } => 1,
            // Two draws seed the transform's own stream (48 random bits).
            Transform::Photometric { .. }
            | Transform::Noise { .. }
            | Transform::Clutter { .. }
            | Transform::Cutout { .. }
            | Transform::RandomRotate { .. } => 2,
        }
    }

    /// Checks the parameters: probabilities in `[0, 1]`, factors in their ranges, finite
    /// values, standard deviations above 0.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] naming the transform and the field that is out of range.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, value: f32, expected: &str| {
            Err(VisionError::Parameter {
                name: "transform",
                reason: format!("{self:?}: {field} = {value}, expected {expected}"),
            })
        };
        let prob = |p: f32| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                bad("p", p, "a probability in [0, 1]")
            }
        };
        match *self {
            Transform::Normalize { ref std, .. } => {
                match std.iter().find(|s| s.is_nan() || **s <= 0.0) {
                    Some(&s) => bad("std", s, "every standard deviation above 0"),
                    None => Ok(()),
                }
            }
            Transform::HorizontalFlip { p } => prob(p),
            Transform::RandomCrop { .. } | Transform::RandomShift { .. } => Ok(()),
            Transform::Photometric {
                p,
                brightness,
                contrast,
                gamma,
                exposure,
            } => {
                prob(p)?;
                if !(0.0..=1.0).contains(&brightness) {
                    bad("brightness", brightness, "0 to 1")
                } else if !(contrast > 0.0 && contrast <= 1.0) {
                    bad("contrast", contrast, "above 0 and at most 1")
                } else if !(1.0..=10.0).contains(&gamma) {
                    bad("gamma", gamma, "1 to 10")
                } else if !(exposure > 0.0 && exposure <= 1.0) {
                    bad("exposure", exposure, "above 0 and at most 1")
                } else {
                    Ok(())
                }
            }
            Transform::Noise { p, std } => {
                prob(p)?;
                if std.is_finite() && std > 0.0 {
                    Ok(())
                } else {
                    bad("std", std, "above 0")
                }
            }
            Transform::Clutter { p, texture, .. } => {
                prob(p)?;
                if (0.0..=1.0).contains(&texture) {
                    Ok(())
                } else {
                    bad("texture", texture, "0 to 1")
                }
            }
            Transform::Cutout { p, .. } => prob(p),
            Transform::RandomRotate { degrees } => {
                if degrees.is_finite() && degrees >= 0.0 {
                    Ok(())
                } else {
                    bad("degrees", degrees, "a finite angle at least 0")
                }
            }
        }
    }

    fn is_random(&self) -> bool {
        self.draws() > 0
    }
}

/// Transforms applied in order to every `C x H x W` image of a batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// The transforms, in order.
    pub transforms: Vec<Transform>,
    /// Whether the random transforms are applied (training) or skipped (evaluation).
    pub augment: bool,
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a transform.
    pub fn then(mut self, t: Transform) -> Self {
        self.transforms.push(t);
        self
    }

    /// Turns the random transforms on (training) or off (evaluation).
    pub fn with_augment(mut self, augment: bool) -> Self {
        self.augment = augment;
        self
    }

    /// The same pipeline without its random transforms' effect.
    pub fn for_eval(&self) -> Self {
        self.clone().with_augment(false)
    }

    /// Checks every transform's parameters ([`Transform::check`]).
    ///
    /// # Errors
    /// The first transform's [`VisionError::Parameter`].
    pub fn check(&self) -> Result<()> {
        self.transforms.iter().try_for_each(Transform::check)
    }

    /// Applies the pipeline to `n` images stored back to back in `pixels`, drawing random
    /// numbers from `device`.
    pub fn apply(&self, pixels: &mut [f32], n: usize, shape: [usize; 3], device: &Device) {
        let per_image: usize = self
            .transforms
            .iter()
            .filter(|t| self.augment && t.is_random())
            .map(Transform::draws)
            .sum();
        let draws: Vec<f32> = if per_image > 0 && n > 0 {
            Tensor::<2>::random([n, per_image], Distribution::Uniform(0.0, 1.0), device)
                .into_data()
                .try_to_vec_as::<f32>()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let size = shape.iter().product::<usize>();
        let mut scratch = vec![0.0; size];
        // Clutter's fragments come from the other images as they were before any transform.
        let originals = (self.augment
            && self
                .transforms
                .iter()
                .any(|t| matches!(t, Transform::Clutter { fragments, .. } if *fragments > 0)))
        .then(|| pixels[..n * size].to_vec());
        for i in 0..n {
            let image = &mut pixels[i * size..(i + 1) * size];
            let mut u = draws
                .get(i * per_image..(i + 1) * per_image)
                .unwrap_or(&[])
                .iter()
                .copied();
            for t in &self.transforms {
                if t.is_random() && !self.augment {
                    continue;
                }
                let batch = Batch {
                    originals: originals.as_deref(),
                    index: i,
                    count: n,
                };
                apply_one(t, image, shape, &mut u, &mut scratch, &batch);
            }
        }
    }
}

/// An offset in `[-max, max]` from a uniform draw in `[0, 1)`.
fn offset(u: f32, max: usize) -> isize {
    ((u * (2 * max + 1) as f32).floor() as isize - max as isize)
        .clamp(-(max as isize), max as isize)
}

/// Where an image stands in its batch, for transforms that take pieces of the others.
struct Batch<'a> {
    /// The batch's images before any transform (when a transform needs them).
    originals: Option<&'a [f32]>,
    index: usize,
    count: usize,
}

impl Batch<'_> {
    /// Another image of the batch chosen by `rng` (None for a batch of one).
    fn other(&self, rng: &mut SplitMix64, size: usize) -> Option<&[f32]> {
        let originals = self.originals?;
        (self.count > 1).then(|| {
            let j = (self.index + 1 + rng.below(self.count as u64 - 1) as usize) % self.count;
            &originals[j * size..(j + 1) * size]
        })
    }
}

/// A stream seeded by two uniform draws (24 bits each).
fn stream(u: &mut impl Iterator<Item = f32>) -> SplitMix64 {
    let bits = |u: Option<f32>| (u.unwrap_or(0.5).clamp(0.0, 1.0) * (1 << 24) as f32) as u64;
    let hi = bits(u.next());
    SplitMix64::new(hi << 24 | bits(u.next()))
}

/// Uniform in `[lo, hi]` from `rng`.
fn between(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.uniform() as f32
}

fn apply_one(
    t: &Transform,
    image: &mut [f32],
    [c, h, w]: [usize; 3],
    u: &mut impl Iterator<Item = f32>,
    scratch: &mut [f32],
    batch: &Batch<'_>,
) {
    let robust = matches!(
        t,
        Transform::Photometric { .. }
            | Transform::Noise { .. }
            | Transform::Clutter { .. }
            | Transform::Cutout { .. }
            | Transform::RandomRotate { .. }
    );
    if robust {
        let mut rng = stream(u);
        robust_one(t, image, [c, h, w], &mut rng, batch);
        return;
    }
    match t {
        Transform::Normalize { mean, std } => {
            for ch in 0..c {
                let m = mean.get(ch).or(mean.first()).copied().unwrap_or(0.0);
                let s = std.get(ch).or(std.first()).copied().unwrap_or(1.0);
                for v in &mut image[ch * h * w..(ch + 1) * h * w] {
                    *v = (*v - m) / s;
                }
            }
        }
        Transform::RandomCrop { padding: max } | Transform::RandomShift { max } => {
            let dy = offset(u.next().unwrap_or(0.5), *max);
            let dx = offset(u.next().unwrap_or(0.5), *max);
            shift(image, [c, h, w], dy, dx, scratch);
        }
        // The draw is taken in the guard; a miss falls to the empty arm.
        Transform::HorizontalFlip { p } if u.next().unwrap_or(1.0) < *p => {
            for row in image.chunks_mut(w) {
                row.reverse();
            }
        }
        _ => {}
    }
}

/// The robustness augmentations, each from its own stream.
fn robust_one(
    t: &Transform,
    image: &mut [f32],
    shape: [usize; 3],
    rng: &mut SplitMix64,
    batch: &Batch<'_>,
) {
    let [_, h, w] = shape;
    let applies = |rng: &mut SplitMix64, p: f32| (rng.uniform() as f32) < p;
    match *t {
        Transform::Photometric {
            p,
            brightness,
            contrast,
            gamma,
            exposure,
        } => {
            if !applies(rng, p) {
                return;
            }
            let g = between(rng, -gamma.ln(), gamma.ln()).exp();
            let e = between(rng, exposure, 1.0);
            let k = between(rng, contrast, 1.0);
            let b = between(rng, -brightness, brightness);
            for plane in image.chunks_mut(h * w) {
                plane
                    .iter_mut()
                    .for_each(|v| *v = v.clamp(0.0, 1.0).powf(g) * e);
                let mean = plane.iter().sum::<f32>() / plane.len() as f32;
                plane
                    .iter_mut()
                    .for_each(|v| *v = (*v - mean) * k + mean + b);
            }
        }
        Transform::Noise { p, std } => {
            if !applies(rng, p) {
                return;
            }
            let s = f64::from(between(rng, 0.0, std));
            image
                .iter_mut()
                .for_each(|v| *v += (s * rng.normal()) as f32);
        }
        Transform::Clutter {
            p,
            strokes,
            texture,
            fragments,
        } => {
            if !applies(rng, p) {
                return;
            }
            let kinds: Vec<u8> = [(0, strokes > 0), (1, texture > 0.0), (2, fragments > 0)]
                .into_iter()
                .filter_map(|(k, on)| on.then_some(k))
                .collect();
            if kinds.is_empty() {
                return;
            }
            match kinds[rng.below(kinds.len() as u64) as usize] {
                0 => {
                    let count = 1 + rng.below(strokes as u64) as usize;
                    corrupt::random_strokes(image, shape, count, rng);
                }
                1 => {
                    let amplitude = between(rng, 0.0, texture);
                    corrupt::texture(image, shape, amplitude, rng);
                }
                _ => {
                    let count = 1 + rng.below(fragments as u64) as usize;
                    if let Some(donor) = batch.other(rng, image.len()) {
                        for _ in 0..count {
                            corrupt::paste_fragment(image, donor, shape, 9, rng);
                        }
                    }
                }
            }
        }
        Transform::Cutout { p, size } => {
            if !applies(rng, p) || size == 0 {
                return;
            }
            let (cy, cx) = (rng.below(h as u64) as isize, rng.below(w as u64) as isize);
            let half = size as isize / 2;
            let (y0, x0) = ((cy - half).max(0) as usize, (cx - half).max(0) as usize);
            let (y1, x1) = (
                ((cy - half + size as isize) as usize).min(h),
                ((cx - half + size as isize) as usize).min(w),
            );
            for plane in image.chunks_mut(h * w) {
                for y in y0..y1 {
                    plane[y * w + x0..y * w + x1].fill(0.0);
                }
            }
        }
        Transform::RandomRotate { degrees } => {
            let angle = between(rng, -degrees, degrees);
            corrupt::rotate(image, shape, angle);
        }
        _ => return,
    }
    corrupt::clip(image);
}

/// Moves the image content by (`dy`, `dx`) pixels, filling with zeros: pixel (y, x) of the
/// result is pixel (y - dy, x - dx) of the input.
pub fn shift(image: &mut [f32], [c, h, w]: [usize; 3], dy: isize, dx: isize, scratch: &mut [f32]) {
    if dy == 0 && dx == 0 {
        return;
    }
    scratch[..image.len()].fill(0.0);
    for ch in 0..c {
        for y in 0..h as isize {
            let sy = y - dy;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            for x in 0..w as isize {
                let sx = x - dx;
                if sx >= 0 && sx < w as isize {
                    scratch[ch * h * w + y as usize * w + x as usize] =
                        image[ch * h * w + sy as usize * w + sx as usize];
                }
            }
        }
    }
    image.copy_from_slice(&scratch[..image.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        kiln_core::backend::device("cpu").unwrap()
    }

    #[test]
    fn normalize_per_channel() {
        let mut px = vec![1.0, 3.0, 10.0, 20.0];
        let p = Pipeline::new().then(Transform::Normalize {
            mean: vec![2.0, 10.0],
            std: vec![1.0, 5.0],
        });
        p.apply(&mut px, 1, [2, 1, 2], &device());
        assert_eq!(px, vec![-1.0, 1.0, 0.0, 2.0]);
    }

    #[test]
    fn shift_moves_content_and_fills_zero() {
        let mut img: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut scratch = vec![0.0; 9];
        shift(&mut img, [1, 3, 3], 1, -1, &mut scratch);
        assert_eq!(img, vec![0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
    }

    #[test]
    fn augmentation_is_seeded_and_off_for_eval() {
        let _rng = crate::rng_lock();
        let device = device();
        let base: Vec<f32> = (0..2 * 16).map(|v| v as f32).collect();
        let p = Pipeline::new()
            .then(Transform::RandomCrop { padding: 2 })
            .then(Transform::HorizontalFlip { p: 0.5 })
            .with_augment(true);
        let run = |seed| {
            device.seed(seed);
            let mut px = base.clone();
            p.apply(&mut px, 2, [1, 4, 4], &device);
            px
        };
        assert_eq!(run(3), run(3));
        assert!(
            (0..20).any(|s| run(s) != base),
            "augmentation never changed anything"
        );
        let mut px = base.clone();
        p.for_eval().apply(&mut px, 2, [1, 4, 4], &device);
        assert_eq!(px, base);
    }

    fn robust() -> Pipeline {
        Pipeline::new()
            .then(Transform::Photometric {
                p: 0.5,
                brightness: 0.3,
                contrast: 0.2,
                gamma: 3.0,
                exposure: 0.3,
            })
            .then(Transform::Noise { p: 0.5, std: 0.3 })
            .then(Transform::Clutter {
                p: 0.5,
                strokes: 4,
                texture: 0.5,
                fragments: 3,
            })
            .then(Transform::Cutout { p: 0.5, size: 6 })
            .then(Transform::RandomRotate { degrees: 15.0 })
            .with_augment(true)
    }

    #[test]
    fn robustness_augmentations_are_seeded_in_range_and_off_for_eval() {
        let _rng = crate::rng_lock();
        let device = device();
        let base: Vec<f32> = (0..8 * 100).map(|v| (v % 11) as f32 / 10.0).collect();
        let p = robust();
        p.check().unwrap();
        let run = |seed| {
            device.seed(seed);
            let mut px = base.clone();
            p.apply(&mut px, 8, [1, 10, 10], &device);
            px
        };
        let once = run(5);
        assert_eq!(once, run(5));
        assert_ne!(once, run(6));
        assert!(once.iter().all(|v| (0.0..=1.0).contains(v)));
        // Each image's change is its own: some images change, not necessarily all.
        let changed = (0..8)
            .filter(|i| once[i * 100..(i + 1) * 100] != base[i * 100..(i + 1) * 100])
            .count();
        assert!(changed >= 4, "{changed} of 8 images changed");
        let mut px = base.clone();
        p.for_eval().apply(&mut px, 8, [1, 10, 10], &device);
        assert_eq!(px, base);
    }

    #[test]
    fn clutter_fragments_come_from_other_images_and_cutout_blacks_a_square() {
        let _rng = crate::rng_lock();
        let device = device();
        device.seed(1);
        // Image 0 black, image 1 white: image 0's fragments are white squares of image 1.
        let mut px: Vec<f32> = [vec![0.0; 400], vec![1.0; 400]].concat();
        Pipeline::new()
            .then(Transform::Clutter {
                p: 1.0,
                strokes: 0,
                texture: 0.0,
                fragments: 2,
            })
            .with_augment(true)
            .apply(&mut px, 2, [1, 20, 20], &device);
        let white = px[..400].iter().filter(|&&v| v == 1.0).count();
        assert!((81..=162).contains(&white), "{white} white pixels");
        assert!(px[400..].iter().all(|&v| v == 1.0));

        let mut px = vec![1.0f32; 3 * 100];
        Pipeline::new()
            .then(Transform::Cutout { p: 1.0, size: 4 })
            .with_augment(true)
            .apply(&mut px, 1, [3, 10, 10], &device);
        let black = px.iter().filter(|&&v| v == 0.0).count();
        assert!(
            black % 3 == 0 && (3 * 4..=3 * 16).contains(&black),
            "{black}"
        );
    }

    #[test]
    fn out_of_range_parameters_name_their_field() {
        let bad = [
            (Transform::Noise { p: 1.5, std: 0.1 }, "p = 1.5"),
            (Transform::Noise { p: 0.5, std: 0.0 }, "std = 0"),
            (
                Transform::Photometric {
                    p: 0.5,
                    brightness: 0.1,
                    contrast: 0.0,
                    gamma: 2.0,
                    exposure: 0.5,
                },
                "contrast = 0",
            ),
            (
                Transform::Photometric {
                    p: 0.5,
                    brightness: 0.1,
                    contrast: 0.5,
                    gamma: 0.5,
                    exposure: 0.5,
                },
                "gamma = 0.5",
            ),
            (
                Transform::RandomRotate { degrees: f32::NAN },
                "degrees = NaN",
            ),
            (
                Transform::Normalize {
                    mean: vec![0.0],
                    std: vec![0.0],
                },
                "std = 0",
            ),
        ];
        for (t, field) in bad {
            let e = Pipeline::new().then(t).check().unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn offsets_cover_the_range_symmetrically() {
        assert_eq!(offset(0.0, 2), -2);
        assert_eq!(offset(0.999, 2), 2);
        assert_eq!(offset(0.5, 2), 0);
        assert_eq!(offset(0.3, 0), 0);
    }
}
