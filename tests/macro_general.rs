//! Compositions a new user writes with `#[jagged_kernel]` that no kernel
//! template matches: each compiles through the general path and runs on the
//! emulator like the f64 reference, on adversarial lengths with poisoned
//! outputs (`jagged::testing`).

use std::sync::Arc;

use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, check_against_reference};

/// Weighted sum pooling: one weight per event.
#[jagged_kernel(outputs(pooled))]
fn weighted_pool<S>(
    x: Jagged<f32, S>,
    w: Jagged<f32, ()>,
    #[attr] max_len: usize,
) -> PerSeq<f32, S> {
    (x * w).sum_over_seq()
}

/// A row broadcast: each event's features scaled by its weight.
#[jagged_kernel(outputs(y))]
fn row_scale<T: Float, S>(
    x: Jagged<T, S>,
    w: Jagged<T, ()>,
    #[attr] max_len: usize,
) -> Jagged<T, S> {
    x * w
}

/// HSTU attention as DESIGN.md writes it, with the scale named `alpha`,
/// in any dtype (f32 has no tensor-core template).
#[jagged_kernel(outputs(out))]
fn hstu_alpha<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] alpha: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * alpha;
    let p = silu(s) / max_len as f32;
    p.causal().dot(v)
}

/// Scores divided by a temperature attribute.
#[jagged_kernel(outputs(out))]
fn tempered_attention<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] temperature: f32,
) -> Jagged<T, (H, E)> {
    let p = (q.dot(k) / temperature).softmax_over_keys();
    p.dot(v)
}

/// Softmax over the keys, then a mask, then the sum over the keys.
#[jagged_kernel(outputs(mass))]
fn softmax_mask_sum<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    #[attr] max_len: usize,
) -> Jagged<T, (H,)> {
    q.dot(k).softmax_over_keys().anticausal().sum_over_keys()
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

#[test]
fn weighted_pooling_compiles_and_runs() {
    check(
        &weighted_pool::graph(&[8], DType::I32).expect("graph"),
        9,
        &[],
        1,
    );
}

#[test]
fn row_broadcast_compiles_and_runs() {
    for dtype in [DType::F32, DType::BF16] {
        check(
            &row_scale::graph(dtype, &[6], DType::I64).expect("graph"),
            7,
            &[],
            2,
        );
    }
}

#[test]
fn hstu_with_alpha_in_f32_compiles_and_runs() {
    let attrs = [("alpha", AttrValue::Float(0.3))];
    check(
        &hstu_alpha::graph(DType::F32, 2, 8, 4, DType::I32).expect("graph"),
        6,
        &attrs,
        3,
    );
    // bf16 with head dim 32: the flash-attention template takes it, its
    // scale parameter bound to `alpha`.
    let g = hstu_alpha::graph(DType::BF16, 2, 32, 32, DType::I32).expect("graph");
    let spec = jagged::codegen::Spec::for_graph(&g, 40, jagged::codegen::Arch::Sm80).expect("spec");
    let (_, plan) = jagged::codegen::compile_with_plan(&g, &spec).expect("compiles");
    assert!(plan.starts_with("fast path: flash_attention"), "{plan}");
    check(&g, 40, &attrs, 4);
}

#[test]
fn attention_with_a_temperature_compiles_and_runs() {
    let attrs = [("temperature", AttrValue::Float(1.7))];
    for dtype in [DType::F32, DType::F16] {
        let g = tempered_attention::graph(dtype, 2, 8, 8, DType::I64).expect("graph");
        check(&g, 6, &attrs, 4);
    }
}

#[test]
fn softmax_then_mask_then_sum_over_keys_compiles_and_runs() {
    check(
        &softmax_mask_sum::graph(DType::F32, 2, 4, DType::I32).expect("graph"),
        7,
        &[],
        5,
    );
}

/// Each node of a `#[jagged_kernel]` graph records the body expression it
/// came from (text, file, line), which errors about the node quote.
#[test]
fn nodes_record_the_expression_they_came_from() {
    use jagged::ir::{BinaryOp, Node, Origin, ReduceOp};
    let g = weighted_pool::graph(&[8], DType::I32).expect("graph");
    let find = |want: &dyn Fn(&Node) -> bool| {
        g.nodes()
            .iter()
            .find_map(|(h, n)| want(n).then_some(h))
            .expect("node")
    };
    let mul = find(&|n| {
        matches!(
            n,
            Node::Binary {
                op: BinaryOp::Mul,
                ..
            }
        )
    });
    let sum = find(&|n| {
        matches!(
            n,
            Node::Reduce {
                op: ReduceOp::Sum,
                ..
            }
        )
    });
    let source = include_str!("macro_general.rs");
    let line = source
        .lines()
        .position(|l| l.trim() == "(x * w).sum_over_seq()")
        .expect("the kernel's body line") as u32
        + 1;
    for (h, text) in [(mul, "x * w"), (sum, "(x * w).sum_over_seq()")] {
        match g.origin(h) {
            Some(Origin::Expr {
                text: t,
                file,
                line: l,
                ..
            }) => {
                assert_eq!(t, text);
                assert!(file.ends_with("macro_general.rs"), "{file}");
                assert_eq!(*l, line);
            }
            other => panic!("{h}: {other:?}"),
        }
    }
    assert!(
        g.describe(mul).contains("(`x * w` at "),
        "{}",
        g.describe(mul)
    );
}

/// `specialize(..., E = D, ...)` ties two generics: the table holds the
/// combinations with `E` equal to `D` only, and a launch with `E = D` finds
/// its kernel there (no code generation at run time).
#[jagged_kernel(
    outputs(out),
    specialize(T = [bf16], H = [2], D = [32, 64], E = D, offsets = [i32], max_len = [8])
)]
fn tied_attention<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * scale;
    let p = silu(s) / max_len as f32;
    p.causal().dot(v)
}

#[test]
fn specialize_ties_generics_together() {
    // Two values of D, E tied to it, two archs: 4 entries, not 8.
    assert_eq!(tied_attention::SPECIALIZED.len(), 4);
    for entry in tied_attention::SPECIALIZED {
        let g = Graph::parse(entry.graph).expect("embedded graph");
        let q = g.inputs().find(|(_, n, _)| *n == "q").expect("q").2.clone();
        let v = g.inputs().find(|(_, n, _)| *n == "v").expect("v").2.clone();
        assert_eq!(q.dims.last(), v.dims.last(), "E = D in {}", entry.spec);
    }
}

/// HSTU with a learned relative-position bias: a table of 2W + 1 values
/// (`Dense`), read with `bias.at(...)` at the clamped `i - j` (W = 4).
#[jagged_kernel(outputs(out))]
fn hstu_relative_bias<T: Float, H, D, E, R>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    bias: Dense<T, (R,)>,
    #[attr] max_len: usize,
    #[attr] alpha: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * alpha;
    let d = (s.query_pos() - s.key_pos()).max(-4.0).min(4.0) + 4.0;
    let b = bias.at(d.cast::<i64>());
    let p = silu(s + b) / max_len as f32;
    p.causal().dot(v)
}

#[test]
fn a_learned_relative_position_bias_compiles_and_runs() {
    let attrs = [("alpha", AttrValue::Float(0.3))];
    for dtype in [DType::F32, DType::BF16] {
        let g = hstu_relative_bias::graph(dtype, 2, 8, 4, 9, DType::I32).expect("graph");
        check(&g, 9, &attrs, 6);
    }
}
