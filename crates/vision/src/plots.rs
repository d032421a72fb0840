//! Pictures of an evaluation: the confusion matrix as a heat map and a grid of misclassified
//! examples, as PNG files drawn by plotters ([`kiln_core::plot`]) with the font Kiln ships.

use std::path::Path;

use kiln_core::metrics::ConfusionMatrix;
use kiln_core::plot::{Caption, ImageGrid};

use crate::corrupt::{Corruption, Severity, corrupt_image, image_stream};
use crate::error::{Result, VisionError};

/// The caption colour of a true class.
const TRUTH: [u8; 3] = [0, 140, 0];
/// The caption colour of a wrong prediction.
const PREDICTION: [u8; 3] = [200, 0, 0];
/// The caption colour of a corruption's name and of a severity.
const LABEL: [u8; 3] = [40, 40, 40];

/// The confusion matrix as a heat map with class indices for labels
/// ([`kiln_core::plot::confusion_heatmap`]).
///
/// # Errors
/// [`VisionError::Core`] when the map cannot be drawn or written.
pub fn confusion_heatmap(matrix: &ConfusionMatrix, path: &Path) -> Result<()> {
    Ok(kiln_core::plot::confusion_heatmap(matrix, &[], path)?)
}

/// A grid of up to `max` examples, each drawn from `C x H x W` pixels in `[0, 1]` (the first
/// channel, or RGB for three), with its true label (green) and prediction (red) underneath.
///
/// Fails with [`VisionError::Dataset`] when a dimension of `shape` is 0 or an example does
/// not hold `C H W` finite pixels (the message names the example).
///
/// # Errors
/// [`VisionError::Dataset`] when a dimension of `shape` is 0 or an example does not hold `C H W`
/// finite pixels; [`VisionError::Core`] when the grid cannot be written.
pub fn example_grid(
    examples: &[(&[f32], usize, usize)],
    shape: [usize; 3],
    max: usize,
    path: &Path,
) -> Result<()> {
    let dataset = |e: kiln_core::Error| VisionError::Dataset(format!("example grid: {e}"));
    let mut grid = ImageGrid::new(shape).map_err(dataset)?;
    for (pixels, truth, predicted) in examples.iter().take(max) {
        let caption = vec![
            Caption::new(truth.to_string(), TRUTH),
            Caption::new(format!("→ {predicted}"), PREDICTION),
        ];
        grid.push(pixels, caption).map_err(dataset)?;
    }
    Ok(grid.save_png(path)?)
}

/// The corruption suite on a few images: one row per corruption and image, the clean image
/// first and then the severities 1 to 5, each captioned with the corruption and severity
/// (images in `[0, 1]`, `C x H x W`, corrupted with [`corrupt_image`] from the streams of
/// [`image_stream`]`(seed, ..)`).
///
/// # Errors
/// [`VisionError::Parameter`] when an image does not hold `C x H x W` values;
/// [`VisionError::Core`] when the grid cannot be written.
pub fn corruption_grid(images: &[&[f32]], shape: [usize; 3], seed: u64, path: &Path) -> Result<()> {
    let dataset = |e: kiln_core::Error| VisionError::Dataset(format!("corruption grid: {e}"));
    let size = shape.iter().product::<usize>();
    if let Some((i, image)) = images.iter().enumerate().find(|(_, im)| im.len() != size) {
        return Err(VisionError::Parameter {
            name: "images",
            reason: format!(
                "corruption grid: image {i} has {} values, expected {size} ({}x{}x{})",
                image.len(),
                shape[0],
                shape[1],
                shape[2]
            ),
        });
    }
    let mut grid = ImageGrid::new(shape)
        .and_then(|g| g.per_row(1 + Severity::ALL.len()))
        .map_err(dataset)?
        .title("corruptions, severities 1 to 5");
    for corruption in Corruption::ALL {
        for (i, image) in images.iter().enumerate() {
            grid.push(image, vec![Caption::new(corruption.name(), LABEL)])
                .map_err(dataset)?;
            for severity in Severity::ALL {
                let mut pixels = image.to_vec();
                let mut rng = image_stream(seed, corruption, severity, i as u64);
                let donor = images.get((i + 1) % images.len()).copied();
                corrupt_image(&mut pixels, shape, corruption, severity, &mut rng, donor)?;
                let caption = Caption::new(severity.level().to_string(), LABEL);
                grid.push(&pixels, vec![caption]).map_err(dataset)?;
            }
        }
    }
    Ok(grid.save_png(path)?)
}

/// Generated images as a grid, one row per class: `rows[k]` holds class `k`'s images
/// (`C x H x W` pixels in `[0, 1]`), captioned with `labels[k]` on the row's first image.
///
/// # Errors
/// [`VisionError::Dataset`] for an image of the wrong size, rows of different lengths or no
/// rows; an unwritable `path`.
pub fn sample_grid(
    rows: &[Vec<Vec<f32>>],
    labels: &[String],
    shape: [usize; 3],
    title: &str,
    path: &Path,
) -> Result<()> {
    let dataset = |e: kiln_core::Error| VisionError::Dataset(format!("sample grid: {e}"));
    let per_row = rows.first().map_or(0, Vec::len);
    if per_row == 0 || rows.iter().any(|r| r.len() != per_row) {
        return Err(VisionError::Dataset(format!(
            "sample grid: {} rows of lengths {:?}, expected equal, non-empty rows",
            rows.len(),
            rows.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    let mut grid = ImageGrid::new(shape)
        .and_then(|g| g.per_row(per_row))
        .map_err(dataset)?
        .title(title);
    for (k, row) in rows.iter().enumerate() {
        for (i, image) in row.iter().enumerate() {
            let caption = match (i, labels.get(k)) {
                (0, Some(l)) => vec![Caption::new(l.clone(), LABEL)],
                _ => vec![],
            };
            grid.push(image, caption).map_err(dataset)?;
        }
    }
    Ok(grid.save_png(path)?)
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
        // Class 0 is always right: its diagonal cell is the darkest blue (the first, row by
        // row), the cell right of it white.
        let dark = image::Rgb([8, 48, 107]);
        let (x, y) = img
            .enumerate_pixels()
            .find(|(_, _, p)| **p == dark)
            .map(|(x, y, _)| (x, y))
            .expect("a diagonal cell");
        assert_eq!(
            *img.get_pixel(x + 36 + 2, y + 2),
            image::Rgb([255, 255, 255])
        );
        // True class 1 is predicted 1 once and 2 once: a mid blue.
        let mid = img.get_pixel(x + 36 + 2, y + 36 + 2);
        assert!(mid[0] > 100 && mid[0] < 160, "{mid:?}");

        let samples = dir.path().join("samples.png");
        let rows = vec![vec![vec![0.25f32; 16]; 3], vec![vec![1.0f32; 16]; 3]];
        let labels = vec!["a".to_string(), "b".to_string()];
        sample_grid(&rows, &labels, [1, 4, 4], "samples", &samples).unwrap();
        let img = image::open(&samples).unwrap().to_rgb8();
        assert!(img.pixels().any(|p| *p == image::Rgb([64, 64, 64])));
        let ragged = vec![vec![vec![0.25f32; 16]; 3], vec![vec![1.0f32; 16]; 2]];
        assert!(sample_grid(&ragged, &labels, [1, 4, 4], "s", &samples).is_err());

        let pixels = vec![0.5f32; 4 * 4];
        let grid = dir.path().join("errors.png");
        example_grid(&[(&pixels, 3, 8), (&pixels, 1, 0)], [1, 4, 4], 64, &grid).unwrap();
        let img = image::open(&grid).unwrap().to_rgb8();
        assert!(img.pixels().any(|p| *p == image::Rgb([127, 127, 127])));
        // A short example or an empty shape is an error naming it, not an index past it.
        let short = vec![0.5f32; 15];
        let e = example_grid(&[(&pixels, 3, 8), (&short, 1, 0)], [1, 4, 4], 64, &grid).unwrap_err();
        assert!(matches!(e, VisionError::Dataset(_)), "{e}");
        assert!(
            e.to_string()
                .contains("example 1 has 15 pixels, a 1x4x4 image has 16"),
            "{e}"
        );
        let e = example_grid(&[(&pixels, 3, 8)], [1, 0, 4], 64, &grid).unwrap_err();
        assert!(e.to_string().contains("empty dimension"), "{e}");

        // 11 corruptions x 2 images, six tiles a row.
        let other = vec![0.0f32; 4 * 4];
        let suite = dir.path().join("corruptions.png");
        corruption_grid(&[&pixels, &other], [1, 4, 4], 0, &suite).unwrap();
        let img = image::open(&suite).unwrap().to_rgb8();
        assert!(
            img.height() > img.width(),
            "{}x{}",
            img.width(),
            img.height()
        );
        let e = corruption_grid(&[&short], [1, 4, 4], 0, &suite).unwrap_err();
        assert!(e.to_string().contains("15 values"), "{e}");
    }
}
