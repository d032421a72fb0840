//! Explicit-feedback interactions: a [`Rating`] is one (user, item, rating) triple with dense
//! ids; the [`RatingBatcher`] stacks them into a [`RatingBatch`].

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;

/// One rating, with dense user and item ids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// Dense user id.
    pub user: u32,
    /// Dense item id.
    pub item: u32,
    /// The rating.
    pub rating: f32,
}

/// A batch of ratings.
#[derive(Debug, Clone)]
pub struct RatingBatch {
    /// `[N]` user ids.
    pub users: Tensor<1, Int>,
    /// `[N]` item ids.
    pub items: Tensor<1, Int>,
    /// `[N]` ratings.
    pub ratings: Tensor<1>,
}

/// Stacks [`Rating`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RatingBatcher;

impl Batcher<Rating, RatingBatch> for RatingBatcher {
    fn batch(&self, items: Vec<Rating>, device: &Device) -> RatingBatch {
        let users: Vec<i64> = items.iter().map(|r| r.user as i64).collect();
        let item_ids: Vec<i64> = items.iter().map(|r| r.item as i64).collect();
        let ratings: Vec<f32> = items.iter().map(|r| r.rating).collect();
        RatingBatch {
            users: Tensor::<1, Int>::from_ints(users.as_slice(), device),
            items: Tensor::<1, Int>::from_ints(item_ids.as_slice(), device),
            ratings: Tensor::<1>::from_floats(ratings.as_slice(), device),
        }
    }
}
