//! The "Adding a recommender" recipe of docs/architecture.md, done once from outside the
//! crate with a toy model (each item's mean rating, shrunk towards the global mean): the two
//! traits (`Recommender`, `Persist`), a config implementing `Fit`, `register_custom`, and one
//! `Registry::with` line. The model is then fitted by name, evaluated by the crate's metrics,
//! saved inside an `AnyModel` and a `RecommenderBundle`, and loaded back.

use std::sync::Arc;

use kiln_recsys::data::{IdMap, Interaction, Interactions};
use kiln_recsys::eval::rating_scores;
use kiln_recsys::models::{AnyModel, Entry, Registry, Settings, Task, register_custom};
use kiln_recsys::{Fit, Persist, Recommender, RecommenderBundle, Result, TrainSet};
use serde::{Deserialize, Serialize};

/// Each item's mean rating, shrunk towards the global mean by `shrink` pseudo-ratings.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ItemMean {
    train: TrainSet,
    means: Vec<f32>,
}

/// Fits [`ItemMean`].
struct ItemMeanConfig {
    shrink: f32,
}

impl Fit for ItemMeanConfig {
    type Model = ItemMean;

    fn fit(&self, train: &Interactions) -> Result<ItemMean> {
        let set = TrainSet::new(train)?;
        let mu = set.global_mean();
        let means = (0..set.num_items() as u32)
            .map(|i| {
                let (_, ratings) = set.item(i);
                (ratings.iter().sum::<f32>() + self.shrink * mu)
                    / (ratings.len() as f32 + self.shrink)
            })
            .collect();
        Ok(ItemMean { train: set, means })
    }
}

impl Recommender for ItemMean {
    fn train_set(&self) -> &TrainSet {
        &self.train
    }

    fn score(&self, _user: u32, item: u32) -> f32 {
        self.means
            .get(item as usize)
            .copied()
            .unwrap_or(self.train.global_mean())
    }
}

impl Persist for ItemMean {
    const KIND: &'static str = "item-mean";

    fn check(&self) -> std::result::Result<(), String> {
        self.train.check()?;
        if self.means.len() != self.train.num_items() {
            return Err(format!(
                "{} means for {} items",
                self.means.len(),
                self.train.num_items()
            ));
        }
        Ok(())
    }
}

/// Three users, four items: item 0 loved, item 3 disliked.
fn ratings() -> Interactions {
    let mut users = IdMap::new();
    let mut items = IdMap::new();
    let mut records = Vec::new();
    for (u, i, r) in [
        ("a", "x", 5.0),
        ("a", "y", 3.0),
        ("a", "w", 1.0),
        ("b", "x", 4.0),
        ("b", "z", 3.0),
        ("b", "w", 2.0),
        ("c", "x", 5.0),
        ("c", "y", 4.0),
        ("c", "z", 2.0),
    ] {
        records.push(Interaction {
            user: users.insert(u),
            item: items.insert(i),
            rating: r,
            timestamp: 0,
        });
    }
    Interactions::new(records, Arc::new(users), Arc::new(items))
}

#[test]
fn a_registered_recommender_fits_by_name_saves_and_loads() {
    register_custom::<ItemMean>();
    let registry = Registry::builtin().with(Entry::new(
        "item-mean",
        Task::Rating,
        "each item's mean rating, shrunk towards the global mean",
        |_, train| Ok(AnyModel::custom(ItemMeanConfig { shrink: 1.0 }.fit(train)?)),
    ));
    assert!(registry.names().contains(&"item-mean") && registry.names().contains(&"mf"));
    let err = registry.get("item-median").unwrap_err().to_string();
    assert!(
        err.contains("item-median") && err.contains("item-mean"),
        "{err}"
    );

    let data = ratings();
    let entry = registry.get("item-mean").unwrap();
    assert_eq!(entry.task, Task::Rating);
    let model = entry.fit(&Settings::default(), &data).unwrap();
    // Item x: (5 + 4 + 5 + 1 * mu) / 4 with mu = 29 / 9.
    let mu = 29.0 / 9.0;
    let x = data.items.dense("x").unwrap();
    assert!((model.score(0, x) - (14.0 + mu) / 4.0).abs() < 1e-5);
    // The crate's ranking and metrics work on it as on any model.
    let a = data.users.dense("a").unwrap();
    let ranked: Vec<u32> = model
        .recommend_excluding(a, 4, &[])
        .iter()
        .map(|s| s.item)
        .collect();
    let w = data.items.dense("w").unwrap();
    assert_eq!((ranked[0], ranked[3]), (x, w), "{ranked:?}");
    // a rated x, y and w: z is all that is left to recommend.
    assert_eq!(model.recommend(a, 4).len(), 1);
    assert_eq!(
        model.recommend(a, 4)[0].item,
        data.items.dense("z").unwrap()
    );
    let scores = rating_scores(&model, &data);
    assert!(scores.rmse > 0.0 && scores.rmse < 1.5, "{scores:?}");

    // Saved inside an AnyModel file and a bundle, loaded back with the same scores.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("item-mean.json");
    model.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"item-mean\""), "{text}");
    let loaded = AnyModel::load(&path).unwrap();
    for item in 0..4 {
        assert_eq!(loaded.score(a, item), model.score(a, item));
    }
    let bundle = RecommenderBundle::new(model.clone(), &data.users, &data.items, Vec::new())
        .unwrap()
        .with_seen(&data)
        .unwrap();
    let bundle_path = dir.path().join("bundle.json");
    bundle.save(&bundle_path).unwrap();
    let again = RecommenderBundle::load(&bundle_path).unwrap();
    assert_eq!(again.recommend("a", 2), bundle.recommend("a", 2));

    // A file whose kind this program has not registered is an error naming the kind.
    let other = text.replace("\"item-mean\"", "\"item-median\"");
    std::fs::write(&path, other).unwrap();
    let err = AnyModel::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("item-median") && err.contains("register_custom"),
        "{err}"
    );
}
