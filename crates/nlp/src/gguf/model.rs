//! Llama-family decoders from a GGUF file's metadata and tensors, on [`LlamaCpu`], their
//! weights used in the mapped file in their block types.
//!
//! The architectures `llama` (Llama 1-3, Mistral, SmolLM: llama.cpp's converter permutes
//! their query and key rows so that rotary embeddings turn adjacent pairs, and Kiln turns
//! the same pairs) and `qwen2` (query, key and value biases; rotary halves as
//! transformers'), with tied or separate `output.weight`. Names follow llama.cpp's
//! `llama-arch.cpp` (`token_embd`, `blk.N.attn_q`, ...).

use kiln_core::kernels::spin::SpinPool;

use super::error::GgufError;
use super::reader::{GgufFile, TensorInfo};
use crate::models::llama::inv_freq;
use crate::models::llama_cpu::{Layer, Matrix, QuantWeights, Rope};
use crate::models::{LlamaCpu, RopeScaling};

/// The shape of a decoder, read from `{arch}.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufDecoderConfig {
    /// `general.architecture`.
    pub architecture: String,
    /// `{arch}.block_count`.
    pub layers: usize,
    /// `{arch}.embedding_length`.
    pub hidden: usize,
    /// `{arch}.feed_forward_length`.
    pub intermediate: usize,
    /// `{arch}.attention.head_count`.
    pub heads: usize,
    /// `{arch}.attention.head_count_kv` (the head count when absent).
    pub kv_heads: usize,
    /// `{arch}.attention.key_length`, else `hidden / heads`.
    pub head_dim: usize,
    /// The vocabulary: rows of `token_embd.weight`.
    pub vocab: usize,
    /// `{arch}.context_length`.
    pub context: usize,
    /// `{arch}.rope.freq_base` (10,000 when absent).
    pub rope_base: f64,
    /// `{arch}.rope.scaling.type` and `.factor` (linear), or `rope_freqs.weight` (Llama 3).
    pub rope_scaling: RopeScaling,
    /// `{arch}.attention.layer_norm_rms_epsilon`.
    pub eps: f64,
    /// Whether `output.weight` is absent (the head is the embedding).
    pub tied: bool,
}

impl GgufDecoderConfig {
    /// Reads the decoder's metadata.
    ///
    /// # Errors
    /// [`GgufError::Architecture`] for architectures other than `llama` and `qwen2`; a
    /// missing or ill-typed key, or inconsistent sizes, name the key.
    pub fn from_file(file: &GgufFile) -> Result<Self, GgufError> {
        let arch = file.str("general.architecture")?.to_string();
        if !matches!(arch.as_str(), "llama" | "qwen2") {
            return Err(GgufError::Architecture {
                path: file.path().to_path_buf(),
                architecture: arch,
            });
        }
        let key = |k: &str| format!("{arch}.{k}");
        let heads = file.usize(&key("attention.head_count"))?;
        let hidden = file.usize(&key("embedding_length"))?;
        let kv_heads = match file.get(&key("attention.head_count_kv")) {
            Some(_) => file.usize(&key("attention.head_count_kv"))?,
            None => heads,
        };
        let invalid = |reason: String| GgufError::Invalid {
            path: file.path().to_path_buf(),
            reason,
        };
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(invalid(format!(
                "{}: {heads} heads and {kv_heads} key/value heads (the heads must be a \
                 multiple of the key/value heads)",
                key("attention.head_count")
            )));
        }
        let head_dim = match file.get(&key("attention.key_length")) {
            Some(_) => file.usize(&key("attention.key_length"))?,
            None => hidden / heads,
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(invalid(format!(
                "head dimension {head_dim}: expected a positive even number"
            )));
        }
        if file.get(&key("rope.dimension_count")).is_some() {
            let rotary = file.usize(&key("rope.dimension_count"))?;
            if rotary != head_dim {
                return Err(invalid(format!(
                    "{}: {rotary}, the head dimension {head_dim} (partial rotary embeddings \
                     are not supported)",
                    key("rope.dimension_count")
                )));
            }
        }
        let rope_base = match file.get(&key("rope.freq_base")) {
            Some(_) => file.f64(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let rope_scaling = rope_scaling(file, &arch)?;
        let embed = file
            .tensor("token_embd.weight")
            .ok_or_else(|| GgufError::MissingTensor {
                path: file.path().to_path_buf(),
                tensor: "token_embd.weight".into(),
            })?;
        let vocab = match embed.matrix_shape() {
            Some([v, h]) if h == hidden => v,
            _ => {
                return Err(GgufError::TensorShape {
                    path: file.path().to_path_buf(),
                    tensor: "token_embd.weight".into(),
                    expected: format!("[vocab, {hidden}]"),
                    found: format!("{:?} (ggml order)", embed.dims),
                });
            }
        };
        let eps = file.f64(&key("attention.layer_norm_rms_epsilon"))?;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(invalid(format!(
                "{}: {eps}",
                key("attention.layer_norm_rms_epsilon")
            )));
        }
        // Sizes from metadata must fit the file before anything is allocated for them.
        let layers = file.usize(&key("block_count"))?;
        if layers > file.tensors().len() {
            return Err(invalid(format!(
                "{}: {layers} layers, but the file holds {} tensors",
                key("block_count"),
                file.tensors().len()
            )));
        }
        if heads.checked_mul(head_dim).is_none() {
            return Err(invalid(format!(
                "{heads} heads of dimension {head_dim} overflow"
            )));
        }
        Ok(Self {
            layers,
            intermediate: file.usize(&key("feed_forward_length"))?,
            context: file.usize(&key("context_length"))?,
            architecture: arch,
            hidden,
            heads,
            kv_heads,
            head_dim,
            vocab,
            rope_base,
            rope_scaling,
            eps,
            tied: file.tensor("output.weight").is_none(),
        })
    }
}

/// `{arch}.rope.scaling.type` and `.factor`: none, or linear with a positive finite factor.
fn rope_scaling(file: &GgufFile, arch: &str) -> Result<RopeScaling, GgufError> {
    let (kind, factor) = (
        format!("{arch}.rope.scaling.type"),
        format!("{arch}.rope.scaling.factor"),
    );
    let invalid = |reason: String| GgufError::Invalid {
        path: file.path().to_path_buf(),
        reason,
    };
    if file.get(&kind).is_none() {
        return Ok(RopeScaling::Default);
    }
    match file.str(&kind)? {
        "none" => Ok(RopeScaling::Default),
        "linear" => {
            let f = file.f64(&factor)?;
            if f.is_finite() && f > 0.0 {
                Ok(RopeScaling::Linear { factor: f })
            } else {
                Err(invalid(format!("{factor}: {f}")))
            }
        }
        other => Err(invalid(format!(
            "{kind}: '{other}' is not supported (none, linear)"
        ))),
    }
}

/// The rotary inverse frequencies of the file's decoder: the base and scaling keys, then
/// Llama 3.1's scaling as llama.cpp's converter writes it (`rope_freqs.weight`: a factor
/// dividing each frequency).
pub(crate) fn rotary_frequencies(
    file: &GgufFile,
    c: &GgufDecoderConfig,
) -> Result<Vec<f32>, GgufError> {
    let mut inv = inv_freq(c.head_dim, c.rope_base, c.rope_scaling);
    if let Some(info) = file.tensor("rope_freqs.weight") {
        let factors = file.vector(&info.name, Some(c.head_dim / 2))?;
        inv.iter_mut().zip(&factors).for_each(|(f, d)| *f /= d);
    }
    Ok(inv)
}

/// Checks `name`'s shape and returns its `(type, offset, rows)` for a [`QuantWeights`].
fn part(
    file: &GgufFile,
    name: &str,
    shape: [usize; 2],
) -> Result<(kiln_core::kernels::quant::BlockType, usize, usize), GgufError> {
    let m = file.matrix(name, Some(shape))?;
    let info: &TensorInfo = file.tensor(name).ok_or_else(|| GgufError::MissingTensor {
        path: file.path().to_path_buf(),
        tensor: name.into(),
    })?;
    Ok((m.block_type(), info.offset, shape[0]))
}

fn stacked(file: &GgufFile, names: &[(String, usize)], cols: usize) -> Result<Matrix, GgufError> {
    let parts = names
        .iter()
        .map(|(n, rows)| part(file, n, [*rows, cols]))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Matrix::Quant(QuantWeights {
        map: file.map().clone(),
        parts,
        cols,
        activations: Default::default(),
        tiles: Vec::new(),
    }))
}

impl LlamaCpu {
    /// The decoder of a GGUF file (see [`GgufDecoderConfig`]), its matrices read in place.
    ///
    /// # Errors
    /// As [`GgufDecoderConfig::from_file`]; a missing tensor or one of another shape names
    /// it.
    pub fn from_gguf(file: &GgufFile) -> Result<(GgufDecoderConfig, Self), GgufError> {
        let c = GgufDecoderConfig::from_file(file)?;
        let (h, hd) = (c.hidden, c.head_dim);
        let (q_rows, kv_rows) = (c.heads * hd, c.kv_heads * hd);
        let blk = |i: usize, n: &str| format!("blk.{i}.{n}");
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let qkv_bias = if c.architecture == "qwen2" {
                let q = file.vector(&blk(i, "attn_q.bias"), Some(q_rows))?;
                let k = file.vector(&blk(i, "attn_k.bias"), Some(kv_rows))?;
                let v = file.vector(&blk(i, "attn_v.bias"), Some(kv_rows))?;
                Some([q, k, v].concat())
            } else {
                None
            };
            layers.push(Layer {
                attn_norm: file.vector(&blk(i, "attn_norm.weight"), Some(h))?,
                qkv: stacked(
                    file,
                    &[
                        (blk(i, "attn_q.weight"), q_rows),
                        (blk(i, "attn_k.weight"), kv_rows),
                        (blk(i, "attn_v.weight"), kv_rows),
                    ],
                    h,
                )?,
                qkv_bias,
                o: stacked(file, &[(blk(i, "attn_output.weight"), h)], q_rows)?,
                mlp_norm: file.vector(&blk(i, "ffn_norm.weight"), Some(h))?,
                gate_up: stacked(
                    file,
                    &[
                        (blk(i, "ffn_gate.weight"), c.intermediate),
                        (blk(i, "ffn_up.weight"), c.intermediate),
                    ],
                    h,
                )?,
                down: stacked(file, &[(blk(i, "ffn_down.weight"), h)], c.intermediate)?,
            });
        }
        let inv = rotary_frequencies(file, &c)?;
        let head = if c.tied {
            None
        } else {
            Some(stacked(file, &[("output.weight".into(), c.vocab)], h)?)
        };
        let model = LlamaCpu {
            hidden: h,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: hd,
            intermediate: c.intermediate,
            vocab: c.vocab,
            max_positions: c.context,
            eps: c.eps as f32,
            inv_freq: inv,
            rope: if c.architecture == "llama" {
                Rope::Interleaved
            } else {
                Rope::Half
            },
            embed: stacked(file, &[("token_embd.weight".into(), c.vocab)], h)?,
            head,
            norm: file.vector("output_norm.weight", Some(h))?,
            layers,
            pool: SpinPool::new(rayon::current_num_threads()),
        };
        Ok((c, model))
    }
}
