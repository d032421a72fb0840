//! `corpus_bleu` against sacreBLEU 2.4.3 (tokenize='none', no smoothing) on twelve random
//! corpora with one or two references per hypothesis: score, n-gram precisions, brevity
//! penalty and lengths. The fixture and the script that made it are in `tests/fixtures/`
//! (`make_bleu_fixture.py`).

use kiln_nlp::bleu::corpus_bleu;

#[test]
fn corpus_bleu_equals_sacrebleu() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bleu_sacrebleu.json"
    ))
    .unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let words = |s: &serde_json::Value| -> Vec<String> {
        s.as_str().unwrap().split(' ').map(str::to_string).collect()
    };
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    let mut nonzero = 0;
    for (i, case) in cases.iter().enumerate() {
        let hyps: Vec<Vec<String>> = case["hypotheses"]
            .as_array()
            .unwrap()
            .iter()
            .map(words)
            .collect();
        let refs: Vec<Vec<Vec<String>>> = case["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(words).collect())
            .collect();
        let got = corpus_bleu(&hyps, &refs, 4);
        let close = |a: f64, b: &serde_json::Value| (a - b.as_f64().unwrap()).abs() < 1e-12;
        assert!(
            close(got.score, &case["score"]),
            "case {i}: {} vs {}",
            got.score,
            case["score"]
        );
        assert!(
            close(got.brevity_penalty, &case["brevity_penalty"]),
            "case {i}"
        );
        for (n, p) in got.precisions.iter().enumerate() {
            assert!(
                close(*p, &case["precisions"][n]),
                "case {i} precision {}",
                n + 1
            );
        }
        assert_eq!(
            got.hypothesis_len as u64,
            case["hypothesis_len"].as_u64().unwrap()
        );
        assert_eq!(
            got.reference_len as u64,
            case["reference_len"].as_u64().unwrap()
        );
        nonzero += usize::from(got.score > 0.0);
    }
    assert!(
        nonzero >= 6,
        "the fixture should mostly have non-zero scores"
    );
}
