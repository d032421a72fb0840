//! A whole LSTM layer (every time step) as one operation, fast on flex.
//!
//! [`lstm_sequence`] runs flex's fused kernel for f32 tensors (`lstm_cpu.rs`: the batch split
//! over the threads for all steps, one product with packed weights and one vectorised gate
//! loop per step, backpropagation through time written out), and the same equations as Burn
//! tensor operations elsewhere.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;

/// Outputs of [`lstm_sequence`].
#[derive(Debug, Clone)]
pub struct LstmSequence {
    /// `[N, T, H]`: the hidden state after every step.
    pub outputs: Tensor<3>,
    /// `[N, H]`: the hidden state after the last step.
    pub h: Tensor<2>,
    /// `[N, H]`: the cell state after the last step.
    pub c: Tensor<2>,
}

/// One LSTM layer over a batch-first sequence, PyTorch's equations (`nn.LSTM`, gate order
/// input, forget, cell, output):
///
/// `[i f g o] = x_t W_ih + h_{t-1} W_hh + b`, `c_t = σ(f) c_{t-1} + σ(i) tanh(g)`,
/// `h_t = σ(o) tanh(c_t)`.
///
/// # Shapes
/// - `x`: `[N, T, D]`, `w_ih`: `[D, 4H]`, `w_hh`: `[H, 4H]`, `bias`: `[4H]` (both of
///   PyTorch's biases added), `h0`, `c0`: `[N, H]`
/// - output: see [`LstmSequence`]
///
/// # Panics
/// When the shapes do not fit together (as Burn's own operations do).
pub fn lstm_sequence(
    x: Tensor<3>,
    w_ih: Tensor<2>,
    w_hh: Tensor<2>,
    bias: Tensor<1>,
    h0: Tensor<2>,
    c0: Tensor<2>,
) -> LstmSequence {
    #[cfg(feature = "flex")]
    if crate::Backend::of(&x.device()) == Some(crate::Backend::Flex)
        && let Some(dims) = super::lstm_cpu::LstmDims::new(
            x.dims(),
            w_ih.dims(),
            w_hh.dims(),
            bias.dims(),
            h0.dims(),
            c0.dims(),
        )
        && let Some(y) = super::lstm_cpu::lstm([&x], [&w_ih, &w_hh], &bias, [&h0, &c0], dims)
    {
        let [n, t, _] = x.dims();
        let hidden = h0.dims()[1];
        let outputs = super::lstm_cpu::rows(y.clone(), 0, n * t).reshape([n, t, hidden]);
        let h = outputs.clone().narrow(1, t - 1, 1).reshape([n, hidden]);
        let c = y.narrow(0, n * t, n);
        return LstmSequence { outputs, h, c };
    }
    lstm_sequence_tensors(x, w_ih, w_hh, bias, h0, c0)
}

/// [`lstm_sequence`] as Burn tensor operations (every backend; the reference for the flex
/// kernel in the tests).
pub(crate) fn lstm_sequence_tensors(
    x: Tensor<3>,
    w_ih: Tensor<2>,
    w_hh: Tensor<2>,
    bias: Tensor<1>,
    h0: Tensor<2>,
    c0: Tensor<2>,
) -> LstmSequence {
    let [n, t, d] = x.dims();
    let hidden = w_hh.dims()[0];
    let xw = (x.reshape([n * t, d]).matmul(w_ih) + bias.unsqueeze()).reshape([n, t, 4 * hidden]);
    let (mut h, mut c) = (h0, c0);
    let mut outputs = Vec::with_capacity(t);
    for s in 0..t {
        let gates = xw.clone().narrow(1, s, 1).reshape([n, 4 * hidden]) + h.matmul(w_hh.clone());
        let gate = |k: usize| gates.clone().narrow(1, k * hidden, hidden);
        let (i, f, g, o) = (
            sigmoid(gate(0)),
            sigmoid(gate(1)),
            gate(2).tanh(),
            sigmoid(gate(3)),
        );
        c = f * c + i * g;
        h = o * c.clone().tanh();
        outputs.push(h.clone());
    }
    LstmSequence {
        outputs: Tensor::stack(outputs, 1),
        h,
        c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The flex kernel against the tensor form: outputs, final states, and the gradients of
    /// all six inputs through a loss that weighs every output differently. Small sizes, and
    /// sizes where the batch splits unevenly over the threads, `4H` ends in a partial
    /// 64-column panel and the products' depth spans several blocks.
    #[test]
    fn fused_layer_equals_the_tensor_form_in_values_and_gradients() {
        fused_layer_matches_tensor_form(3, 5, 4, 6);
        fused_layer_matches_tensor_form(9, 4, 5, 75);
        // Again: the kernel now reuses the first call's buffers, holding other values.
        fused_layer_matches_tensor_form(9, 4, 5, 75);
    }

    fn fused_layer_matches_tensor_form(n: usize, t: usize, d: usize, h: usize) {
        let device = crate::backend::device("cpu").unwrap().autodiff();
        let r = |shape: Vec<usize>| {
            Tensor::<1>::random(
                [shape.iter().product::<usize>()],
                // Pre-activations of about the same spread at every width.
                Distribution::Normal(0.0, 0.7 * (6.0 / h as f64).sqrt()),
                &device,
            )
        };
        let x = r(vec![n, t, d]).reshape([n, t, d]).require_grad();
        let w_ih = r(vec![d, 4 * h]).reshape([d, 4 * h]).require_grad();
        let w_hh = r(vec![h, 4 * h]).reshape([h, 4 * h]).require_grad();
        let bias = r(vec![4 * h]).require_grad();
        let h0 = r(vec![n, h]).reshape([n, h]).require_grad();
        let c0 = r(vec![n, h]).reshape([n, h]).require_grad();
        let probe = r(vec![n, t, h]).reshape([n, t, h]);
        let (ph, pc) = (r(vec![n, h]).reshape([n, h]), r(vec![n, h]).reshape([n, h]));
        let run = |fused: bool| {
            let args = (
                x.clone(),
                w_ih.clone(),
                w_hh.clone(),
                bias.clone(),
                h0.clone(),
                c0.clone(),
            );
            let out = if fused {
                lstm_sequence(args.0, args.1, args.2, args.3, args.4, args.5)
            } else {
                lstm_sequence_tensors(args.0, args.1, args.2, args.3, args.4, args.5)
            };
            let loss = (out.outputs.clone() * probe.clone()).sum()
                + (out.h.clone() * ph.clone()).sum()
                + (out.c.clone() * pc.clone()).sum();
            (out, loss.backward())
        };
        let (fused, g1) = run(true);
        let (plain, g2) = run(false);
        assert!(max_diff(fused.outputs, plain.outputs) < 1e-5);
        assert!(max_diff(fused.h, plain.h) < 1e-5);
        assert!(max_diff(fused.c, plain.c) < 1e-5);
        assert!(max_diff(x.grad(&g1).unwrap(), x.grad(&g2).unwrap()) < 1e-4);
        assert!(max_diff(w_ih.grad(&g1).unwrap(), w_ih.grad(&g2).unwrap()) < 1e-4);
        assert!(max_diff(w_hh.grad(&g1).unwrap(), w_hh.grad(&g2).unwrap()) < 1e-4);
        assert!(max_diff(bias.grad(&g1).unwrap(), bias.grad(&g2).unwrap()) < 1e-4);
        assert!(max_diff(h0.grad(&g1).unwrap(), h0.grad(&g2).unwrap()) < 1e-4);
        assert!(max_diff(c0.grad(&g1).unwrap(), c0.grad(&g2).unwrap()) < 1e-4);
    }

    #[cfg(feature = "flex")]
    #[test]
    fn fused_path_is_taken_on_flex() {
        let device = Device::flex();
        let z2 = |r, c| Tensor::<2>::zeros([r, c], &device);
        let dims =
            super::super::lstm_cpu::LstmDims::new([2, 3, 4], [4, 8], [2, 8], [8], [2, 2], [2, 2])
                .unwrap();
        let x = Tensor::<3>::zeros([2, 3, 4], &device);
        let b = Tensor::<1>::zeros([8], &device);
        let y = super::super::lstm_cpu::lstm(
            [&x],
            [&z2(4, 8), &z2(2, 8)],
            &b,
            [&z2(2, 2), &z2(2, 2)],
            dims,
        );
        assert_eq!(y.expect("flex primitives").dims(), [2 * 4, 2]);
        // Mismatched shapes are left to the tensor form.
        assert!(
            super::super::lstm_cpu::LstmDims::new([2, 3, 4], [4, 8], [2, 8], [8], [3, 2], [2, 2])
                .is_none()
        );
    }
}
