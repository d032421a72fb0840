//! Read-only memory maps of model files (GGUF), so that weights are used where the file
//! lies: pages are read from disk (or the page cache) when first touched, shared between
//! processes, and never copied into the heap.
//!
//! The one `unsafe` is the map itself: memmap2 cannot promise that nobody changes or
//! truncates the file while it is mapped (another process writing it would change the bytes
//! under Kiln's slices, and truncation makes reads past the new end fault). Kiln maps only
//! files it opened read-only and never writes them; a user must not rewrite a model file
//! while a program has it loaded (llama.cpp and safetensors' `mmap` loaders carry the same
//! condition).

use std::fs::File;
use std::path::{Path, PathBuf};

/// A whole file mapped read-only.
#[derive(Debug)]
pub struct MappedFile {
    map: memmap2::Mmap,
    path: PathBuf,
}

impl MappedFile {
    /// Maps the file at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened, its size read, or the map made.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref();
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        // SAFETY: the file is opened read-only and Kiln never writes it; the module docs
        // state the condition on other writers (the file must not change while mapped).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        debug_assert_eq!(map.len() as u64, len, "the map covers the whole file");
        Ok(Self {
            map,
            path: path.to_path_buf(),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
