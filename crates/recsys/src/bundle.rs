//! A fitted recommender packaged for serving: the model ([`AnyModel`]), the raw user and item
//! ids it was trained on, the items' titles and their training popularity, saved as one file
//! ([`Persist`]). A server answers "top-k for user `196`" with raw ids and titles, and has a
//! stated fallback for users the model has never seen (the most popular items).

use serde::{Deserialize, Serialize};

use crate::data::IdMap;
use crate::error::{RecsysError, Result};
use crate::models::AnyModel;
use crate::recommender::{Persist, Recommender, Scored, top_k};

/// One recommended item, by raw id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BundleItem {
    /// The item's id in the original data (e.g. MovieLens' movie id).
    pub id: String,
    /// The item's title (empty when the bundle has none).
    pub title: String,
    /// The model's score (for the popularity fallback: the item's training interactions).
    pub score: f32,
}

/// How a list was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The model's scores for a user it was trained on.
    Model,
    /// The user is unknown to the model: the most interacted-with items in training.
    Popularity,
}

/// A model with its id maps and item titles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecommenderBundle {
    model: AnyModel,
    users: IdMap,
    items: IdMap,
    titles: Vec<String>,
    /// Every item each user has interacted with (sorted), when it is more than the model was
    /// fitted on (an implicit model fitted on the positives alone): left out of their lists.
    #[serde(default)]
    seen: Vec<Vec<u32>>,
}

impl RecommenderBundle {
    /// Packages `model` with the id maps of the data it was fitted on and one title per item
    /// (an empty `titles` gives every item an empty title).
    ///
    /// # Errors
    /// [`RecsysError::Data`] when the model, the id maps and the titles do not hold together
    /// (sizes, ids).
    pub fn new(
        model: impl Into<AnyModel>,
        users: &IdMap,
        items: &IdMap,
        titles: Vec<String>,
    ) -> Result<Self> {
        let titles = if titles.is_empty() {
            vec![String::new(); items.len()]
        } else {
            titles
        };
        let bundle = Self {
            model: model.into(),
            users: users.clone(),
            items: items.clone(),
            titles,
            seen: Vec::new(),
        };
        bundle.check().map_err(RecsysError::Data)?;
        Ok(bundle)
    }

    /// Leaves every interaction in `all` (same id maps) out of its user's lists, not only the
    /// ones the model was fitted on: a model fitted on positive ratings would otherwise
    /// recommend what a user already rated low.
    ///
    /// # Errors
    /// [`RecsysError::Data`] when `all` has ids past the bundle's id maps.
    pub fn with_seen(mut self, all: &crate::data::Interactions) -> Result<Self> {
        let mut seen = vec![Vec::new(); self.users.len()];
        for r in &all.records {
            if let Some(list) = seen.get_mut(r.user as usize) {
                list.push(r.item);
            }
        }
        for list in &mut seen {
            list.sort_unstable();
            list.dedup();
        }
        self.seen = seen;
        self.check().map_err(RecsysError::Data)?;
        Ok(self)
    }

    /// The model.
    pub fn model(&self) -> &AnyModel {
        &self.model
    }

    /// Number of items.
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// Number of users the model knows.
    pub fn num_users(&self) -> usize {
        self.users.len()
    }

    /// Whether the model was trained on `raw_user`.
    pub fn knows_user(&self, raw_user: &str) -> bool {
        self.users.dense(raw_user).is_some()
    }

    /// The raw id and title of dense item `item`.
    pub fn item(&self, item: u32) -> Option<(&str, &str)> {
        let raw = self.items.raw(item)?;
        Some((
            raw,
            self.titles.get(item as usize).map_or("", String::as_str),
        ))
    }

    /// Titles by dense item id.
    pub fn titles(&self) -> &[String] {
        &self.titles
    }

    fn named(&self, list: Vec<Scored>) -> Vec<BundleItem> {
        list.into_iter()
            .filter_map(|s| {
                self.item(s.item).map(|(id, title)| BundleItem {
                    id: id.to_owned(),
                    title: title.to_owned(),
                    score: s.score,
                })
            })
            .collect()
    }

    /// The `k` best items for `raw_user` that they have not interacted with in training; for a
    /// user the model does not know, the `k` most popular items ([`Source::Popularity`]).
    pub fn recommend(&self, raw_user: &str, k: usize) -> (Vec<BundleItem>, Source) {
        match self.users.dense(raw_user) {
            Some(u) if (u as usize) < self.model.train_set().num_users() => {
                let list = match self.seen.get(u as usize) {
                    Some(seen) => self.model.recommend_excluding(u, k, seen),
                    None => self.model.recommend(u, k),
                };
                (self.named(list), Source::Model)
            }
            _ => (self.popular(k, &[]), Source::Popularity),
        }
    }

    /// The `k` items with the most training interactions, leaving out the dense ids in
    /// `exclude`.
    pub fn popular(&self, k: usize, exclude: &[u32]) -> Vec<BundleItem> {
        let train = self.model.train_set();
        let mut counts: Vec<f32> = (0..train.num_items() as u32)
            .map(|i| train.item(i).0.len() as f32)
            .collect();
        for &i in exclude {
            if let Some(c) = counts.get_mut(i as usize) {
                *c = f32::NEG_INFINITY;
            }
        }
        self.named(top_k(&counts, k))
    }

    /// Items ranked by `scores` (one per dense item, e.g. text similarity to a description),
    /// best first: the fallback by text for a user the model does not know.
    pub fn rank_by(&self, scores: &[f32], k: usize) -> Vec<BundleItem> {
        self.named(top_k(scores, k))
    }
}

impl Persist for RecommenderBundle {
    const KIND: &'static str = "bundle";

    fn check(&self) -> std::result::Result<(), String> {
        Persist::check(&self.model)?;
        let train = self.model.train_set();
        if self.users.len() < train.num_users() {
            return Err(format!(
                "{} user ids for a model of {} users",
                self.users.len(),
                train.num_users()
            ));
        }
        if self.items.len() != train.num_items() {
            return Err(format!(
                "{} item ids for a model of {} items",
                self.items.len(),
                train.num_items()
            ));
        }
        if self.seen.len() > self.users.len() {
            return Err(format!(
                "seen items for {} users, {} users known",
                self.seen.len(),
                self.users.len()
            ));
        }
        if let Some(i) = self
            .seen
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.items.len())
        {
            return Err(format!(
                "a seen item {i} is past the {} items",
                self.items.len()
            ));
        }
        if self.titles.len() != self.items.len() {
            return Err(format!(
                "{} titles for {} items",
                self.titles.len(),
                self.items.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fit;
    use crate::data::Interactions;
    use crate::models::PopularityConfig;

    #[test]
    fn raw_ids_titles_and_the_popularity_fallback() {
        // Users a, b, c; items x (3 interactions), y (2), z (1).
        let mut users = IdMap::new();
        let mut items = IdMap::new();
        let mut records = Vec::new();
        for (u, i) in [
            ("a", "x"),
            ("b", "x"),
            ("c", "x"),
            ("a", "y"),
            ("b", "y"),
            ("c", "z"),
        ] {
            records.push(crate::data::Interaction {
                user: users.insert(u),
                item: items.insert(i),
                rating: 1.0,
                timestamp: 0,
            });
        }
        let data = Interactions::new(records, users.clone().into(), items.clone().into());
        let model = PopularityConfig::default().fit(&data).unwrap();
        let titles = vec!["X".into(), "Y".into(), "Z".into()];
        let bundle = RecommenderBundle::new(model, &users, &items, titles).unwrap();

        // c has seen x and z: y is left.
        let (list, source) = bundle.recommend("c", 5);
        assert_eq!(source, Source::Model);
        assert_eq!(
            list.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
            ["y"]
        );
        assert_eq!(list[0].title, "Y");

        let (list, source) = bundle.recommend("nobody", 2);
        assert_eq!(source, Source::Popularity);
        let ids: Vec<_> = list.iter().map(|b| (b.id.as_str(), b.score)).collect();
        assert_eq!(ids, [("x", 3.0), ("y", 2.0)]);

        // Fitted on a subset, told of everything: c's interaction with y (not in training)
        // is left out too.
        let mut all = data.clone();
        all.records.push(crate::data::Interaction {
            user: users.dense("c").unwrap(),
            item: items.dense("y").unwrap(),
            rating: 1.0,
            timestamp: 0,
        });
        let told = bundle.clone().with_seen(&all).unwrap();
        assert!(told.recommend("c", 5).0.is_empty());

        let ranked = bundle.rank_by(&[0.1, 0.2, 0.9], 1);
        assert_eq!(ranked[0].title, "Z");

        // Saved and loaded whole; a file whose titles do not match is refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.json");
        bundle.save(&path).unwrap();
        let back = RecommenderBundle::load(&path).unwrap();
        assert_eq!(back.recommend("c", 5).0, bundle.recommend("c", 5).0);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"Z\"", "\"Z\",\"W\"");
        std::fs::write(&path, text).unwrap();
        let err = RecommenderBundle::load(&path).unwrap_err().to_string();
        assert!(err.contains("4 titles for 3 items"), "{err}");

        let err = RecommenderBundle::new(
            PopularityConfig::default().fit(&data).unwrap(),
            &users,
            &items,
            vec!["only one".into()],
        )
        .unwrap_err();
        assert!(err.to_string().contains("1 titles for 3 items"), "{err}");
    }
}
