//! A GGUF file: the container, then (when it opens) a decoder from its metadata, a step of
//! it, and its tokenizer and chat template, as `TextGenerator::load` reads them.
#![no_main]

use kiln_nlp::gguf::GgufFile;
use kiln_nlp::models::{LlamaCpu, LlamaCpuCache};
use kiln_nlp::tokenizer::Tokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::open(kiln_fuzz::file("model.gguf", data)) else {
        return;
    };
    // Keep the model small enough for a fuzzing step.
    if let Ok((config, model)) = LlamaCpu::from_gguf(&file)
        && config.hidden * config.intermediate <= 1 << 20
        && config.layers <= 4
    {
        let _ = model.forward(&mut LlamaCpuCache::new(), &[0, 1], false);
    }
    if let Ok(tokenizer) = kiln_nlp::gguf::tokenizer::tokenizer(&file) {
        if let Ok(e) = tokenizer.encode_plain("ab a<|im_end|>") {
            let _ = tokenizer.decode(&e.ids);
        }
    }
});
