//! Text models, one file per model, each a Burn Config + Module pair.

mod bert;
mod bert_classifier;
mod lstm_classifier;

pub use bert::{
    Bert, BertAttention, BertConfig, BertEmbeddings, BertEncoder, BertIntermediate, BertLayer,
    BertOutput, BertSelfAttention,
};
pub use bert_classifier::BertClassifier;
pub use lstm_classifier::{LstmClassifier, LstmClassifierConfig};
