//! Data utilities shared by the domain crates: in-memory datasets and seeded splits on top of
//! Burn's `Dataset`, and a checksummed [downloader](download).

pub mod download;

pub use burn::data::dataset::{Dataset, InMemDataset};
pub use download::{Downloader, default_cache_dir, sha256_file};

/// Splits `0..n` into two seeded, shuffled index sets, the second holding `fraction` of the
/// items (rounded, at least one when `n > 1` and `fraction > 0`).
pub fn split_indices(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    shuffle(&mut idx, seed);
    let mut held = ((n as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    if held == 0 && fraction > 0.0 && n > 1 {
        held = 1;
    }
    let rest = idx.split_off(n - held);
    (idx, rest)
}

/// Fisher-Yates shuffle driven by a SplitMix64 stream: the same seed gives the same order on
/// every platform.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn split_is_a_seeded_partition(n in 0usize..500, fraction in 0.0f64..1.0, seed: u64) {
            let (a, b) = split_indices(n, fraction, seed);
            prop_assert_eq!(a.len() + b.len(), n);
            let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(split_indices(n, fraction, seed), (a, b));
        }
    }
}
