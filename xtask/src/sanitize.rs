//! `cargo xtask asan`: kiln-kernels' tests (its unit tests and `tests/kernels.rs`, the
//! proptests on every tile remainder) under AddressSanitizer, with the nightly toolchain.
//!
//! The crate is built without its `flex` feature, so no Burn is compiled with the sanitizer
//! (the Burn glue has no `unsafe`; its tests run in the ordinary suite). The tests run twice:
//! at the CPU's widest vector level (the AVX-512 microkernels on this machine kind) and with
//! `KILN_SIMD=baseline` (the row-major fallbacks through the `gemm` crate). Miri cannot be
//! installed here; AddressSanitizer catches the out-of-bounds reads and writes that matter
//! for these kernels, and the debug assertions (on in this build) check each `unsafe`
//! block's stated invariant.

use std::process::Command;

use crate::run;

/// The target given explicitly, so that the sanitizer flags reach only the test crates and
/// not the build scripts and proc macros (the documented way to use `-Zsanitizer`).
const TARGET: &str = "x86_64-unknown-linux-gnu";

pub(crate) fn asan() -> Result<(), String> {
    if std::env::consts::ARCH != "x86_64" || std::env::consts::OS != "linux" {
        eprintln!("\n==> asan skipped: it runs on x86-64 Linux only");
        return Ok(());
    }
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly {
        return Err(
            "asan needs the nightly toolchain (`rustup toolchain install nightly`); \
             this machine kind ships it"
                .into(),
        );
    }
    for simd in [None, Some("baseline")] {
        // Not through `crate::cargo()`: `CARGO` names the stable toolchain's cargo, and
        // `+nightly` is a rustup proxy argument.
        let mut c = Command::new("cargo");
        c.args([
            "+nightly",
            "test",
            "-p",
            "kiln-kernels",
            "--no-default-features",
            "--target",
            TARGET,
        ])
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("RUSTDOCFLAGS", "-Zsanitizer=address")
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
        if let Some(level) = simd {
            c.env("KILN_SIMD", level);
        }
        run(c)?;
    }
    Ok(())
}
