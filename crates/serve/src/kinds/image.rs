//! Image classifiers (`[[image_classifiers]]`, exported kiln-vision folders), each on its
//! batcher's thread; uploads are decoded on the request's side.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_vision::{ExportedClassifier, ImageItem, UploadDecoder};

use super::{Kind, LoadContext, model_err};
use crate::batcher::Batcher;
use crate::error::ServeError;

/// An image classifier: uploads are checked and decoded on the request's side (a blocking
/// task), the model's thread sees only decoded inputs.
#[derive(Clone)]
pub struct ImageClassifier {
    /// Decoded pictures in, class probabilities out.
    pub batcher: Batcher<ImageItem, Result<Vec<f32>, String>>,
    /// Class names.
    pub labels: Arc<Vec<String>>,
    /// The model's input shape, for decoding.
    pub decoder: UploadDecoder,
}

impl Kind for ImageClassifier {
    type Loaded = BTreeMap<String, ImageClassifier>;

    /// The image classifiers, each on its batcher's thread.
    fn load(ctx: &LoadContext<'_>) -> Result<Self::Loaded, ServeError> {
        let LoadContext {
            config,
            device,
            metrics,
            ..
        } = *ctx;
        let mut image_classifiers = BTreeMap::new();
        for m in &config.image_classifiers {
            let dir = config.resolve(&m.path)?;
            let model =
                ExportedClassifier::load(&dir, device).map_err(|e| model_err(&m.name, e))?;
            let labels = Arc::new(model.labels().to_vec());
            let decoder = model.decoder();
            let batcher = Batcher::spawn(
                &m.name,
                &config.batching,
                metrics,
                move |images: Vec<ImageItem>| {
                    let n = images.len();
                    let probs = model.classify(images);
                    if probs.len() != n {
                        return Err(format!("{} outputs for {n} pictures", probs.len()));
                    }
                    Ok(probs.into_iter().map(Ok).collect())
                },
            )
            .map_err(|e| model_err(&m.name, e))?;
            image_classifiers.insert(
                m.name.clone(),
                ImageClassifier {
                    batcher,
                    labels,
                    decoder,
                },
            );
        }
        Ok(image_classifiers)
    }
}
