//! Pictures of an evaluation: the confusion matrix as a heat map and a grid of misclassified
//! examples, as PNG files drawn with the `image` crate (no fonts needed: class indices and
//! labels are drawn with a built-in 3x5 digit font).

use std::path::Path;

use image::{Rgb, RgbImage};
use kiln_core::metrics::ConfusionMatrix;

use crate::error::{Result, VisionError};

/// 3x5 bitmaps of the digits 0-9, one row per `u8` (3 low bits, left pixel first).
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// Draws the decimal number `n` with its top-left corner at (`x`, `y`), `scale` pixels per dot.
fn draw_number(img: &mut RgbImage, n: usize, x: u32, y: u32, scale: u32, color: Rgb<u8>) {
    for (k, ch) in n.to_string().bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let px = x + (k as u32 * 4 + col) * scale + dx;
                            let py = y + row as u32 * scale + dy;
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, color);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn save(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| VisionError::io(dir, e))?;
    }
    img.save(path).map_err(|e| VisionError::Image {
        path: path.to_path_buf(),
        reason: format!("cannot write PNG: {e}"),
    })
}

/// The confusion matrix as a heat map: row `t`, column `p` is the share of class `t`
/// predicted as `p`, from white (0) to dark blue (1); rows are true classes, columns
/// predictions, both labelled with class indices.
pub fn confusion_heatmap(matrix: &ConfusionMatrix, path: &Path) -> Result<()> {
    let c = matrix.num_classes() as u32;
    let (cell, margin) = (36u32, 24u32);
    let mut img = RgbImage::from_pixel(
        margin + c * cell + 4,
        margin + c * cell + 4,
        Rgb([255, 255, 255]),
    );
    for (t, row) in matrix.counts().iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (p, &count) in row.iter().enumerate() {
            let share = count as f64 / total as f64;
            let shade = |full: f64| (255.0 - share * (255.0 - full)).round() as u8;
            let color = Rgb([shade(8.0), shade(48.0), shade(107.0)]);
            for y in 0..cell - 1 {
                for x in 0..cell - 1 {
                    img.put_pixel(
                        margin + p as u32 * cell + x,
                        margin + t as u32 * cell + y,
                        color,
                    );
                }
            }
        }
        draw_number(
            &mut img,
            t,
            6,
            margin + t as u32 * cell + cell / 2 - 5,
            2,
            Rgb([0, 0, 0]),
        );
    }
    for p in 0..c {
        draw_number(
            &mut img,
            p as usize,
            margin + p * cell + cell / 2 - 3,
            6,
            2,
            Rgb([0, 0, 0]),
        );
    }
    save(&img, path)
}

/// A grid of up to `max` examples, each drawn from `C x H x W` pixels in `[0, 1]` (the first
/// channel, or RGB for three), with its true label (green) and prediction (red) underneath.
///
/// Fails with [`VisionError::Dataset`] when a dimension of `shape` is 0 or an example does
/// not hold `C H W` pixels.
pub fn example_grid(
    examples: &[(&[f32], usize, usize)],
    shape: [usize; 3],
    max: usize,
    path: &Path,
) -> Result<()> {
    let [c, h, w] = shape;
    if c * h * w == 0 {
        return Err(VisionError::Dataset(format!(
            "example grid: image shape {shape:?} has an empty dimension"
        )));
    }
    if let Some((i, (pixels, ..))) = examples
        .iter()
        .take(max)
        .enumerate()
        .find(|(_, (pixels, ..))| pixels.len() != c * h * w)
    {
        return Err(VisionError::Dataset(format!(
            "example grid: example {i} has {} pixels, a {c}x{h}x{w} image has {}",
            pixels.len(),
            c * h * w
        )));
    }
    let (scale, per_row) = (2u32, 10usize);
    let n = examples.len().min(max).max(1);
    let rows = n.div_ceil(per_row) as u32;
    let (tile_w, tile_h) = (w as u32 * scale + 6, h as u32 * scale + 18);
    let mut img = RgbImage::from_pixel(
        per_row.min(n) as u32 * tile_w,
        rows * tile_h,
        Rgb([255, 255, 255]),
    );
    for (i, (pixels, truth, predicted)) in examples.iter().take(max).enumerate() {
        let (x0, y0) = (
            (i % per_row) as u32 * tile_w + 3,
            (i / per_row) as u32 * tile_h + 3,
        );
        for y in 0..h {
            for x in 0..w {
                let value =
                    |ch: usize| (pixels[ch * h * w + y * w + x].clamp(0.0, 1.0) * 255.0) as u8;
                let color = if c >= 3 {
                    Rgb([value(0), value(1), value(2)])
                } else {
                    Rgb([value(0); 3])
                };
                for dy in 0..scale {
                    for dx in 0..scale {
                        img.put_pixel(
                            x0 + x as u32 * scale + dx,
                            y0 + y as u32 * scale + dy,
                            color,
                        );
                    }
                }
            }
        }
        let text_y = y0 + h as u32 * scale + 2;
        draw_number(&mut img, *truth, x0, text_y, 2, Rgb([0, 140, 0]));
        draw_number(
            &mut img,
            *predicted,
            x0 + tile_w / 2,
            text_y,
            2,
            Rgb([200, 0, 0]),
        );
    }
    save(&img, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_readable_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let m = ConfusionMatrix::from_predictions(3, &[0, 1, 2, 2], &[0, 1, 1, 2]);
        let heat = dir.path().join("confusion.png");
        confusion_heatmap(&m, &heat).unwrap();
        let img = image::open(&heat).unwrap().to_rgb8();
        // Class 0 is always right: its diagonal cell is the darkest blue, its neighbour white.
        assert_eq!(*img.get_pixel(24 + 10, 24 + 10), Rgb([8, 48, 107]));
        assert_eq!(*img.get_pixel(24 + 36 + 10, 24 + 10), Rgb([255, 255, 255]));

        let pixels = vec![0.5f32; 4 * 4];
        let grid = dir.path().join("errors.png");
        example_grid(&[(&pixels, 3, 8), (&pixels, 1, 0)], [1, 4, 4], 64, &grid).unwrap();
        let img = image::open(&grid).unwrap().to_rgb8();
        assert_eq!(*img.get_pixel(3, 3), Rgb([127, 127, 127]));
        // A short example or an empty shape is an error naming it, not an index past it.
        let short = vec![0.5f32; 15];
        let e = example_grid(&[(&pixels, 3, 8), (&short, 1, 0)], [1, 4, 4], 64, &grid).unwrap_err();
        assert!(
            e.to_string()
                .contains("example 1 has 15 pixels, a 1x4x4 image has 16"),
            "{e}"
        );
        let e = example_grid(&[(&pixels, 3, 8)], [1, 0, 4], 64, &grid).unwrap_err();
        assert!(e.to_string().contains("empty dimension"), "{e}");
    }
}
