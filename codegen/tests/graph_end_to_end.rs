//! End to end: the builtin op graphs of `jagged_ir::ops` and compositions
//! no template matches, compiled by `compile(graph, spec)` (a fast path when
//! one matches, else the general path) and by the general path alone, run
//! in the emulator from the launch metadata alone, against jagged-ir's f64
//! reference evaluator. The general path must give the reference's result
//! on every graph, the builtin ones included.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;

use emu::{Rng, inputs_for, rel_l2, run_sizes, tensor_bytes, tolerance};
use jagged_codegen::general::{Fusion, compile_general, compile_general_with};
use jagged_codegen::{Arch, CodegenError, CompiledKernel, DType, Spec, compile};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrKind, AttrValue, DenseTensor, Dim, Graph, GraphBuilder, ReduceOp, TensorType};

const PADDING: f64 = -1.5;
const SCALE: f64 = 0.75;
const ALPHA: f64 = 0.3;
const WINDOW: f64 = 2.0;
const SLOPE: f64 = 0.25;

fn decode(bytes: &[u8], dtype: DType) -> Vec<f64> {
    match dtype {
        DType::I32 | DType::I64 => emu::decode_ints(bytes, dtype)
            .into_iter()
            .map(|x| x as f64)
            .collect(),
        DType::U8 | DType::Bool => bytes.iter().map(|&b| f64::from(b)).collect(),
        _ => emu::decode_floats(bytes, dtype),
    }
}

/// Compiles `graph` for both archs, by `compile`, by the general path alone
/// and by its unfused form (every value stored), and checks all three on
/// several layouts.
fn check(graph: &Graph, max_len: usize, seed: u64) {
    let general = |g: &Graph, s: &Spec| compile_general(g, s).map(|c| c.kernel);
    let unfused =
        |g: &Graph, s: &Spec| compile_general_with(g, s, Fusion::Unfused).map(|c| c.kernel);
    check_with(graph, max_len, seed, &compile);
    check_with(graph, max_len, seed, &general);
    check_with(graph, max_len, seed, &unfused);
}

type Compiler = dyn Fn(&Graph, &Spec) -> Result<CompiledKernel, CodegenError>;

fn check_with(graph: &Graph, max_len: usize, seed: u64, compile: &Compiler) {
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
        let float_attrs = [
            ("padding_value", PADDING as f32),
            ("scale", SCALE as f32),
            ("max_len", max_len as f32),
            ("alpha", ALPHA as f32),
            ("window", WINDOW as f32),
            ("slope", SLOPE as f32),
        ];
        for lengths in &layouts {
            let inputs = inputs_for(graph, lengths, max_len, 2.0, &mut rng);
            let named: Vec<(&str, &DenseTensor)> =
                inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let attrs = [
                ("max_len", AttrValue::Index(max_len)),
                ("padding_value", AttrValue::Float(PADDING)),
                ("scale", AttrValue::Float(SCALE)),
                ("alpha", AttrValue::Float(ALPHA)),
                ("window", AttrValue::Float(WINDOW)),
                ("slope", AttrValue::Float(SLOPE)),
            ];
            let attrs: Vec<(&str, AttrValue)> = attrs
                .into_iter()
                .filter(|(n, _)| graph.attr(n).is_some())
                .collect();
            let expected = jagged_ir::evaluate(graph, &named, &attrs).expect("reference");
            let bytes: Vec<Vec<u8>> = inputs.iter().map(|(_, t)| tensor_bytes(t)).collect();
            let outs = emu::run(&compiled, &bytes, run_sizes(lengths, max_len), &float_attrs);
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
                        err <= tolerance(spec.dtype).max(tolerance(meta.elem)),
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
    for (k, op) in [
        ReduceOp::Sum,
        ReduceOp::Mean,
        ReduceOp::Max,
        ReduceOp::LogSumExp,
    ]
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

/// Compositions a user wrote with `#[jagged_kernel]` that no template
/// matches: each compiles through the general path and matches the reference.
fn parsed(text: &str) -> Graph {
    Graph::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn weighted_sum_pooling() {
    let g = parsed(
        "graph weighted_pool {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 8]
  %3 = input w : f32[%1]
  %4 = mul %2, %3 : f32[%1, 8]
  %5 = reduce sum %4, axis 0 : f32[B, 8]
  output pooled = %5
}",
    );
    check(&g, 12, 100);
}

#[test]
fn row_broadcast() {
    let g = parsed(
        "graph row_scale {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : bf16[%1, 6]
  %3 = input w : bf16[%1]
  %4 = mul %2, %3 : bf16[%1, 6]
  output y = %4
}",
    );
    check(&g, 9, 101);
}

#[test]
fn rms_norm_times_weight() {
    let g = parsed(
        "graph rms_norm {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 16]
  %3 = input gamma : f32[16]
  %4 = mul %2, %2 : f32[%1, 16]
  %5 = reduce mean %4, axis 1 : f32[%1]
  %6 = const 0.00001 : f32[]
  %7 = add %5, %6 : f32[%1]
  %8 = log %7 : f32[%1]
  %9 = const -0.5 : f32[]
  %10 = mul %8, %9 : f32[%1]
  %11 = exp %10 : f32[%1]
  %12 = mul %2, %11 : f32[%1, 16]
  %13 = mul %12, %3 : f32[%1, 16]
  output y = %13
}",
    );
    check(&g, 10, 102);
}

#[test]
fn hstu_attention_f32_with_alpha_and_bias() {
    // HSTU in f32 (no tensor-core template takes f32), `alpha` as the scale
    // attribute's name, an additive [B, N, N] bias, a causal mask.
    let g = parsed(
        "graph hstu_bias {
  attr max_len: index
  attr alpha: float = 0.3
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f32[%1, 2, 8]
  %3 = input k : f32[%1, 2, 8]
  %4 = input v : f32[%1, 2, 4]
  %5 = input bias : f32[B, N, N]
  %6 = contract %2[ihd], %3[jhd] -> [ijh] : f32[%1, %1, 2]
  %7 = attr alpha : f32[]
  %8 = mul %6, %7 : f32[%1, %1, 2]
  %9 = add %8, %5 : f32[%1, %1, 2]
  %10 = silu %9 : f32[%1, %1, 2]
  %11 = attr max_len : f32[]
  %12 = div %10, %11 : f32[%1, %1, 2]
  %13 = mask j <= i : bool[%1, %1]
  %14 = const 0 : f32[]
  %15 = select %13, %12, %14 : f32[%1, %1, 2]
  %16 = contract %15[ijh], %4[jhe] -> [ihe] : f32[%1, 2, 4]
  output out = %16
}",
    );
    check(&g, 7, 103);
}

#[test]
fn softmax_then_mask_then_sum_over_keys() {
    let g = parsed(
        "graph softmax_mask_sum {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f32[%1, 4]
  %3 = input k : f32[%1, 4]
  %4 = contract %2[id], %3[jd] -> [ij] : f32[%1, %1]
  %5 = softmax %4, axis 1 : f32[%1, %1]
  %6 = mask j >= i : bool[%1, %1]
  %7 = const 0 : f32[]
  %8 = select %6, %5, %7 : f32[%1, %1]
  %9 = reduce sum %8, axis 1 : f32[%1]
  output s = %9
}",
    );
    check(&g, 9, 104);
}

#[test]
fn padded_reduce_and_logsumexp() {
    let g = parsed(
        "graph padded_stats {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 3]
  %3 = to_padded %2 : f32[B, N, 3]
  %4 = reduce max %3, axis 1 : f32[B, 3]
  %5 = reduce logsumexp %2, axis 0 : f32[B, 3]
  %6 = sub %4, %5 : f32[B, 3]
  output d = %6
  output m = %4
}",
    );
    check(&g, 6, 105);
}

#[test]
fn compaction_of_a_computed_mask() {
    let g = parsed(
        "graph keep_positive {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 3]
  %3 = input score : f32[%1]
  %4 = const 0 : f32[]
  %5 = max %3, %4 : f32[%1]
  %6 = cast %5 : bool[%1]
  %7 = seqs_where %6 : seqs
  %8 = exp %2 : f32[%1, 3]
  %9 = compact %8, %7 : f32[%7, 3]
  %10 = offsets %7 : i32[B+1]
  output values = %9
  output offsets = %10
}",
    );
    check(&g, 8, 106);
}

#[test]
fn fbgemm_attention_in_f32_with_a_small_head_dim() {
    for use_mask in [false, true] {
        let g = ops::fbgemm_jagged_flash_attention_basic(&ops::FbgemmAttentionSpec {
            input_dtype: DType::F32,
            dtype: DType::F32,
            offsets: DType::I32,
            head_dim: 8,
            use_mask,
        })
        .expect("graph");
        check(&g, 11, 107 + u64::from(use_mask));
    }
}

/// HSTU attention under a sliding window `|i - j| <= window` (causal), with
/// a relative-position bias `-slope * |i - j|` on the scores (ALiBi style):
/// positions, comparisons with attributes, and both fused into the
/// general path's attention kernels.
#[test]
fn hstu_sliding_window_with_relative_position_bias() {
    let g = parsed(
        "graph hstu_window {
  attr max_len: index
  attr alpha: float = 0.3
  attr window: float = 2
  attr slope: float = 0.25
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f32[%1, 2, 8]
  %3 = input k : f32[%1, 2, 8]
  %4 = input v : f32[%1, 2, 4]
  %5 = contract %2[ihd], %3[jhd] -> [ijh] : f32[%1, %1, 2]
  %6 = attr alpha : f32[]
  %7 = mul %5, %6 : f32[%1, %1, 2]
  %8 = position axis 0 : f32[%1, %1]
  %9 = position axis 1 : f32[%1, %1]
  %10 = sub %8, %9 : f32[%1, %1]
  %11 = abs %10 : f32[%1, %1]
  %12 = attr slope : f32[]
  %13 = mul %11, %12 : f32[%1, %1]
  %14 = sub %7, %13 : f32[%1, %1, 2]
  %15 = silu %14 : f32[%1, %1, 2]
  %16 = attr window : f32[]
  %17 = le %11, %16 : bool[%1, %1]
  %18 = mask j <= i : bool[%1, %1]
  %19 = const 0 : f32[]
  %20 = select %17, %15, %19 : f32[%1, %1, 2]
  %21 = select %18, %20, %19 : f32[%1, %1, 2]
  %22 = contract %21[ijh], %4[jhe] -> [ihe] : f32[%1, 2, 4]
  output out = %22
}",
    );
    check(&g, 9, 109);
}

/// Integer positions and lengths: each row's distance to its sequence's
/// last row, `n_b - 1 - i`, and a flag for the second half of a sequence.
#[test]
fn positions_and_lengths_as_integers() {
    let g = parsed(
        "graph distance_to_end {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = position axis 0 : i64[%1]
  %3 = lengths %1 : i64[B]
  %4 = sub %3, %2 : i64[%1]
  %5 = const 1 : i64[]
  %6 = sub %4, %5 : i64[%1]
  %7 = add %2, %2 : i64[%1]
  %8 = ge %7, %3 : bool[%1]
  output distance = %6
  output second_half = %8
}",
    );
    check(&g, 6, 110);
}

/// A graph with no sequences at all (dense values only) compiles too.
#[test]
fn dense_only_graph() {
    let g = parsed(
        "graph dense_only {
  %0 = input a : f32[6]
  %1 = input b : f32[6]
  %2 = mul %0, %1 : f32[6]
  %3 = reduce sum %2, axis 0 : f32[]
  output dot = %3
  output prod = %2
}",
    );
    check(&g, 4, 111);
}

/// HSTU attention with a learned relative-position bias: a table of 2W + 1
/// values gathered at the clamped `i - j` (positions, min/max on integers,
/// `gather`), all fused into the general path's attention kernels.
#[test]
fn hstu_with_a_learned_relative_position_bias() {
    let g = parsed(
        "graph hstu_relbias {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f32[%1, 2, 8]
  %3 = input k : f32[%1, 2, 8]
  %4 = input v : f32[%1, 2, 4]
  %5 = input bias : f32[9]
  %6 = contract %2[ihd], %3[jhd] -> [ijh] : f32[%1, %1, 2]
  %7 = position axis 0 : i64[%1, %1]
  %8 = position axis 1 : i64[%1, %1]
  %9 = sub %7, %8 : i64[%1, %1]
  %10 = const -4 : i64[]
  %11 = const 4 : i64[]
  %12 = max %9, %10 : i64[%1, %1]
  %13 = min %12, %11 : i64[%1, %1]
  %14 = add %13, %11 : i64[%1, %1]
  %15 = gather %5, %14 : f32[%1, %1]
  %16 = add %6, %15 : f32[%1, %1, 2]
  %17 = silu %16 : f32[%1, %1, 2]
  %18 = mask j <= i : bool[%1, %1]
  %19 = const 0 : f32[]
  %20 = select %18, %17, %19 : f32[%1, %1, 2]
  %21 = contract %20[ijh], %4[jhe] -> [ihe] : f32[%1, 2, 4]
  output out = %21
}",
    );
    check(&g, 9, 112);
}

/// `gather` gives 0 outside the table: each row's position picks a row of
/// a 3-row table (rows 3 and up read nothing), and rows of a `[4, 2]`
/// table keep their inner dim.
#[test]
fn gather_outside_the_table_is_zero() {
    let g = parsed(
        "graph pick {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input table : bf16[3, 2]
  %3 = position axis 0 : i64[%1]
  %4 = gather %2, %3 : bf16[%1, 2]
  output rows = %4
}",
    );
    check(&g, 7, 113);
}

/// An inner dim of 0 (no features, or H = 0 heads) is valid for the
/// reference, and so for the kernels: the templates refuse it, the general
/// path takes it (empty outputs).
#[test]
fn inner_dims_of_zero() {
    let g = parsed(
        "graph empty_inner {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 0]
  %3 = softmax %2, axis 0 : f32[%1, 0]
  %4 = reduce sum %2, axis 0 : f32[B, 0]
  output y = %3
  output s = %4
}",
    );
    check(&g, 5, 114);
    let attention = ops::jagged_flash_attention(&ops::AttentionSpec {
        input_dtype: DType::BF16,
        dtype: DType::BF16,
        offsets: DType::I32,
        heads: 0,
        head_dim: 32,
        value_dim: 32,
        causal: true,
        activation: ops::Activation::Softmax,
    })
    .expect("graph");
    check(&attention, 6, 115);
}
