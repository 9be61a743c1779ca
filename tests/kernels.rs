//! Every builtin op x dtype x offsets type x arch, through the whole stack
//! (`jagged_ir::ops` graph -> `compile` -> `Runtime::run_graph` on the
//! emulator, memory checker on, outputs poisoned) against the f64 reference
//! evaluator, on jagged layouts with empty sequences, length 1, lengths above
//! `max_len` and not a multiple of any tile, `B = 0` and `T = 0`.
//! Tolerances are DESIGN.md's: f32 1e-5, f16 2e-3, bf16 1e-2 (relative L2).

mod common;

use std::sync::Arc;

use jagged_codegen::templates::attention::Tiles;
use jagged_codegen::{Arch, Spec};
use jagged_ir::ops::{self, Activation, AttentionSpec, FbgemmAttentionSpec, JaggedSpec};
use jagged_ir::{AttrValue, DType, DenseTensor, Dim, Graph, ReduceOp};
use jagged_runtime::{BackendKind, KernelCache, Runtime};

use common::{Rng, rel_l2};

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

/// Layouts: `B = 0`, all empty, length 1, above `max_len`, and random ones.
fn layouts(max_len: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let random = (0..6)
        .map(|k| {
            if k == 2 {
                0
            } else {
                rng.below(max_len + max_len / 2 + 2)
            }
        })
        .collect();
    vec![
        vec![],
        vec![0, 0, 0],
        vec![1],
        vec![max_len + 3, 0, 1, max_len, 7],
        random,
    ]
}

/// Inputs for every graph input on `lengths` (dense `N` = `max_len`).
fn inputs_for(
    graph: &Graph,
    lengths: &[usize],
    max_len: usize,
    rng: &mut Rng,
) -> Vec<(String, DenseTensor)> {
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    graph
        .inputs()
        .map(|(_, name, ty)| {
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Ragged(_) => total,
                    Dim::Batch => lengths.len(),
                    Dim::BatchPlusOne => lengths.len() + 1,
                    Dim::MaxLen => max_len,
                    Dim::Static(n) => *n,
                })
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = match name {
                "offsets" => offsets.clone(),
                "lengths" => lengths.iter().map(|&l| l as f64).collect(),
                // Set rows hold any non-zero byte, not only 1: a kernel that
                // tests `mask == 1` instead of `mask != 0` fails.
                "mask" => (0..n).map(|_| mask_byte(rng) as f64).collect(),
                _ => (0..n).map(|_| rng.float()).collect(),
            };
            let t = DenseTensor::from_f64(ty.dtype, shape, &values).expect("input");
            (name.to_string(), t)
        })
        .collect()
}

/// A mask byte: 0 half of the time, else uniform in 1..=255.
fn mask_byte(rng: &mut Rng) -> u8 {
    if rng.below(2) == 0 {
        0
    } else {
        1 + rng.below(255) as u8
    }
}

fn emu() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

/// Runs `graph` for both archs on every layout and checks every output.
fn check(rt: &mut Runtime, graph: &Graph, dtype: DType, max_len: usize, seed: u64) {
    check_on(rt, graph, dtype, max_len, seed, |rng| layouts(max_len, rng));
}

/// [`check`] on the layouts `layouts_for` gives (called once per arch).
fn check_on(
    rt: &mut Runtime,
    graph: &Graph,
    dtype: DType,
    max_len: usize,
    seed: u64,
    layouts_for: impl Fn(&mut Rng) -> Vec<Vec<usize>>,
) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let attrs: Vec<(&str, AttrValue)> = [
        ("max_len", AttrValue::Index(max_len)),
        ("padding_value", AttrValue::Float(-0.5)),
        ("scale", AttrValue::Float(0.3)),
    ]
    .into_iter()
    .filter(|(n, _)| graph.attr(n).is_some())
    .collect();
    // Graphs without a max_len attribute: bucket by the dense N, or nothing.
    let spec_len = if graph
        .inputs()
        .any(|(_, _, t)| t.dims.contains(&Dim::MaxLen))
        || graph.attr("max_len").is_some()
    {
        max_len as u64
    } else {
        0
    };
    for arch in Arch::ALL {
        let spec = Spec::for_graph(graph, spec_len, arch).expect("spec");
        for lengths in layouts_for(&mut rng) {
            let inputs = inputs_for(graph, &lengths, max_len, &mut rng);
            let named: Vec<(&str, &DenseTensor)> =
                inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let want = jagged_ir::evaluate(graph, &named, &attrs).expect("reference");
            let what = format!("{} {spec} on {lengths:?}", graph.name());
            let got = rt
                .run_graph_host(graph, &spec, &named, &attrs)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            for (name, w) in &want {
                let g = &got[name];
                assert_eq!(g.shape(), w.shape(), "{what}: output {name}");
                assert_eq!(g.dtype(), w.dtype(), "{what}: output {name}");
                let err = rel_l2(&g.to_f64(), &w.to_f64());
                // Integer outputs (offsets) must be exact.
                let tol = if w.dtype().is_float() {
                    tolerance(dtype)
                } else {
                    0.0
                };
                assert!(err <= tol, "{what}: output {name}: relative error {err}");
            }
        }
    }
}

#[test]
fn primitives_every_dtype_and_offsets_type() {
    let mut rt = emu();
    for index in [DType::I32, DType::I64] {
        check(
            &mut rt,
            &ops::complete_cumsum(index).expect("graph"),
            DType::F32,
            16,
            1,
        );
        for (k, dtype) in FLOATS.into_iter().enumerate() {
            let spec = |inner: &[usize]| JaggedSpec {
                dtype,
                offsets: index,
                inner: inner.to_vec(),
            };
            let graphs = [
                ops::jagged_to_padded_dense(&spec(&[3, 5])),
                ops::dense_to_jagged(&spec(&[12])),
                ops::jagged_dense_elementwise_mul(&spec(&[8])),
                ops::jagged_softmax(&spec(&[5])),
                ops::jagged_softmax(&spec(&[32])),
                ops::jagged_reduce(&spec(&[7]), ReduceOp::Sum),
                ops::jagged_reduce(&spec(&[16]), ReduceOp::Mean),
                ops::jagged_reduce(&spec(&[1]), ReduceOp::Max),
                ops::masked_select_jagged(&spec(&[6]), DType::U8),
                ops::masked_select_jagged(&spec(&[2, 2]), DType::Bool),
            ];
            for (g, graph) in graphs.into_iter().enumerate() {
                let graph = graph.expect("graph");
                check(&mut rt, &graph, dtype, 20, (k * 100 + g) as u64);
            }
        }
    }
}

/// Both archs: on sm_90a, D = 32 and 64 take the wgmma kernel (the 64-byte
/// and the 128-byte swizzle).
#[test]
fn attention_ops_bf16_and_f16() {
    let mut rt = emu();
    for (k, dtype) in [DType::BF16, DType::F16].into_iter().enumerate() {
        for (head_dim, causal, activation) in [
            (32, false, Activation::Softmax),
            (64, true, Activation::Softmax),
            (32, true, Activation::Silu),
            (64, false, Activation::Silu),
        ] {
            let graph = ops::jagged_flash_attention(&AttentionSpec {
                input_dtype: dtype,
                dtype,
                offsets: DType::I32,
                heads: 2,
                head_dim,
                value_dim: head_dim,
                causal,
                activation,
            })
            .expect("graph");
            check(&mut rt, &graph, dtype, 24, k as u64);
        }
        for use_mask in [false, true] {
            let graph = ops::fbgemm_jagged_flash_attention_basic(&FbgemmAttentionSpec {
                input_dtype: dtype,
                dtype,
                offsets: DType::I64,
                head_dim: 64,
                use_mask,
            })
            .expect("graph");
            check(&mut rt, &graph, dtype, 24, 10 + k as u64);
        }
    }
}

/// Sequences spanning several key blocks (64 keys and 64 query rows per
/// block at D = 32 and 64 and this bucket, `templates::attention::Tiles`,
/// and in the wgmma kernel of sm_90a at both): the online softmax
/// rescaling across key blocks, the causal skipping of key blocks past the
/// query block, and boundary blocks at 63 / 64 / 65 / 130 rows and at
/// `max_len`, truncated above it. Softmax and SiLU, causal and not, one
/// dtype each (alternating), both archs.
#[test]
fn attention_several_key_blocks() {
    const MAX_LEN: usize = 200;
    let mut rt = emu();
    let cases = [
        (DType::BF16, false, Activation::Softmax),
        (DType::F16, true, Activation::Softmax),
        (DType::F16, false, Activation::Silu),
        (DType::BF16, true, Activation::Silu),
    ];
    for (k, (dtype, causal, activation)) in cases.into_iter().enumerate() {
        // D = 32 and 64 alternating: the wgmma kernel on sm_90a at both.
        let head_dim = 32 << (k % 2);
        let graph = ops::jagged_flash_attention(&AttentionSpec {
            input_dtype: dtype,
            dtype,
            offsets: DType::I32,
            heads: 2,
            head_dim,
            value_dim: head_dim,
            causal,
            activation,
        })
        .expect("graph");
        let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
        let tiles = Tiles::for_spec(head_dim as u32, spec.max_len_bucket);
        // The layout below then spans up to four query and key blocks.
        assert_eq!((tiles.block_m, tiles.block_n), (64, 64), "{spec}");
        check_on(&mut rt, &graph, dtype, MAX_LEN, 20 + k as u64, |_| {
            vec![vec![0, 1, 63, 64, 65, 130, MAX_LEN, MAX_LEN + 7, 129]]
        });
    }
}

/// A bucket of 1024 rows at D = 64: 128 query rows per block, two `m16`
/// row tiles per warp, over sequences of several such blocks.
#[test]
fn attention_long_bucket_two_row_tiles() {
    const MAX_LEN: usize = 600;
    let mut rt = emu();
    for (k, (causal, activation)) in [(true, Activation::Softmax), (false, Activation::Silu)]
        .into_iter()
        .enumerate()
    {
        let graph = ops::jagged_flash_attention(&AttentionSpec {
            input_dtype: DType::BF16,
            dtype: DType::BF16,
            offsets: DType::I32,
            heads: 1,
            head_dim: 64,
            value_dim: 64,
            causal,
            activation,
        })
        .expect("graph");
        let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
        let tiles = Tiles::for_spec(64, spec.max_len_bucket);
        assert_eq!(
            (tiles.block_m, tiles.block_n, tiles.warp_rows),
            (128, 64, 32),
            "{spec}"
        );
        check_on(&mut rt, &graph, DType::BF16, MAX_LEN, 30 + k as u64, |_| {
            vec![vec![0, 1, 127, 129, 300, MAX_LEN + 5]]
        });
    }
}
