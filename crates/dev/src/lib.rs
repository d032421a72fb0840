//! # kiln-dev
//!
//! Kiln's development harnesses, shared by the crates' tests and benchmarks and kept out of
//! the libraries' public API (`publish = false`; a dev-dependency only):
//!
//! - [`conformance`]: the backend conformance suite's [`backend_test!`] macro and its checks
//!   (forward and gradient parity with the reference CPU backend, a few training steps);
//! - [`bench`](mod@bench): the benchmark harness every `benches/` target runs on (`harness = false`).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
pub mod conformance;

#[doc(hidden)]
pub use kiln_core as __core;
