//! Checks a checkpoint's optimizer state against the model it is resumed into, before Burn
//! loads it.
//!
//! Burn's `ModuleOptimizer::from_bytes` takes any well-formed record: a moment tensor of
//! the wrong shape (a checkpoint of another model, or a damaged one) is only found at the
//! first optimizer step, as a shape panic inside the element-wise update. Here every state
//! tensor of the record is matched to the model parameter it belongs to (by the parameter id
//! the record carries) and must have that parameter's shape; the per-parameter rank scalar
//! must equal the parameter's rank. Anything else is an [`Error::Checkpoint`] naming the
//! tensor, the parameter's path and both shapes.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Bytes;

use crate::{Error, Result};

/// The suffix Burn gives the scalar holding a parameter's state rank (`"{id}.__rank"`).
const RANK_SUFFIX: &str = ".__rank";

/// A model parameter as the optimizer state refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParamInfo {
    /// Dotted module path, e.g. `encoder.0.weight`.
    path: String,
    dims: Vec<usize>,
}

/// Collects every float parameter's id, path and shape (without initialising lazy ones).
#[derive(Default)]
struct Params {
    stack: Vec<String>,
    found: HashMap<u64, ParamInfo>,
}

impl ModuleVisitor for Params {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dims = param.lazy_shape().to_vec();
        let path = self.stack.join(".");
        self.found.insert(param.id.val(), ParamInfo { path, dims });
    }
}

fn params_of<M: Module>(model: &M) -> HashMap<u64, ParamInfo> {
    let mut visitor = Params::default();
    model.visit(&mut visitor);
    visitor.found
}

/// Checks the `optimizer` section `bytes` of the checkpoint at `path` against `model`.
pub(super) fn check_optimizer_state<M: Module>(model: &M, bytes: &[u8], path: &Path) -> Result<()> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("optimizer state: {reason}"),
    };
    let reader = burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| bad(format!("not a readable record ({e})")))?;
    let params = params_of(model);
    let param = |id: u64, what: &str| {
        params.get(&id).ok_or_else(|| {
            bad(format!(
                "{what} belongs to parameter id {id}, which the model does not have \
                 (a checkpoint of another model?)"
            ))
        })
    };

    for (name, value) in reader.scalars() {
        let Some(id) = name.strip_suffix(RANK_SUFFIX) else {
            continue;
        };
        let id: u64 = id
            .parse()
            .map_err(|_| bad(format!("scalar `{name}` does not name a parameter id")))?;
        let info = param(id, &format!("scalar `{name}`"))?;
        let rank = usize::try_from(*value).ok();
        if rank != Some(info.dims.len()) {
            return Err(bad(format!(
                "scalar `{name}` gives rank {value:?}, but parameter `{}` has shape {:?} \
                 (rank {})",
                info.path,
                info.dims,
                info.dims.len()
            )));
        }
    }

    let tensors = reader
        .into_tensors()
        .map_err(|e| bad(format!("tensors not readable ({e})")))?;
    for tensor in &tensors {
        let name = &tensor.name;
        let id = tensor
            .param_id
            .ok_or_else(|| bad(format!("tensor `{name}` carries no parameter id")))?;
        let info = param(id, &format!("tensor `{name}`"))?;
        if tensor.shape.as_slice() != info.dims.as_slice() {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}, but its parameter `{}` has shape {:?}",
                tensor.shape.as_slice(),
                info.path,
                info.dims
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};

    #[derive(Module, Debug)]
    struct Net {
        first: Linear,
        second: Linear,
    }

    fn net(device: &Device, hidden: usize) -> Net {
        Net {
            first: LinearConfig::new(3, hidden).init(device),
            second: LinearConfig::new(hidden, 2).init(device),
        }
    }

    /// An Adam state after one step on `model`, as checkpoint bytes.
    fn adam_state(model: Net) -> (Net, Vec<u8>) {
        let device = Device::flex().autodiff();
        let model = model.train().fork(&device);
        let x = Tensor::<2>::ones([4, 3], &device);
        let loss = model.second.forward(model.first.forward(x)).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optim: ModuleOptimizer = AdamConfig::new().init();
        let model = optim.step(1e-3, model, grads);
        let bytes = optim.into_bytes().unwrap().to_vec();
        (model.valid(), bytes)
    }

    #[test]
    fn the_state_of_the_same_model_passes() {
        let device = Device::flex();
        let (model, bytes) = adam_state(net(&device, 5));
        check_optimizer_state(&model, &bytes, Path::new("ck.bin")).unwrap();
    }

    #[test]
    fn moments_of_another_shape_are_a_typed_error() {
        let device = Device::flex();
        let (trained, bytes) = adam_state(net(&device, 5));
        // Same parameter ids, other shapes: what a checkpoint of a wider model would give.
        let mut wider = net(&device, 7);
        wider.first.weight.id = trained.first.weight.id;
        wider.first.bias.as_mut().unwrap().id = trained.first.bias.as_ref().unwrap().id;
        wider.second.weight.id = trained.second.weight.id;
        wider.second.bias.as_mut().unwrap().id = trained.second.bias.as_ref().unwrap().id;
        let err = check_optimizer_state(&wider, &bytes, Path::new("ck.bin")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Checkpoint { .. }), "{text}");
        assert!(text.contains("ck.bin"), "{text}");
        assert!(
            text.contains("first.weight")
                || text.contains("first.bias")
                || text.contains("second.weight"),
            "{text}"
        );
        assert!(text.contains("shape"), "{text}");
    }

    #[test]
    fn state_of_parameters_the_model_lacks_is_a_typed_error() {
        let device = Device::flex();
        let (_, bytes) = adam_state(net(&device, 5));
        // Fresh ids: none of the record's parameters is in this model.
        let other = net(&device, 5);
        let err = check_optimizer_state(&other, &bytes, Path::new("ck.bin")).unwrap_err();
        assert!(err.to_string().contains("does not have"), "{err}");
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let device = Device::flex();
        let model = net(&device, 5);
        let err =
            check_optimizer_state(&model, b"not a burnpack", Path::new("ck.bin")).unwrap_err();
        assert!(err.to_string().contains("not a readable record"), "{err}");
    }
}
