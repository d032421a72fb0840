//! A whole LSTM layer (all time steps) as one operation, with its backward pass through time
//! written out. The flex autodiff glue that puts it on Burn's graph is
//! `crate::flex::lstm` (feature `flex`).
//!
//! Built from Burn operations, one LSTM step is a dozen tensor operations and as many graph
//! nodes forward and backward; at hidden 256, batch 32 and 64 steps the framework overhead
//! and the small products made a training step five times PyTorch's. Here:
//!
//! - The batch is split over the threads once: sequences are independent through time, so
//!   each thread runs its block of sequences over every step with no synchronisation.
//! - Weights packed once per call ([`PackedRhs`](crate::packed::PackedRhs)); `x_t W_ih + b`
//!   computed for eight steps at a time as one product, so that each step's product is
//!   `h_{t-1} W_hh` alone (whose packed weights, 1 MB at hidden 256, stay in L2), then one
//!   vectorised loop for the gates; backward, the product `dG_s W_hhᵀ` per step, with dG
//!   written straight into the packed layout, then read from it by one product `dG W_ihᵀ`
//!   per thread for the input gradient and one `[x_t, h_{t-1}]ᵀ dG` over the whole sequence
//!   for the weights'.
//! - With a lookup table ([`Input::Lookup`]) the input side is the token's row of
//!   `E W_ih + b`, copied into the step's pre-activations; backward, dG summed per token is
//!   the table's gradient, and neither `dG W_ihᵀ` nor `W_ih`'s rows of the weight gradient
//!   are computed (the saved rows are `h_{t-1}` alone).
//! - The output is `[N T + N, H]`: the hidden states batch-major, then the last cell states,
//!   so that the hidden states are a view of its leading rows.
//! - Large buffers come from the shared [`scratch`](crate::scratch) pool.
//!
//! Gate order along the weights' `4H` columns is PyTorch's: input, forget, cell (g), output.
//!
//! The files: [`cell`] (the arithmetic of one step), `avx512` (its forward loop in
//! intrinsics), [`kernel`] (the layer over slices and threads).

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod cell;
pub mod kernel;

pub use kernel::{Input, InputGrad, LstmDims, LstmGrads, Saved, backward, forward};
