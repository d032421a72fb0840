//! Quantized blocks and products: dequantization bit-identical to gguf-py's on random blocks
//! of every type and quantization byte-identical to gguf-py's (ggml's reference quantizers)
//! for every 32-value type Kiln writes and byte-identical to ggml-quants.c's reference for
//! Q4_K and Q6_K (`fixtures/quant`, written by `make_quant_fixtures.py` and
//! `make_kquant_fixtures.py`), the
//! quantize-dequantize round trip within half a level on random rows, and the products
//! on quantized matrices against dequantize-then-f64 references on shapes with every
//! remainder (1..=6 vectors, stacked parts, row counts that are not multiples of the
//! threads' blocks). Output buffers are exactly as long as their shapes need (`cargo xtask
//! asan` runs this file under AddressSanitizer).

mod common;

use common::values;
use kiln_kernels::gemv::Start;
use kiln_kernels::quant::{
    BlockType, QuantMatrix, dequantize, matmul_quant, matvec_quant, quantize,
};
use kiln_kernels::spin::SpinPool;
use proptest::prelude::*;

fn read_fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/quant/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

fn fixture() -> serde_json::Value {
    read_fixture("quant_blocks.json")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn dequantization_is_bit_identical_to_gguf_py() {
    let fixture = fixture();
    let cases = fixture.as_object().expect("an object of types");
    assert_eq!(cases.len(), BlockType::ALL.len(), "a case per type");
    for (name, case) in cases {
        let id = case["ggml_id"].as_u64().expect("ggml_id") as u32;
        let ty = BlockType::from_ggml(id).unwrap_or_else(|| panic!("{name}: type {id}"));
        assert_eq!(ty.name(), name);
        let bytes = hex(case["bytes"].as_str().expect("bytes"));
        let expected: Vec<u32> = case["f32_bits"]
            .as_array()
            .expect("f32_bits")
            .iter()
            .map(|v| v.as_u64().expect("bits") as u32)
            .collect();
        let mut out = vec![0f32; expected.len()];
        dequantize(ty, &bytes, &mut out);
        for (i, (&got, &want)) in out.iter().zip(&expected).enumerate() {
            assert_eq!(
                got.to_bits(),
                want,
                "{name} value {i}: {got} vs gguf-py {}",
                f32::from_bits(want)
            );
        }
    }
}

/// Quantizes a fixture's `f32_bits` to each of `types` and compares with its bytes.
fn assert_quantized_as_recorded(name: &str, types: &[BlockType]) {
    let fixture = read_fixture(name);
    let values: Vec<f32> = fixture["f32_bits"]
        .as_array()
        .expect("f32_bits")
        .iter()
        .map(|v| f32::from_bits(v.as_u64().expect("bits") as u32))
        .collect();
    let cases = fixture["quantized"].as_object().expect("quantized");
    assert_eq!(cases.len(), types.len(), "{name}: a case per type");
    for &ty in types {
        let want = hex(cases[ty.name()].as_str().expect("hex"));
        let mut got = Vec::new();
        quantize(ty, &values, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{}", ty.name());
        let block = ty.block_bytes();
        for (i, (g, w)) in got.chunks(block).zip(want.chunks(block)).enumerate() {
            assert_eq!(g, w, "{} block {i}", ty.name());
        }
    }
}

#[test]
fn quantization_is_byte_identical_to_gguf_py() {
    let writable: Vec<BlockType> = BlockType::ALL
        .into_iter()
        .filter(|t| t.writable() && t.block_len() <= 32)
        .collect();
    assert_quantized_as_recorded("quant_quantize.json", &writable);
}

#[test]
fn k_quantization_is_byte_identical_to_ggml() {
    assert_quantized_as_recorded("quant_kquant.json", &[BlockType::Q4K, BlockType::Q6K]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Q4_K and Q6_K: dequantized values within two levels of their super-block's largest
    /// magnitude (the scales are searched, then rounded to 6 or 8 bits under an f16
    /// super-scale).
    #[test]
    fn k_quantized_values_come_back_close(seed in any::<u32>(), scale in 1e-3f32..1e3) {
        let x: Vec<f32> = values(512, seed).into_iter().map(|v| v * scale).collect();
        for (ty, levels) in [(BlockType::Q4K, 15.0), (BlockType::Q6K, 63.0)] {
            let mut bytes = Vec::new();
            quantize(ty, &x, &mut bytes).unwrap();
            prop_assert_eq!(bytes.len(), ty.row_bytes(512).unwrap());
            let mut back = vec![0f32; 512];
            dequantize(ty, &bytes, &mut back);
            for (block, got) in x.chunks(256).zip(back.chunks(256)) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (a, g) in block.iter().zip(got) {
                    prop_assert!((a - g).abs() <= 2.0 * amax / levels, "{}: {} vs {}", ty.name(), a, g);
                }
            }
        }
    }

    /// Quantizing then dequantizing moves no value by more than half a level of its block
    /// (one f16 rounding of the scale aside), for every written type; Q4_0 and Q5_0 put
    /// their largest magnitude on the level -8 (-16), so the other extreme may clip one
    /// level short.
    #[test]
    fn quantized_values_come_back_within_half_a_level(
        blocks in 1usize..4,
        seed in any::<u32>(),
        scale in 1e-3f32..1e3,
    ) {
        let x: Vec<f32> = values(blocks * 32, seed).into_iter().map(|v| v * scale).collect();
        for ty in BlockType::ALL.into_iter().filter(|t| t.writable() && t.block_len() <= 32) {
            let mut bytes = Vec::new();
            quantize(ty, &x, &mut bytes).unwrap();
            prop_assert_eq!(bytes.len(), ty.row_bytes(x.len()).unwrap());
            let mut back = vec![0f32; x.len()];
            dequantize(ty, &bytes, &mut back);
            for (b, (block, got)) in x.chunks(32).zip(back.chunks(32)).enumerate() {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let (lo, hi) = block.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let step = match ty {
                    BlockType::F32 => 0.0,
                    BlockType::F16 => amax / 1024.0,
                    BlockType::Bf16 => amax / 128.0,
                    BlockType::Q8_0 => amax / 127.0,
                    BlockType::Q4_0 => amax / 8.0,
                    BlockType::Q5_0 => amax / 16.0,
                    BlockType::Q4_1 => (hi - lo) / 15.0,
                    _ => (hi - lo) / 31.0,
                };
                for (a, g) in block.iter().zip(got) {
                    // Half a level, plus the f16 rounding of the scale (and minimum) over
                    // the largest level.
                    let levels = if matches!(ty, BlockType::Q4_0 | BlockType::Q5_0) { 1.0 } else { 0.5 };
                    let bound = step * levels + amax * 2e-3 + f32::MIN_POSITIVE;
                    prop_assert!((a - g).abs() <= bound, "{} block {}: {} vs {}", ty.name(), b, a, g);
                }
            }
        }
    }
}

/// Random blocks of `ty` with finite f16 scales (the fixture script's rule): `rows` rows of
/// `cols` values.
fn random_matrix(ty: BlockType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    if !matches!(ty, BlockType::F32 | BlockType::F16 | BlockType::Bf16) {
        return common::random_blocks(ty, rows, cols, seed);
    }
    // Float types: values drawn from the fixture's (finite) ones.
    let fixture = fixture();
    let size = ty.row_bytes(cols).expect("whole blocks") * rows;
    let mut next = common::xorshift(seed);
    let pool = hex(fixture[ty.name()]["bytes"].as_str().expect("bytes"));
    let width = ty.block_bytes();
    let count = pool.len() / width;
    (0..size / width)
        .flat_map(|_| {
            let i = (next() as usize) % count;
            pool[i * width..(i + 1) * width].to_vec()
        })
        .collect()
}

fn types() -> impl Strategy<Value = BlockType> {
    prop::sample::select(BlockType::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Both products against the dequantized matrix times the vectors in f64, on 1-3
    /// stacked parts, 1..=6 vectors, each start.
    #[test]
    fn products_equal_the_dequantized_reference(
        ty in types(),
        part_rows in prop::collection::vec(1usize..70, 1..4),
        blocks in 1usize..4,
        m in 1usize..7,
        start_kind in 0usize..3,
        seed in 0u64..1000,
    ) {
        // One-value types get widths that are no multiple of the vector width.
        let cols = match ty.block_len() {
            1 if seed % 2 == 0 => blocks * 37,
            1 => blocks * 48,
            len => blocks * len,
        };
        let datas: Vec<Vec<u8>> = part_rows
            .iter()
            .enumerate()
            .map(|(i, &r)| random_matrix(ty, r, cols, seed * 7 + i as u64))
            .collect();
        let parts = common::stacked(ty, &datas, &part_rows, cols);
        let rows: usize = part_rows.iter().sum();
        let mut dense = vec![0f32; rows * cols];
        let mut at = 0;
        for p in &parts {
            for r in 0..p.shape()[0] {
                p.dequantize_row(r, &mut dense[at * cols..(at + 1) * cols]);
                at += 1;
            }
        }
        let scale = dense.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
        let xs = values(m * cols, seed as u32);
        let bias = values(rows, seed as u32 + 1);
        let init = values(m * rows, seed as u32 + 2);
        let start = common::start_of(start_kind, &bias);
        let mut want = vec![0f64; m * rows];
        for i in 0..m {
            for r in 0..rows {
                let dot: f64 = (0..cols)
                    .map(|c| dense[r * cols + c] as f64 * xs[i * cols + c] as f64)
                    .sum();
                want[i * rows + r] = dot + match start {
                    Start::Zero => 0.0,
                    Start::Accumulate => init[i * rows + r] as f64,
                    Start::Bias(b) => b[r] as f64,
                };
            }
        }
        let pool = SpinPool::new(3);
        for which in 0..3 {
            let mut ys = init.clone();
            match which {
                0 => matvec_quant(None, &parts, &xs, m, &mut ys, start),
                1 => matvec_quant(Some(&pool), &parts, &xs, m, &mut ys, start),
                _ => matmul_quant(&parts, &xs, m, &mut ys, start),
            }
            for (k, (&got, &w)) in ys.iter().zip(&want).enumerate() {
                let tol = 1e-5 * scale as f64 * cols as f64 + 1e-5 * w.abs();
                prop_assert!(
                    (got as f64 - w).abs() <= tol,
                    "{} path {which}: output {k}: {got} vs {w} (tolerance {tol})", ty.name()
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A vector's products do not depend on the vectors beside it: `m` vectors at once give,
    /// bit for bit, what each gives alone (a batch of decode steps gives each sequence the
    /// logits it would get alone). Up to 12 vectors: the groups of four and the row tiles.
    #[test]
    fn each_vector_of_a_batch_gets_its_products_alone(
        ty in types(),
        rows in 1usize..40,
        blocks in 1usize..4,
        m in 1usize..13,
        seed in 0u64..1000,
    ) {
        let cols = match ty.block_len() {
            1 => blocks * 48,
            len => blocks * len,
        };
        let data = random_matrix(ty, rows, cols, seed);
        let w = QuantMatrix::new(ty, &data, [rows, cols]).expect("shape");
        let xs = values(m * cols, seed as u32);
        let pool = SpinPool::new(2);
        let mut batch = vec![0f32; m * rows];
        matvec_quant(Some(&pool), &[w], &xs, m, &mut batch, Start::Zero);
        for i in 0..m {
            let mut alone = vec![0f32; rows];
            matvec_quant(
                Some(&pool),
                &[w],
                &xs[i * cols..(i + 1) * cols],
                1,
                &mut alone,
                Start::Zero,
            );
            let got: Vec<u32> = batch[i * rows..(i + 1) * rows].iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = alone.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(got, want, "{} vector {} of {}", ty.name(), i, m);
        }
    }
}

#[test]
fn a_large_matrix_runs_on_several_threads_alike() {
    // Past the single-thread threshold: the threaded split gives the serial sums.
    let (rows, cols) = (300, 512);
    let data = random_matrix(BlockType::Q4K, rows, cols, 3);
    let w = QuantMatrix::new(BlockType::Q4K, &data, [rows, cols]).expect("shape");
    let xs = values(cols, 9);
    let (mut serial, mut threaded) = (vec![0f32; rows], vec![0f32; rows]);
    matvec_quant(
        Some(&SpinPool::new(1)),
        &[w],
        &xs,
        1,
        &mut serial,
        Start::Zero,
    );
    matvec_quant(
        Some(&SpinPool::new(4)),
        &[w],
        &xs,
        1,
        &mut threaded,
        Start::Zero,
    );
    assert_eq!(
        serial, threaded,
        "each row's sum does not depend on the split"
    );
}
