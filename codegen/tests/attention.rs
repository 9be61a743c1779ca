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

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
mod common;

use common::attention_graph;
use emu::{Rng, inputs_for, rel_l2, run_sizes, tensor_bytes, tolerance};
use jagged_codegen::{Arch, DType, Spec, compile};
use jagged_ir::ops::{self, Activation, FbgemmAttentionSpec};
use jagged_ir::{AttrValue, DenseTensor, Graph};

const SCALE: f64 = 0.3;

/// Compiles `graph` for `arch` and checks every output on each layout.
fn check(graph: &Graph, max_len: usize, layouts: &[Vec<usize>], arch: Arch, seed: u64) {
    check_capped(graph, max_len, layouts, arch, seed, u32::MAX);
}

/// [`check`] with grids clamped to `max_grid` CTAs.
fn check_capped(
    graph: &Graph,
    max_len: usize,
    layouts: &[Vec<usize>],
    arch: Arch,
    seed: u64,
    max_grid: u32,
) {
    let mut rng = Rng::new(seed);
    let spec = Spec::for_graph(graph, max_len as u64, arch).expect("spec");
    let compiled = compile(graph, &spec).unwrap_or_else(|e| panic!("{}: {e}", graph.name()));
    assert_eq!(compiled.launches.len(), 1, "one fused kernel");
    for lengths in layouts {
        let inputs = inputs_for(graph, lengths, max_len, 1.5, &mut rng);
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
        let bytes: Vec<Vec<u8>> = inputs.iter().map(|(_, t)| tensor_bytes(t)).collect();
        let sizes = run_sizes(lengths, max_len);
        let outs = emu::run_capped(
            &compiled,
            &bytes,
            sizes,
            &[("scale", SCALE as f32)],
            max_grid,
        );
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
                let g = attention_graph(dtype, heads, head_dim, activation, causal);
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
    let g = attention_graph(DType::BF16, 1, 64, Activation::Softmax, true);
    check(&g, 150, &[vec![150, 0, 131, 3, 170]], Arch::Sm90a, 600);
    let g = attention_graph(DType::F16, 1, 32, Activation::Silu, false);
    check(&g, 100, &[vec![97, 100, 1]], Arch::Sm90a, 601);
}

/// A grid smaller than the work: CTAs loop over work items.
#[test]
fn grid_stride() {
    let g = attention_graph(DType::BF16, 2, 32, Activation::Softmax, true);
    check_capped(&g, 70, &[vec![70, 5, 0, 66]], Arch::Sm80, 700, 3);
}

/// Buckets of 1024 rows and more use 128-row query blocks: 4 warps of 32
/// rows (two m16 tiles each) for D = 64, 8 warps of 16 rows for D = 128.
#[test]
fn long_buckets_use_128_row_query_blocks() {
    let g = attention_graph(DType::BF16, 1, 64, Activation::Softmax, true);
    let spec = Spec::for_graph(&g, 1100, Arch::Sm80).expect("spec");
    let compiled = compile(&g, &spec).expect("compile");
    assert_eq!(compiled.launches[0].block, 128);
    check(&g, 1100, &[vec![200, 1, 0, 129], vec![]], Arch::Sm80, 800);
    // Several items per CTA with two row tiles per warp.
    check_capped(&g, 1100, &[vec![300, 7, 0, 140]], Arch::Sm90a, 802, 2);
    // Two row tiles with SiLU (no score mask) and with FBGEMM's `j >= i` mask.
    let g = attention_graph(DType::F16, 2, 64, Activation::Silu, false);
    check(&g, 1024, &[vec![150, 70, 0]], Arch::Sm90a, 803);
    let g = ops::fbgemm_jagged_flash_attention_basic(&FbgemmAttentionSpec {
        input_dtype: DType::BF16,
        dtype: DType::BF16,
        offsets: DType::I64,
        head_dim: 64,
        use_mask: true,
    })
    .expect("graph");
    check(&g, 1024, &[vec![140, 20, 0]], Arch::Sm80, 804);
    let g = attention_graph(DType::F16, 2, 128, Activation::Silu, false);
    let spec = Spec::for_graph(&g, 1024, Arch::Sm90a).expect("spec");
    assert_eq!(compile(&g, &spec).expect("compile").launches[0].block, 256);
    check(&g, 1024, &[vec![150, 70, 0]], Arch::Sm90a, 801);
}
