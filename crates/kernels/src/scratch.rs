//! The one pool of work buffers the kernels share.
//!
//! A fresh zeroed buffer costs a `memset` on one thread (or page faults) of megabytes per
//! call, where every element is about to be written. Kernels [`take`] their large buffers
//! from this pool and [`give`] them back when done; the LSTM's saved activations go back
//! when the autodiff graph drops them.

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
}
