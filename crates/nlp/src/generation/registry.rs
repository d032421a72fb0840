//! From a model's name to a loaded decoder: the [`DecoderRegistry`] maps a Hugging Face
//! folder's `config.json` `model_type` (and a GGUF file's `general.architecture`) to the
//! function that loads it as a [`Decoder`], the one interface
//! [`TextGenerator`](super::TextGenerator) drives. Adding a decoder is one model file (the
//! model, its [`CachedDecoder`] implementation) plus one line in
//! [`DecoderRegistry::builtin`]; a program can register its own with [`DecoderRegistry::with`]
//! and load through [`TextGenerator::load_with`](super::TextGenerator::load_with).

use std::path::Path;

use burn::prelude::*;

use super::{CachedDecoder, Generation, GenerationConfig, generate_cached};
use crate::error::{NlpError, Result};
use crate::gguf::{Activations, GgufFile};
use crate::models::{Gemma3, Gpt2, Llama, LlamaCpu, Precision};

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

/// What a loader is asked for besides the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// The engine (for models that have a packed CPU form).
    pub engine: Engine,
    /// The packed path's weight precision.
    pub precision: Precision,
}

impl LoadOptions {
    /// Whether the model should run on the packed CPU path on `device`: [`Engine::Auto`] on
    /// a CPU device or [`Engine::Packed`].
    ///
    /// # Errors
    /// [`NlpError::Input`] for [`Engine::Packed`] on a device that is not a CPU.
    pub fn packed(&self, device: &Device) -> Result<bool> {
        let cpu = kiln_core::Backend::of(device).is_some_and(|b| b.is_cpu());
        match self.engine {
            Engine::Auto => Ok(cpu),
            Engine::Packed if !cpu => Err(NlpError::Input(format!(
                "the packed engine runs on the CPU, not on {}",
                kiln_core::backend::describe(device)
            ))),
            Engine::Packed => Ok(true),
            Engine::Burn => Ok(false),
        }
    }
}

/// A loaded decoder as [`TextGenerator`](super::TextGenerator) drives it, whatever its
/// architecture and engine.
pub trait Decoder: Send + Sync {
    /// Continues `prompt` under `config` with a fresh cache; `on_token` sees each new id
    /// (return `false` to stop), `decode` turns ids into text for stop strings.
    ///
    /// # Errors
    /// [`NlpError::Input`] for an empty prompt, one past the context or a bad `config`; the model's
    /// own errors.
    fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        decode: &dyn Fn(&[u32]) -> String,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation>;

    /// The longest context.
    fn max_positions(&self) -> usize;

    /// What runs it: `burn` by default.
    fn engine(&self) -> String {
        "burn".into()
    }

    /// The packed CPU model behind it, if any (continuous batching, weight bytes).
    fn packed(&self) -> Option<&LlamaCpu> {
        None
    }

    /// Sets how a quantized model's products treat their activations; nothing by default.
    fn with_activations(self: Box<Self>, _activations: Activations) -> Box<dyn Decoder>;
}

/// A [`CachedDecoder`] on its device, driven by [`generate_cached`]: how any Burn decoder
/// becomes a [`Decoder`].
pub struct OnDevice<M> {
    /// The model.
    pub model: M,
    /// Its device.
    pub device: Device,
}

impl<M: CachedDecoder + Send + Sync + 'static> Decoder for OnDevice<M> {
    fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        decode: &dyn Fn(&[u32]) -> String,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation> {
        let prompts = vec![prompt.to_vec()];
        generate_cached(
            &self.model,
            &prompts,
            config,
            &self.device,
            decode,
            |_row, id| on_token(id),
        )?
        .into_iter()
        .next()
        .ok_or_else(|| NlpError::Input("generation returned no row".into()))
    }

    fn max_positions(&self) -> usize {
        self.model.max_positions()
    }

    fn with_activations(self: Box<Self>, _activations: Activations) -> Box<dyn Decoder> {
        self
    }
}

impl Decoder for LlamaCpu {
    fn generate(
        &self,
        prompt: &[u32],
        config: &GenerationConfig,
        decode: &dyn Fn(&[u32]) -> String,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Generation> {
        LlamaCpu::generate(self, prompt, config, decode, on_token)
    }

    fn max_positions(&self) -> usize {
        LlamaCpu::max_positions(self)
    }

    /// `packed (f32)`, `packed (bf16)` or `gguf (Q4_1, Q8_0, F32)` (the block types of a
    /// GGUF model, most bytes first).
    fn engine(&self) -> String {
        if self.block_types().is_empty() {
            return match self.precision() {
                Precision::F32 => "packed (f32)".into(),
                Precision::Bf16 => "packed (bf16)".into(),
            };
        }
        let types: Vec<&str> = self.block_types().iter().map(|t| t.name()).collect();
        format!("gguf ({})", types.join(", "))
    }

    fn packed(&self) -> Option<&LlamaCpu> {
        Some(self)
    }

    fn with_activations(self: Box<Self>, activations: Activations) -> Box<dyn Decoder> {
        Box::new(LlamaCpu::with_activations(*self, activations))
    }
}

/// Loads a Hugging Face folder's decoder on a device.
pub type FolderLoader =
    fn(dir: &Path, device: &Device, options: &LoadOptions) -> Result<Box<dyn Decoder>>;

/// Loads a GGUF file's decoder (on the packed CPU path).
pub type GgufLoader = fn(file: &GgufFile) -> Result<Box<dyn Decoder>>;

/// The loaders by name (see the module docs).
#[derive(Clone, Default)]
pub struct DecoderRegistry {
    folders: Vec<(String, FolderLoader)>,
    gguf: Vec<(String, GgufLoader)>,
}

impl std::fmt::Debug for DecoderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecoderRegistry")
            .field("model_types", &self.model_types())
            .field("gguf_architectures", &self.gguf_architectures())
            .finish()
    }
}

impl DecoderRegistry {
    /// No loaders.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Kiln's decoders: one line each.
    pub fn builtin() -> Self {
        Self::empty()
            .with("gpt2", load_gpt2)
            .with("llama", load_llama)
            .with("qwen2", load_llama)
            .with("mistral", load_llama)
            .with("gemma3_text", load_gemma3)
            .with_gguf("llama", load_gguf_llama)
            .with_gguf("qwen2", load_gguf_llama)
            .with_gguf("gemma3", load_gguf_gemma3)
    }

    /// Adds (or replaces) the loader of folders whose `config.json` has this `model_type`.
    pub fn with(mut self, model_type: &str, loader: FolderLoader) -> Self {
        self.folders.retain(|(name, _)| name != model_type);
        self.folders.push((model_type.to_string(), loader));
        self
    }

    /// Adds (or replaces) the loader of GGUF files of this `general.architecture`.
    pub fn with_gguf(mut self, architecture: &str, loader: GgufLoader) -> Self {
        self.gguf.retain(|(name, _)| name != architecture);
        self.gguf.push((architecture.to_string(), loader));
        self
    }

    /// The `model_type`s it loads, in registration order.
    pub fn model_types(&self) -> Vec<&str> {
        self.folders.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The GGUF architectures it loads, in registration order.
    pub fn gguf_architectures(&self) -> Vec<&str> {
        self.gguf.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Loads the folder `dir` whose `config.json` (`config_path`) says `model_type`.
    ///
    /// # Errors
    /// An unregistered type is an [`NlpError::Config`] naming the file and the supported types; the
    /// loader's own errors (missing or mis-shaped weights, a bad engine).
    pub fn load_folder(
        &self,
        model_type: &str,
        dir: &Path,
        config_path: &Path,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Box<dyn Decoder>> {
        let Some((_, loader)) = self.folders.iter().find(|(n, _)| n == model_type) else {
            return Err(NlpError::Config {
                path: config_path.to_path_buf(),
                reason: format!(
                    "model_type '{model_type}' is not supported ({})",
                    self.model_types().join(", ")
                ),
            });
        };
        loader(dir, device, options)
    }

    /// Loads a GGUF file by its `general.architecture`.
    ///
    /// # Errors
    /// An unregistered architecture is an [`NlpError::Config`] naming the file and the supported
    /// ones; the loader's own errors (missing tensors, unsupported block types).
    pub fn load_gguf(&self, file: &GgufFile, path: &Path) -> Result<Box<dyn Decoder>> {
        let architecture = file.str("general.architecture").map_err(NlpError::from)?;
        let Some((_, loader)) = self.gguf.iter().find(|(n, _)| n == architecture) else {
            return Err(NlpError::Config {
                path: path.to_path_buf(),
                reason: format!(
                    "GGUF architecture '{architecture}' is not supported ({})",
                    self.gguf_architectures().join(", ")
                ),
            });
        };
        loader(file)
    }
}

/// GPT-2 folders, on Burn (the engine is checked: the packed one is refused off the CPU).
fn load_gpt2(dir: &Path, device: &Device, options: &LoadOptions) -> Result<Box<dyn Decoder>> {
    options.packed(device)?;
    let model = Gpt2::from_folder(dir, device)?.1;
    Ok(Box::new(OnDevice {
        model,
        device: device.clone(),
    }))
}

/// Llama, Qwen2 and Mistral folders: packed for the CPU, or Burn.
fn load_llama(dir: &Path, device: &Device, options: &LoadOptions) -> Result<Box<dyn Decoder>> {
    let packed = options.packed(device)?;
    let model = Llama::from_folder(dir, device)?.1;
    if packed {
        return Ok(Box::new(LlamaCpu::from_llama(&model, options.precision)?));
    }
    Ok(Box::new(OnDevice {
        model,
        device: device.clone(),
    }))
}

fn load_gguf_llama(file: &GgufFile) -> Result<Box<dyn Decoder>> {
    Ok(Box::new(LlamaCpu::from_gguf(file)?.1))
}

/// Gemma 3 folders, on Burn (it has no packed form yet: [`Engine::Packed`] is refused, `Auto`
/// runs it on Burn on any device).
fn load_gemma3(dir: &Path, device: &Device, options: &LoadOptions) -> Result<Box<dyn Decoder>> {
    refuse_packed("gemma3_text", options)?;
    let model = Gemma3::from_folder(dir, device)?.1;
    Ok(Box::new(OnDevice {
        model,
        device: device.clone(),
    }))
}

/// A `gemma3` GGUF file, dequantized onto the CPU device and run on Burn.
fn load_gguf_gemma3(file: &GgufFile) -> Result<Box<dyn Decoder>> {
    let device = kiln_core::backend::device("cpu")?;
    let model = Gemma3::from_gguf_file(file, &device)?.1;
    Ok(Box::new(OnDevice { model, device }))
}

fn refuse_packed(model_type: &str, options: &LoadOptions) -> Result<()> {
    if options.engine == Engine::Packed {
        return Err(NlpError::Input(format!(
            "{model_type} has no packed CPU engine yet: run it with the Burn (or auto) engine"
        )));
    }
    Ok(())
}
