//! A trained image classifier as a self-contained folder, for serving: `classifier.json`
//! (the architecture's config, the input shape, the evaluation transforms and the class labels)
//! and `model.safetensors` (the weights, through `burn::store`). [`ExportedClassifier`] loads
//! such a folder and classifies PNG or JPEG bytes, resized to the model's input as in
//! training (the decoding of [`crate::data::folder::load_picture`]; uploads through
//! [`UploadDecoder`]).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::batch::{ImageBatcher, ImageItem};
use crate::error::{Result, VisionError};
use crate::models::{ImageClassifier, LeNet5, LeNet5Config, Mlp, MlpConfig, ResNet, ResNetConfig};
use crate::predict::Predictor;
use crate::transform::Pipeline;
use crate::upload::UploadDecoder;

/// The metadata file's name inside an exported folder.
pub const META_FILE: &str = "classifier.json";
/// The weights file's name inside an exported folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The architecture of an exported classifier, with its Burn config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "snake_case")]
pub enum Architecture {
    /// [`Mlp`].
    Mlp(MlpConfig),
    /// [`LeNet5`].
    Lenet5(LeNet5Config),
    /// [`ResNet`].
    Resnet(ResNetConfig),
}

/// What `classifier.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportMeta {
    /// The model's architecture and config.
    pub architecture: Architecture,
    /// Input channels (1: pictures are read as grayscale, 3: as RGB).
    pub channels: usize,
    /// Input height in pixels.
    pub height: usize,
    /// Input width in pixels.
    pub width: usize,
    /// The transforms of training (only the deterministic ones run at inference).
    pub pipeline: Pipeline,
    /// Class names, in the order of the model's outputs.
    pub labels: Vec<String>,
}

impl ExportMeta {
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| VisionError::Image {
            path: path.to_owned(),
            reason,
        };
        if !(self.channels == 1 || self.channels == 3) {
            return Err(bad(format!(
                "channels is {}, expected 1 or 3",
                self.channels
            )));
        }
        if self.height == 0 || self.width == 0 || self.height > 4096 || self.width > 4096 {
            return Err(bad(format!(
                "input size {}x{} is outside 1..=4096",
                self.height, self.width
            )));
        }
        let classes = match &self.architecture {
            Architecture::Mlp(c) => c.num_classes,
            Architecture::Lenet5(c) => c.num_classes,
            Architecture::Resnet(c) => c.num_classes,
        };
        if self.labels.len() != classes {
            return Err(bad(format!(
                "{} labels for a model of {classes} classes",
                self.labels.len()
            )));
        }
        Ok(())
    }
}

/// The loaded model, whichever its architecture.
#[derive(Debug, Clone)]
enum AnyModel {
    Mlp(Box<Predictor<Mlp>>),
    Lenet5(Box<Predictor<LeNet5>>),
    Resnet(Box<Predictor<ResNet>>),
}

/// A classifier read from an exported folder.
#[derive(Debug, Clone)]
pub struct ExportedClassifier {
    meta: ExportMeta,
    model: AnyModel,
}

/// Writes `model` and `meta` into `dir` (created when missing; existing files replaced).
///
/// # Errors
/// [`VisionError::Io`] when the folder or a file cannot be written; [`VisionError::Image`] for
/// metadata that does not hold together (labels, shape, transforms).
pub fn export_classifier<M: ImageClassifier>(
    model: &M,
    meta: &ExportMeta,
    dir: impl AsRef<Path>,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| VisionError::io(dir, e))?;
    let meta_path = dir.join(META_FILE);
    meta.check(&meta_path)?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| VisionError::Image {
        path: meta_path.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&meta_path, json).map_err(|e| VisionError::io(&meta_path, e))?;
    let weights = dir.join(WEIGHTS_FILE);
    let mut store = SafetensorsStore::from_file(&weights).overwrite(true);
    model.save_into(&mut store).map_err(|e| VisionError::Image {
        path: weights,
        reason: format!("cannot save the weights: {e}"),
    })
}

fn load_weights<M: Module>(model: M, path: &Path) -> Result<M> {
    let mut model = model;
    let mut store = SafetensorsStore::from_file(path);
    model
        .load_from(&mut store)
        .map_err(|e| VisionError::Image {
            path: path.to_owned(),
            reason: format!("weights do not fit the architecture in {META_FILE}: {e}"),
        })?;
    Ok(model)
}

impl ExportedClassifier {
    /// Loads a folder written by [`export_classifier`] onto `device`.
    ///
    /// # Errors
    /// [`VisionError::Io`] for a missing metadata or weights file; [`VisionError::Image`] for
    /// metadata that does not parse or hold together; the weights' own errors when they do not fit
    /// the architecture.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let meta_path = dir.join(META_FILE);
        let bytes = std::fs::read(&meta_path).map_err(|e| VisionError::io(&meta_path, e))?;
        let meta: ExportMeta = serde_json::from_slice(&bytes).map_err(|e| VisionError::Image {
            path: meta_path.clone(),
            reason: format!("not a classifier description: {e}"),
        })?;
        meta.check(&meta_path)?;
        let weights: PathBuf = dir.join(WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(VisionError::io(
                &weights,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no weights file"),
            ));
        }
        let batcher = ImageBatcher::new(meta.channels, meta.height, meta.width)
            .with_pipeline(meta.pipeline.clone());
        let model = match &meta.architecture {
            Architecture::Mlp(c) => AnyModel::Mlp(Box::new(Predictor::new(
                load_weights(c.init(device), &weights)?,
                &batcher,
                device,
            ))),
            Architecture::Lenet5(c) => AnyModel::Lenet5(Box::new(Predictor::new(
                load_weights(c.init(device), &weights)?,
                &batcher,
                device,
            ))),
            Architecture::Resnet(c) => AnyModel::Resnet(Box::new(Predictor::new(
                load_weights(c.init(device), &weights)?,
                &batcher,
                device,
            ))),
        };
        Ok(Self { meta, model })
    }

    /// The folder's metadata.
    pub fn meta(&self) -> &ExportMeta {
        &self.meta
    }

    /// Class names, in the order of [`classify`](Self::classify)'s probabilities.
    pub fn labels(&self) -> &[String] {
        &self.meta.labels
    }

    /// The decoder of uploads for this model's input (cheap to copy to other threads).
    pub fn decoder(&self) -> UploadDecoder {
        UploadDecoder::new(self.meta.channels, self.meta.height, self.meta.width)
    }

    /// Decodes PNG or JPEG bytes into the model's input (resized, grayscale or RGB,
    /// channel-major, in `[0, 1]`); `name` labels errors (a file name or "upload"). See
    /// [`UploadDecoder::decode`], which bounds the picture's pixels before decoding.
    ///
    /// # Errors
    /// [`VisionError::Image`] naming `name` for bytes that are not a PNG or JPEG, do not decode, or
    /// hold more pixels than the decoder allows.
    pub fn decode(&self, name: &str, bytes: &[u8]) -> Result<ImageItem> {
        self.decoder().decode(name, bytes)
    }

    /// Class probabilities, one row per decoded item (rows sum to 1).
    pub fn classify(&self, items: Vec<ImageItem>) -> Vec<Vec<f32>> {
        match &self.model {
            AnyModel::Mlp(p) => p.predict_items(items),
            AnyModel::Lenet5(p) => p.predict_items(items),
            AnyModel::Resnet(p) => p.predict_items(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, value: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(width, height, image::Luma([value]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn exported_classifier_round_trips_and_rejects_bad_input() {
        let _lock = crate::rng_lock();
        let device = kiln_core::backend::device("cpu").unwrap();
        let model = LeNet5Config::new().init(&device);
        let meta = ExportMeta {
            architecture: Architecture::Lenet5(LeNet5Config::new()),
            channels: 1,
            height: 28,
            width: 28,
            pipeline: Pipeline::new(),
            labels: (0..10).map(|d| d.to_string()).collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        export_classifier(&model, &meta, dir.path()).unwrap();
        let loaded = ExportedClassifier::load(dir.path(), &device).unwrap();
        assert_eq!(loaded.labels().len(), 10);

        // A 56x56 picture is resized to 28x28 and scored as the in-memory model scores it.
        let item = loaded.decode("upload", &png(56, 56, 255)).unwrap();
        assert_eq!(item.pixels.len(), 28 * 28);
        assert!(item.pixels.iter().all(|&p| (p - 1.0).abs() < 1e-6));
        let probs = loaded.classify(vec![item.clone()]);
        let direct = Predictor::new(model.clone(), &ImageBatcher::new(1, 28, 28), &device)
            .predict_items(vec![item]);
        assert_eq!(probs.len(), 1);
        assert!((probs[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for (a, b) in probs[0].iter().zip(&direct[0]) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }

        let err = loaded.decode("upload", b"GIF89a....").unwrap_err();
        assert!(err.to_string().contains("upload"), "{err}");
        let err = loaded.decode("upload", b"not an image at all").unwrap_err();
        assert!(err.to_string().contains("PNG or JPEG"), "{err}");

        // Labels that do not match the model's classes are refused.
        let mut short = meta.clone();
        short.labels.pop();
        let err = export_classifier(&model, &short, tempfile::tempdir().unwrap().path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("9 labels for a model of 10 classes"), "{err}");

        // Weights of another architecture are refused, naming the file.
        let other = tempfile::tempdir().unwrap();
        let mut wrong = meta.clone();
        wrong.architecture = Architecture::Mlp(MlpConfig::new());
        export_classifier(&model_of_mlp(&device), &wrong, other.path()).unwrap();
        std::fs::copy(dir.path().join(META_FILE), other.path().join(META_FILE)).unwrap();
        let err = ExportedClassifier::load(other.path(), &device).unwrap_err();
        assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
    }

    fn model_of_mlp(device: &Device) -> Mlp {
        MlpConfig::new().init(device)
    }
}
