//! The builtin ops written with `#[jagged_kernel]` (src/ops) build exactly the
//! reference graphs of `jagged_ir::ops`: same canonical text for each dtype,
//! inner shape and offsets dtype.

use jagged::ir::ops::{self as reference, JaggedSpec};
use jagged::ir::{DType, ReduceOp};
use jagged::ops;

/// Specializations covering every value dtype, both offsets dtypes and inner
/// ranks 0, 1 and 2.
fn specs() -> Vec<JaggedSpec> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        for offsets in [DType::I32, DType::I64] {
            for inner in [vec![], vec![4], vec![2, 3]] {
                out.push(JaggedSpec {
                    dtype,
                    offsets,
                    inner,
                });
            }
        }
    }
    out
}

fn same(ours: jagged::ir::Graph, theirs: jagged::ir::Graph, what: &str) {
    assert_eq!(ours.to_string(), theirs.to_string(), "{what}");
}

#[test]
fn complete_cumsum_matches_reference() {
    for lengths in [DType::I32, DType::I64] {
        let ours = ops::complete_cumsum::graph(lengths).unwrap();
        same(
            ours,
            reference::complete_cumsum(lengths).unwrap(),
            "complete_cumsum",
        );
    }
}

#[test]
fn jagged_ops_match_reference() {
    for spec in specs() {
        let (t, s, o) = (spec.dtype, spec.inner.as_slice(), spec.offsets);
        let what = format!("{spec:?}");
        same(
            ops::jagged_to_padded_dense::graph(t, s, o).unwrap(),
            reference::jagged_to_padded_dense(&spec).unwrap(),
            &what,
        );
        same(
            ops::dense_to_jagged::graph(t, s, o).unwrap(),
            reference::dense_to_jagged(&spec).unwrap(),
            &what,
        );
        same(
            ops::jagged_dense_elementwise_mul::graph(t, s, o).unwrap(),
            reference::jagged_dense_elementwise_mul(&spec).unwrap(),
            &what,
        );
        same(
            ops::jagged_softmax::graph(t, s, o).unwrap(),
            reference::jagged_softmax(&spec).unwrap(),
            &what,
        );
        same(
            ops::jagged_reduce_sum::graph(t, s, o).unwrap(),
            reference::jagged_reduce(&spec, ReduceOp::Sum).unwrap(),
            &what,
        );
        same(
            ops::jagged_reduce_mean::graph(t, s, o).unwrap(),
            reference::jagged_reduce(&spec, ReduceOp::Mean).unwrap(),
            &what,
        );
        same(
            ops::jagged_reduce_max::graph(t, s, o).unwrap(),
            reference::jagged_reduce(&spec, ReduceOp::Max).unwrap(),
            &what,
        );
        for mask in [DType::Bool, DType::U8] {
            same(
                ops::masked_select_jagged::graph(t, s, mask, o).unwrap(),
                reference::masked_select_jagged(&spec, mask).unwrap(),
                &what,
            );
        }
    }
}

#[test]
fn bounds_reject_wrong_dtype_classes() {
    let err = ops::complete_cumsum::graph(DType::F32).unwrap_err();
    assert!(err.to_string().contains("`I`"), "{err}");
    let err = ops::jagged_softmax::graph(DType::I32, &[4], DType::I32).unwrap_err();
    assert!(err.to_string().contains("float"), "{err}");
}
