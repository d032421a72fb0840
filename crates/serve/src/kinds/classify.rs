//! Text classifiers (`[[classifiers]]`, fine-tuned BERT folders), each on its batcher's
//! thread.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_nlp::TextClassifierModel;

use super::{Kind, LoadContext, model_err};
use crate::batcher::Batcher;
use crate::error::ServeError;

/// A classifier behind its batcher.
#[derive(Clone)]
pub struct Classifier<I> {
    /// Inputs in, class probabilities (or a per-input error) out.
    pub batcher: Batcher<I, Result<Vec<f32>, String>>,
    /// Class names.
    pub labels: Arc<Vec<String>>,
}

impl Kind for Classifier<String> {
    type Loaded = BTreeMap<String, Classifier<String>>;

    /// The text classifiers, each on its batcher's thread.
    fn load(ctx: &LoadContext<'_>) -> Result<Self::Loaded, ServeError> {
        let LoadContext {
            config,
            device,
            metrics,
            ..
        } = *ctx;
        let mut classifiers = BTreeMap::new();
        for m in &config.classifiers {
            let dir = config.resolve(&m.path)?;
            let model =
                TextClassifierModel::load(&dir, device).map_err(|e| model_err(&m.name, e))?;
            let labels = Arc::new(model.labels().to_vec());
            let batcher = Batcher::spawn(
                &m.name,
                &config.batching,
                metrics,
                move |texts: Vec<String>| {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let rows = model.classify(&refs).map_err(|e| e.to_string())?;
                    Ok(rows.into_iter().map(Ok).collect())
                },
            )
            .map_err(|e| model_err(&m.name, e))?;
            classifiers.insert(m.name.clone(), Classifier { batcher, labels });
        }
        Ok(classifiers)
    }
}
