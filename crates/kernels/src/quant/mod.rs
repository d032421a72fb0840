//! Block-quantized weights (ggml's formats, as GGUF files store them): the block types and
//! their dequantization ([`blocks`]), and products with quantized matrices read in place
//! ([`products`]) with f32 or 8-bit activations ([`q8`]), the 32-value types' rows
//! interleaved 16 at a time for the 8-bit products ([`tiles`]), and quantization of f32
//! values into the block types ([`quantize`](mod@quantize)).

pub mod blocks;
mod kquant;
pub mod products;
pub mod q8;
pub mod quantize;
pub mod tiles;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_q8;
#[cfg(target_arch = "x86_64")]
mod x86_q8_gemm;
#[cfg(target_arch = "x86_64")]
mod x86_q8_tiles;

pub use blocks::{BlockType, QK_K, dequantize};
pub use products::{
    Activations, QuantMatrix, matmul_quant, matmul_quant_with, matvec_quant, matvec_quant_with,
};
pub use q8::Q8Vectors;
pub use quantize::{QuantizeError, quantize};
