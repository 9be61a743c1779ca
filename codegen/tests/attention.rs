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
use jagged_codegen::{Arch, DType, Spec, compile, compile_with_plan};
use jagged_ir::graph::MAX_LEN;
use jagged_ir::ops::{self, Activation, FbgemmAttentionSpec};
use jagged_ir::{
    AttrKind, AttrValue, DenseTensor, Dim, Graph, GraphBuilder, Handle, IndexPredicate, Node,
    ReduceOp, TensorType, ValidationError,
};

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
    check_with(graph, max_len, layouts, arch, seed, max_grid, SCALE);
}

/// [`check_capped`] with the run-time `scale` attribute (where the graph has one).
fn check_with(
    graph: &Graph,
    max_len: usize,
    layouts: &[Vec<usize>],
    arch: Arch,
    seed: u64,
    max_grid: u32,
    scale: f64,
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
            ("scale", AttrValue::Float(scale)),
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
            &[("scale", scale as f32)],
            max_grid,
        );
        for (k, out) in graph.outputs().iter().enumerate() {
            let reference = expected[&out.name].to_f64();
            let got = emu::decode_floats(&outs[k], compiled.outputs[k].elem);
            let err = rel_l2(&got, &reference);
            assert!(
                err <= tolerance(spec.dtype),
                "{} {spec} scale {scale} output {} lengths {lengths:?}: error {err:e}",
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

/// Every (dtype, activation, causal, arch) for one head dim (the wgmma
/// kernel on sm_90a, the mma.sync one on sm_80).
fn check_head_dim(head_dim: usize, heads: usize, seed: u64) {
    let mut k = 0;
    for dtype in [DType::F16, DType::BF16] {
        for activation in [Activation::Softmax, Activation::Silu] {
            for causal in [false, true] {
                let g = attention_graph(dtype, heads, head_dim, activation, causal);
                for arch in Arch::ALL {
                    check(&g, 40, &layouts(), arch, seed + k);
                    k += 1;
                }
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
        for arch in Arch::ALL {
            check(&g, 40, &layouts(), arch, 500 + k as u64);
        }
    }
}

/// Longer sequences: several key blocks (the cp.async pipeline turns over)
/// and several query blocks per sequence, on both archs.
#[test]
fn several_blocks() {
    for arch in Arch::ALL {
        let g = attention_graph(DType::BF16, 1, 64, Activation::Softmax, true);
        check(&g, 150, &[vec![150, 0, 131, 3, 170]], arch, 600);
        let g = attention_graph(DType::F16, 1, 128, Activation::Softmax, false);
        check(&g, 150, &[vec![150, 0, 131, 3, 170]], arch, 602);
        let g = attention_graph(DType::F16, 1, 32, Activation::Silu, false);
        check(&g, 100, &[vec![97, 100, 1]], arch, 601);
        // 128 keys per block in the wgmma kernel (buckets >= 256) at D = 32.
        let g = attention_graph(DType::BF16, 2, 32, Activation::Softmax, true);
        check(&g, 300, &[vec![300, 0, 260, 3]], arch, 603);
        // D = 256: copy passes of 4 rows (the wgmma kernel's odd passes
        // take a second swizzle shift), several key blocks.
        let g = attention_graph(DType::F16, 1, 256, Activation::Softmax, true);
        check(&g, 150, &[vec![150, 0, 131, 3]], arch, 604);
    }
}

/// The softmax kernel folds `scale * log2 e` into one `fma` per score and
/// tracks the max of the scaled scores: a negative scale (Q negated in
/// shared memory; -40 makes the scaled scores span far more than the 128
/// binades of f32, so a max of the wrong sign overflows) and a zero scale
/// (Q times 0: uniform weights over the allowed keys, a masked key's
/// `(-inf) * 0` must not turn into NaN) match the reference, `out` and
/// `lse`, causal or not, with Q staged per key block (two row tiles at
/// D = 64, D = 256) or held in registers (D = 32, 128); SiLU takes the
/// scale as it is.
#[test]
fn negative_and_zero_scales() {
    let mut seed = 1000;
    for scale in [-0.3, -40.0, 0.0] {
        for (head_dim, max_len) in [(32, 40), (64, 1100), (128, 70), (256, 40)] {
            for causal in [false, true] {
                let dtype = if causal { DType::F16 } else { DType::BF16 };
                let g = attention_graph(dtype, 1, head_dim, Activation::Softmax, causal);
                let layouts = [vec![1, 0, 45, 7], vec![max_len.min(140), 3, 66]];
                for arch in Arch::ALL {
                    check_with(&g, max_len, &layouts, arch, seed, u32::MAX, scale);
                    seed += 1;
                }
            }
        }
        let g = attention_graph(DType::BF16, 2, 64, Activation::Silu, true);
        check_with(&g, 40, &layouts(), Arch::Sm90a, seed, u32::MAX, scale);
        seed += 1;
    }
}

/// A grid smaller than the work: CTAs loop over work items.
#[test]
fn grid_stride() {
    let g = attention_graph(DType::BF16, 2, 32, Activation::Softmax, true);
    check_capped(&g, 70, &[vec![70, 5, 0, 66]], Arch::Sm80, 700, 3);
    // The wgmma kernel: each CTA restarts its pipeline per item.
    let g = attention_graph(DType::BF16, 2, 64, Activation::Softmax, true);
    check_capped(&g, 70, &[vec![70, 5, 0, 66]], Arch::Sm90a, 701, 3);
    let g = attention_graph(DType::F16, 2, 32, Activation::Softmax, false);
    check_capped(&g, 70, &[vec![70, 5, 0, 66]], Arch::Sm90a, 702, 3);
    let g = attention_graph(DType::BF16, 1, 256, Activation::Silu, true);
    check_capped(&g, 70, &[vec![70, 5, 0, 66]], Arch::Sm90a, 703, 3);
}

/// Buckets of 1024 rows and more use 128-row query blocks in the mma.sync
/// kernel: 4 warps of 32 rows (two m16 tiles each) for D = 64, 8 warps of
/// 16 rows for D = 128 (the wgmma kernel of sm_90a keeps 64 rows).
#[test]
fn long_buckets_use_128_row_query_blocks() {
    let g = attention_graph(DType::BF16, 1, 64, Activation::Softmax, true);
    let spec = Spec::for_graph(&g, 1100, Arch::Sm80).expect("spec");
    let compiled = compile(&g, &spec).expect("compile");
    assert_eq!(compiled.launches[0].block, 128);
    check(&g, 1100, &[vec![200, 1, 0, 129], vec![]], Arch::Sm80, 800);
    // Several items per CTA with two row tiles per warp.
    check_capped(&g, 1100, &[vec![300, 7, 0, 140]], Arch::Sm80, 802, 2);
    // Two row tiles with SiLU (no score mask) and with FBGEMM's `j >= i` mask.
    let g = attention_graph(DType::F16, 2, 64, Activation::Silu, false);
    check(&g, 1024, &[vec![150, 70, 0]], Arch::Sm80, 803);
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
    let spec = Spec::for_graph(&g, 1024, Arch::Sm80).expect("spec");
    assert_eq!(compile(&g, &spec).expect("compile").launches[0].block, 256);
    check(&g, 1024, &[vec![150, 70, 0]], Arch::Sm80, 801);
    // On sm_90a the warp-specialized wgmma kernel: a producer warpgroup
    // and two consumer warpgroups of 64 query rows.
    let spec = Spec::for_graph(&g, 1024, Arch::Sm90a).expect("spec");
    assert_eq!(compile(&g, &spec).expect("compile").launches[0].block, 384);
    check_capped(&g, 1024, &[vec![150, 70, 0]], Arch::Sm90a, 805, 2);
}

/// The axis letters of an attention graph's two contractions: `[q, k, scores]`
/// and `[p, v, out]`, and whether each is written with its operands exchanged
/// (`k . q`, `v . p`; the letters still go with the operand they name).
struct Axes {
    scores: [&'static str; 3],
    swap_scores: bool,
    out: [&'static str; 3],
    swap_out: bool,
}

/// The letters `jagged_ir::ops::jagged_flash_attention` writes.
const REFERENCE_AXES: Axes = Axes {
    scores: ["ihd", "jhd", "ijh"],
    swap_scores: false,
    out: ["ijh", "jhe", "ihe"],
    swap_out: false,
};

/// `contract(x . y)` with `x`'s and `y`'s letters, written `y . x` if `swap`.
fn contract_with(
    b: &mut GraphBuilder,
    (x, y): (Handle<Node>, Handle<Node>),
    axes: [&str; 3],
    swap: bool,
) -> Handle<Node> {
    let [xa, ya, out] = axes;
    if swap {
        b.contract(y, ya, x, xa, out, DType::F32)
    } else {
        b.contract(x, xa, y, ya, out, DType::F32)
    }
}

/// Softmax `jagged_flash_attention` (i32 offsets, `value_dim = head_dim`,
/// computing in the inputs' `dtype`) built node for node as
/// `jagged_ir::ops::jagged_flash_attention` builds it, but with `axes`.
fn softmax_attention_with_axes(
    dtype: DType,
    heads: usize,
    head_dim: usize,
    causal: bool,
    axes: &Axes,
) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("jagged_flash_attention");
    b.declare_attr(MAX_LEN, AttrKind::Index, None);
    let scale = 1.0 / (head_dim as f64).sqrt();
    b.declare_attr("scale", AttrKind::Float, Some(AttrValue::Float(scale)));
    let offsets = b.input(
        "offsets",
        TensorType::new(DType::I32, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(offsets, true);
    let q = b.input("q", TensorType::jagged(dtype, s, &[heads, head_dim]));
    let k = b.input("k", TensorType::jagged(dtype, s, &[heads, head_dim]));
    let v = b.input("v", TensorType::jagged(dtype, s, &[heads, head_dim]));
    let qk = contract_with(&mut b, (q, k), axes.scores, axes.swap_scores);
    let scale = b.attr("scale", DType::F32);
    let mut scores = b.mul(qk, scale);
    if causal {
        let pair = TensorType::new(DType::Bool, vec![Dim::Ragged(s), Dim::Ragged(s)]);
        let allowed = b.mask(IndexPredicate::KeyNotAfterQuery, pair);
        let minus_inf = b.constant(f64::NEG_INFINITY, DType::F32);
        scores = b.select(allowed, scores, minus_inf);
    }
    let p = b.softmax(scores, 1);
    let lse = b.reduce(ReduceOp::LogSumExp, scores, 1);
    let v = b.cast(v, DType::F32);
    let o = contract_with(&mut b, (p, v), axes.out, axes.swap_out);
    let out = b.cast(o, dtype);
    b.output("out", out);
    b.output("lse", lse);
    b.finish()
}

/// The lines where two graph texts differ.
fn differing_lines(a: &Graph, b: &Graph) -> Vec<String> {
    let (a, b) = (a.to_string(), b.to_string());
    assert_eq!(a.lines().count(), b.lines().count());
    a.lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.to_string())
        .collect()
}

/// Axis letters are names: graphs that differ from the reference only in
/// them (the value dim named `d` like the head dim, as the DSL names a `Dv`
/// generic; every letter permuted; operands written in the other order)
/// compile to the reference's kernel, byte for byte.
#[test]
fn renamed_contraction_axes_compile_to_the_reference_kernel() {
    let variants = [
        Axes {
            out: ["ijh", "jhd", "ihd"],
            ..REFERENCE_AXES
        },
        Axes {
            scores: ["xhy", "zhy", "xzh"],
            swap_scores: false,
            out: ["abc", "bcd", "acd"],
            swap_out: false,
        },
        Axes {
            swap_scores: true,
            swap_out: true,
            ..REFERENCE_AXES
        },
    ];
    for causal in [false, true] {
        let reference = attention_graph(DType::BF16, 2, 64, Activation::Softmax, causal);
        let rebuilt = softmax_attention_with_axes(DType::BF16, 2, 64, causal, &REFERENCE_AXES)
            .expect("graph");
        assert_eq!(
            rebuilt.to_string(),
            reference.to_string(),
            "the builder mirrors ops"
        );
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&reference, 40, arch).expect("spec");
            let want = compile(&reference, &spec).expect("reference compiles");
            for axes in &variants {
                let g =
                    softmax_attention_with_axes(DType::BF16, 2, 64, causal, axes).expect("graph");
                let changed = differing_lines(&g, &reference);
                assert!(
                    !changed.is_empty() && changed.iter().all(|l| l.contains(" = contract ")),
                    "only contractions differ: {changed:?}"
                );
                let got = compile(&g, &spec).unwrap_or_else(|e| panic!("{changed:?}: {e}"));
                assert!(got == want, "{arch:?} {changed:?}: a different kernel");
            }
        }
    }
}

/// FBGEMM's head-less form `q[id] . k[jd] -> [ij]`, `p[ij] . v[jd] -> [id]`
/// with its letters renamed (`i, j, d` to `u, t, a`) parses to a graph that
/// compiles to the same kernel.
#[test]
fn renamed_headless_axes_compile_to_the_reference_kernel() {
    let reference = ops::fbgemm_jagged_flash_attention_basic(&FbgemmAttentionSpec {
        input_dtype: DType::BF16,
        dtype: DType::BF16,
        offsets: DType::I64,
        head_dim: 64,
        use_mask: true,
    })
    .expect("graph");
    let text = reference.to_string();
    let renamed: String = text
        .lines()
        .map(|line| {
            let line = if line.contains(" = contract ") {
                line.replace("[id]", "[ua]")
                    .replace("[jd]", "[ta]")
                    .replace("[ij]", "[ut]")
            } else {
                line.to_string()
            };
            line + "\n"
        })
        .collect();
    let g = Graph::parse(&renamed).expect("renamed graph parses");
    assert_eq!(differing_lines(&g, &reference).len(), 2, "{renamed}");
    let spec = Spec::for_graph(&reference, 40, Arch::Sm80).expect("spec");
    let want = compile(&reference, &spec).expect("reference compiles");
    assert!(compile(&g, &spec).expect("renamed compiles") == want);
}

/// Scores written transposed, `q[ihd] . k[jhd] -> [jih]`, are attention with
/// the roles of `q` and `k` exchanged (the softmax runs over `q`'s rows): the
/// kernel reads its queries from `k`, and matches the reference evaluator.
#[test]
fn transposed_scores_exchange_queries_and_keys() {
    let axes = Axes {
        scores: ["ihd", "jhd", "jih"],
        ..REFERENCE_AXES
    };
    let g = softmax_attention_with_axes(DType::BF16, 2, 32, true, &axes).expect("graph");
    let reference = attention_graph(DType::BF16, 2, 32, Activation::Softmax, true);
    let spec = Spec::for_graph(&g, 40, Arch::Sm80).expect("spec");
    let ours = compile(&g, &spec).expect("compiles");
    let theirs = compile(&reference, &spec).expect("reference compiles");
    assert_eq!(ours.ptx, theirs.ptx, "the same kernel");
    assert_ne!(ours.launches, theirs.launches, "bound to other inputs");
    check(&g, 40, &[vec![1, 0, 45, 7]], Arch::Sm80, 900);
}

/// Contractions that are not attention's, whatever their letters, do not
/// match the flash-attention template (the plan says why) and compile
/// through the general path: summing over the head axis instead of the head
/// dim, and `p . v` summing over the query rows instead of the keys.
#[test]
fn other_contractions_miss_the_template_and_take_the_general_path() {
    let cases = [
        Axes {
            scores: ["ihd", "jhd", "ijd"],
            ..REFERENCE_AXES
        },
        Axes {
            out: ["ijh", "ihe", "jhe"],
            ..REFERENCE_AXES
        },
        Axes {
            scores: ["xhy", "zhy", "xzy"],
            swap_scores: true,
            ..REFERENCE_AXES
        },
    ];
    for axes in &cases {
        // H = D, so that every variant is well typed.
        let g = softmax_attention_with_axes(DType::BF16, 16, 16, false, axes).expect("graph");
        let spec = Spec::for_graph(&g, 40, Arch::Sm80).expect("spec");
        let (kernel, plan) = compile_with_plan(&g, &spec)
            .unwrap_or_else(|e| panic!("{:?} {:?}: {e}", axes.scores, axes.out));
        assert!(
            plan.starts_with("fast path: none"),
            "{:?} {:?}: {plan}",
            axes.scores,
            axes.out
        );
        assert!(!kernel.launches.is_empty());
    }
}

/// The warp-specialized sm_90a kernel (buckets of at least 256 rows: a
/// producer warpgroup, two consumer warpgroups) with grids of
/// 1 and 2 CTAs, so that each CTA runs many work items and the pipes'
/// mbarrier phases chain across them: sequences of 1 key block (1, 128
/// rows: 128 keys per block) and of several (129, 300, 520 rows, an odd
/// number of blocks turns the stages over between items), empty ones and
/// one past max_len; causal (the items' key-block counts differ) or not,
/// softmax with lse and SiLU, FBGEMM's variant (`j >= i` after the
/// softmax, `/ max_len`), D = 32, 64, 128 and 256 (64 keys per block, Q in
/// two 64-row sub-tiles; also with a negative scale: Q negated in both).
#[test]
fn warp_specialized_pipes_chain_over_items() {
    let layouts = [vec![520, 1, 0, 129, 128, 300], vec![0, 700, 3]];
    let mut seed = 1100;
    let fbgemm = ops::fbgemm_jagged_flash_attention_basic(&FbgemmAttentionSpec {
        input_dtype: DType::BF16,
        dtype: DType::BF16,
        offsets: DType::I64,
        head_dim: 64,
        use_mask: true,
    })
    .expect("graph");
    let graphs = [
        (DType::BF16, 64, Activation::Softmax, true),
        (DType::F16, 64, Activation::Softmax, false),
        (DType::BF16, 32, Activation::Silu, true),
        (DType::F16, 128, Activation::Softmax, true),
        (DType::BF16, 256, Activation::Softmax, false),
    ]
    .into_iter()
    .map(|(dtype, head_dim, activation, causal)| {
        attention_graph(dtype, 1, head_dim, activation, causal)
    })
    .chain([fbgemm]);
    for g in graphs {
        let spec = Spec::for_graph(&g, 600, Arch::Sm90a).expect("spec");
        let compiled = compile(&g, &spec).expect("compile");
        assert_eq!(compiled.launches[0].block, 384, "{spec}");
        for grid in [1, 2] {
            check_capped(&g, 600, &layouts, Arch::Sm90a, seed, grid);
            seed += 1;
        }
    }
    let g = attention_graph(DType::F16, 1, 256, Activation::Softmax, true);
    check_with(&g, 600, &layouts, Arch::Sm90a, seed, 2, -0.3);
}

/// Planted synchronization bugs in the warp-specialized kernel are caught
/// by the emulator: consumers that never hand a stage back (no
/// empty-mbarrier arrival: the producer's wait for a free K / V stage never
/// completes), consumers that never hand Q back (the producer's wait to
/// copy the next item's Q never completes), and a second consumer that
/// never gives the first its first turn to issue products (both wait at
/// the ping-pong's named barriers, and the producer's wait for a free
/// stage never completes), and consumers that skip their named barrier
/// after zeroing V's rows past the sequence end (one warpgroup zeroes rows
/// that the other's `wgmma` reads: a shared-memory race, although the
/// ping-pong's turn barriers complete in between, because those order
/// only the warps that arrive at them before the ones that wait).
#[test]
fn warp_specialized_planted_bugs_are_caught() {
    let g = attention_graph(DType::BF16, 1, 64, Activation::Softmax, false);
    let spec = Spec::for_graph(&g, 600, Arch::Sm90a).expect("spec");
    let compiled = compile(&g, &spec).expect("compile");
    let arrive = "mbarrier.arrive.release.cta.shared::cta.b64";
    let lines: Vec<&str> = compiled.ptx.lines().collect();
    let last_arrive = lines
        .iter()
        .rposition(|l| l.contains(arrive))
        .expect("an arrival");
    let first_turn = lines
        .iter()
        .position(|l| l.trim() == "bar.arrive 2, 256;")
        .expect("the first turn");
    // The consumers' barrier after the V-tail zeroing (which ends with
    // `fence.proxy.async`; the Q-sign scaling's does too), just before the
    // wait for the turn to issue the last block's products.
    let after_zeroing: Vec<usize> = (1..lines.len() - 1)
        .filter(|&i| {
            lines[i].trim() == "bar.sync 1, 256;"
                && lines[i - 1].trim().starts_with("fence.proxy.async")
                && lines[i + 1].trim().starts_with("bar.sync %")
        })
        .collect();
    assert_eq!(after_zeroing.len(), 1, "one barrier after the zeroing");
    let after_zeroing = after_zeroing[0];
    let without = |drop: &dyn Fn(usize, &str) -> bool| {
        let ptx: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|&(i, l)| !drop(i, l))
            .map(|(_, l)| *l)
            .collect();
        jagged_codegen::CompiledKernel {
            ptx: ptx.join("\n"),
            ..compiled.clone()
        }
    };
    let lengths = vec![300, 5, 130];
    let mut rng = Rng::new(1200);
    let inputs = inputs_for(&g, &lengths, 600, 1.5, &mut rng);
    let bytes: Vec<Vec<u8>> = inputs.iter().map(|(_, t)| tensor_bytes(t)).collect();
    let run = |c: &jagged_codegen::CompiledKernel| {
        emu::try_run_capped(c, &bytes, run_sizes(&lengths, 600), &[("scale", 0.3)], 1)
    };
    run(&compiled).expect("the kernel as compiled");
    for (what, bad, finding) in [
        (
            "no empty arrivals",
            without(&|_, l: &str| l.contains(arrive)),
            "never completes",
        ),
        (
            "no Q arrival",
            without(&|i, _| i == last_arrive),
            "never completes",
        ),
        // The consumers stop at their turn barriers, so the producer's
        // wait for a free stage is what the emulator finds stuck.
        (
            "no first turn",
            without(&|i, _| i == first_turn),
            "never completes",
        ),
        (
            "no consumer barrier after the V zeroing",
            without(&|i, _| i == after_zeroing),
            "shared-memory data race",
        ),
    ] {
        let err = run(&bad).expect_err(what);
        assert!(err.contains(finding), "{what}: {err}");
    }
}
