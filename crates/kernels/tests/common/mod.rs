//! Helpers shared by the kernels' integration tests.

/// Deterministic values in [-1, 1).
pub fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97))
                % 1000) as f32
                / 500.0
                - 1.0
        })
        .collect()
}

/// A xorshift64 stream seeded by `seed`.
#[allow(dead_code)]
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// `rows` rows of `cols` values of a block-quantized type as random bytes, with each
/// block's f16 scale fields made finite and below 0.06 (every quantized value and every
/// 6-bit scale occurs, the extremes included). Not for the float types.
#[allow(dead_code)]
pub fn random_blocks(
    ty: kiln_kernels::quant::BlockType,
    rows: usize,
    cols: usize,
    seed: u64,
) -> Vec<u8> {
    use kiln_kernels::quant::BlockType;
    // Scale fields of each type, as in the fixture script.
    let fields: &[usize] = match ty {
        BlockType::Q4_0 | BlockType::Q5_0 | BlockType::Q8_0 | BlockType::Iq4Nl => &[0],
        BlockType::Q4_1 | BlockType::Q5_1 | BlockType::Q4K | BlockType::Q5K => &[0, 2],
        BlockType::Q2K => &[80, 82],
        BlockType::Q3K => &[108],
        BlockType::Q6K => &[208],
        BlockType::F32 | BlockType::F16 | BlockType::Bf16 => panic!("a float type"),
    };
    let size = ty.row_bytes(cols).expect("whole blocks") * rows;
    let mut next = xorshift(seed);
    let mut bytes: Vec<u8> = (0..size).map(|_| next() as u8).collect();
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &at in fields {
            // A finite f16 of magnitude below 0.06: sign, exponent 1..=10, any mantissa.
            let v = next();
            let bits = ((v & 1) << 15) as u16
                | (((v >> 1) % 10 + 1) << 10) as u16
                | (v >> 8) as u16 & 0x3ff;
            block[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        }
    }
    bytes
}

/// `parts[i]` of `rows[i]` rows each, `ty` blocks of `cols` values, as matrices.
#[allow(dead_code)]
pub fn stacked<'a>(
    ty: kiln_kernels::quant::BlockType,
    datas: &'a [Vec<u8>],
    rows: &[usize],
    cols: usize,
) -> Vec<kiln_kernels::quant::QuantMatrix<'a>> {
    datas
        .iter()
        .zip(rows)
        .map(|(d, &r)| kiln_kernels::quant::QuantMatrix::new(ty, d, [r, cols]).expect("shape"))
        .collect()
}

/// The start of a product: `kind` 0 zero, 1 accumulate, else the bias.
#[allow(dead_code)]
pub fn start_of(kind: usize, bias: &[f32]) -> kiln_kernels::gemv::Start<'_> {
    use kiln_kernels::gemv::Start;
    match kind {
        0 => Start::Zero,
        1 => Start::Accumulate,
        _ => Start::Bias(bias),
    }
}
