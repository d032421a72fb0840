//! Continuous batching checked against each sequence alone: the tests of the decoders run
//! their prompts together (joining at different steps) and one by one, and compare.

use std::collections::BTreeMap;

use kiln_nlp::generation::{Admission, BatchLimits, ContinuousBatch, Event};
use kiln_nlp::generation::{Generation, GenerationConfig};
use kiln_nlp::models::LlamaCpu;

/// Runs `prompts` in one [`ContinuousBatch`], prompt `i` admitted at step `i * stagger`
/// (and later while the batch is full), and returns each one's generation. Checks on the
/// way that each token event is the next id of its sequence, that finished sequences leave,
/// and that the reserved cache never passes the budget.
pub fn run_batch(
    model: &LlamaCpu,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    limits: BatchLimits,
    stagger: usize,
) -> Vec<Generation> {
    let mut batch =
        ContinuousBatch::new(model, &[], |_: &[u32]| String::new(), limits).expect("valid limits");
    let mut waiting: Vec<usize> = (0..prompts.len()).collect();
    let mut ids = BTreeMap::new();
    let mut tokens: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let mut done: BTreeMap<usize, Generation> = BTreeMap::new();
    let mut step = 0;
    while done.len() < prompts.len() {
        while let Some(&i) = waiting.first() {
            if i * stagger > step {
                break;
            }
            match batch.admit(&prompts[i], config).expect("admissible") {
                Admission::Started(seq) => {
                    ids.insert(seq, i);
                    waiting.remove(0);
                }
                Admission::Full => break,
            }
        }
        assert!(batch.reserved_bytes() <= limits.kv_budget_bytes);
        for event in batch.step() {
            match event {
                Event::Token { seq, token } => tokens.entry(ids[&seq]).or_default().push(token),
                Event::Finished { seq, generation } => {
                    let i = ids[&seq];
                    assert_eq!(tokens[&i], generation.ids, "prompt {i}: events and ids");
                    done.insert(i, generation);
                }
                Event::Failed { seq, error } => panic!("prompt {}: {error}", ids[&seq]),
            }
        }
        step += 1;
        assert!(step < 100_000, "the batch does not finish");
    }
    assert!(batch.is_empty() && batch.reserved_bytes() == 0);
    done.into_values().collect()
}

/// `prompts` together (staggered, in a batch of `max_sequences`) and each alone give the same
/// tokens; with prompts read in one chunk, alone is also [`LlamaCpu::generate`]'s output.
pub fn assert_batch_equals_alone(model: &LlamaCpu, prompts: &[Vec<u32>], new_tokens: usize) {
    let config = GenerationConfig::greedy(new_tokens);
    let limits = |max_sequences, prefill_chunk| BatchLimits {
        max_sequences,
        prefill_chunk,
        kv_budget_bytes: 1 << 30,
    };
    for chunk in [3, 1024] {
        let alone: Vec<Generation> = prompts
            .iter()
            .map(|p| {
                run_batch(model, std::slice::from_ref(p), &config, limits(1, chunk), 0).remove(0)
            })
            .collect();
        for (max_sequences, stagger) in [(prompts.len(), 0), (prompts.len(), 2), (3, 1)] {
            let together = run_batch(
                model,
                prompts,
                &config,
                limits(max_sequences, chunk),
                stagger,
            );
            assert_eq!(
                together, alone,
                "batch of {max_sequences}, staggered by {stagger}, chunks of {chunk}"
            );
        }
        if chunk == 1024 {
            for (p, a) in prompts.iter().zip(&alone) {
                let g = model
                    .generate(p, &config, &|_: &[u32]| String::new(), |_| true)
                    .expect("generate");
                assert_eq!(&g, a, "alone in a batch and LlamaCpu::generate");
            }
        }
    }
}
