//! Rating files: MovieLens 100K's `u.data`, `ratings.csv`, `ratings.dat`, strict and lenient.
#![no_main]

use kiln_recsys::data::CsvFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = kiln_fuzz::file("ratings", data);
    for format in [
        CsvFormat::movielens_100k(),
        CsvFormat::movielens_csv(),
        CsvFormat::movielens_dat(),
    ] {
        for lenient in [false, true] {
            if let Ok(ratings) = format.clone().with_lenient(lenient).read(&path) {
                // What was read indexes: every id is inside its map.
                let _ = kiln_recsys::TrainSet::new(&ratings);
            }
        }
    }
});
