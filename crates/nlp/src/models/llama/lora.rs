//! Low-rank adapters on a [`Llama`]'s seven linear layers of every block: added (the rest
//! frozen), merged into the weights, saved and loaded as safetensors.

use std::path::Path;

use burn::prelude::*;

use super::{LayerLora, Llama};
use crate::error::Result;
use crate::models::lora::{self, LoraConfig};

impl Llama {
    /// The model frozen, with a low-rank adapter on each of the seven linear layers of every
    /// block (q, k, v, o, gate, up, down): only the adapters train. Replaces adapters
    /// already there.
    ///
    /// # Errors
    /// [`NlpError::Input`](crate::NlpError::Input) for a rank or alpha out of range.
    pub fn with_lora(self, config: &LoraConfig, device: &Device) -> Result<Self> {
        config.check()?;
        let mut model = self.no_grad();
        for layer in &mut model.layers {
            let (at, mlp) = (&layer.self_attn, &layer.mlp);
            layer.lora = Some(LayerLora {
                q_proj: config.for_linear(&at.q_proj, device),
                k_proj: config.for_linear(&at.k_proj, device),
                v_proj: config.for_linear(&at.v_proj, device),
                o_proj: config.for_linear(&at.o_proj, device),
                gate_proj: config.for_linear(&mlp.gate_proj, device),
                up_proj: config.for_linear(&mlp.up_proj, device),
                down_proj: config.for_linear(&mlp.down_proj, device),
            });
        }
        Ok(model)
    }

    /// Whether any block carries adapters.
    pub fn has_lora(&self) -> bool {
        self.layers.iter().any(|l| l.lora.is_some())
    }

    /// The adapters folded into the weights (`W + s A B`) and removed.
    pub fn merge_lora(mut self) -> Self {
        for layer in &mut self.layers {
            let Some(l) = layer.lora.take() else { continue };
            let at = &mut layer.self_attn;
            at.q_proj = lora::merge(at.q_proj.clone(), &l.q_proj);
            at.k_proj = lora::merge(at.k_proj.clone(), &l.k_proj);
            at.v_proj = lora::merge(at.v_proj.clone(), &l.v_proj);
            at.o_proj = lora::merge(at.o_proj.clone(), &l.o_proj);
            let mlp = &mut layer.mlp;
            mlp.gate_proj = lora::merge(mlp.gate_proj.clone(), &l.gate_proj);
            mlp.up_proj = lora::merge(mlp.up_proj.clone(), &l.up_proj);
            mlp.down_proj = lora::merge(mlp.down_proj.clone(), &l.down_proj);
        }
        self
    }

    /// Saves the adapters as safetensors ([`lora::save_adapters`]).
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) or [`NlpError::Weights`](crate::NlpError::Weights) when the file cannot be written.
    pub fn save_adapters(&self, config: &LoraConfig, path: &Path) -> Result<()> {
        lora::save_adapters(self, config, &[], path)
    }

    /// Loads adapters saved by [`Llama::save_adapters`] into a model built with
    /// [`Llama::with_lora`] of the same rank.
    ///
    /// # Errors
    /// [`NlpError::Io`](crate::NlpError::Io) when the file cannot be read; [`NlpError::Weights`](crate::NlpError::Weights) naming a missing or
    /// mis-shaped tensor.
    pub fn load_adapters(self, path: &Path) -> Result<Self> {
        lora::load_adapters(self, &[], path)
    }
}
