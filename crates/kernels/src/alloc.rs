//! glibc's malloc thresholds for CPU training.
//!
//! A CPU training step allocates and frees tensors of 0.1-10 MB. With glibc's defaults each
//! is a fresh `mmap` (or the heap is trimmed after it is freed), so every step page-faults its
//! buffers in again and unmaps them with a TLB shootdown to the other cores: on the 2-core
//! benchmark machine a LeNet-5 step took 8.5 ms instead of 4.1 in about half the runs.

/// Raises glibc's mmap threshold to 32 MB (its maximum) and the trim threshold to 256 MB, as
/// `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456`
/// does; once per process, and not at all when `KILN_MALLOC_DEFAULTS` is set. Does nothing
/// off glibc.
pub fn tune_malloc_for_training() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if std::env::var_os("KILN_MALLOC_DEFAULTS").is_some() {
                return;
            }
            const MMAP: libc::c_int = 32 << 20;
            const TRIM: libc::c_int = 256 << 20;
            const { assert!(MMAP > 0 && TRIM >= MMAP) };
            // SAFETY: `mallopt` only sets two of glibc's allocation thresholds, which takes
            // no pointer and is thread-safe; both values are in glibc's range (it ignores
            // out-of-range ones and returns 0).
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM);
            }
        });
    }
}
