//! An exported BERT classifier loads back and gives the in-memory model's probabilities, its
//! LoRA adapters merged (needs `KILN_MODELS`: all-MiniLM-L6-v2 as the encoder).

use std::path::PathBuf;

use burn::tensor::activation::softmax;
use kiln_nlp::models::BertClassifier;
use kiln_nlp::models::lora::LoraConfig;
use kiln_nlp::{
    ClassifierMeta, SentenceEncoder, TextClassifierModel, Tokenizer, export_text_classifier,
};

fn minilm() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("KILN_MODELS")?).join("all-MiniLM-L6-v2");
    dir.is_dir().then_some(dir)
}

#[test]
#[ignore = "needs KILN_MODELS"]
fn exported_classifier_equals_the_trained_one() {
    let dir = minilm().expect("KILN_MODELS with all-MiniLM-L6-v2");
    let device = kiln_core::backend::device("cpu").unwrap();
    let encoder = SentenceEncoder::load(&dir, &device).unwrap();
    let texts = [
        "What is the capital of France?",
        "Who wrote Hamlet?",
        "How far is the moon?",
    ];
    let batch = encoder.tokenizer().encode_padded(&texts, Some(64)).unwrap();
    let hidden = encoder.dim();
    device.seed(7);
    let model = BertClassifier::new(encoder.into_bert().unwrap(), hidden, 3, &device)
        .with_lora(&LoraConfig::new().with_rank(4), &device)
        .unwrap();
    let (ids, mask) = batch.to_tensors(&device);
    let want: Vec<f32> = softmax(model.forward(ids, mask), 1)
        .into_data()
        .try_to_vec_as()
        .unwrap();

    let out = tempfile::tempdir().unwrap();
    let meta = ClassifierMeta {
        labels: vec!["a".into(), "b".into(), "c".into()],
        max_len: 64,
    };
    export_text_classifier(model, &dir, &meta, out.path()).unwrap();
    let loaded = TextClassifierModel::load(out.path(), &device).unwrap();
    assert_eq!(loaded.labels(), meta.labels.as_slice());
    let got = loaded.classify(&texts).unwrap();
    assert_eq!(got.len(), 3);
    for (row, want) in got.iter().zip(want.chunks(3)) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for (a, b) in row.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
    assert!(loaded.classify(&[]).unwrap().is_empty());

    // A folder without weights is an error naming the file.
    std::fs::remove_file(out.path().join("model.safetensors")).unwrap();
    let err = TextClassifierModel::load(out.path(), &device).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}
