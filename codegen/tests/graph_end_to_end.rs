//! End to end: the builtin op graphs of `jagged_ir::ops`, compiled by
//! `compile(graph, spec)` (pattern matching, lowering, PTX), run in the
//! emulator from the launch metadata alone, against jagged-ir's f64
//! reference evaluator.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;

use emu::{Rng, inputs_for, rel_l2, run_sizes, tensor_bytes, tolerance};
use jagged_codegen::{Arch, DType, Spec, compile};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrKind, AttrValue, DenseTensor, Dim, Graph, GraphBuilder, ReduceOp, TensorType};

const PADDING: f64 = -1.5;
const SCALE: f64 = 0.75;

fn decode(bytes: &[u8], dtype: DType) -> Vec<f64> {
    match dtype {
        DType::I32 | DType::I64 => emu::decode_ints(bytes, dtype)
            .into_iter()
            .map(|x| x as f64)
            .collect(),
        _ => emu::decode_floats(bytes, dtype),
    }
}

/// Compiles `graph` for both archs and checks it on several layouts.
fn check(graph: &Graph, max_len: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut random: Vec<usize> = (0..7)
        .map(|_| rng.below(max_len as u64 + 9) as usize)
        .collect();
    random[1] = 0;
    let layouts = vec![
        vec![],
        vec![0, 0],
        vec![1],
        vec![0, max_len + 5, 1, max_len, 2],
        random,
    ];
    for arch in Arch::ALL {
        let spec = Spec::for_graph(graph, max_len as u64, arch).expect("spec");
        let compiled = compile(graph, &spec).unwrap_or_else(|e| panic!("{}: {e}", graph.name()));
        for lengths in &layouts {
            let inputs = inputs_for(graph, lengths, max_len, 2.0, &mut rng);
            let named: Vec<(&str, &DenseTensor)> =
                inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let attrs = [
                ("max_len", AttrValue::Index(max_len)),
                ("padding_value", AttrValue::Float(PADDING)),
                ("scale", AttrValue::Float(SCALE)),
            ];
            let attrs: Vec<(&str, AttrValue)> = attrs
                .into_iter()
                .filter(|(n, _)| graph.attr(n).is_some())
                .collect();
            let expected = jagged_ir::evaluate(graph, &named, &attrs).expect("reference");
            let bytes: Vec<Vec<u8>> = inputs.iter().map(|(_, t)| tensor_bytes(t)).collect();
            let outs = emu::run(
                &compiled,
                &bytes,
                run_sizes(lengths, max_len),
                &[("padding_value", PADDING as f32), ("scale", SCALE as f32)],
            );
            for (k, out) in graph.outputs().iter().enumerate() {
                let reference = expected[&out.name].to_f64();
                let meta = &compiled.outputs[k];
                let got = decode(&outs[k], meta.elem);
                // Data-dependent outputs are allocated at capacity: compare the used part.
                let got = &got[..reference.len().min(got.len())];
                let what = format!(
                    "{} {arch} output {} lengths {lengths:?}",
                    graph.name(),
                    out.name
                );
                if meta.elem.is_float() {
                    let err = rel_l2(got, &reference);
                    assert!(
                        err <= tolerance(spec.dtype),
                        "{what}: error {err:e}\n{got:?}\n{reference:?}"
                    );
                } else {
                    assert_eq!(got, &reference[..], "{what}");
                }
            }
        }
    }
}

fn jspec(dtype: DType, offsets: DType, inner: &[usize]) -> JaggedSpec {
    JaggedSpec {
        dtype,
        offsets,
        inner: inner.to_vec(),
    }
}

#[test]
fn complete_cumsum() {
    for (k, dt) in [DType::I32, DType::I64].into_iter().enumerate() {
        check(&ops::complete_cumsum(dt).expect("graph"), 16, k as u64);
    }
}

#[test]
fn jagged_to_padded_dense() {
    check(
        &ops::jagged_to_padded_dense(&jspec(DType::F32, DType::I32, &[8])).expect("graph"),
        12,
        10,
    );
    check(
        &ops::jagged_to_padded_dense(&jspec(DType::BF16, DType::I64, &[3])).expect("graph"),
        9,
        11,
    );
}

#[test]
fn dense_to_jagged() {
    check(
        &ops::dense_to_jagged(&jspec(DType::F32, DType::I64, &[4])).expect("graph"),
        10,
        20,
    );
    check(
        &ops::dense_to_jagged(&jspec(DType::F16, DType::I32, &[2, 3])).expect("graph"),
        7,
        21,
    );
}

#[test]
fn jagged_dense_elementwise_mul() {
    check(
        &ops::jagged_dense_elementwise_mul(&jspec(DType::F32, DType::I32, &[16])).expect("graph"),
        11,
        30,
    );
    check(
        &ops::jagged_dense_elementwise_mul(&jspec(DType::BF16, DType::I64, &[5])).expect("graph"),
        6,
        31,
    );
}

#[test]
fn jagged_softmax() {
    check(
        &ops::jagged_softmax(&jspec(DType::F32, DType::I32, &[4])).expect("graph"),
        20,
        40,
    );
    check(
        &ops::jagged_softmax(&jspec(DType::BF16, DType::I64, &[3])).expect("graph"),
        300,
        41,
    );
}

#[test]
fn jagged_reduce() {
    for (k, op) in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max]
        .into_iter()
        .enumerate()
    {
        check(
            &ops::jagged_reduce(&jspec(DType::F32, DType::I32, &[8]), op).expect("graph"),
            13,
            50 + k as u64,
        );
        check(
            &ops::jagged_reduce(&jspec(DType::BF16, DType::I64, &[3]), op).expect("graph"),
            270,
            60 + k as u64,
        );
    }
}

#[test]
fn masked_select_jagged() {
    check(
        &ops::masked_select_jagged(&jspec(DType::F32, DType::I32, &[4]), DType::U8).expect("graph"),
        8,
        70,
    );
    check(
        &ops::masked_select_jagged(&jspec(DType::BF16, DType::I64, &[3]), DType::Bool)
            .expect("graph"),
        8,
        71,
    );
}

/// A fused elementwise graph beyond the builtin ops: per-sequence rows
/// broadcast over jagged rows, a float attribute, and exp / silu.
fn centered_scaled(dtype: DType, offsets: DType, inner: &[usize]) -> Graph {
    let mut g = GraphBuilder::new("centered_scaled");
    g.declare_attr("max_len", AttrKind::Index, None);
    g.declare_attr("scale", AttrKind::Float, Some(AttrValue::Float(1.0)));
    let o = g.input("offsets", TensorType::new(offsets, vec![Dim::BatchPlusOne]));
    let s = g.seqs(o, true);
    let x = g.input("values", TensorType::jagged(dtype, s, inner));
    let bias = g.input("bias", TensorType::dense(dtype, &[Dim::Batch], inner));
    let scale = g.attr("scale", dtype);
    let centered = g.sub(x, bias);
    let scaled = g.mul(centered, scale);
    let e = g.exp(scaled);
    let y = g.silu(scaled);
    let z = g.add(e, y);
    g.output("values", z);
    g.finish().expect("graph")
}

#[test]
fn fused_map_with_per_sequence_operand_and_attribute() {
    check(&centered_scaled(DType::F32, DType::I32, &[8]), 10, 80);
    check(&centered_scaled(DType::BF16, DType::I64, &[5]), 300, 81);
}
