//! The IDX format of MNIST and Fashion-MNIST (LeCun et al.), raw or gzip-compressed.
//!
//! A big-endian `u32` magic `0x0000_08DD` where `08` is the element type (`u8`) and `DD` the
//! number of dimensions, then one big-endian `u32` per dimension, then the elements. Images
//! are `2051` (3 dimensions: count, rows, columns), labels `2049` (1 dimension). Every check
//! (magic, rank, dimensions, length) is an error naming the file, never a panic.

use std::io::Read;
use std::path::Path;

use crate::error::{Result, VisionError};

/// The magic of an IDX file of `u8` images (3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// The magic of an IDX file of `u8` labels (1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// `u8` images read from an IDX file.
///
/// The fields are private so that the sizes always describe the pixels
/// ([`IdxImages::new`] checks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    count: usize,
    rows: usize,
    cols: usize,
    /// `count * rows * cols` pixels, image after image, row-major.
    pixels: Vec<u8>,
}

impl IdxImages {
    /// `count` images of `rows x cols` pixels, image after image, row-major.
    ///
    /// Fails with [`VisionError::Dataset`] when an image dimension is 0 or `pixels` is not
    /// `count * rows * cols` long.
    ///
    /// # Errors
    /// [`VisionError::Dataset`] when an image dimension is 0 or `pixels` is not `count * rows *
    /// cols` long.
    pub fn new(count: usize, rows: usize, cols: usize, pixels: Vec<u8>) -> Result<Self> {
        let want = count.checked_mul(rows).and_then(|n| n.checked_mul(cols));
        if rows == 0 || cols == 0 || want != Some(pixels.len()) {
            return Err(VisionError::Dataset(format!(
                "{count} images of {rows}x{cols} pixels cannot hold {} pixels",
                pixels.len()
            )));
        }
        Ok(Self {
            count,
            rows,
            cols,
            pixels,
        })
    }

    /// Number of images.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Rows per image.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns per image.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Every pixel, image after image, row-major.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The pixels of image `i`, or `None` past the last image.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.rows * self.cols;
        (i < self.count).then(|| &self.pixels[i * size..(i + 1) * size])
    }

    /// Keeps the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        self.count = self.count.min(n);
        self.pixels.truncate(self.count * self.rows * self.cols);
    }
}

/// Reads a file, decompressing it when it starts with the gzip magic.
///
/// # Errors
/// [`VisionError::Io`] when the file cannot be read; [`VisionError::Idx`] when its gzip stream is
/// broken.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| VisionError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| VisionError::Idx {
                path: path.to_path_buf(),
                reason: format!("corrupt gzip stream: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the header of an IDX buffer: checks the magic and returns the dimensions and the
/// offset of the data.
fn header(bytes: &[u8], magic: u32, path: &Path) -> Result<(Vec<usize>, usize)> {
    let bad = |reason: String| VisionError::Idx {
        path: path.to_path_buf(),
        reason,
    };
    let word = |i: usize| -> Option<u32> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found =
        word(0).ok_or_else(|| bad(format!("{} bytes, too short for a header", bytes.len())))?;
    if found != magic {
        return Err(bad(format!("magic {found:#010x}, expected {magic:#010x}")));
    }
    let rank = (magic & 0xff) as usize;
    let dims = (1..=rank)
        .map(|i| word(i).map(|d| d as usize))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad(format!("header truncated: {rank} dimensions expected")))?;
    let offset = 4 * (rank + 1);
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let found_len = bytes.len() - offset;
    if found_len != expected {
        return Err(bad(format!(
            "dimensions {dims:?} need {expected} data bytes, found {found_len}{}",
            if found_len < expected {
                " (truncated file)"
            } else {
                " (trailing bytes)"
            }
        )));
    }
    Ok((dims, offset))
}

/// Parses IDX image bytes (already decompressed); `path` names the file in errors.
///
/// # Errors
/// [`VisionError::Idx`] naming `path` for a bad magic, a truncated header or body, or an image
/// dimension of 0.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    let (dims, offset) = header(bytes, IMAGES_MAGIC, path)?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(VisionError::Idx {
            path: path.to_path_buf(),
            reason: format!("images of {}x{} pixels", dims[1], dims[2]),
        });
    }
    IdxImages::new(dims[0], dims[1], dims[2], bytes[offset..].to_vec())
}

/// Parses IDX label bytes (already decompressed); `path` names the file in errors.
///
/// # Errors
/// [`VisionError::Idx`] naming `path` for a bad magic or a truncated header or body.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let (_, offset) = header(bytes, LABELS_MAGIC, path)?;
    Ok(bytes[offset..].to_vec())
}

/// Reads an IDX image file, raw or gzip.
///
/// # Errors
/// As [`read_maybe_gz`] and [`parse_images`].
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(&read_maybe_gz(path)?, path)
}

/// Reads an IDX label file, raw or gzip.
///
/// # Errors
/// As [`read_maybe_gz`] and [`parse_labels`].
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(&read_maybe_gz(path)?, path)
}

/// Encodes images as IDX bytes (for tests and for writing subsets).
pub fn encode_images(images: &IdxImages) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    for word in [
        IMAGES_MAGIC,
        images.count as u32,
        images.rows as u32,
        images.cols as u32,
    ] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as IDX bytes.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> IdxImages {
        IdxImages {
            count: 2,
            rows: 2,
            cols: 3,
            pixels: (0..12).collect(),
        }
    }

    #[test]
    fn round_trip_raw_and_gzip() {
        let images = sample();
        let bytes = encode_images(&images);
        let p = Path::new("imgs");
        assert_eq!(parse_images(&bytes, p).unwrap(), images);
        assert_eq!(images.image(1), Some(&[6u8, 7, 8, 9, 10, 11][..]));
        assert_eq!(images.image(images.count()), None);
        // Sizes that do not describe the pixels cannot be built.
        let e = IdxImages::new(2, 2, 3, vec![0; 11])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 images of 2x3 pixels cannot hold 11 pixels"),
            "{e}"
        );
        assert!(IdxImages::new(1, 0, 3, vec![]).is_err());
        assert!(IdxImages::new(usize::MAX, 2, 2, vec![]).is_err());
        assert_eq!(
            parse_labels(&encode_labels(&[3, 1, 4]), p).unwrap(),
            vec![3, 1, 4]
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imgs.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(&bytes).unwrap();
        gz.finish().unwrap();
        assert_eq!(read_images(&path).unwrap(), images);
    }

    #[test]
    fn truncated_files_are_errors_naming_the_file() {
        let bytes = encode_images(&sample());
        for cut in [0, 3, 10, 15, bytes.len() - 1] {
            let err = parse_images(&bytes[..cut], Path::new("train-images"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("train-images"), "{err}");
        }
        let err = parse_images(&bytes[..bytes.len() - 1], Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            parse_images(&longer, Path::new("x"))
                .unwrap_err()
                .to_string()
                .contains("trailing")
        );
    }

    #[test]
    fn wrong_magic_and_dimensions_are_errors() {
        // Labels where images are expected, and the other way round.
        let labels = encode_labels(&[1, 2]);
        let err = parse_images(&labels, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic"), "{err}");
        assert!(parse_labels(&encode_images(&sample()), Path::new("x")).is_err());
        // Dimensions that promise more data than there is.
        let mut bytes = encode_images(&sample());
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(
            parse_images(&bytes, Path::new("x"))
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        // Zero-sized images.
        let empty = IdxImages {
            count: 0,
            rows: 0,
            cols: 5,
            pixels: vec![],
        };
        assert!(parse_images(&encode_images(&empty), Path::new("x")).is_err());
        // A corrupt gzip stream.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        assert!(read_images(&path).unwrap_err().to_string().contains("gzip"));
    }
}
