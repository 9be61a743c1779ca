//! The elementwise functions sqrt, rsqrt, abs, relu, sigmoid, tanh and pow:
//! text round trip, the validator's scalar-exponent rule, and the reference
//! against naive formulas (written independently of `f64`'s own functions
//! where one exists), on jagged inputs with zeros, negatives, NaN and Inf.

mod common;

use common::{f64_tensor, index_tensor};
use jagged_ir::{
    AttrKind, AttrValue, BinaryOp, DType, Graph, GraphBuilder, TensorType, UnaryOp,
    ValidationErrorKind, evaluate,
};

/// `offsets -> seqs (truncated) -> x : f64[%s, 2] -> op(x)`, output `y`.
fn unary_graph(op: UnaryOp) -> Graph {
    let mut b = GraphBuilder::new(format!("unary_{}", op.name()));
    b.declare_attr("max_len", AttrKind::Index, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![jagged_ir::Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let x = b.input("x", TensorType::jagged(DType::F64, s, &[2]));
    let y = b.unary(op, x);
    b.output("y", y);
    b.finish().unwrap()
}

/// Special and ordinary inputs: 12 rows of 2 over lengths [0, 5, 7] (max_len 6).
const INPUTS: [f64; 24] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    2.0,
    -3.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e-3,
    -1e-3,
    20.0,
    -20.0,
    0.25,
    // Rows of the second sequence; the last one (past max_len 6) reads as 0.
    7.5,
    -7.5,
    1e-30,
    -1e-30,
    100.0,
    -100.0,
    3.0,
    4.0,
];

/// Runs `graph` on [`INPUTS`]; returns the outputs and the naive expectation
/// of `f` (0 in the row past max_len).
fn run_unary(graph: &Graph, f: impl Fn(f64) -> f64) -> (Vec<f64>, Vec<f64>) {
    run_with(graph, &[], f)
}

/// [`run_unary`] with more attributes than `max_len`.
fn run_with(
    graph: &Graph,
    attrs: &[(&str, AttrValue)],
    f: impl Fn(f64) -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let offsets = index_tensor(&[0, 0, 5, 12], true);
    let x = f64_tensor(vec![12, 2], &INPUTS);
    let mut all = vec![("max_len", AttrValue::Index(6))];
    all.extend_from_slice(attrs);
    let out = evaluate(graph, &[("offsets", &offsets), ("x", &x)], &all).unwrap();
    let got = out["y"].to_f64();
    let want: Vec<f64> = INPUTS
        .iter()
        .enumerate()
        .map(|(k, &x)| if k >= 22 { 0.0 } else { f(x) })
        .collect();
    (got, want)
}

/// Equal within `rel` (relative, or absolute near 0), NaN where NaN, and the
/// same sign of zero and infinity.
fn assert_same(what: &str, got: &[f64], want: &[f64], rel: f64) {
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || w == 0.0 {
            g == w && g.is_sign_negative() == w.is_sign_negative()
        } else {
            (g - w).abs() <= rel * w.abs().max(1e-300)
        };
        assert!(
            ok,
            "{what}: element {k} (input {}): got {g:e}, want {w:e}",
            INPUTS[k]
        );
    }
}

/// The naive formulas, independent of the reference's code.
fn naive(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Sqrt => {
            // Newton's iteration from above; the IEEE special cases by hand.
            if x.is_nan() || x < 0.0 {
                f64::NAN
            } else if x == 0.0 || x == f64::INFINITY {
                x
            } else {
                let mut r = if x > 1.0 { x } else { 1.0 };
                for _ in 0..2000 {
                    let next = 0.5 * (r + x / r);
                    if next >= r {
                        break;
                    }
                    r = next;
                }
                r
            }
        }
        UnaryOp::Rsqrt => {
            if x == 0.0 {
                if x.is_sign_negative() {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            } else {
                1.0 / naive(UnaryOp::Sqrt, x)
            }
        }
        UnaryOp::Abs => {
            if x < 0.0 || (x == 0.0 && x.is_sign_negative()) {
                -x
            } else {
                x
            }
        }
        UnaryOp::Relu => {
            if x.is_nan() || x > 0.0 {
                x
            } else {
                0.0
            }
        }
        UnaryOp::Sigmoid => {
            // e^x / (1 + e^x) on the side where e^x does not overflow.
            if x.is_nan() {
                x
            } else if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.exp() / (1.0 + x.exp())
            }
        }
        UnaryOp::Tanh => {
            if x.is_nan() {
                x
            } else if x.abs() > 20.0 {
                x.signum()
            } else if x == 0.0 {
                x
            } else if x.abs() < 1e-4 {
                // Series: x - x^3 / 3.
                x - x * x * x / 3.0
            } else {
                let (p, m) = (x.exp(), (-x).exp());
                (p - m) / (p + m)
            }
        }
        _ => unreachable!("not tested here"),
    }
}

#[test]
fn new_unary_functions_match_naive_formulas_on_special_values() {
    for op in [
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Abs,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
    ] {
        let (got, want) = run_unary(&unary_graph(op), |x| naive(op, x));
        assert_same(op.name(), &got, &want, 1e-12);
    }
}

#[test]
fn relu_propagates_nan_and_gives_plus_zero_for_minus_zero() {
    let (got, _) = run_unary(&unary_graph(UnaryOp::Relu), |x| x);
    assert!(got[8].is_nan(), "relu(NaN) = {}", got[8]);
    assert!(got[1] == 0.0 && got[1].is_sign_positive());
    assert_eq!(got[10], 0.0);
    assert_eq!(got[9], f64::INFINITY);
}

/// `x^p` over jagged x with p a float attribute (or a const when `p_const`).
fn pow_graph(p_const: Option<f64>) -> Graph {
    let mut b = GraphBuilder::new("pow");
    b.declare_attr("max_len", AttrKind::Index, None);
    if p_const.is_none() {
        b.declare_attr("p", AttrKind::Float, None);
    }
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![jagged_ir::Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let x = b.input("x", TensorType::jagged(DType::F64, s, &[2]));
    let p = match p_const {
        Some(v) => b.constant(v, DType::F64),
        None => b.attr("p", DType::F64),
    };
    let y = b.pow(x, p);
    b.output("y", y);
    b.finish().unwrap()
}

/// IEEE `pow` by cases: integer exponents by repeated multiplication,
/// positive bases through exp/ln, the special values by their table.
fn naive_pow(x: f64, p: f64) -> f64 {
    let is_int = p.is_finite() && p == p.trunc();
    let odd = is_int && (p / 2.0) != (p / 2.0).trunc();
    if p == 0.0 || x == 1.0 {
        return 1.0;
    }
    if x.is_nan() || p.is_nan() {
        return f64::NAN;
    }
    if p.is_infinite() {
        let a = x.abs();
        return match (a == 1.0, a < 1.0, p > 0.0) {
            (true, _, _) => 1.0,
            (false, true, true) | (false, false, false) => 0.0,
            _ => f64::INFINITY,
        };
    }
    if x == 0.0 || x.is_infinite() {
        // Zero and infinity: magnitude by the sign of p (and of x's kind),
        // sign kept only for odd integer exponents of a negative x.
        let big = (x == 0.0) == (p < 0.0);
        let mag = if big { f64::INFINITY } else { 0.0 };
        return if odd && x.is_sign_negative() {
            -mag
        } else {
            mag
        };
    }
    if x < 0.0 && !is_int {
        return f64::NAN;
    }
    if is_int && p.abs() <= 64.0 {
        let mut r = 1.0;
        for _ in 0..(p.abs() as u32) {
            r *= x;
        }
        return if p < 0.0 { 1.0 / r } else { r };
    }
    let m = (p * x.abs().ln()).exp();
    if x < 0.0 && odd { -m } else { m }
}

#[test]
fn pow_by_a_scalar_follows_ieee_pow_including_negative_bases() {
    let exponents = [
        2.0,
        3.0,
        -1.0,
        -2.0,
        0.5,
        -0.5,
        1.0 / 3.0,
        0.0,
        -0.0,
        1.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        2.5,
    ];
    let graph = pow_graph(None);
    for p in exponents {
        let (by_attr, want) = run_with(&graph, &[("p", AttrValue::Float(p))], |x| naive_pow(x, p));
        assert_same(&format!("pow(x, attr {p})"), &by_attr, &want, 1e-12);
        let (by_const, _) = run_unary(&pow_graph(Some(p)), |x| x);
        assert_same(&format!("pow(x, const {p})"), &by_const, &want, 1e-12);
    }
}

#[test]
fn pow_of_negative_bases() {
    // (-2)^3 = -8, (-2)^2 = 4, (-8)^(1/3) is NaN, (-0)^-1 = -inf, (-inf)^3 = -inf.
    let cases = [
        (-2.0, 3.0, -8.0),
        (-2.0, 2.0, 4.0),
        (-8.0, 1.0 / 3.0, f64::NAN),
        (-0.0, -1.0, f64::NEG_INFINITY),
        (-0.0, -2.0, f64::INFINITY),
        (f64::NEG_INFINITY, 3.0, f64::NEG_INFINITY),
        (f64::NEG_INFINITY, -3.0, -0.0),
        (-1.0, f64::INFINITY, 1.0),
        (f64::NAN, 0.0, 1.0),
        (1.0, f64::NAN, 1.0),
    ];
    for (x, p, want) in cases {
        let g = pow_graph(Some(p));
        let offsets = index_tensor(&[0, 1], true);
        let xs = f64_tensor(vec![1, 2], &[x, x]);
        let out = evaluate(
            &g,
            &[("offsets", &offsets), ("x", &xs)],
            &[("max_len", AttrValue::Index(4))],
        )
        .unwrap();
        let got = out["y"].to_f64()[0];
        let same = (got.is_nan() && want.is_nan())
            || (got == want && got.is_sign_negative() == want.is_sign_negative());
        assert!(same, "pow({x}, {p}) = {got}, want {want}");
    }
}

#[test]
fn pow_rejects_a_tensor_exponent() {
    let mut b = GraphBuilder::new("pow_tensor");
    b.declare_attr("max_len", AttrKind::Index, None);
    let o = b.input(
        "offsets",
        TensorType::new(DType::I64, vec![jagged_ir::Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let x = b.input("x", TensorType::jagged(DType::F32, s, &[2]));
    let y = b.pow(x, x);
    b.output("y", y);
    let err = b.finish().unwrap_err();
    assert!(
        matches!(err.kind, ValidationErrorKind::NonScalarExponent { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("pow"), "{err}");
}

#[test]
fn pow_rejects_integer_operands() {
    let mut b = GraphBuilder::new("pow_int");
    let x = b.input(
        "n",
        TensorType::new(DType::I64, vec![jagged_ir::Dim::Batch]),
    );
    let p = b.constant(2.0, DType::I64);
    let y = b.binary(BinaryOp::Pow, x, p);
    b.output("y", y);
    let err = b.finish().unwrap_err();
    assert!(
        matches!(err.kind, ValidationErrorKind::BadDtype { .. }),
        "{err}"
    );
}

#[test]
fn new_functions_round_trip_through_text() {
    let mut b = GraphBuilder::new("all_new");
    b.declare_attr("max_len", AttrKind::Index, None);
    b.declare_attr("p", AttrKind::Float, Some(AttrValue::Float(1.5)));
    let o = b.input(
        "offsets",
        TensorType::new(DType::I32, vec![jagged_ir::Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let mut x = b.input("x", TensorType::jagged(DType::F32, s, &[4]));
    for op in [
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Abs,
        UnaryOp::Relu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
    ] {
        x = b.unary(op, x);
    }
    let p = b.attr("p", DType::F32);
    let two = b.constant(2.0, DType::F32);
    let q = b.mul(p, two);
    let y = b.pow(x, q);
    b.output("y", y);
    let g = b.finish().unwrap();
    let text = g.to_string();
    for name in ["sqrt", "rsqrt", "abs", "relu", "sigmoid", "tanh", "pow"] {
        assert!(
            text.contains(&format!(" = {name} %")),
            "{name} missing in\n{text}"
        );
    }
    assert_eq!(Graph::parse(&text).unwrap(), g);
    // A non-scalar exponent in text is a parse error at its line.
    let bad = text.replace("pow %8, %11", "pow %8, %8");
    assert_ne!(
        bad, text,
        "the pow line is where the test expects it:\n{text}"
    );
    let err = Graph::parse(&bad).unwrap_err();
    assert!(err.message.contains("exponent of pow"), "{err}");
    assert_eq!(err.line, 16, "{err}");
}
