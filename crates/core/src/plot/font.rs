//! The one font every Kiln plot draws its text with: a subset of DejaVu Sans (Latin with
//! its extensions, Greek, Cyrillic, punctuation, arrows, math signs) compiled into the
//! library, so that plots need no system fonts and look the same on every machine.
//!
//! `crates/core/assets/fonts/make_subset.sh` regenerates it; its licence (Bitstream Vera)
//! is `LICENSE.txt` beside it. A character outside the subset draws as an empty box.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// The family name plots ask plotters for.
pub const FAMILY: &str = "sans-serif";

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-kiln.ttf");

/// Registers the font with plotters (once per process). Every drawing function calls this
/// before its first text.
pub fn register() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The font is compiled in and parsed by this crate's tests
        // (`the_shipped_font_parses`), so this cannot fail at run time; a failure would
        // only leave text undrawn, which the plots' tests would catch.
        for style in [FontStyle::Normal, FontStyle::Bold] {
            let _ = plotters::style::register_font(FAMILY, style, FONT);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_font_parses() {
        assert!(plotters::style::register_font("kiln-test", FontStyle::Normal, FONT).is_ok());
    }
}
