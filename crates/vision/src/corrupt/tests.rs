//! The corruption suite: seeded, in range, harsher with severity, typed errors.

use proptest::prelude::*;

use super::*;

/// A synthetic 28x28 "digit": a bright ring with soft edges on black, as MNIST's.
fn ring(offset: f32) -> Vec<f32> {
    (0..28 * 28)
        .map(|i| {
            let (y, x) = ((i / 28) as f32 - 13.5, (i % 28) as f32 - 13.5 + offset);
            let r = (y * y + x * x).sqrt();
            (1.5 - (r - 7.0).abs()).clamp(0.0, 1.0)
        })
        .collect()
}

fn items(n: usize) -> Vec<ImageItem> {
    (0..n)
        .map(|i| ImageItem {
            pixels: ring(i as f32 * 0.5 - 2.0),
            label: i % 10,
        })
        .collect()
}

const SHAPE: [usize; 3] = [1, 28, 28];

fn mean_abs_change(clean: &[ImageItem], corrupted: &[ImageItem]) -> f64 {
    let total: f64 = clean
        .iter()
        .zip(corrupted)
        .flat_map(|(a, b)| a.pixels.iter().zip(&b.pixels))
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum();
    total / (clean.len() * 28 * 28) as f64
}

#[test]
fn a_seed_gives_the_same_images_and_another_seed_others() {
    let clean = items(12);
    for c in Corruption::ALL {
        for s in Severity::ALL {
            let a = corrupt_items(&clean, SHAPE, c, s, 7).unwrap();
            assert_eq!(
                a,
                corrupt_items(&clean, SHAPE, c, s, 7).unwrap(),
                "{c:?} {s:?}"
            );
            assert!(a.iter().zip(&clean).all(|(x, y)| x.label == y.label));
        }
        let random = !matches!(
            c,
            Corruption::Brightness | Corruption::Contrast | Corruption::Gamma | Corruption::Blur
        );
        let (a, b) = (
            corrupt_items(&clean, SHAPE, c, Severity::ALL[2], 7).unwrap(),
            corrupt_items(&clean, SHAPE, c, Severity::ALL[2], 8).unwrap(),
        );
        assert_eq!(a != b, random, "{c:?}: seeds 7 and 8");
    }
}

#[test]
fn an_image_does_not_depend_on_the_others() {
    // Image i draws from its own stream: corrupting a prefix gives the prefix of the
    // corrupted set (fragments excepted: their donor is drawn among all items).
    let clean = items(10);
    for c in Corruption::ALL
        .into_iter()
        .filter(|&c| c != Corruption::Fragments)
    {
        let all = corrupt_items(&clean, SHAPE, c, Severity::ALL[3], 3).unwrap();
        let head = corrupt_items(&clean[..4], SHAPE, c, Severity::ALL[3], 3).unwrap();
        assert_eq!(&all[..4], head.as_slice(), "{c:?}");
    }
}

#[test]
fn every_corruption_changes_images_more_at_each_severity() {
    let clean = items(20);
    for c in Corruption::ALL {
        let changes: Vec<f64> = Severity::ALL
            .iter()
            .map(|&s| mean_abs_change(&clean, &corrupt_items(&clean, SHAPE, c, s, 11).unwrap()))
            .collect();
        assert!(
            changes[0] > 0.002,
            "{c:?} barely changes images: {changes:?}"
        );
        // Averaged over 20 images, each severity at least as harsh as the one before (a
        // tolerance for the random ones' sampling noise).
        for pair in changes.windows(2) {
            assert!(pair[1] > pair[0] * 0.97, "{c:?}: {changes:?}");
        }
        assert!(changes[4] > changes[0] * 1.5, "{c:?}: {changes:?}");
    }
}

#[test]
fn corruptions_named_as_documented() {
    for c in Corruption::ALL {
        assert_eq!(Corruption::from_name(c.name()).unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{}\"", c.name()));
    }
    let e = Corruption::from_name("fog").unwrap_err().to_string();
    assert!(e.contains("\"fog\"") && e.contains("gaussian_noise"), "{e}");
    let families: std::collections::BTreeSet<_> =
        Corruption::ALL.iter().map(|c| c.family()).collect();
    assert_eq!(families.len(), 5);
}

#[test]
fn severities_outside_one_to_five_are_errors() {
    assert_eq!(Severity::new(3).unwrap().level(), 3);
    for bad in [0, 6, 255] {
        let e = Severity::new(bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("severity {bad}")) && e.contains("1 to 5"),
            "{e}"
        );
    }
    assert!(serde_json::from_str::<Severity>("4").is_ok());
    assert!(serde_json::from_str::<Severity>("7").is_err());
}

#[test]
fn wrong_sizes_name_the_item() {
    let mut clean = items(3);
    clean[1].pixels.pop();
    let e = corrupt_items(&clean, SHAPE, Corruption::Blur, Severity::ALL[0], 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("item 1") && e.contains("783 values") && e.contains("1x28x28"),
        "{e}"
    );
    let mut rng = SplitMix64::new(1);
    let mut image = ring(0.0);
    let e = corrupt_image(
        &mut image,
        SHAPE,
        Corruption::Fragments,
        Severity::ALL[0],
        &mut rng,
        Some(&[0.0; 5]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("donor"), "{e}");
    let e = corrupt_image(
        &mut [],
        [1, 0, 3],
        Corruption::Blur,
        Severity::ALL[0],
        &mut rng,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("non-empty 1x0x3"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any shape, corruption, severity and seed: values stay in [0, 1], the size is kept, and
    /// the same stream gives the same image.
    #[test]
    fn values_stay_in_range(
        c in 1usize..4, h in 1usize..20, w in 1usize..20,
        which in 0usize..11, level in 1u8..6, seed in any::<u64>(),
    ) {
        let pixels: Vec<f32> = (0..c * h * w)
            .map(|i| ((i as u64).wrapping_mul(seed | 1) % 97) as f32 / 96.0)
            .collect();
        let (corruption, severity) = (Corruption::ALL[which], Severity::new(level).unwrap());
        let run = || {
            let mut image = pixels.clone();
            let mut rng = image_stream(seed, corruption, severity, 0);
            corrupt_image(&mut image, [c, h, w], corruption, severity, &mut rng, None).unwrap();
            image
        };
        let image = run();
        prop_assert_eq!(image.len(), pixels.len());
        prop_assert!(image.iter().all(|v| (0.0..=1.0).contains(v)), "{:?}", image);
        prop_assert_eq!(image, run());
    }
}
