//! Scalars in `#[jagged_kernel]` bodies take the dtype of the tensor they
//! meet, whatever their Rust type (`x * 0.5` and `x * 0.5f32` are both bf16
//! constants for a bf16 `x`), and `dot_acc::<U>` names the accumulator dtype
//! of a contraction.

use std::sync::Arc;

use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, Graph, Node};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, check_against_reference};

/// Unsuffixed, `f32`- and `f64`-suffixed and integer literals in every
/// place a scalar goes: operators on either side, `max`, `select`, `powf`,
/// comparisons, padding and masking values; some followed by a method call
/// (which rustc must type before the literal's own type is known).
#[jagged_kernel(outputs(y, padded, masked))]
fn literals<T: Float, D>(
    x: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> (Jagged<T, (D,)>, Padded<T, (D,)>, Jagged<T, ()>) {
    let a = x * 0.5 + 0.5f32 * x - 0.25f64 + 2 * x / 3;
    let b = select(x.gt(0.0), x, 0.1).exp() + x.max(-0.5).powf(2.0);
    let c = select(x.le(1), 0.0, x).abs();
    let s = x.dot(x);
    (
        a + b - c,
        x.to_padded_or(-1.0),
        s.causal_or(f32::NEG_INFINITY)
            .softmax_over_keys()
            .sum_over_keys()
            .cast::<T>(),
    )
}

/// Integer literals meet integer tensors.
#[jagged_kernel(outputs(y, big))]
fn integer_literals(
    x: Jagged<i32, ()>,
    #[attr] max_len: usize,
) -> (Jagged<i32, ()>, Jagged<bool, ()>) {
    (x * 2 + 1 - max_len, x.gt(3))
}

/// Attention whose scores are accumulated in f64 (f32 inputs), then
/// rounded back.
#[jagged_kernel(outputs(out))]
fn f64_scores<H, D>(
    q: Jagged<f32, (H, D)>,
    k: Jagged<f32, (H, D)>,
    v: Jagged<f32, (H, D)>,
    #[attr] max_len: usize,
) -> Jagged<f32, (H, D)> {
    let p = q.dot_acc::<f64>(k).softmax_over_keys();
    p.dot_acc::<f64>(v.cast::<f64>()).cast::<f32>()
}

/// `dot` and `dot_acc` with the default accumulator are one graph.
#[jagged_kernel(name = "scores", outputs(out))]
fn scores_dot<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    #[attr] max_len: usize,
) -> Jagged<T, (H,)> {
    q.dot(k).sum_over_keys()
}

/// See [`scores_dot`].
#[jagged_kernel(name = "scores", outputs(out))]
fn scores_dot_acc<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    #[attr] max_len: usize,
) -> Jagged<T, (H,)> {
    q.dot_acc::<f32>(k).sum_over_keys().cast::<T>()
}

/// Accumulation in the input dtype itself, named by the dtype parameter.
#[jagged_kernel(outputs(out))]
fn native_acc<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, D)>,
    #[attr] max_len: usize,
) -> Jagged<T, (H, D)> {
    q.dot_acc::<T>(k).causal().dot(v)
}

/// A `T` tensor meeting the scores (in `T`'s accumulator dtype) is
/// converted to it; a bf16 tensor meets an f32 one the same way, and the
/// f32 result is rounded to the declared bf16 output.
#[jagged_kernel(outputs(mass, product))]
fn promotion<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    bias: Jagged<T, (H,)>,
    x: Jagged<bf16, (D,)>,
    y: Jagged<f32, (D,)>,
    #[attr] max_len: usize,
) -> (Jagged<T, (H,)>, Jagged<bf16, (D,)>) {
    ((q.dot(k) + bias).sum_over_keys(), x * y)
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

fn check(graph: &Graph, max_len: usize, attrs: &[(&str, AttrValue)], seed: u64) {
    let mut rt = runtime();
    let cases = check_against_reference(graph, &mut rt, max_len, attrs, &mut Rng::new(seed))
        .unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()));
    assert!(cases >= 5);
}

/// The dtypes of the graph's constants.
fn const_dtypes(g: &Graph) -> Vec<DType> {
    g.nodes()
        .iter()
        .filter_map(|(_, n)| match n {
            Node::Const { dtype, .. } => Some(*dtype),
            _ => None,
        })
        .collect()
}

#[test]
fn every_literal_takes_the_dtype_of_the_tensor_it_meets() {
    let g = literals::graph(DType::BF16, 4, DType::I32).expect("graph");
    let dtypes = const_dtypes(&g);
    // All but the mask's fill value (which meets the f32 scores) are bf16.
    assert_eq!(dtypes.len(), 13, "{g}");
    assert_eq!(
        dtypes.iter().filter(|d| **d == DType::BF16).count(),
        12,
        "{g}"
    );
    assert!(g.to_string().contains("const -inf : f32[]"), "{g}");
}

#[test]
fn literals_in_bf16_and_f32_kernels_match_the_reference() {
    for (dtype, seed) in [(DType::BF16, 21), (DType::F32, 22)] {
        let g = literals::graph(dtype, 4, DType::I64).expect("graph");
        check(&g, 7, &[], seed);
    }
}

#[test]
fn integer_literals_stay_integers() {
    let g = integer_literals::graph(DType::I32).expect("graph");
    assert_eq!(
        const_dtypes(&g),
        [DType::I32, DType::I32, DType::I32],
        "{g}"
    );
    check(&g, 6, &[], 23);
}

#[test]
fn dot_acc_names_the_accumulator() {
    let g = f64_scores::graph(2, 4, DType::I32).expect("graph");
    let text = g.to_string();
    assert!(text.contains("-> [ijh] : f64[%1, %1, 2]"), "{text}");
    check(&g, 6, &[], 24);
}

#[test]
fn dot_acc_with_the_default_accumulator_is_dot() {
    for dtype in [DType::BF16, DType::F32] {
        let a = scores_dot::graph(dtype, 2, 8, DType::I32).expect("graph");
        let b = scores_dot_acc::graph(dtype, 2, 8, DType::I32).expect("graph");
        assert_eq!(a.to_string(), b.to_string());
    }
}

#[test]
fn dot_acc_in_the_input_dtype() {
    let g = native_acc::graph(DType::BF16, 2, 8, DType::I32).expect("graph");
    let text = g.to_string();
    assert!(text.contains("-> [ijh] : bf16[%1, %1, 2]"), "{text}");
    let g = native_acc::graph(DType::F32, 2, 8, DType::I32).expect("graph");
    check(&g, 6, &[], 25);
}

#[test]
fn a_value_meeting_its_accumulator_dtype_is_converted_to_it() {
    let g = promotion::graph(DType::BF16, 2, 4, DType::I32).expect("graph");
    let text = g.to_string();
    let casts: Vec<&str> = text.lines().filter(|l| l.contains("= cast ")).collect();
    // bias and x up to f32, the two results down to bf16.
    assert_eq!(casts.len(), 4, "{text}");
    assert!(casts.iter().any(|l| l.ends_with(": f32[%1, 2]")), "{text}");
    assert!(casts.iter().any(|l| l.ends_with(": f32[%1, 4]")), "{text}");
    check(&g, 6, &[], 26);
}
