//! Saved models are read back only when their parts hold together: a file that is valid JSON
//! of the right kind but whose vectors are short, whose training set does not index, or
//! whose blend has no members is an error naming what is wrong, never a model that panics
//! (or reads past its vectors) when it predicts. And ranking a model against ids it never saw
//! is an error, not an index past its scores.

use std::path::Path;

use kiln_recsys::data::Interactions;
use kiln_recsys::eval::ranking_scores;
use kiln_recsys::models::{
    AlsConfig, AnyModel, BaselineConfig, BlendConfig, BprConfig, KnnConfig, LightFmConfig,
    PopularityConfig, Svd, SvdConfig, SvdPpConfig,
};
use kiln_recsys::{Fit, Persist, Recommender, TrainSet};
use serde_json::Value;

/// 12 users by 9 items, every user rating 6 items.
fn ratings() -> Interactions {
    let triples: Vec<(u32, u32, f32)> = (0..12u32)
        .flat_map(|u| (0..6u32).map(move |k| (u, (u + 2 * k) % 9, 1.0 + ((u * 7 + k) % 5) as f32)))
        .collect();
    Interactions::from_triples(&triples)
}

/// Saves `model`, checks that it loads, then rewrites one part of the file with `edit` and
/// returns the load error's text.
fn corrupted<M: Persist + Recommender>(model: &M, edit: impl Fn(&mut Value)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    model.save(&path).unwrap();
    let back = M::load(&path).expect("a saved model loads");
    assert_eq!(back.predict(1, 2), model.predict(1, 2));
    rewrite(&path, edit);
    match M::load(&path) {
        Ok(_) => panic!("a corrupted file was read as a model"),
        Err(e) => e.to_string(),
    }
}

fn rewrite(path: &Path, edit: impl Fn(&mut Value)) {
    let mut file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut file["model"]);
    std::fs::write(path, serde_json::to_vec(&file).unwrap()).unwrap();
}

fn truncate(v: &mut Value, len: usize) {
    v.as_array_mut().unwrap().truncate(len);
}

#[test]
fn short_vectors_are_named_on_load() {
    let data = ratings();
    let svd = SvdConfig::new()
        .with_epochs(3)
        .with_factors(4)
        .fit(&data)
        .unwrap();
    let e = corrupted(&svd, |m| truncate(&mut m["item_factors"], 5));
    assert!(
        e.contains("inconsistent svd model: item factors has 5 values, expected 36"),
        "{e}"
    );
    let e = corrupted(&svd, |m| m["user_bias"][0] = Value::Null);
    assert!(e.contains("user_bias") || e.contains("null"), "{e}");

    let svdpp = SvdPpConfig::new().fit(&data).unwrap();
    let e = corrupted(&svdpp, |m| truncate(&mut m["user_vectors"], 1));
    assert!(e.contains("user vectors has 1 values"), "{e}");

    let bpr = BprConfig::new()
        .with_epochs(2)
        .fit(&data.implicit(3.0))
        .unwrap();
    let e = corrupted(&bpr, |m| truncate(&mut m["item_bias"], 0));
    assert!(e.contains("item biases has 0 values, expected 9"), "{e}");

    let als = AlsConfig::new()
        .with_factors(3)
        .with_iterations(2)
        .fit(&data.implicit(3.0))
        .unwrap();
    let e = corrupted(&als, |m| truncate(&mut m["item_factors"], 5));
    assert!(e.contains("item factors has 5 values, expected 27"), "{e}");
    let any = AnyModel::from(als);
    let e = corrupted(&any, |m| truncate(&mut m["Als"]["user_factors"], 1));
    assert!(e.contains("user factors has 1 values"), "{e}");

    let pop = PopularityConfig::default().fit(&data).unwrap();
    let e = corrupted(&pop, |m| truncate(&mut m["counts"], 2));
    assert!(e.contains("item counts has 2 values"), "{e}");

    let knn = KnnConfig::item_based().fit(&data).unwrap();
    let e = corrupted(&knn, |m| truncate(&mut m["sims"], 80));
    assert!(e.contains("similarities has 80 values, expected 81"), "{e}");
    let e = corrupted(&knn, |m| m["n"] = Value::from(4));
    assert!(e.contains("4 similarities"), "{e}");

    let lightfm = LightFmConfig::new()
        .with_epochs(2)
        .fit(&data.implicit(3.0))
        .unwrap();
    let e = corrupted(&lightfm, |m| truncate(&mut m["item_reprs"], 3));
    assert!(e.contains("item representations has 3 values"), "{e}");
}

#[test]
fn a_training_set_that_does_not_index_is_refused() {
    let svd: Svd = SvdConfig::new().with_epochs(2).fit(&ratings()).unwrap();
    let e = corrupted(&svd, |m| m["train"]["user_items"][0] = Value::from(99));
    assert!(e.contains("user index: id 99 of only 9"), "{e}");
    let e = corrupted(&svd, |m| truncate(&mut m["train"]["item_ptr"], 3));
    assert!(e.contains("item index: 3 offsets for 9 rows"), "{e}");
}

#[test]
fn a_blend_needs_members_and_one_weight_each() {
    let data = ratings();
    let blend = BlendConfig::new(vec![
        Box::new(BaselineConfig::new()),
        Box::new(SvdConfig::new().with_epochs(2)),
    ])
    .fit(&data)
    .unwrap();
    assert_eq!(blend.weights().len(), 3);
    let e = corrupted(&blend, |m| m["members"] = Value::Array(vec![]));
    assert!(e.contains("a blend with no members"), "{e}");
    let e = corrupted(&blend, |m| truncate(&mut m["weights"], 2));
    assert!(e.contains("2 weights for 2 members"), "{e}");
    let e = corrupted(&blend, |m| {
        truncate(&mut m["members"][1]["Svd"]["item_factors"], 1)
    });
    assert!(e.contains("member 1: item factors has 1 values"), "{e}");
    // The same checks through the any-model wrapper.
    let any: AnyModel = blend.clone().into();
    let e = corrupted(&any, |m| m["Blend"]["members"] = Value::Array(vec![]));
    assert!(e.contains("a blend with no members"), "{e}");
}

#[test]
fn ranking_ids_the_model_never_saw_is_an_error() {
    let small = Interactions::from_triples(&[(0, 0, 4.0), (1, 1, 5.0), (1, 0, 3.0)]);
    let model = PopularityConfig::default().fit(&small).unwrap();
    let seen = TrainSet::new(&ratings()).unwrap();
    let e = ranking_scores(&model, &seen, &ratings(), 5, 4.0).unwrap_err();
    assert!(e.to_string().contains("the model ranks 2 items"), "{e}");
    let ok = ranking_scores(&model, model.train_set(), &small, 1, 4.0).unwrap();
    assert_eq!(ok.users, 2);
}
