//! Flash attention backward (`dq, dk, dv`) in the emulator against naive
//! per-sequence f64 gradients derived here from the OPS.md semantics: every
//! configuration for sm_80 (the mma.sync main kernel) and for sm_90a (the
//! wgmma one).

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
mod common;

use common::attention_graph;
use emu::{Rng, rel_l2, round_to, run_sizes, tolerance};
use jagged_codegen::templates::attention_bwd::compile_attention_backward;
use jagged_codegen::{Arch, DType, Spec};
use jagged_ir::ops::Activation;
use jagged_ir::{AttrValue, DenseTensor};

const SCALE: f64 = 0.3;

struct Case {
    dtype: DType,
    heads: usize,
    dim: usize,
    activation: Activation,
    causal: bool,
    max_len: usize,
    arch: Arch,
}

/// Naive gradients of one problem: `(dq, dk, dv)` as `[T, H, D]` f64.
fn reference(
    c: &Case,
    lengths: &[usize],
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dout: &[f64],
) -> [Vec<f64>; 3] {
    let (h_n, d_n) = (c.heads, c.dim);
    let total: usize = lengths.iter().sum();
    let mut grads = [
        vec![0.0; total * h_n * d_n],
        vec![0.0; total * h_n * d_n],
        vec![0.0; total * h_n * d_n],
    ];
    let at = |row: usize, h: usize, d: usize| (row * h_n + h) * d_n + d;
    let mut start = 0;
    for &len in lengths {
        let n = len.min(c.max_len);
        for h in 0..h_n {
            let dot = |x: &[f64], i: usize, y: &[f64], j: usize| -> f64 {
                (0..d_n)
                    .map(|d| x[at(start + i, h, d)] * y[at(start + j, h, d)])
                    .sum()
            };
            let allowed = |i: usize, j: usize| !c.causal || j <= i;
            // p_ij and dS_ij per the definition of the op.
            let mut p = vec![vec![0.0; n]; n];
            let mut ds = vec![vec![0.0; n]; n];
            for i in 0..n {
                let s: Vec<f64> = (0..n).map(|j| SCALE * dot(q, i, k, j)).collect();
                let dp: Vec<f64> = (0..n).map(|j| dot(dout, i, v, j)).collect();
                match c.activation {
                    Activation::Softmax => {
                        let m = (0..n)
                            .filter(|&j| allowed(i, j))
                            .map(|j| s[j])
                            .fold(f64::NEG_INFINITY, f64::max);
                        let z: f64 = (0..n)
                            .filter(|&j| allowed(i, j))
                            .map(|j| (s[j] - m).exp())
                            .sum();
                        for j in (0..n).filter(|&j| allowed(i, j)) {
                            p[i][j] = (s[j] - m).exp() / z;
                        }
                        let delta: f64 = (0..n).map(|j| p[i][j] * dp[j]).sum();
                        for j in 0..n {
                            ds[i][j] = p[i][j] * (dp[j] - delta);
                        }
                    }
                    Activation::Silu => {
                        for j in (0..n).filter(|&j| allowed(i, j)) {
                            let sig = 1.0 / (1.0 + (-s[j]).exp());
                            p[i][j] = s[j] * sig / c.max_len as f64;
                            ds[i][j] = dp[j] * sig * (1.0 + s[j] * (1.0 - sig)) / c.max_len as f64;
                        }
                    }
                }
            }
            for i in 0..n {
                for d in 0..d_n {
                    grads[0][at(start + i, h, d)] = SCALE
                        * (0..n)
                            .map(|j| ds[i][j] * k[at(start + j, h, d)])
                            .sum::<f64>();
                    grads[1][at(start + i, h, d)] = SCALE
                        * (0..n)
                            .map(|j| ds[j][i] * q[at(start + j, h, d)])
                            .sum::<f64>();
                    grads[2][at(start + i, h, d)] = (0..n)
                        .map(|j| p[j][i] * dout[at(start + j, h, d)])
                        .sum::<f64>();
                }
            }
        }
        start += len;
    }
    grads
}

fn check(c: &Case, layouts: &[Vec<usize>], seed: u64) {
    check_capped(c, layouts, seed, u32::MAX);
}

/// [`check`] with every grid clamped to `max_grid` CTAs (see
/// [`emu::run_capped`]).
fn check_capped(c: &Case, layouts: &[Vec<usize>], seed: u64, max_grid: u32) {
    let graph = attention_graph(c.dtype, c.heads, c.dim, c.activation, c.causal);
    let spec = Spec::for_graph(&graph, c.max_len as u64, c.arch).expect("spec");
    let compiled = compile_attention_backward(&graph, &spec).expect("backward");
    assert_eq!(compiled.launches.len(), 3, "{spec}");
    let mut rng = Rng::new(seed);
    for lengths in layouts {
        let total: usize = lengths.iter().sum();
        let n = total * c.heads * c.dim;
        let mut random = |scale: f64| -> Vec<f64> {
            (0..n)
                .map(|_| round_to(rng.float(scale), c.dtype))
                .collect()
        };
        let (q, k, v, dout) = (random(1.5), random(1.5), random(1.5), random(1.0));
        let mut offsets = vec![0i64];
        for &l in lengths {
            offsets.push(offsets.last().copied().unwrap_or(0) + l as i64);
        }
        let shape = vec![total, c.heads, c.dim];
        let tensor = |x: &[f64]| DenseTensor::from_f64(c.dtype, shape.clone(), x).expect("tensor");
        let off_t = DenseTensor::from_f64(
            DType::I32,
            vec![lengths.len() + 1],
            &offsets.iter().map(|&o| o as f64).collect::<Vec<_>>(),
        )
        .expect("offsets");
        let (qt, kt, vt) = (tensor(&q), tensor(&k), tensor(&v));
        let named = [("offsets", &off_t), ("q", &qt), ("k", &kt), ("v", &vt)];
        let attrs = [
            ("max_len", AttrValue::Index(c.max_len)),
            ("scale", AttrValue::Float(SCALE)),
        ];
        let fwd = jagged_ir::evaluate(&graph, &named, &attrs).expect("forward reference");
        let enc = |x: &[f64]| emu::encode_floats(x, c.dtype);
        let mut inputs = vec![enc(&q), enc(&k), enc(&v)];
        if c.activation == Activation::Softmax {
            inputs.push(enc(&fwd["out"].to_f64()));
            inputs.push(enc(&dout));
            inputs.push(emu::encode_floats(&fwd["lse"].to_f64(), DType::F32));
        } else {
            inputs.push(enc(&dout));
        }
        inputs.push(emu::encode_ints(&offsets, DType::I32));
        let sizes = run_sizes(lengths, c.max_len);
        let outs = emu::run_capped(
            &compiled,
            &inputs,
            sizes,
            &[("scale", SCALE as f32)],
            max_grid,
        );
        let want = reference(c, lengths, &q, &k, &v, &dout);
        for (g, name) in ["dq", "dk", "dv"].iter().enumerate() {
            let got = emu::decode_floats(&outs[g], c.dtype);
            let err = rel_l2(&got, &want[g]);
            assert!(
                err <= tolerance(c.dtype),
                "{spec} {:?} causal={} {name} lengths {lengths:?}: error {err:e}",
                c.activation,
                c.causal
            );
        }
    }
}

fn check_dim(dim: usize, heads: usize, seed: u64) {
    check_dim_layouts(
        dim,
        heads,
        &[vec![], vec![1, 0, 45, 7], vec![40, 13, 0, 2]],
        seed,
    );
}

/// Every dtype, activation and mask for `dim` on the `layouts` (max_len 40, sm_80).
fn check_dim_layouts(dim: usize, heads: usize, layouts: &[Vec<usize>], seed: u64) {
    check_every_variant(dim, heads, 40, Arch::Sm80, layouts, seed);
}

/// Every dtype, activation and mask for `dim` on the `layouts`.
fn check_every_variant(
    dim: usize,
    heads: usize,
    max_len: usize,
    arch: Arch,
    layouts: &[Vec<usize>],
    seed: u64,
) {
    let mut k = 0;
    for dtype in [DType::F16, DType::BF16] {
        for activation in [Activation::Softmax, Activation::Silu] {
            for causal in [false, true] {
                let c = Case {
                    dtype,
                    heads,
                    dim,
                    activation,
                    causal,
                    max_len,
                    arch,
                };
                check(&c, layouts, seed + k);
                k += 1;
            }
        }
    }
}

#[test]
fn backward_head_dim_32() {
    check_dim(32, 2, 40);
}

#[test]
fn backward_head_dim_64() {
    check_dim(64, 2, 10);
}

#[test]
fn backward_head_dim_128() {
    check_dim(128, 1, 20);
}

/// D = 256 (two passes over the query blocks, each owning half of the dk /
/// dv / dq columns): an empty batch, and in one batch length 1, an empty
/// sequence, one longer than max_len (two query blocks of 32) and a short one.
#[test]
fn backward_head_dim_256() {
    check_dim_layouts(256, 1, &[vec![], vec![1, 0, 45, 7]], 50);
}

/// Several key blocks and query blocks per sequence.
#[test]
fn backward_several_blocks() {
    let c = Case {
        dtype: DType::BF16,
        heads: 1,
        dim: 64,
        activation: Activation::Softmax,
        causal: true,
        max_len: 150,
        arch: Arch::Sm80,
    };
    check(&c, &[vec![150, 0, 131, 3, 170]], 30);
    let c = Case {
        dtype: DType::F16,
        heads: 1,
        dim: 128,
        activation: Activation::Silu,
        causal: false,
        max_len: 100,
        arch: Arch::Sm80,
    };
    check(&c, &[vec![97, 100, 1]], 31);
    let c = Case {
        dtype: DType::F16,
        heads: 2,
        dim: 32,
        activation: Activation::Softmax,
        causal: true,
        max_len: 130,
        arch: Arch::Sm80,
    };
    check(&c, &[vec![130, 70, 129]], 32);
    let c = Case {
        dtype: DType::BF16,
        heads: 1,
        dim: 256,
        activation: Activation::Softmax,
        causal: true,
        max_len: 100,
        arch: Arch::Sm80,
    };
    check(&c, &[vec![100, 1, 71]], 33);
}

/// Grids of 2 CTAs: each CTA takes several items (key blocks) in turn,
/// over several query blocks each (the query stages of one item, the next
/// item's K and V after the last item's `dq` update), one pass and two
/// (D = 256).
#[test]
fn backward_grid_stride() {
    for (dim, activation, causal, arch) in [
        (64, Activation::Softmax, true, Arch::Sm80),
        (256, Activation::Softmax, false, Arch::Sm90a),
        (128, Activation::Silu, true, Arch::Sm80),
    ] {
        let c = Case {
            dtype: DType::BF16,
            heads: 2,
            dim,
            activation,
            causal,
            max_len: 150,
            arch,
        };
        check_capped(&c, &[vec![150, 0, 131, 3, 170]], 70 + dim as u64, 2);
    }
}

/// The sm_90a (`wgmma`) main kernel at max_len 100 (bucket 128, where
/// [`backward_sm90a_wgmma`] runs 150, bucket 256): one configuration per
/// head dim, each dtype, activation and mask at least once, over several
/// query and key blocks and the boundary layouts.
#[test]
fn backward_sm90a() {
    let configs = [
        (32, 2, DType::F16, Activation::Softmax, true),
        (64, 2, DType::BF16, Activation::Silu, false),
        (128, 1, DType::BF16, Activation::Softmax, false),
        (256, 1, DType::F16, Activation::Silu, true),
    ];
    for (k, (dim, heads, dtype, activation, causal)) in configs.into_iter().enumerate() {
        let c = Case {
            dtype,
            heads,
            dim,
            activation,
            causal,
            max_len: 100,
            arch: Arch::Sm90a,
        };
        check(&c, &[vec![], vec![1, 0, 100, 65, 107, 2]], 60 + k as u64);
    }
}

/// sm_90a at every head dim, the `wgmma` main kernel: every dtype,
/// activation and mask, over several query and key blocks of 64 (max_len
/// 150), with an empty batch, empty sequences, lengths of one, of exactly
/// max_len and two blocks, and above max_len (170: rows past max_len get
/// zero gradients). D = 256 makes two passes over the query blocks.
#[test]
fn backward_sm90a_wgmma() {
    let layouts = [vec![], vec![1, 0, 150, 65, 170, 2, 128]];
    check_every_variant(32, 2, 150, Arch::Sm90a, &layouts, 60);
    check_every_variant(64, 2, 150, Arch::Sm90a, &layouts, 70);
    check_every_variant(128, 1, 150, Arch::Sm90a, &layouts, 80);
    check_every_variant(256, 1, 150, Arch::Sm90a, &[vec![1, 0, 150, 65, 170]], 90);
}

/// Heads so many that a query block's rows of the f32 `dq` accumulator
/// (`64 H D 4` bytes) leave the 32-bit address offsets are a typed error,
/// not an overflow; the most heads that fit compile.
#[test]
fn backward_refuses_heads_past_the_address_offsets() {
    use jagged_codegen::CodegenError;
    let compile = |heads: usize, arch: Arch| {
        let graph = attention_graph(DType::BF16, heads, 256, Activation::Softmax, false);
        let spec = Spec::for_graph(&graph, 128, arch).expect("spec");
        compile_attention_backward(&graph, &spec)
    };
    for arch in [Arch::Sm80, Arch::Sm90a] {
        match compile(1 << 22, arch) {
            Err(CodegenError::Unsupported(why)) => assert!(why.contains("heads"), "{why}"),
            other => panic!("{arch:?}: {:?}", other.map(|k| k.launches.len())),
        }
        assert!(compile(32768, arch).is_ok(), "{arch:?}");
    }
}
