//! The seed's conv_layer and pool_layer against PyTorch, for SAME and VALID padding with
//! strides 1 and 2. `fixtures/conv_pool.json` was made by `fixtures/conv_pool.py`.

use burn::prelude::*;
use burn::tensor::Tolerance;
use kiln_vision::models::blocks::{Padding, conv_layer, pool_layer};
use serde_json::Value;

mod common;
use common::{dims, floats};

fn shape4(v: &Value) -> [usize; 4] {
    dims(v).try_into().expect("a 4-d shape")
}

fn tensor4(values: &Value, shape: &Value, device: &Device) -> Tensor<4> {
    Tensor::<1>::from_floats(floats(values).as_slice(), device).reshape(shape4(shape))
}

fn assert_close(got: Tensor<4>, values: &Value, shape: &Value) {
    assert_eq!(got.dims(), shape4(shape));
    let want = TensorData::new(floats(values), shape4(shape).to_vec());
    got.into_data()
        .assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-5));
}

#[test]
fn conv_and_pool_match_pytorch() {
    let fixture: Value = serde_json::from_str(include_str!("fixtures/conv_pool.json")).unwrap();
    let device = kiln_core::backend::device("cpu").unwrap();
    let x = tensor4(&fixture["x"], &fixture["x_shape"], &device);
    let w = tensor4(&fixture["w"], &fixture["w_shape"], &device);
    let b = Tensor::<1>::from_floats(floats(&fixture["b"]).as_slice(), &device);
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let stride = case["stride"].as_u64().unwrap() as usize;
        let padding = match case["padding"].as_str().unwrap() {
            "SAME" => Padding::Same,
            _ => Padding::Valid,
        };
        let conv = conv_layer(x.clone(), w.clone(), b.clone(), [stride, stride], padding);
        assert_close(conv.clone(), &case["conv"], &case["conv_shape"]);
        let pool = pool_layer(x.clone(), [2, 2], [stride, stride], padding);
        assert_close(pool, &case["pool"], &case["pool_shape"]);
        let conv_pool = pool_layer(conv, [2, 2], [2, 2], padding);
        assert_close(conv_pool, &case["conv_pool"], &case["conv_pool_shape"]);
    }
}
