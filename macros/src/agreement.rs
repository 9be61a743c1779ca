//! The agreement test of the macro's checker, the IR's validator and the
//! table of `jagged_ir::typing`.
//!
//! For every method, function and operator of the table, on every receiver
//! kind (shape class) and in every dtype, it writes the one-expression body
//! that calls it, and checks:
//!
//! - the macro's verdict (accept with a kind, dtype and inner dims, or a
//!   compile error) is the table's prediction;
//! - the body lowered with the macro's dtype checks off builds a graph that
//!   the validator accepts exactly when the macro accepts the body, with the
//!   same result type (dtype, shape class, inner dims).
//!
//! Literal variants (`x * 0.5`, `x + (-1)`, `x.eq(1 + 1)`, ...) are checked
//! against the validator the same way (the table says nothing about them).

use std::collections::HashMap;
use std::fmt::Write as _;

use jagged_ir::typing::{
    self, DslKind, DslNode, ELEMENTWISE_KINDS, FUNCTIONS, METHODS, OPERATORS, ResultDtype,
    ResultKind,
};
use jagged_ir::{DType, Dim, TensorType, Type};

use crate::body::{dsl_kind, lower_tail};
use crate::sig::{DTy, Shape};
use crate::steps::{self, Bindings};

/// The inner shapes of the receivers: `(D, E)`, or none.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Inner {
    Two,
    None,
}

/// A DSL type in dtype `d` with the inner dims of `inner`.
fn ty(kind: &str, d: DType, inner: Inner) -> String {
    match inner {
        Inner::Two => format!("{kind}<{d}, (D, E)>"),
        Inner::None => format!("{kind}<{d}, ()>"),
    }
}

/// The kernel whose body is `expr`, with a receiver of every kind in `d`.
fn kernel(d: DType, inner: Inner, expr: &str) -> String {
    let (q, v, w, wp) = match inner {
        Inner::Two => ("(D, E)", "(D, E)", "(E, M)", "(D, M)"),
        Inner::None => ("(E,)", "(E,)", "(E, M)", "(E, M)"),
    };
    format!(
        "fn k<D, E, M>(offsets: Offsets, xj: {xj}, xs: {xs}, xp: {xp}, xn: {xn}, xl: Lengths<{d}>, \
         q: Jagged<f32, {q}>, v: Jagged<{d}, {v}>, w: Dense<{d}, {w}>, wp: Dense<{d}, {wp}>, \
         wg: Dense<{d}, (D, M, E)>, wh: Dense<{d}, (D, E, M)>, mask: Jagged<bool>, \
         idx: Jagged<i64>, pick: Dense<i32, (M,)>, #[attr] max_len: usize) -> Jagged<f32> {{ \
         {expr} }}",
        xj = ty("Jagged", d, inner),
        xs = ty("PerSeq", d, inner),
        xp = ty("Padded", d, inner),
        xn = ty("Dense", d, inner),
    )
}

/// The receiver of `kind` in the kernel's dtype.
fn receiver(kind: DslKind, d: DType) -> String {
    match kind {
        DslKind::Jagged => "xj".into(),
        DslKind::PerSeq => "xs".into(),
        DslKind::Padded => "xp".into(),
        DslKind::Dense => "xn".into(),
        DslKind::Lengths => "xl".into(),
        DslKind::Pairs => format!("q.dot(q).cast::<{d}>()"),
        DslKind::Offsets => "offsets".into(),
    }
}

/// A call of `name` on `r` (a receiver of `kind`), with a type argument `u`
/// where it takes one. Every method of the table needs an entry here.
fn method_call(name: &str, kind: DslKind, r: &str, u: DType) -> String {
    match name {
        "powf" => format!("{r}.powf(2)"),
        "max" | "min" | "lt" | "le" | "gt" | "ge" | "eq" | "ne" => format!("{r}.{name}({r})"),
        "cast" => format!("{r}.cast::<{u}>()"),
        "matmul" if kind == DslKind::Pairs => format!("{r}.matmul(wp)"),
        "matmul" => format!("{r}.matmul(w)"),
        "matmul_t" => format!("{r}.matmul_t(xn)"),
        "matmul_t_grouped" => format!("{r}.matmul_t_grouped(wg)"),
        "matmul_grouped" => format!("{r}.matmul_grouped(wh)"),
        "outer_sum_over_seq" => format!("{r}.outer_sum_over_seq({r})"),
        "to_padded_or" | "causal_or" | "anticausal_or" => format!("{r}.{name}(0)"),
        "dot" if kind == DslKind::Pairs => format!("{r}.dot(v)"),
        "dot" => format!("{r}.dot({r})"),
        "dot_acc" if kind == DslKind::Pairs => format!("{r}.dot_acc::<{u}>(v)"),
        "dot_acc" => format!("{r}.dot_acc::<{u}>({r})"),
        "compact" => format!("{r}.compact(mask)"),
        "at" => format!("{r}.at(idx)"),
        "shift_rows" => format!("{r}.shift_rows(-1)"),
        "smallest_k_over_features" | "largest_k_over_features" => format!("{r}.{name}::<D>()"),
        "take_features" => format!("{r}.take_features(pick)"),
        _ if typing::method(kind, name).is_some_and(|m| m.arity == 0 && !m.type_argument) => {
            format!("{r}.{name}()")
        }
        other => panic!("the agreement test has no call for the method `{other}`: add one"),
    }
}

/// A call of the function `name` on `r`.
fn function_call(name: &str, r: &str) -> String {
    match name {
        "powf" => format!("powf({r}, 2)"),
        "max" | "min" => format!("{name}({r}, {r})"),
        "select" => format!("select({r}.lt({r}), {r}, {r})"),
        _ => format!("{name}({r})"),
    }
}

/// What the table predicts: the result's kind and dtype, or a rejection.
type Prediction = Option<(DslKind, DType)>;

/// The result of a method `spec` on a receiver of `kind` in `d` (type argument `u`).
fn predict_method(spec: &typing::Method, kind: DslKind, d: DType, u: DType) -> Prediction {
    if !spec.dtype.admits(d) {
        return None;
    }
    let dtype = match spec.result_dtype {
        ResultDtype::Receiver => d,
        ResultDtype::Bool => DType::Bool,
        ResultDtype::Accumulator => typing::accumulator(d),
        ResultDtype::TypeArgument => u,
        ResultDtype::OffsetsDtype => OFFSETS,
        ResultDtype::Index => DType::I32,
    };
    if spec.node == DslNode::Contract && typing::contract_result_rule(d, dtype).is_err() {
        return None;
    }
    let kind = match spec.result_kind {
        ResultKind::Receiver => kind,
        ResultKind::Is(k) => k,
        // `idx`, the index of `at`, is a Jagged tensor.
        ResultKind::Argument => DslKind::Jagged,
    };
    Some((kind, dtype))
}

/// The kernel's offsets dtype in the bindings.
const OFFSETS: DType = DType::I32;

/// The values of the kernel's generic parameters.
fn bindings() -> Bindings {
    Bindings {
        dtypes: HashMap::from([("offsets".to_string(), OFFSETS)]),
        dims: HashMap::from([
            ("D".to_string(), 2),
            ("E".to_string(), 3),
            ("M".to_string(), 4),
        ]),
        shapes: HashMap::new(),
    }
}

/// Whether an IR type is of the shape class of `kind`.
fn in_class(kind: DslKind, t: &TensorType) -> bool {
    let statics = |dims: &[Dim]| dims.iter().all(|d| matches!(d, Dim::Static(_)));
    match (kind, t.dims.as_slice()) {
        (DslKind::Jagged, [Dim::Ragged(_), rest @ ..]) => statics(rest),
        (DslKind::Pairs, [Dim::Ragged(_), Dim::Ragged(_), rest @ ..]) => statics(rest),
        (DslKind::Padded, [Dim::Batch, Dim::MaxLen, rest @ ..]) => statics(rest),
        (DslKind::PerSeq, [Dim::Batch, rest @ ..]) => statics(rest),
        (DslKind::Lengths, [Dim::Batch]) => true,
        (DslKind::Offsets, [Dim::BatchPlusOne]) => true,
        (DslKind::Dense, dims) => statics(dims),
        _ => false,
    }
}

/// The inner dims of an IR type of `kind`.
fn inner_dims(kind: DslKind, t: &TensorType) -> Vec<usize> {
    let lead = match kind {
        DslKind::Dense => 0,
        DslKind::Jagged | DslKind::PerSeq | DslKind::Lengths | DslKind::Offsets => 1,
        DslKind::Pairs | DslKind::Padded => 2,
    };
    t.dims[lead.min(t.dims.len())..]
        .iter()
        .filter_map(|d| match d {
            Dim::Static(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// The verdict of one checker: the result's kind, dtype and inner dims, or
/// the error.
type Verdict = Result<(DslKind, DType, Vec<usize>), String>;

/// The macro's verdict on `expr`, and the validator's on the graph that the
/// body lowered without the macro's dtype checks builds (`None` when that
/// lowering fails too: a rule of the DSL alone, not a typing rule).
fn verdicts(d: DType, inner: Inner, expr: &str) -> (Verdict, Option<Verdict>) {
    let text = kernel(d, inner, expr);
    let func: syn::ItemFn = syn::parse_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let sig = crate::sig::parse(&func).unwrap_or_else(|e| panic!("{text}: {e}"));
    let b = bindings();
    let resolve = |dtype: &DTy, shape: &Shape| -> (DType, Vec<usize>) {
        let dims = match shape {
            Shape::Dims(dims) => dims.iter().map(|d| b.dims[&d.to_string()]).collect(),
            Shape::Var(_) => panic!("no shape parameters here"),
        };
        let dtype = match dtype.possible().as_deref() {
            Some([one]) => *one,
            _ if *dtype == DTy::KernelIndex => OFFSETS,
            _ => panic!("{text}: dtype {} is not concrete", dtype.describe()),
        };
        (dtype, dims)
    };
    let strict = lower_tail(&sig, &func.block, true)
        .map(|(_, kind, dtype, shape, _)| {
            let (dtype, dims) = resolve(&dtype, &shape);
            (dsl_kind(kind), dtype, dims)
        })
        .map_err(|e| e.to_string());
    let validated = lower_tail(&sig, &func.block, false)
        .ok()
        .map(|(steps, kind, _, _, var)| {
            let kind = dsl_kind(kind);
            let (graph, nodes) = steps::apply("k", &steps, &b)?;
            let node = nodes[var.0].ok_or("the tail has no node")?;
            match graph.type_of(node) {
                Type::Tensor(t) if in_class(kind, t) => Ok((kind, t.dtype, inner_dims(kind, t))),
                other => Err(format!(
                    "the validator's type {other:?} is not of the class {}",
                    kind.shape_class()
                )),
            }
        });
    (strict, validated)
}

/// Whether `expr` calls a method that needs named inner dims (a contraction
/// or a reduction over features, a gather from a table).
fn needs_inner_dims(expr: &str) -> bool {
    [
        "_over_features",
        "_over_groups",
        ".dot",
        ".matmul",
        ".at(",
        ".take_features(",
    ]
    .iter()
    .any(|m| expr.contains(m))
}

/// Runs one case; appends a line to `failures` when the checkers disagree.
fn check(
    failures: &mut String,
    counts: &mut [usize; 3],
    d: DType,
    inner: Inner,
    expr: &str,
    predicted: Option<Prediction>,
) {
    let (strict, validated) = verdicts(d, inner, expr);
    let case = format!("{d} {inner:?} `{expr}`");
    // The table predicts the verdict, and the kind and dtype of an accepted call.
    if let Some(predicted) = predicted {
        match (&strict, predicted) {
            (Ok((kind, dtype, _)), Some(p)) if (*kind, *dtype) != p => {
                let _ = writeln!(
                    failures,
                    "{case}: the macro gives {kind:?} {dtype}, the table {p:?}"
                );
            }
            (Ok(_), None) => {
                let _ = writeln!(failures, "{case}: the macro accepts, the table rejects");
            }
            // The DSL rejects what the table admits only where the method
            // needs inner dims and the receiver has none.
            (Err(e), Some(_)) if !(inner == Inner::None && needs_inner_dims(expr)) => {
                let _ = writeln!(
                    failures,
                    "{case}: the macro rejects what the table admits: {e}"
                );
            }
            _ => {}
        }
    }
    match (&strict, &validated) {
        (Ok(m), Some(Ok(v))) if m == v => counts[0] += 1,
        (Err(_), Some(Err(_))) => counts[1] += 1,
        (Err(_), None) => counts[2] += 1,
        (m, v) => {
            let _ = writeln!(
                failures,
                "{case}: the macro says {m:?}, the validator {v:?}"
            );
        }
    }
}

const DTYPES: [DType; 8] = DType::ALL;
const RECEIVERS: [DslKind; 6] = [
    DslKind::Jagged,
    DslKind::Pairs,
    DslKind::PerSeq,
    DslKind::Padded,
    DslKind::Dense,
    DslKind::Lengths,
];

#[test]
fn the_macro_the_validator_and_the_table_agree() {
    let mut failures = String::new();
    // Agreed accepts, agreed rejections, rejections by the DSL alone.
    let mut counts = [0usize; 3];
    let mut cases = 0;
    for d in DTYPES {
        for inner in [Inner::Two, Inner::None] {
            for kind in RECEIVERS {
                let r = receiver(kind, d);
                for spec in METHODS.iter().filter(|m| m.receivers.contains(&kind)) {
                    let type_args: &[DType] = if spec.type_argument {
                        &[DType::F32, DType::I64, DType::Bool]
                    } else {
                        &[DType::F32]
                    };
                    for &u in type_args {
                        let expr = method_call(spec.name, kind, &r, u);
                        let predicted = predict_method(spec, kind, d, u);
                        check(&mut failures, &mut counts, d, inner, &expr, Some(predicted));
                        cases += 1;
                    }
                }
                if !ELEMENTWISE_KINDS.contains(&kind) {
                    continue;
                }
                for func in FUNCTIONS {
                    let expr = function_call(func.name, &r);
                    let predicted = func.dtype.admits(d).then_some((kind, d));
                    check(&mut failures, &mut counts, d, inner, &expr, Some(predicted));
                    cases += 1;
                }
                for op in OPERATORS {
                    let expr = match op.symbol {
                        "neg" => format!("-{r}"),
                        s => format!("{r} {s} {r}"),
                    };
                    let predicted = op.dtype.admits(d).then_some((kind, d));
                    check(&mut failures, &mut counts, d, inner, &expr, Some(predicted));
                    cases += 1;
                }
                // Literals take the tensor's dtype; the macro and the validator agree on them.
                for expr in [
                    format!("{r} * 2"),
                    format!("{r} * 0.5"),
                    format!("{r} + (-1)"),
                    format!("{r}.max(-1)"),
                    format!("{r} * (2 - 1)"),
                    format!("{r}.eq(1)"),
                    format!("{r}.eq(1 + 1)"),
                    format!("{r}.eq(-max_len)"),
                    format!("{r} - max_len"),
                    format!("select({r}.lt({r}), {r}, -1)"),
                ] {
                    check(&mut failures, &mut counts, d, inner, &expr, None);
                    cases += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the checkers disagree:\n{failures}\n({cases} cases; agreed {counts:?})"
    );
    // Every method, function and operator was tried on accepting inputs.
    assert!(counts[0] > 1000 && counts[1] > 100, "{counts:?}");
    eprintln!(
        "{cases} cases: {} accepted by both, {} rejected by both, {} by the DSL's own rules",
        counts[0], counts[1], counts[2]
    );
}

/// The Rust types a scalar may have are the table's, for literal suffixes
/// and `as` alike (the phantom `Scalar` trait has the same, checked by
/// `tests/typing_agreement.rs`).
#[test]
fn scalar_types_are_the_tables() {
    for ty in typing::SCALAR_TYPES {
        for expr in [format!("xj * 2{ty}"), format!("xj * (max_len as {ty})")] {
            let (strict, _) = verdicts(DType::F32, Inner::Two, &expr);
            assert!(strict.is_ok(), "`{expr}`: {strict:?}");
        }
    }
    for ty in ["u8", "i16", "u64", "isize"] {
        for expr in [format!("xj * 2{ty}"), format!("xj * (max_len as {ty})")] {
            let (strict, _) = verdicts(DType::F32, Inner::Two, &expr);
            assert!(strict.is_err(), "`{expr}` is accepted");
        }
    }
}
