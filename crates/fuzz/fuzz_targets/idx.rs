//! IDX image and label files (MNIST's format), raw or gzip-compressed.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = Path::new("fuzz.idx");
    if let Ok(images) = kiln_vision::data::idx::parse_images(data, name) {
        // Every image the reader says it holds can be read.
        // Every image the reader says it holds can be read, and none past them.
        for i in 0..images.count().min(4) {
            assert!(images.image(i).is_some());
        }
        assert!(images.image(images.count()).is_none());
        let encoded = kiln_vision::data::idx::encode_images(&images);
        let again = kiln_vision::data::idx::parse_images(&encoded, name).expect("round trip");
        assert_eq!(again, images);
    }
    let _ = kiln_vision::data::idx::parse_labels(data, name);
    // The same bytes as a (maybe gzip) file.
    let path = kiln_fuzz::file("images.idx.gz", data);
    let _ = kiln_vision::data::idx::read_maybe_gz(&path);
});
