//! Every IR elementwise function through the map template (one jagged
//! operand, `emit_unary` / `emit_binary`), run in the emulator against
//! jagged-ir's f64 reference evaluator: random values plus zeros, negatives,
//! NaN, infinities and subnormals; NaN and infinities must match position by
//! position, the finite rest within the dtype's tolerance.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;
#[path = "../../tests/common/tools.rs"]
mod tools;

use emu::{Rng, decode_floats, encode_floats, encode_ints, round_to, tolerance};
use jagged_codegen::templates::map::{MapExpr, MapOperand, MapSource};
use jagged_codegen::{Arch, DType, Primitive, RunSizes, Spec, lower};
use jagged_ir::{
    AttrKind, AttrValue, BinaryOp, DenseTensor, Dim, Graph, GraphBuilder, TensorType, UnaryOp,
};

const MAX_LEN: usize = 8;

/// Special values every function sees.
const SPECIAL: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -2.0,
    3.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e-3,
    -1e-3,
    30.0,
    -30.0,
    1e-40,
    0.29,
];

/// How the function is built: a unary op, or a binary op with a scalar
/// right operand (a const or the float attribute `p`).
#[derive(Clone, Copy, Debug)]
enum Fun {
    Unary(UnaryOp),
    WithConst(BinaryOp, f64),
    WithAttr(BinaryOp, f64),
}

/// The reference graph of `fun` over `x : dtype[%s, inner]`.
fn graph(fun: Fun, dtype: DType, inner: &[usize]) -> Graph {
    let mut b = GraphBuilder::new("elementwise");
    b.declare_attr("max_len", AttrKind::Index, None);
    if let Fun::WithAttr(..) = fun {
        b.declare_attr("p", AttrKind::Float, None);
    }
    let o = b.input(
        "offsets",
        TensorType::new(DType::I32, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let x = b.input("x", TensorType::jagged(dtype, s, inner));
    let y = match fun {
        Fun::Unary(op) => b.unary(op, x),
        Fun::WithConst(op, c) => {
            let c = b.constant(c, dtype);
            b.binary(op, x, c)
        }
        Fun::WithAttr(op, _) => {
            let p = b.attr("p", dtype);
            b.binary(op, x, p)
        }
    };
    b.output("y", y);
    b.finish().expect("graph")
}

/// The map primitive of `fun` (inputs: x, offsets).
fn primitive(fun: Fun) -> Primitive {
    let x = Box::new(MapExpr::Operand(0));
    let expr = match fun {
        Fun::Unary(op) => MapExpr::Unary(op, x),
        Fun::WithConst(op, c) => MapExpr::Binary(op, x, Box::new(MapExpr::Const(c as f32))),
        Fun::WithAttr(op, _) => MapExpr::Binary(op, x, Box::new(MapExpr::Attr("p".into()))),
    };
    Primitive::Map {
        operands: vec![MapOperand {
            source: MapSource::Jagged,
            input: 0,
        }],
        offsets_input: 1,
        expr,
    }
}

/// Runs `fun` on the emulator and the reference; checks specials exactly
/// and the finite part within `tolerance(dtype)`.
fn check(fun: Fun, dtype: DType, inner: &[usize], seed: u64) {
    let mut rng = Rng::new(seed);
    let w: usize = inner.iter().product();
    let lengths = [0usize, 3, MAX_LEN + 2, 1, 0, 6];
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0i64];
    for &l in &lengths {
        offsets.push(offsets[offsets.len() - 1] + l as i64);
    }
    let mut values: Vec<f64> = (0..total * w)
        .map(|k| match k {
            k if k < SPECIAL.len() => SPECIAL[k],
            // Wide positives for sqrt / log / pow, the rest around 0.
            k if k % 3 == 0 => rng.float(8.0).abs(),
            _ => rng.float(4.0),
        })
        .map(|v| round_to(v, dtype))
        .collect();
    // Specials also in the last sequence, whose rows are all below max_len.
    let last = (total - 6) * w;
    values[last..last + 4].copy_from_slice(&[f64::NAN, -0.0, f64::INFINITY, -4.0]);

    let g = graph(fun, dtype, inner);
    let spec = Spec::for_graph(&g, MAX_LEN as u64, Arch::Sm80).expect("spec");
    let compiled = lower(&primitive(fun), &spec).expect("lowering");
    let p = match fun {
        Fun::WithAttr(_, p) => p,
        _ => 0.0,
    };
    let sizes = RunSizes {
        batch: lengths.len() as u64,
        total_rows: total as u64,
        max_len: MAX_LEN as u64,
    };
    let out = emu::run(
        &compiled,
        &[
            encode_floats(&values, dtype),
            encode_ints(&offsets, DType::I32),
        ],
        sizes,
        &[("p", p as f32)],
    );
    let got = decode_floats(&out[0], dtype);

    let mut shape = vec![total];
    shape.extend_from_slice(inner);
    let x = DenseTensor::from_f64(dtype, shape, &values).expect("x");
    let o = DenseTensor::from_f64(
        DType::I32,
        vec![offsets.len()],
        &offsets.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    )
    .expect("offsets");
    let mut attrs = vec![("max_len", AttrValue::Index(MAX_LEN))];
    if let Fun::WithAttr(..) = fun {
        attrs.push(("p", AttrValue::Float(p)));
    }
    let want =
        jagged_ir::evaluate(&g, &[("offsets", &o), ("x", &x)], &attrs).expect("reference")["y"]
            .to_f64();

    let what = format!("{fun:?} {dtype} inner {inner:?}");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (k, (&g, &r)) in got.iter().zip(&want).enumerate() {
        let input = values[k];
        if r.is_nan() || g.is_nan() {
            assert!(
                r.is_nan() && g.is_nan(),
                "{what}: element {k} (x = {input:e}): kernel {g:e}, reference {r:e}"
            );
        } else if r.is_infinite() || g.is_infinite() {
            assert_eq!(g, r, "{what}: element {k} (x = {input:e})");
        } else {
            diff += (g - r) * (g - r);
            norm += r * r;
        }
    }
    let err = if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    };
    assert!(
        err <= tolerance(dtype),
        "{what}: relative error {err:e}\nkernel {got:?}\nreference {want:?}"
    );
}

const UNARY: [UnaryOp; 10] = UnaryOp::ALL;

#[test]
fn unary_functions_match_the_reference_in_f32() {
    for (k, op) in UNARY.into_iter().enumerate() {
        check(Fun::Unary(op), DType::F32, &[4], k as u64);
        check(Fun::Unary(op), DType::F32, &[3], 100 + k as u64);
    }
}

#[test]
fn unary_functions_match_the_reference_in_bf16_and_f16() {
    for (k, op) in UNARY.into_iter().enumerate() {
        check(Fun::Unary(op), DType::BF16, &[8], 200 + k as u64);
        check(Fun::Unary(op), DType::F16, &[2], 300 + k as u64);
    }
}

#[test]
fn pow_by_a_scalar_matches_the_reference() {
    let exponents = [
        2.0,
        3.0,
        -1.0,
        -2.0,
        0.5,
        -0.5,
        1.0 / 3.0,
        0.0,
        1.0,
        2.5,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for (k, p) in exponents.into_iter().enumerate() {
        check(
            Fun::WithAttr(BinaryOp::Pow, p),
            DType::F32,
            &[4],
            400 + k as u64,
        );
        if p.is_finite() {
            // Const maps take finite constants only.
            check(
                Fun::WithConst(BinaryOp::Pow, p),
                DType::F32,
                &[3],
                500 + k as u64,
            );
        }
    }
    check(
        Fun::WithAttr(BinaryOp::Pow, f64::NAN),
        DType::F32,
        &[4],
        450,
    );
    check(Fun::WithAttr(BinaryOp::Pow, 2.0), DType::BF16, &[8], 460);
}

#[test]
fn max_and_min_propagate_nan_like_the_reference() {
    for (k, op) in [BinaryOp::Max, BinaryOp::Min].into_iter().enumerate() {
        check(Fun::WithConst(op, 0.5), DType::F32, &[4], 600 + k as u64);
        check(
            Fun::WithAttr(op, f64::NAN),
            DType::F32,
            &[4],
            610 + k as u64,
        );
        check(Fun::WithAttr(op, -1.0), DType::BF16, &[8], 620 + k as u64);
    }
}

/// One map kernel holding every function (unary ops chained, then pow by
/// an attribute and max/min by constants) assembles with ptxas for both
/// archs without spills.
#[test]
fn every_elementwise_function_assembles_with_ptxas() {
    let found = jagged_codegen::ptxas::find().ok_or_else(|| "was not found".to_string());
    let Some(ptxas_path) = tools::require(
        "every_elementwise_function_assembles_with_ptxas",
        "ptxas",
        found,
    ) else {
        return;
    };
    let mut expr = MapExpr::Operand(0);
    for op in UnaryOp::ALL {
        expr = MapExpr::Unary(op, Box::new(expr));
    }
    expr = MapExpr::Binary(
        BinaryOp::Pow,
        Box::new(expr),
        Box::new(MapExpr::Attr("p".into())),
    );
    for (op, c) in [(BinaryOp::Max, -1.0), (BinaryOp::Min, 4.0)] {
        expr = MapExpr::Binary(op, Box::new(expr), Box::new(MapExpr::Const(c)));
    }
    let prim = Primitive::Map {
        operands: vec![MapOperand {
            source: MapSource::Jagged,
            input: 0,
        }],
        offsets_input: 1,
        expr,
    };
    for arch in Arch::ALL {
        for (inner, dtype) in [(4, DType::F32), (8, DType::BF16)] {
            let spec = Spec::new(vec![inner], 64, dtype, DType::I32, arch);
            let compiled = lower(&prim, &spec).expect("lowering");
            let report = jagged_codegen::ptxas::assemble_with(&ptxas_path, &compiled.ptx, arch)
                .unwrap_or_else(|e| panic!("{spec}: {e}\n{}", compiled.ptx));
            assert_eq!(report.kernels.len(), 1, "{:#?}", report.lines);
            assert!(
                report.offenders().is_empty(),
                "{spec}: spills or stack frame:\n{}",
                report.lines.join("\n")
            );
        }
    }
}
