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

    /// Drops this process's pages of `range` (the whole pages inside it) from its resident
    /// memory, for bytes it has copied elsewhere (a GGUF model's matrices interleaved into
    /// tiles): they stay readable, and a later read pages them in again from the file (or
    /// the page cache). Advice only: where the system refuses it, nothing changes.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        {
            const PAGE: usize = 4096;
            let (start, end) = (
                range.start.next_multiple_of(PAGE),
                range.end.min(self.len()),
            );
            if start >= end || end - start < PAGE {
                return;
            }
            let len = (end - start) / PAGE * PAGE;
            debug_assert!(start + len <= self.len() && start.is_multiple_of(PAGE));
            // SAFETY: the map is a read-only shared map of a file Kiln never writes (the
            // module's condition), so MADV_DONTNEED only unmaps the pages from this
            // process: a later access faults them in again from the file with the same
            // bytes, and slices borrowed from the map stay valid and unchanged. The range
            // is within the map (`end <= len`) and starts on a page (the map does).
            let _ = unsafe {
                self.map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len)
            };
        }
        #[cfg(not(unix))]
        let _ = range;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_pages_read_back_the_same_bytes() {
        let path = std::env::temp_dir().join(format!("kiln-mmap-{}.bin", std::process::id()));
        let bytes: Vec<u8> = (0..5 * 4096 + 100).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let map = MappedFile::open(&path).unwrap();
        let before: u64 = map.bytes().iter().map(|&b| u64::from(b)).sum();
        map.release(100..4 * 4096 + 7);
        map.release(0..map.len());
        map.release(10..20);
        assert_eq!(map.bytes(), &bytes[..]);
        assert_eq!(
            map.bytes().iter().map(|&b| u64::from(b)).sum::<u64>(),
            before
        );
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }
}
