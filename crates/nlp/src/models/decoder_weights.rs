//! Loading a decoder's Hugging Face weights: the files of a folder (`model.safetensors`, or the
//! shards its `model.safetensors.index.json` lists), every file through one burn-store
//! configuration, the problems of all of them gathered into one error that names each
//! tensor, and half-precision weights (`float16`, `bfloat16`) cast to f32, which Kiln computes
//! in on CPU.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::store::{ApplyError, ModuleSnapshot, SafetensorsStore};
use burn::tensor::DType;

use crate::error::{NlpError, Result};

/// The weight files of a folder: `model.safetensors`, or the shards its index lists (each
/// once, in order), checking that every shard exists and stays inside the folder.
///
/// # Errors
/// [`NlpError::Weights`] when there is no weight file, the index does not parse, or a shard is
/// missing or outside the folder.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        if single.is_file() {
            return Ok(vec![single]);
        }
        return Err(NlpError::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model.safetensors nor model.safetensors.index.json here",
            ),
        ));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| NlpError::io(&index, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| NlpError::Weights {
        path: index.clone(),
        reason: format!("not JSON: {e}"),
    })?;
    let map = value["weight_map"]
        .as_object()
        .ok_or_else(|| NlpError::Weights {
            path: index.clone(),
            reason: "no weight_map object".into(),
        })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let name = file.as_str().ok_or_else(|| NlpError::Weights {
            path: index.clone(),
            reason: format!("weight_map[{tensor}] is not a file name"),
        })?;
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(NlpError::Weights {
                path: index.clone(),
                reason: format!("weight_map[{tensor}] = '{name}' leaves the folder"),
            });
        }
        let path = dir.join(name);
        if !files.contains(&path) {
            if !path.is_file() {
                return Err(NlpError::Weights {
                    path: index.clone(),
                    reason: format!("shard {name} (holding {tensor}) is missing"),
                });
            }
            files.push(path);
        }
    }
    Ok(files)
}

/// Casts every float parameter to f32.
struct ToF32;

impl ModuleMapper for ToF32 {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| {
            if t.dtype() == DType::F32 {
                t
            } else {
                t.cast(DType::F32)
            }
        })
    }
}

/// Loads `model` from `files`, each read through `store(path)`; a file's tensor that the
/// model lacks is an error unless `allowed_unused(key)`; a model tensor in no file, or one of
/// another shape, is an error. Half-precision tensors become f32.
pub(crate) fn load<M: Module>(
    mut model: M,
    files: &[PathBuf],
    store: impl Fn(&Path) -> SafetensorsStore,
    allowed_unused: impl Fn(&str) -> bool,
) -> Result<M> {
    let mut problems = Vec::new();
    let mut applied = HashSet::new();
    let mut missing: Option<Vec<String>> = None;
    for path in files {
        if !path.is_file() {
            return Err(NlpError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no weights file here"),
            ));
        }
        let mut s = store(path).allow_partial(true).validate(false);
        let result = model.load_from(&mut s).map_err(|e| NlpError::Weights {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        for e in &result.errors {
            problems.push(match e {
                ApplyError::ShapeMismatch {
                    path: tensor,
                    expected,
                    found,
                } => format!(
                    "{}: tensor {tensor}: expected shape {expected:?}, found {found:?}",
                    path.display()
                ),
                other => format!("{}: {other:?}", path.display()),
            });
        }
        for unused in result.unused.iter().filter(|u| !allowed_unused(u)) {
            problems.push(format!(
                "{}: tensor {unused}: in the file but not in the model",
                path.display()
            ));
        }
        applied.extend(result.applied.iter().cloned());
        let now: Vec<String> = result.missing.iter().map(|m| m.0.clone()).collect();
        missing = Some(match missing {
            None => now,
            Some(before) => before
                .into_iter()
                .filter(|m| !applied.contains(m))
                .collect(),
        });
    }
    for m in missing.unwrap_or_default() {
        if !applied.contains(&m) {
            problems.push(format!("tensor {m}: in no weights file"));
        }
    }
    if !problems.is_empty() {
        return Err(NlpError::Weights {
            path: files.first().cloned().unwrap_or_default(),
            reason: problems.join("; "),
        });
    }
    Ok(model.map(&mut ToF32))
}
