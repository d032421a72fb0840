//! Backend conformance of the recommender models trained with Burn: biased matrix
//! factorisation (embeddings, dot products, biases, its regularised loss) and NeuMF (GMF and
//! MLP branches) agree with the reference CPU backend on every compiled-in backend (outputs and
//! every parameter's gradient, embedding gradients included), and a few training steps lower
//! the loss. See `kiln_dev::conformance`.

use burn::prelude::*;
use kiln_core::TrainStep;
use kiln_dev::conformance::{Tolerance, check_parity, check_training, reference_device};
use kiln_recsys::models::NeuMfNetConfig;
use kiln_recsys::{BiasedMf, BiasedMfConfig, RatingBatch};

const USERS: [i64; 6] = [0, 1, 2, 3, 1, 4];
const ITEMS: [i64; 6] = [2, 0, 5, 1, 3, 5];
const RATINGS: [f32; 6] = [4.0, 3.0, 5.0, 1.0, 2.0, 4.5];

fn batch(device: &Device) -> RatingBatch {
    RatingBatch {
        users: Tensor::<1, Int>::from_ints(USERS, device),
        items: Tensor::<1, Int>::from_ints(ITEMS, device),
        ratings: Tensor::<1>::from_floats(RATINGS, device),
    }
}

fn mf() -> BiasedMf {
    let reference = reference_device();
    reference.seed(31);
    BiasedMfConfig::new(5, 6, 3.25)
        .with_factors(4)
        .init(&reference)
}

kiln_dev::backend_test! {
    /// Biased MF: predictions, and the regularised training loss.
    fn mf_parity(device) {
        let model = mf();
        check_parity("biased mf predictions", &model, device, Tolerance::DEFAULT, |m, d| {
            let b = batch(d);
            m.forward(b.users, b.items)
        });
        check_parity("biased mf loss", &model, device, Tolerance::DEFAULT, |m, d| {
            m.train_step(batch(d)).loss
        });
    }
}

kiln_dev::backend_test! {
    /// NeuMF: GMF and MLP branches fused into one score.
    fn neumf_parity(device) {
        let reference = reference_device();
        reference.seed(32);
        let model = NeuMfNetConfig::new(5, 6)
            .with_gmf_dim(3)
            .with_mlp_dim(4)
            .with_hidden(vec![6, 3])
            .init(&reference);
        check_parity("neumf", &model, device, Tolerance::DEFAULT, |m, d| {
            let b = batch(d);
            m.forward(b.users, b.items)
        });
    }
}

kiln_dev::backend_test! {
    /// Twenty Adam steps of biased MF lower its loss.
    fn mf_training(device) {
        check_training("biased mf", &mf(), device, 20, 0.05, |m, d| m.train_step(batch(d)).loss);
    }
}
