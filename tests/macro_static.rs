//! Static attributes (`#[attr(static)]`): the one attention kernel with a
//! static `causal` and `activation` builds, for each pair, the graph that the
//! four per-variant kernels it replaced built (copied here as they were), and
//! each still takes the flash-attention fast path; the same for the fbgemm
//! kernel's `use_mask`. A kernel of the test's own, on an enum of its own,
//! checks `match` with or-patterns, optional outputs and `specialize(...)`
//! over static values.

use std::sync::Arc;

use jagged::codegen::{Arch, Spec, compile_with_plan};
use jagged::dsl::*;
use jagged::ir::{DType, DenseTensor, Graph};
use jagged::ops::attention::{
    fbgemm_jagged_flash_attention_basic_kernel, fbgemm_jagged_flash_attention_basic_masked,
    fbgemm_jagged_flash_attention_basic_unmasked, jagged_flash_attention_kernel,
    jagged_flash_attention_silu, jagged_flash_attention_silu_causal,
    jagged_flash_attention_softmax, jagged_flash_attention_softmax_causal,
};
use jagged::runtime::{BackendKind, KernelCache, Runtime};

// The kernels of src/ops/attention.rs before static attributes, verbatim.

#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
fn before_softmax<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> (Jagged<T, (H, E)>, Jagged<f32, (H,)>) {
    let s = q.dot(k) * scale;
    let p = s.softmax_over_keys();
    let lse = s.logsumexp_over_keys().cast::<f32>();
    (p.dot(v), lse)
}

#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
fn before_softmax_causal<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> (Jagged<T, (H, E)>, Jagged<f32, (H,)>) {
    let s = (q.dot(k) * scale).causal_or(f32::NEG_INFINITY);
    let p = s.softmax_over_keys();
    let lse = s.logsumexp_over_keys().cast::<f32>();
    (p.dot(v), lse)
}

#[jagged_kernel(name = "jagged_flash_attention", outputs(out))]
fn before_silu<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * scale;
    let p = silu(s) / max_len as f32;
    p.dot(v)
}

#[jagged_kernel(name = "jagged_flash_attention", outputs(out))]
fn before_silu_causal<T: Float, H, D, E>(
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

#[jagged_kernel(name = "fbgemm_jagged_flash_attention_basic", outputs(out))]
fn before_fbgemm_unmasked<T: Float, D>(
    q: Jagged<T, (D,)>,
    k: Jagged<T, (D,)>,
    v: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<T, (D,)> {
    let p = q.dot(k).softmax_over_keys() / max_len as f32;
    p.dot(v)
}

#[jagged_kernel(name = "fbgemm_jagged_flash_attention_basic", outputs(out))]
fn before_fbgemm_masked<T: Float, D>(
    q: Jagged<T, (D,)>,
    k: Jagged<T, (D,)>,
    v: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<T, (D,)> {
    let p = q.dot(k).softmax_over_keys() / max_len as f32;
    p.anticausal().dot(v)
}

const PAIRS: [(bool, Activation); 4] = [
    (false, Activation::Softmax),
    (true, Activation::Softmax),
    (false, Activation::Silu),
    (true, Activation::Silu),
];

type Builder = fn(DType, usize, usize, usize, DType) -> Result<Graph, jagged::ops::KernelError>;

/// The kernel before, and the module keeping its name now, of each pair.
fn before_and_wrapper(causal: bool, activation: Activation) -> (Builder, Builder) {
    match (causal, activation) {
        (false, Activation::Softmax) => {
            (before_softmax::graph, jagged_flash_attention_softmax::graph)
        }
        (true, Activation::Softmax) => (
            before_softmax_causal::graph,
            jagged_flash_attention_softmax_causal::graph,
        ),
        (false, Activation::Silu) => (before_silu::graph, jagged_flash_attention_silu::graph),
        (true, Activation::Silu) => (
            before_silu_causal::graph,
            jagged_flash_attention_silu_causal::graph,
        ),
    }
}

#[test]
fn one_attention_kernel_builds_the_four_former_graphs() {
    let mut hashes = Vec::new();
    for dtype in [DType::BF16, DType::F16, DType::F32, DType::F64] {
        for offsets in [DType::I32, DType::I64] {
            for (causal, activation) in PAIRS {
                let (h, d, e) = (2, 64, 32);
                let now = jagged_flash_attention_kernel::graph(
                    dtype, h, d, e, causal, activation, offsets,
                )
                .unwrap();
                let (before, wrapper) = before_and_wrapper(causal, activation);
                let before = before(dtype, h, d, e, offsets).unwrap();
                let what = format!("{dtype} {offsets} causal={causal} {activation:?}");
                assert_eq!(now.to_string(), before.to_string(), "{what}");
                assert_eq!(now.canonical_hash(), before.canonical_hash(), "{what}");
                let wrapped = wrapper(dtype, h, d, e, offsets).unwrap();
                assert_eq!(wrapped.canonical_hash(), before.canonical_hash(), "{what}");
                hashes.push(now.canonical_hash());
            }
        }
    }
    // Four distinct graphs per dtype and offsets dtype: the static values
    // are part of the cache key.
    let n = hashes.len();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), n);
}

#[test]
fn every_pair_takes_the_flash_attention_fast_path() {
    for (causal, activation) in PAIRS {
        let graph = jagged_flash_attention_kernel::graph(
            DType::BF16,
            2,
            64,
            64,
            causal,
            activation,
            DType::I32,
        )
        .unwrap();
        for arch in [Arch::Sm80, Arch::Sm90a] {
            let spec = Spec::for_graph(&graph, 256, arch).unwrap();
            let (_, plan) = compile_with_plan(&graph, &spec).unwrap();
            let first = plan.lines().next().unwrap_or("");
            assert_eq!(
                first, "fast path: flash_attention",
                "causal={causal} {activation:?} {arch}: {plan}"
            );
        }
    }
}

#[test]
fn fbgemm_kernel_builds_the_two_former_graphs() {
    for dtype in [DType::BF16, DType::F32] {
        for offsets in [DType::I32, DType::I64] {
            for use_mask in [false, true] {
                let now =
                    fbgemm_jagged_flash_attention_basic_kernel::graph(dtype, 32, use_mask, offsets)
                        .unwrap();
                let (before, wrapped) = if use_mask {
                    (
                        before_fbgemm_masked::graph(dtype, 32, offsets),
                        fbgemm_jagged_flash_attention_basic_masked::graph(dtype, 32, offsets),
                    )
                } else {
                    (
                        before_fbgemm_unmasked::graph(dtype, 32, offsets),
                        fbgemm_jagged_flash_attention_basic_unmasked::graph(dtype, 32, offsets),
                    )
                };
                let (before, wrapped) = (before.unwrap(), wrapped.unwrap());
                assert_eq!(now.to_string(), before.to_string(), "{dtype} {use_mask}");
                assert_eq!(wrapped.canonical_hash(), before.canonical_hash());
                // And the same plan as before.
                let spec = Spec::for_graph(&now, 128, Arch::Sm80).unwrap();
                let plan = |g: &Graph| compile_with_plan(g, &spec).unwrap().1;
                assert_eq!(plan(&now), plan(&before), "{dtype} {use_mask}");
            }
        }
    }
}

/// A static enum of the test's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Sum,
    Mean,
    Max,
}

impl StaticAttr for Pool {}

/// A pooling selected by a static enum (an or-pattern, arms that are blocks
/// with their own `let`s), with a static `bool` selecting an optional
/// output, specialized ahead of time for two of the six combinations.
#[jagged_kernel(
    outputs(pooled, count),
    specialize(S = [[4]], offsets = [i32], max_len = [64], pool = [Sum, Pool::Max], with_count = true, arch = [sm_80])
)]
fn pool_by<S>(
    x: Jagged<f32, S>,
    #[attr] max_len: usize,
    #[attr(static)] pool: Pool,
    #[attr(static)] with_count: bool,
) -> (PerSeq<f32, S>, Option<PerSeq<f32, ()>>) {
    let pooled = match pool {
        Pool::Sum | Pool::Mean => {
            let s = x.sum_over_seq();
            match pool {
                Pool::Mean => s / x.seq_len().max(1.0),
                Pool::Sum | Pool::Max => s,
            }
        }
        Pool::Max => x.max_over_seq(),
    };
    if with_count {
        (pooled, Some(x.seq_len()))
    } else {
        (pooled, None)
    }
}

#[test]
fn a_static_enum_selects_its_arm() {
    let text = |pool, with_count| {
        pool_by::graph(&[4], pool, with_count, DType::I32)
            .unwrap()
            .to_string()
    };
    assert!(text(Pool::Sum, false).contains("reduce sum"));
    assert!(!text(Pool::Sum, false).contains("div"));
    assert!(text(Pool::Mean, false).contains("div"));
    assert!(text(Pool::Max, false).contains("reduce max"));
    assert!(!text(Pool::Max, false).contains("output count"));
    assert!(text(Pool::Max, true).contains("output count"));
}

#[test]
fn specialize_takes_static_values() {
    // pool = Sum and Max, with_count = true, one shape, one arch.
    let table = pool_by::SPECIALIZED;
    assert_eq!(table.len(), 2, "{table:?}");
    let statics: Vec<&str> = table.iter().map(|e| e.statics).collect();
    assert_eq!(
        statics,
        [
            "pool = Sum, with_count = true",
            "pool = Max, with_count = true"
        ]
    );
    for (entry, pool) in table.iter().zip([Pool::Sum, Pool::Max]) {
        let graph = pool_by::graph(&[4], pool, true, DType::I32).unwrap();
        assert_eq!(entry.graph, graph.to_string());
        let spec = Spec::for_graph(&graph, 64, Arch::Sm80).unwrap();
        assert_eq!(
            entry.kernel,
            jagged::codegen::compile(&graph, &spec).unwrap().to_text()
        );
    }
}

#[test]
fn launch_returns_optional_outputs_and_uses_the_embedded_kernels() {
    let mut rt = Runtime::with_backend(BackendKind::Emu).unwrap();
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    let values: Vec<f64> = (0..20).map(f64::from).collect();
    let x = DenseTensor::from_f64(DType::F32, vec![5, 4], &values).unwrap();
    let o = DenseTensor::from_f64(DType::I32, vec![3], &[0.0, 2.0, 5.0]).unwrap();
    let (x, o) = (rt.upload_tensor(&x).unwrap(), rt.upload_tensor(&o).unwrap());
    // Specialized (`Pool::Max`, with the count): no code generation.
    let (pooled, count) = pool_by::launch(&mut rt, &o, &x, 64, Pool::Max, true).unwrap();
    let count = count.expect("with_count = true gives the count");
    assert_eq!(rt.download_tensor(&count).unwrap().to_f64(), [2.0, 3.0]);
    let pooled = rt.download_tensor(&pooled).unwrap().to_f64();
    assert_eq!(pooled, [4.0, 5.0, 6.0, 7.0, 16.0, 17.0, 18.0, 19.0]);
    assert_eq!(rt.graph_run_stats().codegen_runs, 0);
    // Not specialized: generated on first use; no count output.
    let (pooled, count) = pool_by::launch(&mut rt, &o, &x, 64, Pool::Mean, false).unwrap();
    assert!(count.is_none());
    let pooled = rt.download_tensor(&pooled).unwrap().to_f64();
    assert_eq!(pooled, [2.0, 3.0, 4.0, 5.0, 12.0, 13.0, 14.0, 15.0]);
    assert_eq!(rt.graph_run_stats().codegen_runs, 1);
}
