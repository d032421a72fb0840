//! all-MiniLM-L6-v2 against the Python sentence-transformers pipeline
//! (`$KILN_MODELS/../reference/minilm-embeddings.json`, or `$KILN_REFERENCE/...`): identical
//! token ids and every embedding within 1e-4. Ignored by a bare `cargo test`;
//! `cargo xtask ci` runs it when `KILN_MODELS` is set.

use std::path::PathBuf;

use kiln_nlp::{SemanticIndex, SentenceEncoder, Tokenizer};

fn model_dir() -> PathBuf {
    let root = std::env::var_os("KILN_MODELS")
        .expect("KILN_MODELS must point at the models folder for this test");
    PathBuf::from(root).join("all-MiniLM-L6-v2")
}

fn reference() -> serde_json::Value {
    let path = std::env::var_os("KILN_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let models = PathBuf::from(std::env::var_os("KILN_MODELS").expect("KILN_MODELS"));
            models.join("..").join("reference")
        })
        .join("minilm-embeddings.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
#[ignore = "needs KILN_MODELS"]
fn matches_the_python_pipeline() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let encoder = SentenceEncoder::load(model_dir(), &device).unwrap();
    assert_eq!((encoder.dim(), encoder.max_seq_length()), (384, 256));
    let reference = reference();
    let sentences = reference["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences
        .iter()
        .map(|s| s["sentence"].as_str().unwrap())
        .collect();
    for (s, text) in sentences.iter().zip(&texts) {
        let want: Vec<u32> = s["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(encoder.tokenize(text).unwrap().ids, want, "{text:?}");
    }
    // Batches of 5 mix lengths, so padding is exercised. Both inference paths: the host
    // engine (BertCpu, the CPU default) and the Burn module.
    let tensor_path = SentenceEncoder::load(model_dir(), &device)
        .unwrap()
        .with_cpu_kernels(false);
    for (name, encoder) in [("BertCpu", &encoder), ("Burn module", &tensor_path)] {
        let got = encoder.encode(&texts, 5).unwrap();
        let mut worst = 0f64;
        for (s, g) in sentences.iter().zip(&got) {
            let want = s["embedding"].as_array().unwrap();
            assert_eq!(want.len(), g.len());
            for (w, x) in want.iter().zip(g) {
                worst = worst.max((w.as_f64().unwrap() - *x as f64).abs());
            }
        }
        assert!(worst <= 1e-4, "{name}: max abs difference {worst}");
        println!("{name}: max abs difference to the reference: {worst:e}");
    }
}

#[test]
#[ignore = "needs KILN_MODELS"]
fn truncates_at_max_seq_length() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let encoder = SentenceEncoder::load(model_dir(), &device).unwrap();
    let long = "word ".repeat(400);
    let e = encoder.tokenizer().encode(&long).unwrap();
    assert_eq!(e.ids.len(), 256);
    assert_eq!((e.ids[0], e.ids[255]), (101, 102));
    let v = encoder.encode(&[long.as_str()], 1).unwrap();
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

/// 8-bit dense layers (`SentenceEncoder::with_int8`): each embedding's cosine to the f32
/// one, on the reference sentences and the 1,000 benchmark sentences, and a semantic
/// search's top 10 (the first 100 benchmark sentences as queries over all 1,000).
#[test]
#[ignore = "needs KILN_MODELS"]
fn int8_embeddings_stay_near_f32_and_keep_the_search() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let f32s = SentenceEncoder::load(model_dir(), &device).unwrap();
    let int8 = SentenceEncoder::load(model_dir(), &device)
        .unwrap()
        .with_int8(true)
        .unwrap();
    let reference = reference();
    let short: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sentence"].as_str().unwrap())
        .collect();
    let path = PathBuf::from(std::env::var_os("KILN_MODELS").unwrap())
        .join("../reference/bench-sentences-1000.txt");
    let text = std::fs::read_to_string(path).unwrap();
    let bench: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut embedded = Vec::new();
    for (name, texts) in [("reference", &short), ("benchmark", &bench)] {
        let (want, got) = (
            f32s.encode(texts, 32).unwrap(),
            int8.encode(texts, 32).unwrap(),
        );
        // Normalised embeddings: the cosine is the dot product.
        let cosines: Vec<f32> = want.iter().zip(&got).map(|(w, g)| dot(w, g)).collect();
        let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
        let min = cosines.iter().copied().fold(1f32, f32::min);
        eprintln!(
            "{name}: {} sentences, cosine to f32 mean {mean:.5}, min {min:.5}",
            texts.len()
        );
        assert!(
            mean >= 0.995 && min > 0.98,
            "{name}: mean {mean}, min {min}"
        );
        assert!(
            cosines.iter().any(|&c| c < 0.99999),
            "{name}: the 8-bit path ran"
        );
        embedded.push((want, got));
    }
    let (want, got) = &embedded[1];
    let top10 = |all: &[Vec<f32>], q: usize| {
        let mut scored: Vec<(f32, usize)> = all
            .iter()
            .enumerate()
            .map(|(i, e)| (dot(&all[q], e), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored[..10].iter().map(|s| s.1).collect::<Vec<_>>()
    };
    let overlap: usize = (0..100)
        .map(|q| {
            let (w, g) = (top10(want, q), top10(got, q));
            w.iter().filter(|i| g.contains(i)).count()
        })
        .sum();
    eprintln!(
        "search: top-10 overlap with f32 {:.2} of 10",
        overlap as f64 / 100.0
    );
    assert!(overlap >= 900, "top-10 overlap {overlap} of 1000");
}

/// `SemanticIndex::from_corpus` holds the encoder's own vectors (normalised): each sentence
/// finds itself first with cosine 1; an empty corpus is an error.
#[test]
#[ignore = "needs KILN_MODELS"]
fn an_index_from_a_corpus_finds_each_sentence_itself() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let encoder = SentenceEncoder::load(model_dir(), &device).unwrap();
    let texts = [
        "The cat sat on the mat.",
        "Stock markets fell sharply today.",
        "A recipe for tomato soup.",
    ];
    let index = SemanticIndex::from_corpus(&encoder, &texts, 2).unwrap();
    assert_eq!((index.len(), index.dim()), (3, 384));
    let queries = encoder.encode(&texts, 3).unwrap();
    let hits = index.search(&queries, 1, &device).unwrap();
    for (i, row) in hits.iter().enumerate() {
        assert_eq!(row[0].index, i);
        assert_eq!(row[0].text, texts[i]);
        assert!((row[0].score - 1.0).abs() < 1e-5, "{}", row[0].score);
    }
    let err = SemanticIndex::from_corpus(&encoder, &[], 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no text"), "{err}");
}

/// The `tokenizer.json` path splits CJK ideographs into one word each (BERT's
/// `handle_chinese_chars`) before WordPiece, lower-cases Latin letters and keeps unknown
/// characters as `[UNK]`: the ids are the characters' lines in `vocab.txt` (0-based).
#[test]
#[ignore = "needs KILN_MODELS"]
fn splits_chinese_characters_as_bert_does() {
    let dir = model_dir();
    let vocab = std::fs::read_to_string(dir.join("vocab.txt")).unwrap();
    let line = |token: &str| vocab.lines().position(|l| l == token).unwrap() as u32;
    let tokenizer = kiln_nlp::HfTokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    // 爱 is not in bert-base-uncased's vocabulary; without the split the whole run of four
    // ideographs would be one unknown word.
    let enc = tokenizer.encode("我爱北京 OK").unwrap();
    assert_eq!(
        enc.tokens,
        ["[CLS]", "我", "[UNK]", "北", "京", "ok", "[SEP]"]
    );
    let want: Vec<u32> = enc.tokens.iter().map(|t| line(t)).collect();
    assert_eq!(enc.ids, want);
}
