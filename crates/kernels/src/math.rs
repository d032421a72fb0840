//! Branch-free single-precision functions that vectorise (no library calls), and the loops
//! over them: `exp`, the sigmoid and tanh built on it, `erf` and the exact GELU, SwiGLU and
//! GeGLU, and row sums.

use rayon::prelude::*;

use crate::cpu::{simd_dispatch, with_simd};

/// `e^x` in single precision without a library call (Cephes' `expf`: range reduction by
/// powers of two and a degree-6 polynomial, within 2 ulp), so that loops over it vectorise.
/// A NaN stays NaN, so that a diverged layer is not hidden.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // max/min and a select rather than `clamp` (branches, which keep loops over it scalar).
    #[allow(clippy::manual_clamp)]
    let clamped = x.max(-87.0).min(88.0);
    let x = if x.is_nan() { x } else { clamped };
    // Round to nearest without `round` (a library call on baseline x86-64): adding 1.5 * 2^23
    // leaves n in the low mantissa bits, `0x4B40_0000 + n`.
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = p * r * r + r + 1.0;
    // 2^n from those bits by integer arithmetic (`n as i32` is a saturating conversion,
    // which does not vectorise): shifting by 23 drops 0x4B40_0000, leaving (n + 127) << 23.
    p * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// The logistic function on [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh` on [`exp`].
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

/// The error function in single precision, as a rational function of `x` (clamped to
/// `[-4, 4]`, outside which `erf` rounds to +-1 in f32): the approximation Eigen and XLA use.
/// Branch-free, so loops over it vectorise. Largest error against the f64 `erf` 3.3e-7 (at
/// x = 3.94, about 5 units in the last place of a value near 1).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329_2e-3);
    q = x2.mul_add(q, -1.426_473_9e-2);
    x * p / q
}

/// The exact GELU, `x (1 + erf(x / sqrt 2)) / 2`, over a slice in place, on every core
/// (rayon), with [`erf`].
pub fn gelu_erf_in_place(values: &mut [f32]) {
    const CHUNK: usize = 16 * 1024;
    values
        .par_chunks_mut(CHUNK)
        .for_each(|chunk| with_simd(|| gelu_loop(chunk)));
}

#[inline(always)]
fn gelu_loop(values: &mut [f32]) {
    for v in values.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `out = silu(gate) * up` elementwise, SiLU as `g * sigmoid(g)`.
#[inline(always)]
fn swiglu_loop(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g * sigmoid(g) * u;
    }
}

simd_dispatch!(
    /// `out = g sigmoid(g) u` for the gate `g` and up projection `u` of a SwiGLU feed-forward
    /// layer (over the shortest of the three), on the widest vectors the CPU has.
    pub swiglu, swiglu_loop, (out: &mut [f32], gate: &[f32], up: &[f32])
);

/// `out = gelu_tanh(g) * u`, the tanh approximation of GELU (PyTorch's
/// `gelu(approximate="tanh")`) on [`tanh`].
#[inline(always)]
fn geglu_loop(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let inner = 0.797_884_6 * (g + 0.044_715 * g * g * g);
        *o = 0.5 * g * (1.0 + tanh(inner)) * u;
    }
}

simd_dispatch!(
    /// `out = gelu_tanh(g) u` for the gate `g` and up projection `u` of a GeGLU feed-forward
    /// layer (Gemma's; over the shortest of the three), on the widest vectors the CPU has.
    pub geglu, geglu_loop, (out: &mut [f32], gate: &[f32], up: &[f32])
);

/// `sums += ` every `sums.len()`-wide row of `block`.
#[inline(always)]
fn add_row_block(sums: &mut [f32], block: &[f32]) {
    for row in block.chunks_exact(sums.len()) {
        for (a, v) in sums.iter_mut().zip(row) {
            *a += v;
        }
    }
}

simd_dispatch!(
    /// `sums += ` every `sums.len()`-wide row of `block` (a trailing part row is ignored),
    /// on the widest vectors the CPU has.
    pub add_rows, add_row_block, (sums: &mut [f32], block: &[f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_is_silu_of_the_gate_times_up() {
        let gate: Vec<f32> = (0..50).map(|i| i as f32 * 0.37 - 9.0).collect();
        let up: Vec<f32> = (0..50).map(|i| 1.5 - i as f32 * 0.05).collect();
        let mut out = vec![0f32; 50];
        swiglu(&mut out, &gate, &up);
        for ((o, &g), &u) in out.iter().zip(&gate).zip(&up) {
            let want = f64::from(g) / (1.0 + (-f64::from(g)).exp()) * f64::from(u);
            assert!(
                (f64::from(*o) - want).abs() <= 2e-6 * (1.0 + want.abs()),
                "{g}: {o} vs {want}"
            );
        }
    }

    /// erf in f64 from its Taylor series (|x| < 3) and continued fraction (beyond), to 1e-15.
    fn erf64(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        r.copysign(x)
    }

    #[test]
    fn erf_is_within_4e7_of_the_f64_function_everywhere() {
        assert!((erf64(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
        assert!((erf64(3.5) - 0.999_999_256_901_627_7).abs() < 1e-15);
        let mut worst = (0.0f64, 0.0f32);
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let err = (erf(x) as f64 - erf64(x as f64)).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 < 4e-7, "erf off by {} at {}", worst.0, worst.1);
        assert!((erf(f32::INFINITY) - 1.0).abs() < 2e-7);
        assert!((erf(-1e30) + 1.0).abs() < 2e-7);
        assert!(erf(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_matches_the_formula_in_f64() {
        let mut xs: Vec<f32> = (0..70_001).map(|i| (i as f32 - 35_000.0) * 2e-4).collect();
        let want: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = x as f64;
                0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
            })
            .collect();
        gelu_erf_in_place(&mut xs);
        for (y, want) in xs.iter().zip(&want) {
            assert!(
                (*y as f64 - want).abs() < 1e-6 * (1.0 + want.abs()),
                "{y} vs {want}"
            );
        }
    }

    #[test]
    fn geglu_is_the_tanh_gelu_of_the_gate_times_up() {
        let gate: Vec<f32> = (0..2000).map(|i| (i as f32 - 1000.0) * 0.01).collect();
        let up: Vec<f32> = (0..2000).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut out = vec![0f32; 2000];
        geglu(&mut out, &gate, &up);
        for ((&o, &g), &u) in out.iter().zip(&gate).zip(&up) {
            let gd = g as f64;
            let want = 0.5
                * gd
                * (1.0 + (0.797_884_560_802_865_4 * (gd + 0.044715 * gd.powi(3))).tanh())
                * u as f64;
            assert!(
                (o as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                "{g}: {o} vs {want}"
            );
        }
    }

    #[test]
    fn exp_sigmoid_and_tanh_are_within_a_few_ulp_of_f64() {
        let mut worst = [0f64; 3];
        let mut x = -30.0f32;
        while x <= 30.0 {
            let xd = x as f64;
            let e = (exp(x) as f64 - xd.exp()).abs() / xd.exp();
            let s = (sigmoid(x) as f64 - 1.0 / (1.0 + (-xd).exp())).abs();
            let t = (tanh(x) as f64 - xd.tanh()).abs();
            worst = [worst[0].max(e), worst[1].max(s), worst[2].max(t)];
            x += 1e-3;
        }
        assert!(worst[0] < 3e-7, "exp relative error {}", worst[0]);
        assert!(worst[1] < 2e-7, "sigmoid absolute error {}", worst[1]);
        assert!(worst[2] < 4e-7, "tanh absolute error {}", worst[2]);
        assert!(sigmoid(-200.0) < 1e-37);
        assert!(exp(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn row_sums_add_every_whole_row() {
        let mut sums = vec![1.0f32, 2.0, 3.0];
        add_rows(&mut sums, &[1.0, 1.0, 1.0, 10.0, 20.0, 30.0, 99.0]);
        assert_eq!(sums, [12.0, 23.0, 34.0]);
    }
}
