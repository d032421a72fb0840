//! A seeded corruption suite in the spirit of MNIST-C (Mu and Gilmer, 2019) and ImageNet-C
//! (Hendrycks and Dietterich, 2019): the conditions under which a classifier trained on
//! clean images is asked to work, at five severities each.
//!
//! | family | corruptions |
//! |---|---|
//! | poor light | [`Brightness`](Corruption::Brightness), [`Contrast`](Corruption::Contrast), [`Gamma`](Corruption::Gamma) (under-exposure) |
//! | sensor noise | [`GaussianNoise`](Corruption::GaussianNoise), [`ShotNoise`](Corruption::ShotNoise) |
//! | focus | [`Blur`](Corruption::Blur) |
//! | busy background | [`Strokes`](Corruption::Strokes), [`Fragments`](Corruption::Fragments) (pieces of other images), [`Texture`](Corruption::Texture) |
//! | pose | [`Rotate`](Corruption::Rotate), [`Translate`](Corruption::Translate) |
//!
//! Images are `C x H x W` values in `[0, 1]` (what the data sets read; apply the suite before
//! normalisation) and stay in `[0, 1]`. Each image draws from its own random stream, seeded
//! from `(seed, corruption, severity, index)`: the same seed gives the same images whatever
//! the order or the subset in which they are corrupted (see [`image_stream`]). The functions are public so that a
//! program measures its own data the same way; [`corrupt_items`] corrupts a whole set.
//!
//! The parameters, per severity 1..5 (28x28 images in mind; the same numbers apply to any
//! size):
//!
//! | corruption | parameter | 1 | 2 | 3 | 4 | 5 |
//! |---|---|---|---|---|---|---|
//! | brightness | added to every pixel | 0.1 | 0.2 | 0.3 | 0.4 | 0.5 |
//! | contrast | distances to the mean scaled by | 0.4 | 0.3 | 0.2 | 0.1 | 0.05 |
//! | gamma | `x^g e`, g / e | 1.5 / 0.8 | 2 / 0.65 | 2.5 / 0.5 | 3 / 0.35 | 3.5 / 0.25 |
//! | gaussian noise | standard deviation | 0.08 | 0.12 | 0.18 | 0.26 | 0.38 |
//! | shot noise | photons at full brightness | 60 | 25 | 12 | 5 | 3 |
//! | blur | Gaussian sigma, pixels | 0.6 | 0.9 | 1.2 | 1.5 | 1.8 |
//! | strokes | random strokes | 1 | 2 | 3 | 4 | 6 |
//! | fragments | 9x9 pieces of other images | 1 | 2 | 3 | 4 | 5 |
//! | texture | grating amplitude | 0.2 | 0.3 | 0.4 | 0.5 | 0.6 |
//! | rotate | degrees, either way | 5 | 10 | 15 | 20 | 25 |
//! | translate | pixels, the larger of the two offsets | 1 | 2 | 3 | 4 | 5 |

mod ops;

pub(crate) use ops::{clip, gaussian_blur, paste_fragment, random_strokes, rotate, texture};

use kiln_core::data::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::batch::ImageItem;
use crate::error::{Result, VisionError};

/// One corruption of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// A constant added to every pixel (a washed-out exposure).
    Brightness,
    /// Pixel values pulled towards the image's mean.
    Contrast,
    /// Under-exposure: a gamma curve above 1 and a lower exposure (`x^g * e`).
    Gamma,
    /// Additive Gaussian noise.
    GaussianNoise,
    /// Photon (Poisson) noise: `Poisson(x * n) / n` with `n` photons at full brightness.
    ShotNoise,
    /// Gaussian blur (defocus).
    Blur,
    /// Random bright strokes across the image.
    Strokes,
    /// Pieces of other images of the set pasted at random places.
    Fragments,
    /// A grating texture laid under the image.
    Texture,
    /// A small rotation about the centre, either way.
    Rotate,
    /// A shift by whole pixels in a random direction.
    Translate,
}

impl Corruption {
    /// Every corruption, in the table's order.
    pub const ALL: [Corruption; 11] = [
        Corruption::Brightness,
        Corruption::Contrast,
        Corruption::Gamma,
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::Blur,
        Corruption::Strokes,
        Corruption::Fragments,
        Corruption::Texture,
        Corruption::Rotate,
        Corruption::Translate,
    ];

    /// The snake-case name (`"gaussian_noise"`), as in reports.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::Brightness => "brightness",
            Corruption::Contrast => "contrast",
            Corruption::Gamma => "gamma",
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::ShotNoise => "shot_noise",
            Corruption::Blur => "blur",
            Corruption::Strokes => "strokes",
            Corruption::Fragments => "fragments",
            Corruption::Texture => "texture",
            Corruption::Rotate => "rotate",
            Corruption::Translate => "translate",
        }
    }

    /// The family of conditions: `"light"`, `"noise"`, `"blur"`, `"background"` or `"pose"`.
    pub fn family(self) -> &'static str {
        match self {
            Corruption::Brightness | Corruption::Contrast | Corruption::Gamma => "light",
            Corruption::GaussianNoise | Corruption::ShotNoise => "noise",
            Corruption::Blur => "blur",
            Corruption::Strokes | Corruption::Fragments | Corruption::Texture => "background",
            Corruption::Rotate | Corruption::Translate => "pose",
        }
    }

    /// The corruption of that [`name`](Self::name).
    ///
    /// # Errors
    /// [`VisionError::Parameter`] naming the unknown corruption and listing the known ones.
    pub fn from_name(name: &str) -> Result<Self> {
        Corruption::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| VisionError::Parameter {
                name: "corruption",
                reason: format!(
                    "unknown corruption {name:?}; expected one of {}",
                    Corruption::ALL.map(Corruption::name).join(", ")
                ),
            })
    }

    fn id(self) -> u64 {
        Corruption::ALL.iter().position(|&c| c == self).unwrap_or(0) as u64
    }
}

/// A severity from 1 (mild) to 5 (severe); other levels cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Severity(u8);

impl Severity {
    /// The five severities, mildest first.
    pub const ALL: [Severity; 5] = [
        Severity(1),
        Severity(2),
        Severity(3),
        Severity(4),
        Severity(5),
    ];

    /// Severity `level`.
    ///
    /// # Errors
    /// [`VisionError::Parameter`] when `level` is not 1 to 5.
    pub fn new(level: u8) -> Result<Self> {
        if (1..=5).contains(&level) {
            Ok(Severity(level))
        } else {
            Err(VisionError::Parameter {
                name: "severity",
                reason: format!("severity {level}: expected 1 to 5"),
            })
        }
    }

    /// The level, 1 to 5.
    pub fn level(self) -> u8 {
        self.0
    }

    fn index(self) -> usize {
        usize::from(self.0 - 1)
    }
}

impl TryFrom<u8> for Severity {
    type Error = VisionError;
    fn try_from(level: u8) -> Result<Self> {
        Severity::new(level)
    }
}

impl From<Severity> for u8 {
    fn from(s: Severity) -> u8 {
        s.0
    }
}

const BRIGHTNESS: [f32; 5] = [0.1, 0.2, 0.3, 0.4, 0.5];
const CONTRAST: [f32; 5] = [0.4, 0.3, 0.2, 0.1, 0.05];
const GAMMA: [(f32, f32); 5] = [
    (1.5, 0.8),
    (2.0, 0.65),
    (2.5, 0.5),
    (3.0, 0.35),
    (3.5, 0.25),
];
const NOISE_STD: [f64; 5] = [0.08, 0.12, 0.18, 0.26, 0.38];
const PHOTONS: [f64; 5] = [60.0, 25.0, 12.0, 5.0, 3.0];
const BLUR_SIGMA: [f32; 5] = [0.6, 0.9, 1.2, 1.5, 1.8];
const STROKES: [usize; 5] = [1, 2, 3, 4, 6];
const FRAGMENTS: [usize; 5] = [1, 2, 3, 4, 5];
/// The side of a pasted fragment, in pixels.
const FRAGMENT_SIZE: usize = 9;
const TEXTURE: [f32; 5] = [0.2, 0.3, 0.4, 0.5, 0.6];
const ROTATE_DEGREES: [f32; 5] = [5.0, 10.0, 15.0, 20.0, 25.0];
const TRANSLATE: [isize; 5] = [1, 2, 3, 4, 5];

/// Checks that `image` holds a `C x H x W` image with no empty dimension.
fn check_shape(image: &[f32], [c, h, w]: [usize; 3], what: &str) -> Result<()> {
    if c == 0 || h == 0 || w == 0 || image.len() != c * h * w {
        return Err(VisionError::Parameter {
            name: "image",
            reason: format!(
                "{what} has {} values, expected a non-empty {c}x{h}x{w} image ({} values)",
                image.len(),
                c * h * w
            ),
        });
    }
    Ok(())
}

/// Corrupts one `C x H x W` image in place with `corruption` at `severity`, drawing from
/// `rng`. [`Fragments`](Corruption::Fragments) takes its pieces from `donor` (another image
/// of the same shape; the image itself when `None`).
///
/// # Errors
/// [`VisionError::Parameter`] when `image` or `donor` does not hold `C * H * W` values.
pub fn corrupt_image(
    image: &mut [f32],
    shape: [usize; 3],
    corruption: Corruption,
    severity: Severity,
    rng: &mut SplitMix64,
    donor: Option<&[f32]>,
) -> Result<()> {
    check_shape(image, shape, "the image")?;
    if let Some(d) = donor {
        check_shape(d, shape, "the donor image")?;
    }
    let s = severity.index();
    let [c, h, w] = shape;
    match corruption {
        Corruption::Brightness => image.iter_mut().for_each(|v| *v += BRIGHTNESS[s]),
        Corruption::Contrast => {
            for plane in image.chunks_mut(h * w) {
                let mean = plane.iter().sum::<f32>() / plane.len() as f32;
                plane
                    .iter_mut()
                    .for_each(|v| *v = (*v - mean) * CONTRAST[s] + mean);
            }
        }
        Corruption::Gamma => {
            let (g, e) = GAMMA[s];
            image
                .iter_mut()
                .for_each(|v| *v = v.clamp(0.0, 1.0).powf(g) * e);
        }
        Corruption::GaussianNoise => image
            .iter_mut()
            .for_each(|v| *v += (NOISE_STD[s] * rng.normal()) as f32),
        Corruption::ShotNoise => image.iter_mut().for_each(|v| {
            let n = PHOTONS[s];
            *v = (ops::poisson(f64::from(v.clamp(0.0, 1.0)) * n, rng) / n) as f32;
        }),
        Corruption::Blur => gaussian_blur(image, shape, BLUR_SIGMA[s]),
        Corruption::Strokes => random_strokes(image, shape, STROKES[s], rng),
        Corruption::Fragments => {
            let own = donor.is_none().then(|| image.to_vec());
            let donor = donor.or(own.as_deref()).unwrap_or_default();
            for _ in 0..FRAGMENTS[s] {
                paste_fragment(image, donor, shape, FRAGMENT_SIZE, rng);
            }
        }
        Corruption::Texture => texture(image, shape, TEXTURE[s], rng),
        Corruption::Rotate => {
            let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            rotate(image, shape, sign * ROTATE_DEGREES[s]);
        }
        Corruption::Translate => {
            let m = TRANSLATE[s];
            // The larger offset is m; the other any of -m..=m; which axis and signs at random.
            let other = rng.below(2 * m as u64 + 1) as isize - m;
            let sign = if rng.uniform() < 0.5 { -m } else { m };
            let (dy, dx) = if rng.uniform() < 0.5 {
                (sign, other)
            } else {
                (other, sign)
            };
            ops::translate(image, [c, h, w], dy, dx);
        }
    }
    clip(image);
    Ok(())
}

/// The random stream of image `index` under `(seed, corruption, severity)`.
pub fn image_stream(
    seed: u64,
    corruption: Corruption,
    severity: Severity,
    index: u64,
) -> SplitMix64 {
    let mut mix = SplitMix64::new(seed ^ 0x6b69_6c6e_2d63_6f72);
    let a = mix.next_u64() ^ corruption.id().wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = SplitMix64::new(a).next_u64() ^ u64::from(severity.level()) << 56;
    SplitMix64::new(SplitMix64::new(b ^ index).next_u64())
}

/// A corrupted copy of every item (labels kept): image `i` draws from
/// [`image_stream`]`(seed, corruption, severity, i)`, and [`Fragments`](Corruption::Fragments)
/// takes its pieces from another item chosen by that stream.
///
/// # Errors
/// [`VisionError::Parameter`] naming the first item that does not hold a `C x H x W` image.
pub fn corrupt_items(
    items: &[ImageItem],
    shape: [usize; 3],
    corruption: Corruption,
    severity: Severity,
    seed: u64,
) -> Result<Vec<ImageItem>> {
    let n = items.len();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let mut rng = image_stream(seed, corruption, severity, i as u64);
            let donor = (corruption == Corruption::Fragments && n > 1).then(|| {
                let j = (i + 1 + rng.below(n as u64 - 1) as usize) % n;
                items[j].pixels.as_slice()
            });
            let mut pixels = item.pixels.clone();
            corrupt_image(&mut pixels, shape, corruption, severity, &mut rng, donor).map_err(
                |e| match e {
                    VisionError::Parameter { name, reason } => VisionError::Parameter {
                        name,
                        reason: format!("item {i}: {reason}"),
                    },
                    other => other,
                },
            )?;
            Ok(ImageItem {
                pixels,
                label: item.label,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
