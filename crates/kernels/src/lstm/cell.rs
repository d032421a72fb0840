//! The LSTM cell's arithmetic for one sequence and one step, forward and backward, on
//! slices, and its dispatch to the widest vectors the CPU has (the AVX-512 forward loop is
//! in `super::avx512`).
//!
//! Gate order along the `4H` values is PyTorch's: input, forget, cell (g), output.

use crate::cpu::{Simd, level, simd_dispatch};
use crate::math::{sigmoid, tanh};

/// The gates of one sequence at one step, in place: pre-activations in, activations out,
/// and the new cell and hidden states.
#[inline(always)]
pub fn cell_forward(gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]) {
    let h = c.len();
    let (gi, rest) = gates.split_at_mut(h);
    let (gf, rest) = rest.split_at_mut(h);
    let (gg, go) = rest.split_at_mut(h);
    let gates = gi
        .iter_mut()
        .zip(gf.iter_mut())
        .zip(gg.iter_mut())
        .zip(go.iter_mut());
    let states = c.iter_mut().zip(h_out.iter_mut()).zip(c_prev);
    for ((((i, f), g), o), ((c, h_out), &c_prev)) in gates.zip(states) {
        (*i, *f, *g, *o) = (sigmoid(*i), sigmoid(*f), tanh(*g), sigmoid(*o));
        *c = *f * c_prev + *i * *g;
        *h_out = *o * tanh(*c);
    }
}

/// One sequence's step backward: from the gradient reaching `h` (`dy` from the layer's
/// output plus `dh_next` from the next step) and the cell
/// gradient from the next step (`dc`, updated in place to the one for the previous step),
/// the gradients of the four gates' pre-activations.
#[inline(always)]
pub fn cell_backward(
    acts: &[f32],
    c: &[f32],
    c_prev: &[f32],
    dy: &[f32],
    dh_next: &[f32],
    dc: &mut [f32],
    dgates: &mut [f32],
) {
    let h = c.len();
    let (ai, rest) = acts.split_at(h);
    let (af, rest) = rest.split_at(h);
    let (ag, ao) = rest.split_at(h);
    let (di, rest) = dgates.split_at_mut(h);
    let (df, rest) = rest.split_at_mut(h);
    let (dg, d_o) = rest.split_at_mut(h);
    let acts = ai.iter().zip(af).zip(ag).zip(ao);
    let grads = di
        .iter_mut()
        .zip(df.iter_mut())
        .zip(dg.iter_mut())
        .zip(d_o.iter_mut());
    let dh = dy.iter().zip(dh_next).map(|(y, next)| y + next);
    let cells = c.iter().zip(c_prev).zip(dh).zip(dc.iter_mut());
    for (((((&i, &f), &g), &o), (((di, df), dg), d_o)), (((&c, &c_prev), dh), dc)) in
        acts.zip(grads).zip(cells)
    {
        let tc = tanh(c);
        let dcell = *dc + dh * o * (1.0 - tc * tc);
        *d_o = dh * tc * o * (1.0 - o);
        *di = dcell * g * i * (1.0 - i);
        *df = dcell * c_prev * f * (1.0 - f);
        *dg = dcell * i * (1.0 - g * g);
        *dc = dcell * f;
    }
}

simd_dispatch!(cells_forward_auto, cell_forward, (gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]));

/// [`cell_forward`] on the widest vectors the CPU has: on AVX-512 with the reciprocals of
/// the five sigmoids and tanhs from `rcp14` and a Newton step instead of divisions (the
/// loop's bottleneck), else compiled from the scalar form.
///
/// # Panics
/// When `gates` is not `4 h` values or a state is not `h` (`h = c.len()`).
pub fn cells_forward(gates: &mut [f32], c_prev: &[f32], c: &mut [f32], h_out: &mut [f32]) {
    let h = c.len();
    assert!(
        gates.len() == 4 * h && c_prev.len() == h && h_out.len() == h,
        "LSTM cell of width {h}: {} gate values, states of {} and {}",
        gates.len(),
        c_prev.len(),
        h_out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if level() == Simd::Avx512 {
        return super::avx512::cell_forward(gates, c_prev, c, h_out);
    }
    cells_forward_auto(gates, c_prev, c, h_out)
}

simd_dispatch!(
    /// [`cell_backward`] on the widest vectors the CPU has.
    pub cells_backward, cell_backward, (acts: &[f32], c: &[f32], c_prev: &[f32], dy: &[f32], dh_next: &[f32], dc: &mut [f32], dgates: &mut [f32])
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 gate loop against the scalar one: a width with a masked tail, values from
    /// saturated to small, and a NaN that must reach the cell and hidden states.
    #[test]
    fn vector_gate_loop_equals_the_scalar_one() {
        let h = 37;
        let value = |i: usize| ((i * 7919) % 2001) as f32 / 20.0 - 50.0;
        let mut pre: Vec<f32> = (0..4 * h).map(value).collect();
        pre[5] = f32::NAN;
        pre[h + 9] = 120.0;
        pre[2 * h + 11] = -120.0;
        let c_prev: Vec<f32> = (0..h).map(|i| value(i + 400) / 10.0).collect();
        let (mut g1, mut c1, mut h1) = (pre.clone(), vec![0f32; h], vec![0f32; h]);
        let (mut g2, mut c2, mut h2) = (pre, vec![0f32; h], vec![0f32; h]);
        cell_forward(&mut g1, &c_prev, &mut c1, &mut h1);
        // The dispatched loop: AVX-512 intrinsics where the CPU has them.
        cells_forward(&mut g2, &c_prev, &mut c2, &mut h2);
        let pairs = g1
            .iter()
            .zip(&g2)
            .chain(c1.iter().zip(&c2))
            .chain(h1.iter().zip(&h2));
        for (a, b) in pairs {
            assert!(a.is_nan() == b.is_nan(), "{a} vs {b}");
            assert!(
                a.is_nan() || (a - b).abs() <= 2e-6 * a.abs().max(1.0),
                "{a} vs {b}"
            );
        }
        assert!(c2[5].is_nan() && h2[5].is_nan());
    }
}
