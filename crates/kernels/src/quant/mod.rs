//! Block-quantized weights (ggml's formats, as GGUF files store them): the block types and
//! their dequantization ([`blocks`]), and products with quantized matrices read in place
//! ([`products`]).

pub mod blocks;
pub mod products;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use blocks::{BlockType, QK_K, dequantize};
pub use products::{QuantMatrix, matmul_quant, matvec_quant};
