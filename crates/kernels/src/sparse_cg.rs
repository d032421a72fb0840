//! The conjugate-gradient row solve of implicit-feedback ALS (Hu, Koren and Volinsky 2008;
//! Takács et al. 2011), compiled for the widest vector instructions the CPU has: it is the
//! whole cost of an ALS iteration (a dot product and an `axpy` of factor rows per stored
//! interaction per step), and baseline x86-64 code runs it at half the speed of AVX2 + FMA.
//!
//! For one row (a user with its items, or an item with its users) it improves `x` towards the
//! solution of `(G + Yᵀ (C - I) Y) x = Yᵀ C p`, where `G = YᵀY + reg I` is shared by every row,
//! `Y` holds the partners' factor rows, and partner `j` with strength `r_j` has confidence
//! `c_j = 1 + alpha r_j` and preference 1. `kiln-recsys`'s ALS calls it for every row.
//!
//! The dot product of two factor rows is written in AVX-512 and AVX2 intrinsics: LLVM turns
//! portable versions of it into two-lane operations inside this loop nest. The `unsafe` here
//! is those unaligned loads (inside both slices by the loop bounds) and the calls into the
//! `#[target_feature]` functions after [`crate::cpu::level`] found the features.

use crate::cpu::{Simd, level};

/// `a . b` over the shorter of the two, portable: sixteen accumulators and a tree reduction.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for (a, (x, y)) in acc.iter_mut().zip(x.iter().zip(y)) {
            *a = x.mul_add(*y, *a);
        }
    }
    let mut tail = 0f32;
    for (x, y) in ar.iter().zip(br) {
        tail = x.mul_add(*y, tail);
    }
    let h: [f32; 8] = std::array::from_fn(|l| acc[l] + acc[l + 8]);
    let q: [f32; 4] = std::array::from_fn(|l| h[l] + h[l + 4]);
    ((q[0] + q[2]) + (q[1] + q[3])) + tail
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `a . b` over the shorter of the two, 32 values per step in two AVX-512 accumulators.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut k = 0;
        while k + 32 <= n {
            debug_assert!(k + 32 <= a.len() && k + 32 <= b.len());
            // SAFETY: k + 32 <= n, the shorter length: the 16 values at k and at k + 16 lie
            // inside both slices; the loads are unaligned.
            unsafe {
                acc0 =
                    _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(k)), _mm512_loadu_ps(pb.add(k)), acc0);
                acc1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(k + 16)),
                    _mm512_loadu_ps(pb.add(k + 16)),
                    acc1,
                );
            }
            k += 32;
        }
        if k + 16 <= n {
            debug_assert!(k + 16 <= a.len() && k + 16 <= b.len());
            // SAFETY: k + 16 <= n: the 16 values at k lie inside both slices.
            unsafe {
                acc0 =
                    _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(k)), _mm512_loadu_ps(pb.add(k)), acc0);
            }
            k += 16;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        for i in k..n {
            sum = a[i].mul_add(b[i], sum);
        }
        sum
    }

    /// `a . b` over the shorter of the two, 16 values per step in two AVX2 accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot256(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut k = 0;
        while k + 16 <= n {
            debug_assert!(k + 16 <= a.len() && k + 16 <= b.len());
            // SAFETY: k + 16 <= n, the shorter length: the 8 values at k and at k + 8 lie
            // inside both slices; the loads are unaligned.
            unsafe {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(k)), _mm256_loadu_ps(pb.add(k)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(k + 8)),
                    _mm256_loadu_ps(pb.add(k + 8)),
                    acc1,
                );
            }
            k += 16;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let quad = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let mut sum = _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
        for i in k..n {
            sum = a[i].mul_add(b[i], sum);
        }
        sum
    }

    /// The row solve with [`dot512`].
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cg512(
        gram: &[f32],
        fixed: &[f32],
        ids: &[u32],
        values: &[f32],
        alpha: f32,
        steps: usize,
        x: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        // The closure inherits this function's features, so it calls `dot512` safely.
        let dot = |a: &[f32], b: &[f32]| dot512(a, b);
        super::cg_body(gram, fixed, ids, values, alpha, steps, x, scratch, dot);
    }

    /// The row solve with [`dot256`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cg256(
        gram: &[f32],
        fixed: &[f32],
        ids: &[u32],
        values: &[f32],
        alpha: f32,
        steps: usize,
        x: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        // The closure inherits this function's features, so it calls `dot256` safely.
        let dot = |a: &[f32], b: &[f32]| dot256(a, b);
        super::cg_body(gram, fixed, ids, values, alpha, steps, x, scratch, dot);
    }
}

/// `y += a x`.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yk, &xk) in y.iter_mut().zip(x) {
        *yk = a.mul_add(xk, *yk);
    }
}

/// `out = G v + sum_j alpha r_j (y_j . v) y_j`. (Two loops, all dot products first, measured
/// 10% slower: the second pass reads every partner row again.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn apply(
    gram: &[f32],
    fixed: &[f32],
    ids: &[u32],
    values: &[f32],
    alpha: f32,
    v: &[f32],
    out: &mut [f32],
    dot: impl Fn(&[f32], &[f32]) -> f32,
) {
    let f = v.len();
    // G is symmetric: G v = sum_k v_k G[k, :], axpys with no reductions.
    out.fill(0.0);
    for (&vk, g) in v.iter().zip(gram.chunks_exact(f)) {
        axpy(vk, g, out);
    }
    for (&j, &r) in ids.iter().zip(values) {
        let y = &fixed[j as usize * f..(j as usize + 1) * f];
        axpy(alpha * r * dot(y, v), y, out);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cg_body(
    gram: &[f32],
    fixed: &[f32],
    ids: &[u32],
    values: &[f32],
    alpha: f32,
    steps: usize,
    x: &mut [f32],
    scratch: &mut Vec<f32>,
    dot: impl Fn(&[f32], &[f32]) -> f32 + Copy,
) {
    let f = x.len();
    scratch.resize(3 * f, 0.0);
    let (r, rest) = scratch.split_at_mut(f);
    let (p, ap) = rest.split_at_mut(f);
    // r = b - A x = -G x + sum_j (c_j - (c_j - 1) (y_j . x)) y_j.
    r.fill(0.0);
    for (&xk, g) in x.iter().zip(gram.chunks_exact(f)) {
        axpy(-xk, g, r);
    }
    for (&j, &v) in ids.iter().zip(values) {
        let y = &fixed[j as usize * f..(j as usize + 1) * f];
        let c1 = alpha * v;
        axpy(1.0 + c1 - c1 * dot(y, x), y, r);
    }
    p.copy_from_slice(r);
    let mut rs_old = dot(r, r);
    for _ in 0..steps {
        if rs_old < 1e-20 {
            break;
        }
        apply(gram, fixed, ids, values, alpha, p, ap, dot);
        let p_ap = dot(p, ap);
        if p_ap <= 0.0 || !p_ap.is_finite() {
            break;
        }
        let step = rs_old / p_ap;
        axpy(step, p, x);
        axpy(-step, ap, r);
        let rs_new = dot(r, r);
        let beta = rs_new / rs_old;
        for (pk, &rk) in p.iter_mut().zip(r.iter()) {
            *pk = beta.mul_add(*pk, rk);
        }
        rs_old = rs_new;
    }
}

/// `steps` conjugate-gradient steps on one row, warm-started from `x` (`f` values): `gram` is
/// `G` (`f x f`, row-major), `fixed` the partners' factor rows (`f` values each), `ids` and
/// `values` the row's partners and strengths, `scratch` work space (grown to `3 f` values;
/// keep one per thread).
///
/// # Panics
/// When the lengths disagree: `gram` not `f x f`, `scratch` not `3 f`, `ids` and `values` of
/// different lengths, or an id past `fixed`'s rows (a caller's bug, not bad input).
#[allow(clippy::too_many_arguments)]
pub fn implicit_cg_row(
    gram: &[f32],
    fixed: &[f32],
    ids: &[u32],
    values: &[f32],
    alpha: f32,
    steps: usize,
    x: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let f = x.len();
    assert!(
        f > 0 && gram.len() == f * f && ids.len() == values.len(),
        "implicit_cg_row: x {f}, gram {}, ids {}, values {}",
        gram.len(),
        ids.len(),
        values.len()
    );
    let rows = fixed.len() / f;
    assert!(
        ids.iter().all(|&j| (j as usize) < rows),
        "implicit_cg_row: an id past the {rows} factor rows"
    );
    match level() {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => {
            debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
            // SAFETY: `level` found AVX-512F and FMA on this CPU, the features of `cg512`.
            unsafe { x86::cg512(gram, fixed, ids, values, alpha, steps, x, scratch) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
            // SAFETY: `level` found AVX2 and FMA on this CPU, the features of `cg256`.
            unsafe { x86::cg256(gram, fixed, ids, values, alpha, steps, x, scratch) }
        }
        _ => cg_body(gram, fixed, ids, values, alpha, steps, x, scratch, dot),
    }
}

/// `a . b` over the shorter of the two at the CPU's widest level (one call's dispatch: for
/// callers outside a `#[target_feature]` loop, such as [`crate::gemv`]'s fallbacks).
pub(crate) fn dot_at_level(a: &[f32], b: &[f32]) -> f32 {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => {
            debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
            // SAFETY: `level` found AVX-512F and FMA on this CPU, the features of `dot512`.
            unsafe { x86::dot512(a, b) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
            // SAFETY: `level` found AVX2 and FMA on this CPU, the features of `dot256`.
            unsafe { x86::dot256(a, b) }
        }
        _ => dot(a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_solves_a_small_system_alike() {
        // 3 partners of 2 factors; G = identity. With enough steps CG is exact: compare the
        // dispatched path (widest level) with the baseline body.
        let f = 2;
        let gram = [1.0, 0.0, 0.0, 1.0];
        let fixed = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let (ids, values) = ([0u32, 2], [1.0f32, 3.0]);
        let mut x = vec![0.1f32; f];
        let mut scratch = Vec::new();
        implicit_cg_row(&gram, &fixed, &ids, &values, 1.0, 4, &mut x, &mut scratch);
        let mut y = vec![0.1f32; f];
        cg_body(
            &gram,
            &fixed,
            &ids,
            &values,
            1.0,
            4,
            &mut y,
            &mut scratch,
            dot,
        );
        // A = I + 1 e0 e0ᵀ + 3 [1 1]ᵀ[1 1] = [[5, 3], [3, 4]]; b = 2 e0 + 4 [1 1] = [6, 4].
        // x = A⁻¹ b = [12, 2] / 11.
        let want = [12.0 / 11.0, 2.0 / 11.0];
        for k in 0..f {
            assert!((x[k] - want[k]).abs() < 1e-5, "{x:?}");
            assert!((x[k] - y[k]).abs() < 1e-6, "{x:?} vs {y:?}");
        }
    }

    /// The intrinsic dot products equal the portable one on every length (tails included).
    #[test]
    fn intrinsic_dots_match_the_portable_one() {
        let a: Vec<f32> = (0..77).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..77).map(|i| (i as f32 * 0.11).cos()).collect();
        for n in 0..77 {
            let want = dot(&a[..n], &b[..n]);
            #[cfg(target_arch = "x86_64")]
            {
                if level() == Simd::Avx512 {
                    // SAFETY: `level` found AVX-512F and FMA.
                    let got = unsafe { x86::dot512(&a[..n], &b[..n]) };
                    assert!((got - want).abs() < 1e-4, "{n}: {got} vs {want}");
                }
                if matches!(level(), Simd::Avx512 | Simd::Avx2) {
                    // SAFETY: `level` found AVX2 and FMA (AVX-512 machines have both too).
                    let got = unsafe { x86::dot256(&a[..n], &b[..n]) };
                    assert!((got - want).abs() < 1e-4, "{n}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "gram 3")]
    fn wrong_gram_is_a_caller_bug() {
        let mut x = [0f32; 2];
        implicit_cg_row(
            &[0.0; 3],
            &[0.0; 4],
            &[],
            &[],
            1.0,
            1,
            &mut x,
            &mut Vec::new(),
        );
    }

    #[test]
    #[should_panic(expected = "past the 2 factor rows")]
    fn an_id_past_the_factors_is_a_caller_bug() {
        let mut x = [0f32; 2];
        implicit_cg_row(
            &[0.0; 4],
            &[0.0; 4],
            &[2],
            &[1.0],
            1.0,
            1,
            &mut x,
            &mut Vec::new(),
        );
    }
}
