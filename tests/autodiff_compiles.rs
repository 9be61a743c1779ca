//! Backward graphs (`jagged::ir::autodiff::backward`) are ordinary graphs:
//! those of the builtin ops compile with `jagged::codegen::compile` and run
//! on the emulator like the f64 reference, on adversarial lengths with
//! poisoned outputs (`jagged::testing`).

use std::sync::Arc;

use jagged::codegen::{Spec, compile_with_plan};
use jagged::ir::autodiff::backward;
use jagged::ir::ops::{self, Activation, AttentionSpec, JaggedSpec};
use jagged::ir::{AttrValue, DType, Graph, ReduceOp};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference};

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

/// The backward graph of `forward` with respect to `wrt` compiles and runs
/// like the reference (within the tolerance of composed ops: a backward
/// graph is a composition).
fn check(forward: &Graph, wrt: &[&str], max_len: usize, attrs: &[(&str, AttrValue)], seed: u64) {
    let graph = backward(forward, wrt).unwrap_or_else(|e| panic!("{}: {e}", forward.name()));
    let mut rt = runtime();
    let spec = Spec::for_graph(&graph, max_len as u64, rt.preferred_arch()).expect("spec");
    if let Err(e) = compile_with_plan(&graph, &spec) {
        panic!("{}: does not compile: {e}\n{graph}", graph.name());
    }
    let cases = check_spec_against_reference(
        &graph,
        &spec,
        &mut rt,
        max_len,
        attrs,
        &mut Rng::new(seed),
        Tolerance::composed,
    )
    .unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()));
    assert!(cases >= 5);
}

fn jspec(inner: &[usize]) -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: inner.to_vec(),
    }
}

#[test]
fn jagged_softmax_backward() {
    let g = ops::jagged_softmax(&jspec(&[4])).expect("graph");
    check(&g, &["values"], 5, &[], 1);
}

#[test]
fn jagged_reduce_backward() {
    for (k, op) in [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::LogSumExp,
    ]
    .into_iter()
    .enumerate()
    {
        let g = ops::jagged_reduce(&jspec(&[3]), op).expect("graph");
        check(&g, &["values"], 4, &[], 10 + k as u64);
    }
}

#[test]
fn padding_backward() {
    let g = ops::jagged_to_padded_dense(&jspec(&[3])).expect("graph");
    check(
        &g,
        &["values"],
        4,
        &[("padding_value", AttrValue::Float(-1.0))],
        2,
    );
    let g = ops::dense_to_jagged(&jspec(&[3])).expect("graph");
    check(&g, &["dense"], 4, &[], 3);
}

#[test]
fn jagged_dense_elementwise_mul_backward() {
    let g = ops::jagged_dense_elementwise_mul(&jspec(&[3])).expect("graph");
    check(&g, &["values", "dense"], 4, &[], 4);
}

#[test]
fn flash_attention_backward() {
    for (k, (activation, causal)) in [
        (Activation::Softmax, false),
        (Activation::Softmax, true),
        (Activation::Silu, false),
        (Activation::Silu, true),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = AttentionSpec {
            input_dtype: DType::F32,
            dtype: DType::F32,
            offsets: DType::I32,
            heads: 2,
            head_dim: 8,
            value_dim: 8,
            causal,
            activation,
        };
        let g = ops::jagged_flash_attention(&spec).expect("graph");
        check(&g, &["q", "k", "v"], 6, &[], 20 + k as u64);
    }
}
