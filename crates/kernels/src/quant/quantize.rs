//! Quantization of f32 values into ggml's block types, value for value as ggml's reference
//! quantizers (`quantize_row_*_ref` in ggml-quants.c) and the Python package `gguf`'s
//! `gguf.quants.quantize` compute them: every scale and product in f32 in the same order,
//! scales rounded to f16 (or bf16) to nearest even, so a file Kiln writes holds the bytes
//! llama.cpp's converter would write for the same values (`tests/fixtures/quant` checks it).
//!
//! The types written are the float types, the 32-value legacy types (F32, F16, BF16, Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0; checked against gguf-py) and the K-types of llama.cpp's
//! Q4_K_M / Q4_K_S files, Q4_K and Q6_K, whose scales come from llama.cpp's searches
//! (`make_qkx2_quants`, `make_qx_quants`, without an importance matrix; checked against
//! ggml-quants.c's `quantize_row_q4_K_ref` / `quantize_row_q6_K_ref` compiled without
//! fused multiply-adds, see `tests/fixtures/quant/make_kquant_fixtures.py`). Q2_K, Q3_K,
//! Q5_K and IQ4_NL are read, not written.

use half::{bf16, f16};

use super::blocks::BlockType;

/// Why values could not be quantized.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    /// The type is read but not written.
    #[error(
        "quantizing to {0} is not supported (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, \
         Q4_K, Q6_K)"
    )]
    Unsupported(&'static str),
    /// A block type cannot hold a NaN or infinite value (its scale would be one).
    #[error("{ty}: value {index} is {value}; block types hold finite values only")]
    NotFinite {
        /// The type.
        ty: &'static str,
        /// Which value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The values are not a whole number of blocks.
    #[error("{ty}: {len} values are not a whole number of {block}-value blocks")]
    Length {
        /// The type.
        ty: &'static str,
        /// Values given.
        len: usize,
        /// Values per block.
        block: usize,
    },
}

impl BlockType {
    /// Whether [`quantize`] writes this type.
    pub fn writable(self) -> bool {
        matches!(
            self,
            BlockType::F32
                | BlockType::F16
                | BlockType::Bf16
                | BlockType::Q4_0
                | BlockType::Q4_1
                | BlockType::Q5_0
                | BlockType::Q5_1
                | BlockType::Q8_0
                | BlockType::Q4K
                | BlockType::Q6K
        )
    }
}

/// Quantizes `values` (a whole number of blocks of `ty`) and appends the blocks to `out`.
///
/// # Errors
/// [`QuantizeError::Unsupported`] for the types read but not written;
/// [`QuantizeError::Length`] when `values` is not a whole number of blocks;
/// [`QuantizeError::NotFinite`] for a NaN or infinity in a block type (the float types
/// store them as they are).
pub fn quantize(ty: BlockType, values: &[f32], out: &mut Vec<u8>) -> Result<(), QuantizeError> {
    if !ty.writable() {
        return Err(QuantizeError::Unsupported(ty.name()));
    }
    let len = ty.block_len();
    if !values.len().is_multiple_of(len) {
        return Err(QuantizeError::Length {
            ty: ty.name(),
            len: values.len(),
            block: len,
        });
    }
    if len > 1
        && let Some(index) = values.iter().position(|v| !v.is_finite())
    {
        return Err(QuantizeError::NotFinite {
            ty: ty.name(),
            index,
            value: values[index],
        });
    }
    out.reserve(values.len() / len * ty.block_bytes());
    for block in values.chunks_exact(len) {
        match ty {
            BlockType::F32 => out.extend_from_slice(&block[0].to_le_bytes()),
            BlockType::F16 => out.extend_from_slice(&f16::from_f32(block[0]).to_le_bytes()),
            BlockType::Bf16 => out.extend_from_slice(&to_bf16(block[0]).to_le_bytes()),
            BlockType::Q4_0 => q4_0(block, out),
            BlockType::Q4_1 => q4_1(block, out),
            BlockType::Q5_0 => q5_0(block, out),
            BlockType::Q5_1 => q5_1(block, out),
            BlockType::Q8_0 => q8_0(block, out),
            BlockType::Q4K => super::kquant::q4_k(block, out),
            BlockType::Q6K => super::kquant::q6_k(block, out),
            _ => unreachable!("checked by writable()"),
        }
    }
    Ok(())
}

/// ggml's `ggml_compute_fp32_to_bf16`: NaN made quiet, otherwise rounded to nearest even.
fn to_bf16(v: f32) -> u16 {
    let n = v.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        return ((n >> 16) | 64) as u16;
    }
    let rounded = bf16::from_f32(v).to_bits();
    debug_assert_eq!(
        u32::from(rounded),
        ((u64::from(n) + 0x7fff + u64::from((n >> 16) & 1)) >> 16) as u32
    );
    rounded
}

/// The value of largest magnitude (the first of equal magnitudes), sign kept.
fn signed_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `1 / d`, or 0 for a zero scale.
fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Packs 32 values of at most 4 bits: value `j` low nibble, value `j + 16` high.
fn pack_nibbles(q: &[u8; 32], out: &mut Vec<u8>) {
    out.extend((0..16).map(|j| (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4)));
}

/// The fifth bits of 32 values, value `j` at bit `j`.
fn high_bits(q: &[u8; 32]) -> [u8; 4] {
    let bits = q
        .iter()
        .enumerate()
        .fold(0u32, |acc, (j, &v)| acc | (u32::from(v >> 4) << j));
    bits.to_le_bytes()
}

/// `min(top, trunc(x))` for `x >= 0` as ggml's `MIN(top, (int8_t)x)`, computed in f32.
fn level(x: f32, top: u8) -> u8 {
    (x.trunc().clamp(0.0, 255.0) as u8).min(top)
}

fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_max(x) / -8.0;
    let id = inverse(d);
    let q: [u8; 32] = std::array::from_fn(|j| level(x[j] * id + 8.5, 15));
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    pack_nibbles(&q, out);
}

fn q4_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    let q: [u8; 32] = std::array::from_fn(|j| level((x[j] - min) * id + 0.5, 15));
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    pack_nibbles(&q, out);
}

fn q5_0(x: &[f32], out: &mut Vec<u8>) {
    let d = signed_max(x) / -16.0;
    let id = inverse(d);
    let q: [u8; 32] = std::array::from_fn(|j| level(x[j] * id + 16.5, 31));
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&high_bits(&q));
    pack_nibbles(&q, out);
}

fn q5_1(x: &[f32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    let q: [u8; 32] = std::array::from_fn(|j| level((x[j] - min) * id + 0.5, 31));
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
    out.extend_from_slice(&high_bits(&q));
    pack_nibbles(&q, out);
}

fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    // `roundf`: halves away from zero, as `f32::round`.
    out.extend(x.iter().map(|&v| ((v * id).round() as i8) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize;

    #[test]
    fn round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 30.0) / 7.0)
            .collect();
        for ty in BlockType::ALL
            .into_iter()
            .filter(|t| t.writable() && t.block_len() <= 32)
        {
            let mut bytes = Vec::new();
            quantize(ty, &x, &mut bytes).unwrap();
            assert_eq!(bytes.len(), ty.row_bytes(64).unwrap(), "{}", ty.name());
            let mut back = vec![0f32; 64];
            dequantize(ty, &bytes, &mut back);
            let span = 63.0 / 7.0;
            let step = match ty {
                BlockType::F32 => 0.0,
                BlockType::F16 | BlockType::Bf16 => 0.05,
                BlockType::Q8_0 => span / 254.0,
                BlockType::Q4_0 | BlockType::Q4_1 => span / 15.0,
                _ => span / 31.0,
            };
            for (a, b) in x.iter().zip(&back) {
                assert!(
                    (a - b).abs() <= step * 0.51 + 1e-3 * a.abs(),
                    "{}: {a} vs {b}",
                    ty.name()
                );
            }
        }
    }

    #[test]
    fn k_types_and_ragged_lengths_are_errors() {
        let mut out = Vec::new();
        assert_eq!(
            quantize(BlockType::Q5K, &[0.0; 256], &mut out),
            Err(QuantizeError::Unsupported("Q5_K"))
        );
        assert!(matches!(
            quantize(BlockType::Q8_0, &[0.0; 33], &mut out),
            Err(QuantizeError::Length {
                len: 33,
                block: 32,
                ..
            })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn non_finite_values_are_refused_by_block_types_only() {
        let mut x = [0.5f32; 256];
        x[7] = f32::NAN;
        for ty in [
            BlockType::Q8_0,
            BlockType::Q4_0,
            BlockType::Q4K,
            BlockType::Q6K,
        ] {
            let mut out = Vec::new();
            let e = quantize(ty, &x, &mut out).unwrap_err();
            assert!(
                matches!(e, QuantizeError::NotFinite { index: 7, .. }),
                "{e}"
            );
            assert!(out.is_empty());
        }
        let mut out = Vec::new();
        quantize(BlockType::F16, &[f32::INFINITY], &mut out).unwrap();
        assert_eq!(out, half::f16::INFINITY.to_le_bytes());
    }

    #[test]
    fn a_zero_block_has_zero_scale() {
        let mut out = Vec::new();
        quantize(BlockType::Q4_0, &[0.0; 32], &mut out).unwrap();
        // `0 / -8` is -0, as in ggml (the sign bit of the f16 scale set).
        assert_eq!(out[..2], [0x00, 0x80]);
        assert!(out[2..].iter().all(|&b| b == 0x88));
    }
}
