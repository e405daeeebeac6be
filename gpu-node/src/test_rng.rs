//! Inputs for the CPU kernels' tests: a fixed linear congruential sequence
//! (Numerical Recipes' constants), so every kernel test sees the same values
//! run after run, without a random-number crate.

/// `n` values in [-0.5, 0.5) from `seed`.
pub fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}
