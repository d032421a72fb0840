//! Writing the GGUF container (version 3, ggml's `docs/gguf.md`): metadata, tensor infos and
//! the aligned data section, as [`GgufFile`](super::GgufFile) reads it and llama.cpp loads
//! it.
//!
//! Tensors are added with their shape and type and a function that makes their bytes when
//! the data section is written, so that a model is never held twice in memory: the
//! offsets follow from the shapes, and each tensor's bytes are made, checked against its
//! shape and written in turn. The file is written beside its final name and renamed when
//! complete, so a failed write leaves no half file under that name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use kiln_core::kernels::quant::BlockType;

use super::error::GgufError;
use super::reader::{DEFAULT_ALIGNMENT, Value};
use crate::error::{NlpError, Result};

/// Makes a tensor's bytes when the data section is written.
pub type TensorBytes<'a> = Box<dyn FnOnce() -> Result<Vec<u8>> + 'a>;

struct Pending<'a> {
    name: String,
    /// ggml's dimensions, innermost first.
    dims: Vec<usize>,
    ty: BlockType,
    bytes: usize,
    make: TensorBytes<'a>,
}

/// A GGUF file being assembled: metadata in insertion order, then tensors.
pub struct GgufWriter<'a> {
    metadata: Vec<(String, Value)>,
    tensors: Vec<Pending<'a>>,
    alignment: usize,
}

impl Default for GgufWriter<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for GgufWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// GGUF's id of a value's type.
fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A value's bytes without its type id. An array holds one item type: the first item's
/// (an empty array is written as an array of UINT32).
fn put_value(out: &mut Vec<u8>, key: &str, v: &Value) -> std::result::Result<(), String> {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_string(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(items) => {
            let item = items.first().map_or(4, type_id);
            if let Some(other) = items.iter().find(|i| type_id(i) != item) {
                return Err(format!(
                    "metadata '{key}': an array mixes {} and {}",
                    items[0].type_name(),
                    other.type_name()
                ));
            }
            out.extend_from_slice(&item.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, key, i)?;
            }
        }
    }
    Ok(())
}

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl<'a> GgufWriter<'a> {
    /// An empty file with the default alignment (32 bytes).
    pub fn new() -> Self {
        Self {
            metadata: Vec::new(),
            tensors: Vec::new(),
            alignment: DEFAULT_ALIGNMENT,
        }
    }

    /// Sets `key` (replacing an earlier value of the same key in its place).
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
    }

    /// The metadata set so far.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// Adds a tensor of `shape` (outermost first: `[rows, cols]` for a matrix, `[n]` for a
    /// vector) in `ty`, whose bytes `make` returns when the file is written.
    ///
    /// # Errors
    /// When the name is already taken, the shape has no or more than four dimensions, a
    /// zero dimension, or rows that are not whole blocks of `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        ty: BlockType,
        make: TensorBytes<'a>,
    ) -> Result<()> {
        let name = name.into();
        let invalid = |reason: String| NlpError::Input(format!("GGUF tensor '{name}': {reason}"));
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(invalid("added twice".into()));
        }
        if shape.is_empty() || shape.len() > 4 || shape.contains(&0) {
            return Err(invalid(format!(
                "shape {shape:?}: expected 1 to 4 positive dimensions"
            )));
        }
        let dims: Vec<usize> = shape.iter().rev().copied().collect();
        let values = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let bytes = ty
            .row_bytes(dims[0])
            .zip(values)
            .map(|(row, values)| row * (values / dims[0]))
            .ok_or_else(|| {
                invalid(format!(
                    "rows of {} values are not whole {} blocks of {}",
                    dims[0],
                    ty.name(),
                    ty.block_len()
                ))
            })?;
        self.tensors.push(Pending {
            name,
            dims,
            ty,
            bytes,
            make,
        });
        Ok(())
    }

    /// The header, metadata and tensor infos, padded to the data section.
    fn head(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend_from_slice(&type_id(value).to_le_bytes());
            put_value(&mut out, key, value).map_err(NlpError::Input)?;
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in &t.dims {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.ty.ggml_id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = align(offset + t.bytes, self.alignment);
        }
        out.resize(align(out.len(), self.alignment), 0);
        Ok(out)
    }

    /// Writes the file at `path` and returns its length in bytes. Each tensor's bytes are
    /// made in turn and written at once.
    ///
    /// # Errors
    /// [`GgufError::Io`] naming the file when it cannot be written; a tensor whose bytes do
    /// not match its shape and type is named; errors of the tensors' `make` pass through.
    pub fn write(self, path: impl AsRef<Path>) -> Result<u64> {
        let path = path.as_ref();
        let partial = PathBuf::from(format!("{}.partial", path.display()));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source: std::io::Error| NlpError::from(GgufError::Io { path: p, source })
        };
        let head = self.head()?;
        let result = (|| {
            let mut out = BufWriter::new(File::create(&partial).map_err(io(&partial))?);
            out.write_all(&head).map_err(io(&partial))?;
            let mut written = head.len();
            let count = self.tensors.len();
            for (i, t) in self.tensors.into_iter().enumerate() {
                let bytes = (t.make)()?;
                if bytes.len() != t.bytes {
                    return Err(NlpError::Input(format!(
                        "GGUF tensor '{}': {} bytes made, {} expected for {:?} in {}",
                        t.name,
                        bytes.len(),
                        t.bytes,
                        t.dims,
                        t.ty.name()
                    )));
                }
                out.write_all(&bytes).map_err(io(&partial))?;
                written += bytes.len();
                // Padding between tensors (none after the last: the file ends with its data).
                if i + 1 < count {
                    let pad = align(written, self.alignment) - written;
                    out.write_all(&vec![0u8; pad]).map_err(io(&partial))?;
                    written += pad;
                }
            }
            out.flush().map_err(io(&partial))?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .map_err(io(&partial))?
                .sync_all()
                .map_err(io(&partial))?;
            Ok(written as u64)
        })();
        match result {
            Ok(n) => {
                std::fs::rename(&partial, path).map_err(io(path))?;
                Ok(n)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use kiln_core::kernels::quant::quantize;

    #[test]
    fn every_value_type_and_tensor_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.gguf");
        let values = vec![
            ("a.u8", Value::U8(7)),
            ("a.i8", Value::I8(-7)),
            ("a.u16", Value::U16(700)),
            ("a.i16", Value::I16(-700)),
            ("a.u32", Value::U32(70_000)),
            ("a.i32", Value::I32(-70_000)),
            ("a.f32", Value::F32(1.5)),
            ("a.bool", Value::Bool(true)),
            ("a.str", Value::String("ünï 😀".into())),
            ("a.u64", Value::U64(1 << 40)),
            ("a.i64", Value::I64(-(1 << 40))),
            ("a.f64", Value::F64(-2.25)),
            (
                "a.arr",
                Value::Array(vec![Value::String("x".into()), Value::String("".into())]),
            ),
            (
                "a.nested",
                Value::Array(vec![
                    Value::Array(vec![Value::I32(1)]),
                    Value::Array(vec![]),
                ]),
            ),
        ];
        let mut w = GgufWriter::new();
        for (k, v) in &values {
            w.set(*k, v.clone());
        }
        let x: Vec<f32> = (0..96).map(|i| i as f32 / 10.0 - 4.0).collect();
        let mut q = Vec::new();
        quantize(BlockType::Q8_0, &x, &mut q).unwrap();
        let q2 = q.clone();
        w.add_tensor("m", &[3, 32], BlockType::Q8_0, Box::new(move || Ok(q2)))
            .unwrap();
        w.add_tensor(
            "v",
            &[5],
            BlockType::F32,
            Box::new(|| {
                Ok([1f32, 2., 3., 4., 5.]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect())
            }),
        )
        .unwrap();
        let n = w.write(&path).unwrap();
        assert_eq!(n, std::fs::metadata(&path).unwrap().len());
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.version(), 3);
        for (k, v) in &values {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        let m = f.tensor("m").unwrap();
        assert_eq!((m.dims.clone(), m.ty), (vec![32, 3], BlockType::Q8_0));
        assert_eq!(f.tensor_bytes(m), &q[..]);
        assert_eq!(f.vector("v", Some(5)).unwrap(), vec![1., 2., 3., 4., 5.]);
        assert!(!dir.path().join("t.gguf.partial").exists());
    }

    #[test]
    fn bad_tensors_are_named_and_leave_no_file() {
        let mut w = GgufWriter::new();
        let none = || -> TensorBytes<'static> { Box::new(|| Ok(vec![])) };
        let e = w
            .add_tensor("q", &[2, 33], BlockType::Q8_0, none())
            .unwrap_err();
        assert!(
            e.to_string().contains("'q'") && e.to_string().contains("33"),
            "{e}"
        );
        assert!(w.add_tensor("z", &[0], BlockType::F32, none()).is_err());
        w.add_tensor("ok", &[4], BlockType::F32, none()).unwrap();
        assert!(w.add_tensor("ok", &[4], BlockType::F32, none()).is_err());
        w.set("mixed", Value::Array(vec![Value::U8(1), Value::I8(1)]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        let e = w.write(&path).unwrap_err().to_string();
        assert!(e.contains("'mixed'"), "{e}");
        let mut w = GgufWriter::new();
        w.add_tensor("short", &[4], BlockType::F32, Box::new(|| Ok(vec![0; 3])))
            .unwrap();
        let e = w.write(&path).unwrap_err().to_string();
        assert!(e.contains("'short'") && e.contains("3 bytes"), "{e}");
        assert!(!path.exists() && !dir.path().join("bad.gguf.partial").exists());
    }
}
