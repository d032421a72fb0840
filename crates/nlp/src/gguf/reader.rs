//! The GGUF container (versions 2 and 3, ggml's `docs/gguf.md`): header, metadata, tensor
//! infos and the aligned data section, read from a memory-mapped file. Tensors are not read
//! at open: [`GgufFile::tensor_bytes`] hands out the mapped bytes where they lie.
//!
//! Every count, length, offset and dimension is checked against the bytes that are left
//! before anything is allocated for it, so a truncated or hostile file is a [`GgufError`]
//! naming the key or tensor, never a panic or a huge allocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_core::kernels::mmap::MappedFile;
use kiln_core::kernels::quant::BlockType;

use super::error::GgufError;

mod access;

/// `GGUF` read as a little-endian u32.
const MAGIC: &[u8; 4] = b"GGUF";
/// The alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml's most dimensions per tensor.
const MAX_DIMS: usize = 4;
/// Nested arrays deeper than this are refused (the format allows nesting; no model uses
/// more than one level, and unbounded recursion would let a file exhaust the stack).
const MAX_DEPTH: usize = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING` (UTF-8).
    String(String),
    /// `ARRAY` of one value type.
    Array(Vec<Value>),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

impl Value {
    /// GGUF's name of the value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "UINT8",
            Value::I8(_) => "INT8",
            Value::U16(_) => "UINT16",
            Value::I16(_) => "INT16",
            Value::U32(_) => "UINT32",
            Value::I32(_) => "INT32",
            Value::F32(_) => "FLOAT32",
            Value::Bool(_) => "BOOL",
            Value::String(_) => "STRING",
            Value::Array(_) => "ARRAY",
            Value::U64(_) => "UINT64",
            Value::I64(_) => "INT64",
            Value::F64(_) => "FLOAT64",
        }
    }

    /// An integer value of any width, if it is one.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float or integer value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }
}

/// Where a tensor lies and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Its name (`blk.0.attn_q.weight`).
    pub name: String,
    /// ggml's dimensions, innermost first (`[cols, rows]` for a matrix).
    pub dims: Vec<usize>,
    /// Its block type.
    pub ty: BlockType,
    /// Offset of its bytes in the file.
    pub offset: usize,
    /// Its length in bytes.
    pub bytes: usize,
}

impl TensorInfo {
    /// `[rows, cols]` of a 2-D tensor (ggml's `ne[1], ne[0]`), or `[1, n]` of a vector.
    pub fn matrix_shape(&self) -> Option<[usize; 2]> {
        match self.dims.as_slice() {
            [n] => Some([1, *n]),
            [cols, rows] => Some([*rows, *cols]),
            _ => None,
        }
    }
}

/// An open GGUF file: its metadata and tensor infos, the data mapped.
#[derive(Debug, Clone)]
pub struct GgufFile {
    map: Arc<MappedFile>,
    version: u32,
    metadata: Vec<(String, Value)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
    alignment: usize,
    data_start: usize,
}

/// A tensor info as read: name, ggml dimensions, type, offset in the data section.
type RawInfo = (String, Vec<usize>, BlockType, u64);

/// A cursor over the file's bytes that names what it reads when they run out.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.left() {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what(),
                offset: self.at as u64,
                needed: n as u64,
            });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length or count that must fit what is left, `min` bytes per item.
    fn count(&mut self, min: usize, what: &dyn Fn() -> String) -> Result<usize, GgufError> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min.max(1)))
            .is_some_and(|b| b <= self.left());
        if !fits {
            return Err(self.invalid(format!(
                "{}: a count of {n} ({min} bytes each) past the {} bytes left",
                what(),
                self.left()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.invalid(format!("{}: not UTF-8 ({e})", what())))
    }

    fn invalid(&self, reason: String) -> GgufError {
        GgufError::Invalid {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// Tensor info `i`: name, dimensions, type, offset in the data section.
    fn tensor_info(&mut self, i: usize) -> Result<RawInfo, GgufError> {
        let name = self.string(&|| format!("the name of tensor {i}"))?;
        let what = || format!("tensor '{name}'");
        let n_dims = self.u32(&what)? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.invalid(format!(
                "tensor '{name}': {n_dims} dimensions, expected 1 to {MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            let d = self.u64(&what)?;
            // Every type Kiln reads packs fewer than 4 values a byte: a dimension past 4
            // values per byte of the file cannot fit (the exact size check follows).
            if d == 0 || d > 4 * self.bytes.len() as u64 {
                return Err(self.invalid(format!(
                    "tensor '{name}': dimension {d} (the file is {} bytes)",
                    self.bytes.len()
                )));
            }
            dims.push(d as usize);
        }
        let type_id = self.u32(&what)?;
        let ty = BlockType::from_ggml(type_id).ok_or_else(|| GgufError::UnknownTensorType {
            path: self.path.to_path_buf(),
            tensor: name.clone(),
            type_id,
            type_name: BlockType::ggml_name(type_id),
        })?;
        let offset = self.u64(&what)?;
        Ok((name, dims, ty, offset))
    }

    /// Where a tensor lies in the file and its length, checked against the file's end and
    /// the alignment.
    fn place(
        &self,
        name: &str,
        dims: &[usize],
        ty: BlockType,
        offset: u64,
        data_start: usize,
        alignment: usize,
    ) -> Result<(usize, usize), GgufError> {
        let file_len = self.bytes.len();
        let values = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|_| dims[0].is_multiple_of(ty.block_len()));
        let bytes = values
            .and_then(|v| (v / ty.block_len()).checked_mul(ty.block_bytes()))
            .ok_or_else(|| {
                self.invalid(format!(
                    "tensor '{name}': dimensions {dims:?} are not whole {} blocks of {} \
                     values",
                    ty.name(),
                    ty.block_len()
                ))
            })?;
        if !(offset as usize).is_multiple_of(alignment) {
            return Err(self.invalid(format!(
                "tensor '{name}': offset {offset} is not a multiple of the alignment \
                 {alignment}"
            )));
        }
        let start = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(data_start))
            .filter(|s| {
                s.checked_add(bytes)
                    .is_some_and(|end| end <= self.bytes.len())
            })
            .ok_or_else(|| {
                self.invalid(format!(
                    "tensor '{name}': {bytes} bytes at data offset {offset} run past the \
                     end of the file ({file_len} bytes, data from {data_start})"
                ))
            })?;
        Ok((start, bytes))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, GgufError> {
        let what = || format!("the value of '{key}'");
        Ok(match ty {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.invalid(format!("'{key}': bool byte {b}, expected 0 or 1"))),
            },
            8 => Value::String(self.string(&what)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.invalid(format!("'{key}': arrays nested deeper than {MAX_DEPTH}"))
                    );
                }
                let item = self.u32(&what)?;
                let min = match item {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10 | 11 | 12 => 8,
                    // An array's header: type and count.
                    9 => 12,
                    other => {
                        return Err(GgufError::UnknownValueType {
                            path: self.path.to_path_buf(),
                            key: key.to_string(),
                            type_id: other,
                        });
                    }
                };
                let n = self.count(min, &what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(&what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(GgufError::UnknownValueType {
                    path: self.path.to_path_buf(),
                    key: key.to_string(),
                    type_id: other,
                });
            }
        })
    }
}

impl GgufFile {
    /// Maps and reads the file at `path`.
    ///
    /// # Errors
    /// [`GgufError`] when the file cannot be read, is not GGUF v2 or v3, or any part of it is
    /// truncated, out of range or of an unknown type (the error names the key or tensor).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref();
        let map = MappedFile::open(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_map(Arc::new(map))
    }

    fn from_map(map: Arc<MappedFile>) -> Result<Self, GgufError> {
        let path: PathBuf = map.path().to_path_buf();
        let mut c = Cursor {
            bytes: map.bytes(),
            at: 0,
            path: &path,
        };
        let magic = c.array::<4>(&|| "the magic".into())?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic {
                path: path.clone(),
                found: magic,
            });
        }
        let version = c.u32(&|| "the version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version {
                path: path.clone(),
                version,
            });
        }
        // A tensor info is at least 28 bytes (name length, dims count, type, offset); a
        // metadata pair at least 13 (key length, type, a one-byte value).
        let tensor_count = c.count(28, &|| "the tensor count".into())?;
        let kv_count = c.count(13, &|| "the metadata count".into())?;
        let mut metadata = Vec::with_capacity(kv_count);
        let mut keys = HashMap::with_capacity(kv_count);
        for i in 0..kv_count {
            let key = c.string(&|| format!("metadata key {i}"))?;
            let ty = c.u32(&|| format!("the type of '{key}'"))?;
            let value = c.value(ty, &key, 0)?;
            if keys.insert(key.clone(), metadata.len()).is_some() {
                return Err(c.invalid(format!("metadata key '{key}' appears twice")));
            }
            metadata.push((key, value));
        }
        let alignment = match keys.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
            Some(v) => {
                return Err(c.invalid(format!(
                    "general.alignment: {v:?}, expected a UINT32 power of two"
                )));
            }
        };
        let mut infos = Vec::with_capacity(tensor_count);
        for i in 0..tensor_count {
            infos.push(c.tensor_info(i)?);
        }
        let data_start = c.at.next_multiple_of(alignment);
        let mut tensors = Vec::with_capacity(tensor_count);
        let mut names = HashMap::with_capacity(tensor_count);
        for (name, dims, ty, offset) in infos {
            let (start, bytes) = c.place(&name, &dims, ty, offset, data_start, alignment)?;
            if names.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.invalid(format!("tensor '{name}' appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset: start,
                bytes,
            });
        }
        Ok(Self {
            map,
            version,
            metadata,
            keys,
            tensors,
            names,
            alignment,
            data_start,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.map.path()
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data section's alignment.
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// Where the data section starts.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// The file's size in bytes.
    pub fn file_bytes(&self) -> usize {
        self.map.len()
    }

    /// Every metadata pair, in the file's order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every tensor, in the file's order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    /// The mapped bytes of `info` (a tensor of this file).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.map.bytes()[info.offset..info.offset + info.bytes]
    }

    /// The shared map (for models that keep using the bytes).
    pub fn map(&self) -> &Arc<MappedFile> {
        &self.map
    }
}
