//! Recurrent encoders: stacked, optionally bidirectional LSTM or GRU over padded batches.
//!
//! The parameters are Burn's own [`Lstm`] and [`Gru`] modules (same initialisation, same
//! records, same gate equations as PyTorch's `nn.LSTM` / `nn.GRU`, checked against PyTorch in
//! `tests/pytorch_parity.rs`). The forward pass runs over a list of time steps: fewer
//! products per step (input and state sides stacked), no slice-assign of the outputs, and
//! stacked layers hand their steps to the next layer without re-slicing a `[N, T, H]`
//! tensor (each slice costs a zero-filled copy of the whole tensor in the backward pass).
//! The result equals Burn's `Lstm::forward` / `Gru::forward` (tested).
//!
//! The right-to-left direction of a bidirectional layer reads each sequence from its last
//! real token, not from the padding: positions are reversed within each sequence's length.
//!
//! One concern, in one file of about 650 lines: the recurrent encoder (its config, the cell
//! steps of both kinds, the fused LSTM path and the looked-up first layer, stacking and
//! bidirectional reversal), since each piece is only used by the others.

use burn::nn::{Dropout, DropoutConfig, Embedding, Gru, GruConfig, Lstm, LstmConfig};
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
        if let Some(lstm) = self.fused_lstm(&x.device()) {
            let (out, h, c) = lstm_fused(lstm, x, state);
            return (out, (h, Some(c)));
        }
        let (steps, state) = self.forward_steps(time_steps(x), state);
        (Tensor::stack(steps, 1), state)
    }

    /// The LSTM, when the whole sequence runs as one fused operation on `device`
    /// ([`kiln_core::ops::lstm_sequence`] on flex): then the tensor form [`Self::forward`] is
    /// the fast one, not the list of steps.
    pub fn fused_lstm(&self, device: &Device) -> Option<&Lstm> {
        let on_flex = kiln_core::Backend::of(device) == Some(kiln_core::Backend::Flex);
        self.lstm
            .as_ref()
            .filter(|l| on_flex && lstm_is_standard(l))
    }

    /// Runs the cell over `xs` (`T` tensors `[N, D]`) from `state`.
    pub fn forward_steps(
        &self,
        xs: Vec<Tensor<2>>,
        state: Option<RnnState>,
    ) -> (Vec<Tensor<2>>, RnnState) {
        if let Some(lstm) = self.lstm.as_ref().filter(|l| lstm_is_standard(l)) {
            let (out, h, c) = lstm_steps(lstm, xs, state);
            return (out, (h, Some(c)));
        }
        if let Some(fused) = self.gru.as_ref().and_then(FusedGru::new) {
            let (out, h) = fused.steps(xs, state.map(|(h, _)| h));
            return (out, (h, None));
        }
        let (out, state) = self.forward_tensor(Tensor::stack(xs, 1), state);
        (time_steps(out), state)
    }

    fn forward_tensor(&self, x: Tensor<3>, state: Option<RnnState>) -> (Tensor<3>, RnnState) {
        match (&self.lstm, &self.gru) {
            (Some(lstm), _) => {
                let (out, h, c) = lstm_forward(lstm, x, state);
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

/// The time steps of `x` (`[N, T, D]`) as `T` tensors `[N, D]`.
///
/// Steps are sliced from the layer's input, never from a wider projection: the backward pass
/// of each slice fills a zero tensor of the sliced tensor's full size, so slicing `[N, T, 4H]`
/// projections would cost `T` times that size per layer.
pub fn time_steps(x: Tensor<3>) -> Vec<Tensor<2>> {
    let [n, _, d] = x.dims();
    x.iter_dim(1).map(|s| s.reshape([n, d])).collect()
}

/// `(h, c)` to start from: the given state, zeros for what is missing.
fn initial_state(
    lstm: &Lstm,
    state: Option<(Tensor<2>, Option<Tensor<2>>)>,
    n: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    let zeros = || Tensor::<2>::zeros([n, lstm.d_hidden], device);
    match state {
        Some((h, c)) => (h, c.unwrap_or_else(zeros)),
        None => (zeros(), zeros()),
    }
}

/// The forget gate, which [`lstm_is_standard`] layers have.
fn forget_gate(lstm: &Lstm) -> &burn::nn::GateController {
    lstm.forget_gate
        .as_ref()
        .expect("a standard LSTM has a forget gate")
}

fn lstm_is_standard(lstm: &Lstm) -> bool {
    use burn::nn::activation::Activation;
    !lstm.input_forget
        && lstm.forget_gate.is_some()
        && lstm.clip.is_none()
        && lstm.batch_first
        && !lstm.reverse
        && matches!(lstm.gate_activation, Activation::Sigmoid(_))
        && matches!(lstm.cell_activation, Activation::Tanh(_))
        && matches!(lstm.hidden_activation, Activation::Tanh(_))
}

/// Burn's [`Lstm`] computed over time steps with one product per gate and step (input and
/// state side stacked) and no slice-assign of the outputs. `lstm` must have the standard configuration (sigmoid/tanh, no clipping,
/// separate forget gate), as [`RnnEncoderConfig`] builds it; [`lstm_forward`] falls back to
/// `Lstm::forward` otherwise.
///
/// # Shapes
/// - `xs`: `T` tensors `[N, D]`, state `(h, c)` each `[N, H]`
/// - output: `T` tensors `[N, H]`, final `h`, final `c`
pub fn lstm_steps(
    lstm: &Lstm,
    xs: Vec<Tensor<2>>,
    state: Option<(Tensor<2>, Option<Tensor<2>>)>,
) -> (Vec<Tensor<2>>, Tensor<2>, Tensor<2>) {
    let n = xs.first().map_or(0, |x| x.dims()[0]);
    let device = lstm.input_gate.input_transform.weight.val().device();
    let (mut h, mut c) = initial_state(lstm, state, n, &device);
    let forget = forget_gate(lstm);
    // Per gate, [W_i; W_h] stacked so that one product of [x_t, h] gives the gate's input;
    // measured faster on flex than one [N, 4H] product sliced into gates (slicing a wide
    // tensor costs a zero-filled copy of it in the backward pass).
    let gate = |g: &burn::nn::GateController| {
        let w = Tensor::cat(
            vec![
                g.input_transform.weight.val(),
                g.hidden_transform.weight.val(),
            ],
            0,
        );
        let b = match (&g.input_transform.bias, &g.hidden_transform.bias) {
            (Some(a), Some(b)) => Some(a.val() + b.val()),
            (a, b) => a.as_ref().or(b.as_ref()).map(|p| p.val()),
        };
        (w, b)
    };
    let (wi, bi) = gate(&lstm.input_gate);
    let (wf, bf) = gate(forget);
    let (wo, bo) = gate(&lstm.output_gate);
    let (wg, bg) = gate(&lstm.cell_gate);
    let sigmoid = burn::tensor::activation::sigmoid::<2>;
    let mut outputs = Vec::with_capacity(xs.len());
    for x_t in xs {
        let xh = Tensor::cat(vec![x_t, h], 1);
        let i = sigmoid(add_bias(xh.clone().matmul(wi.clone()), bi.clone()));
        let f = sigmoid(add_bias(xh.clone().matmul(wf.clone()), bf.clone()));
        let o = sigmoid(add_bias(xh.clone().matmul(wo.clone()), bo.clone()));
        let g = add_bias(xh.matmul(wg.clone()), bg.clone()).tanh();
        c = f * c + i * g;
        h = o * c.clone().tanh();
        outputs.push(h.clone());
    }
    (outputs, h, c)
}

/// A standard LSTM through [`kiln_core::ops::lstm_sequence`]: its gates' weights stacked in
/// PyTorch's order (input, forget, cell, output), both biases added.
fn lstm_fused(
    lstm: &Lstm,
    x: Tensor<3>,
    state: Option<(Tensor<2>, Option<Tensor<2>>)>,
) -> (Tensor<3>, Tensor<2>, Tensor<2>) {
    let [n, _, _] = x.dims();
    let device = x.device();
    let (h0, c0) = initial_state(lstm, state, n, &device);
    let (w_ih, w_hh, b) = lstm_weights(lstm, &device);
    let out = kiln_core::ops::lstm_sequence(x, w_ih, w_hh, b, h0, c0);
    (out.outputs, out.h, out.c)
}

/// A standard LSTM's weights in [`kiln_core::ops::lstm_sequence`]'s layout: `W_ih [D, 4H]`,
/// `W_hh [H, 4H]` and the summed biases `[4H]`, gates in PyTorch's order.
fn lstm_weights(lstm: &Lstm, device: &Device) -> (Tensor<2>, Tensor<2>, Tensor<1>) {
    let gates = [
        &lstm.input_gate,
        forget_gate(lstm),
        &lstm.cell_gate,
        &lstm.output_gate,
    ];
    let w_ih = Tensor::cat(
        gates
            .iter()
            .map(|g| g.input_transform.weight.val())
            .collect(),
        1,
    );
    let w_hh = Tensor::cat(
        gates
            .iter()
            .map(|g| g.hidden_transform.weight.val())
            .collect(),
        1,
    );
    let bias = |l: &burn::nn::Linear| match &l.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([lstm.d_hidden], device),
    };
    let b = Tensor::cat(
        gates
            .iter()
            .map(|g| bias(&g.input_transform) + bias(&g.hidden_transform))
            .collect(),
        0,
    );
    (w_ih, w_hh, b)
}

/// Burn's [`Lstm`] on a batch-first sequence, fused when its configuration is the standard
/// one (on flex one operation for the whole sequence, elsewhere [`lstm_steps`]), else through
/// `Lstm::forward`.
///
/// # Shapes
/// - `x`: `[N, T, D]`, state `(h, c)` each `[N, H]`
/// - output: `[N, T, H]`, final `h`, final `c`
pub fn lstm_forward(
    lstm: &Lstm,
    x: Tensor<3>,
    state: Option<(Tensor<2>, Option<Tensor<2>>)>,
) -> (Tensor<3>, Tensor<2>, Tensor<2>) {
    if !lstm_is_standard(lstm) {
        let [n, _, _] = x.dims();
        let (h, c) = initial_state(lstm, state, n, &x.device());
        let (out, s) = lstm.forward(x, Some(burn::nn::LstmState::new(c, h)));
        return (out, s.hidden, s.cell);
    }
    if kiln_core::Backend::of(&x.device()) == Some(kiln_core::Backend::Flex) {
        return lstm_fused(lstm, x, state);
    }
    let (outputs, h, c) = lstm_steps(lstm, time_steps(x), state);
    (Tensor::stack(outputs, 1), h, c)
}

/// A GRU's weights laid out for one product per step and side: gates reset, update, new (as
/// PyTorch). Build it once per forward pass and call [`step`](Self::step) for each time step.
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
        use burn::nn::activation::Activation;
        let standard = gru.reset_after
            && gru.clip.is_none()
            && matches!(gru.gate_activation, Activation::Sigmoid(_))
            && matches!(gru.hidden_activation, Activation::Tanh(_));
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

    /// Runs the steps `xs` (`T` tensors `[N, D]`) from `h` (zeros when `None`): the outputs
    /// and the final state.
    pub fn steps(&self, xs: Vec<Tensor<2>>, h: Option<Tensor<2>>) -> (Vec<Tensor<2>>, Tensor<2>) {
        let n = xs.first().map_or(0, |x| x.dims()[0]);
        let mut h = h.unwrap_or_else(|| Tensor::zeros([n, self.d_hidden], &self.w_hh.device()));
        let mut outputs = Vec::with_capacity(xs.len());
        for x_t in xs {
            h = self.step(self.project_step(x_t), h);
            outputs.push(h.clone());
        }
        (outputs, h)
    }
}

/// Burn's [`Gru`] on a batch-first sequence, fused ([`FusedGru`]) when its configuration is
/// the standard one, else through `Gru::forward`.
///
/// # Shapes
/// - `x`: `[N, T, D]`, state `[N, H]`
/// - output: `[N, T, H]` and the final state
pub fn gru_forward(gru: &Gru, x: Tensor<3>, state: Option<Tensor<2>>) -> (Tensor<3>, Tensor<2>) {
    let [n, t, _] = x.dims();
    let Some(fused) = FusedGru::new(gru) else {
        let h = state.unwrap_or_else(|| Tensor::zeros([n, gru.d_hidden], &x.device()));
        let out = gru.forward(x, Some(h));
        let last = out.clone().narrow(1, t - 1, 1).reshape([n, gru.d_hidden]);
        return (out, last);
    };
    let (outputs, h) = fused.steps(time_steps(x), state);
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

/// The previous layer's output as one `[N, T, D]` tensor, whichever form it was handed on in.
fn tensor_input(steps: &mut Option<Vec<Tensor<2>>>, x: &mut Option<Tensor<3>>) -> Tensor<3> {
    match steps.take() {
        Some(s) => Tensor::stack(s, 1),
        None => x
            .take()
            .expect("the encoder's input or the previous layer's output"),
    }
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
        self.encode(x, mask, 0, None)
    }

    /// Encodes token ids through `embedding`, without padding: the same result as
    /// `self.forward(embedding.forward(ids), None)`.
    ///
    /// When the first layer is a left-to-right LSTM fused on this device (flex) and the
    /// vocabulary is smaller than the batch's tokens (a character model), the lookup and that
    /// layer's input products are one table `E W_ih + b` `[V, 4H]`, whose rows the layer adds
    /// per token ([`kiln_core::ops::lstm_sequence_lookup`]): the products with `W_ih` forward
    /// and backward, a fifth of a training step's FLOPs at input 64 and hidden 256, become
    /// one `[V, D] x [D, 4H]` product and its gradients.
    ///
    /// # Shapes
    /// - `ids`: `[N, T]`
    /// - output: see [`RnnOutput`]
    pub fn forward_tokens(&self, embedding: &Embedding, ids: Tensor<2, Int>) -> RnnOutput {
        let device = ids.device();
        let [n, t] = ids.dims();
        let first = &self.layers[0];
        let vocab = embedding.weight.dims()[0];
        if let Some(lstm) = first.forward.fused_lstm(&device)
            && first.reverse.is_none()
            && vocab < n * t
        {
            let (w_ih, w_hh, b) = lstm_weights(lstm, &device);
            let table = embedding.weight.val().matmul(w_ih) + b.unsqueeze();
            let (h0, c0) = initial_state(lstm, None, n, &device);
            let out = kiln_core::ops::lstm_sequence_lookup(ids, table, w_hh, h0, c0);
            return self.encode(out.outputs, None, 1, Some(out.h));
        }
        self.forward(embedding.forward(ids), None)
    }

    /// [`Self::forward`] from layer `start` on, `x` being the input of that layer and `last`
    /// the last states of the layer before it.
    fn encode(
        &self,
        x: Tensor<3>,
        mask: Option<Tensor<2, Bool>>,
        start: usize,
        last: Option<Tensor<2>>,
    ) -> RnnOutput {
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
        // Between unidirectional layers the time steps are handed on as a list.
        let mut x = Some(x);
        let mut steps: Option<Vec<Tensor<2>>> = None;
        let mut last = last;
        for (l, layer) in self.layers.iter().enumerate().skip(start) {
            let dropout = |t: Tensor<2>| if l > 0 { self.dropout.forward(t) } else { t };
            let dropout3 = |t: Tensor<3>| if l > 0 { self.dropout.forward(t) } else { t };
            match &layer.reverse {
                None if layer.forward.fused_lstm(&device).is_some() => {
                    // One fused operation over the whole sequence: stay in tensor form.
                    let input = tensor_input(&mut steps, &mut x);
                    let (out, (state, _)) = layer.forward.forward(dropout3(input), None);
                    last = Some(if padded {
                        let h = state.dims()[1];
                        gather_time(out.clone(), last_idx.clone().reshape([n, 1])).reshape([n, h])
                    } else {
                        state
                    });
                    x = Some(out);
                }
                None => {
                    let input: Vec<Tensor<2>> = match steps.take() {
                        Some(s) => s,
                        None => time_steps(x.take().expect("input")),
                    };
                    let input = input.into_iter().map(dropout).collect();
                    let (out, (state, _)) = layer.forward.forward_steps(input, None);
                    last = Some(if padded {
                        let h = state.dims()[1];
                        gather_time(
                            Tensor::stack(out.clone(), 1),
                            last_idx.clone().reshape([n, 1]),
                        )
                        .reshape([n, h])
                    } else {
                        state
                    });
                    steps = Some(out);
                }
                Some(rev_cell) => {
                    let input = dropout3(tensor_input(&mut steps, &mut x));
                    let (fwd, _) = layer.forward.forward(input.clone(), None);
                    let h = fwd.dims()[2];
                    let fwd_last =
                        gather_time(fwd.clone(), last_idx.clone().reshape([n, 1])).reshape([n, h]);
                    let (rev, rev_last) = if padded {
                        let reversed = gather_time(input, reverse_idx.clone());
                        let (out, _) = rev_cell.forward(reversed, None);
                        let out = gather_time(out, reverse_idx.clone());
                        // The right-to-left state after the first token sits at position 0.
                        let first = out.clone().narrow(1, 0, 1).reshape([n, h]);
                        (out, first)
                    } else {
                        let (out, (state, _)) = rev_cell.forward(input.flip([1]), None);
                        (out.flip([1]), state)
                    };
                    last = Some(Tensor::cat(vec![fwd_last, rev_last], 1));
                    x = Some(Tensor::cat(vec![fwd, rev], 2));
                }
            }
        }
        let x = match steps {
            Some(s) => Tensor::stack(s, 1),
            None => x.expect("output"),
        };
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

    /// `forward_tokens` (on flex: the first layer's input products looked up from a table)
    /// against `forward` on the embedded ids: outputs, last states, and the gradients of the
    /// embedding and of both layers' weights, with two stacked layers (the second reads the
    /// looked-up layer's outputs). Also where the table would not pay (vocabulary larger
    /// than the batch's tokens) and for a bidirectional encoder, which take the plain path.
    #[test]
    fn token_lookup_equals_the_embedded_forward() {
        let device = device().autodiff();
        for (vocab, bidirectional) in [(11, false), (40, false), (11, true)] {
            let (n, t) = (5, 6);
            let embedding = burn::nn::EmbeddingConfig::new(vocab, 4).init(&device);
            let encoder = RnnEncoderConfig::new(4, 6)
                .with_layers(2)
                .with_bidirectional(bidirectional)
                .init(&device);
            let ids: Vec<i64> = (0..n * t).map(|i| ((i * 5 + 3) % vocab) as i64).collect();
            let ids = Tensor::<1, Int>::from_ints(ids.as_slice(), &device).reshape([n, t]);
            let d_out = encoder.d_output();
            let probe = Tensor::<3>::random([n, t, d_out], Distribution::Normal(0.0, 1.0), &device);
            let last_probe =
                Tensor::<2>::random([n, d_out], Distribution::Normal(0.0, 1.0), &device);
            let run = |lookup: bool| {
                let out = if lookup {
                    encoder.forward_tokens(&embedding, ids.clone())
                } else {
                    encoder.forward(embedding.forward(ids.clone()), None)
                };
                let loss = (out.outputs.clone() * probe.clone()).sum()
                    + (out.last.clone() * last_probe.clone()).sum();
                (out, loss.backward())
            };
            let ((ours, g1), (theirs, g2)) = (run(true), run(false));
            let tol = Tolerance::absolute(1e-5);
            ours.outputs
                .into_data()
                .assert_approx_eq::<f32>(&theirs.outputs.into_data(), tol);
            ours.last
                .into_data()
                .assert_approx_eq::<f32>(&theirs.last.into_data(), tol);
            let (e1, e2) = (embedding.weight.grad(&g1), embedding.weight.grad(&g2));
            e1.unwrap()
                .into_data()
                .assert_approx_eq::<f32>(&e2.unwrap().into_data(), Tolerance::absolute(1e-4));
            for layer in &encoder.layers {
                let lstm = layer.forward.lstm.as_ref().unwrap();
                for w in [
                    &lstm.input_gate.input_transform.weight,
                    &lstm.cell_gate.hidden_transform.weight,
                ] {
                    w.grad(&g1).unwrap().into_data().assert_approx_eq::<f32>(
                        &w.grad(&g2).unwrap().into_data(),
                        Tolerance::absolute(1e-4),
                    );
                }
            }
        }
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
