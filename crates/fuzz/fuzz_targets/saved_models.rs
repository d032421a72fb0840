//! Saved recommenders: one file read as every kind of model, and when one loads, a
//! prediction and a recommendation from it (a file that loads must hold together).
#![no_main]

use kiln_recsys::models::{
    Als, AnyModel, Baseline, Blend, Bpr, Content, GlobalMean, Knn, LightFm, NeuMf, Popularity,
    Svd, SvdPp,
};
use kiln_recsys::{Persist, Recommender};
use libfuzzer_sys::fuzz_target;

fn exercise(model: &dyn Recommender) {
    let _ = model.predict(0, 0);
    let _ = model.predict(3, 1);
    let _ = model.recommend(0, 3);
    let _ = model.similar_items(0, 3);
}

fuzz_target!(|data: &[u8]| {
    let path = kiln_fuzz::file("model.json", data);
    macro_rules! each {
        ($($ty:ty),*) => {$(
            if let Ok(m) = <$ty>::load(&path) {
                exercise(&m);
            }
        )*};
    }
    each!(
        AnyModel, Blend, GlobalMean, Baseline, Popularity, Knn, Svd, SvdPp, Bpr, Als, LightFm,
        NeuMf, Content
    );
});
