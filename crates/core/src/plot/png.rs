//! The pixel buffer the PNG plots are drawn into with plotters' bitmap backend, and its
//! encoding to a PNG file with `image`.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

/// The widest and tallest picture a plot draws, in pixels.
pub const MAX_SIDE: u32 = 16_384;

/// A white RGB picture of `width x height` pixels.
pub(crate) struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A white canvas; the caller keeps both sides within [`MAX_SIDE`].
    pub(crate) fn new(width: u32, height: u32) -> Self {
        debug_assert!(width <= MAX_SIDE && height <= MAX_SIDE);
        let len = width as usize * height as usize * 3;
        Canvas {
            width,
            height,
            pixels: vec![255; len],
        }
    }

    /// Sets one pixel (outside the canvas: nothing).
    pub(crate) fn put(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        if x < self.width && y < self.height {
            let i = (y as usize * self.width as usize + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&rgb);
        }
    }

    /// A plotters drawing area over the pixels.
    pub(crate) fn area(&mut self) -> DrawingArea<BitMapBackend<'_>, Shift> {
        BitMapBackend::with_buffer(&mut self.pixels, (self.width, self.height)).into_drawing_area()
    }

    /// Writes the picture to `path` as a PNG, creating its folder.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let err = |reason: String| Error::Plot {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create its folder: {e}")))?;
        }
        image::save_buffer_with_format(
            path,
            &self.pixels,
            self.width,
            self.height,
            image::ColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| err(format!("cannot write the PNG: {e}")))
    }
}
