//! The work buffers the kernels reuse, in two forms:
//!
//! - a shared pool: [`take`] a buffer of some length, [`give`] it back when done (the LSTM's
//!   buffers, and its saved activations when the autodiff graph drops them);
//! - per-thread sets of named buffers ([`with_local`]): a kernel that runs many small blocks
//!   on each thread (the convolution, 8 images a block) keeps one set per thread, each buffer
//!   grown to the largest size that thread needed, with no lock and no sizes competing.
//!
//! A fresh zeroed buffer costs a `memset` on one thread (or page faults) of megabytes per
//! call, where every element is about to be written. (With the convolution's buffers in the
//! shared pool instead, LeNet-5's two convolutions took each other's buffers and zeroed new
//! ones: its training step was 7% slower.)

use std::any::Any;
use std::cell::RefCell;
use std::sync::Mutex;

/// Buffers given back, waiting for reuse.
static SPARE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// At most this many bytes are kept.
const SPARE_BYTES: usize = 256 << 20;
/// Smaller buffers are not kept (allocating them is cheap).
const MIN_KEPT: usize = 1 << 14;

/// A buffer of `len` values whose contents are those of an earlier use (any f32s, or
/// zeros): every element must be written before it is read.
pub fn take(len: usize) -> Vec<f32> {
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    let fits = spare
        .iter()
        .position(|v| v.capacity() >= len && v.capacity() <= 2 * len);
    let Some(i) = fits else {
        drop(spare);
        return vec![0f32; len];
    };
    let mut v = spare.swap_remove(i);
    drop(spare);
    // Only a part beyond the earlier length is zeroed.
    v.resize(len, 0.0);
    v
}

/// Returns a buffer (of [`take`] or any other) for reuse.
pub fn give(v: Vec<f32>) {
    if v.capacity() < MIN_KEPT {
        return;
    }
    let mut spare = SPARE.lock().unwrap_or_else(|e| e.into_inner());
    let held: usize = spare.iter().map(|v| v.capacity() * 4).sum();
    if held + v.capacity() * 4 <= SPARE_BYTES {
        spare.push(v);
    }
}

/// `v`'s first `n` values, after replacing `v` by a pool buffer when it is shorter
/// (contents unspecified).
pub fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        give(std::mem::replace(v, take(n)));
    }
    &mut v[..n]
}

thread_local! {
    /// This thread's sets of named buffers, one per type ([`with_local`]).
    static LOCAL: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's `S` (a set of buffers a kernel names in a struct), made by
/// `Default` the first time and kept for the thread's next call. A call nested inside
/// another for the same `S` gets a fresh one.
pub fn with_local<S: Default + 'static, R>(f: impl FnOnce(&mut S) -> R) -> R {
    let taken = LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let i = local.iter().position(|s| s.is::<S>())?;
        local.swap_remove(i).downcast::<S>().ok()
    });
    let mut set = taken.unwrap_or_default();
    let out = f(&mut set);
    LOCAL.with(|local| local.borrow_mut().push(set));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_length_asked_for() {
        let mut v = take(MIN_KEPT * 2);
        v.iter_mut().for_each(|x| *x = 1.0);
        give(v);
        for len in [0, 1, MIN_KEPT, MIN_KEPT * 3 / 2, MIN_KEPT * 4] {
            let v = take(len);
            assert_eq!(v.len(), len);
            give(v);
        }
        let mut held = Vec::new();
        assert_eq!(grow(&mut held, 10).len(), 10);
        assert_eq!(grow(&mut held, 5).len(), 5);
        assert!(held.len() >= 10);
    }

    #[test]
    fn a_threads_set_is_kept_between_calls_and_fresh_when_nested() {
        #[derive(Default)]
        struct Set(Vec<f32>);
        with_local(|s: &mut Set| s.0 = vec![1.0; 8]);
        let (outer, inner) = with_local(|s: &mut Set| {
            let inner = with_local(|t: &mut Set| t.0.len());
            (s.0.len(), inner)
        });
        assert_eq!((outer, inner), (8, 0));
        // Another thread starts with its own.
        let other = std::thread::spawn(|| with_local(|s: &mut Set| s.0.len()));
        assert_eq!(other.join().unwrap(), 0);
    }
}
