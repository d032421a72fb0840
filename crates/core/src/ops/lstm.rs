//! A whole LSTM layer (every time step) as one operation, fast on flex.
//!
//! [`lstm_sequence`] runs flex's fused kernel for f32 tensors ([`kiln_kernels::lstm`]: the batch split
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
/// A sequence of zero steps leaves the state as it was: `outputs` is `[N, 0, H]`, `h` and
/// `c` are `h0` and `c0`.
///
/// # Panics
/// When the shapes do not fit together (as Burn's own operations do); [`try_lstm_sequence`]
/// returns that as an error instead.
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
        && let Some(dims) = kiln_kernels::flex::lstm::LstmDims::new(
            x.dims(),
            w_ih.dims(),
            w_hh.dims(),
            bias.dims(),
            h0.dims(),
            c0.dims(),
        )
        && let Some(y) =
            kiln_kernels::flex::lstm::lstm([&x], [&w_ih, &w_hh], &bias, [&h0, &c0], dims)
    {
        let [n, t, _] = x.dims();
        return split_output(y, n, t, h0.dims()[1]);
    }
    lstm_sequence_tensors(x, w_ih, w_hh, bias, h0, c0)
}

/// [`lstm_sequence`] with its shapes checked first: [`Error::Shape`](crate::Error::Shape)
/// naming them when they do not fit together.
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) naming the shapes when they do not fit together.
pub fn try_lstm_sequence(
    x: Tensor<3>,
    w_ih: Tensor<2>,
    w_hh: Tensor<2>,
    bias: Tensor<1>,
    h0: Tensor<2>,
    c0: Tensor<2>,
) -> crate::Result<LstmSequence> {
    let [n, _, d] = x.dims();
    let [h, g4] = w_hh.dims();
    let fits = w_ih.dims() == [d, 4 * h]
        && g4 == 4 * h
        && bias.dims() == [4 * h]
        && h0.dims() == [n, h]
        && c0.dims() == [n, h];
    if !fits {
        return Err(crate::Error::Shape {
            op: "lstm_sequence",
            reason: format!(
                "x {:?}, w_ih {:?}, w_hh {:?}, bias {:?}, h0 {:?}, c0 {:?}; expected x [N, T, D], \
                 w_ih [D, 4H], w_hh [H, 4H], bias [4H], h0 and c0 [N, H]",
                x.dims(),
                w_ih.dims(),
                w_hh.dims(),
                bias.dims(),
                h0.dims(),
                c0.dims()
            ),
        });
    }
    Ok(lstm_sequence(x, w_ih, w_hh, bias, h0, c0))
}

/// [`lstm_sequence`] whose input projections are looked up: at step `t` of sequence `b` the
/// layer adds row `ids[b, t]` of `table` to `h_{t-1} W_hh`, where `table` holds `x W_ih + b`
/// for every input value `x`.
///
/// For a layer fed by an embedding (a character language model) the table is
/// `E W_ih + b`, and this is the same layer as `lstm_sequence(embedding(ids), ..)`, whose
/// products with `W_ih` (forward, and the input's and the weight's gradients backward) take
/// a fifth of the FLOPs of a training step at hidden 256 and input 64; the gradient reaches
/// `E`, `W_ih` and `b` through the table's (dG summed per token). Worth it when the table
/// has fewer rows than the batch has tokens.
///
/// # Shapes
/// - `ids`: `[N, T]` (each in `0..V`), `table`: `[V, 4H]`, `w_hh`: `[H, 4H]`, `h0`, `c0`:
///   `[N, H]`
/// - output: see [`LstmSequence`]
///
/// # Panics
/// When the shapes do not fit together or an id is not a row of the table (as Burn's own
/// `select` does).
pub fn lstm_sequence_lookup(
    ids: Tensor<2, Int>,
    table: Tensor<2>,
    w_hh: Tensor<2>,
    h0: Tensor<2>,
    c0: Tensor<2>,
) -> LstmSequence {
    let [n, t] = ids.dims();
    let hidden = w_hh.dims()[0];
    #[cfg(feature = "flex")]
    if crate::Backend::of(&table.device()) == Some(crate::Backend::Flex)
        && let Some(dims) = kiln_kernels::flex::lstm::LstmDims::new(
            [n, t, 0],
            [0, table.dims()[1]],
            w_hh.dims(),
            [table.dims()[1]],
            h0.dims(),
            c0.dims(),
        )
        && let Some(y) =
            kiln_kernels::flex::lstm::lstm_lookup(&ids, &table, &w_hh, [&h0, &c0], dims)
    {
        return split_output(y, n, t, hidden);
    }
    if t == 0 {
        return no_steps(h0, c0);
    }
    let xw = table
        .select(0, ids.reshape([n * t]))
        .reshape([n, t, 4 * hidden]);
    lstm_steps_tensors(xw, w_hh, h0, c0)
}

/// The fused kernel's output `[N T + N, H]` as [`LstmSequence`].
#[cfg(feature = "flex")]
fn split_output(y: Tensor<2>, n: usize, t: usize, hidden: usize) -> LstmSequence {
    let outputs = kiln_kernels::flex::lstm::rows(y.clone(), 0, n * t).reshape([n, t, hidden]);
    let h = outputs.clone().narrow(1, t - 1, 1).reshape([n, hidden]);
    let c = y.narrow(0, n * t, n);
    LstmSequence { outputs, h, c }
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
    if t == 0 {
        return no_steps(h0, c0);
    }
    let xw = (x.reshape([n * t, d]).matmul(w_ih) + bias.unsqueeze()).reshape([n, t, 4 * hidden]);
    lstm_steps_tensors(xw, w_hh, h0, c0)
}

/// The result of a sequence of zero steps: no outputs, the state as it was. (Not through
/// the general path: Burn's `reshape` reads a 0 in the target shape as "keep this
/// dimension".)
fn no_steps(h0: Tensor<2>, c0: Tensor<2>) -> LstmSequence {
    let [n, hidden] = h0.dims();
    LstmSequence {
        outputs: Tensor::<3>::zeros([n, 0, hidden], &h0.device()),
        h: h0,
        c: c0,
    }
}

/// The recurrence over input projections `xw [N, T, 4H]`, as Burn tensor operations.
fn lstm_steps_tensors(
    xw: Tensor<3>,
    w_hh: Tensor<2>,
    h0: Tensor<2>,
    c0: Tensor<2>,
) -> LstmSequence {
    let [n, t, _] = xw.dims();
    let hidden = w_hh.dims()[0];
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

    /// Zero steps leave the state as it was (no panic on any backend), and mismatched shapes
    /// are a typed error from the checked form.
    #[test]
    fn zero_steps_keep_the_state_and_bad_shapes_are_errors() {
        let device = crate::test_device();
        let (n, d, h) = (2, 3, 4);
        let w_ih = Tensor::<2>::ones([d, 4 * h], &device);
        let w_hh = Tensor::<2>::ones([h, 4 * h], &device);
        let b = Tensor::<1>::zeros([4 * h], &device);
        let h0 = Tensor::<2>::ones([n, h], &device) * 0.5;
        let c0 = Tensor::<2>::ones([n, h], &device) * -0.25;
        for dev in [device.clone(), device.clone().autodiff()] {
            let x = Tensor::<3>::zeros([n, 0, d], &dev);
            let to = |t: &Tensor<2>| Tensor::<2>::from_data(t.to_data(), &dev);
            let out = try_lstm_sequence(
                x,
                to(&w_ih),
                to(&w_hh),
                Tensor::from_data(b.to_data(), &dev),
                to(&h0),
                to(&c0),
            )
            .unwrap();
            assert_eq!(out.outputs.dims(), [n, 0, h]);
            out.h.into_data().assert_eq(&h0.to_data(), true);
            out.c.into_data().assert_eq(&c0.to_data(), true);
        }
        let ids = Tensor::<2, Int>::zeros([n, 0], &device);
        let table = Tensor::<2>::ones([3, 4 * h], &device);
        let out = lstm_sequence_lookup(ids, table, w_hh.clone(), h0.clone(), c0.clone());
        assert_eq!(out.outputs.dims(), [n, 0, h]);
        out.c.into_data().assert_eq(&c0.to_data(), true);
        let x = Tensor::<3>::zeros([n, 5, d + 1], &device);
        let e = try_lstm_sequence(x, w_ih, w_hh, b, h0, c0).unwrap_err();
        assert!(
            matches!(
                e,
                crate::Error::Shape {
                    op: "lstm_sequence",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("x [2, 5, 4], w_ih [3, 16]"), "{e}");
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

    /// The looked-up layer with `table = E W_ih + b` against the same layer on the embedded
    /// input: outputs, final states, and the gradients of `E`, `W_ih`, `b`, `W_hh`, `h0`,
    /// `c0`, on flex's kernel and in the tensor form (the fallback). Ids repeat, some table
    /// rows are never used (their gradient is zero), and the batch splits unevenly.
    #[test]
    fn looked_up_layer_equals_the_embedded_one() {
        for (n, t, d, h, v) in [(3, 5, 4, 6, 7), (9, 4, 5, 75, 11)] {
            looked_up_layer_matches(n, t, d, h, v);
        }
    }

    fn looked_up_layer_matches(n: usize, t: usize, d: usize, h: usize, v: usize) {
        let device = crate::backend::device("cpu").unwrap().autodiff();
        let r = |shape: [usize; 2]| {
            Tensor::<2>::random(
                shape,
                Distribution::Normal(0.0, 0.7 * (6.0 / h as f64).sqrt()),
                &device,
            )
        };
        let emb = r([v, d]).require_grad();
        let w_ih = r([d, 4 * h]).require_grad();
        let w_hh = r([h, 4 * h]).require_grad();
        let bias = r([1, 4 * h]).reshape([4 * h]).require_grad();
        let h0 = r([n, h]).require_grad();
        let c0 = r([n, h]).require_grad();
        // Ids 0..v - 2 only: the last row of the table is never looked up.
        let ids: Vec<i64> = (0..n * t)
            .map(|i| ((i * 7 + i / 3) % (v - 1)) as i64)
            .collect();
        let ids = Tensor::<1, Int>::from_ints(ids.as_slice(), &device).reshape([n, t]);
        let probe = r([n * t, h]).reshape([n, t, h]);
        let (ph, pc) = (r([n, h]), r([n, h]));
        let run = |how: usize| {
            let table = emb.clone().matmul(w_ih.clone()) + bias.clone().unsqueeze();
            let (wh, h0, c0) = (w_hh.clone(), h0.clone(), c0.clone());
            let out = match how {
                0 => {
                    let x = emb
                        .clone()
                        .select(0, ids.clone().reshape([n * t]))
                        .reshape([n, t, d]);
                    lstm_sequence(x, w_ih.clone(), wh, bias.clone(), h0, c0)
                }
                1 => lstm_sequence_lookup(ids.clone(), table, wh, h0, c0),
                _ => {
                    let xw = table
                        .select(0, ids.clone().reshape([n * t]))
                        .reshape([n, t, 4 * h]);
                    lstm_steps_tensors(xw, wh, h0, c0)
                }
            };
            let loss = (out.outputs.clone() * probe.clone()).sum()
                + (out.h.clone() * ph.clone()).sum()
                + (out.c.clone() * pc.clone()).sum();
            (out, loss.backward())
        };
        let (embedded, g0) = run(0);
        for how in [1, 2] {
            let (looked_up, g) = run(how);
            assert!(max_diff(looked_up.outputs, embedded.outputs.clone()) < 1e-5);
            assert!(max_diff(looked_up.h, embedded.h.clone()) < 1e-5);
            assert!(max_diff(looked_up.c, embedded.c.clone()) < 1e-5);
            for p in [&emb, &w_ih, &w_hh, &h0, &c0] {
                assert!(
                    max_diff(p.grad(&g).unwrap(), p.grad(&g0).unwrap()) < 1e-4,
                    "{how}"
                );
            }
            assert!(max_diff(bias.grad(&g).unwrap(), bias.grad(&g0).unwrap()) < 1e-4);
            let unused = emb.grad(&g).unwrap().narrow(0, v - 1, 1).abs().max();
            assert_eq!(unused.into_scalar::<f32>(), 0.0);
        }
    }

    #[cfg(feature = "flex")]
    #[test]
    fn fused_path_is_taken_on_flex() {
        let device = Device::flex();
        let z2 = |r, c| Tensor::<2>::zeros([r, c], &device);
        let dims =
            kiln_kernels::flex::lstm::LstmDims::new([2, 3, 4], [4, 8], [2, 8], [8], [2, 2], [2, 2])
                .unwrap();
        let x = Tensor::<3>::zeros([2, 3, 4], &device);
        let b = Tensor::<1>::zeros([8], &device);
        let y = kiln_kernels::flex::lstm::lstm(
            [&x],
            [&z2(4, 8), &z2(2, 8)],
            &b,
            [&z2(2, 2), &z2(2, 2)],
            dims,
        );
        assert_eq!(y.expect("flex primitives").dims(), [2 * 4, 2]);
        let ids = Tensor::<2, Int>::from_ints([[0, 2, 1], [2, 2, 0]], &device);
        let lookup =
            kiln_kernels::flex::lstm::LstmDims::new([2, 3, 0], [0, 8], [2, 8], [8], [2, 2], [2, 2])
                .unwrap();
        let y = kiln_kernels::flex::lstm::lstm_lookup(
            &ids,
            &z2(3, 8),
            &z2(2, 8),
            [&z2(2, 2), &z2(2, 2)],
            lookup,
        );
        assert_eq!(y.expect("flex primitives").dims(), [2 * 4, 2]);
        // An id past the table's rows is left to the tensor form.
        let y = kiln_kernels::flex::lstm::lstm_lookup(
            &ids,
            &z2(2, 8),
            &z2(2, 8),
            [&z2(2, 2), &z2(2, 2)],
            lookup,
        );
        assert!(y.is_none());
        // Mismatched shapes are left to the tensor form.
        assert!(
            kiln_kernels::flex::lstm::LstmDims::new([2, 3, 4], [4, 8], [2, 8], [8], [3, 2], [2, 2])
                .is_none()
        );
    }
}
