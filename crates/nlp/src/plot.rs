//! Attention heat maps as PNG files, drawn with the `image` crate and a built-in 5x7 pixel
//! font (letters are drawn in capitals, French accents on their base letter), so no font
//! files are needed.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{NlpError, Result};

/// 5x7 glyphs, one string of 35 cells per character (`#` = ink).
fn glyph(c: char) -> &'static str {
    let c = match c {
        'à' | 'â' | 'ä' | 'á' => 'a',
        'ç' => 'c',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'î' | 'ï' | 'í' => 'i',
        'ô' | 'ö' | 'ó' | 'œ' => 'o',
        'ù' | 'û' | 'ü' | 'ú' => 'u',
        c => c.to_ascii_lowercase(),
    };
    match c {
        'a' => " ### #   ##   #######   ##   ##   #",
        'b' => "#### #   ##   ##### #   ##   ##### ",
        'c' => " #####    #    #    #    #     ####",
        'd' => "#### #   ##   ##   ##   ##   ##### ",
        'e' => "######    #    #### #    #    #####",
        'f' => "######    #    #### #    #    #    ",
        'g' => " #####    #    #  ###   ##   # ### ",
        'h' => "#   ##   ##   #######   ##   ##   #",
        'i' => "#####  #    #    #    #    #  #####",
        'j' => "  ###   #    #    #  # #  # #  ##  ",
        'k' => "#   ##  # # #  ##   # #  #  # #   #",
        'l' => "#    #    #    #    #    #    #####",
        'm' => "#   ### ### # ##   ##   ##   ##   #",
        'n' => "#   ###  ## # ##  ###   ##   ##   #",
        'o' => " ### #   ##   ##   ##   ##   # ### ",
        'p' => "#### #   ##   ##### #    #    #    ",
        'q' => " ### #   ##   ##   ## # ##  #  ## #",
        'r' => "#### #   ##   ##### # #  #  # #   #",
        's' => " #####    #     ###     #    ##### ",
        't' => "#####  #    #    #    #    #    #  ",
        'u' => "#   ##   ##   ##   ##   ##   # ### ",
        'v' => "#   ##   ##   ##   ##   # # #   #  ",
        'w' => "#   ##   ##   ## # ## # ### ###   #",
        'x' => "#   ##   # # #   #   # # #   ##   #",
        'y' => "#   ##   # # #   #    #    #    #  ",
        'z' => "#####    #   #   #   #   #    #####",
        '.' => "                          ##   ##  ",
        '!' => "  #    #    #    #    #         #  ",
        '?' => " ### #   #    #   #   #         #  ",
        '<' => "   #   #   #   #     #     #     # ",
        '>' => " #     #     #     #   #   #   #   ",
        _ => "                                   ",
    }
}

const INK: Rgb<u8> = Rgb([0, 0, 0]);

/// Draws `text` from (`x`, `y`), left to right, or top to bottom when `vertical`.
fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, vertical: bool) {
    for (k, c) in text.chars().enumerate() {
        let g = glyph(c).as_bytes();
        let (ox, oy) = if vertical {
            (x, y + k as u32 * 8 * scale)
        } else {
            (x + k as u32 * 6 * scale, y)
        };
        for (cell, &b) in g.iter().enumerate().take(35) {
            if b != b'#' {
                continue;
            }
            let (col, row) = (cell as u32 % 5, cell as u32 / 5);
            for dy in 0..scale {
                for dx in 0..scale {
                    let (px, py) = (ox + col * scale + dx, oy + row * scale + dy);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, INK);
                    }
                }
            }
        }
    }
}

/// Draws attention `weights` (one row per output token, one column per input token, values
/// in `[0, 1]`) as a heat map from white (0) to dark blue (1), with the input tokens written
/// down the top and the output tokens along the left, and saves it as a PNG at `path`.
pub fn attention_heatmap(
    weights: &[Vec<f32>],
    inputs: &[String],
    outputs: &[String],
    path: &Path,
) -> Result<()> {
    let (rows, cols) = (weights.len(), weights.first().map_or(0, Vec::len));
    if rows == 0 || cols == 0 || rows != outputs.len() || cols != inputs.len() {
        return Err(NlpError::Input(format!(
            "attention heat map: {rows}x{cols} weights for {} output and {} input tokens",
            outputs.len(),
            inputs.len()
        )));
    }
    if let Some((r, row)) = weights
        .iter()
        .enumerate()
        .find(|(_, row)| row.len() != cols)
    {
        return Err(NlpError::Input(format!(
            "attention heat map: row {r} has {} weights, row 0 has {cols}",
            row.len()
        )));
    }
    let (scale, cell) = (2u32, 20u32);
    let longest =
        |labels: &[String]| labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let left = longest(outputs) * 6 * scale + 8;
    let top = longest(inputs) * 8 * scale + 8;
    let mut img = RgbImage::from_pixel(
        left + cols as u32 * cell + 4,
        top + rows as u32 * cell + 4,
        Rgb([255, 255, 255]),
    );
    for (r, row) in weights.iter().enumerate() {
        for (c, &w) in row.iter().enumerate() {
            let share = w.clamp(0.0, 1.0) as f64;
            let shade = |full: f64| (255.0 - share * (255.0 - full)).round() as u8;
            let color = Rgb([shade(8.0), shade(48.0), shade(107.0)]);
            for y in 0..cell - 1 {
                for x in 0..cell - 1 {
                    img.put_pixel(left + c as u32 * cell + x, top + r as u32 * cell + y, color);
                }
            }
        }
        draw_text(
            &mut img,
            &outputs[r],
            4,
            top + r as u32 * cell + 3,
            scale,
            false,
        );
    }
    for (c, label) in inputs.iter().enumerate() {
        draw_text(&mut img, label, left + c as u32 * cell + 5, 4, scale, true);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| NlpError::io(dir, e))?;
    }
    img.save(path)
        .map_err(|e| NlpError::io(path, std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_has_35_cells_and_the_map_has_the_right_size() {
        for c in "abcdefghijklmnopqrstuvwxyz.!?<> éç".chars() {
            assert_eq!(glyph(c).len(), 35, "{c:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        let words = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        attention_heatmap(
            &[vec![0.9, 0.1], vec![0.2, 0.8]],
            &words("je suis"),
            &words("i am"),
            &p,
        )
        .unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // Left margin: 2 chars * 12 + 8; top: 4 chars * 16 + 8; two 20-pixel cells each way.
        assert_eq!(img.dimensions(), (32 + 40 + 4, 72 + 40 + 4));
        // The strong cell (row 0, col 0) is darker than the weak one (row 0, col 1).
        assert!(img.get_pixel(32 + 5, 72 + 5)[0] < img.get_pixel(32 + 25, 72 + 5)[0]);
        assert!(attention_heatmap(&[vec![1.0]], &words("a b"), &words("c"), &p).is_err());
        // Ragged rows are an error naming the row, not a pixel written past the image.
        let ragged = [vec![0.5, 0.5], vec![0.2, 0.3, 0.5]];
        let e = attention_heatmap(&ragged, &words("a b"), &words("c d"), &p).unwrap_err();
        assert!(
            e.to_string().contains("row 1 has 3 weights, row 0 has 2"),
            "{e}"
        );
    }
}
