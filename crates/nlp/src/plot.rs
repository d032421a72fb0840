//! Attention heat maps as PNG files: [`kiln_core::plot::HeatMap`] with the input tokens
//! along the top and the output tokens down the left, text drawn by plotters with the font
//! Kiln ships (accents, Greek and Cyrillic included).

use std::path::Path;

use kiln_core::plot::HeatMap;

use crate::error::{NlpError, Result};

/// Draws attention `weights` (one row per output token, one column per input token, values
/// in `[0, 1]`) as a heat map from white (0) to dark blue (1), with the input tokens written
/// along the top and the output tokens down the left, and saves it as a PNG at `path`.
///
/// Fails with [`NlpError::Input`] when the weights are empty or ragged, do not match the
/// token counts, or hold a value that is not finite (the message names the row), and with
/// [`NlpError::Core`] when the picture cannot be written.
///
/// # Errors
/// [`NlpError::Input`] when the weights' shape does not match the token lists; the plot's own
/// errors when it cannot be drawn or written.
pub fn attention_heatmap(
    weights: &[Vec<f32>],
    inputs: &[String],
    outputs: &[String],
    path: &Path,
) -> Result<()> {
    let map = HeatMap::new(weights.to_vec(), outputs.to_vec(), inputs.to_vec())
        .map_err(|e| NlpError::Input(format!("attention {e}")))?
        .x_desc("input")
        .y_desc("output");
    Ok(map.save_png(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn strong_weights_are_darker_and_bad_shapes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        attention_heatmap(
            &[vec![0.9, 0.1], vec![0.2, 0.8]],
            &words("je suis"),
            &words("i am"),
            &p,
        )
        .unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // The first blue pixel (row by row) is the top left corner of cell (0, 0); the
        // weak cell right of it, one 28-pixel cell on, is much lighter.
        let (x, y) = img
            .enumerate_pixels()
            .find(|(_, _, p)| i32::from(p[2]) > i32::from(p[0]) + 40)
            .map(|(x, y, _)| (x + 3, y + 3))
            .expect("blue cells");
        assert!(i32::from(img.get_pixel(x + 28, y)[0]) > i32::from(img.get_pixel(x, y)[0]) + 100);

        assert!(attention_heatmap(&[vec![1.0]], &words("a b"), &words("c"), &p).is_err());
        // Ragged rows are an error naming the row, not a pixel written past the image.
        let ragged = [vec![0.5, 0.5], vec![0.2, 0.3, 0.5]];
        let e = attention_heatmap(&ragged, &words("a b"), &words("c d"), &p).unwrap_err();
        assert!(matches!(e, NlpError::Input(_)), "{e}");
        assert!(
            e.to_string().contains("row 1 has 3 values, row 0 has 2"),
            "{e}"
        );
    }
}
