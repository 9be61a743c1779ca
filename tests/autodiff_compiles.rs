//! Backward graphs (`jagged::ir::autodiff::backward`) are ordinary graphs:
//! those of the builtin ops compile with `jagged::codegen::compile` and run
//! on the emulator like the f64 reference, on adversarial lengths with
//! poisoned outputs (`jagged::testing`).

use std::sync::Arc;

use jagged::codegen::{Spec, compile_with_plan};
use jagged::ir::autodiff::backward;
use jagged::ir::ops::{self, Activation, AttentionSpec, FbgemmAttentionSpec, JaggedSpec};
use jagged::ir::{
    AttrKind, AttrValue, DType, Dim, Graph, GraphBuilder, Handle, MAX_LEN, Node, ReduceOp,
    ScanMode, TensorType,
};
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

/// `max_len`, `offsets` and a truncated sequence set, completed by `f`.
fn graph(name: &str, f: impl FnOnce(&mut GraphBuilder, Handle<Node>)) -> Graph {
    let mut b = GraphBuilder::new(name);
    b.declare_attr(MAX_LEN, AttrKind::Index, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I32, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    f(&mut b, s);
    b.finish().unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn f32j(s: Handle<Node>, inner: &[usize]) -> TensorType {
    TensorType::jagged(DType::F32, s, inner)
}

fn f32d(symbolic: &[Dim], inner: &[usize]) -> TensorType {
    TensorType::dense(DType::F32, symbolic, inner)
}

/// Adjoints built from contractions with ones, triangular matrices,
/// broadcast reductions and padding compile too.
#[test]
fn composed_backward_graphs() {
    // Reductions over the queries of a pair (spread back by a contraction
    // with ones over %s), over a static axis that is not the last.
    for op in [ReduceOp::Max, ReduceOp::Mean] {
        let g = graph("pair_queries", |b, s| {
            let q = b.input("q", f32j(s, &[2, 4]));
            let k = b.input("k", f32j(s, &[2, 4]));
            let p = b.contract(q, "ihd", k, "jhd", "ijh", DType::F32);
            let y = b.reduce(op, p, 0);
            b.output("y", y);
        });
        check(&g, &["q", "k"], 5, &[], 30);
        let g = graph("static_axis", |b, s| {
            let x = b.input("x", f32j(s, &[2, 3]));
            let y = b.reduce(op, x, 1);
            b.output("y", y);
        });
        check(&g, &["x"], 5, &[], 31);
    }
    // Scans along a static axis (a contraction with the scan's matrix) and
    // along N (total minus the other prefix sum).
    for mode in [ScanMode::Inclusive, ScanMode::Exclusive, ScanMode::Complete] {
        let g = graph("scan_static", |b, _| {
            let x = b.input("x", f32d(&[Dim::Batch], &[5]));
            let y = b.scan(mode, x, 1);
            b.output("y", y);
        });
        check(&g, &["x"], 5, &[], 32);
    }
    let g = graph("scan_n", |b, s| {
        let x = b.input("x", f32j(s, &[2]));
        let d = b.to_padded(x);
        let y = b.scan(ScanMode::Inclusive, d, 1);
        b.output("y", y);
    });
    check(&g, &["x"], 5, &[], 33);
    // Broadcasting: per-sequence, per-row and padded operands.
    let g = graph("broadcast", |b, s| {
        let x = b.input("x", f32j(s, &[3]));
        let w = b.input("w", f32d(&[Dim::Batch], &[3]));
        let r = b.input("r", f32j(s, &[]));
        let d = b.input("d", f32d(&[Dim::Batch, Dim::MaxLen], &[]));
        let y = b.mul(x, w);
        let y = b.add(y, r);
        let y = b.mul(y, d);
        let y = b.tanh(y);
        b.output("y", y);
    });
    check(&g, &["x", "w", "r", "d"], 5, &[], 34);
    // Softmax over a padded dense axis; unary chains.
    let g = graph("dense_softmax", |b, _| {
        let x = b.input("x", f32d(&[Dim::Batch, Dim::MaxLen], &[3]));
        let y = b.softmax(x, 1);
        let y = b.silu(y);
        let y = b.sigmoid(y);
        b.output("y", y);
    });
    check(&g, &["x"], 5, &[], 35);
}

#[test]
fn fbgemm_attention_backward() {
    for use_mask in [false, true] {
        let spec = FbgemmAttentionSpec {
            input_dtype: DType::F32,
            dtype: DType::F32,
            offsets: DType::I64,
            head_dim: 8,
            use_mask,
        };
        let g = ops::fbgemm_jagged_flash_attention_basic(&spec).expect("graph");
        check(&g, &["q", "k", "v"], 6, &[], 40);
    }
}

#[test]
fn low_precision_attention_backward() {
    for (k, dtype) in [DType::F16, DType::BF16].into_iter().enumerate() {
        for activation in [Activation::Softmax, Activation::Silu] {
            let spec = AttentionSpec {
                input_dtype: dtype,
                dtype,
                offsets: DType::I32,
                heads: 2,
                head_dim: 16,
                value_dim: 16,
                causal: true,
                activation,
            };
            let g = ops::jagged_flash_attention(&spec).expect("graph");
            check(&g, &["q", "k", "v"], 6, &[], 50 + k as u64);
        }
    }
}
