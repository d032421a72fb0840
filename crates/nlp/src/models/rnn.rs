//! Recurrent encoders: stacked, optionally bidirectional LSTM or GRU over padded batches.
//!
//! The parameters are Burn's own [`Lstm`] and [`Gru`] modules (same initialisation, same
//! records, same gate equations as PyTorch's `nn.LSTM` / `nn.GRU`). The forward pass is
//! computed in fused form: the input projection of every time step and gate in one matrix
//! product, then one `[H, 4H]` (LSTM) or `[H, 3H]` (GRU) product per step, instead of eight
//! (six) small products and a slice-assign per step. The result equals Burn's
//! `Lstm::forward` / `Gru::forward` (tested) and trains several times faster.
//!
//! The right-to-left direction of a bidirectional layer reads each sequence from its last
//! real token, not from the padding: positions are reversed within each sequence's length.

use burn::nn::{Dropout, DropoutConfig, Gru, GruConfig, Lstm, LstmConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RnnKind {
    /// Long short-term memory (Hochreiter and Schmidhuber, 1997).
    Lstm,
    /// Gated recurrent unit (Cho et al., 2014), PyTorch's variant (reset after the product).
    Gru,
}

/// Configuration of [`RnnEncoder`].
#[derive(Config, Debug)]
pub struct RnnEncoderConfig {
    /// Input width.
    pub d_input: usize,
    /// Hidden width per direction.
    pub d_hidden: usize,
    /// LSTM or GRU.
    #[config(default = "RnnKind::Lstm")]
    pub kind: RnnKind,
    /// Stacked layers; each reads the previous layer's outputs.
    #[config(default = 1)]
    pub layers: usize,
    /// Add a right-to-left pass and concatenate it to the left-to-right one.
    #[config(default = false)]
    pub bidirectional: bool,
    /// Dropout between stacked layers (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl RnnEncoderConfig {
    /// Builds the encoder on `device`.
    pub fn init(&self, device: &Device) -> RnnEncoder {
        let directions = if self.bidirectional { 2 } else { 1 };
        let layers = (0..self.layers.max(1))
            .map(|l| {
                let d_in = if l == 0 {
                    self.d_input
                } else {
                    self.d_hidden * directions
                };
                let cell = || RnnCell::new(self.kind, d_in, self.d_hidden, device);
                RnnLayer {
                    forward: cell(),
                    reverse: self.bidirectional.then(cell),
                }
            })
            .collect();
        RnnEncoder {
            layers,
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// One cell: Burn's LSTM or GRU (exactly one is present).
#[derive(Module, Debug)]
pub struct RnnCell {
    /// The LSTM, for [`RnnKind::Lstm`].
    pub lstm: Option<Lstm>,
    /// The GRU, for [`RnnKind::Gru`].
    pub gru: Option<Gru>,
}

/// The final state of a cell: `(hidden, cell)` for an LSTM, `(hidden, None)` for a GRU.
pub type RnnState = (Tensor<2>, Option<Tensor<2>>);

impl RnnCell {
    fn new(kind: RnnKind, d_input: usize, d_hidden: usize, device: &Device) -> Self {
        match kind {
            RnnKind::Lstm => Self {
                lstm: Some(LstmConfig::new(d_input, d_hidden, true).init(device)),
                gru: None,
            },
            RnnKind::Gru => Self {
                lstm: None,
                gru: Some(GruConfig::new(d_input, d_hidden, true).init(device)),
            },
        }
    }

    /// Hidden width.
    pub fn d_hidden(&self) -> usize {
        match (&self.lstm, &self.gru) {
            (Some(l), _) => l.d_hidden,
            (None, Some(g)) => g.d_hidden,
            (None, None) => 0,
        }
    }

    /// Runs the cell left to right over `x` from `state` (zeros when `None`).
    ///
    /// # Shapes
    /// - `x`: `[N, T, D]`; state tensors `[N, H]`
    /// - output: `[N, T, H]` and the state after the last step
    pub fn forward(&self, x: Tensor<3>, state: Option<RnnState>) -> (Tensor<3>, RnnState) {
        match (&self.lstm, &self.gru) {
            (Some(lstm), _) => {
                let (out, h, c) = lstm_forward(lstm, x, state.map(|(h, c)| (h, c)));
                (out, (h, Some(c)))
            }
            (None, Some(gru)) => {
                let (out, h) = gru_forward(gru, x, state.map(|(h, _)| h));
                (out, (h, None))
            }
            (None, None) => unreachable!("RnnCell::new builds one of the two"),
        }
    }
}

fn weight_and_bias(linears: &[&burn::nn::Linear]) -> (Tensor<2>, Option<Tensor<1>>) {
    let w = Tensor::cat(linears.iter().map(|l| l.weight.val()).collect(), 1);
    let b = linears
        .iter()
        .map(|l| l.bias.as_ref().map(|b| b.val()))
        .collect::<Option<Vec<_>>>()
        .map(|bs| Tensor::cat(bs, 0));
    (w, b)
}

fn add_bias<const D: usize>(x: Tensor<D>, b: Option<Tensor<1>>) -> Tensor<D> {
    match b {
        Some(b) => x + b.unsqueeze(),
        None => x,
    }
}

/// The input projection of every step at once, laid out time-major: `[T, N, G]`.
fn project_inputs(x: Tensor<3>, w: Tensor<2>, b: Option<Tensor<1>>) -> Tensor<3> {
    let [n, t, d] = x.dims();
    let g = w.dims()[1];
    let xw = add_bias(x.swap_dims(0, 1).reshape([t * n, d]).matmul(w), b);
    xw.reshape([t, n, g])
}

/// Burn's [`Lstm`] computed in fused form (gates ordered input, forget, output, cell so that
/// one sigmoid covers the first three). Only the standard configuration (sigmoid/tanh, no
/// clipping, separate forget gate) is fused; others fall back to `Lstm::forward`.
///
/// # Shapes
/// - `x`: `[N, T, D]`, state `(h, c)` each `[N, H]`
/// - output: `[N, T, H]`, final `h`, final `c`
pub fn lstm_forward(
    lstm: &Lstm,
    x: Tensor<3>,
    state: Option<(Tensor<2>, Option<Tensor<2>>)>,
) -> (Tensor<3>, Tensor<2>, Tensor<2>) {
    let [n, t, _] = x.dims();
    let h_dim = lstm.d_hidden;
    let device = x.device();
    let (mut h, mut c) = match state {
        Some((h, c)) => {
            let c = c.unwrap_or_else(|| Tensor::zeros([n, h_dim], &device));
            (h, c)
        }
        None => (
            Tensor::zeros([n, h_dim], &device),
            Tensor::zeros([n, h_dim], &device),
        ),
    };
    let standard = !lstm.input_forget
        && lstm.clip.is_none()
        && lstm.batch_first
        && !lstm.reverse
        && matches!(
            lstm.gate_activation,
            burn::nn::activation::Activation::Sigmoid(_)
        )
        && matches!(
            lstm.cell_activation,
            burn::nn::activation::Activation::Tanh(_)
        )
        && matches!(
            lstm.hidden_activation,
            burn::nn::activation::Activation::Tanh(_)
        );
    let Some(forget) = lstm.forget_gate.as_ref().filter(|_| standard) else {
        let state = burn::nn::LstmState::new(c, h);
        let (out, s) = lstm.forward(x, Some(state));
        return (out, s.hidden, s.cell);
    };
    let gates = [&lstm.input_gate, forget, &lstm.output_gate, &lstm.cell_gate];
    let (w_ih, b_ih) = weight_and_bias(&gates.map(|g| &g.input_transform));
    let (w_hh, b_hh) = weight_and_bias(&gates.map(|g| &g.hidden_transform));
    let bias = match (b_ih, b_hh) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    let xw = project_inputs(x, w_ih, bias);
    let mut outputs = Vec::with_capacity(t);
    for xw_t in xw.iter_dim(0) {
        let z = xw_t.reshape([n, 4 * h_dim]) + h.matmul(w_hh.clone());
        let ifo = burn::tensor::activation::sigmoid(z.clone().narrow(1, 0, 3 * h_dim));
        let g = z.narrow(1, 3 * h_dim, h_dim).tanh();
        let i = ifo.clone().narrow(1, 0, h_dim);
        let f = ifo.clone().narrow(1, h_dim, h_dim);
        let o = ifo.narrow(1, 2 * h_dim, h_dim);
        c = f * c + i * g;
        h = o * c.clone().tanh();
        outputs.push(h.clone());
    }
    (Tensor::stack(outputs, 1), h, c)
}

/// A GRU's weights laid out for one product per step: gates reset, update, new (as PyTorch).
/// Build it once per forward pass and call [`step`](Self::step) for each time step.
#[derive(Debug, Clone)]
pub struct FusedGru {
    w_ih: Tensor<2>,
    b_ih: Option<Tensor<1>>,
    w_hh: Tensor<2>,
    b_hh: Option<Tensor<1>>,
    d_hidden: usize,
}

impl FusedGru {
    /// Fuses `gru`'s weights, or `None` when its configuration is not the standard one (reset
    /// after the product, sigmoid/tanh, no clipping).
    pub fn new(gru: &Gru) -> Option<Self> {
        let standard = gru.reset_after
            && gru.clip.is_none()
            && matches!(
                gru.gate_activation,
                burn::nn::activation::Activation::Sigmoid(_)
            )
            && matches!(
                gru.hidden_activation,
                burn::nn::activation::Activation::Tanh(_)
            );
        if !standard {
            return None;
        }
        let gates = [&gru.reset_gate, &gru.update_gate, &gru.new_gate];
        let (w_ih, b_ih) = weight_and_bias(&gates.map(|g| &g.input_transform));
        let (w_hh, b_hh) = weight_and_bias(&gates.map(|g| &g.hidden_transform));
        Some(Self {
            w_ih,
            b_ih,
            w_hh,
            b_hh,
            d_hidden: gru.d_hidden,
        })
    }

    /// The input projection of every step, time-major `[T, N, 3H]`.
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        project_inputs(x, self.w_ih.clone(), self.b_ih.clone())
    }

    /// The input projection of one step, `[N, 3H]`.
    pub fn project_step(&self, x: Tensor<2>) -> Tensor<2> {
        add_bias(x.matmul(self.w_ih.clone()), self.b_ih.clone())
    }

    /// One step from the projected input `xw` (`[N, 3H]`) and the state `h` (`[N, H]`).
    pub fn step(&self, xw: Tensor<2>, h: Tensor<2>) -> Tensor<2> {
        let h_dim = self.d_hidden;
        let hw = add_bias(h.clone().matmul(self.w_hh.clone()), self.b_hh.clone());
        let rz = burn::tensor::activation::sigmoid(
            xw.clone().narrow(1, 0, 2 * h_dim) + hw.clone().narrow(1, 0, 2 * h_dim),
        );
        let r = rz.clone().narrow(1, 0, h_dim);
        let z = rz.narrow(1, h_dim, h_dim);
        let candidate =
            (xw.narrow(1, 2 * h_dim, h_dim) + r * hw.narrow(1, 2 * h_dim, h_dim)).tanh();
        candidate.clone() + z * (h - candidate)
    }
}

/// Burn's [`Gru`] computed in fused form ([`FusedGru`]); non-standard configurations fall back
/// to `Gru::forward`.
///
/// # Shapes
/// - `x`: `[N, T, D]`, state `[N, H]`
/// - output: `[N, T, H]` and the final state
pub fn gru_forward(gru: &Gru, x: Tensor<3>, state: Option<Tensor<2>>) -> (Tensor<3>, Tensor<2>) {
    let [n, t, _] = x.dims();
    let h_dim = gru.d_hidden;
    let mut h = state.unwrap_or_else(|| Tensor::zeros([n, h_dim], &x.device()));
    let Some(fused) = FusedGru::new(gru) else {
        let out = gru.forward(x, Some(h));
        let last = out.clone().narrow(1, t - 1, 1).reshape([n, h_dim]);
        return (out, last);
    };
    let xw = fused.project(x);
    let mut outputs = Vec::with_capacity(t);
    for xw_t in xw.iter_dim(0) {
        h = fused.step(xw_t.reshape([n, 3 * h_dim]), h);
        outputs.push(h.clone());
    }
    (Tensor::stack(outputs, 1), h)
}

/// One stacked layer: a left-to-right cell and, when bidirectional, a right-to-left one.
#[derive(Module, Debug)]
pub struct RnnLayer {
    /// Left to right.
    pub forward: RnnCell,
    /// Right to left.
    pub reverse: Option<RnnCell>,
}

/// Outputs of [`RnnEncoder::forward`].
#[derive(Debug, Clone)]
pub struct RnnOutput {
    /// `[N, T, H * directions]`: the last layer's outputs at every position (padding
    /// positions hold values of no meaning).
    pub outputs: Tensor<3>,
    /// `[N, H * directions]`: the last layer's state after each sequence's last real token
    /// (left to right) concatenated with the state after its first token (right to left).
    pub last: Tensor<2>,
}

/// Stacked, optionally bidirectional LSTM / GRU over padded batches.
#[derive(Module, Debug)]
pub struct RnnEncoder {
    /// The layers, bottom first.
    pub layers: Vec<RnnLayer>,
    dropout: Dropout,
}

/// For each row, positions `0..len` reversed and padding positions left in place.
fn reverse_index(lengths: &[usize], t: usize, device: &Device) -> Tensor<2, Int> {
    let mut idx = Vec::with_capacity(lengths.len() * t);
    for &len in lengths {
        let len = len.min(t);
        idx.extend((0..t).map(|p| {
            if p < len {
                (len - 1 - p) as i64
            } else {
                p as i64
            }
        }));
    }
    Tensor::<1, Int>::from_ints(idx.as_slice(), device).reshape([lengths.len(), t])
}

fn gather_time(x: Tensor<3>, idx: Tensor<2, Int>) -> Tensor<3> {
    let d = x.dims()[2];
    let [n, t] = idx.dims();
    let idx = idx.reshape([n, t, 1]).expand([n, t, d]);
    x.gather(1, idx)
}

impl RnnEncoder {
    /// Output width: hidden width times the number of directions.
    pub fn d_output(&self) -> usize {
        let layer = &self.layers[0];
        layer.forward.d_hidden() * if layer.reverse.is_some() { 2 } else { 1 }
    }

    /// Encodes a padded batch. `mask` (true on real tokens, a prefix of each row) is needed
    /// for correct right-to-left passes and last states; `None` means no padding.
    ///
    /// # Shapes
    /// - `x`: `[N, T, D]`, `mask`: `[N, T]`
    /// - output: see [`RnnOutput`]
    pub fn forward(&self, x: Tensor<3>, mask: Option<Tensor<2, Bool>>) -> RnnOutput {
        let [n, t, _] = x.dims();
        let device = x.device();
        let lengths: Vec<usize> = match &mask {
            Some(m) => m
                .clone()
                .int()
                .sum_dim(1)
                .into_data()
                .iter::<i64>()
                .map(|l| l as usize)
                .collect(),
            None => vec![t; n],
        };
        let padded = lengths.iter().any(|&l| l != t);
        let reverse_idx = reverse_index(&lengths, t, &device);
        let last_idx = Tensor::<1, Int>::from_ints(
            lengths
                .iter()
                .map(|&l| l.clamp(1, t) as i64 - 1)
                .collect::<Vec<_>>()
                .as_slice(),
            &device,
        );
        let mut x = x;
        let mut last = None;
        for (l, layer) in self.layers.iter().enumerate() {
            if l > 0 {
                x = self.dropout.forward(x);
            }
            let (fwd, _) = layer.forward.forward(x.clone(), None);
            let h = fwd.dims()[2];
            let fwd_last =
                gather_time(fwd.clone(), last_idx.clone().reshape([n, 1])).reshape([n, h]);
            match &layer.reverse {
                None => {
                    last = Some(fwd_last);
                    x = fwd;
                }
                Some(rev_cell) => {
                    let (rev, rev_last) = if padded {
                        let reversed = gather_time(x, reverse_idx.clone());
                        let (out, _) = rev_cell.forward(reversed, None);
                        let out = gather_time(out, reverse_idx.clone());
                        // The right-to-left state after the first token sits at position 0.
                        let first = out.clone().narrow(1, 0, 1).reshape([n, h]);
                        (out, first)
                    } else {
                        let (out, (state, _)) = rev_cell.forward(x.flip([1]), None);
                        (out.flip([1]), state)
                    };
                    last = Some(Tensor::cat(vec![fwd_last, rev_last], 1));
                    x = Tensor::cat(vec![fwd, rev], 2);
                }
            }
        }
        RnnOutput {
            outputs: x,
            last: last.expect("at least one layer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    fn device() -> Device {
        kiln_core::backend::device("cpu").unwrap()
    }

    #[test]
    fn fused_lstm_and_gru_equal_burns_layers() {
        let device = device();
        let x = Tensor::<3>::random([3, 5, 4], Distribution::Normal(0.0, 1.0), &device);
        let h0 = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
        let c0 = Tensor::<2>::random([3, 6], Distribution::Normal(0.0, 1.0), &device);
        let lstm = LstmConfig::new(4, 6, true).init(&device);
        let (ours, h, c) = lstm_forward(&lstm, x.clone(), Some((h0.clone(), Some(c0.clone()))));
        let (theirs, state) =
            lstm.forward(x.clone(), Some(burn::nn::LstmState::new(c0, h0.clone())));
        let tol = Tolerance::absolute(1e-5);
        ours.into_data()
            .assert_approx_eq::<f32>(&theirs.into_data(), tol);
        h.into_data()
            .assert_approx_eq::<f32>(&state.hidden.into_data(), tol);
        c.into_data()
            .assert_approx_eq::<f32>(&state.cell.into_data(), tol);

        let gru = GruConfig::new(4, 6, true).init(&device);
        let (ours, last) = gru_forward(&gru, x.clone(), Some(h0.clone()));
        let theirs = gru.forward(x, Some(h0));
        ours.into_data()
            .assert_approx_eq::<f32>(&theirs.clone().into_data(), tol);
        last.into_data()
            .assert_approx_eq::<f32>(&theirs.narrow(1, 4, 1).reshape([3, 6]).into_data(), tol);
    }

    #[test]
    fn padding_changes_nothing_in_either_direction() {
        let device = device();
        for kind in [RnnKind::Lstm, RnnKind::Gru] {
            let enc = RnnEncoderConfig::new(3, 4)
                .with_kind(kind)
                .with_layers(2)
                .with_bidirectional(true)
                .init(&device);
            let x = Tensor::<3>::random([1, 3, 3], Distribution::Normal(0.0, 1.0), &device);
            let alone = enc.forward(x.clone(), None);
            let pad = Tensor::<3>::random([1, 2, 3], Distribution::Normal(0.0, 1.0), &device);
            let padded_x = Tensor::cat(vec![x, pad], 1);
            let mask = Tensor::<2, Bool>::from_bool(
                TensorData::from([[true, true, true, false, false]]),
                &device,
            );
            let padded = enc.forward(padded_x, Some(mask));
            let tol = Tolerance::absolute(1e-5);
            assert_eq!(padded.outputs.dims(), [1, 5, 8]);
            padded
                .outputs
                .narrow(1, 0, 3)
                .into_data()
                .assert_approx_eq::<f32>(&alone.outputs.into_data(), tol);
            padded
                .last
                .into_data()
                .assert_approx_eq::<f32>(&alone.last.into_data(), tol);
        }
    }
}
