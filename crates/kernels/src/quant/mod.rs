//! Block-quantized weights (ggml's formats, as GGUF files store them): the block types and
//! their dequantization ([`blocks`]), and products with quantized matrices read in place
//! ([`products`]), and quantization of f32 values into the legacy and float types
//! ([`quantize`](mod@quantize)).

pub mod blocks;
mod kquant;
pub mod products;
pub mod quantize;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use blocks::{BlockType, QK_K, dequantize};
pub use products::{QuantMatrix, matmul_quant, matvec_quant};
pub use quantize::{QuantizeError, quantize};
