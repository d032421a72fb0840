//! A pretrained decoder folder ready to write text: the model (GPT-2, or the Llama family on
//! the packed CPU path or through Burn), its `tokenizer.json`, its end-of-sequence ids
//! (`generation_config.json`, else `config.json`) and its chat template, behind one
//! [`TextGenerator::generate`]. A GGUF file (`*.gguf`) stands for a folder: its model runs
//! on the packed path with its quantized weights mapped, its tokenizer, end-of-sequence id
//! and chat template come from its metadata. The `generate` and `rag` examples, and a
//! server, use it.

use std::path::Path;

use burn::prelude::*;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{NlpError, Result};
use crate::generate::continuous::{BatchLimits, ContinuousBatch};
use crate::generate::{Generation, GenerationConfig};
use crate::gguf::GgufFile;
use crate::models::decoding::generate;
use crate::models::{Gpt2, Llama, LlamaCpu, Precision};
use crate::tokenizer::{HfTokenizer, Tokenizer};

/// How a Llama-family model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The packed CPU path on a CPU device, Burn elsewhere.
    #[default]
    Auto,
    /// [`LlamaCpu`] (CPU devices only).
    Packed,
    /// The Burn modules, on any device.
    Burn,
}

enum Model {
    Gpt2(Gpt2),
    Llama(Llama),
    Packed(LlamaCpu),
}

/// A loaded decoder folder (see the module docs).
pub struct TextGenerator {
    model: Model,
    model_type: String,
    tokenizer: HfTokenizer,
    eos: Vec<u32>,
    chat: Option<ChatTemplate>,
    device: Device,
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

/// A JSON file, or `None` when there is none.
pub(crate) fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| NlpError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| NlpError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// One id or a list of ids.
/// The ids of a config's `eos_token_id` (a number or a list).
pub(crate) fn ids(v: &serde_json::Value) -> Vec<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl TextGenerator {
    /// Loads the folder `dir` on `device`; `precision` applies to the packed path.
    ///
    /// A folder without `config.json` or `tokenizer.json`, an unsupported `model_type`, or
    /// [`Engine::Packed`] on a device that is not a CPU is an error naming it.
    pub fn load(
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
            return Self::load_gguf(dir, device, engine);
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
        let cpu = kiln_core::Backend::of(device).is_some_and(|b| b.is_cpu());
        let packed = match engine {
            Engine::Auto => cpu,
            Engine::Packed if !cpu => {
                return Err(NlpError::Input(format!(
                    "the packed engine runs on the CPU, not on {}",
                    kiln_core::backend::describe(device)
                )));
            }
            Engine::Packed => true,
            Engine::Burn => false,
        };
        let model = match model_type.as_str() {
            "gpt2" => Model::Gpt2(Gpt2::from_folder(dir, device)?.1),
            "llama" | "qwen2" | "mistral" => {
                let llama = Llama::from_folder(dir, device)?.1;
                if packed {
                    Model::Packed(LlamaCpu::from_llama(&llama, precision)?)
                } else {
                    Model::Llama(llama)
                }
            }
            other => {
                return Err(NlpError::Config {
                    path: config_path,
                    reason: format!(
                        "model_type '{other}' is not supported (gpt2, llama, qwen2, mistral)"
                    ),
                });
            }
        };
        Ok(Self {
            model,
            model_type,
            tokenizer,
            eos,
            chat: ChatTemplate::from_folder(dir)?,
            device: device.clone(),
        })
    }

    /// Sets how a GGUF model's products treat their activations
    /// ([`LlamaCpu::with_activations`]); nothing for other models.
    pub fn with_activations(mut self, activations: crate::gguf::Activations) -> Self {
        if let Model::Packed(m) = self.model {
            self.model = Model::Packed(m.with_activations(activations));
        }
        self
    }

    /// A GGUF file (see the module docs): always the packed CPU path.
    fn load_gguf(path: &Path, device: &Device, engine: Engine) -> Result<Self> {
        let cpu = kiln_core::Backend::of(device).is_some_and(|b| b.is_cpu());
        if engine == Engine::Burn || !cpu {
            return Err(NlpError::Input(format!(
                "{}: GGUF models run on the packed CPU engine (asked: {engine:?} on {})",
                path.display(),
                kiln_core::backend::describe(device)
            )));
        }
        let file = GgufFile::open(path)?;
        let (config, model) = LlamaCpu::from_gguf(&file)?;
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
            model: Model::Packed(model),
            model_type: config.architecture,
            tokenizer,
            eos,
            chat,
            device: device.clone(),
        })
    }

    /// `model_type` of `config.json` (a GGUF file's `general.architecture`).
    pub fn model_type(&self) -> &str {
        &self.model_type
    }

    /// `burn`, `packed (f32)`, `packed (bf16)` or `gguf (Q4_1, Q8_0, F32)` (the block types
    /// of a GGUF model, most bytes first).
    pub fn engine(&self) -> String {
        match &self.model {
            Model::Packed(m) if !m.block_types().is_empty() => {
                let types: Vec<&str> = m.block_types().iter().map(|t| t.name()).collect();
                format!("gguf ({})", types.join(", "))
            }
            Model::Packed(m) => match m.precision() {
                Precision::F32 => "packed (f32)".into(),
                Precision::Bf16 => "packed (bf16)".into(),
            },
            _ => "burn".into(),
        }
    }

    /// Bytes of weights one decoded token reads (the packed path), if known.
    pub fn weight_bytes(&self) -> Option<usize> {
        match &self.model {
            Model::Packed(m) => Some(m.weight_bytes()),
            _ => None,
        }
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
        match &self.model {
            Model::Gpt2(m) => m.max_positions(),
            Model::Llama(m) => m.max_positions(),
            Model::Packed(m) => m.max_positions(),
        }
    }

    /// The prompt's ids: `text` as the tokenizer encodes it (with its special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text)?.ids)
    }

    /// The ids of `messages` rendered by the chat template with the generation prompt (as
    /// transformers' `apply_chat_template(..., add_generation_prompt=True)`); an error when
    /// the folder has no template.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.encode_chat_with_tools(messages, None)
    }

    /// [`Self::encode_chat`] with tool definitions (JSON schemas as transformers passes
    /// `apply_chat_template(..., tools=[...])`), for templates that render them.
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
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    /// A [`ContinuousBatch`] on this model with the folder's end-of-sequence ids and
    /// tokenizer: many generations at once, each token-identical to [`Self::generate`]'s
    /// when greedy and its prompt is read in one chunk. `None` when the model does not run
    /// on the packed CPU path (GPT-2, the Burn engine); bad `limits` are an error.
    pub fn continuous(&self, limits: BatchLimits) -> Result<Option<ContinuousBatch<'_>>> {
        let Model::Packed(m) = &self.model else {
            return Ok(None);
        };
        let decode = |ids: &[u32]| self.tokenizer.decode(ids).unwrap_or_default();
        ContinuousBatch::new(m, &self.eos, decode, limits).map(Some)
    }

    /// Continues `prompt` under `config` (the folder's end-of-sequence ids are added to
    /// it); `on_token` sees each new id (return `false` to stop).
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
        if let Model::Packed(m) = &self.model {
            return m.generate(prompt, &config, &decode, on_token);
        }
        let prompts = vec![prompt.to_vec()];
        let on_row = |_row: usize, id: u32| on_token(id);
        let out = match &self.model {
            Model::Gpt2(m) => generate(m, &prompts, &config, &self.device, &decode, on_row)?,
            Model::Llama(m) => generate(m, &prompts, &config, &self.device, &decode, on_row)?,
            Model::Packed(_) => unreachable!("handled above"),
        };
        out.into_iter()
            .next()
            .ok_or_else(|| NlpError::Input("generation returned no row".into()))
    }
}
