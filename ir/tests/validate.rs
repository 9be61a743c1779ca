//! The validator rejects each kind of ill-typed graph with a typed error that
//! names the node in text form.

use jagged_ir::{
    AttrKind, AttrValue, DType, Dim, GraphBuilder, Handle, IndexPredicate, Node, ReduceOp,
    TensorType, ValidationErrorKind as K,
};

/// A builder with `offsets` (%0), its truncated set (%1) and `x: f32[%1, 4]` (%2).
fn base() -> (GraphBuilder, Handle<Node>, Handle<Node>) {
    let mut b = GraphBuilder::new("t");
    b.declare_attr("max_len", AttrKind::Index, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let x = b.input("x", TensorType::jagged(DType::F32, s, &[4]));
    (b, s, x)
}

/// Finishes `b`, expecting an error at node `%at` whose message starts with `text`.
fn rejects(b: GraphBuilder, at: usize, text: &str) -> K {
    let e = b.finish().expect_err("graph should be rejected");
    assert_eq!(e.node, Some(Handle::from_index(at)), "{e}");
    assert!(e.to_string().starts_with(text), "{e}");
    e.kind
}

#[test]
fn forward_reference() {
    let (mut b, _, _) = base();
    b.exp(Handle::from_index(7));
    let k = rejects(
        b,
        3,
        "%3 = exp %7: operand %7 is not defined before this node",
    );
    assert!(matches!(k, K::ForwardReference { .. }));
}

#[test]
fn sequence_set_used_as_tensor_and_back() {
    let (mut b, s, x) = base();
    b.exp(s);
    assert!(matches!(rejects(b, 3, "%3 = exp %1"), K::NotATensor { .. }));
    let (mut b, _, x2) = base();
    b.from_padded(x2, x);
    assert!(matches!(
        rejects(b, 3, "%3 = from_padded %2, %2"),
        K::NotASequenceSet { .. }
    ));
}

#[test]
fn dtype_mismatch() {
    let (mut b, s, x) = base();
    let y = b.input("y", TensorType::jagged(DType::F16, s, &[4]));
    b.add(x, y);
    let k = rejects(b, 4, "%4 = add %2, %3: dtype mismatch: f32 vs f16");
    assert_eq!(
        k,
        K::DtypeMismatch {
            expected: DType::F32,
            found: DType::F16
        }
    );
}

#[test]
fn bad_dtypes() {
    let (mut b, _, x) = base();
    let i = b.cast(x, DType::I32);
    b.exp(i);
    assert!(matches!(
        rejects(b, 4, "%4 = exp %3"),
        K::BadDtype {
            found: DType::I32,
            ..
        }
    ));
    let mut b = GraphBuilder::new("t");
    let o = b.input(
        "offsets",
        TensorType::new(DType::F32, vec![Dim::BatchPlusOne]),
    );
    b.seqs(o, false);
    assert!(matches!(
        rejects(b, 1, "%1 = seqs %0"),
        K::BadDtype {
            found: DType::F32,
            ..
        }
    ));
}

#[test]
fn dim_mismatch() {
    let (mut b, s, x) = base();
    let y = b.input("y", TensorType::jagged(DType::F32, s, &[5]));
    b.mul(x, y);
    let k = rejects(
        b,
        4,
        "%4 = mul %2, %3: dim mismatch: f32[%1, 4] vs f32[%1, 5]",
    );
    assert!(matches!(k, K::DimMismatch { .. }));
}

#[test]
fn jagged_operands_over_different_sequence_sets() {
    let (mut b, _, x) = base();
    let s2 = b.seqs(Handle::from_index(0), true);
    let y = b.input("y", TensorType::jagged(DType::F32, s2, &[4]));
    b.add(x, y);
    let k = rejects(
        b,
        5,
        "%5 = add %2, %4: jagged operands over different sequence sets",
    );
    assert_eq!(
        k,
        K::DifferentSequenceSets {
            lhs: Handle::from_index(1),
            rhs: Handle::from_index(3)
        }
    );
}

#[test]
fn padded_rows_need_a_truncated_set() {
    let mut b = GraphBuilder::new("t");
    b.declare_attr("max_len", AttrKind::Index, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, false);
    let x = b.input("x", TensorType::jagged(DType::F32, s, &[4]));
    let d = b.input(
        "d",
        TensorType::dense(DType::F32, &[Dim::Batch, Dim::MaxLen], &[4]),
    );
    b.mul(x, d);
    let k = rejects(b, 4, "%4 = mul %2, %3");
    assert_eq!(k, K::UntruncatedSequenceSet { seqs: s });
}

#[test]
fn malformed_types() {
    let (mut b, s, _) = base();
    b.input(
        "y",
        TensorType::new(DType::F32, vec![Dim::Static(2), Dim::Ragged(s)]),
    );
    assert!(
        matches!(rejects(b, 3, "%3 = input y"), K::BadType { reason, .. } if reason.contains("first"))
    );
    let (mut b, s, _) = base();
    b.input(
        "y",
        TensorType::new(DType::F32, vec![Dim::Ragged(s), Dim::Ragged(s)]),
    );
    assert!(
        matches!(rejects(b, 3, "%3 = input y"), K::BadType { reason, .. } if reason.contains("at most one"))
    );
    let (mut b, _, x) = base();
    b.mask(
        IndexPredicate::KeyNotAfterQuery,
        TensorType::new(DType::Bool, vec![Dim::Batch, Dim::MaxLen]),
    );
    let _ = x;
    assert!(matches!(
        rejects(b, 3, "%3 = mask j <= i"),
        K::BadType { .. }
    ));
}

#[test]
fn axes() {
    let (mut b, _, x) = base();
    b.reduce(ReduceOp::Sum, x, 2);
    assert_eq!(
        rejects(b, 3, "%3 = reduce sum %2, axis 2"),
        K::AxisOutOfRange { axis: 2, rank: 2 }
    );
    let (mut b, _, x) = base();
    let r = b.reduce(ReduceOp::Sum, x, 0);
    b.softmax(r, 0);
    assert!(matches!(
        rejects(
            b,
            4,
            "%4 = softmax %3, axis 0: cannot softmax along axis 0 (B)"
        ),
        K::BadAxis { .. }
    ));
    let (mut b, _, x) = base();
    b.scan(jagged_ir::ScanMode::Inclusive, x, 0);
    assert!(matches!(
        rejects(b, 3, "%3 = scan inclusive %2, axis 0"),
        K::BadAxis { .. }
    ));
}

#[test]
fn contractions() {
    let (mut b, _, x) = base();
    b.contract(x, "ih", x, "jh", "ijk", DType::F32);
    let k = rejects(
        b,
        3,
        "%3 = contract %2[ih], %2[jh] -> [ijk]: contraction over unknown axis 'k'",
    );
    assert_eq!(k, K::UnknownContractionAxis { letter: 'k' });
    let (mut b, _, x) = base();
    b.contract(x, "i", x, "jh", "ij", DType::F32);
    assert!(
        matches!(rejects(b, 3, "%3 = contract"), K::BadContraction { reason } if reason.contains("names 1 axes"))
    );
    let (mut b, _, x) = base();
    b.contract(x, "ii", x, "jh", "ij", DType::F32);
    assert!(
        matches!(rejects(b, 3, "%3 = contract"), K::BadContraction { reason } if reason.contains("twice"))
    );
    let (mut b, _, x) = base();
    b.contract(x, "ih", x, "hj", "ij", DType::F32);
    assert!(matches!(
        rejects(b, 3, "%3 = contract"),
        K::ContractionExtent { letter: 'h', .. }
    ));
    let (mut b, _, x) = base();
    b.contract(x, "ih", x, "jh", "hij", DType::F32);
    assert!(
        matches!(rejects(b, 3, "%3 = contract"), K::BadContraction { reason } if reason.contains("must come first"))
    );
    // Float operands do not accumulate in an integer (the macro's `dot_acc`
    // rule, now the validator's: `jagged_ir::typing::contract_result_rule`).
    let (mut b, _, x) = base();
    b.contract(x, "ih", x, "jh", "ij", DType::I32);
    assert_eq!(
        rejects(b, 3, "%3 = contract"),
        K::BadDtype {
            found: DType::I32,
            reason: "float operands accumulate in a float type"
        }
    );
}

#[test]
fn attributes() {
    let (mut b, _, _) = base();
    b.attr("scale", DType::F32);
    let k = rejects(b, 3, "%3 = attr scale: attribute 'scale': not declared");
    assert!(matches!(k, K::BadAttribute { .. }));
    let mut b = GraphBuilder::new("t");
    b.declare_attr("max_len", AttrKind::Float, None);
    let e = b.finish().unwrap_err();
    assert!(matches!(e.kind, K::BadAttribute { .. }), "{e}");
    assert_eq!(e.node, None);
    let mut b = GraphBuilder::new("t");
    b.declare_attr("alpha", AttrKind::Float, Some(AttrValue::Index(1)));
    assert!(matches!(
        b.finish().unwrap_err().kind,
        K::BadAttribute {
            reason: "default of the wrong kind",
            ..
        }
    ));
    let mut b = GraphBuilder::new("t");
    b.declare_attr("alpha", AttrKind::Float, None);
    b.declare_attr("alpha", AttrKind::Float, None);
    assert!(matches!(
        b.finish().unwrap_err().kind,
        K::DuplicateName { .. }
    ));
}

#[test]
fn duplicate_names() {
    let (mut b, s, _) = base();
    b.input("x", TensorType::jagged(DType::F32, s, &[4]));
    assert!(matches!(
        rejects(b, 3, "%3 = input x: duplicate name 'x'"),
        K::DuplicateName { .. }
    ));
    let (mut b, _, x) = base();
    b.output("y", x);
    b.output("y", x);
    let e = b.finish().unwrap_err();
    assert_eq!(e.to_string(), "output y = %2: duplicate name 'y'");
}

#[test]
fn bad_outputs() {
    let (mut b, s, _) = base();
    b.output("s", s);
    let e = b.finish().unwrap_err();
    assert!(
        matches!(
            e.kind,
            K::BadOutput {
                reason: "a sequence set is not a tensor",
                ..
            }
        ),
        "{e}"
    );
    let (mut b, _, x) = base();
    let p = b.contract(x, "ih", x, "jh", "ijh", DType::F32);
    b.output("p", p);
    let e = b.finish().unwrap_err();
    assert!(
        matches!(
            e.kind,
            K::BadOutput {
                reason: "two ragged dims cannot be returned",
                ..
            }
        ),
        "{e}"
    );
    let (mut b, _, _) = base();
    b.output("nothing", Handle::from_index(99));
    assert!(matches!(
        b.finish().unwrap_err().kind,
        K::BadOutput {
            reason: "no such node",
            ..
        }
    ));
}

#[test]
fn max_len_must_be_bound() {
    let mut b = GraphBuilder::new("t");
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![Dim::BatchPlusOne]),
    );
    b.seqs(o, true);
    assert_eq!(rejects(b, 1, "%1 = seqs %0, max_len"), K::UnboundMaxLen);
}

#[test]
fn compaction_needs_a_matching_seqs_where() {
    let (mut b, s, x) = base();
    b.compact(x, s);
    assert_eq!(rejects(b, 3, "%3 = compact %2, %1"), K::BadCompaction);
    let (mut b, _, x) = base();
    let other = b.seqs(Handle::from_index(0), false);
    let m = b.input("m", TensorType::jagged(DType::Bool, other, &[]));
    let w = b.seqs_where(m);
    b.compact(x, w);
    assert_eq!(rejects(b, 6, "%6 = compact %2, %5"), K::BadCompaction);
}

#[test]
fn every_builtin_graph_is_valid_at_other_specializations() {
    use jagged_ir::ops::*;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for offsets in [DType::I32, DType::I64] {
            for inner in [vec![], vec![1], vec![3, 2]] {
                let spec = JaggedSpec {
                    dtype,
                    offsets,
                    inner,
                };
                jagged_to_padded_dense(&spec).unwrap();
                dense_to_jagged(&spec).unwrap();
                jagged_softmax(&spec).unwrap();
                masked_select_jagged(&spec, DType::U8).unwrap();
                jagged_dense_elementwise_mul(&spec).unwrap();
                jagged_reduce(&spec, ReduceOp::Mean).unwrap();
            }
        }
    }
    // A softmax over integers is rejected, naming the node.
    let spec = JaggedSpec {
        dtype: DType::I32,
        offsets: DType::I32,
        inner: vec![2],
    };
    let e = jagged_softmax(&spec).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("%3 = softmax %2, axis 0: dtype i32 not allowed"),
        "{e}"
    );
}
