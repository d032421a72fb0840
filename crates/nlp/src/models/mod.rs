//! Text models, one file per model, each a Burn Config + Module pair.

mod lstm_classifier;

pub use lstm_classifier::{LstmClassifier, LstmClassifierConfig};
