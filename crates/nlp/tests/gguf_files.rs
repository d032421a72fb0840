//! GGUF files built byte by byte: a valid one read back (every metadata type, arrays
//! included, tensor bytes in place), and each way a file can be broken giving its typed
//! error naming the key or tensor, never a panic: truncation at every byte, bad magic,
//! versions, unknown value and tensor types, counts, dimensions and offsets past the file,
//! misalignment, repeats, deep nesting; then models whose metadata or tensors do not fit.

mod common;

use kiln_nlp::NlpError;
use kiln_nlp::gguf::{GgufError, GgufFile, Value};
use kiln_nlp::models::LlamaCpu;

/// A GGUF file under construction (little-endian, version 3 unless changed).
struct Builder {
    version: u32,
    kv: Vec<u8>,
    kv_count: u64,
    infos: Vec<u8>,
    tensor_count: u64,
    data: Vec<u8>,
    alignment: usize,
}

fn gguf_string(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

impl Builder {
    fn new() -> Self {
        Self {
            version: 3,
            kv: Vec::new(),
            kv_count: 0,
            infos: Vec::new(),
            tensor_count: 0,
            data: Vec::new(),
            alignment: 32,
        }
    }

    /// A pair with a raw value (`ty` and its encoded bytes).
    fn raw(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        self.kv.extend(gguf_string(key.as_bytes()));
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.kv_count += 1;
        self
    }

    fn u32(self, key: &str, v: u32) -> Self {
        self.raw(key, 4, &v.to_le_bytes())
    }

    fn f32(self, key: &str, v: f32) -> Self {
        self.raw(key, 6, &v.to_le_bytes())
    }

    fn str(self, key: &str, v: &str) -> Self {
        self.raw(key, 8, &gguf_string(v.as_bytes()))
    }

    /// A tensor of `ty` with ggml dims `dims` and `bytes` of data, at the next aligned
    /// offset.
    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, bytes: &[u8]) -> Self {
        let offset = self.data.len().next_multiple_of(self.alignment);
        self.data.resize(offset, 0);
        self.data.extend_from_slice(bytes);
        self.tensor_info(name, dims, ty, offset as u64)
    }

    /// A tensor info alone (its offset as given).
    fn tensor_info(mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        self.infos.extend(gguf_string(name.as_bytes()));
        self.infos.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.tensor_count += 1;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.tensor_count.to_le_bytes());
        out.extend(self.kv_count.to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        out.resize(out.len().next_multiple_of(self.alignment), 0);
        out.extend_from_slice(&self.data);
        out
    }
}

fn open(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).expect("write");
    let file = GgufFile::open(&path);
    // The map stays valid after the folder goes (the file's pages are held by the map).
    drop(dir);
    file
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A small valid file: one pair of each value type and two tensors.
fn valid() -> Builder {
    let mut array = 4u32.to_le_bytes().to_vec();
    array.extend(3u64.to_le_bytes());
    for v in [7u32, 8, 9] {
        array.extend(v.to_le_bytes());
    }
    let mut strings = 8u32.to_le_bytes().to_vec();
    strings.extend(2u64.to_le_bytes());
    strings.extend(gguf_string(b"a"));
    strings.extend(gguf_string("é".as_bytes()));
    Builder::new()
        .raw("u8", 0, &[200])
        .raw("i8", 1, &[0xff])
        .raw("u16", 2, &65535u16.to_le_bytes())
        .raw("i16", 3, &(-2i16).to_le_bytes())
        .u32("u32", 4_000_000_000)
        .raw("i32", 5, &(-5i32).to_le_bytes())
        .f32("f32", 1.5)
        .raw("bool", 7, &[1])
        .str("general.architecture", "llama")
        .raw("u32s", 9, &array)
        .raw("strings", 9, &strings)
        .raw("u64", 10, &u64::MAX.to_le_bytes())
        .raw("i64", 11, &i64::MIN.to_le_bytes())
        .raw("f64", 12, &0.25f64.to_le_bytes())
        .tensor("norm", &[4], 0, &f32_bytes(&[1.0, 2.0, 3.0, 4.0]))
        .tensor("w", &[32, 2], 8, &[0u8; 68])
}

#[test]
fn a_valid_file_reads_back() {
    let file = open(&valid().bytes()).expect("a valid file");
    assert_eq!(file.version(), 3);
    assert_eq!(file.get("u8"), Some(&Value::U8(200)));
    assert_eq!(file.get("i8"), Some(&Value::I8(-1)));
    assert_eq!(file.get("u16"), Some(&Value::U16(65535)));
    assert_eq!(file.get("i16"), Some(&Value::I16(-2)));
    assert_eq!(file.usize("u32").expect("u32"), 4_000_000_000);
    assert_eq!(file.get("i32"), Some(&Value::I32(-5)));
    assert_eq!(file.f64("f32").expect("f32"), 1.5);
    assert!(file.bool("bool").expect("bool"));
    assert_eq!(file.str("general.architecture").expect("str"), "llama");
    assert_eq!(file.ints("u32s").expect("ints"), [7, 8, 9]);
    assert_eq!(file.strings("strings").expect("strings"), ["a", "é"]);
    assert_eq!(file.get("u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(file.get("i64"), Some(&Value::I64(i64::MIN)));
    assert_eq!(file.f64("f64").expect("f64"), 0.25);
    assert_eq!(file.metadata().len(), 14);
    assert_eq!(
        file.vector("norm", Some(4)).expect("norm"),
        [1.0, 2.0, 3.0, 4.0]
    );
    let w = file
        .matrix("w", Some([2, 32]))
        .expect("a [2, 32] Q8_0 matrix");
    assert_eq!(w.bytes().len(), 68);
    assert_eq!(file.tensor("w").expect("w").offset % 32, 0);
    // Wrong expectations are typed errors naming the key or tensor.
    assert!(matches!(file.str("u32"), Err(GgufError::KeyType { key, .. }) if key == "u32"));
    assert!(matches!(file.usize("i32"), Err(GgufError::KeyType { .. })));
    assert!(
        matches!(file.str("absent"), Err(GgufError::MissingKey { key, .. }) if key == "absent")
    );
    assert!(matches!(
        file.matrix("w", Some([32, 2])),
        Err(GgufError::TensorShape { tensor, .. }) if tensor == "w"
    ));
    assert!(matches!(
        file.vector("nope", None),
        Err(GgufError::MissingTensor { .. })
    ));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = valid().bytes();
    for len in 0..bytes.len() {
        match open(&bytes[..len]) {
            Ok(_) => panic!("a file cut at {len} of {} bytes opened", bytes.len()),
            Err(GgufError::Truncated { .. } | GgufError::Invalid { .. }) => {}
            Err(GgufError::BadMagic { .. }) if len < 4 => {}
            Err(e) => panic!("cut at {len}: unexpected {e}"),
        }
    }
    // Cut inside the header: the counts cannot fit what is left.
    let err = open(&bytes[..40]).expect_err("cut in the header");
    assert!(err.to_string().contains("tensor count"), "{err}");
    // Cut inside a tensor's bytes: that tensor is named.
    let err = open(&bytes[..bytes.len() - 1]).expect_err("cut in the data");
    assert!(
        err.to_string().contains("'w'") && err.to_string().contains("past the end"),
        "{err}"
    );
}

#[test]
fn header_errors_are_typed() {
    let mut bad = valid().bytes();
    bad[0..4].copy_from_slice(b"GGML");
    assert!(matches!(open(&bad), Err(GgufError::BadMagic { found, .. }) if &found == b"GGML"));
    for version in [1, 4] {
        let mut b = valid();
        b.version = version;
        assert!(
            matches!(open(&b.bytes()), Err(GgufError::Version { version: v, .. }) if v == version)
        );
    }
    // Counts far past what the file could hold.
    let mut b = valid().bytes();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = open(&b).expect_err("absurd tensor count");
    assert!(err.to_string().contains("tensor count"), "{err}");
    let mut b = valid().bytes();
    b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = open(&b).expect_err("absurd metadata count");
    assert!(err.to_string().contains("metadata count"), "{err}");
}

#[test]
fn metadata_errors_name_the_key() {
    let unknown = Builder::new().raw("odd", 13, &[0; 8]).bytes();
    assert!(matches!(
        open(&unknown),
        Err(GgufError::UnknownValueType { key, type_id: 13, .. }) if key == "odd"
    ));
    let bool2 = Builder::new().raw("flag", 7, &[2]).bytes();
    let err = open(&bool2).expect_err("bool 2");
    assert!(err.to_string().contains("'flag'"), "{err}");
    let mut huge = 8u32.to_le_bytes().to_vec();
    huge.extend(u64::MAX.to_le_bytes());
    let err = open(&Builder::new().raw("list", 9, &huge).bytes()).expect_err("huge array");
    assert!(err.to_string().contains("'list'"), "{err}");
    // Arrays of arrays of ... five deep.
    let mut nested = 4u32.to_le_bytes().to_vec();
    nested.extend(0u64.to_le_bytes());
    for _ in 0..5 {
        let mut outer = 9u32.to_le_bytes().to_vec();
        outer.extend(1u64.to_le_bytes());
        outer.extend(nested);
        nested = outer;
    }
    let err = open(&Builder::new().raw("deep", 9, &nested).bytes()).expect_err("deep");
    assert!(err.to_string().contains("nested"), "{err}");
    let twice = Builder::new().u32("k", 1).u32("k", 2).bytes();
    let err = open(&twice).expect_err("a repeated key");
    assert!(err.to_string().contains("'k' appears twice"), "{err}");
    let latin1 = Builder::new().raw("name", 8, &gguf_string(&[0xe9])).bytes();
    let err = open(&latin1).expect_err("not UTF-8");
    assert!(err.to_string().contains("UTF-8"), "{err}");
    let align = Builder::new().u32("general.alignment", 3).bytes();
    let err = open(&align).expect_err("alignment 3");
    assert!(err.to_string().contains("general.alignment"), "{err}");
}

#[test]
fn tensor_errors_name_the_tensor() {
    let iq2 = Builder::new().tensor("blk.0.attn_q.weight", &[256], 16, &[0; 66]);
    match open(&iq2.bytes()) {
        Err(GgufError::UnknownTensorType {
            tensor, type_name, ..
        }) => {
            assert_eq!(
                (tensor.as_str(), type_name),
                ("blk.0.attn_q.weight", "IQ2_XXS")
            );
        }
        other => panic!("{other:?}"),
    }
    let cases: Vec<(Builder, &str)> = vec![
        (
            Builder::new().tensor_info("past", &[64], 0, 0),
            "run past the end",
        ),
        (
            Builder::new()
                .tensor("ok", &[8], 0, &[0; 32])
                .tensor_info("far", &[8], 0, 1 << 40),
            "run past the end",
        ),
        (
            Builder::new().tensor_info("huge", &[1 << 62], 0, 0),
            "dimension",
        ),
        (Builder::new().tensor_info("zero", &[0], 0, 0), "dimension"),
        (
            Builder::new().tensor_info("five", &[1, 1, 1, 1, 1], 0, 0),
            "5 dimensions",
        ),
        (
            Builder::new()
                .tensor("odd", &[8], 0, &[0; 32])
                .tensor_info("mis", &[1], 0, 4),
            "alignment",
        ),
        (
            Builder::new().tensor("q8", &[20], 8, &[0; 34]),
            "whole Q8_0 blocks",
        ),
        (
            Builder::new()
                .tensor("t", &[8], 0, &[0; 32])
                .tensor("t", &[8], 0, &[0; 32]),
            "appears twice",
        ),
    ];
    for (b, expected) in cases {
        let err = open(&b.bytes()).expect_err(expected);
        assert!(matches!(err, GgufError::Invalid { .. }), "{err}");
        assert!(
            err.to_string().contains(expected),
            "{err} (expected '{expected}')"
        );
    }
    let err = open(&Builder::new().tensor_info("past", &[64], 0, 0).bytes()).expect_err("past");
    assert!(err.to_string().contains("'past'"), "{err}");
}

/// A tiny `llama` file: 1 layer, hidden 32, 2 heads, vocabulary 8, all F32.
fn tiny_llama(architecture: &str, skip: Option<&str>) -> Builder {
    tiny_llama_saying(architecture, skip, 64)
}

/// The tiny model with `feed_forward_length` set to `said` (its tensors stay 64 wide).
fn tiny_llama_saying(architecture: &str, skip: Option<&str>, said: u32) -> Builder {
    let (h, inter, vocab) = (32u64, 64u64, 8u64);
    let zeros = |n: u64| f32_bytes(&vec![0.01; n as usize]);
    let mut b = Builder::new()
        .str("general.architecture", architecture)
        .u32(&format!("{architecture}.block_count"), 1)
        .u32(&format!("{architecture}.context_length"), 64)
        .u32(&format!("{architecture}.embedding_length"), h as u32)
        .u32(&format!("{architecture}.feed_forward_length"), said)
        .u32(&format!("{architecture}.attention.head_count"), 2)
        .f32(
            &format!("{architecture}.attention.layer_norm_rms_epsilon"),
            1e-5,
        );
    let tensors: Vec<(&str, Vec<u64>)> = vec![
        ("token_embd.weight", vec![h, vocab]),
        ("output_norm.weight", vec![h]),
        ("blk.0.attn_norm.weight", vec![h]),
        ("blk.0.attn_q.weight", vec![h, h]),
        ("blk.0.attn_k.weight", vec![h, h]),
        ("blk.0.attn_v.weight", vec![h, h]),
        ("blk.0.attn_output.weight", vec![h, h]),
        ("blk.0.ffn_norm.weight", vec![h]),
        ("blk.0.ffn_gate.weight", vec![h, inter]),
        ("blk.0.ffn_up.weight", vec![h, inter]),
        ("blk.0.ffn_down.weight", vec![inter, h]),
    ];
    for (name, dims) in tensors {
        if Some(name) != skip {
            let n = dims.iter().product();
            b = b.tensor(name, &dims, 0, &zeros(n));
        }
    }
    b
}

#[test]
fn a_file_read_into_burn_is_checked_before_anything_is_allocated() {
    // Metadata claiming a feed-forward width of 2^30 over 64-wide tensors: the Burn model
    // would need 2^30 x 32 x 3 weights; the shapes are refused first, naming the tensor.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("wide.gguf");
    std::fs::write(&path, tiny_llama_saying("llama", None, 1 << 30).bytes()).expect("write");
    let device = kiln_core::backend::device("cpu").expect("cpu");
    let err = kiln_nlp::models::Llama::from_gguf(&path, &device).expect_err("refused");
    assert!(err.to_string().contains("ffn_gate"), "{err}");
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, tiny_llama("llama", None).bytes()).expect("write");
    let (config, _) = kiln_nlp::models::Llama::from_gguf(&path, &device).expect("read");
    assert_eq!(config.intermediate_size, 64);
}

#[test]
fn models_from_bad_metadata_are_typed_errors() {
    let file = open(&tiny_llama("llama", None).bytes()).expect("the tiny model");
    let (config, model) = LlamaCpu::from_gguf(&file).expect("a tiny llama");
    assert_eq!(
        (config.hidden, config.heads, config.kv_heads, config.vocab),
        (32, 2, 2, 8)
    );
    assert!(config.tied);
    let mut cache = kiln_nlp::models::LlamaCpuCache::new();
    let logits = model
        .forward(&mut cache, &[1, 2, 3], false)
        .expect("forward");
    assert_eq!(logits.len(), 8);
    assert!(logits.iter().all(|v| v.is_finite()));
    assert!(matches!(
        model.forward(&mut cache, &[9], false),
        Err(NlpError::Input(m)) if m.contains("past the vocabulary")
    ));

    let gpt2 = open(&tiny_llama("gpt2", None).bytes()).expect("file");
    assert!(matches!(
        LlamaCpu::from_gguf(&gpt2),
        Err(GgufError::Architecture { architecture, .. }) if architecture == "gpt2"
    ));
    let missing = open(&tiny_llama("llama", Some("blk.0.ffn_up.weight")).bytes()).expect("file");
    assert!(matches!(
        LlamaCpu::from_gguf(&missing),
        Err(GgufError::MissingTensor { tensor, .. }) if tensor == "blk.0.ffn_up.weight"
    ));
    let no_heads = Builder::new()
        .str("general.architecture", "qwen2")
        .u32("qwen2.embedding_length", 32)
        .bytes();
    assert!(matches!(
        LlamaCpu::from_gguf(&open(&no_heads).expect("file")),
        Err(GgufError::MissingKey { key, .. }) if key == "qwen2.attention.head_count"
    ));
    // Absurd sizes in the metadata are refused before anything is allocated for them.
    let many = tiny_llama("llama", None).bytes();
    let at = many
        .windows(b"llama.block_count".len())
        .position(|w| w == b"llama.block_count")
        .expect("the key")
        + b"llama.block_count".len()
        + 4;
    let mut absurd = many.clone();
    absurd[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = LlamaCpu::from_gguf(&open(&absurd).expect("file")).expect_err("4e9 layers");
    assert!(err.to_string().contains("llama.block_count"), "{err}");
    let wide = Builder::new()
        .str("general.architecture", "llama")
        .u32("llama.embedding_length", 32)
        .u32("llama.block_count", 1)
        .raw(
            "llama.attention.head_count",
            10,
            &(1u64 << 40).to_le_bytes(),
        )
        .u32("llama.attention.head_count_kv", 1)
        .raw(
            "llama.attention.key_length",
            10,
            &(1u64 << 30).to_le_bytes(),
        )
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .tensor("token_embd.weight", &[32, 8], 0, &[0; 1024]);
    let err = LlamaCpu::from_gguf(&open(&wide.bytes()).expect("file")).expect_err("overflow");
    assert!(err.to_string().contains("overflow"), "{err}");
    // A key given twice is refused (the file would say two things).
    let wrong = tiny_llama("llama", None).u32("llama.feed_forward_length", 48);
    let err = open(&wrong.bytes()).expect_err("a repeated key");
    assert!(err.to_string().contains("appears twice"), "{err}");
    // No tokenizer in the file: a typed error naming the key.
    let err = kiln_nlp::gguf::tokenizer::tokenizer(&file).expect_err("no tokenizer");
    assert!(err.to_string().contains("tokenizer.ggml.model"), "{err}");
}

/// An array value: the element type, the count, then the encoded elements.
fn array(ty: u32, items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = ty.to_le_bytes().to_vec();
    out.extend((items.len() as u64).to_le_bytes());
    items.iter().for_each(|i| out.extend_from_slice(i));
    out
}

fn strings(items: &[&str]) -> Vec<u8> {
    let items: Vec<Vec<u8>> = items.iter().map(|s| gguf_string(s.as_bytes())).collect();
    array(8, &items)
}

/// The gguf fuzz target's seeds (`crates/fuzz/seeds/gguf/`, not committed: `cargo xtask
/// fuzz` writes them by running this file's seed test with `KILN_FUZZ_SEEDS` set):
/// a tiny `llama` model (1 layer, hidden 32, 2 heads on 1 key/value head, vocabulary 8) with
/// F32, Q8_0 and Q4_K tensors, as `tiny-llama.gguf` with a byte-level BPE vocabulary of 8
/// tokens (two merges, two control tokens) and a chat template, and as `tiny-llama-spm.gguf`
/// with a SentencePiece one (pieces with scores, BOS prepended).
fn fuzz_seeds() -> [(&'static str, Vec<u8>); 2] {
    let model = |b: Builder| {
        b.str("general.architecture", "llama")
            .u32("llama.block_count", 1)
            .u32("llama.context_length", 64)
            .u32("llama.embedding_length", 32)
            .u32("llama.feed_forward_length", 256)
            .u32("llama.attention.head_count", 2)
            .u32("llama.attention.head_count_kv", 1)
            .f32("llama.rope.freq_base", 10000.0)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    };
    // Q8_0 blocks: scale 0.01 (f16 0x211f), quants 0..31; Q4_K: d 0.01, dmin 0.001 (0x1419),
    // then 140 bytes 0..139.
    let q8 = |blocks: usize| -> Vec<u8> {
        let block: Vec<u8> = [0x1f, 0x21].into_iter().chain(0..32).collect();
        block.repeat(blocks)
    };
    let q4k = |blocks: usize| -> Vec<u8> {
        let block: Vec<u8> = [0x1f, 0x21, 0x19, 0x14].into_iter().chain(0..140).collect();
        block.repeat(blocks)
    };
    let f32s = |n: usize| f32_bytes(&vec![0.01; n]);
    let tensors = |b: Builder| {
        b.tensor("token_embd.weight", &[32, 8], 8, &q8(8))
            .tensor("output_norm.weight", &[32], 0, &f32s(32))
            .tensor("blk.0.attn_norm.weight", &[32], 0, &f32s(32))
            .tensor("blk.0.attn_q.weight", &[32, 32], 8, &q8(32))
            .tensor("blk.0.attn_k.weight", &[32, 16], 8, &q8(16))
            .tensor("blk.0.attn_v.weight", &[32, 16], 8, &q8(16))
            .tensor("blk.0.attn_output.weight", &[32, 32], 0, &f32s(1024))
            .tensor("blk.0.ffn_norm.weight", &[32], 0, &f32s(32))
            .tensor("blk.0.ffn_gate.weight", &[32, 256], 8, &q8(256))
            .tensor("blk.0.ffn_up.weight", &[32, 256], 8, &q8(256))
            .tensor("blk.0.ffn_down.weight", &[256, 32], 12, &q4k(32))
    };
    let i32s = |v: &[i32]| -> Vec<Vec<u8>> { v.iter().map(|x| x.to_le_bytes().to_vec()).collect() };
    let bpe = model(Builder::new())
        .str("tokenizer.ggml.model", "gpt2")
        .str("tokenizer.ggml.pre", "smollm")
        .raw(
            "tokenizer.ggml.tokens",
            9,
            &strings(&["a", "b", "ab", "Ġ", "Ġa", "<|im_start|>", "<|im_end|>", "c"]),
        )
        .raw(
            "tokenizer.ggml.token_type",
            9,
            &array(5, &i32s(&[1, 1, 1, 1, 1, 3, 3, 1])),
        )
        .raw("tokenizer.ggml.merges", 9, &strings(&["a b", "Ġ a"]))
        .u32("tokenizer.ggml.eos_token_id", 6)
        .str(
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}",
        );
    let scores: Vec<Vec<u8>> = [0.0f32, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0]
        .iter()
        .map(|x| x.to_le_bytes().to_vec())
        .collect();
    let spm = model(Builder::new())
        .str("tokenizer.ggml.model", "llama")
        .raw(
            "tokenizer.ggml.tokens",
            9,
            &strings(&[
                "<unk>",
                "<s>",
                "</s>",
                "\u{2581}",
                "a",
                "b",
                "\u{2581}a",
                "ab",
            ]),
        )
        .raw("tokenizer.ggml.scores", 9, &array(6, &scores))
        .raw(
            "tokenizer.ggml.token_type",
            9,
            &array(5, &i32s(&[2, 3, 3, 1, 1, 1, 1, 1])),
        )
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2)
        .u32("tokenizer.ggml.unknown_token_id", 0)
        .raw("tokenizer.ggml.add_bos_token", 7, &[1]);
    [
        ("tiny-llama.gguf", tensors(bpe).bytes()),
        ("tiny-llama-spm.gguf", tensors(spm).bytes()),
    ]
}

/// The fuzz seeds are working models with working tokenizers (so that libFuzzer starts from
/// inputs that go all the way through); with `KILN_FUZZ_SEEDS` set (by `cargo xtask fuzz`),
/// they are written into that folder.
#[test]
fn the_fuzz_seed_is_a_working_model_with_a_tokenizer() {
    let [(_, bpe), (_, spm)] = fuzz_seeds();
    let file = open(&bpe).expect("the seed");
    let (config, model) = LlamaCpu::from_gguf(&file).expect("its model");
    assert_eq!((config.kv_heads, config.intermediate), (1, 256));
    let logits = model
        .forward(
            &mut kiln_nlp::models::LlamaCpuCache::new(),
            &[0, 1, 2],
            true,
        )
        .expect("forward");
    assert_eq!(logits.len(), 3 * 8);
    assert!(logits.iter().all(|v| v.is_finite()));
    let tokenizer = kiln_nlp::gguf::tokenizer::tokenizer(&file).expect("its tokenizer");
    // "ab" merges; " a" is "Ġa"; the control token is matched whole.
    let ids = tokenizer
        .encode_plain("ab a<|im_end|>c")
        .expect("encode")
        .ids;
    assert_eq!(ids, [2, 4, 6, 7]);
    // The same model with a SentencePiece vocabulary (the second seed), BOS prepended: in
    // "▁a▁ab" the piece "▁a" (score -4) outranks "ab" (-5), so the second word is "▁a" "b".
    use kiln_nlp::tokenizer::Tokenizer;
    let file = open(&spm).expect("the SentencePiece seed");
    let tokenizer = kiln_nlp::gguf::tokenizer::tokenizer(&file).expect("its tokenizer");
    assert_eq!(tokenizer.encode("a ab").expect("encode").ids, [1, 6, 6, 5]);
    if let Some(dir) = std::env::var_os("KILN_FUZZ_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("the seeds folder");
        for (name, bytes) in fuzz_seeds() {
            std::fs::write(dir.join(name), bytes).expect("a seed");
        }
    }
}

/// Random blocks of ggml type `ty` (Q4_0 2, Q4_1 3, Q8_0 8, Q4_K 12, Q6_K 14, F32 0) for
/// `n` values, scales finite and small (f16 exponents 2^-9 .. 2^-6).
fn random_blocks(ty: u32, n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (len, size, scales): (usize, usize, &[usize]) = match ty {
        2 => (32, 18, &[0]),
        3 => (32, 20, &[0, 2]),
        8 => (32, 34, &[0]),
        12 => (256, 144, &[0, 2]),
        14 => (256, 210, &[208]),
        _ => {
            let values: Vec<f32> = (0..n)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .map(|v| v * 0.2)
                .collect();
            return f32_bytes(&values);
        }
    };
    let mut bytes: Vec<u8> = (0..n / len * size).map(|_| next() as u8).collect();
    for block in bytes.chunks_exact_mut(size) {
        for &at in scales {
            let bits = (((next() % 4 + 6) << 10) | (next() & 0x3ff)) as u16;
            block[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        }
    }
    bytes
}

/// A random `llama` file with its matrices in ggml type `ty`: 2 layers, hidden 64, 4 heads
/// over 2 key/value heads, vocabulary 96, context 64, an untied output.
fn random_llama(ty: u32) -> Vec<u8> {
    random_llama_shaped(ty, ty, 64)
}

/// [`random_llama`] of hidden size `h` (key/value width `h / 2`, feed-forward `2 h`,
/// context `2 h`), the down projections in `down_ty`.
fn random_llama_shaped(ty: u32, down_ty: u32, h: u64) -> Vec<u8> {
    let (kv, inter, vocab) = (h / 2, 2 * h, 96u64);
    let mut b = Builder::new()
        .str("general.architecture", "llama")
        .u32("llama.block_count", 2)
        .u32("llama.context_length", 2 * h as u32)
        .u32("llama.embedding_length", h as u32)
        .u32("llama.feed_forward_length", inter as u32)
        .u32("llama.attention.head_count", 4)
        .u32("llama.attention.head_count_kv", 2)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    let ones = |n: u64| f32_bytes(&vec![1.0; n as usize]);
    b = b
        .tensor(
            "token_embd.weight",
            &[h, vocab],
            8,
            &random_blocks(8, (h * vocab) as usize, 1),
        )
        .tensor("output_norm.weight", &[h], 0, &ones(h))
        .tensor(
            "output.weight",
            &[h, vocab],
            ty,
            &random_blocks(ty, (h * vocab) as usize, 2),
        );
    for l in 0..2u64 {
        let matrices = [
            ("attn_q", [h, h]),
            ("attn_k", [h, kv]),
            ("attn_v", [h, kv]),
            ("attn_output", [h, h]),
            ("ffn_gate", [h, inter]),
            ("ffn_up", [h, inter]),
            ("ffn_down", [inter, h]),
        ];
        b = b
            .tensor(&format!("blk.{l}.attn_norm.weight"), &[h], 0, &ones(h))
            .tensor(&format!("blk.{l}.ffn_norm.weight"), &[h], 0, &ones(h));
        for (k, (name, dims)) in matrices.iter().enumerate() {
            let ty = if *name == "ffn_down" { down_ty } else { ty };
            let bytes = random_blocks(ty, (dims[0] * dims[1]) as usize, 10 * l + k as u64 + 3);
            b = b.tensor(&format!("blk.{l}.{name}.weight"), dims, ty, &bytes);
        }
    }
    b.bytes()
}

/// Continuous batching on quantized weights read in place (Q4_0, Q4_1, Q8_0, and F32 rows
/// in the file): prompts together, joining at different steps, chunked prefill, give each
/// prompt the tokens it gets alone, and alone is `LlamaCpu::generate`; with 8-bit
/// activations too, where the 32-value types' rows are interleaved into tiles.
#[test]
fn a_quantized_batch_is_token_identical_to_each_sequence_alone() {
    use kiln_core::kernels::quant::Activations;
    let prompts: Vec<Vec<u32>> = [4usize, 9, 1, 15, 6, 11, 3]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (0..len)
                .map(|j| ((i * 37 + j * 11 + 5) % 96) as u32)
                .collect()
        })
        .collect();
    for (ty, activations) in [
        (2, Activations::F32),
        (3, Activations::F32),
        (8, Activations::F32),
        (0, Activations::F32),
        (2, Activations::Int8),
        (3, Activations::Int8),
        (8, Activations::Int8),
    ] {
        let file = open(&random_llama(ty)).expect("a random llama");
        let (_, model) = LlamaCpu::from_gguf(&file).expect("its model");
        let model = model.with_activations(activations);
        common::batching::assert_batch_equals_alone(&model, &prompts, 16);
        // Not a degenerate model: the prompts do not all get the same continuation.
        let config = kiln_nlp::generation::GenerationConfig::greedy(16);
        let outs: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                model
                    .generate(p, &config, &|_: &[u32]| String::new(), |_| true)
                    .expect("generate")
                    .ids
            })
            .collect();
        assert!(
            outs.iter().any(|o| o != &outs[0]),
            "type {ty} {activations:?}: one continuation for all"
        );
    }
}

/// With 8-bit activations a prompt past the streamed rows (64 positions) goes through the
/// K-type products of `matmul_quant_with` (tiles on AVX-512 VNNI): Q4_K matrices and Q6_K
/// down projections give the logits of the same prompt fed in chunks the streamed rows
/// take (both llama.cpp's arithmetic, so equal up to summation order), which are not the
/// f32 pass's.
#[test]
fn an_int8_prompt_through_k_type_tiles_gives_the_streamed_logits() {
    use kiln_core::kernels::quant::Activations;
    use kiln_nlp::models::LlamaCpuCache;
    let file = open(&random_llama_shaped(12, 14, 256)).expect("a random K-type llama");
    let (_, f32_model) = LlamaCpu::from_gguf(&file).expect("its model");
    let (_, model) = LlamaCpu::from_gguf(&file).expect("its model");
    let model = model.with_activations(Activations::Int8);
    let prompt: Vec<u32> = (0..100).map(|j| (j * 7 + 3) % 96).collect();
    let whole = model
        .forward(&mut LlamaCpuCache::new(), &prompt, true)
        .expect("the prompt at once");
    let mut cache = LlamaCpuCache::new();
    let mut chunked = Vec::new();
    for chunk in prompt.chunks(50) {
        chunked.extend(model.forward(&mut cache, chunk, true).expect("a chunk"));
    }
    let f32s = f32_model
        .forward(&mut LlamaCpuCache::new(), &prompt, true)
        .expect("the f32 pass");
    let scale = chunked.iter().fold(0f32, |m, v| m.max(v.abs()));
    let gap = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
            / scale
    };
    assert_eq!(whole.len(), chunked.len());
    let (streamed, f32_gap) = (gap(&whole, &chunked), gap(&whole, &f32s));
    eprintln!("int8 tiles vs streamed {streamed:.2e}, vs f32 {f32_gap:.2e}");
    assert!(streamed <= 1e-4, "int8 tiles vs streamed rows: {streamed}");
    assert!(f32_gap > 10.0 * streamed, "int8 vs f32: {f32_gap}");
}

/// A SentencePiece (`llama`) vocabulary as a GGUF file: llama.cpp's tokenizer test vectors
/// for Phi-3's vocabulary (`fixtures/gguf/spm_vocab.json`, written by `make_spm_fixture.py`
/// from llama.cpp's `ggml-vocab-phi-3.gguf` and its `.inp` / `.out`) hold the pieces the
/// test strings can reach, ids kept; the other ids get placeholders no text reaches.
#[test]
fn sentencepiece_vocabularies_tokenize_as_llama_cpp() {
    use kiln_nlp::gguf::GgufWriter;
    use kiln_nlp::tokenizer::Tokenizer;
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf/spm_vocab.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let n = fixture["vocab_size"].as_u64().unwrap() as usize;
    let mut tokens: Vec<Value> = (0..n)
        .map(|i| Value::String(format!("\u{F0000}{i}\u{F0001}")))
        .collect();
    let mut scores = vec![Value::F32(-1e9); n];
    let mut types = vec![Value::I32(5); n];
    for t in fixture["tokens"].as_array().unwrap() {
        let id = t[0].as_u64().unwrap() as usize;
        tokens[id] = Value::String(t[1].as_str().unwrap().to_string());
        scores[id] = Value::F32(t[2].as_f64().unwrap() as f32);
        types[id] = Value::I32(t[3].as_i64().unwrap() as i32);
    }
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set("tokenizer.ggml.tokens", Value::Array(tokens));
    w.set("tokenizer.ggml.scores", Value::Array(scores));
    w.set("tokenizer.ggml.token_type", Value::Array(types));
    for key in ["bos_token_id", "eos_token_id", "unknown_token_id"] {
        let id = fixture[key].as_u64().unwrap() as u32;
        w.set(format!("tokenizer.ggml.{key}"), Value::U32(id));
    }
    let dir = tempfile::tempdir().unwrap();
    let file_path = dir.path().join("spm.gguf");
    w.write(&file_path).unwrap();
    let file = GgufFile::open(&file_path).unwrap();
    let tokenizer = kiln_nlp::gguf::tokenizer::tokenizer(&file).unwrap();
    let mut wrong = Vec::new();
    let cases = fixture["cases"].as_array().unwrap();
    for case in cases {
        let text = case[0].as_str().unwrap();
        let want: Vec<u32> = case[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tokenizer.encode(text).unwrap().ids;
        if got != want {
            wrong.push(format!("{text:?}: {got:?} vs llama.cpp {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    // Decoding gives the text back (without the prefixed space).
    let ids = tokenizer.encode(" Hello, world! 🦙").unwrap().ids;
    assert_eq!(tokenizer.decode(&ids).unwrap(), " Hello, world! 🦙");
    // Pieces without scores: a typed error naming the key.
    let mut w = GgufWriter::new();
    w.set("tokenizer.ggml.model", Value::String("llama".into()));
    w.set(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::String("a".into())]),
    );
    let bare = dir.path().join("bare.gguf");
    w.write(&bare).unwrap();
    let err = kiln_nlp::gguf::tokenizer::tokenizer(&GgufFile::open(&bare).unwrap())
        .expect_err("no scores");
    assert!(err.to_string().contains("tokenizer.ggml.scores"), "{err}");
}
