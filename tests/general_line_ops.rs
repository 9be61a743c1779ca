//! `rank`, `topk`, `take`, `reshape` and `shift` through the general
//! path: ranks along the sequence and along an inner axis (integer inputs
//! full of ties, NaN entries), a per-sequence top-k kept by a compaction on
//! `rank < k`, the k best along a static axis (of an input, of a
//! contraction), a beam-search step (reshape, topk, take, gather),
//! neighbour differences and session starts built from shifts,
//! each against the f64 reference on the emulator for both archs.

use std::sync::Arc;

mod common;

use jagged::codegen::{Arch, Spec, compile, ptxas};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference};

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

/// `(name, text with {order}, {t} and {idx})`.
const GRAPHS: &[(&str, &str)] = &[
    (
        "rank along the sequence",
        "graph rank_seq {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 3]
  %3 = rank {order} %2, axis 0 : i32[%1, 3]
  output r = %3
}",
    ),
    (
        "rank along an inner axis, of a computed value",
        "graph rank_inner {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 37]
  %3 = input y : {t}[%1, 37]
  %4 = sub %2, %3 : {t}[%1, 37]
  %5 = rank {order} %4, axis 1 : i32[%1, 37]
  output r = %5
}",
    ),
    (
        "the 3 best rows of each sequence, in their order (a compaction on rank < 3)",
        "graph topk {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0 : seqs
  %2 = input score : {t}[%1]
  %3 = input x : f32[%1, 5]
  %4 = rank {order} %2, axis 0 : i32[%1]
  %5 = const 3 : i32[]
  %6 = lt %4, %5 : bool[%1]
  %7 = seqs_where %6 : seqs
  %8 = compact %3, %7 : f32[%7, 5]
  %9 = offsets %7 : {idx}[B+1]
  %10 = position axis 0 : i64[%1]
  %11 = compact %10, %7 : i64[%7]
  output values = %8
  output kept = %11
  output kept_offsets = %9
}",
    ),
    (
        "the 3 best of 40 along an inner axis, indices and values",
        "graph topk_inner {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 40]
  %3 = topk indices {order} %2, axis 1, k 3 : i32[%1, 3]
  %4 = topk values {order} %2, axis 1, k 3 : {t}[%1, 3]
  output idx = %3
  output val = %4
}",
    ),
    (
        "the 4 nearest of 16 codewords (a contraction, then topk) and a dense [B, 12] line",
        "graph topk_codes {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 8]
  %3 = input codebook : {t}[16, 8]
  %4 = contract %2[id], %3[kd] -> [ik] : {acc}[%1, 16]
  %5 = topk indices {order} %4, axis 1, k 4 : i32[%1, 4]
  %6 = input y : {t}[B, 12]
  %7 = topk indices {order} %6, axis 1, k 12 : i32[B, 12]
  output codes = %5
  output order = %7
}",
    ),
    (
        "one beam-search step: 2 partial residuals x 16 codewords flattened, the 2 best, \
         their residuals taken and the codewords subtracted",
        "graph beam_step {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input res : {t}[%1, 2, 8]
  %3 = input codebook : {t}[16, 8]
  %4 = contract %2[ibd], %3[kd] -> [ibk] : {acc}[%1, 2, 16]
  %5 = reshape %4, [32] : {acc}[%1, 32]
  %6 = topk indices {order} %5, axis 1, k 2 : i32[%1, 2]
  %7 = const 16 : i32[]
  %8 = div %6, %7 : i32[%1, 2]
  %9 = mul %8, %7 : i32[%1, 2]
  %10 = sub %6, %9 : i32[%1, 2]
  %11 = take %2, %8, axis 1 : {t}[%1, 2, 8]
  %12 = gather %3, %10 : {t}[%1, 2, 8]
  %13 = sub %11, %12 : {t}[%1, 2, 8]
  %14 = position axis 1 : i32[%1, 2, 3]
  %15 = take %10, %14, axis 1 : i32[%1, 2, 3]
  %16 = input parent_of : i32[5]
  %17 = take %2, %16, axis 1 : {t}[%1, 5, 8]
  output sel = %6
  output spread = %17
  output residual = %13
  output codes = %15
}",
    ),
    (
        "reshapes of static inner dims, of an input and of a contraction",
        "graph reshapes {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 2, 6]
  %3 = reshape %2, [3, 4] : {t}[%1, 3, 4]
  %4 = input w : {t}[4, 5]
  %5 = contract %3[ijc], %4[cd] -> [ijd] : {acc}[%1, 3, 5]
  %6 = reshape %5, [5, 3] : {acc}[%1, 5, 3]
  %7 = input y : {t}[B, N, 6]
  %8 = reshape %7, [2, 3] : {t}[B, N, 2, 3]
  output a = %6
  output b = %8
}",
    ),
    (
        "neighbour differences and session starts (shifts along the sequence)",
        "graph sessions {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0 : seqs
  %2 = input t : {t}[%1]
  %3 = shift %2, axis 0, by -1 : {t}[%1]
  %4 = sub %2, %3 : {t}[%1]
  %5 = const 2 : {t}[]
  %6 = gt %4, %5 : bool[%1]
  %7 = position axis 0 : i32[%1]
  %8 = const 0 : i32[]
  %9 = eq %7, %8 : bool[%1]
  %10 = const 1 : {t}[]
  %11 = const 0 : {t}[]
  %12 = select %9, %10, %11 : {t}[%1]
  %13 = select %6, %10, %12 : {t}[%1]
  %14 = shift %2, axis 0, by 1 : {t}[%1]
  %15 = sub %14, %2 : {t}[%1]
  output start = %13
  output next_gap = %15
}",
    ),
    (
        "shifts along an inner axis and along a truncated sequence",
        "graph inner_shift {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 6]
  %3 = shift %2, axis 1, by 2 : {t}[%1, 6]
  %4 = shift %2, axis 0, by -3 : {t}[%1, 6]
  %5 = add %3, %4 : {t}[%1, 6]
  output y = %5
}",
    ),
];

fn graph(text: &str, order: &str, dtype: DType, idx: DType) -> Graph {
    let text = text
        .replace("{order}", order)
        .replace("{t}", &dtype.to_string())
        .replace("{idx}", &idx.to_string())
        .replace("{acc}", if dtype.is_float() { "f32" } else { "i64" });
    Graph::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn line_ops_match_the_reference() {
    let mut rt = runtime();
    for (name, text) in GRAPHS {
        for order in ["ascending", "descending"] {
            // i32 inputs take values 0..7: ties everywhere.
            for dtype in [DType::F32, DType::BF16, DType::I32] {
                if name.contains("session") && dtype == DType::BF16 {
                    // bf16 timestamps: the gap compare rounds differently
                    // in the reference (f64 subtraction) and the kernel.
                    continue;
                }
                for idx in [DType::I32, DType::I64] {
                    let g = graph(text, order, dtype, idx);
                    for arch in Arch::ALL {
                        let spec = Spec::for_graph(&g, 21, arch).expect("spec");
                        check_spec_against_reference(
                            &g,
                            &spec,
                            &mut rt,
                            21,
                            &[],
                            &mut Rng::new(17),
                            Tolerance::design,
                        )
                        .unwrap_or_else(|e| panic!("{name} {order} {dtype} {idx} {arch}: {e}"));
                    }
                }
            }
        }
    }
}

/// NaN comes first in both orders (as argmin/argmax pick it) and NaNs tie
/// among themselves by index; equal values keep their order; an empty
/// sequence has no rows to rank.
#[test]
fn nan_and_ties_rank_like_a_stable_sort() {
    let text = GRAPHS[0].1;
    // Sequences of 4, 0 and 5 rows; column 0 is checked by hand.
    let lengths = [4usize, 0, 5];
    let col0 = [
        2.0,
        f64::NAN,
        2.0,
        -1.0,
        // sequence 2
        0.5,
        f64::NAN,
        7.0,
        f64::NAN,
        0.5,
    ];
    let rows: usize = lengths.iter().sum();
    let mut rng = Rng::new(5);
    let mut x: Vec<f64> = (0..rows * 3).map(|_| rng.below(8) as f64).collect();
    for (r, v) in col0.iter().enumerate() {
        x[r * 3] = *v;
    }
    let x = DenseTensor::from_f64(DType::F32, vec![rows, 3], &x).expect("x");
    let offsets = DenseTensor::from_f64(DType::I32, vec![4], &[0.0, 4.0, 4.0, 9.0]).expect("o");
    let inputs = [("offsets", &offsets), ("x", &x)];
    let attrs = [("max_len", AttrValue::Index(8))];
    for (order, expect) in [
        // ascending: NaN(1) | -1 | 2(0) 2(2);  NaN(5) NaN(7) | 0.5(4) 0.5(8) | 7
        ("ascending", [2.0, 0.0, 3.0, 1.0, 2.0, 0.0, 4.0, 1.0, 3.0]),
        // descending: NaN(1) | 2(0) 2(2) | -1;  NaN(5) NaN(7) | 7 | 0.5(4) 0.5(8)
        ("descending", [1.0, 0.0, 2.0, 3.0, 3.0, 0.0, 2.0, 1.0, 4.0]),
    ] {
        let g = graph(text, order, DType::F32, DType::I32);
        let want = jagged::ir::evaluate(&g, &inputs, &attrs).expect("reference");
        let want = want["r"].to_f64();
        let col: Vec<f64> = (0..rows).map(|r| want[r * 3]).collect();
        assert_eq!(col, expect, "reference, {order}");
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, 8, arch).expect("spec");
            let kernel = compile(&g, &spec).expect("compiles");
            let got = runtime()
                .run_compiled_host(&g, &kernel, &inputs, &attrs)
                .expect("runs");
            assert_eq!(got["r"].to_f64(), want, "{order} {arch}");
        }
    }
}

/// Integer division truncates toward zero and gives 0 for a zero divisor
/// (PTX leaves that undefined), as the reference says: the bucket of an
/// integer timestamp relative to its predecessor, `t / (t - shift(t, -1))`.
#[test]
fn integer_division_truncates_and_is_zero_by_zero() {
    let text = "graph buckets {
  %0 = input offsets : i64[B+1]
  %1 = seqs %0 : seqs
  %2 = input t : i64[%1]
  %3 = shift %2, axis 0, by -1 : i64[%1]
  %4 = sub %2, %3 : i64[%1]
  %5 = div %2, %4 : i64[%1]
  output q = %5
}";
    let g = Graph::parse(text).expect("graph");
    let t = [7.0, 7.0, -9.0, 12.0, 0.0, -9.0, -7.0, 5.0];
    let t = DenseTensor::from_f64(DType::I64, vec![8], &t).expect("t");
    let offsets = DenseTensor::from_f64(DType::I64, vec![3], &[0.0, 5.0, 8.0]).expect("o");
    let inputs = [("offsets", &offsets), ("t", &t)];
    let want = jagged::ir::evaluate(&g, &inputs, &[]).expect("reference");
    // Differences: 7 | 0 | -16 | 21 | -12 ;  -9 | 2 | 12: -7 / 2 is -3.
    assert_eq!(
        want["q"].to_f64(),
        [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, -3.0, 0.0],
        "reference"
    );
    for arch in Arch::ALL {
        let spec = Spec::for_graph(&g, 8, arch).expect("spec");
        let kernel = compile(&g, &spec).expect("compiles");
        let got = runtime()
            .run_compiled_host(&g, &kernel, &inputs, &[])
            .expect("runs");
        assert_eq!(got["q"].to_f64(), want["q"].to_f64(), "{arch}");
    }
}

/// topk's slots follow the same stable sort as rank: NaN first (NaNs by
/// index), equal values by index, -0 and +0 equal.
#[test]
fn topk_follows_the_stable_sort() {
    let text = "graph topk_row {
  %0 = input x : f32[B, 8]
  %1 = topk indices {order} %0, axis 1, k 5 : i32[B, 5]
  %2 = topk values {order} %0, axis 1, k 5 : f32[B, 5]
  output idx = %1
  output val = %2
}";
    let row = [3.0, f64::NAN, -0.0, 3.0, 0.0, f64::NAN, -2.0, 7.0];
    let x = DenseTensor::from_f64(DType::F32, vec![1, 8], &row).expect("x");
    let inputs = [("x", &x)];
    for (order, expect) in [
        // NaN(1) NaN(5) -2(6) -0(2) 0(4)
        ("ascending", [1.0, 5.0, 6.0, 2.0, 4.0]),
        // NaN(1) NaN(5) 7(7) 3(0) 3(3)
        ("descending", [1.0, 5.0, 7.0, 0.0, 3.0]),
    ] {
        let g = Graph::parse(&text.replace("{order}", order)).expect("graph");
        let want = jagged::ir::evaluate(&g, &inputs, &[]).expect("reference");
        assert_eq!(want["idx"].to_f64(), expect, "reference, {order}");
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, 8, arch).expect("spec");
            let kernel = compile(&g, &spec).expect("compiles");
            let got = runtime()
                .run_compiled_host(&g, &kernel, &inputs, &[])
                .expect("runs");
            assert_eq!(got["idx"].to_f64(), want["idx"].to_f64(), "{order} {arch}");
            let (gv, wv) = (got["val"].to_f64(), want["val"].to_f64());
            for (a, b) in gv.iter().zip(&wv) {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{order} {arch}: {gv:?} vs {wv:?}"
                );
            }
        }
    }
}

/// The graph of [`shared_reads_and_long_ranks_match_the_reference`] (`{t}`
/// the timestamps' dtype, `{idx}` the offsets').
const SHARED_READS: &str = "graph shared_reads {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0 : seqs
  %2 = input t : {t}[%1]
  %3 = input seg : i32[B]
  %4 = input table : f32[12]
  %5 = shift %2, axis 0, by -1 : {t}[%1]
  %6 = sub %2, %5 : {t}[%1]
  %7 = const 2 : {t}[]
  %8 = gt %6, %7 : bool[%1]
  %9 = position axis 0 : i32[%1]
  %10 = const 0 : i32[]
  %11 = eq %9, %10 : bool[%1]
  %12 = select %11, %11, %8 : bool[%1]
  %13 = seqs_where %12 : seqs
  %14 = compact %9, %13 : i32[%13]
  %15 = offsets %13 : {idx}[B+1]
  %16 = shift %2, axis 0, by 1 : {t}[%1]
  %17 = sub %16, %2 : {t}[%1]
  %18 = gt %17, %7 : bool[%1]
  %19 = const 0 : {t}[]
  %20 = select %18, %19, %17 : {t}[%1]
  %21 = const 3 : i32[]
  %22 = add %3, %21 : i32[B]
  %23 = gather %4, %22 : f32[B]
  %24 = cast %20 : f32[%1]
  %25 = mul %24, %23 : f32[%1]
  %26 = cast %22 : f32[B]
  %27 = add %25, %26 : f32[%1]
  %28 = seqs %0, max_len : seqs
  %29 = input u : {t}[%28]
  %30 = shift %29, axis 0, by -1 : {t}[%28]
  %31 = shift %29, axis 0, by 1 : {t}[%28]
  %32 = sub %31, %30 : {t}[%28]
  %33 = rank descending %2, axis 0 : i32[%1]
  %34 = const 5 : i32[]
  %35 = lt %33, %34 : bool[%1]
  %36 = seqs_where %35 : seqs
  %37 = compact %2, %36 : {t}[%36]
  %38 = offsets %36 : {idx}[B+1]
  %39 = input s : f32[%1]
  %40 = rank ascending %39, axis 0 : i32[%1]
  %41 = input x : f32[%1, 8]
  %42 = input w : f32[8]
  %43 = mul %41, %42 : f32[%1, 8]
  %44 = mul %43, %23 : f32[%1, 8]
  %45 = const 0 : f32[]
  %46 = gt %42, %45 : bool[8]
  %47 = select %46, %44, %41 : f32[%1, 8]
  %48 = input y : f32[%1, 32]
  %49 = input c : i32[%1]
  %50 = cast %49 : f32[%1]
  %51 = mul %48, %50 : f32[%1, 32]
  %52 = input z : f32[%28, 32]
  %53 = input zc : f32[%28]
  %54 = add %52, %53 : f32[%28, 32]
  output starts = %14
  output start_offsets = %15
  output dwell = %20
  output boosted = %27
  output spread = %32
  output best = %37
  output best_offsets = %38
  output order = %40
  output scaled = %47
  output rowed = %51
  output rowed_truncated = %54
}";

/// The reads an element's tree shares: row shifts by one of a stored
/// sequence taken from the neighbouring lane (in an element kernel, and in
/// the count and copy kernels of a compaction on them; groups of 32 rows,
/// lengths around and far above 32, a truncated set), a per-sequence input
/// and what is computed from it read by every row, a per-column input
/// read by rows of 8 columns (a lane keeps its column), per-row inputs
/// read by rows of 32 columns (32 rows a load, shuffled; also on a
/// truncated set), a leaf read by several
/// branches of the tree, and a rank over lines that are staged in shared
/// memory (1000 rows) and that are not (1600 rows of i64 do not fit a
/// warp's share), 32 rows at a time by shuffles (NaN first, ties by row):
/// every output equals the f64 reference.
#[test]
fn shared_reads_and_long_ranks_match_the_reference() {
    let text = SHARED_READS;
    let lengths = [0, 1, 31, 32, 33, 70, 5, 1000, 1600, 64];
    let mut rng = Rng::new(23);
    let max_len = 40;
    for dtype in [DType::F32, DType::I64] {
        for idx in [DType::I32, DType::I64] {
            let g = graph(text, "", dtype, idx);
            let mut offsets = vec![0.0];
            for &l in &lengths {
                offsets.push(offsets[offsets.len() - 1] + l as f64);
            }
            let rows = lengths.iter().sum::<usize>();
            // Timestamps: gaps of 0..4, some above the gap of 2; ties in the rank.
            let mut t = Vec::with_capacity(rows);
            let mut now = 0.0;
            for _ in 0..rows {
                now += rng.below(5) as f64;
                t.push(now);
            }
            let u: Vec<f64> = (0..rows).map(|_| rng.below(100) as f64).collect();
            // Scores with ties, NaNs and both zeros.
            let scores: Vec<f64> = (0..rows)
                .map(|_| match rng.below(9) {
                    0 => f64::NAN,
                    1 => -0.0,
                    _ => rng.below(7) as f64 - 3.0,
                })
                .collect();
            // Segments in -1..14: some outside the table (0 from the gather).
            let seg: Vec<f64> = lengths.iter().map(|_| rng.below(15) as f64 - 1.0).collect();
            let table: Vec<f64> = (0..12).map(|_| rng.float(2.0)).collect();
            let x: Vec<f64> = (0..rows * 8).map(|_| rng.float(2.0)).collect();
            let w: Vec<f64> = (0..8).map(|_| rng.float(2.0)).collect();
            let y: Vec<f64> = (0..rows * 32).map(|_| rng.float(2.0)).collect();
            let c: Vec<f64> = (0..rows).map(|_| rng.below(7) as f64 - 3.0).collect();
            let zc: Vec<f64> = (0..rows).map(|_| rng.float(2.0)).collect();
            let tensors = [
                (
                    "offsets",
                    DenseTensor::from_f64(idx, vec![offsets.len()], &offsets),
                ),
                ("t", DenseTensor::from_f64(dtype, vec![rows], &t)),
                ("u", DenseTensor::from_f64(dtype, vec![rows], &u)),
                ("s", DenseTensor::from_f64(DType::F32, vec![rows], &scores)),
                ("x", DenseTensor::from_f64(DType::F32, vec![rows, 8], &x)),
                ("w", DenseTensor::from_f64(DType::F32, vec![8], &w)),
                ("y", DenseTensor::from_f64(DType::F32, vec![rows, 32], &y)),
                ("c", DenseTensor::from_f64(DType::I32, vec![rows], &c)),
                ("z", DenseTensor::from_f64(DType::F32, vec![rows, 32], &y)),
                ("zc", DenseTensor::from_f64(DType::F32, vec![rows], &zc)),
                (
                    "seg",
                    DenseTensor::from_f64(DType::I32, vec![seg.len()], &seg),
                ),
                ("table", DenseTensor::from_f64(DType::F32, vec![12], &table)),
            ]
            .map(|(n, t)| (n, t.expect("input")));
            let inputs: Vec<(&str, &DenseTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
            let attrs = [("max_len", AttrValue::Index(max_len))];
            let want = jagged::ir::evaluate(&g, &inputs, &attrs).expect("reference");
            let spec = Spec::for_graph(&g, max_len as u64, Arch::Sm80).expect("spec");
            let kernel = compile(&g, &spec).expect("compiles");
            let got = runtime()
                .run_compiled_host(&g, &kernel, &inputs, &attrs)
                .expect("runs");
            for (name, reference) in &want {
                let out = got.get(name).expect("output");
                assert_eq!(out.shape(), reference.shape(), "{name} {dtype} {idx}");
                let (out, reference) = (out.to_f64(), reference.to_f64());
                let tol = Tolerance::design(DType::F32);
                assert!(
                    tol.accepts(&out, &reference),
                    "{name} {dtype} {idx}: {out:?} vs {reference:?}"
                );
            }
        }
    }
}

/// The kernels of [`SHARED_READS`] (shuffled shifts, per-sequence,
/// per-column and per-row values, converged ranks, narrow compactions)
/// assemble for sm_80 and sm_90a without a spill or a stack frame.
#[test]
fn shared_reads_assemble_without_spills() {
    if common::tools::ptxas("shared_reads_assemble_without_spills").is_none() {
        return;
    }
    let mut offenders = Vec::new();
    for dtype in [DType::F32, DType::I64] {
        for idx in [DType::I32, DType::I64] {
            let g = graph(SHARED_READS, "", dtype, idx);
            for arch in Arch::ALL {
                let spec = Spec::for_graph(&g, 40, arch).expect("spec");
                let kernel = compile(&g, &spec).expect("compiles");
                let report = ptxas::assemble(&kernel.ptx, arch)
                    .unwrap_or_else(|e| panic!("{dtype} {idx} {arch}: {e}"));
                if !report.offenders().is_empty() {
                    offenders.push(format!("{dtype} {idx} {arch}: {:?}", report.offenders()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
