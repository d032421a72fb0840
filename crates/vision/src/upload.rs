//! Pictures sent by clients (a server's uploads): the header read first, so that a picture
//! too large for the model is refused before any pixel is decoded, then the decoding into the
//! model's input ([`crate::data::folder::to_input`], as in training). [`UploadDecoder`] holds
//! only the input shape: it decodes on any thread, away from the model's.

use std::path::PathBuf;

use crate::batch::ImageItem;
use crate::data::FolderOptions;
use crate::data::folder::to_input;
use crate::error::{Result, VisionError};

/// Pixels a picture may have per input pixel of the model (a 28x28 model takes pictures of
/// up to 12.8 megapixels, a phone's photo of a digit; a 224x224 one reaches the cap).
pub const PIXELS_PER_INPUT_PIXEL: u64 = 16_384;
/// The least and the most pixels any model accepts, whatever its input size.
pub const PIXEL_BOUNDS: (u64, u64) = (4 << 20, 40 << 20);

/// Decodes PNG and JPEG uploads into a model's input of `channels x height x width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadDecoder {
    channels: usize,
    height: usize,
    width: usize,
}

impl UploadDecoder {
    /// A decoder for inputs of `channels` (1: grayscale, 3: RGB) x `height` x `width`.
    pub fn new(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            height,
            width,
        }
    }

    /// The most pixels (width x height) a picture may have: [`PIXELS_PER_INPUT_PIXEL`] per
    /// input pixel, within [`PIXEL_BOUNDS`].
    pub fn max_pixels(&self) -> u64 {
        let input = (self.height as u64).saturating_mul(self.width as u64);
        input
            .saturating_mul(PIXELS_PER_INPUT_PIXEL)
            .clamp(PIXEL_BOUNDS.0, PIXEL_BOUNDS.1)
    }

    /// Width and height from the picture's header (nothing decoded); a picture that is not a
    /// PNG or JPEG, or whose header does not read, is a [`VisionError::Image`] naming `name`.
    ///
    /// # Errors
    /// [`VisionError::Image`] naming `name` for a picture that is not a PNG or JPEG, or whose
    /// header does not read.
    pub fn dimensions(&self, name: &str, bytes: &[u8]) -> Result<(u32, u32)> {
        self.reader(name, bytes)?
            .into_dimensions()
            .map_err(|e| bad(name, format!("cannot read the header: {e}")))
    }

    /// The picture as the model's input (resized, grayscale or RGB, channel-major, in
    /// `[0, 1]`). More pixels than [`max_pixels`](Self::max_pixels), a format other than PNG
    /// or JPEG, or bytes that do not decode are a [`VisionError::Image`] naming `name`.
    ///
    /// # Errors
    /// [`VisionError::Image`] naming `name` for more pixels than [`max_pixels`](Self::max_pixels),
    /// a format other than PNG or JPEG, or bytes that do not decode.
    pub fn decode(&self, name: &str, bytes: &[u8]) -> Result<ImageItem> {
        let (w, h) = self.dimensions(name, bytes)?;
        let pixels = u64::from(w) * u64::from(h);
        if pixels > self.max_pixels() {
            return Err(bad(
                name,
                format!(
                    "{w}x{h} is {pixels} pixels, at most {} for a {}x{} model",
                    self.max_pixels(),
                    self.width,
                    self.height
                ),
            ));
        }
        let mut reader = self.reader(name, bytes)?;
        let mut limits = image::Limits::default();
        // The header's size is checked above; the decoder's own bound on allocations is the
        // same pixels at 4 bytes (RGBA) and 2 per channel (16-bit PNG).
        limits.max_alloc = Some(self.max_pixels() * 8);
        reader.limits(limits);
        let img = reader
            .decode()
            .map_err(|e| bad(name, format!("cannot decode: {e}")))?;
        let options = FolderOptions {
            height: self.height as u32,
            width: self.width as u32,
            grayscale: self.channels == 1,
        };
        let pixels = to_input(&img, options);
        Ok(ImageItem {
            pixels: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
            label: 0,
        })
    }

    fn reader<'a>(
        &self,
        name: &str,
        bytes: &'a [u8],
    ) -> Result<image::ImageReader<std::io::Cursor<&'a [u8]>>> {
        let format = image::guess_format(bytes)
            .map_err(|_| bad(name, "not a PNG or JPEG picture".into()))?;
        if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
            return Err(bad(
                name,
                format!("a {format:?} picture; PNG or JPEG expected"),
            ));
        }
        Ok(image::ImageReader::with_format(
            std::io::Cursor::new(bytes),
            format,
        ))
    }
}

fn bad(name: &str, reason: String) -> VisionError {
    VisionError::Image {
        path: PathBuf::from(name),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(width, height, image::Rgb([200, 10, 10]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// A 1x1 PNG whose header (with its checksum) claims `width` x `height`.
    pub(crate) fn png_claiming(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = png(1, 1);
        bytes[16..20].copy_from_slice(&width.to_be_bytes());
        bytes[20..24].copy_from_slice(&height.to_be_bytes());
        // CRC-32 (IEEE) of the chunk type and data, bytes 12..29.
        let mut crc = !0u32;
        for &b in &bytes[12..29] {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        bytes[29..33].copy_from_slice(&(!crc).to_be_bytes());
        bytes
    }

    #[test]
    fn the_pixel_bound_follows_the_input_size() {
        assert_eq!(UploadDecoder::new(1, 28, 28).max_pixels(), 784 * 16_384);
        assert_eq!(UploadDecoder::new(1, 4, 4).max_pixels(), 4 << 20);
        assert_eq!(UploadDecoder::new(3, 224, 224).max_pixels(), 40 << 20);
    }

    #[test]
    fn a_picture_decodes_to_the_input_and_a_huge_one_is_refused_from_its_header() {
        let d = UploadDecoder::new(1, 8, 8);
        let item = d.decode("up", &png(20, 10)).unwrap();
        assert_eq!(item.pixels.len(), 64);
        assert!(item.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        // A PNG header claiming 16,000 x 16,000 followed by no pixel data: the size is refused
        // from the header alone (decoding would fail differently).
        let huge = png_claiming(16_000, 16_000);
        assert_eq!(d.dimensions("up", &huge).unwrap(), (16_000, 16_000));
        let err = d.decode("up", &huge).unwrap_err().to_string();
        assert!(
            err.contains("16000x16000") && err.contains("at most"),
            "{err}"
        );
        let err = d.decode("up", b"GIF89a....").unwrap_err().to_string();
        assert!(err.contains("up"), "{err}");
    }
}
