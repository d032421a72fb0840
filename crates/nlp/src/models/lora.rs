//! Low-rank adapters (LoRA; Hu et al., 2021): a frozen linear layer `y = x W + b` learns
//! `y = x W + b + s · x A B`, with `A` (`[in, r]`) and `B` (`[r, out]`) the only trained
//! weights of the layer and `s = alpha / r`. `A` starts as PEFT's (uniform in `±1/sqrt(in)`),
//! `B` at zero, so training starts from the pretrained model exactly.
//!
//! [`Bert::with_lora`](super::Bert::with_lora), [`Gpt2::with_lora`](super::Gpt2::with_lora)
//! and [`Llama::with_lora`](super::Llama::with_lora) put adapters on every linear layer of
//! each block and freeze everything else; `merge_lora` folds them into the weights (`W + s A B`)
//! for inference at the base model's cost; `save_adapters` / `load_adapters` keep only the
//! adapters, as safetensors (keys `...lora.<layer>.lora_a`, with the rank and alpha in the
//! file's metadata).

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Distribution;

use crate::error::{NlpError, Result};

/// Rank and scale of the adapters.
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// The rank `r` of `A B`.
    #[config(default = 8)]
    pub rank: usize,
    /// `alpha`: the update is scaled by `alpha / r`.
    #[config(default = 16.0)]
    pub alpha: f64,
}

/// The adapter of one linear layer.
#[derive(Module, Debug)]
pub struct Lora {
    /// `[in, r]`.
    pub lora_a: Param<Tensor<2>>,
    /// `[r, out]`, zero at the start.
    pub lora_b: Param<Tensor<2>>,
    /// `alpha / r`.
    #[module(skip)]
    pub scale: f64,
}

impl LoraConfig {
    /// Checks the rank (at least 1) and alpha (finite, above 0).
    ///
    /// # Errors
    /// [`NlpError::Input`] naming the field out of range.
    pub fn check(&self) -> Result<()> {
        if self.rank == 0 || !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(NlpError::Input(format!(
                "LoRA: rank {} and alpha {} (the rank must be at least 1, alpha a finite number \
                 above 0)",
                self.rank, self.alpha
            )));
        }
        Ok(())
    }

    /// An adapter for a `d_in -> d_out` layer.
    pub fn init(&self, d_in: usize, d_out: usize, device: &Device) -> Lora {
        let bound = 1.0 / (d_in as f64).sqrt();
        Lora {
            lora_a: Param::from_tensor(Tensor::random(
                [d_in, self.rank],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            lora_b: Param::from_tensor(Tensor::zeros([self.rank, d_out], device)),
            scale: self.alpha / self.rank as f64,
        }
    }

    /// An adapter for `linear`.
    pub fn for_linear(&self, linear: &Linear, device: &Device) -> Lora {
        let [d_in, d_out] = linear.weight.dims();
        self.init(d_in, d_out, device)
    }
}

impl Lora {
    /// `s · x A B` for `x` of any rank (the last axis is `in`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let d_out = self.lora_b.dims()[1];
        let y = x
            .reshape([rows, d_in])
            .matmul(self.lora_a.val())
            .matmul(self.lora_b.val())
            .mul_scalar(self.scale);
        let mut out = dims;
        out[D - 1] = d_out;
        y.reshape(out)
    }

    /// `s A B`, `[in, out]`: what merging adds to the layer's weight.
    pub fn delta(&self) -> Tensor<2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scale)
    }
}

/// `linear(x)`, plus the adapter's update when there is one.
pub fn adapted<const D: usize>(linear: &Linear, lora: Option<&Lora>, x: Tensor<D>) -> Tensor<D> {
    match lora {
        Some(a) => kiln_core::ops::linear(linear, x.clone()) + a.forward(x),
        None => kiln_core::ops::linear(linear, x),
    }
}

/// `linear` with `lora`'s update folded into its weight (and the weight's gradient setting
/// kept).
pub fn merge(mut linear: Linear, lora: &Lora) -> Linear {
    let delta = lora.delta().detach();
    linear.weight = linear.weight.map(|w| w + delta);
    linear
}

/// Counts the parameters that receive gradients.
#[derive(Debug, Default)]
struct Trainable {
    trainable: usize,
    total: usize,
}

impl ModuleVisitor for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.shape().num_elements();
        self.total += n;
        if param.is_require_grad() {
            self.trainable += n;
        }
    }
}

/// `(trainable, total)` parameter counts of `module`: the trainable ones are those its
/// configured training state lets receive gradients (read through [`Module::train`], which
/// applies that state on an autodiff device; a module on a plain device reports none as
/// requiring gradients).
pub fn trainable_parameters<M: Module>(module: &M) -> (usize, usize) {
    let mut v = Trainable::default();
    module.clone().train().visit(&mut v);
    (v.trainable, v.total)
}

/// The paths of adapter tensors.
const ADAPTERS: &str = r"(^|\.)lora\.";

/// Whether `path` is an adapter tensor's or starts with one of `also`.
fn selected(path: &str, also: &[&str]) -> bool {
    path.starts_with("lora.") || path.contains(".lora.") || also.iter().any(|p| path.starts_with(p))
}

/// The store's filter: the adapters, and the paths starting with one of `also`.
fn patterns(also: &[&str]) -> Vec<String> {
    std::iter::once(ADAPTERS.to_string())
        .chain(also.iter().map(|p| format!("^{}", p.replace('.', r"\."))))
        .collect()
}

/// Saves the tensors of `module` whose path contains `.lora.` (its adapters), and those whose
/// path starts with one of `also` (a trained head: `head.`), to `path` as safetensors, with
/// `config` in the metadata.
///
/// # Errors
/// [`NlpError::Weights`] when the tensors cannot be written to `path`.
pub fn save_adapters<M: Module>(
    module: &M,
    config: &LoraConfig,
    also: &[&str],
    path: &Path,
) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path)
        .with_regexes(patterns(also))
        .metadata("kiln_lora_rank", config.rank.to_string())
        .metadata("kiln_lora_alpha", config.alpha.to_string())
        .overwrite(true);
    module.save_into(&mut store).map_err(|e| NlpError::Weights {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Loads adapters saved by [`save_adapters`] (and the tensors matching `also`) into `module`,
/// which holds adapters of the same shapes; a missing or mis-shaped tensor is an error naming
/// it.
///
/// # Errors
/// [`NlpError::Io`] when the file cannot be read; [`NlpError::Weights`] naming a missing or
/// mis-shaped tensor.
pub fn load_adapters<M: Module>(mut module: M, also: &[&str], path: &Path) -> Result<M> {
    if !path.is_file() {
        return Err(NlpError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no adapter file here"),
        ));
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_regexes(patterns(also))
        .allow_partial(true)
        .validate(false);
    let result = module
        .load_from(&mut store)
        .map_err(|e| NlpError::Weights {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let mut problems: Vec<String> = result.errors.iter().map(|e| format!("{e:?}")).collect();
    // The store reports every tensor of the module that the file lacks: only the selected
    // ones are expected there.
    problems.extend(
        result
            .missing
            .iter()
            .filter(|(m, _)| selected(m, also))
            .map(|(m, _)| format!("tensor {m}: missing from the file")),
    );
    problems.extend(
        result
            .unused
            .iter()
            .map(|u| format!("tensor {u}: in the file but not in the model")),
    );
    if !problems.is_empty() {
        return Err(NlpError::Weights {
            path: path.to_owned(),
            reason: problems.join("; "),
        });
    }
    Ok(module)
}
