//! Recurrent encoders and attention against PyTorch, given the same weights: values made by
//! `tests/fixtures/make_rnn_fixture.py` (nn.LSTM / nn.GRU over a packed, padded batch;
//! Bahdanau and Luong attention with a padding mask).

use burn::module::Param;
use burn::nn::{GateController, Linear};
use burn::prelude::*;
use burn::tensor::Tolerance;
use kiln_nlp::models::{AttentionConfig, AttentionKind, RnnEncoderConfig, RnnKind};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/rnn_fixture.json");
    serde_json::from_str(text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}

fn tensor<const D: usize>(v: &Value, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<1>::from_floats(floats(v).as_slice(), device).reshape(shape)
}

/// The fixture's padding mask `[N, T]` from its sequence lengths.
fn padding_mask(f: &Value, t: usize, device: &Device) -> Tensor<2, Bool> {
    let lengths: Vec<usize> = f["lengths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap() as usize)
        .collect();
    let mask: Vec<bool> = lengths
        .iter()
        .flat_map(|&l| (0..t).map(move |p| p < l))
        .collect();
    Tensor::<2, Bool>::from_bool(TensorData::new(mask, [lengths.len(), t]), device)
}

/// Rows `gate*h .. (gate+1)*h` of a PyTorch `[G*H, In]` weight, transposed to Burn's `[In, H]`.
fn gate_weight(w: &Value, gate: usize, h: usize, d_in: usize, device: &Device) -> Param<Tensor<2>> {
    let full = tensor(w, [floats(w).len() / d_in, d_in], device);
    Param::from_tensor(full.narrow(0, gate * h, h).transpose())
}

fn gate_bias(b: &Value, gate: usize, h: usize, device: &Device) -> Param<Tensor<1>> {
    let full = tensor(b, [floats(b).len()], device);
    Param::from_tensor(full.narrow(0, gate * h, h))
}

fn set_gate(
    g: &mut GateController,
    p: &Value,
    suffix: &str,
    gate: usize,
    h: usize,
    d: usize,
    device: &Device,
) {
    let set = |lin: &mut Linear, w: &str, b: &str, d_in: usize| {
        lin.weight = gate_weight(&p[format!("{w}{suffix}")], gate, h, d_in, device);
        lin.bias = Some(gate_bias(&p[format!("{b}{suffix}")], gate, h, device));
    };
    set(&mut g.input_transform, "weight_ih_l0", "bias_ih_l0", d);
    set(&mut g.hidden_transform, "weight_hh_l0", "bias_hh_l0", h);
}

#[test]
fn bidirectional_lstm_and_gru_match_pytorch_on_a_padded_batch() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let f = fixture();
    let (n, t, d, h) = (2, 5, 3, 4);
    let x = tensor(&f["x"], [n, t, d], &device);
    let mask = padding_mask(&f, t, &device);
    for (name, kind) in [("lstm", RnnKind::Lstm), ("gru", RnnKind::Gru)] {
        let r = &f[name];
        let p = &r["params"];
        let mut enc = RnnEncoderConfig::new(d, h)
            .with_kind(kind)
            .with_bidirectional(true)
            .init(&device);
        let layer = &mut enc.layers[0];
        let reverse = layer.reverse.as_mut().unwrap();
        for (cell, suffix) in [(&mut layer.forward, ""), (reverse, "_reverse")] {
            if let Some(lstm) = cell.lstm.as_mut() {
                // PyTorch's gate order: input, forget, cell, output.
                set_gate(&mut lstm.input_gate, p, suffix, 0, h, d, &device);
                set_gate(
                    lstm.forget_gate.as_mut().unwrap(),
                    p,
                    suffix,
                    1,
                    h,
                    d,
                    &device,
                );
                set_gate(&mut lstm.cell_gate, p, suffix, 2, h, d, &device);
                set_gate(&mut lstm.output_gate, p, suffix, 3, h, d, &device);
            }
            if let Some(gru) = cell.gru.as_mut() {
                // PyTorch's gate order: reset, update, new.
                set_gate(&mut gru.reset_gate, p, suffix, 0, h, d, &device);
                set_gate(&mut gru.update_gate, p, suffix, 1, h, d, &device);
                set_gate(&mut gru.new_gate, p, suffix, 2, h, d, &device);
            }
        }
        let out = enc.forward(x.clone(), Some(mask.clone()));
        let expected = tensor(&r["output"], [n, t, 2 * h], &device);
        // Compare real positions only (PyTorch pads with zeros, ours holds no meaning there).
        let m = mask.clone().float().reshape([n, t, 1]);
        let tol = Tolerance::absolute(1e-5);
        (out.outputs * m.clone())
            .into_data()
            .assert_approx_eq::<f32>(&(expected * m).into_data(), tol);
        // h_n is [directions, N, H]; ours is [N, 2H] (forward then reverse).
        let h_n = tensor(&r["h_n"], [2, n, h], &device);
        let expected_last = Tensor::cat(
            vec![
                h_n.clone().narrow(0, 0, 1).reshape([n, h]),
                h_n.narrow(0, 1, 1).reshape([n, h]),
            ],
            1,
        );
        out.last
            .into_data()
            .assert_approx_eq::<f32>(&expected_last.into_data(), tol);
    }
}

#[test]
fn additive_and_multiplicative_attention_match_pytorch() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let f = fixture();
    let (n, t, q, k, a) = (2, 5, 4, 6, 5);
    let query = tensor(&f["query"], [n, q], &device);
    let keys = tensor(&f["keys"], [n, t, k], &device);
    let mask = padding_mask(&f, t, &device);
    let tol = Tolerance::absolute(1e-5);

    let r = &f["additive"];
    let mut att = AttentionConfig::new(q, k)
        .with_d_attention(Some(a))
        .init(&device);
    att.query.weight = Param::from_tensor(tensor(&r["w_q"], [a, q], &device).transpose());
    let key = att.key.as_mut().unwrap();
    key.weight = Param::from_tensor(tensor(&r["w_k"], [a, k], &device).transpose());
    key.bias = Some(Param::from_tensor(tensor(&r["b_k"], [a], &device)));
    att.score.as_mut().unwrap().weight =
        Param::from_tensor(tensor(&r["v"], [1, a], &device).transpose());
    let (context, weights) = att.forward(query.clone(), &att.memory(keys.clone(), mask.clone()));
    weights
        .into_data()
        .assert_approx_eq::<f32>(&tensor(&r["weights"], [n, t], &device).into_data(), tol);
    context
        .into_data()
        .assert_approx_eq::<f32>(&tensor(&r["context"], [n, k], &device).into_data(), tol);

    let r = &f["multiplicative"];
    let mut att = AttentionConfig::new(q, k)
        .with_kind(AttentionKind::Multiplicative)
        .init(&device);
    att.query.weight = Param::from_tensor(tensor(&r["w"], [k, q], &device).transpose());
    let (context, weights) = att.forward(query, &att.memory(keys, mask));
    weights
        .into_data()
        .assert_approx_eq::<f32>(&tensor(&r["weights"], [n, t], &device).into_data(), tol);
    context
        .into_data()
        .assert_approx_eq::<f32>(&tensor(&r["context"], [n, k], &device).into_data(), tol);
}
