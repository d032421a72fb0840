//! Every configurable recommender checks its parameters without data (`Fit::check`, linfa's
//! `ParamGuard`), with the error `fit` gives: a program can refuse a bad configuration before
//! it reads a ratings file.

use std::sync::Arc;

use kiln_recsys::data::{IdMap, Interaction, Interactions};
use kiln_recsys::models::{
    AlsConfig, BaselineConfig, BaselineMethod, BlendConfig, BprConfig, KnnConfig, LightFmConfig,
    NeuMfConfig, Similarity, SvdConfig, SvdPpConfig,
};
use kiln_recsys::{Fit, RecsysError};

/// Two users, two items.
fn tiny() -> Interactions {
    let mut users = IdMap::new();
    let mut items = IdMap::new();
    let records = [("a", "x", 4.0), ("a", "y", 2.0), ("b", "x", 5.0)]
        .into_iter()
        .map(|(u, i, r)| Interaction {
            user: users.insert(u),
            item: items.insert(i),
            rating: r,
            timestamp: 0,
        })
        .collect();
    Interactions::new(records, Arc::new(users), Arc::new(items))
}

/// `config.check()` names `param`, and `fit` fails with the same error.
fn refused<F: Fit>(config: F, param: &str) {
    let err = config.check().unwrap_err();
    assert!(
        matches!(&err, RecsysError::InvalidParam { param: p, .. } if *p == param),
        "{param}: {err}"
    );
    let fitted = config.fit(&tiny()).err().expect("fit refuses it too");
    assert_eq!(fitted.to_string(), err.to_string());
}

#[test]
fn bad_parameters_are_refused_before_any_data() {
    let device = kiln_core::backend::device("cpu").unwrap();
    let mut svd = SvdConfig::new();
    svd.lr = -1.0;
    refused(svd, "lr");
    let mut pp = SvdPpConfig::new();
    pp.sgd.factors = 0;
    refused(pp, "factors");
    let mut bpr = BprConfig::new();
    bpr.reg = f32::NAN;
    refused(bpr, "reg");
    let mut als = AlsConfig::new();
    als.cg_steps = 0;
    refused(als, "cg_steps");
    let mut lightfm = LightFmConfig::new();
    lightfm.max_sampled = 0;
    refused(lightfm, "max_sampled");
    let mut neumf = NeuMfConfig::new(&device);
    neumf.negatives = 0;
    refused(neumf, "negatives");
    refused(KnnConfig::item_baseline().with_k(0), "k");
    refused(
        KnnConfig::item_based().with_similarity(Similarity::PearsonBaseline { shrinkage: -1.0 }),
        "shrinkage",
    );
    let mut baseline = BaselineConfig::new();
    baseline.method = BaselineMethod::Sgd {
        epochs: 3,
        lr: 0.0,
        reg: 0.1,
    };
    refused(baseline, "lr");
    refused(BlendConfig::new(Vec::new()), "members");

    // The defaults pass.
    SvdConfig::new().check().unwrap();
    SvdPpConfig::new().check().unwrap();
    BprConfig::new().check().unwrap();
    AlsConfig::new().check().unwrap();
    LightFmConfig::new().check().unwrap();
    NeuMfConfig::new(&device).check().unwrap();
    KnnConfig::item_baseline().check().unwrap();
    BaselineConfig::new().check().unwrap();
}
