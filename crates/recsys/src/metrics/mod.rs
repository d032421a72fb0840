//! Evaluation metrics: [`rating`] accuracy (RMSE, MAE) and [`ranking`] quality of top-k lists
//! (precision, recall, NDCG, MAP, hit rate, MRR, catalogue coverage).

pub mod ranking;
pub mod rating;

pub use ranking::{
    average_precision_at_k, catalogue_coverage, hit_at_k, ndcg_at_k, precision_at_k, recall_at_k,
    reciprocal_rank,
};
pub use rating::{mae, rmse};
