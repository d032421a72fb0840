//! Products with 8-bit activations (llama.cpp's arithmetic): the activations' quantization
//! within its rounding of the f32 values, the integer products ([`dot_portable`]) equal to the
//! dequantized weights times the dequantized activations in f64, the vector kernels equal to
//! the portable products on random blocks (every value and scale, the extremes included) and
//! shapes with every remainder, a batch's vectors each given their products alone, and parts
//! of types without an 8-bit product kept f32 in the same call; the same for a prompt's
//! products (`matmul_quant_with`). `cargo xtask asan` runs this
//! file under AddressSanitizer.

mod common;

use common::{random_blocks, values};
use kiln_kernels::gemv::Start;
use kiln_kernels::quant::q8::{QK8, dot_portable, has_int8};
use kiln_kernels::quant::tiles::{TILE_ROWS, interleave};
use kiln_kernels::quant::{
    Activations, BlockType, Q8Vectors, QK_K, QuantMatrix, matmul_quant, matmul_quant_with,
    matvec_quant, matvec_quant_with,
};
use kiln_kernels::spin::SpinPool;
use proptest::prelude::*;

const INT8_TYPES: [BlockType; 5] = [
    BlockType::Q4_0,
    BlockType::Q4_1,
    BlockType::Q8_0,
    BlockType::Q4K,
    BlockType::Q6K,
];

fn int8_types() -> impl Strategy<Value = BlockType> {
    prop::sample::select(INT8_TYPES.to_vec())
}

/// Vector `i` of `y` dequantized in the layout `ty`'s product reads.
fn activations(ty: BlockType, y: &Q8Vectors, i: usize) -> Vec<f64> {
    if ty.block_len() == QK_K {
        let (q, d, _) = y.blocks256(i);
        q.iter()
            .enumerate()
            .map(|(c, &v)| f64::from(d[c / QK_K]) * f64::from(v))
            .collect()
    } else {
        let (q, d, _, _) = y.blocks32(i);
        q.iter()
            .enumerate()
            .map(|(c, &v)| f64::from(d[c / QK8]) * f64::from(v))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Each value is its block's scale times an integer within half a step of the value
    /// (plus the f16 rounding of the 32-value blocks' scale), the largest one exactly ±127.
    #[test]
    fn activations_round_to_their_blocks_levels(
        blocks in 1usize..4,
        m in 1usize..4,
        seed in 0u32..1000,
        spread in 0.01f32..100.0,
    ) {
        let cols = blocks * QK_K;
        let xs: Vec<f32> = values(m * cols, seed).iter().map(|v| v * spread).collect();
        let y = Q8Vectors::new(&xs, m, cols);
        for i in 0..m {
            let x = &xs[i * cols..(i + 1) * cols];
            let (q, d, s, sum) = y.blocks32(i);
            for b in 0..cols / QK8 {
                let block = &x[QK8 * b..QK8 * (b + 1)];
                let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
                let step = amax / 127.0;
                let qs = &q[QK8 * b..QK8 * (b + 1)];
                prop_assert_eq!(qs.iter().map(|&v| i32::from(v)).sum::<i32>(), sum[b]);
                prop_assert!(qs.iter().any(|v| v.unsigned_abs() == 127));
                prop_assert!((d[b] - step).abs() <= step * 1e-3);
                prop_assert!((s[b] - step * sum[b] as f32).abs() <= (step * sum[b] as f32).abs() * 1e-3 + 1e-30);
                for (v, &qv) in block.iter().zip(qs) {
                    prop_assert!((v - step * f32::from(qv)).abs() <= step * 0.5001);
                }
            }
            let (q, d, bs) = y.blocks256(i);
            for b in 0..cols / QK_K {
                let block = &x[QK_K * b..QK_K * (b + 1)];
                let qs = &q[QK_K * b..QK_K * (b + 1)];
                prop_assert!(qs.iter().any(|v| v.unsigned_abs() == 127));
                for (v, &qv) in block.iter().zip(qs) {
                    prop_assert!((v - d[b] * f32::from(qv)).abs() <= d[b].abs() * 0.5001);
                }
                for g in 0..16 {
                    let sum: i32 = qs[16 * g..16 * (g + 1)].iter().map(|&v| i32::from(v)).sum();
                    prop_assert_eq!(i32::from(bs[16 * b + g]), sum);
                }
            }
        }
    }

    /// The integer products are the dequantized rows times the dequantized activations (Q4_1:
    /// with the activations' sums as `Q8_1` stores them, rounded to f16).
    #[test]
    fn integer_products_equal_the_dequantized_operands(
        ty in int8_types(),
        rows in 1usize..6,
        blocks in 1usize..4,
        seed in 0u64..1000,
    ) {
        let cols = blocks * QK_K;
        let data = random_blocks(ty, rows, cols, seed);
        let w = QuantMatrix::new(ty, &data, [rows, cols]).expect("shape");
        let xs = values(cols, seed as u32);
        let y = Q8Vectors::new(&xs, 1, cols);
        let a = activations(ty, &y, 0);
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            w.dequantize_row(r, &mut row);
            let mut want: f64 = row.iter().zip(&a).map(|(&w, &x)| f64::from(w) * x).sum();
            let mut slack = 0f64;
            if ty == BlockType::Q4_1 {
                // Σ m_b d_b Σq_b replaced by Σ m_b s_b.
                let (_, d, s, sum) = y.blocks32(0);
                for (b, block) in w.row(r).chunks_exact(20).enumerate() {
                    let m = f64::from(half::f16::from_le_bytes([block[2], block[3]]).to_f32());
                    let exact = f64::from(d[b]) * f64::from(sum[b]);
                    want += m * (f64::from(s[b]) - exact);
                    slack += (m * exact).abs() * 1e-6;
                }
            }
            let scale: f64 = row.iter().zip(&a).map(|(&w, &x)| (f64::from(w) * x).abs()).sum();
            let got = f64::from(dot_portable(ty, &w.row(r), &y, 0));
            prop_assert!(
                (got - want).abs() <= 1e-5 * scale + slack + 1e-12,
                "{} row {r}: {got} vs {want}", ty.name()
            );
        }
    }

    /// The vector kernels (AVX-512 VNNI where the CPU has it) against the portable integer
    /// products, 1..=6 vectors, stacked parts, every start.
    #[test]
    fn int8_products_equal_the_portable_ones(
        ty in int8_types(),
        part_rows in prop::collection::vec(1usize..40, 1..3),
        blocks in 1usize..4,
        m in 1usize..7,
        start_kind in 0usize..3,
        seed in 0u64..1000,
    ) {
        // 32-value types: odd block counts too (a pair and a lone block).
        let cols = blocks * if ty.block_len() == QK_K { QK_K } else { 3 * QK8 };
        let pool = SpinPool::new(3);
        equal_the_portable_products(ty, &part_rows, [cols, m], (start_kind, seed), |parts, xs, ys, start| {
            matvec_quant_with(Some(&pool), parts, xs, m, ys, start, Activations::Int8)
        })?;
    }

    /// A prompt's products (`matmul_quant_with`: Q4_K and Q6_K unpacked into tiles of 16
    /// interleaved rows, eight vectors a step) against the portable integer products: row
    /// counts past and short of a tile, every remainder of eight vectors, stacked parts.
    #[test]
    fn int8_prompt_products_equal_the_portable_ones(
        ty in prop::sample::select(vec![BlockType::Q4K, BlockType::Q6K]),
        part_rows in prop::collection::vec(1usize..40, 1..3),
        blocks in 1usize..4,
        m in 1usize..20,
        start_kind in 0usize..3,
        seed in 0u64..1000,
    ) {
        equal_the_portable_products(ty, &part_rows, [blocks * QK_K, m], (start_kind, seed), |parts, xs, ys, start| {
            matmul_quant_with(parts, xs, m, ys, start, Activations::Int8)
        })?;
    }

    /// `m` vectors at once give, bit for bit, what each gives alone (decode steps batched).
    #[test]
    fn each_int8_vector_of_a_batch_gets_its_products_alone(
        ty in int8_types(),
        rows in 1usize..30,
        m in 1usize..11,
        seed in 0u64..1000,
    ) {
        let cols = if ty.block_len() == QK_K { 2 * QK_K } else { 5 * QK8 };
        let data = random_blocks(ty, rows, cols, seed);
        let w = QuantMatrix::new(ty, &data, [rows, cols]).expect("shape");
        let xs = values(m * cols, seed as u32);
        let pool = SpinPool::new(2);
        let mut batch = vec![0f32; m * rows];
        matvec_quant_with(Some(&pool), &[w], &xs, m, &mut batch, Start::Zero, Activations::Int8);
        for i in 0..m {
            let mut alone = vec![0f32; rows];
            let x = &xs[i * cols..(i + 1) * cols];
            matvec_quant_with(Some(&pool), &[w], x, 1, &mut alone, Start::Zero, Activations::Int8);
            let got: Vec<u32> = batch[i * rows..(i + 1) * rows].iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = alone.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(got, want, "{} vector {} of {}", ty.name(), i, m);
        }
    }
}

const TILE_TYPES: [BlockType; 3] = [BlockType::Q4_0, BlockType::Q4_1, BlockType::Q8_0];

/// `parts` (row-major) interleaved: their bytes, to borrow as tiled matrices.
fn tiles_of(parts: &[QuantMatrix<'_>]) -> Vec<Vec<u8>> {
    parts
        .iter()
        .map(|p| interleave(p.block_type(), p.bytes(), p.shape()).expect("tileable"))
        .collect()
}

/// `parts`' tiled twins, borrowing `tiles` (from [`tiles_of`]).
fn tiled<'a>(parts: &[QuantMatrix<'_>], tiles: &'a [Vec<u8>]) -> Vec<QuantMatrix<'a>> {
    parts
        .iter()
        .zip(tiles)
        .map(|(p, t)| QuantMatrix::tiled(p.block_type(), t, p.shape()).expect("tileable"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Tiled parts (16 rows interleaved, `tiles`) against the row-major portable integer
    /// products, up to the order of the f32 sums: decode steps (`matvec_quant_with`) and a
    /// prompt (`matmul_quant_with`), stacked parts, every group of vectors (8, 4, 2, 1).
    #[test]
    fn tiled_products_equal_the_portable_ones(
        ty in prop::sample::select(TILE_TYPES.to_vec()),
        part_tiles in prop::collection::vec(1usize..4, 1..3),
        blocks in 1usize..5,
        m in 1usize..20,
        start_kind in 0usize..3,
        seed in 0u64..1000,
    ) {
        let part_rows: Vec<usize> = part_tiles.iter().map(|t| TILE_ROWS * t).collect();
        let pool = SpinPool::new(3);
        for prompt in [false, true] {
            equal_the_portable_products(ty, &part_rows, [blocks * QK8, m], (start_kind, seed), |parts, xs, ys, start| {
                let tiles = tiles_of(parts);
                let parts = tiled(parts, &tiles);
                if prompt {
                    matmul_quant_with(&parts, xs, m, ys, start, Activations::Int8)
                } else {
                    matvec_quant_with(Some(&pool), &parts, xs, m, ys, start, Activations::Int8)
                }
            })?;
        }
    }

    /// A tiled matrix gives each vector the same bits alone, in a batch of decode steps,
    /// and in a prompt's product: one kernel and one order of sums for all.
    #[test]
    fn each_vector_gets_the_same_tiled_products_alone_batched_and_in_a_prompt(
        ty in prop::sample::select(TILE_TYPES.to_vec()),
        tiles in 1usize..4,
        blocks in 1usize..5,
        m in 1usize..20,
        seed in 0u64..1000,
    ) {
        let (rows, cols) = (TILE_ROWS * tiles, blocks * QK8);
        let data = random_blocks(ty, rows, cols, seed);
        let w = QuantMatrix::new(ty, &data, [rows, cols]).expect("shape");
        let bytes = tiles_of(&[w]);
        let w = tiled(&[w], &bytes)[0];
        let xs = values(m * cols, seed as u32);
        let pool = SpinPool::new(2);
        let mut batch = vec![0f32; m * rows];
        matvec_quant_with(Some(&pool), &[w], &xs, m, &mut batch, Start::Zero, Activations::Int8);
        let mut prompt = vec![0f32; m * rows];
        matmul_quant_with(&[w], &xs, m, &mut prompt, Start::Zero, Activations::Int8);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&prompt), bits(&batch));
        for i in 0..m {
            let mut alone = vec![0f32; rows];
            let x = &xs[i * cols..(i + 1) * cols];
            matvec_quant_with(None, &[w], x, 1, &mut alone, Start::Zero, Activations::Int8);
            prop_assert_eq!(bits(&batch[i * rows..(i + 1) * rows]), bits(&alone), "vector {} of {}", i, m);
        }
    }
}

#[test]
fn tiled_and_row_major_parts_mix_in_one_stack() {
    // A Q4_1 part of 7 rows between two tiled parts puts the second one's tiles across the
    // threads' row ranges (partial tiles); f32 activations read the tiles too (slowly).
    let cols = QK_K;
    let specs = [
        (BlockType::Q8_0, 32),
        (BlockType::Q4_1, 7),
        (BlockType::Q4_0, 48),
    ];
    let datas: Vec<Vec<u8>> = specs
        .iter()
        .enumerate()
        .map(|(i, &(ty, r))| random_blocks(ty, r, cols, 40 + i as u64))
        .collect();
    let rows_major: Vec<QuantMatrix<'_>> = specs
        .iter()
        .zip(&datas)
        .map(|(&(ty, r), d)| QuantMatrix::new(ty, d, [r, cols]).expect("shape"))
        .collect();
    let tiles: Vec<Vec<u8>> = rows_major
        .iter()
        .map(|p| interleave(p.block_type(), p.bytes(), p.shape()).unwrap_or_default())
        .collect();
    let mixed: Vec<QuantMatrix<'_>> = rows_major
        .iter()
        .zip(&tiles)
        .map(|(p, t)| QuantMatrix::tiled(p.block_type(), t, p.shape()).unwrap_or(*p))
        .collect();
    assert_eq!(
        mixed.iter().map(|p| p.is_tiled()).collect::<Vec<_>>(),
        [true, false, true]
    );
    let rows: usize = specs.iter().map(|s| s.1).sum();
    let pool = SpinPool::new(3);
    for activations in [Activations::Int8, Activations::F32] {
        for m in [1, 3, 70] {
            let xs = values(m * cols, m as u32);
            let (mut want, mut got) = (vec![0f32; m * rows], vec![0f32; m * rows]);
            matvec_quant_with(
                Some(&pool),
                &rows_major,
                &xs,
                m,
                &mut want,
                Start::Zero,
                activations,
            );
            matvec_quant_with(
                Some(&pool),
                &mixed,
                &xs,
                m,
                &mut got,
                Start::Zero,
                activations,
            );
            let (mut prompt, mut prompt_want) = (vec![0f32; m * rows], vec![0f32; m * rows]);
            matmul_quant_with(&mixed, &xs, m, &mut prompt, Start::Zero, activations);
            matmul_quant_with(
                &rows_major,
                &xs,
                m,
                &mut prompt_want,
                Start::Zero,
                activations,
            );
            let largest = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for i in 0..m {
                for r in 0..rows {
                    let k = i * rows + r;
                    let (w, g, p, pw) = (want[k], got[k], prompt[k], prompt_want[k]);
                    if (32..39).contains(&r) {
                        // The row-major Q4_1 part: the same kernels either way.
                        assert_eq!((g.to_bits(), p.to_bits()), (w.to_bits(), pw.to_bits()));
                        continue;
                    }
                    // A prompt's tiled rows take the decode step's arithmetic (row-major
                    // 32-value types keep f32 tiles in a prompt).
                    assert!(
                        (w - g).abs() <= 1e-5 * largest && (p - w).abs() <= 1e-5 * largest,
                        "{activations:?} m={m} row {r} vector {i}: {g} / {p} vs {w}"
                    );
                }
            }
        }
    }
    // Rows read back from the tiles are the file's rows.
    for (p, t) in rows_major.iter().zip(&mixed) {
        for r in 0..p.shape()[0] {
            assert_eq!(p.row(r), t.row(r));
        }
    }
}

/// Random `ty` parts of `part_rows` rows stacked, `m` vectors of `cols` values, the start
/// `start_kind` (`common::start_of`): `product`'s outputs equal the portable integer
/// products up to the order of the f32 sums.
fn equal_the_portable_products(
    ty: BlockType,
    part_rows: &[usize],
    [cols, m]: [usize; 2],
    (start_kind, seed): (usize, u64),
    product: impl Fn(&[QuantMatrix<'_>], &[f32], &mut [f32], Start<'_>),
) -> Result<(), TestCaseError> {
    let datas: Vec<Vec<u8>> = part_rows
        .iter()
        .enumerate()
        .map(|(i, &r)| random_blocks(ty, r, cols, seed * 5 + i as u64))
        .collect();
    let parts = common::stacked(ty, &datas, part_rows, cols);
    let rows: usize = part_rows.iter().sum();
    let xs: Vec<f32> = values(m * cols, seed as u32)
        .iter()
        .map(|v| v * 3.0)
        .collect();
    let bias = values(rows, seed as u32 + 1);
    let init = values(m * rows, seed as u32 + 2);
    let start = common::start_of(start_kind, &bias);
    let y = Q8Vectors::new(&xs, m, cols);
    let mut ys = init.clone();
    product(&parts, &xs, &mut ys, start);
    let mut r = 0;
    let mut row = vec![0f32; cols];
    for p in &parts {
        for pr in 0..p.shape()[0] {
            p.dequantize_row(pr, &mut row);
            for i in 0..m {
                let base = match start {
                    Start::Zero => 0.0,
                    Start::Accumulate => init[i * rows + r],
                    Start::Bias(b) => b[r],
                };
                let want = base + dot_portable(ty, &p.row(pr), &y, i);
                let got = ys[i * rows + r];
                let scale: f32 = row
                    .iter()
                    .zip(&xs[i * cols..])
                    .map(|(w, x)| (w * x).abs())
                    .sum();
                prop_assert!(
                    (got - want).abs() <= 1e-5 * scale + 1e-5 * want.abs() + 1e-6,
                    "{} row {r} vector {i} of {m}: {got} vs {want}",
                    ty.name()
                );
            }
            r += 1;
        }
    }
    Ok(())
}

#[test]
fn non_finite_activations_give_non_finite_products() {
    // A NaN (or an infinity) in a vector reaches its products, on every int8 type and every
    // path, as it does in f32: quantizing must not turn it into a finite, wrong number.
    let cols = 2 * QK_K;
    let pool = SpinPool::new(2);
    for ty in INT8_TYPES {
        let data = random_blocks(ty, 6, cols, 3);
        let w = QuantMatrix::new(ty, &data, [6, cols]).expect("shape");
        for bad in [f32::NAN, f32::INFINITY] {
            for m in [1, 2, 5, 11] {
                let mut xs = values(m * cols, 4);
                xs[(m - 1) * cols + 40] = bad;
                let mut ys = vec![0f32; m * 6];
                matvec_quant_with(
                    Some(&pool),
                    &[w],
                    &xs,
                    m,
                    &mut ys,
                    Start::Zero,
                    Activations::Int8,
                );
                let last = &ys[(m - 1) * 6..];
                assert!(
                    last.iter().all(|v| !v.is_finite()),
                    "{} {bad} m={m}: {last:?}",
                    ty.name()
                );
                assert!(ys[..(m - 1) * 6].iter().all(|v| v.is_finite()));
                let y = Q8Vectors::new(&xs, m, cols);
                assert!(!dot_portable(ty, &w.row(0), &y, m - 1).is_finite());
                // The prompt's products, eight vectors a step.
                let mut ys = vec![0f32; m * 6];
                matmul_quant_with(&[w], &xs, m, &mut ys, Start::Zero, Activations::Int8);
                assert!(ys[(m - 1) * 6..].iter().all(|v| !v.is_finite()));
                assert!(ys[..(m - 1) * 6].iter().all(|v| v.is_finite()));
            }
        }
    }
}

/// `rows` rows of `cols` F16 values.
fn f16_rows(rows: usize, cols: usize) -> Vec<u8> {
    values(rows * cols, 7)
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

#[test]
fn parts_without_an_int8_product_keep_f32() {
    // Q4_K, then F16 (no 8-bit product), then Q6_K stacked: the F16 rows are exactly what
    // the f32 path gives, the others what the 8-bit path gives alone.
    let cols = 2 * QK_K;
    assert!(!has_int8(BlockType::F16));
    let q4 = random_blocks(BlockType::Q4K, 5, cols, 1);
    let q6 = random_blocks(BlockType::Q6K, 4, cols, 2);
    let f16 = f16_rows(3, cols);
    let parts = [
        QuantMatrix::new(BlockType::Q4K, &q4, [5, cols]).expect("shape"),
        QuantMatrix::new(BlockType::F16, &f16, [3, cols]).expect("shape"),
        QuantMatrix::new(BlockType::Q6K, &q6, [4, cols]).expect("shape"),
    ];
    let xs = values(cols, 11);
    let pool = SpinPool::new(2);
    let mut all = vec![0f32; 12];
    matvec_quant_with(
        Some(&pool),
        &parts,
        &xs,
        1,
        &mut all,
        Start::Zero,
        Activations::Int8,
    );
    let (mut a, mut b, mut c) = (vec![0f32; 5], vec![0f32; 3], vec![0f32; 4]);
    matvec_quant_with(
        Some(&pool),
        &parts[..1],
        &xs,
        1,
        &mut a,
        Start::Zero,
        Activations::Int8,
    );
    matvec_quant(Some(&pool), &parts[1..2], &xs, 1, &mut b, Start::Zero);
    matvec_quant_with(
        Some(&pool),
        &parts[2..],
        &xs,
        1,
        &mut c,
        Start::Zero,
        Activations::Int8,
    );
    assert_eq!(all, [a, b, c].concat());
    // And the 8-bit products differ from the f32 ones (the path is taken).
    let mut f = vec![0f32; 5];
    matvec_quant(Some(&pool), &parts[..1], &xs, 1, &mut f, Start::Zero);
    assert_ne!(all[..5], f[..]);
}

#[test]
fn a_prompt_keeps_f32_for_parts_without_an_int8_tile() {
    // Q4_K, F16, Q4_1 and Q6_K stacked, 21 vectors: the F16 and Q4_1 rows are the f32
    // tiles' products, the K-type rows the 8-bit ones (different from f32: the path is taken).
    let (cols, m) = (QK_K, 21);
    let q4 = random_blocks(BlockType::Q4K, 18, cols, 1);
    let q41 = random_blocks(BlockType::Q4_1, 5, cols, 3);
    let q6 = random_blocks(BlockType::Q6K, 4, cols, 2);
    let f16 = f16_rows(3, cols);
    let parts = [
        QuantMatrix::new(BlockType::Q4K, &q4, [18, cols]).expect("shape"),
        QuantMatrix::new(BlockType::F16, &f16, [3, cols]).expect("shape"),
        QuantMatrix::new(BlockType::Q4_1, &q41, [5, cols]).expect("shape"),
        QuantMatrix::new(BlockType::Q6K, &q6, [4, cols]).expect("shape"),
    ];
    let rows = 30;
    let xs = values(m * cols, 11);
    let mut int8 = vec![0f32; m * rows];
    let mut f32s = vec![0f32; m * rows];
    matmul_quant_with(&parts, &xs, m, &mut int8, Start::Zero, Activations::Int8);
    matmul_quant(&parts, &xs, m, &mut f32s, Start::Zero);
    let y = Q8Vectors::new(&xs, m, cols);
    for i in 0..m {
        for r in 0..rows {
            let (got, f) = (int8[i * rows + r], f32s[i * rows + r]);
            match r {
                18..26 => assert!(
                    (got - f).abs() <= 1e-5 * f.abs() + 1e-5,
                    "row {r}: {got} vs {f}"
                ),
                _ => {
                    let (p, pr) = if r < 18 {
                        (&parts[0], r)
                    } else {
                        (&parts[3], r - 26)
                    };
                    let want = dot_portable(p.block_type(), &p.row(pr), &y, i);
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs() + 1e-4,
                        "row {r}: {got} vs {want}"
                    );
                    assert_ne!(got, f, "row {r} vector {i}: the f32 product");
                }
            }
        }
    }
}
