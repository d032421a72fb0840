//! Sentence-embedding throughput: all-MiniLM-L6-v2 on the 1,000 sentences of
//! `reference/bench-sentences-1000.txt` at batch 32 (tokenization included, model loading
//! excluded), on the default CPU backend. The sentence-transformers peer is
//! `benches/peers/minilm_sentence_transformers.py`, same case name.
//!
//! `embeddinggemma_embed_256_b32`: EmbeddingGemma-300M (Gemma 3 bidirectional, 768-d) on the
//! first 256 of those sentences at batch 32, when `KILN_EMBEDDINGGEMMA` names its folder
//! (see `tests/fixtures/embeddinggemma/make_reference.py`); its peer is
//! `benches/peers/embeddinggemma_sentence_transformers.py`.
//!
//! Full runs need `KILN_MODELS` (the reference folder is its sibling); tiny runs (smoke tests)
//! push random ids through a 2-layer random encoder.

use kiln_dev::bench::Bencher;
use kiln_nlp::SentenceEncoder;
use kiln_nlp::models::BertConfig;
use kiln_nlp::sentence::{Pooling, pad_batch, pool};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut bench = Bencher::from_args();
    let device = kiln_core::backend::device("cpu")?;
    if bench.tiny() {
        let config: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 32,
                "max_position_embeddings": 32}"#,
        )?;
        let model = config.init(&device);
        let seqs: Vec<Vec<u32>> = (0..4).map(|n| (1..8 + n).collect()).collect();
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        bench.run(
            "minilm_embed_1000_b32",
            "flex (tiny)",
            Some((4.0, "sentences")),
            || {
                let (ids, mask) = pad_batch(&refs, 0, &device);
                let _ =
                    pool(model.forward(ids, mask.clone()), mask, Pooling::Mean, true).into_data();
            },
        );
    } else if bench.enabled("minilm_embed_1000_b32") {
        let models = std::path::PathBuf::from(
            std::env::var_os("KILN_MODELS").ok_or("the full benchmark needs KILN_MODELS")?,
        );
        // KILN_PRECISION=int8: the dense layers in 8 bits (`SentenceEncoder::with_int8`).
        let int8 = std::env::var("KILN_PRECISION").is_ok_and(|v| v == "int8");
        let encoder =
            SentenceEncoder::load(models.join("all-MiniLM-L6-v2"), &device)?.with_int8(int8)?;
        let path = models
            .join("..")
            .join("reference")
            .join("bench-sentences-1000.txt");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let texts: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let n = texts.len() as f64;
        let mut failed = None;
        bench.run(
            "minilm_embed_1000_b32",
            if int8 { "kiln flex int8" } else { "kiln flex" },
            Some((n, "sentences")),
            || {
                if let Err(e) = encoder.encode(&texts, 32) {
                    failed = Some(e);
                }
            },
        );
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    if !bench.tiny()
        && bench.enabled("embeddinggemma_embed_256_b32")
        && let (Some(dir), Some(models)) = (
            std::env::var_os("KILN_EMBEDDINGGEMMA"),
            std::env::var_os("KILN_MODELS"),
        )
    {
        let encoder = SentenceEncoder::load(dir, &device)?;
        let path = std::path::PathBuf::from(models)
            .join("..")
            .join("reference")
            .join("bench-sentences-1000.txt");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let texts: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(256)
            .collect();
        let mut failed = None;
        bench.run(
            "embeddinggemma_embed_256_b32",
            "kiln flex",
            Some((texts.len() as f64, "sentences")),
            || {
                if let Err(e) = encoder.encode(&texts, 32) {
                    failed = Some(e);
                }
            },
        );
        if let Some(e) = failed {
            return Err(e.into());
        }
    }
    bench.finish()?;
    Ok(())
}
