//! Image classifiers, one file per model, each a Burn Config + Module pair.

mod lenet;

pub use lenet::{LeNet5, LeNet5Config};
