//! Typed reads of a GGUF file's metadata and tensors: each absent key or tensor, or one of
//! another type or shape than asked, is a [`GgufError`] naming it.

use kiln_core::kernels::quant::QuantMatrix;

use super::{GgufError, GgufFile, Value};

impl GgufFile {
    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingKey {
            path: self.path().to_path_buf(),
            key: key.to_string(),
        }
    }

    fn key_type(&self, key: &str, expected: &str, found: &Value) -> GgufError {
        GgufError::KeyType {
            path: self.path().to_path_buf(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: found.type_name().to_string(),
        }
    }

    /// A string value.
    ///
    /// # Errors
    /// When `key` is absent or not a string.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.key_type(key, "STRING", v)),
            None => Err(self.missing(key)),
        }
    }

    /// A non-negative integer value of any integer type that fits `usize`.
    ///
    /// # Errors
    /// When `key` is absent, not an integer, or negative.
    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_i128()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| self.key_type(key, "a non-negative integer", v))
    }

    /// A float value (either width, or an integer).
    ///
    /// # Errors
    /// When `key` is absent or not a number.
    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_f64().ok_or_else(|| self.key_type(key, "a number", v))
    }

    /// A boolean value.
    ///
    /// # Errors
    /// When `key` is absent or not a boolean.
    pub fn bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.get(key) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.key_type(key, "BOOL", v)),
            None => Err(self.missing(key)),
        }
    }

    /// An array of strings.
    ///
    /// # Errors
    /// When `key` is absent or not an array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(self.key_type(key, "ARRAY of STRING", other)),
                })
                .collect(),
            Some(v) => Err(self.key_type(key, "ARRAY of STRING", v)),
            None => Err(self.missing(key)),
        }
    }

    /// An array of integers (any integer type) as i64.
    ///
    /// # Errors
    /// When `key` is absent or not an array of integers in i64's range.
    pub fn ints(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_i128()
                        .and_then(|i| i64::try_from(i).ok())
                        .ok_or_else(|| self.key_type(key, "ARRAY of integers", v))
                })
                .collect(),
            Some(v) => Err(self.key_type(key, "ARRAY of integers", v)),
            None => Err(self.missing(key)),
        }
    }

    /// An array of numbers as f32.
    ///
    /// # Errors
    /// When `key` is absent or not an array of numbers.
    pub fn floats(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_f64()
                        .map(|f| f as f32)
                        .ok_or_else(|| self.key_type(key, "ARRAY of numbers", v))
                })
                .collect(),
            Some(v) => Err(self.key_type(key, "ARRAY of numbers", v)),
            None => Err(self.missing(key)),
        }
    }

    /// The tensor `name` as a `[rows, cols]` matrix (a vector as `[1, n]`) in its stored
    /// blocks, checked against `shape` when given.
    ///
    /// # Errors
    /// When the tensor is missing, has more than two dimensions, or another shape.
    pub fn matrix(
        &self,
        name: &str,
        shape: Option<[usize; 2]>,
    ) -> Result<QuantMatrix<'_>, GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            path: self.path().to_path_buf(),
            tensor: name.to_string(),
        })?;
        let found = info.matrix_shape();
        if found.is_none() || shape.is_some_and(|s| Some(s) != found) {
            return Err(GgufError::TensorShape {
                path: self.path().to_path_buf(),
                tensor: name.to_string(),
                expected: shape.map_or("a matrix".into(), |[r, c]| format!("[{r}, {c}]")),
                found: format!("{:?} (ggml order, innermost first)", info.dims),
            });
        }
        let [rows, cols] = found.unwrap_or_default();
        QuantMatrix::new(info.ty, self.tensor_bytes(info), [rows, cols]).ok_or_else(|| {
            GgufError::Invalid {
                path: self.path().to_path_buf(),
                reason: format!("tensor '{name}': bytes do not match [{rows}, {cols}]"),
            }
        })
    }

    /// The tensor `name` dequantized to f32 (for small tensors: norms, biases), checked to
    /// hold `len` values when given.
    ///
    /// # Errors
    /// When the tensor is missing or has another number of values.
    pub fn vector(&self, name: &str, len: Option<usize>) -> Result<Vec<f32>, GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::MissingTensor {
            path: self.path().to_path_buf(),
            tensor: name.to_string(),
        })?;
        let n: usize = info.dims.iter().product();
        if len.is_some_and(|l| l != n) {
            return Err(GgufError::TensorShape {
                path: self.path().to_path_buf(),
                tensor: name.to_string(),
                expected: format!("{} values", len.unwrap_or_default()),
                found: format!("{:?}", info.dims),
            });
        }
        let mut out = vec![0f32; n];
        kiln_core::kernels::quant::dequantize(info.ty, self.tensor_bytes(info), &mut out);
        Ok(out)
    }
}
