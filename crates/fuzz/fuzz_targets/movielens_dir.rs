//! A MovieLens 100K folder: `u.data`, `u.item` and `u.user` (the input split in three), then
//! the item and user feature matrices built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = kiln_fuzz::parts(data, 3);
    let dir = kiln_fuzz::dir().join("ml");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in ["u.data", "u.item", "u.user"].iter().zip(&parts) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    if let Ok(ml) = kiln_recsys::data::MovieLens::load(&dir) {
        let _ = ml.item_features();
        let _ = ml.user_features();
    }
});
