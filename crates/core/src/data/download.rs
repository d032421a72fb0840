//! Downloads into a cache folder with SHA-256 verification: what users without `--data DIR`
//! use to get MNIST, MovieLens and the like.
//!
//! A file is downloaded once into the cache (`$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else
//! `~/.cache/kiln`), verified against its expected digest before it is moved into place, and
//! verified again when it is found in the cache. Without a network the error says to download
//! the data by hand and pass `--data DIR`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::train::checkpoint::write_atomic;

/// Downloads files into a cache folder and checks their SHA-256.
#[derive(Debug, Clone)]
pub struct Downloader {
    cache_dir: PathBuf,
    timeout: Duration,
    quiet: bool,
}

impl Downloader {
    /// A downloader caching into `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            timeout: Duration::from_secs(60),
            quiet: false,
        }
    }

    /// A downloader caching into [`default_cache_dir`].
    pub fn with_default_cache() -> Self {
        Self::new(default_cache_dir())
    }

    /// Sets the time allowed for one whole download.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Silences the progress bar.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// The cache folder.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Returns the cached `file_name`, downloading it from `url` first if it is missing or its
    /// digest is not `sha256` (lower-case hex).
    ///
    /// # Errors
    /// [`Error::Download`] when the request fails (with how to fetch the file by hand) or the
    /// downloaded bytes do not have the expected digest; [`Error::Io`] when the cache cannot be
    /// read or written.
    pub fn fetch(&self, url: &str, file_name: &str, sha256: &str) -> Result<PathBuf> {
        let target = self.cache_dir.join(file_name);
        let expected = sha256.to_ascii_lowercase();
        if target.is_file() && sha256_file(&target)? == expected {
            return Ok(target);
        }

        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .build()
            .into();
        let response = agent.get(url).call().map_err(|e| Error::Download {
            url: url.to_string(),
            reason: format!(
                "{e}. Without network access, download the file by hand and pass its folder \
                 with --data DIR"
            ),
        })?;
        let length: Option<u64> = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut reader = response.into_body().into_reader();
        let bar = (!self.quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(length.unwrap_or(0));
            bar.set_message(file_name.to_string());
            bar
        });

        let mut found = String::new();
        let written = write_atomic(&target, |w| {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                w.write_all(&buf[..n])?;
                if let Some(bar) = &bar {
                    bar.inc(n as u64);
                }
            }
            found = hex(&hasher.finalize());
            if found != expected {
                return Err(std::io::Error::other("checksum mismatch"));
            }
            Ok(())
        });
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        match written {
            Err(_) if !found.is_empty() && found != expected => Err(Error::Checksum {
                path: target,
                expected,
                found,
            }),
            Err(Error::Io { source, .. }) => Err(Error::Download {
                url: url.to_string(),
                reason: format!(
                    "{source}; download it by hand and pass its folder with --data DIR"
                ),
            }),
            Err(other) => Err(other),
            Ok(()) => Ok(target),
        }
    }
}

/// The cache folder: `$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`,
/// else `.kiln-cache`.
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("KILN_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("kiln")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("kiln")))
        .unwrap_or_else(|| PathBuf::from(".kiln-cache"))
}

/// The lower-case hex SHA-256 of a file.
///
/// # Errors
/// [`Error::Io`] naming the file when it cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A one-file HTTP server on 127.0.0.1 that answers at most `max_requests` requests, then
    /// exits; it counts the requests it served.
    fn serve(body: &'static [u8], max_requests: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/data.bin", listener.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max_requests) {
                let Ok(mut stream) = stream else { break };
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(header.as_bytes());
                let _ = stream.write_all(body);
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        (url, served)
    }

    const BODY: &[u8] = b"kiln test payload\n";

    fn digest(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn downloads_verifies_and_caches() {
        let (url, served) = serve(BODY, 2);
        let cache = tempfile::tempdir().unwrap();
        let dl = Downloader::new(cache.path()).quiet(true);
        let path = dl.fetch(&url, "data.bin", &digest(BODY)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), BODY);
        // Second call: served from the cache, no request.
        dl.fetch(&url, "data.bin", &digest(BODY)).unwrap();
        assert_eq!(served.load(Ordering::SeqCst), 1);
        assert_eq!(sha256_file(&path).unwrap(), digest(BODY));
    }

    #[test]
    fn checksum_mismatch_is_an_error_and_leaves_nothing() {
        let (url, _) = serve(BODY, 1);
        let cache = tempfile::tempdir().unwrap();
        let wrong = digest(b"something else");
        let err = Downloader::new(cache.path())
            .quiet(true)
            .fetch(&url, "data.bin", &wrong)
            .unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        assert!(err.to_string().contains(&wrong));
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    }

    #[test]
    fn no_network_says_to_pass_data() {
        // A port that was just free: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cache = tempfile::tempdir().unwrap();
        let err = Downloader::new(cache.path())
            .quiet(true)
            .with_timeout(Duration::from_secs(5))
            .fetch(
                &format!("http://127.0.0.1:{port}/mnist.gz"),
                "mnist.gz",
                &digest(BODY),
            )
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("--data DIR"), "{message}");
        assert!(message.contains("mnist.gz"), "{message}");
    }
}
