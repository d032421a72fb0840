//! The LSTM gate loop in AVX-512 intrinsics, 16 values at a time, the tail masked.
//!
//! The only `unsafe` of the LSTM: the masked loads and stores. [`cell_forward`] is safe to
//! call: it checks the CPU and the slices' lengths itself.

use std::arch::x86_64::*;

/// [`crate::math::exp`], lane-wise, with fused multiply-adds.
#[target_feature(enable = "avx512f,fma")]
#[inline]
fn exp(x: __m512) -> __m512 {
    let set = _mm512_set1_ps;
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let xc = _mm512_max_ps(_mm512_min_ps(x, set(88.0)), set(-87.0));
    let shift = set(12_582_912.0);
    let shifted = _mm512_fmadd_ps(xc, set(std::f32::consts::LOG2_E), shift);
    let n = _mm512_sub_ps(shifted, shift);
    let r = _mm512_fnmadd_ps(n, set(0.693_359_4), xc);
    let r = _mm512_fmadd_ps(n, set(2.121_944_4e-4), r);
    let mut p = set(1.987_569_1e-4);
    for c in [
        1.398_2e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm512_fmadd_ps(p, r, set(c));
    }
    let p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), set(1.0));
    let bits = _mm512_add_epi32(_mm512_castps_si512(shifted), _mm512_set1_epi32(127));
    let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits));
    _mm512_mask_mov_ps(_mm512_mul_ps(p, scale), nan, x)
}

/// `1 / d` from `rcp14` (14 bits) and one Newton step (about 28).
#[target_feature(enable = "avx512f,fma")]
#[inline]
fn recip(d: __m512) -> __m512 {
    let r = _mm512_rcp14_ps(d);
    _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)))
}

#[target_feature(enable = "avx512f,fma")]
#[inline]
fn sigmoid(x: __m512) -> __m512 {
    let e = exp(_mm512_sub_ps(_mm512_setzero_ps(), x));
    recip(_mm512_add_ps(_mm512_set1_ps(1.0), e))
}

#[target_feature(enable = "avx512f,fma")]
#[inline]
fn tanh(x: __m512) -> __m512 {
    let e = exp(_mm512_mul_ps(x, _mm512_set1_ps(-2.0)));
    let s = recip(_mm512_add_ps(_mm512_set1_ps(1.0), e));
    _mm512_fmsub_ps(s, _mm512_set1_ps(2.0), _mm512_set1_ps(1.0))
}

/// [`super::cell::cell_forward`] in intrinsics.
///
/// # Panics
/// When the CPU lacks AVX-512F or FMA, or the slices' lengths do not fit together.
pub fn cell_forward(gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]) {
    assert!(
        crate::cpu::has_avx512(),
        "AVX-512 gate loop on a CPU without AVX-512F and FMA"
    );
    let h = c.len();
    assert!(gates.len() == 4 * h && c_prev.len() == h && h_out.len() == h);
    // SAFETY: the CPU has AVX-512F and FMA (asserted above), the features `cells` is
    // compiled with; the lengths it needs are asserted above.
    unsafe { cells(gates, c_prev, c, h_out) }
}

/// [`cell_forward`]'s loop.
///
/// # Safety
/// The CPU has AVX-512F and FMA; `gates` holds `4 h` values and the states `h`.
#[target_feature(enable = "avx512f,fma")]
unsafe fn cells(gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]) {
    let h = c.len();
    debug_assert!(gates.len() == 4 * h && c_prev.len() == h && h_out.len() == h);
    let g = gates.as_mut_ptr();
    for j in (0..h).step_by(16) {
        let mask: __mmask16 = if h - j >= 16 {
            0xFFFF
        } else {
            (1u16 << (h - j)) - 1
        };
        debug_assert!(j < h);
        // SAFETY: j < h, so every pointer formed is inside its slice, and the mask keeps
        // every access within the gate's and the states' h values (the contract).
        unsafe {
            let load = |p: *const f32| _mm512_maskz_loadu_ps(mask, p);
            let i = sigmoid(load(g.add(j)));
            let f = sigmoid(load(g.add(h + j)));
            let gg = tanh(load(g.add(2 * h + j)));
            let o = sigmoid(load(g.add(3 * h + j)));
            _mm512_mask_storeu_ps(g.add(j), mask, i);
            _mm512_mask_storeu_ps(g.add(h + j), mask, f);
            _mm512_mask_storeu_ps(g.add(2 * h + j), mask, gg);
            _mm512_mask_storeu_ps(g.add(3 * h + j), mask, o);
            let cell = _mm512_fmadd_ps(f, load(c_prev.as_ptr().add(j)), _mm512_mul_ps(i, gg));
            _mm512_mask_storeu_ps(c.as_mut_ptr().add(j), mask, cell);
            _mm512_mask_storeu_ps(
                h_out.as_mut_ptr().add(j),
                mask,
                _mm512_mul_ps(o, tanh(cell)),
            );
        }
    }
}
