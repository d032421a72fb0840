//! Backend selection: turns a name given on a command line (`cpu`, `flex`, `ndarray`, `wgpu`,
//! `cuda`) into a Burn [`Device`], and reports which backends this build was compiled with.
//!
//! Backends are cargo features of every Kiln crate (`flex`, `ndarray`, `wgpu`, `cuda`).
//! `cpu` is the default CPU backend: `flex` when compiled in (it trains a small CNN and an LSTM
//! faster than `ndarray`, see `docs/benchmarks.md`), otherwise `ndarray`.
//!
//! The device returned here is the plain (inference) device; the [`Trainer`](crate::Trainer)
//! enables autodiff on it itself.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// A Burn backend Kiln knows how to select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (`flex` feature), the default CPU backend.
    Flex,
    /// Burn's deprecated ndarray CPU backend (`ndarray` feature).
    NdArray,
    /// wgpu: Vulkan, Metal or DX12 through the wgpu crate (`wgpu` feature).
    Wgpu,
    /// NVIDIA GPUs through CUDA (`cuda` feature).
    Cuda,
}

impl Backend {
    /// Every backend Kiln knows, compiled in or not.
    pub const ALL: [Backend; 4] = [
        Backend::Flex,
        Backend::NdArray,
        Backend::Wgpu,
        Backend::Cuda,
    ];

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::NdArray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this backend's cargo feature is enabled in this build.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::NdArray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether this is a CPU backend.
    pub fn is_cpu(self) -> bool {
        matches!(self, Backend::Flex | Backend::NdArray)
    }

    /// The default CPU backend of this build (`flex` if compiled in, else `ndarray`), if any.
    pub fn default_cpu() -> Option<Backend> {
        [Backend::Flex, Backend::NdArray]
            .into_iter()
            .find(|b| b.is_compiled())
    }

    /// The backend a device belongs to (an autodiff device counts as its inner device's).
    ///
    /// ```
    /// use kiln_core::Backend;
    /// let device = kiln_core::backend::device("cpu").unwrap();
    /// assert_eq!(Backend::of(&device.autodiff()), Backend::default_cpu());
    /// ```
    pub fn of(device: &Device) -> Option<Backend> {
        // Burn 0.22 names the backend in the device's debug form (`Device<Flex(Cpu)>`,
        // `Device<Cube(Wgpu(..))>`, `Device<Autodiff { device: .. }>`); its dispatch enum is
        // not part of the public API.
        let text = format!("{device:?}");
        [
            ("Flex(", Backend::Flex),
            ("NdArray(", Backend::NdArray),
            ("Wgpu(", Backend::Wgpu),
            ("Cuda(", Backend::Cuda),
        ]
        .into_iter()
        .find(|(name, _)| text.contains(name))
        .map(|(_, backend)| backend)
    }

    /// A device of this backend (the first GPU for `wgpu` and `cuda`).
    ///
    /// Fails with [`Error::BackendUnavailable`] when the backend's feature is not enabled.
    ///
    /// For a CPU backend this also calls [`tune_cpu_allocator`].
    ///
    /// # Errors
    /// [`Error::BackendUnavailable`] when the backend's feature is not enabled in this build.
    pub fn device(self) -> Result<Device> {
        if !self.is_compiled() {
            return Err(unavailable(self.name()));
        }
        if self.is_cpu() {
            tune_cpu_allocator();
        }
        Ok(self.device_unchecked())
    }

    #[allow(unreachable_code)]
    fn device_unchecked(self) -> Device {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // Burn 0.22 deprecates ndarray; the user asked for it by name.
            Backend::NdArray => Device::ndarray(),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Device::cuda(0),
            #[allow(unreachable_patterns)]
            other => unreachable!("backend {other} is not compiled in"),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    /// Parses `flex`, `ndarray`, `wgpu`, `cuda`, or `cpu` (the default CPU backend).
    /// Only the backend's name is checked here; [`Backend::device`] checks it is compiled in.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Backend::default_cpu().ok_or_else(|| unavailable("cpu")),
            "flex" => Ok(Backend::Flex),
            "ndarray" => Ok(Backend::NdArray),
            "wgpu" | "gpu" => Ok(Backend::Wgpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(unavailable(s)),
        }
    }
}

/// Keeps freed tensor buffers in the process heap (glibc on Linux; elsewhere a no-op), once
/// per process, unless `KILN_MALLOC_DEFAULTS` is set.
///
/// A CPU training step allocates and frees tensors of 0.1-10 MB. With glibc's defaults each is
/// a fresh `mmap` (or the heap is trimmed after it is freed), so every step page-faults its
/// buffers in again and unmaps them with a TLB shootdown to the other cores: on the 2-core
/// benchmark machine a LeNet-5 step took 8.5 ms instead of 4.1 in about half the runs. This
/// raises the mmap threshold to 32 MB (glibc's maximum) and the trim threshold to 256 MB, which
/// is what `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456`
/// does. [`Backend::device`] calls it for CPU backends; call it yourself when you build a CPU
/// device without Kiln.
pub fn tune_cpu_allocator() {
    kiln_kernels::alloc::tune_malloc_for_training();
}

/// The backends compiled into this build, default CPU backend first.
pub fn compiled() -> Vec<Backend> {
    Backend::ALL
        .into_iter()
        .filter(|b| b.is_compiled())
        .collect()
}

/// One line naming a device for logs and reports: its backend and Burn's description of it,
/// e.g. `flex: Device<Flex(Cpu)>`, `wgpu: Device<Cube(Wgpu(WgpuDevice { kind: DefaultDevice,
/// .. }))>`.
pub fn describe(device: &Device) -> String {
    let backend = Backend::of(device).map_or("unknown backend", Backend::name);
    format!("{backend}: {device:?}")
}

/// Turns a backend name (`cpu`, `flex`, `ndarray`, `wgpu`, `cuda`) into a device.
///
/// The error for an unknown or missing backend lists the backends this build has.
///
/// ```
/// let device = kiln_core::backend::device("cpu").unwrap();
/// # let _ = device;
/// let err = kiln_core::backend::device("tpu").unwrap_err();
/// assert!(err.to_string().contains("compiled-in backends"));
/// ```
///
/// # Errors
/// [`Error::BackendUnavailable`] for an unknown name (listing the compiled-in backends) or a
/// backend this build lacks.
pub fn device(name: &str) -> Result<Device> {
    name.parse::<Backend>()?.device()
}

fn unavailable(name: &str) -> Error {
    let available = compiled()
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ");
    Error::BackendUnavailable {
        name: name.to_string(),
        available: if available.is_empty() {
            "none (enable one of the features flex, ndarray, wgpu, cuda)".to_string()
        } else {
            format!("cpu, {available}")
        },
    }
}

/// Runs `f` on a worker thread of the rayon pool that Kiln's and flex's CPU kernels use, and
/// returns its result.
///
/// A training step on a CPU backend alternates between serial framework work and parallel
/// kernels. Called from the main thread, every parallel region is handed over to the pool
/// and wakes all its workers, which sleep again during the serial parts; run from a worker,
/// a region wakes only the others and the serial parts run on a thread that is already
/// awake. On the LSTM benchmark (2 cores) this made the step 6% faster (32.5 against 34.5 ms,
/// median of five alternating runs). [`crate::train::Trainer`] trains this way; call it
/// around your own loop otherwise.
pub fn on_cpu_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::join(f, || ()).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_resolves_to_a_compiled_cpu_backend() {
        let backend: Backend = "cpu".parse().unwrap();
        assert!(backend.is_cpu() && backend.is_compiled());
        assert_eq!(compiled()[0], backend);
        device("CPU").unwrap();
    }

    #[test]
    fn unknown_backend_lists_what_is_compiled() {
        let message = device("tpu").unwrap_err().to_string();
        assert!(message.contains("`tpu`"), "{message}");
        for backend in compiled() {
            assert!(message.contains(backend.name()), "{message}");
        }
    }

    #[test]
    fn known_but_missing_backend_is_an_error_not_a_panic() {
        for backend in Backend::ALL {
            let result = backend.device();
            assert_eq!(result.is_ok(), backend.is_compiled(), "{backend}");
        }
    }

    #[test]
    fn every_compiled_backend_is_recognised_from_its_device() {
        for backend in compiled().into_iter().filter(|b| b.is_cpu()) {
            let device = backend.device().unwrap();
            assert_eq!(Backend::of(&device), Some(backend));
            assert_eq!(Backend::of(&device.clone().autodiff()), Some(backend));
            assert!(
                describe(&device).starts_with(backend.name()),
                "{}",
                describe(&device)
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for backend in Backend::ALL {
            assert_eq!(backend.name().parse::<Backend>().unwrap(), backend);
        }
    }
}
