//! Kernels written in the DSL the way DESIGN.md shows them, checked against the
//! reference graphs of `jagged_ir::ops`: by canonical text where the structure
//! is the same, by the reference evaluator on random jagged inputs (empty
//! sequences, length 1, lengths above `max_len`) where it differs.

mod common;

use common::{Rng, offsets};
use jagged::dsl::*;
use jagged::ir::ops::{
    self as reference, Activation, AttentionSpec, FbgemmAttentionSpec, JaggedSpec,
};
use jagged::ir::{AttrValue, DType, DenseTensor, evaluate};

/// Softmax over each sequence, per column, composed from the DSL's ops (the
/// builtin uses the IR's `softmax` node instead).
#[jagged_kernel(outputs(values))]
fn composed_softmax<T: Float, S>(values: Jagged<T, S>, #[attr] max_len: usize) -> Jagged<T, S> {
    let e = (values - values.max_over_seq()).exp();
    e / e.sum_over_seq()
}

/// HSTU-style attention: pointwise SiLU instead of softmax, causal; generated
/// ahead of time for bf16, 2 heads of 32 and max_len up to 8.
#[jagged_kernel(
    name = "jagged_flash_attention",
    outputs(out),
    specialize(T = [bf16], H = [2], D = [32], E = [32], offsets = [i32], max_len = [8])
)]
fn hstu_attention<T: Float, H, D, E>(
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

/// Softmax attention without a causal mask, and the log-sum-exp of the scores.
#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
fn softmax_attention<T: Float, H, D, E>(
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

/// Causal softmax attention: masked scores are `-inf` before the softmax.
#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
fn causal_softmax_attention<T: Float, H, D, E>(
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

/// FBGEMM's `jagged_flash_attention_basic`: softmax over all keys, divided by
/// `max_len`, without a mask.
#[jagged_kernel(name = "fbgemm_jagged_flash_attention_basic", outputs(out))]
fn fbgemm_basic<T: Float, D>(
    q: Jagged<T, (D,)>,
    k: Jagged<T, (D,)>,
    v: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<T, (D,)> {
    let p = q.dot(k).softmax_over_keys() / max_len as f32;
    p.dot(v)
}

/// The same with `use_mask`: probabilities of keys before the query are zeroed
/// after normalization.
#[jagged_kernel(name = "fbgemm_jagged_flash_attention_basic", outputs(out))]
fn fbgemm_basic_masked<T: Float, D>(
    q: Jagged<T, (D,)>,
    k: Jagged<T, (D,)>,
    v: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<T, (D,)> {
    let p = q.dot(k).softmax_over_keys() / max_len as f32;
    p.anticausal().dot(v)
}

#[test]
fn fbgemm_attention_kernels_build_the_reference_graphs() {
    for input_dtype in [DType::F32, DType::BF16, DType::F64] {
        for use_mask in [false, true] {
            let spec = FbgemmAttentionSpec {
                input_dtype,
                dtype: input_dtype,
                offsets: DType::I64,
                head_dim: 32,
                use_mask,
            };
            let ours = if use_mask {
                fbgemm_basic_masked::graph(input_dtype, 32, DType::I64)
            } else {
                fbgemm_basic::graph(input_dtype, 32, DType::I64)
            }
            .unwrap();
            let theirs = reference::fbgemm_jagged_flash_attention_basic(&spec).unwrap();
            assert_eq!(ours.to_string(), theirs.to_string(), "{spec:?}");
        }
    }
}

/// Sequence lengths with an empty sequence, a length 1 and lengths above `max_len = 5`.
const LENS: [usize; 6] = [0, 1, 7, 5, 0, 3];
const MAX_LEN: usize = 5;

fn random(rng: &mut Rng, dtype: DType, shape: Vec<usize>) -> DenseTensor {
    let n = shape.iter().product::<usize>();
    let v: Vec<f64> = (0..n).map(|_| rng.float()).collect();
    DenseTensor::from_f64(dtype, shape, &v).unwrap()
}

fn assert_close(ours: &DenseTensor, theirs: &DenseTensor, tol: f64, what: &str) {
    assert_eq!(ours.shape(), theirs.shape(), "{what}");
    let (a, b) = (ours.to_f64(), theirs.to_f64());
    let err: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    assert!(a.iter().all(|x| x.is_finite()), "{what}: non-finite output");
    assert!(
        err <= tol * norm.max(1e-30),
        "{what}: relative error {}",
        err / norm
    );
}

#[test]
fn composed_softmax_evaluates_like_the_builtin() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for lens in [&LENS[..], &[]] {
        for inner in [vec![], vec![3]] {
            let spec = JaggedSpec {
                dtype: DType::F64,
                offsets: DType::I64,
                inner: inner.clone(),
            };
            let ours = composed_softmax::graph(DType::F64, &inner, DType::I64).unwrap();
            let theirs = reference::jagged_softmax(&spec).unwrap();
            let rows = lens.iter().sum::<usize>();
            let mut shape = vec![rows];
            shape.extend(&inner);
            let x = random(&mut rng, DType::F64, shape);
            let o = offsets(lens, DType::I64);
            let inputs = [("values", &x), ("offsets", &o)];
            let attrs = [("max_len", AttrValue::Index(MAX_LEN))];
            let a = evaluate(&ours, &inputs, &attrs).unwrap();
            let b = evaluate(&theirs, &inputs, &attrs).unwrap();
            assert_close(&a["values"], &b["values"], 1e-12, "softmax");
        }
    }
}

/// The reference graph's text without the default of `scale` (`1/sqrt(D)`,
/// which a DSL attribute default cannot express).
fn without_scale_default(text: String) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("attr scale: float") {
            out.push_str("  attr scale: float");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn attention_kernels_build_the_reference_graphs() {
    for input_dtype in [DType::F32, DType::BF16, DType::F64] {
        for (activation, causal) in [
            (Activation::Silu, true),
            (Activation::Softmax, false),
            (Activation::Softmax, true),
        ] {
            let spec = AttentionSpec {
                input_dtype,
                dtype: input_dtype,
                offsets: DType::I32,
                heads: 2,
                head_dim: 16,
                value_dim: 8,
                causal,
                activation,
            };
            let (h, d, e, o) = (2, 16, 8, DType::I32);
            let ours = match (activation, causal) {
                (Activation::Silu, _) => hstu_attention::graph(input_dtype, h, d, e, o),
                (_, false) => softmax_attention::graph(input_dtype, h, d, e, o),
                (_, true) => causal_softmax_attention::graph(input_dtype, h, d, e, o),
            }
            .unwrap();
            let theirs = reference::jagged_flash_attention(&spec).unwrap();
            assert_eq!(
                ours.to_string(),
                without_scale_default(theirs.to_string()),
                "{spec:?}"
            );
        }
    }
}

#[test]
fn hstu_attention_evaluates_like_the_reference() {
    let mut rng = Rng(7);
    let (h, d, e) = (2, 4, 3);
    let ours = hstu_attention::graph(DType::F64, h, d, e, DType::I32).unwrap();
    let spec = AttentionSpec {
        input_dtype: DType::F64,
        dtype: DType::F64,
        offsets: DType::I32,
        heads: h,
        head_dim: d,
        value_dim: e,
        causal: true,
        activation: Activation::Silu,
    };
    let theirs = reference::jagged_flash_attention(&spec).unwrap();
    let rows = LENS.iter().sum::<usize>();
    let q = random(&mut rng, DType::F64, vec![rows, h, d]);
    let k = random(&mut rng, DType::F64, vec![rows, h, d]);
    let v = random(&mut rng, DType::F64, vec![rows, h, e]);
    let o = offsets(&LENS, DType::I32);
    let inputs = [("q", &q), ("k", &k), ("v", &v), ("offsets", &o)];
    let attrs = [
        ("max_len", AttrValue::Index(MAX_LEN)),
        ("scale", AttrValue::Float(0.5)),
    ];
    let a = evaluate(&ours, &inputs, &attrs).unwrap();
    let b = evaluate(&theirs, &inputs, &attrs).unwrap();
    assert_close(&a["out"], &b["out"], 1e-12, "hstu");
}

#[test]
fn hstu_attention_launches_like_the_reference() {
    use jagged::runtime::{BackendKind, KernelCache, Runtime};
    let mut rt = Runtime::with_backend(BackendKind::Emu).unwrap();
    rt.set_kernel_cache(std::sync::Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    let mut rng = Rng(11);
    let (h, d) = (2, 32);
    let lens = [0, 1, 7, 5, 0, 3, 12];
    let rows = lens.iter().sum::<usize>();
    let q = random(&mut rng, DType::BF16, vec![rows, h, d]);
    let k = random(&mut rng, DType::BF16, vec![rows, h, d]);
    let v = random(&mut rng, DType::BF16, vec![rows, h, d]);
    let o = offsets(&lens, DType::I32);
    let dev: Vec<_> = [&o, &q, &k, &v]
        .iter()
        .map(|t| rt.upload_tensor(t).unwrap())
        .collect();
    let out = hstu_attention::launch(&mut rt, &dev[0], &dev[1], &dev[2], &dev[3], 8, 0.25).unwrap();
    assert_eq!(
        rt.graph_run_stats().codegen_runs,
        0,
        "the specialization was generated again"
    );
    let got = rt.download_tensor(&out).unwrap();
    let graph = hstu_attention::graph(DType::BF16, h, d, d, DType::I32).unwrap();
    let inputs = [("q", &q), ("k", &k), ("v", &v), ("offsets", &o)];
    let attrs = [
        ("max_len", AttrValue::Index(8)),
        ("scale", AttrValue::Float(0.25)),
    ];
    let want = evaluate(&graph, &inputs, &attrs).unwrap();
    let norm: f64 = want["out"].to_f64().iter().map(|x| x * x).sum();
    assert!(norm > 1e-3, "a vacuous reference ({norm})");
    assert_close(&got, &want["out"], 1e-2, "hstu on the emulator");
    for t in dev.into_iter().chain([out]) {
        rt.free(t.buffer).unwrap();
    }
}
