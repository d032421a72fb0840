//! # kiln-kernels
//!
//! Kiln's hand-written CPU kernels, and the only crate of the workspace with `unsafe` code
//! (every other crate is `#![forbid(unsafe_code)]`). `kiln-core` depends on it and
//! dispatches to it on the flex backend; the domain crates reach it through `kiln_core`
//! (`kiln_core::kernels`).
//!
//! The layers, bottom up:
//!
//! - [`cpu`]: the one CPU-feature probe ([`cpu::level`]) and the dispatch that compiles a
//!   loop for AVX-512 or AVX2 at run time.
//! - [`gemm`]: the one checked entry to the `gemm` crate ([`gemm::Gemm`]), which every
//!   general product here and in `kiln-nlp`'s CPU BERT goes through.
//! - [`gemv`]: a weight matrix (f32 or bfloat16) times a few vectors, streamed once: the
//!   decode step of a language model.
//! - [`attention`]: a decode position's attention for the query heads that share a
//!   key/value head.
//! - [`quant`]: ggml's block-quantized formats (Q4_0 ... Q6_K): dequantization equal to
//!   gguf-py's, and products of quantized matrices, read in place, with f32 vectors.
//! - [`mmap`]: read-only memory maps of model files (GGUF).
//! - [`packed`]: products with a right-hand matrix packed once and used many times, with
//!   an AVX-512 6 x 64 register-blocked microkernel.
//! - [`scratch`]: the reusable work buffers (a shared pool, and per-thread sets).
//! - [`math`]: vectorisable `exp`, sigmoid, tanh, `erf`, the exact GELU, row sums.
//! - [`spin`]: a team of threads that spin between jobs, for the many short parallel parts
//!   of a decode step.
//! - [`sparse_cg`]: the conjugate-gradient row solve of implicit-feedback ALS.
//! - [`lstm`]: a whole LSTM layer forward and backward on slices (cell math, AVX-512 gate
//!   loop, the threaded kernel).
//! - [`alloc`]: glibc's malloc thresholds for training.
//! - [`norm`]: group normalisation with its affine map and SiLU fused, forward and backward.
//! - `flex` (feature `flex`, on by default): the Burn glue. Linear layers, convolution,
//!   max pooling, group norm (+ SiLU), the LSTM, softmax cross-entropy and Adam on flex tensors, each with its
//!   backward pass registered on Burn's autodiff graph.
//!
//! Everything below `flex` needs no Burn, so `cargo +nightly test -p kiln-kernels
//! --no-default-features` under AddressSanitizer builds in a minute (`cargo xtask asan`).
//!
//! ## Rules for `unsafe` here
//!
//! Each `unsafe` block has a `// SAFETY:` comment that states its invariant (the lint
//! `clippy::undocumented_unsafe_blocks` denies one without) and a `debug_assert!` of that
//! invariant before it, so the tests (debug assertions on) check every invariant they reach.
//! Each `unsafe fn` says what its caller must guarantee under `# Safety`. Public functions
//! are safe: they check the CPU and their slices' lengths themselves.

pub mod alloc;
pub mod attention;
pub mod cpu;
#[cfg(feature = "flex")]
pub mod flex;
pub mod gemm;
pub mod gemv;
pub mod lstm;
pub mod math;
pub mod mmap;
pub mod norm;
pub mod packed;
pub mod quant;
pub mod scratch;
pub mod sparse_cg;
pub mod spin;
