//! The block formats of ggml / GGUF and their dequantization, value for value as the
//! reference `gguf.quants.dequantize` of the Python package `gguf` computes it (every
//! product and sum in f32, in the same order, so the results are bit-identical; the
//! fixtures in `tests/fixtures/quant` check it).
//!
//! A block holds `block_len` values in `block_bytes` bytes, little-endian. The legacy types
//! hold 32 values with one or two f16 scales; the K-types ("k-quants", llama.cpp PR 1684)
//! hold 256 values in sub-blocks of 16 or 32, each with a 4- to 8-bit scale (and minimum)
//! under an f16 super-scale. Layouts follow ggml's `block_q*` structs (ggml-common.h).

use half::f16;

/// Values per K-type super-block.
pub const QK_K: usize = 256;

/// A ggml tensor type that Kiln reads and multiplies in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockType {
    /// 32-bit floats.
    F32,
    /// IEEE half floats.
    F16,
    /// bfloat16 (an f32's high half).
    Bf16,
    /// 32 values: f16 scale `d`, 4-bit `q`; `d (q - 8)`.
    Q4_0,
    /// 32 values: f16 scale `d` and minimum `m`, 4-bit `q`; `d q + m`.
    Q4_1,
    /// 32 values: f16 `d`, 5-bit `q` (high bits packed apart); `d (q - 16)`.
    Q5_0,
    /// 32 values: f16 `d` and `m`, 5-bit `q`; `d q + m`.
    Q5_1,
    /// 32 values: f16 `d`, 8-bit signed `q`; `d q`.
    Q8_0,
    /// 256 values: 16 sub-blocks with 4-bit scales and minimums, 2-bit `q`.
    Q2K,
    /// 256 values: 16 sub-blocks with 6-bit scales, 3-bit `q`.
    Q3K,
    /// 256 values: 8 sub-blocks with 6-bit scales and minimums, 4-bit `q`.
    Q4K,
    /// 256 values: 8 sub-blocks with 6-bit scales and minimums, 5-bit `q`.
    Q5K,
    /// 256 values: 16 sub-blocks with 8-bit scales, 6-bit `q`.
    Q6K,
    /// 32 values: f16 `d`, 4-bit indices into a non-linear table of 16 levels.
    Iq4Nl,
}

/// IQ4_NL's 16 levels (ggml's `kvalues_iq4nl`).
const IQ4NL_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

impl BlockType {
    /// Every type, in ggml's id order.
    pub const ALL: [BlockType; 14] = [
        BlockType::F32,
        BlockType::F16,
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q5_1,
        BlockType::Q8_0,
        BlockType::Q2K,
        BlockType::Q3K,
        BlockType::Q4K,
        BlockType::Q5K,
        BlockType::Q6K,
        BlockType::Iq4Nl,
        BlockType::Bf16,
    ];

    /// The type of ggml's id `id` (`ggml_type`), if Kiln reads it.
    pub fn from_ggml(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// ggml's id of the type (`ggml_type` in ggml.h, `GGMLQuantizationType` in gguf-py).
    pub fn ggml_id(self) -> u32 {
        match self {
            BlockType::F32 => 0,
            BlockType::F16 => 1,
            BlockType::Q4_0 => 2,
            BlockType::Q4_1 => 3,
            BlockType::Q5_0 => 6,
            BlockType::Q5_1 => 7,
            BlockType::Q8_0 => 8,
            BlockType::Q2K => 10,
            BlockType::Q3K => 11,
            BlockType::Q4K => 12,
            BlockType::Q5K => 13,
            BlockType::Q6K => 14,
            BlockType::Iq4Nl => 20,
            BlockType::Bf16 => 30,
        }
    }

    /// ggml's name of a type id (`Q4_K`, `IQ2_XS`, ...), also for the types Kiln does not
    /// read (to name them in errors).
    pub fn ggml_name(id: u32) -> &'static str {
        const NAMES: [&str; 42] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
            "NVFP4",
            "Q1_0",
        ];
        NAMES.get(id as usize).copied().unwrap_or("unknown")
    }

    /// The type's name as ggml writes it.
    pub fn name(self) -> &'static str {
        Self::ggml_name(self.ggml_id())
    }

    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            BlockType::F32 | BlockType::F16 | BlockType::Bf16 => 1,
            BlockType::Q4_0
            | BlockType::Q4_1
            | BlockType::Q5_0
            | BlockType::Q5_1
            | BlockType::Q8_0
            | BlockType::Iq4Nl => 32,
            BlockType::Q2K | BlockType::Q3K | BlockType::Q4K | BlockType::Q5K | BlockType::Q6K => {
                QK_K
            }
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockType::F32 => 4,
            BlockType::F16 | BlockType::Bf16 => 2,
            BlockType::Q4_0 | BlockType::Iq4Nl => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
            BlockType::Q8_0 => 34,
            BlockType::Q2K => 84,
            BlockType::Q3K => 110,
            BlockType::Q4K => 144,
            BlockType::Q5K => 176,
            BlockType::Q6K => 210,
        }
    }

    /// Bytes of a row of `cols` values, or `None` when `cols` is not a whole number of
    /// blocks (or the size overflows).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_len()) {
            return None;
        }
        (cols / self.block_len()).checked_mul(self.block_bytes())
    }
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Dequantizes whole blocks of `ty`: `bytes` holds `n` blocks, `out` receives their `n *
/// block_len` values.
///
/// # Panics
/// When `bytes` is not a whole number of blocks or `out` not their number of values.
pub fn dequantize(ty: BlockType, bytes: &[u8], out: &mut [f32]) {
    let (len, size) = (ty.block_len(), ty.block_bytes());
    assert!(
        bytes.len().is_multiple_of(size) && out.len() == bytes.len() / size * len,
        "dequantize {}: {} bytes into {} values",
        ty.name(),
        bytes.len(),
        out.len()
    );
    for (b, o) in bytes.chunks_exact(size).zip(out.chunks_exact_mut(len)) {
        dequantize_block(ty, b, o);
    }
}

/// One block of `ty` (`b`: `block_bytes`) into `out` (`block_len` values).
#[inline(always)]
pub(crate) fn dequantize_block(ty: BlockType, b: &[u8], out: &mut [f32]) {
    match ty {
        BlockType::F32 => out[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        BlockType::F16 => out[0] = f16_at(b, 0),
        BlockType::Bf16 => {
            out[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }
        BlockType::Q4_0 => q4_0(b, out),
        BlockType::Q4_1 => q4_1(b, out),
        BlockType::Q5_0 => q5_0(b, out),
        BlockType::Q5_1 => q5_1(b, out),
        BlockType::Q8_0 => q8_0(b, out),
        BlockType::Q2K => q2_k(b, out),
        BlockType::Q3K => q3_k(b, out),
        BlockType::Q4K => q4_k(b, out),
        BlockType::Q5K => q5_k(b, out),
        BlockType::Q6K => q6_k(b, out),
        BlockType::Iq4Nl => iq4_nl(b, out),
    }
}

/// Low nibbles are values 0-15, high nibbles 16-31 (all 32-value 4-bit types).
#[inline(always)]
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        out[j] = d * ((qs[j] & 0x0f) as i32 - 8) as f32;
        out[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

#[inline(always)]
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qs = &b[4..20];
    for j in 0..16 {
        out[j] = d * (qs[j] & 0x0f) as f32 + m;
        out[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

/// The 5-bit values of a Q5 block: `qh` bit `i` is value `i`'s fifth bit.
#[inline(always)]
fn q5_values(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

#[inline(always)]
fn q5_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let q = q5_values(qh, &b[6..22]);
    for (o, &q) in out.iter_mut().zip(&q) {
        *o = d * (q as i32 - 16) as f32;
    }
}

#[inline(always)]
fn q5_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let q = q5_values(qh, &b[8..24]);
    for (o, &q) in out.iter_mut().zip(&q) {
        *o = d * q as f32 + m;
    }
}

#[inline(always)]
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = (q as i8) as f32 * d;
    }
}

/// `scales[16]`, `qs[64]`, `d`, `dmin`: value `e` (of 256) is bits `2 s` of
/// `qs[32 h + l]` for `e = 128 h + 32 s + l`, scaled by sub-block `e / 16`'s
/// `d (sc & 15)` less `dmin (sc >> 4)`.
#[inline(always)]
fn q2_k(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (h, s, l) = (e / 128, (e % 128) / 32, e % 32);
        let q = (qs[32 * h + l] >> (2 * s)) & 3;
        let sc = scales[e / 16];
        let dl = d * (sc & 0x0f) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *o = dl * q as f32 - ml;
    }
}

/// The sixteen 6-bit scales of Q3_K, biased by -32.
#[inline(always)]
fn q3_k_scales(s: &[u8]) -> [f32; 16] {
    let mut out = [0f32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (((low | (high << 4)) as i8) - 32) as f32;
    }
    out
}

/// `hmask[32]`, `qs[64]`, `scales[12]`, `d`: value `e` has its two low bits as Q2_K's and
/// subtracts 4 when bit `e / 32` of `hmask[e % 32]` is clear.
#[inline(always)]
fn q3_k(b: &[u8], out: &mut [f32]) {
    let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let sc = q3_k_scales(scales);
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (h, s, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = ((qs[32 * h + l] >> (2 * s)) & 3) as i8;
        let high = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;
        let q = low - ((high << 2) as i8);
        let dl = d * sc[e / 16];
        *o = dl * q as f32;
    }
}

/// The eight 6-bit scales and minimums of Q4_K and Q5_K (ggml's `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn k4_scales(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3f;
        mn[j] = s[4 + j] & 0x3f;
        sc[4 + j] = (s[8 + j] & 0x0f) | ((s[j] >> 2) & 0x30);
        mn[4 + j] = (s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30);
    }
    (sc, mn)
}

/// `d`, `dmin`, `scales[12]`, `qs[128]`: sub-block `j` (32 values) is nibble `j % 2` of
/// `qs[32 (j / 2)..]`, times `d sc[j]` less `dmin m[j]`.
#[inline(always)]
fn q4_k(b: &[u8], out: &mut [f32]) {
    k_nibbles(b, &b[16..144], None, out);
}

/// Q4_K's layout with `qh[32]` before `qs`: bit `j` of `qh[l]` is the fifth bit of value
/// `l` of sub-block `j`.
#[inline(always)]
fn q5_k(b: &[u8], out: &mut [f32]) {
    k_nibbles(b, &b[48..176], Some(&b[16..48]), out);
}

/// The values of a Q4_K (`qh` none) or Q5_K block.
#[inline(always)]
fn k_nibbles(b: &[u8], qs: &[u8], qh: Option<&[u8]>, out: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = k4_scales(&b[4..16]);
    for j in 0..8 {
        let dl = d * sc[j] as f32;
        let ml = dmin * mn[j] as f32;
        let src = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = 4 * (j % 2);
        for (l, o) in out[32 * j..32 * j + 32].iter_mut().enumerate() {
            let high = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
            *o = dl * (((src[l] >> shift) & 0x0f) | high) as f32 - ml;
        }
    }
}

/// `ql[128]`, `qh[64]`, `scales[16]` (i8), `d`: value `e = 128 h + r` takes nibble `r / 64`
/// of `ql[64 h + r % 64]` and bits `2 (r / 32)` of `qh[32 h + r % 32]`, less 32, times `d
/// scales[e / 16]`.
#[inline(always)]
fn q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (e, o) in out.iter_mut().enumerate().take(QK_K) {
        let (h, r) = (e / 128, e % 128);
        let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
        let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        let q = ((low | (high << 4)) as i8) - 32;
        let dl = d * (scales[e / 16] as i8) as f32;
        *o = dl * q as f32;
    }
}

#[inline(always)]
fn iq4_nl(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        out[j] = d * IQ4NL_LEVELS[(qs[j] & 0x0f) as usize] as f32;
        out[j + 16] = d * IQ4NL_LEVELS[(qs[j] >> 4) as usize] as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml() {
        // (block_len, block_bytes) of gguf-py's GGML_QUANT_SIZES.
        let expected = [
            (BlockType::Q4_0, 32, 18),
            (BlockType::Q4_1, 32, 20),
            (BlockType::Q5_0, 32, 22),
            (BlockType::Q5_1, 32, 24),
            (BlockType::Q8_0, 32, 34),
            (BlockType::Q2K, 256, 84),
            (BlockType::Q3K, 256, 110),
            (BlockType::Q4K, 256, 144),
            (BlockType::Q5K, 256, 176),
            (BlockType::Q6K, 256, 210),
            (BlockType::Iq4Nl, 32, 18),
            (BlockType::Bf16, 1, 2),
        ];
        for (ty, len, bytes) in expected {
            assert_eq!(
                (ty.block_len(), ty.block_bytes()),
                (len, bytes),
                "{}",
                ty.name()
            );
            assert_eq!(BlockType::from_ggml(ty.ggml_id()), Some(ty));
        }
        assert_eq!(BlockType::from_ggml(16), None);
        assert_eq!(BlockType::ggml_name(16), "IQ2_XXS");
        assert_eq!(BlockType::ggml_name(9999), "unknown");
        assert_eq!(BlockType::Q4K.row_bytes(512), Some(288));
        assert_eq!(BlockType::Q4K.row_bytes(100), None);
    }

    #[test]
    fn q8_0_and_q4_1_by_hand() {
        // d = 0.5 (f16 0x3800), q = -3 at 0, 7 at 31.
        let mut b = vec![0u8; 34];
        b[0..2].copy_from_slice(&0x3800u16.to_le_bytes());
        b[2] = (-3i8) as u8;
        b[33] = 7;
        let mut out = [0f32; 32];
        dequantize(BlockType::Q8_0, &b, &mut out);
        assert_eq!((out[0], out[1], out[31]), (-1.5, 0.0, 3.5));
        // d = 2, m = -1: low nibble 3 at value 0 -> 5, high nibble 15 at value 16 -> 29.
        let mut b = vec![0u8; 20];
        b[0..2].copy_from_slice(&0x4000u16.to_le_bytes());
        b[2..4].copy_from_slice(&0xbc00u16.to_le_bytes());
        b[4] = 0xf3;
        dequantize(BlockType::Q4_1, &b, &mut out);
        assert_eq!((out[0], out[16], out[1]), (5.0, 29.0, -1.0));
    }
}
