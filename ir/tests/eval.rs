//! Evaluator edge cases: empty batches and sequences give zeros, never NaN;
//! input and attribute errors are typed and name the argument.

mod common;

use common::{f64_tensor, index_tensor};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{
    AttrKind, AttrValue, DType, Dim, EvalError, GraphBuilder, ReduceOp, TensorType, evaluate,
};

fn spec(inner: &[usize]) -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F64,
        offsets: DType::I64,
        inner: inner.to_vec(),
    }
}

const MAX_LEN_3: (&str, AttrValue) = ("max_len", AttrValue::Index(3));

#[test]
fn empty_batch_and_empty_sequences_give_zeros() {
    let g = ops::jagged_reduce(&spec(&[2]), ReduceOp::Max).unwrap();
    // B = 0.
    let out = evaluate(
        &g,
        &[
            ("values", &f64_tensor(vec![0, 2], &[])),
            ("offsets", &index_tensor(&[0], true)),
        ],
        &[MAX_LEN_3],
    )
    .unwrap();
    assert_eq!(out["out"].shape(), &[0, 2]);
    // T = 0 with B = 2: the max of an empty sequence is 0.
    let out = evaluate(
        &g,
        &[
            ("values", &f64_tensor(vec![0, 2], &[])),
            ("offsets", &index_tensor(&[0, 0, 0], true)),
        ],
        &[MAX_LEN_3],
    )
    .unwrap();
    assert_eq!(out["out"].to_f64(), vec![0.0; 4]);
    // Softmax: rows past max_len are zero, empty sequences stay empty.
    let g = ops::jagged_softmax(&spec(&[1])).unwrap();
    let out = evaluate(
        &g,
        &[
            (
                "values",
                &f64_tensor(vec![5, 1], &[0.0, 0.0, 0.0, 7.0, 9.0]),
            ),
            ("offsets", &index_tensor(&[0, 0, 5], true)),
        ],
        &[MAX_LEN_3],
    )
    .unwrap();
    let third = 1.0 / 3.0;
    assert_eq!(out["values"].to_f64(), vec![third, third, third, 0.0, 0.0]);
}

#[test]
fn attention_on_empty_sequences_has_no_nan() {
    let spec = ops::AttentionSpec {
        input_dtype: DType::F32,
        dtype: DType::BF16,
        offsets: DType::I32,
        heads: 1,
        head_dim: 2,
        value_dim: 2,
        causal: true,
        activation: ops::Activation::Softmax,
    };
    let g = ops::jagged_flash_attention(&spec).unwrap();
    let x = jagged_ir::DenseTensor::from_f64(DType::F32, vec![0, 1, 2], &[]).unwrap();
    let out = evaluate(
        &g,
        &[
            ("q", &x),
            ("k", &x),
            ("v", &x),
            ("offsets", &index_tensor(&[0, 0, 0], false)),
        ],
        &[MAX_LEN_3],
    )
    .unwrap();
    assert_eq!(out["out"].shape(), &[0, 1, 2]);
    assert_eq!(out["lse"].shape(), &[0, 1]);
}

#[test]
fn input_errors_name_the_input() {
    let g = ops::jagged_softmax(&spec(&[2])).unwrap();
    let values = f64_tensor(vec![3, 2], &[0.0; 6]);
    let run = |inputs: &[(&str, &jagged_ir::DenseTensor)], attrs: &[(&str, AttrValue)]| {
        evaluate(&g, inputs, attrs).unwrap_err()
    };
    let offsets = index_tensor(&[0, 3], true);
    let e = run(&[("values", &values)], &[MAX_LEN_3]);
    assert!(
        matches!(&e, EvalError::MissingInput { name } if name == "offsets"),
        "{e}"
    );
    let e = run(
        &[
            ("values", &values),
            ("offsets", &offsets),
            ("extra", &offsets),
        ],
        &[MAX_LEN_3],
    );
    assert!(
        matches!(&e, EvalError::UnknownInput { name } if name == "extra"),
        "{e}"
    );
    let e = run(
        &[
            ("values", &values),
            ("offsets", &index_tensor(&[0, 3], false)),
        ],
        &[MAX_LEN_3],
    );
    assert!(
        matches!(&e, EvalError::InputDtype { name, expected: DType::I64, found: DType::I32 } if name == "offsets"),
        "{e}"
    );
    let e = run(
        &[
            ("values", &values),
            ("offsets", &index_tensor(&[0, 2], true)),
        ],
        &[MAX_LEN_3],
    );
    assert!(
        matches!(&e, EvalError::InputShape { name, .. } if name == "values"),
        "{e}"
    );
    let e = run(
        &[
            ("values", &f64_tensor(vec![3, 3], &[0.0; 9])),
            ("offsets", &offsets),
        ],
        &[MAX_LEN_3],
    );
    assert!(
        matches!(&e, EvalError::InputShape { name, .. } if name == "values"),
        "{e}"
    );
    let e = run(&[("values", &values), ("offsets", &offsets)], &[]);
    assert!(
        matches!(&e, EvalError::MissingAttribute { name } if name == "max_len"),
        "{e}"
    );
    let e = run(
        &[("values", &values), ("offsets", &offsets)],
        &[("max_len", AttrValue::Float(2.0))],
    );
    assert!(
        matches!(
            &e,
            EvalError::AttributeKind {
                expected: AttrKind::Index,
                ..
            }
        ),
        "{e}"
    );
    let e = run(
        &[("values", &values), ("offsets", &offsets)],
        &[MAX_LEN_3, ("scale", AttrValue::Float(1.0))],
    );
    assert!(
        matches!(&e, EvalError::UnknownAttribute { name } if name == "scale"),
        "{e}"
    );
    // Bad offsets are reported with the input's name and the first bad index.
    let e = run(
        &[
            ("values", &values),
            ("offsets", &index_tensor(&[0, 3, 1, 3], true)),
        ],
        &[MAX_LEN_3],
    );
    assert_eq!(e.to_string(), "offsets[2] = 1 is less than offsets[1] = 3");
}

#[test]
fn n_is_bound_from_a_dense_input_when_there_is_no_max_len() {
    let g = ops::dense_to_jagged(&spec(&[])).unwrap();
    let dense = f64_tensor(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let out = evaluate(
        &g,
        &[
            ("dense", &dense),
            ("offsets", &index_tensor(&[0, 3, 4], true)),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(out["values"].to_f64(), vec![1.0, 2.0, 0.0, 3.0]);
}

#[test]
fn casts_round_and_outputs_take_their_dtype() {
    let mut b = GraphBuilder::new("t");
    let x = b.input("x", TensorType::new(DType::F64, vec![Dim::Static(3)]));
    let h = b.cast(x, DType::BF16);
    let i = b.cast(x, DType::I32);
    b.output("h", h);
    b.output("i", i);
    let g = b.finish().unwrap();
    let out = evaluate(
        &g,
        &[("x", &f64_tensor(vec![3], &[1.0 + 1.0 / 256.0, -2.7, 1e9]))],
        &[],
    )
    .unwrap();
    // 1 + 2^-8 is a tie between bf16 neighbours 1 and 1 + 2^-7: rounds to even (1).
    // bf16 spacing is 2^-6 at 2.7 (2.7 / 2^-6 = 172.8) and 2^22 at 1e9 (238.4).
    assert_eq!(out["h"].to_f64(), vec![1.0, -2.703125, 238.0 * 4_194_304.0]);
    assert_eq!(out["i"].to_f64(), vec![1.0, -2.0, 1e9]);
    assert_eq!(out["i"].dtype(), DType::I32);
}

/// `offsets` (%0) and its truncated set (%1) for hand-written graphs.
fn with_sequences(name: &str) -> (GraphBuilder, jagged_ir::Handle<jagged_ir::Node>) {
    let mut b = GraphBuilder::new(name);
    b.declare_attr("max_len", AttrKind::Index, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    (b, s)
}

#[test]
fn contraction_to_a_per_sequence_dense_result() {
    // OPS.md "later" jagged_jagged_bmm: out[b] = sum_{i < n_b} x_i^T y_i.
    let (mut b, s) = with_sequences("jagged_jagged_bmm");
    let x = b.input("x", TensorType::jagged(DType::F64, s, &[2]));
    let y = b.input("y", TensorType::jagged(DType::F64, s, &[1]));
    let out = b.contract(x, "im", y, "ip", "mp", DType::F64);
    b.output("out", out);
    let g = b.finish().unwrap();
    assert_eq!(g.type_of(out).to_string(), "f64[B, 2, 1]");
    // Sequences of 3 rows (max_len 2 keeps rows 0, 1) and 0 rows.
    let x = f64_tensor(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = f64_tensor(vec![3, 1], &[10.0, 100.0, 1000.0]);
    let offsets = index_tensor(&[0, 3, 3], true);
    let got = evaluate(
        &g,
        &[("x", &x), ("y", &y), ("offsets", &offsets)],
        &[("max_len", AttrValue::Index(2))],
    )
    .unwrap();
    // [1*10 + 3*100, 2*10 + 4*100] for b = 0; zeros for the empty sequence.
    assert_eq!(got["out"].to_f64(), vec![310.0, 420.0, 0.0, 0.0]);
}

#[test]
fn contraction_with_a_per_sequence_dense_operand() {
    // OPS.md "later" jagged_dense_bmm: out[o_b + i] = x[o_b + i] @ y[b].
    let (mut b, s) = with_sequences("jagged_dense_bmm");
    let x = b.input("x", TensorType::jagged(DType::F64, s, &[2]));
    let y = b.input("y", TensorType::dense(DType::F64, &[Dim::Batch], &[2, 1]));
    let out = b.contract(x, "ik", y, "km", "im", DType::F64);
    b.output("out", out);
    let g = b.finish().unwrap();
    let x = f64_tensor(vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = f64_tensor(vec![2, 2, 1], &[1.0, 10.0, 2.0, 20.0]);
    let offsets = index_tensor(&[0, 1, 3], true);
    let got = evaluate(
        &g,
        &[("x", &x), ("y", &y), ("offsets", &offsets)],
        &[("max_len", AttrValue::Index(4))],
    )
    .unwrap();
    // Row 0 uses y[0] = [1, 10]; rows 1, 2 use y[1] = [2, 20].
    assert_eq!(got["out"].to_f64(), vec![21.0, 86.0, 130.0]);
}

#[test]
fn scans_along_a_static_axis() {
    let mut b = GraphBuilder::new("scans");
    let x = b.input("x", TensorType::dense(DType::F64, &[Dim::Batch], &[3]));
    for (name, mode) in [
        ("inclusive", jagged_ir::ScanMode::Inclusive),
        ("exclusive", jagged_ir::ScanMode::Exclusive),
        ("complete", jagged_ir::ScanMode::Complete),
    ] {
        let y = b.scan(mode, x, 1);
        b.output(name, y);
    }
    let g = b.finish().unwrap();
    let x = f64_tensor(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let got = evaluate(&g, &[("x", &x)], &[]).unwrap();
    assert_eq!(
        got["inclusive"].to_f64(),
        vec![1.0, 3.0, 6.0, 4.0, 9.0, 15.0]
    );
    assert_eq!(
        got["exclusive"].to_f64(),
        vec![0.0, 1.0, 3.0, 0.0, 4.0, 9.0]
    );
    assert_eq!(got["complete"].shape(), &[2, 4]);
    assert_eq!(
        got["complete"].to_f64(),
        vec![0.0, 1.0, 3.0, 6.0, 0.0, 4.0, 9.0, 15.0]
    );
}

#[test]
fn broadcasting_per_sequence_and_per_row_values() {
    // x - mean over the sequence (dense [B, 2] broadcast to rows), then times a
    // static per-column weight, then max with a scalar.
    let (mut b, s) = with_sequences("centered");
    let x = b.input("x", TensorType::jagged(DType::F64, s, &[2]));
    let w = b.input("w", TensorType::new(DType::F64, vec![Dim::Static(2)]));
    let mean = b.reduce(ReduceOp::Mean, x, 0);
    let centered = b.sub(x, mean);
    let weighted = b.mul(centered, w);
    let floor = b.constant(-1.0, DType::F64);
    let y = b.max(weighted, floor);
    b.output("y", y);
    let g = b.finish().unwrap();
    assert_eq!(g.type_of(mean).to_string(), "f64[B, 2]");
    assert_eq!(g.type_of(y).to_string(), format!("f64[{s}, 2]"));
    let x = f64_tensor(vec![3, 2], &[1.0, 10.0, 3.0, 30.0, 7.0, 7.0]);
    let w = f64_tensor(vec![2], &[1.0, 0.5]);
    let got = evaluate(
        &g,
        &[
            ("x", &x),
            ("w", &w),
            ("offsets", &index_tensor(&[0, 2, 3], true)),
        ],
        &[("max_len", AttrValue::Index(2))],
    )
    .unwrap();
    // Sequence 0: mean [2, 20]; rows [-1, -10 * 0.5 -> -1 floor], [1, 5]. Sequence 1: zeros.
    assert_eq!(got["y"].to_f64(), vec![-1.0, -1.0, 1.0, 5.0, 0.0, 0.0]);
}
