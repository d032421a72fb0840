//! Helpers shared by the kernels' integration tests.

/// Deterministic values in [-1, 1).
pub fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97))
                % 1000) as f32
                / 500.0
                - 1.0
        })
        .collect()
}
