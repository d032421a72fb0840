//! What the recommender benchmarks share: the generated ratings of their tiny (smoke) runs.

use kiln_core::data::SplitMix64;
use kiln_recsys::data::Interactions;

/// `n` seeded ratings of 100 users on 80 items, 1-5 from a fixed pattern.
pub fn generated(n: usize) -> Interactions {
    let mut rng = SplitMix64::new(7);
    let t: Vec<(u32, u32, f32)> = (0..n)
        .map(|_| {
            let (u, i) = (rng.below(100) as u32, rng.below(80) as u32);
            (u, i, 1.0 + ((u * 3 + i * 5) % 5) as f32)
        })
        .collect();
    Interactions::from_triples(&t)
}
