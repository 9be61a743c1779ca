//! NaN and infinities in the reference: they propagate the way IEEE
//! arithmetic and the kernels propagate them (regressions: `f64::max`
//! skipped NaN, so a NaN in `q`, `scale = nan` or a NaN in a reduced line
//! gave finite reference values).

mod common;

use common::{f64_tensor, index_tensor};
use jagged_ir::ops::{self, Activation, AttentionSpec, JaggedSpec};
use jagged_ir::{AttrKind, AttrValue, DType, Dim, GraphBuilder, ReduceOp, TensorType, evaluate};

const NAN: f64 = f64::NAN;
const INF: f64 = f64::INFINITY;

fn spec(inner: &[usize]) -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F64,
        offsets: DType::I64,
        inner: inner.to_vec(),
    }
}

/// Same values, NaN where NaN (bitwise sign of NaN aside).
fn assert_same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            (g - w).abs() <= 1e-12 * w.abs().max(1.0) || g == w
        };
        assert!(ok, "{what}: element {k}: got {g}, want {w}\n{got:?}");
    }
}

/// One column per sequence line: `values [T, 1]` over `lens`, `max_len` 3.
fn run_one_column(graph: &jagged_ir::Graph, out: &str, lens: &[usize], values: &[f64]) -> Vec<f64> {
    let mut offsets = vec![0];
    for &l in lens {
        offsets.push(offsets[offsets.len() - 1] + l);
    }
    let x = f64_tensor(vec![values.len(), 1], values);
    let o = index_tensor(&offsets, true);
    evaluate(
        graph,
        &[("values", &x), ("offsets", &o)],
        &[("max_len", AttrValue::Index(3))],
    )
    .unwrap()[out]
        .to_f64()
}

#[test]
fn reference_max_over_a_line_with_nan_is_nan() {
    let g = ops::jagged_reduce(&spec(&[1]), ReduceOp::Max).unwrap();
    // Sequences: [1, NaN], [NaN, 5] (either order), [2, 7, 3, NaN past max_len], [].
    let got = run_one_column(
        &g,
        "out",
        &[2, 2, 4, 0],
        &[1.0, NAN, NAN, 5.0, 2.0, 7.0, 3.0, NAN],
    );
    assert_same("max", &got, &[NAN, NAN, 7.0, 0.0]);
}

#[test]
fn reference_logsumexp_and_sum_over_a_line_with_nan_are_nan() {
    let g = ops::jagged_reduce(&spec(&[1]), ReduceOp::LogSumExp).unwrap();
    let got = run_one_column(&g, "out", &[2, 2], &[0.0, NAN, 0.0, 0.0]);
    assert_same("logsumexp", &got, &[NAN, 2f64.ln()]);
    let g = ops::jagged_reduce(&spec(&[1]), ReduceOp::Sum).unwrap();
    let got = run_one_column(&g, "out", &[2, 2, 2], &[1.0, NAN, INF, 1.0, INF, -INF]);
    assert_same("sum", &got, &[NAN, INF, NAN]);
    let g = ops::jagged_reduce(&spec(&[1]), ReduceOp::Max).unwrap();
    let got = run_one_column(&g, "out", &[2, 1], &[INF, 1.0, -INF]);
    assert_same("max with infinities", &got, &[INF, -INF]);
}

#[test]
fn reference_softmax_over_a_line_with_nan_is_nan_everywhere() {
    let g = ops::jagged_softmax(&spec(&[1])).unwrap();
    // [nan, inf, 1], [inf, 1], [-inf, -inf], [-inf, 0], [0, 0].
    let got = run_one_column(
        &g,
        "values",
        &[3, 2, 2, 2, 2],
        &[NAN, INF, 1.0, INF, 1.0, -INF, -INF, -INF, 0.0, 0.0, 0.0],
    );
    assert_same(
        "softmax",
        &got,
        &[NAN, NAN, NAN, NAN, NAN, 0.0, 0.0, 0.0, 1.0, 0.5, 0.5],
    );
}

#[test]
fn reference_max_and_min_of_nan_are_nan() {
    for (name, max) in [("max", true), ("min", false)] {
        let mut b = GraphBuilder::new(name);
        let x = b.input("x", TensorType::new(DType::F64, vec![Dim::Static(4)]));
        let y = b.input("y", TensorType::new(DType::F64, vec![Dim::Static(4)]));
        let z = if max { b.max(x, y) } else { b.min(x, y) };
        b.output("z", z);
        let g = b.finish().unwrap();
        let xs = f64_tensor(vec![4], &[NAN, 1.0, NAN, 2.0]);
        let ys = f64_tensor(vec![4], &[1.0, NAN, NAN, 3.0]);
        let got = evaluate(&g, &[("x", &xs), ("y", &ys)], &[]).unwrap()["z"].to_f64();
        let last = if max { 3.0 } else { 2.0 };
        assert_same(name, &got, &[NAN, NAN, NAN, last]);
    }
}

fn attention_spec(causal: bool) -> AttentionSpec {
    AttentionSpec {
        input_dtype: DType::F64,
        dtype: DType::F64,
        offsets: DType::I64,
        heads: 1,
        head_dim: 2,
        value_dim: 2,
        causal,
        activation: Activation::Softmax,
    }
}

/// Attention on sequences [0, 3, 2] rows with `q`'s row `nan_row` NaN (if any).
fn attention(causal: bool, nan_row: Option<usize>, scale: f64) -> (Vec<f64>, Vec<f64>) {
    let g = ops::jagged_flash_attention(&attention_spec(causal)).unwrap();
    let rows = 5;
    let mut q: Vec<f64> = (0..rows * 2).map(|k| (k as f64 * 0.37).sin()).collect();
    if let Some(r) = nan_row {
        q[r * 2] = NAN;
    }
    let k: Vec<f64> = (0..rows * 2).map(|k| (k as f64 * 0.71).cos()).collect();
    let v: Vec<f64> = (0..rows * 2).map(|k| k as f64 * 0.1 - 0.3).collect();
    let o = index_tensor(&[0, 0, 3, 5], true);
    let t = |d: &[f64]| f64_tensor(vec![rows, 1, 2], d);
    let (q, k, v) = (t(&q), t(&k), t(&v));
    let out = evaluate(
        &g,
        &[("q", &q), ("k", &k), ("v", &v), ("offsets", &o)],
        &[
            ("max_len", AttrValue::Index(4)),
            ("scale", AttrValue::Float(scale)),
        ],
    )
    .unwrap();
    (out["out"].to_f64(), out["lse"].to_f64())
}

#[test]
fn reference_attention_with_nan_in_q_gives_nan_rows() {
    for causal in [false, true] {
        let (out, lse) = attention(causal, Some(1), 0.5);
        // Row 1 (second row of the first non-empty sequence) is NaN, the
        // rows of its sequence and the other sequence are not.
        for (r, row) in out.chunks(2).enumerate() {
            assert_eq!(
                row.iter().all(|x| x.is_nan()),
                r == 1,
                "causal {causal}: row {r} = {row:?}"
            );
            assert_eq!(lse[r].is_nan(), r == 1, "causal {causal}: lse {lse:?}");
        }
    }
}

#[test]
fn reference_attention_with_scale_nan_is_nan() {
    let (out, lse) = attention(false, None, NAN);
    assert!(out.iter().all(|x| x.is_nan()), "{out:?}");
    assert!(lse.iter().all(|x| x.is_nan()), "{lse:?}");
    // Finite scale: finite everywhere.
    let (out, lse) = attention(true, None, 0.5);
    assert!(out.iter().chain(&lse).all(|x| x.is_finite()));
}

#[test]
fn nan_past_max_len_and_in_empty_batches_is_ignored() {
    // Rows past max_len are not part of the sequence, NaN or not.
    let g = ops::jagged_softmax(&spec(&[1])).unwrap();
    let got = run_one_column(&g, "values", &[4], &[0.0, 0.0, 0.0, NAN]);
    assert_same("softmax", &got, &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0]);
    // A float attribute that is NaN is NaN where it is used.
    let mut b = GraphBuilder::new("scaled");
    b.declare_attr("max_len", AttrKind::Index, None);
    b.declare_attr("alpha", AttrKind::Float, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let x = b.input("values", TensorType::jagged(DType::F64, s, &[1]));
    let a = b.attr("alpha", DType::F64);
    let y = b.mul(x, a);
    b.output("values", y);
    let g = b.finish().unwrap();
    let x = f64_tensor(vec![2, 1], &[1.0, 2.0]);
    let o = index_tensor(&[0, 2], true);
    let got = evaluate(
        &g,
        &[("values", &x), ("offsets", &o)],
        &[
            ("max_len", AttrValue::Index(1)),
            ("alpha", AttrValue::Float(NAN)),
        ],
    )
    .unwrap()["values"]
        .to_f64();
    assert_same("alpha = nan", &got, &[NAN, 0.0]);
}
