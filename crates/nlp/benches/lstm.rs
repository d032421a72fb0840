//! Recurrent training throughput: tokens per second of a full training step (forward,
//! cross-entropy, backward, Adam update) of a one-layer LSTM language model (vocabulary 65,
//! embedding 64, hidden 256) at batch 32 and sequence length 64, on every compiled-in CPU
//! backend: Kiln's [`CharLstm`] (on flex the embedding and the LSTM's input products as one
//! table lookup, then the fused layer), the same model with the fused layer on the embedded
//! input (no lookup table: the LSTM kernel alone against PyTorch's), and the same model on
//! Burn's stock `Lstm::forward`. The PyTorch peer (`nn.LSTM`, same sizes) is
//! `benches/peers/lstm_torch.py`.
//! The steps run on a worker of the CPU thread pool (`kiln_core::backend::on_cpu_pool`), as
//! `kiln_core`'s `Trainer` runs its loop.

use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, Lstm, LstmConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_core::optim::OptimizerConfig;
use kiln_core::{StepOutput, TrainStep};
use kiln_dev::bench::Bencher;
use kiln_nlp::models::lm::{LanguageModel, lm_step};
use kiln_nlp::models::{CharLstmConfig, LmBatch, RnnEncoder, RnnEncoderConfig};

/// The same model with the embedding's output fed to the LSTM layer as is (Kiln's fused
/// layer on flex, no lookup table).
#[derive(Module, Debug)]
struct EmbeddedLstmLm {
    embedding: Embedding,
    rnn: RnnEncoder,
    output: Linear,
}

impl LanguageModel for EmbeddedLstmLm {
    fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let h = self
            .rnn
            .forward(self.embedding.forward(tokens), None)
            .outputs;
        kiln_core::ops::linear(&self.output, h)
    }

    fn context_len(&self) -> usize {
        64
    }
}

impl TrainStep<LmBatch> for EmbeddedLstmLm {
    fn train_step(&self, batch: LmBatch) -> StepOutput {
        lm_step(self, batch)
    }
}

/// The same model on Burn's `Lstm::forward` (eight products and a slice-assign per step).
#[derive(Module, Debug)]
struct StockLstmLm {
    embedding: Embedding,
    lstm: Lstm,
    output: Linear,
}

impl LanguageModel for StockLstmLm {
    fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let (h, _) = self.lstm.forward(self.embedding.forward(tokens), None);
        self.output.forward(h)
    }

    fn context_len(&self) -> usize {
        64
    }
}

impl TrainStep<LmBatch> for StockLstmLm {
    fn train_step(&self, batch: LmBatch) -> StepOutput {
        lm_step(self, batch)
    }
}

fn time_steps<M: TrainStep<LmBatch>>(
    bench: &mut Bencher,
    name: &str,
    backend: &str,
    model: M,
    batch: &LmBatch,
) {
    let mut model = Some(model);
    let mut optim = OptimizerConfig::adam().init();
    let [n, t] = batch.inputs.dims();
    // On a worker of the CPU pool, as kiln_core's Trainer runs its loop.
    kiln_core::backend::on_cpu_pool(|| {
        bench.run(name, backend, Some(((n * t) as f64, "tokens")), || {
            let m = model.take().expect("model");
            let out = m.train_step(batch.clone());
            let grads = GradientsParams::from_grads(out.loss.backward(), &m);
            model = Some(optim.step(1e-3, m, grads));
        })
    });
}

fn main() -> kiln_core::Result<()> {
    let mut bench = Bencher::from_args();
    let (batch, seq, hidden, vocab) = if bench.tiny() {
        (2, 8, 16, 65)
    } else {
        (32, 64, 256, 65)
    };
    for backend in kiln_dev::bench::backends() {
        let device = backend.device()?.autodiff();
        device.seed(0);
        let ids = |d: &Device| {
            Tensor::<2>::random([batch, seq], Distribution::Uniform(0.0, vocab as f64), d).int()
        };
        let lm_batch = LmBatch {
            inputs: ids(&device),
            targets: ids(&device),
        };
        let fused = CharLstmConfig::new(vocab)
            .with_hidden(hidden)
            .with_layers(1)
            .with_dropout(0.0)
            .init(&device);
        time_steps(
            &mut bench,
            "lstm_train_step_h256_b32_t64",
            backend.name(),
            fused,
            &lm_batch,
        );
        let embedded = EmbeddedLstmLm {
            embedding: EmbeddingConfig::new(vocab, 64).init(&device),
            rnn: RnnEncoderConfig::new(64, hidden).init(&device),
            output: LinearConfig::new(hidden, vocab).init(&device),
        };
        let embedded_backend = format!("{} (embedded input, no lookup table)", backend.name());
        time_steps(
            &mut bench,
            "lstm_train_step_h256_b32_t64",
            &embedded_backend,
            embedded,
            &lm_batch,
        );
        let stock = StockLstmLm {
            embedding: EmbeddingConfig::new(vocab, 64).init(&device),
            lstm: LstmConfig::new(64, hidden, true).init(&device),
            output: LinearConfig::new(hidden, vocab).init(&device),
        };
        let stock_backend = format!("{} (burn Lstm::forward)", backend.name());
        time_steps(
            &mut bench,
            "lstm_train_step_h256_b32_t64",
            &stock_backend,
            stock,
            &lm_batch,
        );
    }
    bench.finish()
}
