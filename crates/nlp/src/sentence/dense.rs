//! sentence-transformers' `Dense` module: a linear layer with an optional bias and an
//! activation (identity or tanh) applied to the pooled sentence vector, as EmbeddingGemma's
//! two projections (768 -> 3072 -> 768) are. Its folder holds `config.json`
//! (`in_features`, `out_features`, `bias`, `activation_function`) and `model.safetensors`
//! (`linear.weight` `[out, in]`, `linear.bias`).

use std::path::Path;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::store::{PyTorchToBurnAdapter, SafetensorsStore};
use kiln_core::ops::linear;
use serde::Deserialize;

use crate::error::{NlpError, Result};
use crate::models::decoder_weights;

#[derive(Deserialize)]
struct DenseFile {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default)]
    activation_function: Option<String>,
}

fn yes() -> bool {
    true
}

/// One `Dense` module.
#[derive(Module, Debug)]
pub struct SentenceDense {
    linear: Linear,
    #[module(skip)]
    tanh: bool,
}

/// A [`SentenceDense`] on the host, for the CPU encoding path.
#[derive(Debug, Clone)]
pub(crate) struct HostDense {
    dense: crate::models::bert::cpu::Dense,
    tanh: bool,
}

impl HostDense {
    /// `[rows, in]` to `[rows, out]`.
    pub(crate) fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; x.len() / self.dense.d_in * self.dense.d_out];
        crate::models::bert::cpu::project(x, &self.dense, None, &mut out);
        if self.tanh {
            out.iter_mut().for_each(|v| *v = v.tanh());
        }
        out
    }
}

impl SentenceDense {
    /// Reads the module folder `dir`.
    ///
    /// # Errors
    /// [`NlpError::Io`] or [`NlpError::Config`] naming a missing or malformed `config.json`
    /// (an activation other than identity or tanh is named); [`NlpError::Weights`] naming a
    /// missing or mis-shaped tensor.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join("config.json");
        let bytes = std::fs::read(&path).map_err(|e| NlpError::io(&path, e))?;
        let c: DenseFile = serde_json::from_slice(&bytes).map_err(|e| NlpError::Config {
            path: path.clone(),
            reason: format!("not a sentence-transformers Dense config: {e}"),
        })?;
        let tanh = match c.activation_function.as_deref() {
            None | Some("torch.nn.modules.linear.Identity") => false,
            Some("torch.nn.modules.activation.Tanh") => true,
            Some(other) => {
                return Err(NlpError::Config {
                    path,
                    reason: format!(
                        "activation_function '{other}' is not supported (Identity, Tanh)"
                    ),
                });
            }
        };
        if c.in_features == 0 || c.out_features == 0 {
            return Err(NlpError::Config {
                path,
                reason: "in_features and out_features must be positive".into(),
            });
        }
        let model = Self {
            linear: LinearConfig::new(c.in_features, c.out_features)
                .with_bias(c.bias)
                .init(device),
            tanh,
        };
        decoder_weights::load(
            model,
            &[dir.join("model.safetensors")],
            |p| SafetensorsStore::from_file(p).with_from_adapter(PyTorchToBurnAdapter),
            |_| false,
        )
    }

    /// The weights copied to the host.
    pub(crate) fn to_host(&self) -> Result<HostDense> {
        Ok(HostDense {
            dense: crate::models::bert::cpu::dense(&self.linear)?,
            tanh: self.tanh,
        })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.linear.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.linear.weight.dims()[1]
    }

    /// `[B, in]` to `[B, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = linear(&self.linear, x);
        if self.tanh { y.tanh() } else { y }
    }
}
