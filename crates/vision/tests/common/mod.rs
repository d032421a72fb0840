//! Reading the JSON fixtures that Python scripts in `fixtures/` write.

use serde_json::Value;

/// A JSON array of numbers as `f32`.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// A JSON array of sizes.
pub fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_u64().expect("a size") as usize)
        .collect()
}
