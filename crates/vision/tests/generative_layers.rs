//! The generative layers against PyTorch (`fixtures/generative_layers.py`): the diffusion
//! step's embedding, the spatial attention block and the residual block, outputs and the
//! gradients of `sum(output * upstream)` with respect to the inputs and every parameter.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use kiln_vision::generative::{
    ResBlockConfig, SpatialAttentionConfig, TimeEmbeddingConfig, sinusoidal,
};
use serde_json::Value;

mod common;
use common::{dims, floats};

const FIXTURE: &str = include_str!("fixtures/generative_layers.json");

fn case(name: &str) -> Value {
    let all: Value = serde_json::from_str(FIXTURE).unwrap();
    all["cases"][name].clone()
}

fn tensor<const D: usize>(v: &Value, device: &Device) -> Tensor<D> {
    let shape: [usize; D] = dims(&v["shape"]).try_into().unwrap();
    Tensor::<1>::from_floats(floats(&v["values"]).as_slice(), device).reshape(shape)
}

/// Replaces the float parameters, in module order, by the fixture's (shapes checked).
struct Load(std::vec::IntoIter<Value>);
impl ModuleMapper for Load {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let p = self
            .0
            .next()
            .expect("the fixture has fewer parameters than the module");
        param.map(|old| {
            assert_eq!(old.dims().to_vec(), dims(&p["shape"]), "parameter shape");
            let device = old.device();
            tensor(&p, &device)
        })
    }
}

/// The gradients of the float parameters, in module order.
struct Grads<'a>(&'a burn::tensor::Gradients, Vec<Vec<f32>>);
impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let g = param
            .val()
            .grad(self.0)
            .expect("a parameter without a gradient");
        self.1.push(g.into_data().try_to_vec_as::<f32>().unwrap());
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs PyTorch {w}"
        );
    }
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec_as::<f32>().unwrap()
}

/// Loads the case's parameters into `module`, runs `forward`, and checks the output, the
/// inputs' gradients and every parameter's gradient.
fn check<M: Module, const D: usize>(
    name: &str,
    module: M,
    forward: impl Fn(
        &M,
        &[Value],
        &Device,
    ) -> (Tensor<D>, Vec<Option<Tensor<4>>>, Vec<Option<Tensor<2>>>),
) {
    let c = case(name);
    let device = kiln_core::backend::device("cpu").unwrap().autodiff();
    let module = module
        .map(&mut Load(
            c["params"].as_array().unwrap().clone().into_iter(),
        ))
        .train()
        .fork(&device);
    let inputs = c["inputs"].as_array().unwrap().clone();
    let (out, grads4, grads2) = forward(&module, &inputs, &device);
    assert_close(
        &format!("{name} output"),
        &values(out.clone()),
        &floats(&c["out"]),
        1e-4,
    );
    let upstream: Tensor<D> = Tensor::<1>::from_floats(floats(&c["upstream"]).as_slice(), &device)
        .reshape::<D, _>(out.dims());
    let grads = (out * upstream).sum().backward();
    let mut inputs_checked = 0;
    for (i, input) in inputs.iter().enumerate() {
        if input["grad"].is_null() {
            continue;
        }
        let got = match (
            grads4.get(i).cloned().flatten(),
            grads2.get(i).cloned().flatten(),
        ) {
            (Some(t), _) => values(t.grad(&grads).unwrap()),
            (None, Some(t)) => values(t.grad(&grads).unwrap()),
            _ => panic!("{name}: input {i} not returned"),
        };
        assert_close(
            &format!("{name} input {i} gradient"),
            &got,
            &floats(&input["grad"]),
            1e-4,
        );
        inputs_checked += 1;
    }
    let mut visitor = Grads(&grads, Vec::new());
    module.visit(&mut visitor);
    let params = c["params"].as_array().unwrap();
    assert_eq!(visitor.1.len(), params.len(), "{name}: parameter count");
    for (k, (got, p)) in visitor.1.iter().zip(params).enumerate() {
        assert_close(
            &format!("{name} parameter {k} gradient"),
            got,
            &floats(&p["grad"]),
            1e-4,
        );
    }
    assert!(inputs_checked > 0 || name == "time_embedding");
}

#[test]
fn time_embedding_matches_diffusers_and_pytorch() {
    let cpu = kiln_core::backend::device("cpu").unwrap();
    check::<_, 2>(
        "time_embedding",
        TimeEmbeddingConfig::new(16, 12).init(&cpu),
        |m, inputs, device| {
            let t: Tensor<1> = tensor(&inputs[0], device);
            (m.forward(t), vec![], vec![])
        },
    );
    // The sinusoids alone: sin(t f_i) then cos, f_i = 10000^(-i / (half - 1)).
    let t = Tensor::<1>::from_floats([3.0], &cpu);
    let s = values(sinusoidal(t, 4, 10000.0, 1.0));
    let want = [
        3f32.sin(),
        (3.0f32 * 1e-4).sin(),
        3f32.cos(),
        (3.0f32 * 1e-4).cos(),
    ];
    assert_close("sinusoidal", &s, &want, 1e-6);
}

#[test]
fn spatial_attention_matches_ddpm_attn_block() {
    let cpu = kiln_core::backend::device("cpu").unwrap();
    check::<_, 4>(
        "attention",
        SpatialAttentionConfig::new(4).with_groups(2).init(&cpu),
        |m, inputs, device| {
            let x: Tensor<4> = tensor::<4>(&inputs[0], device).require_grad();
            (m.forward(x.clone()), vec![Some(x)], vec![])
        },
    );
}

#[test]
fn residual_blocks_match_ddpm_resnet_block() {
    let cpu = kiln_core::backend::device("cpu").unwrap();
    for (name, cin, cout, groups) in [("resblock", 2, 4, 2), ("resblock_same_width", 4, 4, 2)] {
        check::<_, 4>(
            name,
            ResBlockConfig::new(cin, cout, 5)
                .with_groups(groups)
                .init(&cpu),
            |m, inputs, device| {
                let x: Tensor<4> = tensor::<4>(&inputs[0], device).require_grad();
                let emb: Tensor<2> = tensor::<2>(&inputs[1], device).require_grad();
                (
                    m.forward(x.clone(), emb.clone()),
                    vec![Some(x), None],
                    vec![None, Some(emb)],
                )
            },
        );
    }
}
