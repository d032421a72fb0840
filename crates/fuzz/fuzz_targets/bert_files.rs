//! A Hugging Face BERT folder's files: `config.json` (read and checked, then a model built
//! from it when it is small), and `model.safetensors` loaded into a fixed small model.
#![no_main]

use burn::tensor::Device;
use kiln_nlp::models::{Bert, BertConfig};
use libfuzzer_sys::fuzz_target;

fn tiny() -> BertConfig {
    serde_json::from_str(
        r#"{"vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 16, "type_vocab_size": 2}"#,
    )
    .expect("a valid config")
}

fuzz_target!(|data: &[u8]| {
    let [config, weights] = kiln_fuzz::parts(data, 2)[..] else {
        unreachable!("two parts")
    };
    let device = Device::flex();
    if let Ok(config) = BertConfig::from_file(kiln_fuzz::file("config.json", config)) {
        // Build only what fits in a fuzzing process.
        let size = config.vocab_size.saturating_mul(config.hidden_size);
        if size < 1 << 16 && config.num_hidden_layers <= 2 && config.intermediate_size < 256 {
            let _ = config.init(&device);
        }
    }
    let _ = Bert::load(&tiny(), kiln_fuzz::file("model.safetensors", weights), &device);
});
