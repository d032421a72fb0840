//! Backend conformance: one test body, run on every compiled-in backend.
//!
//! Kiln promises that swapping the backend feature (`flex`, `ndarray`, `wgpu`, `cuda`) changes
//! speed, not results. Each crate keeps a `tests/conformance.rs` whose tests are written once
//! with [`backend_test!`](crate::backend_test) and expand to one `#[test]` per compiled-in
//! backend (`<name>::flex`, `<name>::ndarray`, `<name>::wgpu`, `<name>::cuda`), in the spirit of
//! candle's `test_device!`. A body usually calls:
//! - [`check_parity`]: the model's forward output and the gradients of every parameter on the
//!   tested device equal those on the reference CPU backend ([`reference_device`]) within a
//!   [`Tolerance`];
//! - [`check_training`]: a few Adam steps on the tested device lower the loss.
//!
//! `cargo test --features wgpu -- ::wgpu` runs the wgpu half of every suite; `cargo xtask ci`
//! runs them all (wgpu on Mesa's software Vulkan device, lavapipe, in CI) and
//! `cargo xtask gpu-check` runs them on CUDA and wgpu on a GPU machine.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Gradients, Tensor, TensorData};

use kiln_core::backend::Backend;

#[doc(hidden)]
pub use burn as __burn;

/// How far a backend's numbers may be from the reference CPU backend's: an element passes when
/// `|actual - expected| <= abs + rel * |expected|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f32,
    /// Relative part.
    pub rel: f32,
}

impl Tolerance {
    /// The suites' default, `1e-4 + 1e-4 * |expected|`: float32 kernels that sum in a different
    /// order (GPU reductions, tiled matrix products) stay well inside it, a wrong kernel does
    /// not.
    pub const DEFAULT: Tolerance = Tolerance {
        abs: 1e-4,
        rel: 1e-4,
    };

    /// A tolerance with the given absolute and relative parts.
    pub const fn new(abs: f32, rel: f32) -> Self {
        Self { abs, rel }
    }
}

impl Default for Tolerance {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The device every backend is compared with: the default CPU backend of this build.
pub fn reference_device() -> Device {
    Backend::default_cpu()
        .expect("the conformance suite needs a CPU backend (feature flex or ndarray)")
        .device()
        .expect("a compiled-in CPU backend has a device")
}

/// The largest absolute difference between two tensors' values, and the largest "excess"
/// `|a - e| - (abs + rel |e|)` with the element where it occurs (`None` when every element is
/// within tolerance).
fn compare(actual: &[f32], expected: &[f32], tol: Tolerance) -> (f32, Option<(usize, f32, f32)>) {
    let mut max_abs = 0.0f32;
    let mut worst: Option<(usize, f32, f32, f32)> = None;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let diff = (a - e).abs();
        if diff.is_nan() || !a.is_finite() && a != e {
            return (f32::NAN, Some((i, a, e)));
        }
        max_abs = max_abs.max(diff);
        let excess = diff - (tol.abs + tol.rel * e.abs());
        if excess > 0.0 && worst.is_none_or(|w| excess > w.3) {
            worst = Some((i, a, e, excess));
        }
    }
    (max_abs, worst.map(|(i, a, e, _)| (i, a, e)))
}

/// Asserts that `actual` equals `expected` (same shape, values within `tol`), naming `what`,
/// the first worst element and the largest difference otherwise. Returns the largest absolute
/// difference.
pub fn assert_close(what: &str, actual: TensorData, expected: TensorData, tol: Tolerance) -> f32 {
    assert_eq!(
        actual.shape(),
        expected.shape(),
        "{what}: shape {:?} on the tested backend, {:?} on the reference",
        actual.shape(),
        expected.shape()
    );
    let actual = actual
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data");
    let expected = expected
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data");
    let (max_abs, worst) = compare(&actual, &expected, tol);
    if let Some((i, a, e)) = worst {
        panic!(
            "{what}: element {i} is {a} on the tested backend and {e} on the reference \
             (largest difference {max_abs:e}, tolerance {} + {} * |expected|)",
            tol.abs, tol.rel
        );
    }
    max_abs
}

/// A copy of `data` in memory of its own.
///
/// On wgpu (Burn 0.22.1, seen on lavapipe) the bytes `to_data()` returns can share the
/// tensor's buffer, and an operation that later reuses that buffer in place (`output * w` when
/// `output` is consumed) changes data already read. Copying at once makes a read final.
pub fn owned(data: TensorData) -> TensorData {
    let shape = data.shape().clone();
    let values: Vec<f32> = data
        .convert::<f32>()
        .as_slice::<f32>()
        .expect("float data")
        .to_vec();
    TensorData::new(values, shape)
}

/// The largest differences a [`check_parity`] found.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Parity {
    /// Largest absolute difference of the forward output.
    pub forward: f32,
    /// Largest absolute difference over every parameter's gradient.
    pub gradient: f32,
    /// Number of parameter gradients compared.
    pub parameters: usize,
}

/// Every float parameter's gradient, in the module's visiting order (`None` for a parameter
/// that got no gradient).
pub fn parameter_gradients<M: Module>(model: &M, grads: &Gradients) -> Vec<Option<TensorData>> {
    struct Collect<'a> {
        grads: &'a Gradients,
        out: Vec<Option<TensorData>>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out
                .push(param.val().grad(self.grads).map(|g| owned(g.into_data())));
        }
    }
    let mut collect = Collect {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut collect);
    collect.out
}

/// Fixed, uneven weights (so that no gradient cancels by symmetry) for the scalar loss
/// `sum(output * weights)` that [`check_parity`] differentiates.
fn loss_weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * 0.7 + 0.3).sin()).collect()
}

/// Checks `model` on `device` against the reference CPU backend: the output of `forward` and
/// the gradient of every parameter of `sum(output * w)` (fixed uneven weights `w`) must agree
/// within `tol`. `forward` builds its inputs on the device it is given, from host data.
///
/// `model` may live on any device; it is forked to the reference device and to `device`, with
/// autodiff. Panics (it is a test assertion) naming the output or parameter that differs.
pub fn check_parity<M, const D: usize>(
    what: &str,
    model: &M,
    device: &Device,
    tol: Tolerance,
    forward: impl Fn(&M, &Device) -> Tensor<D>,
) -> Parity
where
    M: Module,
{
    let run = |device: &Device| {
        let device = device.clone().autodiff();
        let model = model.clone().train().fork(&device);
        let output = forward(&model, &device);
        let data = owned(output.to_data());
        let n = data.num_elements();
        let weights = Tensor::<1>::from_data(TensorData::new(loss_weights(n), [n]), &device)
            .reshape(output.shape());
        let grads = (output * weights).sum().backward();
        (data, parameter_gradients(&model, &grads))
    };
    let (expected, expected_grads) = run(&reference_device());
    let (actual, actual_grads) = run(device);
    let forward = assert_close(&format!("{what}: forward output"), actual, expected, tol);
    assert_eq!(
        actual_grads.len(),
        expected_grads.len(),
        "{what}: parameter count differs"
    );
    let mut gradient = 0.0f32;
    let mut parameters = 0;
    for (i, (a, e)) in actual_grads.into_iter().zip(expected_grads).enumerate() {
        match (a, e) {
            (Some(a), Some(e)) => {
                let diff = assert_close(&format!("{what}: gradient of parameter {i}"), a, e, tol);
                gradient = gradient.max(diff);
                parameters += 1;
            }
            (None, None) => {}
            (a, _) => panic!(
                "{what}: parameter {i} has a gradient on {} backend only",
                if a.is_some() {
                    "the tested"
                } else {
                    "the reference"
                }
            ),
        }
    }
    assert!(parameters > 0, "{what}: no parameter received a gradient");
    Parity {
        forward,
        gradient,
        parameters,
    }
}

/// Runs `steps` Adam updates (learning rate `lr`) of `model` on `device`, minimising `loss`,
/// and asserts the loss went down. Returns the first and last loss.
pub fn check_training<M: Module>(
    what: &str,
    model: &M,
    device: &Device,
    steps: usize,
    lr: f64,
    loss: impl Fn(&M, &Device) -> Tensor<1>,
) -> (f64, f64) {
    let device = device.clone().autodiff();
    let mut model = model.clone().train().fork(&device);
    let mut optim = kiln_core::optim::OptimizerConfig::adam().init();
    let mut losses = Vec::with_capacity(steps + 1);
    for _ in 0..steps {
        let value = loss(&model, &device);
        losses.push(value.clone().into_scalar::<f64>());
        let grads = burn::optim::GradientsParams::from_grads(value.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    losses.push(loss(&model, &device).into_scalar::<f64>());
    let (first, last) = (losses[0], *losses.last().expect("at least one loss"));
    assert!(
        last.is_finite() && last < first,
        "{what}: {steps} Adam steps did not lower the loss: {losses:?}"
    );
    (first, last)
}

/// Defines a test body once and expands it to one `#[test]` per compiled-in backend, in a
/// module named after the test: `name::flex`, `name::ndarray`, `name::wgpu`, `name::cuda`. The
/// backend features are those of the crate that uses the macro (every Kiln crate has the four).
///
/// ```ignore
/// kiln_core::backend_test! {
///     /// Linear layers agree with the CPU reference.
///     fn linear_parity(device) {
///         let model = LinearConfig::new(3, 2).init(device);
///         check_parity("linear", &model, device, Tolerance::DEFAULT, |m, d| m.forward(input(d)));
///     }
/// }
/// ```
#[macro_export]
macro_rules! backend_test {
    ($(#[$meta:meta])* fn $name:ident($device:ident) $body:block) => {
        $(#[$meta])*
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(dead_code)]
            fn body($device: &$crate::conformance::__burn::tensor::Device) $body

            #[allow(dead_code)]
            fn on(backend: $crate::__core::Backend) {
                let device = backend
                    .device()
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    $crate::__core::Backend::of(&device),
                    Some(backend),
                    "{}",
                    $crate::__core::backend::describe(&device)
                );
                body(&device);
            }

            #[cfg(feature = "flex")]
            #[test]
            fn flex() {
                on($crate::__core::Backend::Flex);
            }

            #[cfg(feature = "ndarray")]
            #[test]
            fn ndarray() {
                on($crate::__core::Backend::NdArray);
            }

            #[cfg(feature = "wgpu")]
            #[test]
            fn wgpu() {
                on($crate::__core::Backend::Wgpu);
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                on($crate::__core::Backend::Cuda);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_finds_the_worst_element() {
        let tol = Tolerance::new(1e-3, 0.0);
        let (max, worst) = compare(&[1.0, 2.0], &[1.0, 2.0005], tol);
        assert!((max - 0.0005).abs() < 1e-6 && worst.is_none());
        let (_, worst) = compare(&[1.0, 2.0, 3.0], &[1.002, 2.0, 3.01], tol);
        assert_eq!(worst, Some((2, 3.0, 3.01)));
        // Relative part: 1% of 100 covers a difference of 0.5.
        assert!(
            compare(&[100.5], &[100.0], Tolerance::new(0.0, 0.01))
                .1
                .is_none()
        );
        assert!(compare(&[f32::NAN], &[1.0], tol).1.is_some());
        assert!(compare(&[f32::INFINITY], &[1.0], tol).1.is_some());
    }

    #[test]
    #[should_panic(expected = "element 1 is 2.5")]
    fn assert_close_names_the_element() {
        let a = TensorData::new(vec![1.0f32, 2.5], [2]);
        let e = TensorData::new(vec![1.0f32, 2.0], [2]);
        assert_close("t", a, e, Tolerance::DEFAULT);
    }
}
