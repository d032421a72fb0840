//! The one CPU-feature probe of Kiln's kernels, and the dispatch that compiles a loop for the
//! widest vector instructions the CPU has.
//!
//! Kiln is built for baseline x86-64 (128-bit vectors, no FMA). Kernels that want wider
//! vectors ask [`level`] once per call and run code compiled with `#[target_feature]` for
//! that level: [`with_simd`] for a closure, `simd_dispatch!` for a
//! named function (inside this crate), or their own intrinsics when [`level`] is [`Simd::Avx512`].
//!
//! Each level names every feature its code is compiled with, and [`level`] tests all of
//! them: the AVX-512 code also uses FMA, so [`Simd::Avx512`] needs both `avx512f` and `fma`.

use std::sync::OnceLock;

/// The vector instruction sets a kernel may use on this CPU, widest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512F and FMA (x86-64).
    Avx512,
    /// AVX2 and FMA (x86-64).
    Avx2,
    /// The target's baseline (SSE2 on x86-64).
    Baseline,
}

/// The widest level this CPU supports, probed once per process.
///
/// `KILN_SIMD=avx2` or `KILN_SIMD=baseline` caps it (to compare or test the narrower paths);
/// it never raises it past what the CPU has.
pub fn level() -> Simd {
    static LEVEL: OnceLock<Simd> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("KILN_SIMD").as_deref() {
            Ok("baseline") => Simd::Baseline,
            Ok("avx2") => Simd::Avx2,
            _ => Simd::Avx512,
        };
        let detected = detect();
        // Variants are ordered widest first: the narrower of the two is the larger.
        if (cap as u8) > (detected as u8) {
            cap
        } else {
            detected
        }
    })
}

/// Whether this CPU has every feature the [`Simd::Avx512`] code uses.
pub fn has_avx512() -> bool {
    level() == Simd::Avx512
}

fn detect() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        let fma = std::arch::is_x86_feature_detected!("fma");
        if std::arch::is_x86_feature_detected!("avx512f") && fma {
            return Simd::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && fma {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// Runs `f` compiled for the widest vector instructions the CPU has ([`level`]). The loops
/// in `f` get the wider instructions only when `f` is inlined into the wrappers below (make
/// its body an `#[inline(always)]` function).
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        Simd::Avx512 => {
            debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
            // SAFETY: `level` found AVX-512F and FMA on this CPU, the features `on_avx512`
            // is compiled with.
            return unsafe { on_avx512(f) };
        }
        Simd::Avx2 => {
            debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
            // SAFETY: `level` found AVX2 and FMA on this CPU.
            return unsafe { on_avx2(f) };
        }
        Simd::Baseline => {}
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn on_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn on_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` function of the same
/// arguments) compiled for the widest vector instructions the CPU has ([`level`]): `$body`
/// is inlined into one copy per level, each compiled with that level's features.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis $name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,fma")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match $crate::cpu::level() {
                    $crate::cpu::Simd::Avx512 => {
                        debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
                        // SAFETY: `level` found AVX-512F and FMA on this CPU, the features
                        // `avx512` is compiled with.
                        return unsafe { avx512($($arg),*) };
                    }
                    $crate::cpu::Simd::Avx2 => {
                        debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
                        // SAFETY: `level` found AVX2 and FMA on this CPU.
                        return unsafe { avx2($($arg),*) };
                    }
                    $crate::cpu::Simd::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_never_wider_than_the_cpu() {
        let level = level();
        #[cfg(target_arch = "x86_64")]
        {
            if level == Simd::Avx512 {
                assert!(std::arch::is_x86_feature_detected!("avx512f"));
                assert!(std::arch::is_x86_feature_detected!("fma"));
            }
            if level == Simd::Avx2 {
                assert!(std::arch::is_x86_feature_detected!("avx2"));
            }
        }
        assert_eq!(has_avx512(), level == Simd::Avx512);
        assert_eq!(with_simd(|| 41 + 1), 42);
    }
}
