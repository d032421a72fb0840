//! Tests on the real MNIST and Fashion-MNIST files (`$KILN_DATA/mnist`,
//! `$KILN_DATA/fashion-mnist`). Ignored by a bare `cargo test`; `cargo xtask ci` runs them when
//! `KILN_DATA` is set.

use std::path::PathBuf;

use burn::data::dataset::Dataset;
use kiln_core::metrics::Accuracy;
use kiln_core::optim::{LrSchedule, OptimizerConfig};
use kiln_core::train::{ProgressMode, StopRules};
use kiln_core::{Data, Trainer, TrainerConfig};
use kiln_vision::data::{MnistDataset, Split};
use kiln_vision::{ImageBatcher, LeNet5Config, Pipeline, Transform, evaluate};

fn data_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("KILN_DATA")
        .expect("KILN_DATA must point at the data folder for this test");
    PathBuf::from(root).join(name)
}

#[test]
#[ignore = "needs KILN_DATA"]
fn reads_both_data_sets_completely() {
    for (name, first_train, first_test) in [("mnist", 5, 7), ("fashion-mnist", 9, 9)] {
        let train = MnistDataset::load(&data_dir(name), Split::Train).unwrap();
        let test = MnistDataset::load(&data_dir(name), Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000), "{name}");
        assert_eq!((train.rows(), train.cols()), (28, 28));
        assert_eq!(train.labels()[0], first_train, "{name}");
        assert_eq!(test.labels()[0], first_test, "{name}");
        // Every class is present, in roughly equal numbers.
        let mut counts = [0usize; 10];
        train.labels().iter().for_each(|&l| counts[l as usize] += 1);
        assert!(
            counts.iter().all(|&c| (5_000..7_000).contains(&c)),
            "{name}: {counts:?}"
        );
        let item = train.get(0).unwrap();
        assert!(item.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(item.pixels.contains(&1.0));
    }
}

#[test]
#[ignore = "needs KILN_DATA"]
fn lenet_overfits_256_training_images() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let train = MnistDataset::load(&data_dir("mnist"), Split::Train)
        .unwrap()
        .truncate(256);
    let batcher =
        ImageBatcher::new(1, 28, 28).with_pipeline(Pipeline::new().then(Transform::Normalize {
            mean: vec![0.1307],
            std: vec![0.3081],
        }));
    device.seed(1);
    let config = TrainerConfig::new(OptimizerConfig::adam(), LrSchedule::constant(2e-3))
        .with_batch_size(32)
        .with_stop(StopRules::epochs(30))
        .with_progress(ProgressMode::Quiet);
    let fitted = Trainer::new(config, &device)
        .with_metric(Accuracy::new())
        .fit(
            LeNet5Config::new().init(&device),
            &Data::new(train.clone(), batcher.clone()),
            None,
        )
        .unwrap();
    let evaluation = evaluate(&fitted.model, &train, &batcher, 10, 128, &device).unwrap();
    assert_eq!(
        evaluation.accuracy(),
        1.0,
        "training accuracy after {} epochs",
        fitted.report.epochs
    );
}
