//! Kernels written in the DSL the way DESIGN.md shows them, checked against the
//! reference graphs of `jagged_ir::ops` by the reference evaluator on random
//! jagged inputs (empty sequences, length 1, lengths above `max_len`), and
//! DESIGN.md's HSTU example against the builtin op it spells out (the builtin
//! attention ops themselves are tested in `macro_attention.rs`).

mod common;

use common::{Rng, offsets};
use jagged::dsl::*;
use jagged::ir::ops::{self as reference, JaggedSpec};
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

/// DESIGN.md's example builds the graph of the builtin op it spells out.
#[test]
fn hstu_attention_is_the_builtin_silu_causal_attention() {
    use jagged::ops::attention::jagged_flash_attention_silu_causal as builtin;
    for dtype in [DType::F32, DType::BF16] {
        let ours = hstu_attention::graph(dtype, 2, 16, 8, DType::I32).unwrap();
        let theirs = builtin::graph(dtype, 2, 16, 8, DType::I32).unwrap();
        assert_eq!(ours.to_string(), theirs.to_string(), "{dtype}");
    }
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

/// Every new elementwise function, as methods and as functions, with `powf`
/// by a literal and by an attribute.
#[jagged_kernel(outputs(y))]
fn activations<T: Float, S>(
    x: Jagged<T, S>,
    #[attr] max_len: usize,
    #[attr] p: f32,
) -> Jagged<T, S> {
    let a = relu(x) + x.sigmoid() + tanh(x);
    let b = x.abs().sqrt() + rsqrt(x.abs() + 1.0) + abs(x);
    let c = x.powf(2.0) + powf(x.abs(), p) + sigmoid(x).relu() * x.tanh();
    a + b + c + sqrt(x.abs()) - x.rsqrt().abs().min(0.0)
}

/// The naive value of `activations` at one element.
fn activations_naive(x: f64, p: f64) -> f64 {
    let relu = if x > 0.0 { x } else { 0.0 };
    let sigmoid = x.exp() / (1.0 + x.exp());
    let tanh = (x.exp() - (-x).exp()) / (x.exp() + (-x).exp());
    let abs = if x < 0.0 { -x } else { x };
    let a = relu + sigmoid + tanh;
    let b = abs.sqrt() + 1.0 / (abs + 1.0).sqrt() + abs;
    let c = x * x + (p * abs.ln()).exp() + sigmoid * tanh;
    // rsqrt(x) of a negative x is NaN, and min(NaN, 0) is NaN: only the
    // positive elements survive the last term, where it is min(|.|, 0) = 0.
    let last = if x < 0.0 { f64::NAN } else { 0.0 };
    a + b + c + abs.sqrt() - last
}

#[test]
fn new_elementwise_functions_lower_to_their_ir_ops_and_evaluate_naively() {
    let graph = activations::graph(DType::F64, &[2], DType::I64).unwrap();
    let text = graph.to_string();
    for op in [
        "relu", "sigmoid", "tanh", "abs", "sqrt", "rsqrt", "pow", "min",
    ] {
        assert!(
            text.contains(&format!(" = {op} %")),
            "{op} missing:\n{text}"
        );
    }
    let mut rng = Rng(42);
    let rows = LENS.iter().sum::<usize>();
    let x = random(&mut rng, DType::F64, vec![rows, 2]);
    let o = offsets(&LENS, DType::I64);
    let p = 1.5;
    let out = evaluate(
        &graph,
        &[("x", &x), ("offsets", &o)],
        &[
            ("max_len", AttrValue::Index(MAX_LEN)),
            ("p", AttrValue::Float(p)),
        ],
    )
    .unwrap();
    let got = out["y"].to_f64();
    let xs = x.to_f64();
    let mut row = 0;
    let mut negatives = 0;
    for &len in &LENS {
        for i in 0..len {
            for c in 0..2 {
                let k = (row + i) * 2 + c;
                let want = if i < MAX_LEN {
                    activations_naive(xs[k], p)
                } else {
                    0.0
                };
                if want.is_nan() {
                    negatives += 1;
                    assert!(got[k].is_nan(), "element {k}: {} for x = {}", got[k], xs[k]);
                } else {
                    let err = (got[k] - want).abs();
                    assert!(
                        err <= 1e-12 * want.abs().max(1.0),
                        "element {k}: {} != {want} for x = {}",
                        got[k],
                        xs[k]
                    );
                }
            }
        }
        row += len;
    }
    assert!(negatives > 0, "no negative input exercised the NaN path");
}
