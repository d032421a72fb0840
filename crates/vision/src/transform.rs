//! Image transforms applied in the batcher: normalisation and seeded augmentation (random crop
//! with padding, horizontal flip, small random shifts), in the spirit of torchvision's.
//!
//! Randomness comes from the batch's device (`Tensor::random`), which the `kiln-core` trainer
//! reseeds from `(seed, epoch)` at every epoch: augmentation is reproducible and a resumed run
//! sees the same augmented batches as an uninterrupted one. (With data-loading worker threads
//! the order in which batches draw is not fixed; keep `num_workers` at 0 for bit-exact runs.)

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

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
}

impl Transform {
    /// Random numbers this transform consumes per image.
    fn draws(&self) -> usize {
        match self {
            Transform::Normalize { .. } => 0,
            Transform::RandomCrop { .. } | Transform::RandomShift { .. } => 2,
            Transform::HorizontalFlip { .. } => 1,
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
                apply_one(t, image, shape, &mut u, &mut scratch);
            }
        }
    }
}

/// An offset in `[-max, max]` from a uniform draw in `[0, 1)`.
fn offset(u: f32, max: usize) -> isize {
    ((u * (2 * max + 1) as f32).floor() as isize - max as isize)
        .clamp(-(max as isize), max as isize)
}

fn apply_one(
    t: &Transform,
    image: &mut [f32],
    [c, h, w]: [usize; 3],
    u: &mut impl Iterator<Item = f32>,
    scratch: &mut [f32],
) {
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
        Transform::HorizontalFlip { p } => {
            if u.next().unwrap_or(1.0) < *p {
                for row in image.chunks_mut(w) {
                    row.reverse();
                }
            }
        }
    }
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

    #[test]
    fn offsets_cover_the_range_symmetrically() {
        assert_eq!(offset(0.0, 2), -2);
        assert_eq!(offset(0.999, 2), 2);
        assert_eq!(offset(0.5, 2), 0);
        assert_eq!(offset(0.3, 0), 0);
    }
}
