//! A pretrained decoder folder ready to write text: the model (GPT-2, or the Llama family on
//! the packed CPU path or through Burn), its `tokenizer.json`, its end-of-sequence ids
//! (`generation_config.json`, else `config.json`) and its chat template, behind one
//! [`TextGenerator::generate`]. A GGUF file (`*.gguf`) stands for a folder: its model runs
//! on the packed path with its quantized weights mapped (a `gemma3` file: dequantized onto
//! Burn on the CPU, which has no packed Gemma yet), its tokenizer, end-of-sequence id and
//! chat template come from its metadata. Which model a folder or file holds is the
//! [`DecoderRegistry`]'s business. The `generate` and `rag` examples, and a server, use it.

use std::path::Path;

use burn::prelude::*;

use super::registry::{Decoder, DecoderRegistry, Engine, LoadOptions};
use super::{BatchLimits, ContinuousBatch, Generation, GenerationConfig};
use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{NlpError, Result};
use crate::gguf::GgufFile;
use crate::models::Precision;
use crate::models::hf_config::{ids, read_json};
use crate::tokenizer::{HfTokenizer, Tokenizer};

/// A loaded decoder folder (see the module docs).
pub struct TextGenerator {
    model: Box<dyn Decoder>,
    model_type: String,
    tokenizer: HfTokenizer,
    eos: Vec<u32>,
    chat: Option<ChatTemplate>,
}

impl std::fmt::Debug for TextGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextGenerator")
            .field("model_type", &self.model_type)
            .field("engine", &self.engine())
            .field("eos", &self.eos)
            .field("chat_template", &self.chat.is_some())
            .finish()
    }
}

impl TextGenerator {
    /// Loads the folder `dir` (or a `.gguf` file) on `device` with Kiln's decoders
    /// ([`DecoderRegistry::builtin`]); `precision` applies to the packed path.
    ///
    /// # Errors
    /// A folder without `config.json` or `tokenizer.json`, an unsupported `model_type`, or
    /// [`Engine::Packed`] on a device that is not a CPU is an error naming it.
    pub fn load(
        dir: impl AsRef<Path>,
        device: &Device,
        engine: Engine,
        precision: Precision,
    ) -> Result<Self> {
        Self::load_with(&DecoderRegistry::builtin(), dir, device, engine, precision)
    }

    /// [`Self::load`] with the decoders of `registry` (a program's own among them).
    ///
    /// # Errors
    /// As [`Self::load`]; a `model_type` the registry lacks names the ones it has.
    pub fn load_with(
        registry: &DecoderRegistry,
        dir: impl AsRef<Path>,
        device: &Device,
        engine: Engine,
        precision: Precision,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.is_file()
            && dir
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            return Self::load_gguf(registry, dir, device, engine);
        }
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?.ok_or_else(|| NlpError::Config {
            path: config_path.clone(),
            reason: "no config.json in this folder".into(),
        })?;
        let model_type = config["model_type"]
            .as_str()
            .ok_or_else(|| NlpError::Config {
                path: config_path.clone(),
                reason: "no model_type".into(),
            })?
            .to_owned();
        let generation = read_json(&dir.join("generation_config.json"))?;
        let eos = generation
            .as_ref()
            .map(|g| ids(&g["eos_token_id"]))
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| ids(&config["eos_token_id"]));
        let tokenizer = HfTokenizer::from_file(dir.join("tokenizer.json"))?;
        let options = LoadOptions { engine, precision };
        let model = registry.load_folder(&model_type, dir, &config_path, device, &options)?;
        Ok(Self {
            model,
            model_type,
            tokenizer,
            eos,
            chat: ChatTemplate::from_folder(dir)?,
        })
    }

    /// Sets how a GGUF model's products treat their activations
    /// ([`LlamaCpu::with_activations`](crate::models::LlamaCpu::with_activations)); nothing for other models.
    pub fn with_activations(mut self, activations: crate::gguf::Activations) -> Self {
        self.model = self.model.with_activations(activations);
        self
    }

    /// A GGUF file (see the module docs): on the CPU, the packed path (Gemma 3: Burn).
    fn load_gguf(
        registry: &DecoderRegistry,
        path: &Path,
        device: &Device,
        engine: Engine,
    ) -> Result<Self> {
        let cpu = kiln_core::Backend::of(device).is_some_and(|b| b.is_cpu());
        if engine == Engine::Burn || !cpu {
            return Err(NlpError::Input(format!(
                "{}: GGUF models run on the packed CPU engine (asked: {engine:?} on {})",
                path.display(),
                kiln_core::backend::describe(device)
            )));
        }
        let file = GgufFile::open(path)?;
        let model = registry.load_gguf(&file, path)?;
        let model_type = file
            .str("general.architecture")
            .map_err(NlpError::from)?
            .to_string();
        let tokenizer = crate::gguf::tokenizer::tokenizer(&file)?;
        let mut eos = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
            if file.get(key).is_some() {
                let id = file.usize(key).map_err(NlpError::from)? as u32;
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }
        let chat = match file.get("tokenizer.chat_template") {
            None => None,
            Some(_) => {
                let source = file
                    .str("tokenizer.chat_template")
                    .map_err(NlpError::from)?;
                let tokens = file
                    .strings("tokenizer.ggml.tokens")
                    .map_err(NlpError::from)?;
                let mut named = serde_json::Map::new();
                for (name, key) in [
                    ("bos_token", "tokenizer.ggml.bos_token_id"),
                    ("eos_token", "tokenizer.ggml.eos_token_id"),
                    ("pad_token", "tokenizer.ggml.padding_token_id"),
                    ("unk_token", "tokenizer.ggml.unknown_token_id"),
                ] {
                    if file.get(key).is_some()
                        && let Some(t) = tokens.get(file.usize(key).map_err(NlpError::from)?)
                    {
                        named.insert(name.into(), (*t).into());
                    }
                }
                Some(ChatTemplate::from_source(source, path, named)?)
            }
        };
        Ok(Self {
            model,
            model_type,
            tokenizer,
            eos,
            chat,
        })
    }

    /// `model_type` of `config.json` (a GGUF file's `general.architecture`).
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// `burn`, `packed (f32)`, `packed (bf16)` or `gguf (Q4_1, Q8_0, F32)` (the block types
    /// of a GGUF model, most bytes first).
    pub fn engine(&self) -> String {
        self.model.engine()
    }

    /// Bytes of weights one decoded token reads (the packed path), if known.
    pub fn weight_bytes(&self) -> Option<usize> {
        self.model.packed().map(|m| m.weight_bytes())
    }

    /// The end-of-sequence ids of the folder.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// The folder's tokenizer.
    pub fn tokenizer(&self) -> &HfTokenizer {
        &self.tokenizer
    }

    /// The folder's chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// The longest context.
    pub fn max_positions(&self) -> usize {
        self.model.max_positions()
    }

    /// The prompt's ids: `text` as the tokenizer encodes it (with its special tokens).
    ///
    /// # Errors
    /// The tokenizer's failure, as [`NlpError::Tokenizer`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text)?.ids)
    }

    /// The ids of `messages` rendered by the chat template with the generation prompt (as
    /// transformers' `apply_chat_template(..., add_generation_prompt=True)`).
    ///
    /// # Errors
    /// [`NlpError::Input`] when the folder has no template; the template's rendering errors (it
    /// raised, or a message it cannot take); the tokenizer's.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.encode_chat_with_tools(messages, None)
    }

    /// [`Self::encode_chat`] with tool definitions (JSON schemas as transformers passes
    /// `apply_chat_template(..., tools=[...])`), for templates that render them.
    ///
    /// # Errors
    /// As [`Self::encode_chat`].
    pub fn encode_chat_with_tools(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[serde_json::Value]>,
    ) -> Result<Vec<u32>> {
        let template = self.chat.as_ref().ok_or_else(|| {
            NlpError::Input(
                "this folder has no chat template (chat_template.jinja, or chat_template in \
                 tokenizer_config.json)"
                    .into(),
            )
        })?;
        let text = template.render_with_tools(messages, tools, true)?;
        Ok(self.tokenizer.encode_plain(&text)?.ids)
    }

    /// Text of `ids`.
    ///
    /// # Errors
    /// The tokenizer's failure (an id past its vocabulary).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    /// A [`ContinuousBatch`] on this model with the folder's end-of-sequence ids and
    /// tokenizer: many generations at once, each token-identical to [`Self::generate`]'s
    /// when greedy and its prompt is read in one chunk. `None` when the model does not run
    /// on the packed CPU path (GPT-2, the Burn engine).
    ///
    /// # Errors
    /// [`NlpError::Input`] for bad `limits` (naming the field).
    pub fn continuous(&self, limits: BatchLimits) -> Result<Option<ContinuousBatch<'_>>> {
        let Some(m) = self.model.packed() else {
            return Ok(None);
        };
        let decode = |ids: &[u32]| self.tokenizer.decode(ids).unwrap_or_default();
        ContinuousBatch::new(m, &self.eos, decode, limits).map(Some)
    }

    /// Continues `prompt` under `config` (the folder's end-of-sequence ids are added to
    /// it); `on_token` sees each new id (return `false` to stop).
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty prompt, one past the context or a bad `config`.
    pub fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generation> {
        let mut config = config.clone();
        for &id in &self.eos {
            if !config.eos_token_ids.contains(&id) {
                config.eos_token_ids.push(id);
            }
        }
        let decode = |ids: &[u32]| self.tokenizer.decode(ids).unwrap_or_default();
        self.model.generate(prompt, &config, &decode, &mut on_token)
    }
}
