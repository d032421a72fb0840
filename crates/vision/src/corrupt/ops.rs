//! The image operations the corruption suite and the robustness augmentations share: Gaussian
//! blur, rotation, anti-aliased strokes, grating textures, pasted fragments and Poisson draws.
//!
//! Every function works on one `C x H x W` image of values in `[0, 1]` (channel-major, as
//! [`ImageItem`](crate::ImageItem) holds them) and leaves values in `[0, 1]`.

use kiln_core::data::SplitMix64;

/// Clamps every value into `[0, 1]`.
pub(crate) fn clip(image: &mut [f32]) {
    for v in image {
        *v = v.clamp(0.0, 1.0);
    }
}

/// A normalised 1-D Gaussian kernel of standard deviation `sigma`, radius `ceil(3 sigma)`.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let k: Vec<f32> = (-radius..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = k.iter().sum();
    k.into_iter().map(|v| v / total).collect()
}

/// Separable Gaussian blur of standard deviation `sigma` pixels, borders replicated (so that
/// a uniform image stays uniform). `sigma <= 0` leaves the image as it is.
pub(crate) fn gaussian_blur(image: &mut [f32], [c, h, w]: [usize; 3], sigma: f32) {
    if sigma <= 0.0 {
        return;
    }
    let k = gaussian_kernel(sigma);
    let mut tmp = vec![0.0f32; h * w];
    for plane in image.chunks_mut(h * w).take(c) {
        blur_axis(plane, &mut tmp, [h, w], &k, true);
        blur_axis(&tmp, plane, [h, w], &k, false);
    }
}

/// One pass of a separable blur: `dst` is `src` convolved with `k` along the rows
/// (`horizontal`) or the columns, edges clamped.
fn blur_axis(src: &[f32], dst: &mut [f32], [h, w]: [usize; 2], k: &[f32], horizontal: bool) {
    let r = (k.len() / 2) as isize;
    for y in 0..h {
        for x in 0..w {
            dst[y * w + x] = k
                .iter()
                .enumerate()
                .map(|(i, kv)| {
                    let o = i as isize - r;
                    let at = if horizontal {
                        y * w + (x as isize + o).clamp(0, w as isize - 1) as usize
                    } else {
                        (y as isize + o).clamp(0, h as isize - 1) as usize * w + x
                    };
                    kv * src[at]
                })
                .sum();
        }
    }
}

/// Rotates the image by `degrees` (counter-clockwise on screen) about its centre, bilinear
/// sampling, filling with 0 outside the source.
pub(crate) fn rotate(image: &mut [f32], [c, h, w]: [usize; 3], degrees: f32) {
    if degrees == 0.0 {
        return;
    }
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let src = image.to_vec();
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        let at = |y: isize, x: isize| {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                0.0
            } else {
                plane[y as usize * w + x as usize]
            }
        };
        for y in 0..h {
            for x in 0..w {
                // The source of output pixel (y, x): the inverse rotation (y grows downwards).
                let (dy, dx) = (y as f32 - cy, x as f32 - cx);
                let sx = cos * dx - sin * dy + cx;
                let sy = sin * dx + cos * dy + cy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                let v = at(y0, x0) * (1.0 - fx) * (1.0 - fy)
                    + at(y0, x0 + 1) * fx * (1.0 - fy)
                    + at(y0 + 1, x0) * (1.0 - fx) * fy
                    + at(y0 + 1, x0 + 1) * fx * fy;
                image[ch * h * w + y * w + x] = v;
            }
        }
    }
}

/// Draws an anti-aliased straight stroke from `from` to `to` (`(y, x)` in pixels) of `width`
/// pixels and brightness `level` into every channel, keeping the brighter of stroke and image.
pub(crate) fn stroke(
    image: &mut [f32],
    [c, h, w]: [usize; 3],
    from: (f32, f32),
    to: (f32, f32),
    width: f32,
    level: f32,
) {
    let (vy, vx) = (to.0 - from.0, to.1 - from.1);
    let len2 = (vy * vy + vx * vx).max(1e-6);
    for y in 0..h {
        for x in 0..w {
            let (py, px) = (y as f32 - from.0, x as f32 - from.1);
            let t = ((py * vy + px * vx) / len2).clamp(0.0, 1.0);
            let (ey, ex) = (py - t * vy, px - t * vx);
            let d = (ey * ey + ex * ex).sqrt();
            let cover = (width / 2.0 + 0.5 - d).clamp(0.0, 1.0);
            if cover > 0.0 {
                for ch in 0..c {
                    let v = &mut image[ch * h * w + y * w + x];
                    *v = v.max(level * cover);
                }
            }
        }
    }
}

/// `count` random strokes across the image: end points anywhere in it, widths 1 to 2 pixels,
/// brightness 0.6 to 1.
pub(crate) fn random_strokes(
    image: &mut [f32],
    shape: [usize; 3],
    count: usize,
    rng: &mut SplitMix64,
) {
    let [_, h, w] = shape;
    for _ in 0..count {
        let from = (
            rng.uniform() as f32 * h as f32,
            rng.uniform() as f32 * w as f32,
        );
        let to = (
            rng.uniform() as f32 * h as f32,
            rng.uniform() as f32 * w as f32,
        );
        let width = 1.0 + rng.uniform() as f32;
        let level = 0.6 + 0.4 * rng.uniform() as f32;
        stroke(image, shape, from, to, width, level);
    }
}

/// A background texture: the sum of two sinusoidal gratings of random period (4 to 14
/// pixels), orientation and phase, scaled into `[0, amplitude]`, laid under the image with a
/// screen blend (`x + t (1 - x)`: bright strokes stay bright, the dark background lightens).
pub(crate) fn texture(
    image: &mut [f32],
    [c, h, w]: [usize; 3],
    amplitude: f32,
    rng: &mut SplitMix64,
) {
    let waves: Vec<(f32, f32, f32)> = (0..2)
        .map(|_| {
            let period = 4.0 + 10.0 * rng.uniform() as f32;
            let angle = std::f32::consts::PI * rng.uniform() as f32;
            let phase = std::f32::consts::TAU * rng.uniform() as f32;
            (std::f32::consts::TAU / period, angle, phase)
        })
        .collect();
    for y in 0..h {
        for x in 0..w {
            let s: f32 = waves
                .iter()
                .map(|&(k, a, p)| (k * (x as f32 * a.cos() + y as f32 * a.sin()) + p).sin())
                .sum();
            // s in [-2, 2] -> [0, amplitude].
            let t = amplitude * (s + 2.0) / 4.0;
            for ch in 0..c {
                let v = &mut image[ch * h * w + y * w + x];
                *v += t * (1.0 - *v);
            }
        }
    }
}

/// Pastes a `size x size` fragment of `donor` (taken from its central half, where the subject
/// of a centred data set is) at a random place of `image`, keeping the brighter pixel.
pub(crate) fn paste_fragment(
    image: &mut [f32],
    donor: &[f32],
    [c, h, w]: [usize; 3],
    size: usize,
    rng: &mut SplitMix64,
) {
    let size = size.min(h).min(w);
    let pick = |rng: &mut SplitMix64, lo: usize, hi: usize| {
        lo + rng.below((hi.saturating_sub(lo) + 1) as u64) as usize
    };
    // Source: a window starting in the donor's central half, kept inside the donor.
    let start = |rng: &mut SplitMix64, n: usize| {
        let lo = (n / 4).min(n - size);
        let hi = (3 * n / 4).saturating_sub(size).clamp(lo, n - size);
        pick(rng, lo, hi)
    };
    let (sy, sx) = (start(rng, h), start(rng, w));
    let (dy, dx) = (pick(rng, 0, h - size), pick(rng, 0, w - size));
    for ch in 0..c {
        for y in 0..size {
            for x in 0..size {
                let s = donor[ch * h * w + (sy + y) * w + sx + x];
                let d = &mut image[ch * h * w + (dy + y) * w + dx + x];
                *d = d.max(s);
            }
        }
    }
}

/// A Poisson draw of mean `lambda` (Knuth's product of uniforms below 30, the normal
/// approximation with continuity correction above).
pub(crate) fn poisson(lambda: f64, rng: &mut SplitMix64) -> f64 {
    if lambda <= 0.0 {
        return 0.0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * rng.normal()).round().max(0.0);
    }
    let limit = (-lambda).exp();
    let mut k = 0.0;
    let mut p = rng.uniform();
    while p > limit {
        k += 1.0;
        p *= rng.uniform();
    }
    k
}

/// Moves the image by (`dy`, `dx`) whole pixels, filling with 0.
pub(crate) fn translate(image: &mut [f32], shape: [usize; 3], dy: isize, dx: isize) {
    let mut scratch = vec![0.0; image.len()];
    crate::transform::shift(image, shape, dy, dx, &mut scratch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_mass_and_uniform_images() {
        let mut flat = vec![0.3f32; 2 * 8 * 8];
        gaussian_blur(&mut flat, [2, 8, 8], 1.3);
        assert!(flat.iter().all(|v| (v - 0.3).abs() < 1e-6));
        // A dot in the middle spreads but keeps its total (far from the borders).
        let mut dot = vec![0.0f32; 15 * 15];
        dot[7 * 15 + 7] = 1.0;
        gaussian_blur(&mut dot, [1, 15, 15], 1.0);
        let total: f32 = dot.iter().sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        assert!(dot[7 * 15 + 7] < 0.2 && dot[7 * 15 + 8] > 0.05);
        assert!((dot[7 * 15 + 6] - dot[7 * 15 + 8]).abs() < 1e-6);
    }

    #[test]
    fn rotation_by_90_degrees_moves_a_pixel_a_quarter_turn() {
        // 5x5, a pixel right of the centre: a counter-clockwise quarter turn puts it above.
        let mut img = vec![0.0f32; 25];
        img[2 * 5 + 4] = 1.0;
        rotate(&mut img, [1, 5, 5], 90.0);
        let at = img.iter().position(|&v| v > 0.99).unwrap();
        assert_eq!(at, 2, "{img:?}");
        let mut same = vec![0.5f32; 9];
        rotate(&mut same, [1, 3, 3], 0.0);
        assert_eq!(same, vec![0.5; 9]);
    }

    #[test]
    fn strokes_cover_their_line_only() {
        let mut img = vec![0.0f32; 10 * 10];
        stroke(&mut img, [1, 10, 10], (5.0, 1.0), (5.0, 8.0), 1.0, 0.8);
        assert!((img[5 * 10 + 4] - 0.8).abs() < 1e-6);
        assert_eq!(img[2 * 10 + 4], 0.0);
        // One pixel past either end point: no cover.
        assert_eq!(img[5 * 10 + 9], 0.0);
        assert_eq!(img[5 * 10], 0.0);
    }

    #[test]
    fn poisson_mean_and_variance() {
        let mut rng = SplitMix64::new(9);
        for lambda in [0.5, 4.0, 25.0, 60.0] {
            let n = 20_000;
            let draws: Vec<f64> = (0..n).map(|_| poisson(lambda, &mut rng)).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64;
            assert!(
                (mean - lambda).abs() < 0.05 * lambda + 0.05,
                "{lambda}: mean {mean}"
            );
            assert!(
                (var - lambda).abs() < 0.1 * lambda + 0.05,
                "{lambda}: var {var}"
            );
        }
    }

    #[test]
    fn texture_and_fragments_stay_in_range() {
        let mut rng = SplitMix64::new(1);
        let mut img: Vec<f32> = (0..3 * 12 * 12).map(|i| (i % 7) as f32 / 6.0).collect();
        texture(&mut img, [3, 12, 12], 0.6, &mut rng);
        let donor = vec![1.0f32; 3 * 12 * 12];
        paste_fragment(&mut img, &donor, [3, 12, 12], 5, &mut rng);
        assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(img.iter().filter(|&&v| v == 1.0).count() >= 3 * 25);
    }
}
