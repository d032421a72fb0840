//! Text models, one file per model, each a Burn Config + Module pair.

mod attention;
pub(crate) mod bert;
mod bert_classifier;
mod char_lstm;
mod cnn_classifier;
pub(crate) mod decoder_weights;
pub(crate) mod gemma3;
mod gpt;
mod gpt2;
pub(crate) mod hf_config;
pub(crate) mod llama;
pub(crate) mod llama_cpu;
pub mod lm;
pub mod lora;
mod lstm_classifier;
pub(crate) mod pooling;
pub mod rnn;
mod seq2seq;
mod transformer_classifier;

pub use attention::{Attention, AttentionConfig, AttentionKind, AttentionMemory};
pub use bert::{
    Bert, BertAttention, BertConfig, BertCpu, BertEmbeddings, BertEncoder, BertIntermediate,
    BertLayer, BertLayerLora, BertOutput, BertSelfAttention, gelu_exact,
};
pub use bert_classifier::BertClassifier;
pub use char_lstm::{CharLstm, CharLstmConfig};
pub use cnn_classifier::{CnnClassifier, CnnClassifierConfig};
pub use decoder_weights::weight_files;
pub use gemma3::{
    Gemma3, Gemma3Attention, Gemma3Config, Gemma3Cpu, Gemma3Layer, Gemma3Mlp, Gemma3RmsNorm,
    GemmaRope,
};
pub use gpt::{Gpt, GptConfig};
pub use gpt2::{BlockLora as Gpt2BlockLora, Gpt2, Gpt2Config};
pub use llama::{LayerLora as LlamaLayerLora, Llama, LlamaConfig, RopeScaling};
pub use llama_cpu::{LlamaCpu, LlamaCpuCache, Precision};
pub use lm::{LanguageModel, LmBatch, LmBatcher, Windows};
pub use lora::{Lora, LoraConfig};
pub use lstm_classifier::{LstmClassifier, LstmClassifierConfig};
pub use rnn::{RnnEncoder, RnnEncoderConfig, RnnKind};
pub use seq2seq::{Decoded, PairItem, Seq2Seq, Seq2SeqBatch, Seq2SeqBatcher, Seq2SeqConfig};
pub use transformer_classifier::{TransformerClassifier, TransformerClassifierConfig};
