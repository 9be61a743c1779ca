//! Golden PTX of the interaction ops (`jagged::ops::interactions`): the
//! launch plan and PTX of every op for two fixed specializations. A diff
//! here is a review item: read the new PTX (`cargo insta review`) before
//! accepting it, never accept blindly.
//!
//! - `f32_64x48_n128_sm80`: f32 inputs (SIMT loops), dims 64 and 48,
//!   max_len 128, i32 offsets, sm_80.
//! - `bf16_128x64_n1024_sm90a`: bf16 inputs (tensor cores), dims 128 and
//!   64, max_len 1024, i64 offsets, sm_90a.

use jagged::codegen::{Arch, Spec, compile};
use jagged::ir::{DType, Graph};
use jagged::ops::interactions::*;

struct Fixed {
    name: &'static str,
    dtype: DType,
    index: DType,
    dims: (usize, usize),
    max_len: u64,
    arch: Arch,
}

const SPECS: [Fixed; 2] = [
    Fixed {
        name: "f32_64x48_n128_sm80",
        dtype: DType::F32,
        index: DType::I32,
        dims: (64, 48),
        max_len: 128,
        arch: Arch::Sm80,
    },
    Fixed {
        name: "bf16_128x64_n1024_sm90a",
        dtype: DType::BF16,
        index: DType::I64,
        dims: (128, 64),
        max_len: 1024,
        arch: Arch::Sm90a,
    },
];

fn graphs(f: &Fixed) -> Vec<(&'static str, Graph)> {
    let (t, i, (a, c)) = (f.dtype, f.index, f.dims);
    let graphs = [
        ("jagged_dense_bmm", jagged_dense_bmm_full::graph(t, a, c, i)),
        (
            "jagged_jagged_bmm",
            jagged_jagged_bmm_full::graph(t, a, c, i),
        ),
        ("jagged_dense_dot", jagged_dense_dot_full::graph(t, a, c, i)),
        (
            "jagged_pairwise_dot",
            jagged_pairwise_dot_full::graph(t, a, i),
        ),
        (
            "jagged_dense_bmm_backward",
            jagged_dense_bmm_backward_full::graph(t, a, c, i),
        ),
        (
            "jagged_jagged_bmm_backward",
            jagged_jagged_bmm_backward_full::graph(t, a, c, i),
        ),
    ];
    graphs
        .into_iter()
        .map(|(name, g)| (name, g.unwrap_or_else(|e| panic!("{name}: {e}"))))
        .collect()
}

fn comment(text: &str) -> String {
    text.lines()
        .map(|l| format!("// {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn snapshot(f: &Fixed) {
    for (op, graph) in graphs(f) {
        let spec = Spec::for_graph(&graph, f.max_len, f.arch).expect("spec");
        let kernel = compile(&graph, &spec).unwrap_or_else(|e| panic!("{op} for {spec}: {e}"));
        let text = format!(
            "// spec: {spec}\n// graph:\n{}\n// plan:\n{}\n{}",
            comment(&graph.to_string()),
            comment(&kernel.to_string()),
            kernel.ptx
        );
        insta::assert_snapshot!(format!("{op}__{}", f.name), text);
    }
}

#[test]
fn interactions_f32_64x48_n128_sm80() {
    snapshot(&SPECS[0]);
}

#[test]
fn interactions_bf16_128x64_n1024_sm90a() {
    snapshot(&SPECS[1]);
}
