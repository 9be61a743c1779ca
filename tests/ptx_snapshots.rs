//! Golden PTX: the launch plan and PTX of every primitive of OPS.md for two
//! fixed specializations. A diff here is a review item: read the new PTX
//! (`cargo insta review`) before accepting it, never accept blindly.
//!
//! - `f32_w64_n128_sm80`: f32 values, inner `[64]`, max_len 128, i32 offsets, sm_80.
//! - `bf16_w128_n1024_sm90a`: bf16 values, inner `[128]`, max_len 1024, i64 offsets, sm_90a.

use jagged_codegen::{Arch, Spec, compile};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{DType, Graph, ReduceOp};

struct Fixed {
    name: &'static str,
    dtype: DType,
    index: DType,
    inner: usize,
    max_len: u64,
    arch: Arch,
}

const SPECS: [Fixed; 2] = [
    Fixed {
        name: "f32_w64_n128_sm80",
        dtype: DType::F32,
        index: DType::I32,
        inner: 64,
        max_len: 128,
        arch: Arch::Sm80,
    },
    Fixed {
        name: "bf16_w128_n1024_sm90a",
        dtype: DType::BF16,
        index: DType::I64,
        inner: 128,
        max_len: 1024,
        arch: Arch::Sm90a,
    },
];

/// Every primitive's graph, with a snapshot name.
fn primitives(f: &Fixed) -> Vec<(&'static str, Graph)> {
    let spec = JaggedSpec {
        dtype: f.dtype,
        offsets: f.index,
        inner: vec![f.inner],
    };
    let graphs = [
        ("complete_cumsum", ops::complete_cumsum(f.index)),
        ("jagged_to_padded_dense", ops::jagged_to_padded_dense(&spec)),
        ("dense_to_jagged", ops::dense_to_jagged(&spec)),
        (
            "jagged_dense_elementwise_mul",
            ops::jagged_dense_elementwise_mul(&spec),
        ),
        ("jagged_softmax", ops::jagged_softmax(&spec)),
        (
            "jagged_reduce_sum",
            ops::jagged_reduce(&spec, ReduceOp::Sum),
        ),
        (
            "jagged_reduce_mean",
            ops::jagged_reduce(&spec, ReduceOp::Mean),
        ),
        (
            "jagged_reduce_max",
            ops::jagged_reduce(&spec, ReduceOp::Max),
        ),
        (
            "masked_select_jagged",
            ops::masked_select_jagged(&spec, DType::U8),
        ),
    ];
    graphs
        .into_iter()
        .map(|(name, g)| (name, g.unwrap_or_else(|e| panic!("{name}: {e}"))))
        .collect()
}

fn snapshot(f: &Fixed) {
    for (op, graph) in primitives(f) {
        let spec = Spec::for_graph(&graph, f.max_len, f.arch).expect("spec");
        let kernel = compile(&graph, &spec).unwrap_or_else(|e| panic!("{op} for {spec}: {e}"));
        let text = format!(
            "// spec: {spec}\n// plan:\n{}\n{}",
            comment(&kernel.to_string()),
            kernel.ptx
        );
        insta::assert_snapshot!(format!("{op}__{}", f.name), text);
    }
}

fn comment(text: &str) -> String {
    text.lines()
        .map(|l| format!("// {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn primitives_f32_w64_n128_sm80() {
    snapshot(&SPECS[0]);
}

#[test]
fn primitives_bf16_w128_n1024_sm90a() {
    snapshot(&SPECS[1]);
}
