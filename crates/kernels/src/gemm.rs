//! The one checked entry to the `gemm` crate (the matrix product flex itself uses).
//!
//! `gemm::gemm` takes raw pointers and strides and trusts them. [`Gemm::run`] takes slices
//! and checks, with arithmetic that cannot wrap, that every element the shape and strides
//! reach lies inside its slice, and that the rows of the output do not overlap (the crate
//! writes rows from several threads). A product that fails a check panics with the shapes:
//! such a call is a bug in the caller, not bad input.

pub use gemm::Parallelism;

/// One past the last index an `[rows, cols]` matrix with strides `[rs, cs]` reaches
/// (0 when it is empty), or `None` when that overflows `usize`.
pub fn extent([rows, cols]: [usize; 2], [rs, cs]: [usize; 2]) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

/// Whether an `[rows, cols]` matrix at strides `[rs, cs]` fits in `len` values.
pub fn fits(len: usize, shape: [usize; 2], strides: [usize; 2]) -> bool {
    extent(shape, strides).is_some_and(|e| e <= len)
}

/// A product `dst (m x n) = [dst +] scale * lhs (m x k) * rhs (k x n)`; see the module
/// documentation.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    m: usize,
    n: usize,
    k: usize,
    scale: f32,
    accumulate: bool,
    parallelism: Parallelism,
}

impl Gemm {
    /// A single-threaded `dst = lhs rhs` of sizes `[m, n, k]`.
    pub fn new([m, n, k]: [usize; 3]) -> Self {
        Gemm {
            m,
            n,
            k,
            scale: 1.0,
            accumulate: false,
            parallelism: Parallelism::None,
        }
    }

    /// Adds the product to `dst`'s values instead of overwriting them.
    pub fn accumulate(mut self, accumulate: bool) -> Self {
        self.accumulate = accumulate;
        self
    }

    /// Multiplies the product by `scale`.
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = scale;
        self
    }

    /// Threads the product (`Parallelism::Rayon(0)`: every rayon thread).
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Runs the product. `dst`'s rows are `dst_rs` apart (columns contiguous); element
    /// `(i, j)` of an operand is at `values[i * strides[0] + j * strides[1]]`.
    ///
    /// # Panics
    /// When an operand is shorter than its shape and strides, or `dst`'s rows overlap.
    pub fn run(
        &self,
        dst: &mut [f32],
        dst_rs: usize,
        lhs: &[f32],
        lhs_strides: [usize; 2],
        rhs: &[f32],
        rhs_strides: [usize; 2],
    ) {
        let Gemm { m, n, k, .. } = *self;
        let shapes = || format!("[{m}, {k}] x [{k}, {n}]");
        assert!(
            fits(dst.len(), [m, n], [dst_rs, 1]),
            "GEMM {}: output of {} values at row stride {dst_rs}",
            shapes(),
            dst.len()
        );
        assert!(
            m <= 1 || n == 0 || dst_rs >= n,
            "GEMM {}: output rows {dst_rs} apart overlap",
            shapes()
        );
        assert!(
            fits(lhs.len(), [m, k], lhs_strides) && fits(rhs.len(), [k, n], rhs_strides),
            "GEMM {}: operands of {} and {} values at strides {lhs_strides:?}, {rhs_strides:?}",
            shapes(),
            lhs.len(),
            rhs.len()
        );
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !self.accumulate {
                dst.chunks_mut(dst_rs.max(n))
                    .take(m)
                    .for_each(|row| row[..n].fill(0.0));
            }
            return;
        }
        let isize_ok = [dst_rs, lhs_strides[0], lhs_strides[1], rhs_strides[0]]
            .into_iter()
            .chain([rhs_strides[1]])
            .all(|s| isize::try_from(s).is_ok());
        assert!(isize_ok, "GEMM {}: a stride past isize::MAX", shapes());
        debug_assert!(extent([m, n], [dst_rs, 1]).is_some_and(|e| e <= dst.len()));
        // SAFETY: the assertions above keep every element the shapes and strides reach
        // inside its slice, with no arithmetic that wraps, and every stride fits `isize`;
        // `dst` is a unique borrow, so it overlaps neither operand, and its rows (which the
        // crate may write from several threads) are at least `n` values apart.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                dst_rs as isize,
                self.accumulate,
                lhs.as_ptr(),
                lhs_strides[1] as isize,
                lhs_strides[0] as isize,
                rhs.as_ptr(),
                rhs_strides[1] as isize,
                rhs_strides[0] as isize,
                1.0f32,
                self.scale,
                false,
                false,
                false,
                self.parallelism,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_never_wraps() {
        assert_eq!(extent([0, 5], [7, 1]), Some(0));
        assert_eq!(extent([3, 4], [10, 1]), Some(24));
        assert_eq!(extent([2, 2], [usize::MAX, 1]), None);
        assert_eq!(extent([usize::MAX, 2], [2, 1]), None);
        assert!(!fits(usize::MAX, [3, 3], [usize::MAX / 2, 1]));
    }

    #[test]
    #[should_panic(expected = "overlap")]
    fn overlapping_output_rows_are_refused() {
        let mut dst = vec![0f32; 8];
        Gemm::new([2, 4, 1]).run(&mut dst, 2, &[1.0, 2.0], [1, 1], &[1.0; 4], [4, 1]);
    }

    #[test]
    #[should_panic(expected = "operands")]
    fn short_operands_are_refused_even_when_empty() {
        let mut dst = vec![0f32; 4];
        Gemm::new([2, 2, 3]).run(&mut dst, 2, &[], [3, 1], &[1.0; 6], [2, 1]);
    }

    #[test]
    #[should_panic(expected = "output")]
    fn a_short_output_is_refused() {
        Gemm::new([2, 2, 1]).run(&mut [], 2, &[1.0; 2], [1, 1], &[1.0; 2], [2, 1]);
    }

    #[test]
    fn scaled_accumulated_and_empty_products() {
        // [[1, 2], [3, 4]] x [[1, 0], [0, 1]] * 2 added to ones.
        let mut dst = vec![1f32; 4];
        Gemm::new([2, 2, 2]).accumulate(true).scale(2.0).run(
            &mut dst,
            2,
            &[1.0, 2.0, 3.0, 4.0],
            [2, 1],
            &[1.0, 0.0, 0.0, 1.0],
            [2, 1],
        );
        assert_eq!(dst, [3.0, 5.0, 7.0, 9.0]);
        // k = 0: zeros, or dst left alone when accumulating.
        Gemm::new([2, 2, 0])
            .accumulate(true)
            .run(&mut dst, 2, &[], [0, 1], &[], [2, 1]);
        assert_eq!(dst, [3.0, 5.0, 7.0, 9.0]);
        Gemm::new([2, 2, 0]).run(&mut dst, 2, &[], [0, 1], &[], [2, 1]);
        assert_eq!(dst, [0.0; 4]);
        // m = 0 writes nothing.
        Gemm::new([0, 2, 2]).run(&mut [], 2, &[], [2, 1], &[1.0; 4], [2, 1]);
    }
}
