//! `data::download` against a file server on 127.0.0.1 that this test starts: it serves the
//! real MNIST files from `$KILN_DATA/mnist`, so the published checksums are verified end to end.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use kiln_core::data::Downloader;
use kiln_vision::data::{MnistDataset, MnistKind, Split, download};

/// Serves files of `root` by name, `max` requests at most, then stops.
fn serve(root: PathBuf, max: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max) {
            let Ok(mut stream) = stream else { break };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let name = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            match std::fs::read(root.join(&name)) {
                Ok(body) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
                Err(_) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    url
}

#[test]
#[ignore = "needs KILN_DATA"]
fn downloads_and_verifies_the_real_files() {
    let data = PathBuf::from(std::env::var_os("KILN_DATA").expect("KILN_DATA")).join("mnist");
    let url = serve(data, 8);
    let cache = tempfile::tempdir().unwrap();
    let downloader = Downloader::new(cache.path()).quiet(true);
    let dir = download(MnistKind::Digits, &downloader, Some(&url)).unwrap();
    assert_eq!(dir, cache.path().join("mnist"));
    assert_eq!(
        MnistDataset::load(&dir, Split::Test)
            .unwrap()
            .labels()
            .len(),
        10_000
    );
    // Everything is cached now: no request is needed (the server would refuse nothing, but
    // a wrong URL proves the cache answers).
    download(
        MnistKind::Digits,
        &downloader,
        Some("http://127.0.0.1:9/none"),
    )
    .unwrap();
    // The digits' checksums do not fit Fashion-MNIST's files: a wrong data set is refused.
    let err = download(MnistKind::Fashion, &downloader, Some(&url)).unwrap_err();
    assert!(
        err.to_string().contains("checksum") || err.to_string().contains("sha256"),
        "{err}"
    );
}
