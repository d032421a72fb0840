//! The AVX-512 kernels of [`super`]: four rows share each load of the vector, f32 or bf16
//! weights widened in registers.

use std::arch::x86_64::*;

/// The `len <= 16` f32 values of `v` from `c` (the rest of the lanes zero).
#[target_feature(enable = "avx512f")]
#[inline]
fn load_f32(v: &[f32], c: usize, len: usize) -> __m512 {
    assert!(c + len <= v.len() && len <= 16);
    // SAFETY: both loads: `c + len <= v.len()` (asserted); the masked load touches only
    // the first `len` lanes. Unaligned loads.
    unsafe {
        if len == 16 {
            _mm512_loadu_ps(v.as_ptr().add(c))
        } else {
            _mm512_maskz_loadu_ps(((1u32 << len) - 1) as u16, v.as_ptr().add(c))
        }
    }
}

/// The `len <= 16` bfloat16 values of `v` from `c`, widened to f32 (exact).
#[target_feature(enable = "avx512f")]
#[inline]
fn load_bf16(v: &[u16], c: usize, len: usize) -> __m512 {
    assert!(c + len <= v.len() && len <= 16);
    let half = if len == 16 {
        // SAFETY: the 16 values from `c` lie inside `v` (asserted).
        unsafe { _mm256_loadu_si256(v.as_ptr().add(c).cast()) }
    } else {
        let mut tail = [0u16; 16];
        tail[..len].copy_from_slice(&v[c..c + len]);
        // SAFETY: `tail` holds 16 values.
        unsafe { _mm256_loadu_si256(tail.as_ptr().cast()) }
    };
    // Each u16 becomes the high half of an f32.
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half)))
}

/// Rows `k0..` of one panel of 64 columns (`rows`: consecutive rows of 64 values) times
/// values `k0..` of the `m` vectors of `xs` (`k` apart) into `out` (64 values per vector,
/// `ldo` apart).
#[target_feature(enable = "avx512f,fma")]
pub(super) fn panel512(
    rows: &[f32],
    xs: &[f32],
    k: usize,
    k0: usize,
    m: usize,
    out: &mut [f32],
    ldo: usize,
) {
    const W: usize = 64;
    // Rows fetched ahead of use (16 KiB).
    const AHEAD: usize = 64;
    let kr = rows.len() / W;
    assert!(rows.len() == kr * W && k0 + kr <= k && xs.len() >= m * k);
    assert!(m == 0 || (ldo >= W && out.len() >= (m - 1) * ldo + W));
    let prefetch = |kk: usize| {
        if kk + AHEAD < kr {
            let ahead = rows[(kk + AHEAD) * W..].as_ptr();
            for line in 0..4 {
                // A hint only: the address lies inside `rows` (kk + AHEAD < kr).
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16 * line).cast());
            }
        }
    };
    if m == 1 {
        // One vector (a decode step): two rows per step into two sets of accumulators,
        // all in registers.
        let x = &xs[k0..k0 + kr];
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
            _mm512_setzero_ps(),
        );
        let (mut b0, mut b1, mut b2, mut b3) = (a0, a1, a2, a3);
        let mut kk = 0;
        while kk + 2 <= kr {
            prefetch(kk);
            prefetch(kk + 1);
            let (r, s) = (
                &rows[kk * W..(kk + 1) * W],
                &rows[(kk + 1) * W..(kk + 2) * W],
            );
            let (xr, xs1) = (_mm512_set1_ps(x[kk]), _mm512_set1_ps(x[kk + 1]));
            a0 = _mm512_fmadd_ps(load_f32(r, 0, 16), xr, a0);
            a1 = _mm512_fmadd_ps(load_f32(r, 16, 16), xr, a1);
            a2 = _mm512_fmadd_ps(load_f32(r, 32, 16), xr, a2);
            a3 = _mm512_fmadd_ps(load_f32(r, 48, 16), xr, a3);
            b0 = _mm512_fmadd_ps(load_f32(s, 0, 16), xs1, b0);
            b1 = _mm512_fmadd_ps(load_f32(s, 16, 16), xs1, b1);
            b2 = _mm512_fmadd_ps(load_f32(s, 32, 16), xs1, b2);
            b3 = _mm512_fmadd_ps(load_f32(s, 48, 16), xs1, b3);
            kk += 2;
        }
        if kk < kr {
            let r = &rows[kk * W..(kk + 1) * W];
            let xr = _mm512_set1_ps(x[kk]);
            a0 = _mm512_fmadd_ps(load_f32(r, 0, 16), xr, a0);
            a1 = _mm512_fmadd_ps(load_f32(r, 16, 16), xr, a1);
            a2 = _mm512_fmadd_ps(load_f32(r, 32, 16), xr, a2);
            a3 = _mm512_fmadd_ps(load_f32(r, 48, 16), xr, a3);
        }
        let sums = [
            _mm512_add_ps(a0, b0),
            _mm512_add_ps(a1, b1),
            _mm512_add_ps(a2, b2),
            _mm512_add_ps(a3, b3),
        ];
        let o = &mut out[..W];
        for (q, a) in sums.iter().enumerate() {
            debug_assert!(16 * q + 16 <= o.len());
            // SAFETY: `o` holds 64 values; lane group q is o[16 q..16 q + 16].
            unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(16 * q), *a) };
        }
        return;
    }
    pairs(rows, xs, (k, k0, kr), m, out, ldo, prefetch);
}

/// [`panel512`] for `m > 1`, `rows` holding `kr` rows of the panel.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,fma")]
fn pairs(
    rows: &[f32],
    xs: &[f32],
    (k, k0, kr): (usize, usize, usize),
    m: usize,
    out: &mut [f32],
    ldo: usize,
    prefetch: impl Fn(usize),
) {
    const W: usize = 64;
    // Two vectors at a time, each summed exactly as the single vector above (even rows
    // into one set of accumulators, odd rows into another, the sets added at the end), so
    // that a vector's products do not depend on the others beside it: a batch of decode
    // steps gives each sequence the logits it would get alone.
    for i0 in (0..m).step_by(2) {
        let vectors = (m - i0).min(2);
        let zero = _mm512_setzero_ps();
        let mut even = [[zero; 4]; 2];
        let mut odd = [[zero; 4]; 2];
        let load = |kk: usize| {
            let row = &rows[kk * W..(kk + 1) * W];
            [
                load_f32(row, 0, 16),
                load_f32(row, 16, 16),
                load_f32(row, 32, 16),
                load_f32(row, 48, 16),
            ]
        };
        let mut kk = 0;
        while kk + 2 <= kr {
            prefetch(kk);
            prefetch(kk + 1);
            let (r, s) = (load(kk), load(kk + 1));
            for v in 0..vectors {
                let x = &xs[(i0 + v) * k + k0..];
                let (xr, xs1) = (_mm512_set1_ps(x[kk]), _mm512_set1_ps(x[kk + 1]));
                for q in 0..4 {
                    even[v][q] = _mm512_fmadd_ps(r[q], xr, even[v][q]);
                    odd[v][q] = _mm512_fmadd_ps(s[q], xs1, odd[v][q]);
                }
            }
            kk += 2;
        }
        if kk < kr {
            let r = load(kk);
            for v in 0..vectors {
                let xr = _mm512_set1_ps(xs[(i0 + v) * k + k0 + kk]);
                for q in 0..4 {
                    even[v][q] = _mm512_fmadd_ps(r[q], xr, even[v][q]);
                }
            }
        }
        for v in 0..vectors {
            let o = &mut out[(i0 + v) * ldo..(i0 + v) * ldo + W];
            for q in 0..4 {
                let a = _mm512_add_ps(even[v][q], odd[v][q]);
                debug_assert!(16 * q + 16 <= o.len());
                // SAFETY: `o` holds 64 values; lane group q is o[16 q..16 q + 16].
                unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(16 * q), a) };
            }
        }
    }
}

/// Rows of `w` (`cols` each) times the `m` vectors of `xs` into `out` (`[m, rows]`).
#[target_feature(enable = "avx512f,fma")]
pub(super) fn rows512(w: &[f32], cols: usize, xs: &[f32], m: usize, out: &mut [f32]) {
    let rows = out.len() / m.max(1);
    debug_assert_eq!(w.len(), rows * cols);
    body(rows, cols, xs, m, out, |r, c, len| {
        load_f32(&w[r * cols..(r + 1) * cols], c, len)
    });
}

/// [`rows512`] for bfloat16 rows.
#[target_feature(enable = "avx512f,fma")]
pub(super) fn rows512_bf16(w: &[u16], cols: usize, xs: &[f32], m: usize, out: &mut [f32]) {
    let rows = out.len() / m.max(1);
    debug_assert_eq!(w.len(), rows * cols);
    body(rows, cols, xs, m, out, |r, c, len| {
        load_bf16(&w[r * cols..(r + 1) * cols], c, len)
    });
}

/// The loop of both: `row(r, c, len)` loads row `r`'s values `c..c + len` as f32.
#[target_feature(enable = "avx512f,fma")]
#[inline]
fn body(
    rows: usize,
    cols: usize,
    xs: &[f32],
    m: usize,
    out: &mut [f32],
    row: impl Fn(usize, usize, usize) -> __m512,
) {
    for i in 0..m {
        let x: &[f32] = &xs[i * cols..(i + 1) * cols];
        let o = &mut out[i * rows..(i + 1) * rows];
        let mut r = 0;
        // Four rows share every load of the vector.
        while r + 4 <= rows {
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut k = 0;
            while k < cols {
                let len = (cols - k).min(16);
                let xv = load_f32(x, k, len);
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(row(r + j, k, len), xv, *a);
                }
                k += len;
            }
            for (j, a) in acc.iter().enumerate() {
                o[r + j] = _mm512_reduce_add_ps(*a);
            }
            r += 4;
        }
        while r < rows {
            let mut acc = _mm512_setzero_ps();
            let mut k = 0;
            while k < cols {
                let len = (cols - k).min(16);
                acc = _mm512_fmadd_ps(row(r, k, len), load_f32(x, k, len), acc);
                k += len;
            }
            o[r] = _mm512_reduce_add_ps(acc);
            r += 1;
        }
    }
}
