//! Backend conformance of the NLP family: LSTM and GRU encoders (stacked, bidirectional, over
//! a padded batch), additive and multiplicative attention with a padding mask, the Transformer
//! encoder classifier, BERT (the MiniLM architecture, tiny) and the pretrained decoders (the
//! GPT-2 and Llama fixtures, over a left-padded batch) agree with the reference CPU
//! backend on every compiled-in backend (outputs and every parameter's gradient), and a few
//! training steps lower the loss. Shapes are tiny: the wgpu half runs on a software Vulkan
//! device in CI. See `kiln_dev::conformance`.

use burn::prelude::*;
use kiln_core::loss::CrossEntropy;
use kiln_dev::conformance::{Tolerance, check_parity, check_training, reference_device};
use kiln_nlp::models::{
    AttentionConfig, AttentionKind, BertConfig, RnnEncoderConfig, RnnKind,
    TransformerClassifierConfig,
};

/// `[n, t, d]` inputs in [-1, 1], the same on every backend.
fn sequences(n: usize, t: usize, d: usize, device: &Device) -> Tensor<3> {
    let values: Vec<f32> = (0..n * t * d).map(|i| ((i as f32) * 0.913).sin()).collect();
    Tensor::<1>::from_floats(values.as_slice(), device).reshape([n, t, d])
}

/// A padding mask (true on real tokens) for sequences of these lengths, padded to `t`.
fn mask(lengths: &[usize], t: usize, device: &Device) -> Tensor<2, Bool> {
    let values: Vec<bool> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |j| j < len))
        .collect();
    Tensor::<1, Bool>::from_bool(TensorData::new(values, [lengths.len() * t]), device)
        .reshape([lengths.len(), t])
}

fn tokens(n: usize, t: usize, vocab: i64, device: &Device) -> Tensor<2, Int> {
    let values: Vec<i64> = (0..(n * t) as i64)
        .map(|i| 1 + (i * 5) % (vocab - 1))
        .collect();
    Tensor::<1, Int>::from_ints(values.as_slice(), device).reshape([n, t])
}

const LENGTHS: [usize; 3] = [5, 2, 4];

fn rnn_parity(kind: RnnKind, device: &Device) {
    let reference = reference_device();
    reference.seed(21);
    let encoder = RnnEncoderConfig::new(3, 4)
        .with_kind(kind)
        .with_layers(2)
        .with_bidirectional(true)
        .init(&reference);
    let name = format!("{kind:?} encoder");
    check_parity(
        &format!("{name} outputs"),
        &encoder,
        device,
        Tolerance::DEFAULT,
        |m, d| {
            let out = m.forward(sequences(3, 5, 3, d), Some(mask(&LENGTHS, 5, d)));
            // Padding positions hold values of no meaning: compare real positions only.
            out.outputs * mask(&LENGTHS, 5, d).float().unsqueeze_dim::<3>(2)
        },
    );
    check_parity(
        &format!("{name} last state"),
        &encoder,
        device,
        Tolerance::DEFAULT,
        |m, d| {
            m.forward(sequences(3, 5, 3, d), Some(mask(&LENGTHS, 5, d)))
                .last
        },
    );
}

kiln_dev::backend_test! {
    /// Two-layer bidirectional LSTM over a padded batch.
    fn lstm_parity(device) {
        rnn_parity(RnnKind::Lstm, device);
    }
}

kiln_dev::backend_test! {
    /// Two-layer bidirectional GRU over a padded batch.
    fn gru_parity(device) {
        rnn_parity(RnnKind::Gru, device);
    }
}

kiln_dev::backend_test! {
    /// Additive and multiplicative attention: context vectors and weights, padding masked.
    fn attention_parity(device) {
        for kind in [AttentionKind::Additive, AttentionKind::Multiplicative] {
            let reference = reference_device();
            reference.seed(22);
            let attention = AttentionConfig::new(4, 6).with_kind(kind).init(&reference);
            let what = format!("{kind:?} attention");
            let run = |m: &kiln_nlp::models::Attention, d: &Device| {
                let memory = m.memory(sequences(3, 5, 6, d), mask(&LENGTHS, 5, d));
                m.forward(sequences(3, 1, 4, d).reshape([3, 4]), &memory)
            };
            check_parity(&format!("{what} context"), &attention, device, Tolerance::DEFAULT, |m, d| {
                run(m, d).0
            });
            check_parity(&format!("{what} weights"), &attention, device, Tolerance::DEFAULT, |m, d| {
                run(m, d).1
            });
        }
    }
}

fn transformer() -> kiln_nlp::models::TransformerClassifier {
    let reference = reference_device();
    reference.seed(23);
    TransformerClassifierConfig::new(20, 3)
        .with_d_model(8)
        .with_n_heads(2)
        .with_n_layers(2)
        .with_d_ff(16)
        .with_max_len(8)
        .with_dropout(0.0)
        .init(&reference)
}

kiln_dev::backend_test! {
    /// The Transformer encoder classifier (multi-head self-attention with a padding mask,
    /// layer norm, feed-forward, mean pooling).
    fn transformer_parity(device) {
        check_parity("transformer classifier", &transformer(), device, Tolerance::DEFAULT, |m, d| {
            m.forward(tokens(3, 5, 20, d), mask(&LENGTHS, 5, d))
        });
    }
}

kiln_dev::backend_test! {
    /// BERT (the MiniLM architecture: GELU, post-norm, token-type embeddings), two tiny layers.
    fn bert_parity(device) {
        let config: BertConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
            "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0
        }))
        .unwrap();
        let reference = reference_device();
        reference.seed(24);
        let bert = config.init(&reference);
        check_parity("bert", &bert, device, Tolerance::DEFAULT, |m, d| {
            m.forward(tokens(3, 5, 20, d), mask(&LENGTHS, 5, d).int())
        });
    }
}

kiln_dev::backend_test! {
    /// Ten Adam steps of the Transformer classifier lower the cross-entropy.
    fn transformer_training(device) {
        let targets = |d: &Device| Tensor::<1, Int>::from_ints([0, 2, 1], d);
        check_training("transformer classifier", &transformer(), device, 10, 0.01, |m, d| {
            CrossEntropy::new().forward(m.forward(tokens(3, 5, 20, d), mask(&LENGTHS, 5, d)), targets(d))
        });
    }
}

kiln_dev::backend_test! {
    /// BERT's GELU and its gradient equal the exact function, `x Phi(x)` and
    /// `Phi(x) + x phi(x)`, on every backend (values computed in f64 with Python's math.erf).
    /// Burn 0.22.1's own `gelu` gradient is off by up to 1e-3 on ndarray and wgpu.
    fn gelu_gradient_is_exact(device) {
        use kiln_nlp::models::gelu_exact;
        let xs = [-3.0f32, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0];
        let values = [
            -0.004049694, -0.045500264, -0.158655254, -0.154268769, 0.0, 0.345731231,
            0.841344746, 1.954499736, 2.995950306,
        ];
        let slopes = [
            -0.011945647, -0.085231801, -0.083315471, 0.132504875, 0.5, 0.867495125,
            1.083315471, 1.085231801, 1.011945647,
        ];
        let d = device.clone().autodiff();
        let x = Tensor::<1>::from_floats(xs, &d).require_grad();
        let y = gelu_exact(x.clone());
        let got = kiln_dev::conformance::owned(y.to_data());
        let grads = y.sum().backward();
        let slope = x.grad(&grads).unwrap().into_data();
        let tol = Tolerance::new(2e-6, 2e-6);
        kiln_dev::conformance::assert_close("gelu", got, TensorData::new(values.to_vec(), [9]), tol);
        kiln_dev::conformance::assert_close("gelu gradient", slope, TensorData::new(slopes.to_vec(), [9]), tol);
        // Inference takes Burn's kernel: the same values.
        let plain = gelu_exact(Tensor::<1>::from_floats(xs, device)).into_data();
        kiln_dev::conformance::assert_close("gelu (inference)", plain, TensorData::new(values.to_vec(), [9]), tol);
    }
}

kiln_dev::backend_test! {
    /// Ten Adam steps of the bidirectional LSTM classifier (embedding, padded batch, mean and
    /// max pooling) lower the cross-entropy.
    fn lstm_training(device) {
        use kiln_core::TrainStep;
        let reference = reference_device();
        reference.seed(25);
        let model = kiln_nlp::LstmClassifierConfig::new(20, 3)
            .with_embed_dim(6)
            .with_hidden(5)
            .with_bidirectional(true)
            .with_dropout(0.0)
            .init(&reference);
        check_training("lstm classifier", &model, device, 10, 0.02, |m, d| {
            m.train_step(kiln_nlp::TextBatch {
                tokens: tokens(3, 5, 20, d),
                mask: mask(&LENGTHS, 5, d),
                targets: Tensor::<1, Int>::from_ints([2, 0, 1], d),
            })
            .loss
        });
    }
}

/// A left-padded batch through a pretrained decoder fixture (`tests/fixtures/decoders`):
/// GPT-2, and Llama (grouped-query attention, rotary embeddings, RMSNorm, SwiGLU); outputs at
/// real positions and every parameter's gradient.
fn decoder_parity(name: &str, device: &Device) {
    use kiln_nlp::generation::{CachedDecoder, KvCache};
    use kiln_nlp::models::{Gpt2, Llama};
    let folder = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/decoders")
        .join(name);
    let ids = vec![vec![0, 0, 5, 17, 3], vec![40, 8, 9, 120, 64]];
    let real = vec![vec![0u8, 0, 1, 1, 1], vec![1u8; 5]];
    let keep = |d: &Device| {
        let m: Vec<f32> = real.iter().flatten().map(|&r| f32::from(r)).collect();
        Tensor::<1>::from_floats(m.as_slice(), d).reshape([2, 5, 1])
    };
    fn run(m: &impl CachedDecoder, ids: &[Vec<u32>], real: &[Vec<u8>], d: &Device) -> Tensor<3> {
        m.forward_cached(ids, real, &mut KvCache::new(), d)
            .expect("fixture inputs")
    }
    let reference = reference_device();
    if name.starts_with("gpt2") {
        let (_, model) = Gpt2::from_folder(&folder, &reference).unwrap();
        check_parity(name, &model, device, Tolerance::DEFAULT, |m, d| {
            run(m, &ids, &real, d) * keep(d)
        });
    } else {
        let (_, model) = Llama::from_folder(&folder, &reference).unwrap();
        check_parity(name, &model, device, Tolerance::DEFAULT, |m, d| {
            run(m, &ids, &real, d) * keep(d)
        });
    }
}

kiln_dev::backend_test! {
    /// GPT-2 over a left-padded batch.
    fn gpt2_parity(device) {
        decoder_parity("gpt2-tiny", device);
    }
}

kiln_dev::backend_test! {
    /// Llama over a left-padded batch.
    fn llama_parity(device) {
        decoder_parity("llama-tiny", device);
    }
}
