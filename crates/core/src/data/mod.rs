//! Data utilities shared by the domain crates: in-memory datasets and seeded splits on top of
//! Burn's `Dataset`, a checksummed [downloader](download), and [text] line reading that
//! survives Latin-1 files.

pub mod download;
pub mod text;

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

/// Splits `0..labels.len()` like [`split_indices`] but within each class, so that both sides
/// keep the class proportions: the second set holds `fraction` of every class (rounded).
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let (mut keep, mut held) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        let (a, b) = split_indices(members.len(), fraction, seed.wrapping_add(c as u64));
        keep.extend(a.into_iter().map(|i| members[i]));
        held.extend(b.into_iter().map(|i| members[i]));
    }
    shuffle(&mut keep, seed);
    shuffle(&mut held, seed.wrapping_add(1));
    (keep, held)
}

/// A stratified train / validation / test split of `0..labels.len()`: `valid + test` of every
/// class is held out with `seed` ([`stratified_split`]), then the held-out part is split again,
/// stratified, with `seed + 1`, its second set holding `test / (valid + test)` of it. Each set
/// is shuffled. (The Chinese-sentiment peer script, `benches/peers/chinese_sentiment_tfidf.py`,
/// ports this rule to reproduce the split.)
pub fn stratified_three_way(
    labels: &[usize],
    valid: f64,
    test: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let held_fraction = (valid + test).clamp(0.0, 1.0);
    let (train, held) = stratified_split(labels, held_fraction, seed);
    if held_fraction <= 0.0 {
        return (train, held, Vec::new());
    }
    let held_labels: Vec<usize> = held.iter().map(|&i| labels[i]).collect();
    let (v, t) = stratified_split(&held_labels, test / held_fraction, seed.wrapping_add(1));
    let pick = |idx: Vec<usize>| idx.into_iter().map(|i| held[i]).collect();
    (train, pick(v), pick(t))
}

/// Fisher-Yates shuffle driven by [`SplitMix64`]: the same seed gives the same order on every
/// platform.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// A small, fast, seedable random stream (Steele, Lea and Flood's SplitMix64) for data work:
/// shuffles, splits, augmentation, negative sampling, synthetic data. Not for cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection so that there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod stratified_tests {
    use super::*;

    #[test]
    fn stratified_split_keeps_class_shares_and_partitions() {
        let labels: Vec<usize> = (0..1000).map(|i| usize::from(i % 10 == 0)).collect();
        let (a, b) = stratified_split(&labels, 0.2, 7);
        assert_eq!((a.len(), b.len()), (800, 200));
        assert_eq!(b.iter().filter(|&&i| labels[i] == 1).count(), 20);
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(stratified_split(&labels, 0.2, 7), (a, b));
    }

    #[test]
    fn three_way_split_is_a_stratified_partition() {
        let labels: Vec<usize> = (0..1000).map(|i| usize::from(i % 4 == 0)).collect();
        let (train, valid, test) = stratified_three_way(&labels, 0.1, 0.1, 0);
        assert_eq!((train.len(), valid.len(), test.len()), (800, 100, 100));
        let positives = |set: &[usize]| set.iter().filter(|&&i| labels[i] == 1).count();
        assert_eq!(
            (positives(&train), positives(&valid), positives(&test)),
            (200, 25, 25)
        );
        let mut all: Vec<usize> = train.iter().chain(&valid).chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(
            stratified_three_way(&labels, 0.1, 0.1, 0),
            (train, valid, test)
        );
        assert_ne!(
            stratified_three_way(&labels, 0.1, 0.1, 1).2,
            stratified_three_way(&labels, 0.1, 0.1, 0).2
        );
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

        #[test]
        fn below_stays_in_range(seed: u64, n in 1u64..1000) {
            let mut rng = SplitMix64::new(seed);
            for _ in 0..100 {
                prop_assert!(rng.below(n) < n);
                let u = rng.uniform();
                prop_assert!((0.0..1.0).contains(&u));
            }
        }
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = SplitMix64::new(3);
        let xs: Vec<f64> = (0..20_000).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
}
