//! Sibling fusion in the general path's partitioner: values of one element
//! per row of a compaction's parent rows, computed per row in straight-line
//! code, are stored by the kernel that counts the kept rows (one pass over
//! the rows, no launch of their own). The plan's launch count and every
//! output against the f64 reference, on lengths around and far above 32,
//! with siblings that may not fuse (one a later step reads at a
//! neighbouring row, one over a truncated set).

use std::sync::Arc;

mod common;

use jagged::codegen::{Arch, Spec, compile_with_plan, ptxas};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance};

/// `{t}` the timestamps' dtype, `{idx}` the offsets'. The count kernel of
/// `%25` also stores `start` (its own mask, read at the row it tests),
/// `scaled` (a per-sequence input read per row, a bf16 output nothing else
/// reads) and `next_dwell` (a row shift of the stored `dwell`); `dwell`
/// keeps its kernel (`next_dwell` reads it at the next row, so it must be
/// complete first), as does `clipped` (a truncated set: rows past
/// `max_len` are zeros, which the count's loop never visits).
const SIBLINGS: &str = "graph siblings {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0 : seqs
  %2 = input t : {t}[%1]
  %3 = input seg : f32[B]
  %4 = input x : f32[%1, 4]
  %5 = shift %2, axis 0, by -1 : {t}[%1]
  %6 = sub %2, %5 : {t}[%1]
  %7 = const 2 : {t}[]
  %8 = gt %6, %7 : bool[%1]
  %9 = position axis 0 : i32[%1]
  %10 = const 0 : i32[]
  %11 = eq %9, %10 : bool[%1]
  %12 = select %11, %11, %8 : bool[%1]
  %13 = shift %2, axis 0, by 1 : {t}[%1]
  %14 = sub %13, %2 : {t}[%1]
  %15 = gt %14, %7 : bool[%1]
  %16 = const 0 : {t}[]
  %17 = select %15, %16, %14 : {t}[%1]
  %18 = cast %17 : f32[%1]
  %19 = mul %18, %3 : f32[%1]
  %20 = cast %19 : bf16[%1]
  %21 = shift %17, axis 0, by 1 : {t}[%1]
  %22 = seqs %0, max_len : seqs
  %23 = input u : f32[%22]
  %24 = add %23, %23 : f32[%22]
  %25 = seqs_where %12 : seqs
  %26 = compact %9, %25 : i32[%25]
  %27 = compact %4, %25 : f32[%25, 4]
  %28 = offsets %25 : {idx}[B+1]
  output start = %12
  output dwell = %17
  output scaled = %20
  output next_dwell = %21
  output clipped = %24
  output starts = %26
  output kept_x = %27
  output start_offsets = %28
}";

/// A rank along the sequence and a selection on it (`{t}` the scores'
/// dtype): the rank's resident kernel, converged on 32 rows at a time,
/// also counts the kept rows (`rank < 3` where `s >= 0`, and a row whose
/// score exceeds its predecessor's), so the selection's offsets take a
/// prefix sum only; the compaction of the rows and their features follows.
const COUNTED: &str = "graph counted {
  attr max_len: index
  %0 = input offsets : {idx}[B+1]
  %1 = seqs %0 : seqs
  %2 = input s : {t}[%1]
  %3 = input x : f32[%1, 4]
  %4 = rank descending %2, axis 0 : i32[%1]
  %5 = const 3 : i32[]
  %6 = lt %4, %5 : bool[%1]
  %7 = const 0 : {t}[]
  %8 = ge %2, %7 : bool[%1]
  %9 = select %8, %6, %8 : bool[%1]
  %10 = shift %2, axis 0, by -1 : {t}[%1]
  %11 = gt %2, %10 : bool[%1]
  %12 = select %9, %9, %11 : bool[%1]
  %13 = position axis 0 : i32[%1]
  %14 = seqs_where %12 : seqs
  %15 = compact %13, %14 : i32[%14]
  %16 = compact %3, %14 : f32[%14, 4]
  %17 = offsets %14 : {idx}[B+1]
  output r = %4
  output rows = %15
  output kept_x = %16
  output kept_offsets = %17
}";

fn graph_of(text: &str, t: DType, idx: DType) -> Graph {
    let text = text
        .replace("{t}", &t.to_string())
        .replace("{idx}", &idx.to_string());
    Graph::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Lengths around and far above 32, an empty sequence among them.
const LENGTHS: [usize; 9] = [0, 1, 31, 32, 33, 70, 5, 1000, 64];

/// The offsets of [`LENGTHS`] (as f64) and the rows.
fn offsets() -> (Vec<f64>, usize) {
    let mut offsets = vec![0.0];
    for &l in &LENGTHS {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    (offsets, LENGTHS.iter().sum())
}

/// Compiles `g` for both archs: `launches` launches, the plan mentions
/// each of `notes`, and every output equals the f64 reference on the
/// emulator (`scaled` to bf16's tolerance, the others to f32's).
fn check(g: &Graph, tensors: &[(&str, DenseTensor)], launches: usize, notes: &[&str]) {
    let inputs: Vec<(&str, &DenseTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let attrs = [("max_len", AttrValue::Index(40))];
    let want = jagged::ir::evaluate(g, &inputs, &attrs).expect("reference");
    for arch in Arch::ALL {
        let spec = Spec::for_graph(g, 40, arch).expect("spec");
        let (kernel, plan) = compile_with_plan(g, &spec).expect("compiles");
        assert_eq!(kernel.launches.len(), launches, "{arch}\n{plan}");
        for note in notes {
            assert!(plan.contains(note), "{arch}: no `{note}`\n{plan}");
        }
        let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
        rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
        let got = rt
            .run_compiled_host(g, &kernel, &inputs, &attrs)
            .expect("runs");
        for (name, reference) in &want {
            let out = got.get(name).expect("output");
            assert_eq!(out.shape(), reference.shape(), "{name} {arch}");
            let dtype = if name == "scaled" {
                DType::BF16
            } else {
                DType::F32
            };
            let (out, reference) = (out.to_f64(), reference.to_f64());
            assert!(
                Tolerance::design(dtype).accepts(&out, &reference),
                "{name} {arch}: {out:?} vs {reference:?}\n{plan}"
            );
        }
    }
}

/// Five launches where eight ran before sibling fusion: `dwell`,
/// `clipped`, the count (storing `start`, `scaled` and `next_dwell` too),
/// its prefix sum and the compaction; every output equals the reference.
#[test]
fn siblings_fuse_into_the_count_and_match_the_reference() {
    let mut rng = Rng::new(29);
    let (offsets, rows) = offsets();
    for t in [DType::F32, DType::I64] {
        for idx in [DType::I32, DType::I64] {
            // Gaps of 0..4: some above the gap of 2.
            let mut now = 0.0;
            let times: Vec<f64> = (0..rows)
                .map(|_| {
                    now += rng.below(5) as f64;
                    now
                })
                .collect();
            let seg: Vec<f64> = LENGTHS.iter().map(|_| rng.float(2.0)).collect();
            let x: Vec<f64> = (0..rows * 4).map(|_| rng.float(2.0)).collect();
            let u: Vec<f64> = (0..rows).map(|_| rng.float(2.0)).collect();
            let tensors = [
                (
                    "offsets",
                    DenseTensor::from_f64(idx, vec![offsets.len()], &offsets),
                ),
                ("t", DenseTensor::from_f64(t, vec![rows], &times)),
                (
                    "seg",
                    DenseTensor::from_f64(DType::F32, vec![seg.len()], &seg),
                ),
                ("x", DenseTensor::from_f64(DType::F32, vec![rows, 4], &x)),
                ("u", DenseTensor::from_f64(DType::F32, vec![rows], &u)),
            ]
            .map(|(n, t)| (n, t.expect("input")));
            check(
                &graph_of(SIBLINGS, t, idx),
                &tensors,
                5,
                &["also %12", "also %20", "also %21"],
            );
        }
    }
}

/// Three launches where four ran: the rank (counting the kept rows), the
/// prefix sum of the counts, the compaction; ranks with ties and NaNs.
#[test]
fn a_rank_kernel_counts_the_kept_rows_and_matches_the_reference() {
    let mut rng = Rng::new(31);
    let (offsets, rows) = offsets();
    for t in [DType::F32, DType::I64] {
        for idx in [DType::I32, DType::I64] {
            let s: Vec<f64> = (0..rows)
                .map(|_| match rng.below(9) {
                    0 if t == DType::F32 => f64::NAN,
                    _ => rng.below(7) as f64 - 3.0,
                })
                .collect();
            let x: Vec<f64> = (0..rows * 4).map(|_| rng.float(2.0)).collect();
            let tensors = [
                (
                    "offsets",
                    DenseTensor::from_f64(idx, vec![offsets.len()], &offsets),
                ),
                ("s", DenseTensor::from_f64(t, vec![rows], &s)),
                ("x", DenseTensor::from_f64(DType::F32, vec![rows, 4], &x)),
            ]
            .map(|(n, t)| (n, t.expect("input")));
            check(
                &graph_of(COUNTED, t, idx),
                &tensors,
                3,
                &["counted in the loop of %4's kernel"],
            );
        }
    }
}

/// The count kernel with its siblings, and the rank kernel that counts,
/// assemble for sm_80 and sm_90a without a spill or a stack frame.
#[test]
fn siblings_assemble_without_spills() {
    if common::tools::ptxas("siblings_assemble_without_spills").is_none() {
        return;
    }
    let mut offenders = Vec::new();
    for t in [DType::F32, DType::I64] {
        for idx in [DType::I32, DType::I64] {
            for g in [graph_of(SIBLINGS, t, idx), graph_of(COUNTED, t, idx)] {
                for arch in Arch::ALL {
                    let spec = Spec::for_graph(&g, 40, arch).expect("spec");
                    let (kernel, _) = compile_with_plan(&g, &spec).expect("compiles");
                    let report = ptxas::assemble(&kernel.ptx, arch)
                        .unwrap_or_else(|e| panic!("{t} {idx} {arch}: {e}"));
                    if !report.offenders().is_empty() {
                        offenders.push(format!("{t} {idx} {arch}: {:?}", report.offenders()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
