//! A data set of pictures in a folder with one subfolder per class
//! (`root/cat/001.png`, `root/dog/002.jpg`), as torchvision's `ImageFolder`: classes are the
//! subfolder names in sorted order. PNG and JPEG files are decoded with the `image` crate and
//! resized to one size when the folder is opened, so a broken file is reported with its path
//! before training starts.

use std::path::{Path, PathBuf};

use burn::data::dataset::{Dataset, DatasetError};
use image::imageops::FilterType;

use crate::batch::ImageItem;
use crate::error::{Result, VisionError};

/// How pictures are brought to one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderOptions {
    /// Height after resizing.
    pub height: u32,
    /// Width after resizing.
    pub width: u32,
    /// One greyscale channel instead of three RGB channels.
    pub grayscale: bool,
}

impl FolderOptions {
    /// RGB pictures resized to `height x width`.
    pub fn rgb(height: u32, width: u32) -> Self {
        Self {
            height,
            width,
            grayscale: false,
        }
    }

    /// Greyscale pictures resized to `height x width`.
    pub fn gray(height: u32, width: u32) -> Self {
        Self {
            height,
            width,
            grayscale: true,
        }
    }

    /// Channels per picture.
    pub fn channels(&self) -> usize {
        if self.grayscale { 1 } else { 3 }
    }
}

/// Decoded, resized pictures and their classes.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    classes: Vec<String>,
    items: Vec<(Vec<u8>, usize)>,
    paths: Vec<PathBuf>,
    options: FolderOptions,
}

fn is_picture(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| VisionError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| VisionError::io(dir, err)))
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// Decodes one picture into channel-major bytes of the requested shape.
///
/// # Errors
/// [`VisionError::Io`] naming `path` when it cannot be opened; [`VisionError::Image`] when it
/// cannot be decoded.
pub fn load_picture(path: &Path, options: FolderOptions) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .map_err(|e| VisionError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| VisionError::io(path, e))?
        .decode()
        .map_err(|e| VisionError::Image {
            path: path.to_path_buf(),
            reason: format!("cannot decode: {e}"),
        })?;
    Ok(to_input(&img, options))
}

/// A decoded picture resized to `options`' shape, as channel-major bytes (grayscale, or RGB
/// planes): the input every classifier here is trained on.
pub fn to_input(img: &image::DynamicImage, options: FolderOptions) -> Vec<u8> {
    let img = img.resize_exact(options.width, options.height, FilterType::Triangle);
    let (h, w) = (options.height as usize, options.width as usize);
    if options.grayscale {
        img.to_luma8().into_raw()
    } else {
        // Interleaved RGB to channel-major.
        let rgb = img.to_rgb8().into_raw();
        let mut planar = vec![0u8; 3 * h * w];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[c * h * w + i] = px[c];
            }
        }
        planar
    }
}

impl ImageFolder {
    /// Opens `root`: every subfolder is a class, every PNG/JPEG inside it an example.
    ///
    /// # Errors
    /// [`VisionError::Io`] when a folder cannot be listed; [`VisionError::Dataset`] when there is
    /// no class folder or no picture.
    pub fn open(root: &Path, options: FolderOptions) -> Result<Self> {
        let class_dirs: Vec<PathBuf> = sorted_entries(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Err(VisionError::Dataset(format!(
                "{}: no class subfolders (expected root/CLASS/picture.png)",
                root.display()
            )));
        }
        let mut classes = Vec::new();
        let mut items = Vec::new();
        let mut paths = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            classes.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            for path in sorted_entries(dir)?
                .into_iter()
                .filter(|p| p.is_file() && is_picture(p))
            {
                items.push((load_picture(&path, options)?, label));
                paths.push(path);
            }
        }
        if items.is_empty() {
            return Err(VisionError::Dataset(format!(
                "{}: no PNG or JPEG pictures in the class folders",
                root.display()
            )));
        }
        Ok(Self {
            classes,
            items,
            paths,
            options,
        })
    }

    /// Class names, by label.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The file of item `i`.
    pub fn path(&self, i: usize) -> Option<&Path> {
        self.paths.get(i).map(PathBuf::as_path)
    }

    /// The shape options.
    pub fn options(&self) -> FolderOptions {
        self.options
    }
}

impl Dataset<ImageItem> for ImageFolder {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        let (pixels, label) = self.items.get(index).ok_or_else(|| {
            DatasetError::new(VisionError::Dataset(format!(
                "index {index} out of range for {} pictures",
                self.items.len()
            )))
        })?;
        Ok(ImageItem {
            pixels: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
            label: *label,
        })
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_classes_in_sorted_order_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        for (class, shade) in [("zebra", 200u8), ("ant", 10)] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            let img = image::RgbImage::from_pixel(8, 6, image::Rgb([shade, shade, shade]));
            img.save(dir.path().join(class).join("a.png")).unwrap();
            img.save(dir.path().join(class).join("b.jpg")).unwrap();
        }
        std::fs::write(dir.path().join("ant").join("notes.txt"), "not a picture").unwrap();
        let folder = ImageFolder::open(dir.path(), FolderOptions::rgb(4, 4)).unwrap();
        assert_eq!(folder.classes(), &["ant".to_string(), "zebra".to_string()]);
        assert_eq!(folder.len(), 4);
        let item = folder.get(0).unwrap();
        assert_eq!((item.label, item.pixels.len()), (0, 3 * 4 * 4));
        assert!(item.pixels.iter().all(|&p| (p - 10.0 / 255.0).abs() < 0.01));
        let gray = ImageFolder::open(dir.path(), FolderOptions::gray(2, 3)).unwrap();
        assert_eq!(gray.get(3).unwrap().pixels.len(), 6);
    }

    #[test]
    fn broken_pictures_and_empty_roots_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            ImageFolder::open(dir.path(), FolderOptions::gray(2, 2))
                .unwrap_err()
                .to_string()
                .contains("no class")
        );
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a").join("x.png"), b"definitely not a png").unwrap();
        let err = ImageFolder::open(dir.path(), FolderOptions::gray(2, 2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.png"), "{err}");
    }
}
