//! Pictures for people: labelled heat maps ([`HeatMap`]: attention weights, confusion
//! matrices) and grids of images with coloured captions ([`ImageGrid`]: misclassified
//! examples), written as PNG files. Everything, text included, is drawn by `plotters` with
//! the font Kiln ships ([`font`]), so the pictures need no system fonts. The trainer's loss
//! and metric curves (`train::write_curves`) are plotters SVGs with the same font.

mod confusion;
pub mod font;
mod grid;
mod heatmap;
mod png;

pub use confusion::confusion_heatmap;
pub use grid::{Caption, ImageGrid};
pub use heatmap::HeatMap;
pub use png::MAX_SIDE;

use plotters::style::RGBColor;

/// Text and frames.
const INK: RGBColor = RGBColor(0, 0, 0);

/// Titles: the shipped family, bold, `px` high, in [`INK`].
fn title_style(px: u32) -> plotters::style::TextStyle<'static> {
    use plotters::style::{FontStyle, IntoFont, TextStyle};
    TextStyle::from((font::FAMILY, px).into_font().style(FontStyle::Bold)).color(&INK)
}

/// The dark blue at the top of the heat maps' white-to-blue ramp (matplotlib's `Blues`).
const RAMP_HIGH: [u8; 3] = [8, 48, 107];

/// The ramp's colour at `share` in `[0, 1]`: white at 0, [`RAMP_HIGH`] at 1.
fn ramp(share: f64) -> RGBColor {
    let shade = |full: u8| (255.0 - share * (255.0 - f64::from(full))).round() as u8;
    RGBColor(
        shade(RAMP_HIGH[0]),
        shade(RAMP_HIGH[1]),
        shade(RAMP_HIGH[2]),
    )
}
