//! Fused flash attention: `jagged_flash_attention` and
//! `fbgemm_jagged_flash_attention_basic` graphs compiled by `compile(graph,
//! spec)` into one tensor-core kernel, run in the emulator (memory checker
//! on, outputs poisoned) against jagged-ir's f64 reference evaluator.
//!
//! Sizes are small (the emulator interprets every lane): a few sequences of
//! at most ~70 rows, H <= 2, covering empty sequences, length 1, a max_len
//! that is not a multiple of the tiles and sequences longer than max_len.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;

use emu::{Rng, rel_l2, round_to, tolerance};
use jagged_codegen::{Arch, DType, RunSizes, Spec, compile};
use jagged_ir::ops::{self, Activation, AttentionSpec, FbgemmAttentionSpec};
use jagged_ir::{AttrValue, DenseTensor, Dim, Graph};

const SCALE: f64 = 0.3;

/// Random inputs for the graph's inputs (`offsets` from `lengths`).
fn inputs_for(graph: &Graph, lengths: &[usize], rng: &mut Rng) -> Vec<(String, DenseTensor)> {
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets.last().copied().unwrap_or(0.0) + l as f64);
    }
    graph
        .inputs()
        .map(|(_, name, ty)| {
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Ragged(_) => total,
                    Dim::BatchPlusOne => lengths.len() + 1,
                    Dim::Static(n) => *n,
                    other => panic!("unexpected dim {other:?}"),
                })
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = if name == "offsets" {
                offsets.clone()
            } else {
                (0..n).map(|_| round_to(rng.float(1.5), ty.dtype)).collect()
            };
            let tensor = DenseTensor::from_f64(ty.dtype, shape, &values).expect("input tensor");
            (name.to_string(), tensor)
        })
        .collect()
}

fn to_bytes(t: &DenseTensor) -> Vec<u8> {
    let values = t.to_f64();
    if t.dtype().is_float() {
        emu::encode_floats(&values, t.dtype())
    } else {
        let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        emu::encode_ints(&ints, t.dtype())
    }
}

/// Compiles `graph` for `arch` and checks every output on each layout.
fn check(graph: &Graph, max_len: usize, layouts: &[Vec<usize>], arch: Arch, seed: u64) {
    let mut rng = Rng::new(seed);
    let spec = Spec::for_graph(graph, max_len as u64, arch).expect("spec");
    let compiled = compile(graph, &spec).unwrap_or_else(|e| panic!("{}: {e}", graph.name()));
    assert_eq!(compiled.launches.len(), 1, "one fused kernel");
    for lengths in layouts {
        let inputs = inputs_for(graph, lengths, &mut rng);
        let named: Vec<(&str, &DenseTensor)> =
            inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let attrs: Vec<(&str, AttrValue)> = [
            ("max_len", AttrValue::Index(max_len)),
            ("scale", AttrValue::Float(SCALE)),
        ]
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
        let outs = emu::run(&compiled, &bytes, sizes, &[("scale", SCALE as f32)]);
        for (k, out) in graph.outputs().iter().enumerate() {
            let reference = expected[&out.name].to_f64();
            let got = emu::decode_floats(&outs[k], compiled.outputs[k].elem);
            let err = rel_l2(&got, &reference);
            assert!(
                err <= tolerance(spec.dtype),
                "{} {spec} output {} lengths {lengths:?}: error {err:e}",
                graph.name(),
                out.name
            );
        }
    }
}

fn attention(
    dtype: DType,
    heads: usize,
    head_dim: usize,
    activation: Activation,
    causal: bool,
) -> Graph {
    ops::jagged_flash_attention(&AttentionSpec {
        input_dtype: dtype,
        dtype,
        offsets: DType::I32,
        heads,
        head_dim,
        value_dim: head_dim,
        causal,
        activation,
    })
    .expect("graph")
}

/// Layouts for `max_len = 40` (not a multiple of 32 or 64): empty
/// sequences, length 1, a sequence longer than max_len, a full one, odd ones.
fn layouts() -> Vec<Vec<usize>> {
    vec![vec![], vec![0, 0], vec![1, 0, 45, 7], vec![40, 13, 0, 2]]
}

/// Every (dtype, activation, causal) for one head dim.
fn check_head_dim(head_dim: usize, heads: usize, seed: u64) {
    let mut k = 0;
    for dtype in [DType::F16, DType::BF16] {
        for activation in [Activation::Softmax, Activation::Silu] {
            for causal in [false, true] {
                let g = attention(dtype, heads, head_dim, activation, causal);
                check(&g, 40, &layouts(), Arch::Sm80, seed + k);
                k += 1;
            }
        }
    }
}

#[test]
fn head_dim_32() {
    check_head_dim(32, 2, 100);
}

#[test]
fn head_dim_64() {
    check_head_dim(64, 2, 200);
}

#[test]
fn head_dim_128() {
    check_head_dim(128, 1, 300);
}

#[test]
fn head_dim_256() {
    check_head_dim(256, 1, 400);
}

/// FBGEMM's variant (no scale, softmax then `/ max_len`, `j >= i` mask after
/// normalization) goes through the same fused template.
#[test]
fn fbgemm_basic() {
    for (k, (dtype, use_mask)) in [
        (DType::BF16, false),
        (DType::F16, true),
        (DType::BF16, true),
    ]
    .into_iter()
    .enumerate()
    {
        let g = ops::fbgemm_jagged_flash_attention_basic(&FbgemmAttentionSpec {
            input_dtype: dtype,
            dtype,
            offsets: DType::I64,
            head_dim: 64,
            use_mask,
        })
        .expect("graph");
        check(&g, 40, &layouts(), Arch::Sm80, 500 + k as u64);
    }
}

/// Longer sequences: several key blocks (the cp.async pipeline turns over)
/// and several query blocks per sequence, on sm_90a PTX.
#[test]
fn several_blocks() {
    let g = attention(DType::BF16, 1, 64, Activation::Softmax, true);
    check(&g, 150, &[vec![150, 0, 131, 3, 170]], Arch::Sm90a, 600);
    let g = attention(DType::F16, 1, 32, Activation::Silu, false);
    check(&g, 100, &[vec![97, 100, 1]], Arch::Sm90a, 601);
}

/// A grid smaller than the work: CTAs loop over work items.
#[test]
fn grid_stride() {
    let g = attention(DType::BF16, 2, 32, Activation::Softmax, true);
    let spec = Spec::for_graph(&g, 70, Arch::Sm80).expect("spec");
    let compiled = compile(&g, &spec).expect("compile");
    let lengths = [70usize, 5, 0, 66];
    let mut rng = Rng::new(700);
    let inputs = inputs_for(&g, &lengths, &mut rng);
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let attrs = [
        ("max_len", AttrValue::Index(70)),
        ("scale", AttrValue::Float(SCALE)),
    ];
    let expected = jagged_ir::evaluate(&g, &named, &attrs).expect("reference");
    let sizes = RunSizes {
        batch: 4,
        total_rows: 141,
        max_len: 70,
    };
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|(_, t)| to_bytes(t)).collect();
    let outs = emu::run_capped(&compiled, &bytes, sizes, &[("scale", SCALE as f32)], 3);
    for (k, out) in g.outputs().iter().enumerate() {
        let got = emu::decode_floats(&outs[k], compiled.outputs[k].elem);
        let err = rel_l2(&got, &expected[&out.name].to_f64());
        assert!(err <= tolerance(DType::BF16), "{}: {err:e}", out.name);
    }
}

/// Buckets of 1024 rows and more use 128-row query blocks (8 warps).
#[test]
fn long_buckets_use_128_row_query_blocks() {
    let g = attention(DType::BF16, 1, 64, Activation::Softmax, true);
    let spec = Spec::for_graph(&g, 1100, Arch::Sm80).expect("spec");
    let compiled = compile(&g, &spec).expect("compile");
    assert_eq!(compiled.launches[0].block, 256);
    check(&g, 1100, &[vec![200, 1, 0, 129], vec![]], Arch::Sm80, 800);
    let g = attention(DType::F16, 2, 128, Activation::Silu, false);
    check(&g, 1024, &[vec![150, 70, 0]], Arch::Sm90a, 801);
}
