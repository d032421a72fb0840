//! A decode position's attention: the query heads that share a key/value head (grouped-query
//! attention) over that head's cached keys and values, each cached row read once for all of
//! them. A language model's decode step runs it per head alone and per group in a batch,
//! with the same bits either way.

use crate::cpu::with_simd;

/// Query heads' attention over their shared key/value head's cache (`qs`: heads of `hd`
/// values one after another; keys and values `[s, hd]` each, `s` at least 1): per head the softmax of the
/// scaled dot products, then the weighted sum of the values, into `[heads, hd]`. The heads
/// of a group read each cached key and value once together; a head's values do not depend
/// on the heads beside it, so a decode step alone (a task per head) and in a batch (a task
/// per group) gives the same bits.
///
/// Compiled for the CPU's widest vectors ([`with_simd`]); the sums are plain multiplies and
/// adds in a fixed order (no fused multiply-adds), so every vector level gives the same bits.
///
/// # Panics
/// When `hd` is 0 (a model's head width, checked when its config is read).
pub fn heads_attention(
    qs: &[f32],
    hd: usize,
    keys: &[f32],
    values: &[f32],
    scale: f32,
) -> Vec<f32> {
    let mut o = vec![0f32; qs.len()];
    with_simd(|| attend(qs, hd, keys, values, scale, &mut o));
    o
}

#[inline(always)]
fn attend(qs: &[f32], hd: usize, keys: &[f32], values: &[f32], scale: f32, o: &mut [f32]) {
    // Plain loops: iterator adapters (`collect`, `for_each`) may stay out of line, compiled
    // without the caller's vector features.
    let (n, s) = (qs.len() / hd, keys.len() / hd);
    let mut p = vec![0f32; n * s];
    for (j, k) in keys.chunks_exact(hd).enumerate() {
        for (h, q) in qs.chunks_exact(hd).enumerate() {
            p[h * s + j] = dot16(q, k) * scale;
        }
    }
    let mut inv = vec![0f32; n];
    for (h, p) in p.chunks_exact_mut(s.max(1)).enumerate() {
        let max = p.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f32;
        for x in p.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        inv[h] = 1.0 / sum;
    }
    for (j, vs) in values.chunks_exact(hd).enumerate() {
        for (h, o) in o.chunks_exact_mut(hd).enumerate() {
            let w = p[h * s + j] * inv[h];
            for (o, &v) in o.iter_mut().zip(vs) {
                *o += w * v;
            }
        }
    }
}

/// `a · b` with 16 partial sums (one register of AVX-512), added pairwise at the end.
#[inline(always)]
fn dot16(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ar.iter().zip(br).enumerate() {
        acc[l] += x * y;
    }
    let mut width = 16;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The softmax-weighted values in f64, one head.
    fn reference(q: &[f32], keys: &[f32], values: &[f32], scale: f32) -> Vec<f64> {
        let hd = q.len();
        let scores: Vec<f64> = keys
            .chunks_exact(hd)
            .map(|k| {
                q.iter()
                    .zip(k)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>()
                    * f64::from(scale)
            })
            .collect();
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut o = vec![0f64; hd];
        for (w, v) in e.iter().zip(values.chunks_exact(hd)) {
            for (o, v) in o.iter_mut().zip(v) {
                *o += w / sum * f64::from(*v);
            }
        }
        o
    }

    #[test]
    fn grouped_heads_equal_each_head_alone_and_the_f64_softmax() {
        let (hd, s, n) = (40, 23, 3);
        let value = |i: usize| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0;
        let qs: Vec<f32> = (0..n * hd).map(value).collect();
        let keys: Vec<f32> = (0..s * hd).map(|i| value(i + 7)).collect();
        let values: Vec<f32> = (0..s * hd).map(|i| value(i + 13)).collect();
        let together = heads_attention(&qs, hd, &keys, &values, 0.3);
        for h in 0..n {
            let q = &qs[h * hd..(h + 1) * hd];
            let alone = heads_attention(q, hd, &keys, &values, 0.3);
            assert_eq!(&together[h * hd..(h + 1) * hd], &alone[..], "head {h}");
            for (got, want) in alone.iter().zip(reference(q, &keys, &values, 0.3)) {
                assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
            }
        }
        // One cached position: the values themselves.
        let one = heads_attention(&qs[..hd], hd, &keys[..hd], &values[..hd], 0.3);
        assert_eq!(one, &values[..hd]);
    }
}
