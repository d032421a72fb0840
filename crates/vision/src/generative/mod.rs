//! Image generation and its measures.
//!
//! | file | what |
//! |---|---|
//! | `embedding.rs` | [`TimeEmbedding`]: sinusoidal features of the diffusion step and an MLP |
//! | `attention.rs` | [`SpatialAttention`]: self-attention across a feature map's pixels |
//! | `unet.rs` | [`UNet`]: the class-conditional noise predictor, DDPM's residual blocks |
//! | `schedule.rs` | [`NoiseSchedule`]: linear and cosine schedules, DDPM and DDIM steps |
//! | `ddpm.rs` | [`Ddpm`]: training by noise prediction with class dropout, sampling by DDPM or DDIM with classifier-free guidance |
//! | `vae.rs` | [`Vae`]: a class-conditional convolutional VAE, the ELBO with its KL term reported apart |
//! | `frechet.rs` | [`frechet_distance`]: the FID formula between Gaussians fitted to features |
//! | `measures.rs` | [`measures::judge`]: class fidelity and the Fréchet distance in a LeNet-5's features |

mod attention;
mod ddpm;
mod embedding;
mod frechet;
pub mod measures;
mod schedule;
mod unet;
mod vae;

pub use attention::{SpatialAttention, SpatialAttentionConfig};
pub use ddpm::{Ddpm, DdpmConfig, Sampler, denoise};
pub use embedding::{TimeEmbedding, TimeEmbeddingConfig, sinusoidal};
pub use frechet::{Gaussian, frechet_distance};
pub use schedule::{NoiseSchedule, PosteriorStep, Schedule};
pub use unet::{ResBlock, ResBlockConfig, UNet, UNetConfig};
pub use vae::{Vae, VaeConfig};
