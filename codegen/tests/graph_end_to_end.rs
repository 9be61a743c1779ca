//! End to end: the builtin op graphs of `jagged_ir::ops`, compiled by
//! `compile(graph, spec)` (pattern matching, lowering, PTX), run in the
//! emulator from the launch metadata alone, against jagged-ir's f64
//! reference evaluator.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;

use emu::{Rng, rel_l2, round_to, tolerance};
use jagged_codegen::{Arch, DType, RunSizes, Spec, compile};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrKind, AttrValue, DenseTensor, Dim, Graph, GraphBuilder, ReduceOp, TensorType};

const PADDING: f64 = -1.5;
const SCALE: f64 = 0.75;

/// Random inputs for every graph input, by name and type, on `lengths`.
fn inputs_for(
    graph: &Graph,
    lengths: &[usize],
    max_len: usize,
    rng: &mut Rng,
) -> Vec<(String, DenseTensor)> {
    let batch = lengths.len();
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets.last().copied().unwrap_or(0.0) + l as f64);
    }
    graph
        .inputs()
        .map(|(_, name, ty)| {
            let mut shape = Vec::new();
            for d in &ty.dims {
                shape.push(match d {
                    Dim::Ragged(_) => total,
                    Dim::Batch => batch,
                    Dim::BatchPlusOne => batch + 1,
                    Dim::MaxLen => max_len,
                    Dim::Static(n) => *n,
                });
            }
            let n: usize = shape.iter().product();
            let values: Vec<f64> = match name {
                "offsets" => offsets.clone(),
                "lengths" => lengths.iter().map(|&l| l as f64).collect(),
                "mask" => (0..n).map(|_| rng.below(2) as f64).collect(),
                _ => (0..n).map(|_| round_to(rng.float(2.0), ty.dtype)).collect(),
            };
            let tensor = DenseTensor::from_f64(ty.dtype, shape, &values).expect("input tensor");
            (name.to_string(), tensor)
        })
        .collect()
}

fn to_bytes(t: &DenseTensor) -> Vec<u8> {
    let values = t.to_f64();
    let dtype = t.dtype();
    if dtype.is_float() {
        emu::encode_floats(&values, dtype)
    } else {
        let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        // Masks (u8 / bool) are one byte per element.
        let elem = if dtype.is_index() { dtype } else { DType::U8 };
        emu::encode_ints(&ints, elem)
    }
}

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
            let inputs = inputs_for(graph, lengths, max_len, &mut rng);
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
            let sizes = RunSizes {
                batch: lengths.len() as u64,
                total_rows: lengths.iter().sum::<usize>() as u64,
                max_len: max_len as u64,
            };
            let bytes: Vec<Vec<u8>> = inputs.iter().map(|(_, t)| to_bytes(t)).collect();
            let outs = emu::run(
                &compiled,
                &bytes,
                sizes,
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
