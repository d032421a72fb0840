//! A saved semantic index, then a search in it when it loads.
#![no_main]

use burn::tensor::Device;
use kiln_nlp::search::SemanticIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = SemanticIndex::load(kiln_fuzz::file("index.bin", data))
        && index.dim() > 0
        && index.dim() < 4096
    {
        let query = vec![vec![1.0f32; index.dim()]];
        let _ = index.search(&query, 3, &Device::flex());
    }
});
