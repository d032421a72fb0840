//! Checkpoint files: one file per checkpoint holding the model, optimizer and scheduler records
//! and the trainer state, written atomically.
//!
//! Layout (little-endian): `KILNCKPT`, a `u32` format version, a `u32` section count, then per
//! section a `u32` name length, the name, a `u64` data length and the data; the file ends with
//! the SHA-256 of everything before it, so a truncated or corrupted file is detected on load.
//!
//! Writes go to a temporary file in the same directory, are flushed to disk, and only then
//! renamed over the target: a crash mid-write leaves the previous checkpoint intact.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"KILNCKPT";
const VERSION: u32 = 1;

/// Named byte sections of one checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections {
    entries: Vec<(String, Vec<u8>)>,
}

impl Sections {
    /// No sections.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a section.
    pub fn insert(&mut self, name: &str, data: Vec<u8>) {
        self.entries.retain(|(n, _)| n != name);
        self.entries.push((name.to_string(), data));
    }

    /// A section's bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.as_slice())
    }

    /// Encodes the sections in the checkpoint format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (name, data) in &self.entries {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(data);
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Decodes a checkpoint, checking magic, version, lengths and digest.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming `path` for a bad magic or version, a digest that does not match
    /// (a truncated or corrupted file), a section past the end or trailing bytes.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < MAGIC.len() + 8 + 32 || &bytes[..8] != MAGIC {
            return Err(bad("not a Kiln checkpoint (bad magic or too short)".into()));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad(
                "checksum mismatch: the file is truncated or corrupted".into()
            ));
        }
        let mut r = Cursor {
            bytes: body,
            pos: 8,
        };
        let version = r.u32().ok_or_else(|| bad("missing version".into()))?;
        if version != VERSION {
            return Err(bad(format!("format version {version}, expected {VERSION}")));
        }
        let count = r.u32().ok_or_else(|| bad("missing section count".into()))?;
        let mut sections = Sections::new();
        for i in 0..count {
            let short = || bad(format!("section {i} runs past the end of the file"));
            let name_len = r.u32().ok_or_else(short)? as usize;
            let name = r.take(name_len).ok_or_else(short)?;
            let name = String::from_utf8(name.to_vec())
                .map_err(|_| bad(format!("section {i} has a non-UTF-8 name")))?;
            let len = r.u64().ok_or_else(short)? as usize;
            let data = r.take(len).ok_or_else(short)?;
            sections.insert(&name, data.to_vec());
        }
        if r.pos != body.len() {
            return Err(bad(format!(
                "{} trailing bytes after the last section",
                body.len() - r.pos
            )));
        }
        Ok(sections)
    }

    /// Writes the sections to `path` atomically.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be written (the previous file is kept).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, |w| w.write_all(&self.encode()))
    }

    /// Reads and checks a checkpoint file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; as [`Sections::decode`] when it is not a whole
    /// checkpoint.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::decode(&bytes, path)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The temporary file a write to `path` goes through.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes a file atomically: `write` fills a temporary file beside `path`, which is synced and
/// then renamed over `path`. If `write` fails (or the process dies) `path` keeps its old
/// content; on a returned error the temporary file is removed.
///
/// # Errors
/// [`Error::Io`] naming `path` when the folder, the temporary file or the rename fails, or `write`
/// returns an error.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Make the rename itself durable.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sections {
        let mut s = Sections::new();
        s.insert("state", b"{\"epoch\":1}".to_vec());
        s.insert("model", vec![7; 1000]);
        s
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        sample().save(&path).unwrap();
        assert_eq!(Sections::load(&path).unwrap(), sample());
    }

    #[test]
    fn truncated_or_corrupted_files_are_errors() {
        let path = Path::new("x.ckpt");
        let bytes = sample().encode();
        for cut in [0, 5, 20, bytes.len() - 1] {
            let err = Sections::decode(&bytes[..cut], path)
                .unwrap_err()
                .to_string();
            assert!(err.contains("x.ckpt"), "{err}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        let err = Sections::decode(&flipped, path).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn crash_mid_write_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        sample().save(&path).unwrap();

        // A write that dies half-way: the new bytes never replace the old file.
        let mut newer = sample();
        newer.insert("state", b"{\"epoch\":2}".to_vec());
        let encoded = newer.encode();
        let err = write_atomic(&path, |w| {
            w.write_all(&encoded[..encoded.len() / 2])?;
            Err(std::io::Error::other("simulated crash"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("simulated crash"));
        assert_eq!(Sections::load(&path).unwrap(), sample());

        // A crash that leaves its temporary file behind (the process died before cleaning up)
        // does not disturb the checkpoint either, and the next save goes through.
        fs::write(temp_path(&path), &encoded[..10]).unwrap();
        assert_eq!(Sections::load(&path).unwrap(), sample());
        newer.save(&path).unwrap();
        assert_eq!(Sections::load(&path).unwrap(), newer);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
    }
}
