//! Real data: a short training run on SMS Spam beats the majority class (86.6% ham).
//! Needs `KILN_DATA` (the folder holding `sms-spam/`).

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::StopRules;
use kiln_core::{Data, Trainer, TrainerConfig};
use kiln_nlp::data::read_sms_spam;
use kiln_nlp::models::LstmClassifierConfig;
use kiln_nlp::vocab::{WordTokenizer, WordVocabConfig};
use kiln_nlp::{TextBatcher, TextItem, Tokenizer};

#[test]
#[ignore = "needs KILN_DATA"]
fn a_short_run_beats_the_majority_class() {
    let data = std::path::PathBuf::from(std::env::var_os("KILN_DATA").expect("KILN_DATA"));
    let all = read_sms_spam(data.join("sms-spam").join("SMSSpamCollection")).unwrap();
    assert_eq!(all.len(), 5574);
    let labels: Vec<usize> = all.iter().map(|t| t.label).collect();
    let (train, test) = kiln_core::data::stratified_split(&labels, 0.2, 42);
    let train: Vec<_> = train
        .into_iter()
        .take(2000)
        .map(|i| all[i].clone())
        .collect();
    let tok = WordTokenizer::build(
        train.iter().map(|t| t.text.as_str()),
        &WordVocabConfig::new().with_lowercase(true).with_min_freq(2),
    );
    let items = |idx: &mut dyn Iterator<Item = &kiln_nlp::data::LabeledText>| -> Vec<TextItem> {
        idx.map(|t| TextItem {
            tokens: tok.encode(&t.text).unwrap().ids,
            label: t.label,
        })
        .collect()
    };
    let train_items = items(&mut train.iter());
    let test_items = items(&mut test.iter().map(|&i| &all[i]));
    let device = kiln_core::backend::device("cpu").unwrap();
    device.seed(1);
    let model = LstmClassifierConfig::new(tok.vocab_size(), 2)
        .with_embed_dim(32)
        .with_hidden(32)
        .with_bidirectional(true)
        .init(&device);
    let batcher = TextBatcher::new(0, 48);
    let config = TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::Constant { lr: 3e-3 })
        .with_batch_size(32)
        .with_stop(StopRules::epochs(2))
        .with_checkpoints(false)
        .with_progress(kiln_core::train::ProgressMode::Quiet);
    let fitted = Trainer::new(config, &device)
        .fit(
            model,
            &Data::new(InMemDataset::new(train_items), batcher),
            None,
        )
        .unwrap();
    let mut correct = 0;
    for chunk in test_items.chunks(256) {
        let b = batcher.batch(chunk.to_vec(), &device);
        let predicted: Vec<i64> = fitted
            .model
            .forward(b.tokens, b.mask)
            .argmax(1)
            .into_data()
            .iter::<i64>()
            .collect();
        correct += predicted
            .iter()
            .zip(chunk)
            .filter(|(p, t)| **p as usize == t.label)
            .count();
    }
    let accuracy = correct as f64 / test_items.len() as f64;
    assert!(
        accuracy > 0.9,
        "held-out accuracy {accuracy} (majority class 0.866)"
    );
}
