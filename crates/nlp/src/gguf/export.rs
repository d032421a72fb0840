//! Writing a Llama-family decoder as a GGUF file that llama.cpp, ollama and Kiln load: a
//! Burn [`Llama`] (read from safetensors, fine-tuned, its LoRA adapters merged with
//! [`Llama::merge_lora`]) with the tokenizer it was trained with.
//!
//! The layout is llama.cpp's converter's (`convert_hf_to_gguf.py`): `general.*` and
//! `{arch}.*` metadata, the `tokenizer.ggml.*` vocabulary, tensors named as in
//! `llama-arch.cpp`, the query and key rows of the `llama` architecture permuted so that
//! rotary embeddings turn adjacent pairs, norms and biases in F32, the matrices in the
//! chosen type ([`BlockType::writable`]: F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, Q6_K,
//! Q4_K) or llama.cpp's Q4_K_M mix ([`GgufFileType`]),
//! a matrix whose rows are not whole blocks of that type in F16 (as the converter falls
//! back). Values are quantized by [`quantize()`], byte for byte as ggml's reference
//! quantizers. Llama 3.1's rotary scaling is written as the `rope_freqs.weight` factors,
//! linear scaling as `rope.scaling.*` keys.
//!
//! The vocabulary ([`GgufVocab`]) is copied from a GGUF file or converted from a Hugging
//! Face folder's byte-level BPE `tokenizer.json` (`tokenizer.ggml.model = gpt2`).

use std::path::Path;

use kiln_core::kernels::quant::{BlockType, quantize};

use super::reader::Value;
use super::vocab::GgufVocab;
use super::writer::{GgufWriter, TensorBytes};
use crate::error::{NlpError, Result};
use crate::models::llama::inv_freq;
use crate::models::llama_cpu::pack::{host, rows_of};
use crate::models::{Llama, LlamaConfig, RopeScaling};

/// What [`Llama::write_gguf`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufWritten {
    /// The file's length.
    pub bytes: u64,
    /// Tensors written, by type.
    pub tensors: Vec<(BlockType, usize)>,
}

/// The types a file's matrices are written in: one type for all, or llama.cpp's Q4_K_M mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufFileType {
    /// Every matrix in this type ([`BlockType::writable`]); rows that are not whole blocks
    /// of it in F16.
    Uniform(BlockType),
    /// llama.cpp's `Q4_K_M` (`llama-quant.cpp`, no importance matrix): Q4_K, with Q6_K for
    /// the output head (the embedding when tied) and for the value projection and
    /// feed-forward down projection of the layers `use_more_bits` picks (the first and
    /// last eighth and every third between); rows that are not whole 256-value blocks fall
    /// back as llama.cpp's do (Q4_K to Q5_0, Q6_K to Q8_0).
    Q4KM,
}

impl From<BlockType> for GgufFileType {
    fn from(ty: BlockType) -> Self {
        GgufFileType::Uniform(ty)
    }
}

/// Which matrix a tensor is, for the Q4_K_M mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The output head, or the embedding when it is also the head.
    Output,
    /// The token embedding (untied).
    Embedding,
    /// `attn_v` of a layer.
    Value(usize),
    /// `ffn_down` of a layer.
    Down(usize),
    /// Any other projection.
    Other,
}

/// llama.cpp's `use_more_bits(i_layer, n_layers)`.
fn use_more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

impl GgufFileType {
    /// llama.cpp's name of the file type (`Q8_0`, `Q4_K_M`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgufFileType::Uniform(ty) => ty.name(),
            GgufFileType::Q4KM => "Q4_K_M",
        }
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`).
    pub fn ftype(self) -> Option<u32> {
        Some(match self {
            GgufFileType::Uniform(ty) => match ty {
                BlockType::F32 => 0,
                BlockType::F16 => 1,
                BlockType::Q4_0 => 2,
                BlockType::Q4_1 => 3,
                BlockType::Q8_0 => 7,
                BlockType::Q5_0 => 8,
                BlockType::Q5_1 => 9,
                BlockType::Q4K => 15,
                BlockType::Q6K => 18,
                BlockType::Bf16 => 32,
                _ => return None,
            },
            GgufFileType::Q4KM => 15,
        })
    }

    fn check(self) -> Result<()> {
        match self {
            GgufFileType::Uniform(ty) if !ty.writable() => Err(NlpError::Input(format!(
                "GGUF export: {} is read, not written (F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1, \
                 Q4_0, Q6_K, Q4_K, or the Q4_K_M mix)",
                ty.name()
            ))),
            _ => Ok(()),
        }
    }

    fn quantized(self) -> bool {
        !matches!(
            self,
            GgufFileType::Uniform(BlockType::F32 | BlockType::F16 | BlockType::Bf16)
        )
    }

    /// The type of a matrix of `cols` values a row, in `role`, of a model of `layers`.
    fn matrix_type(self, role: Role, cols: usize, layers: usize) -> BlockType {
        let wanted = match self {
            GgufFileType::Uniform(ty) => ty,
            GgufFileType::Q4KM => match role {
                Role::Output => BlockType::Q6K,
                Role::Value(i) | Role::Down(i) if use_more_bits(i, layers) => BlockType::Q6K,
                Role::Embedding | Role::Value(_) | Role::Down(_) | Role::Other => BlockType::Q4K,
            },
        };
        let fallback = |ty: BlockType| match ty {
            BlockType::Q4K => BlockType::Q5_0,
            BlockType::Q6K => BlockType::Q8_0,
            _ => BlockType::F16,
        };
        [wanted, fallback(wanted), BlockType::F16]
            .into_iter()
            .find(|t| cols.is_multiple_of(t.block_len()))
            .unwrap_or(BlockType::F32)
    }
}

/// llama.cpp's converter's `permute`: within each head, rows `[first half; second half]`
/// become interleaved pairs, row `2 i + j` taking row `j hd/2 + i`; `inverse` undoes it (a
/// GGUF `llama` file's rows back in Hugging Face order).
pub(crate) fn permute_rows(w: &[f32], heads: usize, cols: usize, inverse: bool) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (mut to, mut from) = (h * hd + 2 * i + j, h * hd + j * hd / 2 + i);
                if inverse {
                    std::mem::swap(&mut to, &mut from);
                }
                out[to * cols..(to + 1) * cols].copy_from_slice(&w[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// The bytes of `values` (rows of `cols`) in `ty`, rows quantized on all cores (the K-type
/// searches cost about 200 operations a value).
fn encode(ty: BlockType, values: &[f32], cols: usize, what: &str) -> Result<Vec<u8>> {
    use rayon::prelude::*;
    let rows: Vec<Vec<u8>> = values
        .par_chunks(cols.max(1))
        .map(|row| {
            let mut out = Vec::new();
            quantize(ty, row, &mut out).map(|_| out)
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| NlpError::Input(format!("GGUF tensor '{what}': {e}")))?;
    Ok(rows.concat())
}

/// The architecture llama.cpp names for a `model_type`.
fn architecture(config: &LlamaConfig) -> Result<&'static str> {
    match config.model_type.as_str() {
        "llama" | "mistral" if !config.attention_bias => Ok("llama"),
        "qwen2" => Ok("qwen2"),
        other => Err(NlpError::Input(format!(
            "GGUF export: model_type '{other}'{} is not written (llama, mistral, qwen2)",
            if config.attention_bias {
                " with attention biases"
            } else {
                ""
            }
        ))),
    }
}

/// A tensor being added: its name, shape, type and the function that makes its bytes.
struct Adder<'w, 'a> {
    writer: &'w mut GgufWriter<'a>,
    file_type: GgufFileType,
    layers: usize,
    counts: Vec<(BlockType, usize)>,
}

impl<'a> Adder<'_, 'a> {
    fn count(&mut self, ty: BlockType) {
        match self.counts.iter_mut().find(|(t, _)| *t == ty) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((ty, 1)),
        }
    }

    /// A 1-D tensor, in F32.
    fn vector(&mut self, name: String, make: impl FnOnce() -> Result<Vec<f32>> + 'a) -> Result<()> {
        let values = make()?;
        let n = values.len();
        let what = name.clone();
        self.count(BlockType::F32);
        let bytes: TensorBytes<'a> = Box::new(move || encode(BlockType::F32, &values, n, &what));
        self.writer.add_tensor(name, &[n], BlockType::F32, bytes)
    }

    /// A `[rows, cols]` matrix in the type the file type gives its role, its row-major
    /// values made when the file is written.
    fn matrix(
        &mut self,
        name: String,
        shape: [usize; 2],
        role: Role,
        make: impl FnOnce() -> Result<Vec<f32>> + 'a,
    ) -> Result<()> {
        let ty = self.file_type.matrix_type(role, shape[1], self.layers);
        self.count(ty);
        let what = name.clone();
        let cols = shape[1];
        let bytes: TensorBytes<'a> = Box::new(move || encode(ty, &make()?, cols, &what));
        self.writer.add_tensor(name, &shape, ty, bytes)
    }
}

impl Llama {
    /// Writes the model as a GGUF file at `path` with its matrices in `file_type` (a
    /// [`BlockType`] for all, or [`GgufFileType::Q4KM`]), its shape from
    /// `config` and the tokenizer `vocab`; `name` is `general.name`. Returns what was
    /// written. A model that still carries LoRA adapters is an error (merge them first).
    ///
    /// # Errors
    /// A type Kiln does not write, adapters not merged, a `model_type` llama.cpp has no
    /// architecture for here, a vocabulary larger than the model's, or an I/O error naming
    /// the file.
    pub fn write_gguf(
        &self,
        config: &LlamaConfig,
        vocab: &GgufVocab,
        file_type: impl Into<GgufFileType>,
        name: &str,
        path: impl AsRef<Path>,
    ) -> Result<GgufWritten> {
        let file_type = file_type.into();
        file_type.check()?;
        if self.has_lora() {
            return Err(NlpError::Input(
                "GGUF export: the model has LoRA adapters; merge them first (Llama::merge_lora)"
                    .into(),
            ));
        }
        let arch = architecture(config)?;
        let mut writer = GgufWriter::new();
        self.metadata(&mut writer, config, arch, file_type, name)?;
        vocab.write_to(&mut writer, self.vocab_size())?;
        let counts = {
            let mut adder = Adder {
                writer: &mut writer,
                file_type,
                layers: self.layers.len(),
                counts: Vec::new(),
            };
            self.tensors(&mut adder, config, arch)?;
            adder.counts
        };
        let bytes = writer.write(path)?;
        Ok(GgufWritten {
            bytes,
            tensors: counts,
        })
    }

    fn metadata(
        &self,
        w: &mut GgufWriter<'_>,
        config: &LlamaConfig,
        arch: &str,
        file_type: GgufFileType,
        name: &str,
    ) -> Result<()> {
        let u32_of = |v: usize| Value::U32(v as u32);
        let key = |k: &str| format!("{arch}.{k}");
        let [_, hidden] = self.embed_tokens.weight.dims();
        w.set("general.architecture", Value::String(arch.into()));
        w.set("general.name", Value::String(name.into()));
        w.set(key("block_count"), u32_of(self.layers.len()));
        w.set(key("context_length"), u32_of(self.max_positions()));
        w.set(key("embedding_length"), u32_of(hidden));
        w.set(key("feed_forward_length"), u32_of(config.intermediate_size));
        w.set(key("attention.head_count"), u32_of(self.heads));
        w.set(key("attention.head_count_kv"), u32_of(self.kv_heads));
        if self.head_dim * self.heads != hidden {
            w.set(key("attention.key_length"), u32_of(self.head_dim));
            w.set(key("attention.value_length"), u32_of(self.head_dim));
        }
        let (theta, scaling) = config.rope().map_err(NlpError::Input)?;
        w.set(key("rope.freq_base"), Value::F32(theta as f32));
        w.set(key("rope.dimension_count"), u32_of(self.head_dim));
        if let RopeScaling::Linear { factor } = scaling {
            w.set(key("rope.scaling.type"), Value::String("linear".into()));
            w.set(key("rope.scaling.factor"), Value::F32(factor as f32));
        }
        w.set(
            key("attention.layer_norm_rms_epsilon"),
            Value::F32(self.norm.epsilon as f32),
        );
        w.set(key("vocab_size"), u32_of(self.vocab_size()));
        let ftype = file_type.ftype().unwrap_or_default();
        w.set("general.file_type", Value::U32(ftype));
        if file_type.quantized() {
            w.set("general.quantization_version", Value::U32(2));
        }
        Ok(())
    }

    /// Rotary factors for `rope_freqs.weight` when the model's frequencies are not the
    /// plain or linearly scaled ones (Llama 3.1's scaling).
    fn rope_factors(&self, config: &LlamaConfig) -> Result<Option<Vec<f32>>> {
        let (theta, scaling) = config.rope().map_err(NlpError::Input)?;
        let keyed = match scaling {
            RopeScaling::Linear { .. } => scaling,
            _ => RopeScaling::Default,
        };
        let plain = inv_freq(self.head_dim, theta, keyed);
        if plain == self.inv_freq {
            return Ok(None);
        }
        Ok(Some(
            plain
                .iter()
                .zip(&self.inv_freq)
                .map(|(&p, &f)| (f64::from(p) / f64::from(f)) as f32)
                .collect(),
        ))
    }

    fn tensors<'a>(
        &'a self,
        add: &mut Adder<'_, 'a>,
        config: &LlamaConfig,
        arch: &str,
    ) -> Result<()> {
        let [vocab, hidden] = self.embed_tokens.weight.dims();
        if let Some(factors) = self.rope_factors(config)? {
            if arch != "llama" {
                return Err(NlpError::Input(format!(
                    "GGUF export: rotary scaling other than linear is written for the llama \
                     architecture only, not {arch}"
                )));
            }
            add.vector("rope_freqs.weight".into(), move || Ok(factors))?;
        }
        let embedding = if self.lm_head.is_some() {
            Role::Embedding
        } else {
            Role::Output
        };
        add.matrix(
            "token_embd.weight".into(),
            [vocab, hidden],
            embedding,
            move || host(self.embed_tokens.weight.val(), "embed_tokens"),
        )?;
        let permute = arch == "llama";
        let (heads, kv) = (self.heads, self.kv_heads);
        for (i, layer) in self.layers.iter().enumerate() {
            let blk = |n: &str| format!("blk.{i}.{n}");
            let at = &layer.self_attn;
            add.vector(blk("attn_norm.weight"), move || {
                host(layer.input_layernorm.gamma.val(), "input_layernorm")
            })?;
            let linears = [
                ("attn_q", &at.q_proj, if permute { heads } else { 0 }),
                ("attn_k", &at.k_proj, if permute { kv } else { 0 }),
                ("attn_v", &at.v_proj, 0),
                ("attn_output", &at.o_proj, 0),
                ("ffn_gate", &layer.mlp.gate_proj, 0),
                ("ffn_up", &layer.mlp.up_proj, 0),
                ("ffn_down", &layer.mlp.down_proj, 0),
            ];
            for (n, linear, permute_heads) in linears {
                let [d_in, d_out] = linear.weight.dims();
                let what = blk(n);
                let role = match n {
                    "attn_v" => Role::Value(i),
                    "ffn_down" => Role::Down(i),
                    _ => Role::Other,
                };
                add.matrix(
                    blk(&format!("{n}.weight")),
                    [d_out, d_in],
                    role,
                    move || {
                        let (w, [_, cols], _) = rows_of(linear, &what)?;
                        Ok(if permute_heads > 0 {
                            permute_rows(&w, permute_heads, cols, false)
                        } else {
                            w
                        })
                    },
                )?;
                if let Some(b) = &linear.bias {
                    add.vector(blk(&format!("{n}.bias")), move || host(b.val(), n))?;
                }
            }
            add.vector(blk("ffn_norm.weight"), move || {
                host(
                    layer.post_attention_layernorm.gamma.val(),
                    "post_attention_layernorm",
                )
            })?;
        }
        add.vector("output_norm.weight".into(), move || {
            host(self.norm.gamma.val(), "norm")
        })?;
        if let Some(head) = &self.lm_head {
            add.matrix(
                "output.weight".into(),
                [vocab, hidden],
                Role::Output,
                move || Ok(rows_of(head, "lm_head")?.0),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_k_m_gives_llama_cpp_s_types() {
        let t = |role, cols| GgufFileType::Q4KM.matrix_type(role, cols, 28);
        // Qwen2-1.5B's 28 layers: Q6_K for the value and down projections of layers 0-2,
        // 24-27 and every third from 5.
        let more: Vec<usize> = (0..28)
            .filter(|&i| t(Role::Value(i), 1536) == BlockType::Q6K)
            .collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]);
        assert_eq!(t(Role::Down(4), 8960), BlockType::Q4K);
        assert_eq!(t(Role::Down(5), 8960), BlockType::Q6K);
        assert_eq!(t(Role::Other, 1536), BlockType::Q4K);
        assert_eq!(t(Role::Embedding, 1536), BlockType::Q4K);
        assert_eq!(t(Role::Output, 1536), BlockType::Q6K);
        // Rows that are not whole 256-value blocks (SmolLM2's 576) fall back as llama.cpp's.
        assert_eq!(t(Role::Other, 576), BlockType::Q5_0);
        assert_eq!(t(Role::Output, 576), BlockType::Q8_0);
        assert_eq!(t(Role::Other, 48), BlockType::F16);
        let u = GgufFileType::Uniform(BlockType::Q8_0);
        assert_eq!(u.matrix_type(Role::Output, 48, 2), BlockType::F16);
        assert_eq!((u.ftype(), GgufFileType::Q4KM.ftype()), (Some(7), Some(15)));
        assert!(GgufFileType::Uniform(BlockType::Q5K).check().is_err());
    }
}
