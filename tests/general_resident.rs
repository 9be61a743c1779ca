//! Sequence-resident kernels of the general path: statistics that elements
//! share (a row's mean, a column's softmax over the sequence, a query row's
//! softmax over its keys) are computed by the kernel that reads them, from
//! the sequence's rows staged once in shared memory; padding and compaction
//! go a warp per sequence too. Each graph runs on the
//! emulator (memory checker on, outputs poisoned) like the f64 reference on
//! adversarial lengths, including sequences longer than the staged rows
//! (which read global memory instead), and assembles with ptxas with no
//! spill.

mod common;

use std::sync::Arc;

use jagged::codegen::general::compile_general;
use jagged::codegen::{Arch, Spec, ptxas};
use jagged::ir::{AttrValue, DenseTensor, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, adversarial_lengths, random_inputs};

/// A graph, the `max_len` it runs with, the kernels and scratch buffers
/// its plan has, and what its plan says of the kernel of its first output.
struct Case {
    name: &'static str,
    text: &'static str,
    max_len: usize,
    kernels: usize,
    scratch: usize,
    plan: &'static str,
}

const RESIDENT: &str = "(resident: a warp per sequence";

const CASES: &[Case] = &[
    Case {
        name: "RMS norm: a row statistic, a weight per column",
        text: "graph rms_norm {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 32]
  %3 = input gamma : f32[32]
  %4 = mul %2, %2 : f32[%1, 32]
  %5 = reduce mean %4, axis 1 : f32[%1]
  %6 = const 0.00001 : f32[]
  %7 = add %5, %6 : f32[%1]
  %8 = rsqrt %7 : f32[%1]
  %9 = mul %2, %8 : f32[%1, 32]
  %10 = mul %9, %3 : f32[%1, 32]
  output y = %10
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "layer norm over 48 columns (two lanes' columns, a partial second): nested row statistics",
        text: "graph layer_norm {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : bf16[%1, 48]
  %3 = reduce mean %2, axis 1 : bf16[%1]
  %4 = sub %2, %3 : bf16[%1, 48]
  %5 = mul %4, %4 : bf16[%1, 48]
  %6 = reduce mean %5, axis 1 : bf16[%1]
  %7 = const 0.00001 : bf16[]
  %8 = add %6, %7 : bf16[%1]
  %9 = rsqrt %8 : bf16[%1]
  %10 = mul %4, %9 : bf16[%1, 48]
  output y = %10
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "rows wider than the staged rows allow: 96 columns, sequences past 31 rows read global memory",
        text: "graph wide_rms {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 96]
  %3 = reduce max %2, axis 1 : f32[%1]
  %4 = sub %2, %3 : f32[%1, 96]
  %5 = exp %4 : f32[%1, 96]
  %6 = reduce sum %5, axis 1 : f32[%1]
  %7 = div %5, %6 : f32[%1, 96]
  output y = %7
}",
        max_len: 40,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "softmax along a row",
        text: "graph row_softmax {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 40]
  %3 = softmax %2, axis 1 : f32[%1, 40]
  output y = %3
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "softmax over the sequence (a lane per element, two rows at a time)",
        text: "graph seq_softmax {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 16]
  %3 = const 2 : f32[]
  %4 = mul %2, %3 : f32[%1, 16]
  %5 = softmax %4, axis 0 : f32[%1, 16]
  output y = %5
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "centered softmax-weighted sum: sequence statistics inside a reduction over the sequence",
        text: "graph centered {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : bf16[%1, 16]
  %3 = input score : bf16[%1]
  %4 = softmax %3, axis 0 : bf16[%1]
  %5 = reduce mean %2, axis 0 : bf16[B, 16]
  %6 = sub %2, %5 : bf16[%1, 16]
  %7 = mul %6, %4 : bf16[%1, 16]
  %8 = reduce sum %7, axis 0 : bf16[B, 16]
  output pooled = %8
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "softmax-mask-sum over keys: a pair softmax's statistics per query row",
        text: "graph softmax_mask_sum {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f32[%1, 8]
  %3 = input k : f32[%1, 8]
  %4 = contract %2[id], %3[jd] -> [ij] : f32[%1, %1]
  %5 = softmax %4, axis 1 : f32[%1, %1]
  %6 = mask j >= i : bool[%1, %1]
  %7 = const 0 : f32[]
  %8 = select %6, %5, %7 : f32[%1, %1]
  %9 = reduce sum %8, axis 1 : f32[%1]
  output s = %9
}",
        max_len: 40,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "pair reduction over wide keys: sequences past 23 rows read global memory",
        text: "graph wide_keys {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f32[%1, 64]
  %3 = input k : f32[%1, 64]
  %4 = contract %2[id], %3[jd] -> [ij] : f32[%1, %1]
  %5 = softmax %4, axis 1 : f32[%1, %1]
  %6 = reduce max %5, axis 1 : f32[%1]
  output s = %6
}",
        max_len: 40,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "untruncated sequences of wide rows: the staged rows are bounded by shared memory only",
        text: "graph untruncated {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0 : seqs
  %2 = input x : f32[%1, 128]
  %3 = reduce max %2, axis 0 : f32[B, 128]
  %4 = sub %2, %3 : f32[%1, 128]
  output y = %4
}",
        max_len: 40,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "weighted pooling with integer and boolean leaves staged",
        text: "graph pool_ints {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f16[%1, 4, 8]
  %3 = input count : i32[%1]
  %4 = input keep : bool[%1]
  %5 = cast %3 : f16[%1]
  %6 = mul %2, %5 : f16[%1, 4, 8]
  %7 = const 0 : f16[]
  %8 = select %4, %6, %7 : f16[%1, 4, 8]
  %9 = reduce sum %8, axis 0 : f16[B, 4, 8]
  output pooled = %9
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "a sum per sequence of a [T] value (a warp per result)",
        text: "graph per_seq_sum {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input score : f32[%1]
  %3 = reduce logsumexp %2, axis 0 : f32[B]
  %4 = sub %2, %3 : f32[%1]
  output y = %4
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: RESIDENT,
    },
    Case {
        name: "padding: a warp per sequence reads its offsets once",
        text: "graph padded {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 6]
  %3 = to_padded %2 : f32[B, N, 6]
  %4 = mask i < len(%1) : bool[B, N]
  %5 = const -1 : f32[]
  %6 = select %4, %3, %5 : f32[B, N, 6]
  output dense = %6
}",
        max_len: 19,
        kernels: 1,
        scratch: 0,
        plan: "(a warp per sequence)",
    },
    Case {
        name: "compaction of 40-wide rows (two passes of the lanes per row), counted a warp per sequence",
        text: "graph keep {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : bf16[%1, 40]
  %3 = input score : f32[%1]
  %4 = const 0 : f32[]
  %5 = gt %3, %4 : bool[%1]
  %6 = seqs_where %5 : seqs
  %7 = compact %2, %6 : bf16[%6, 40]
  %8 = offsets %6 : i64[B+1]
  output values = %7
  output offsets = %8
}",
        max_len: 40,
        // Count, prefix (which also writes the offsets output), compaction.
        kernels: 3,
        scratch: 1,
        plan: "compact %7",
    },
    Case {
        name: "compaction of untruncated [T] values by an integer mask",
        text: "graph keep_ids {
  %0 = input offsets : i64[B+1]
  %1 = seqs %0 : seqs
  %2 = input ids : i32[%1]
  %3 = input keep : u8[%1]
  %4 = cast %3 : bool[%1]
  %5 = seqs_where %4 : seqs
  %6 = compact %2, %5 : i32[%5]
  %7 = offsets %5 : i32[B+1]
  output ids = %6
  output offsets = %7
}",
        max_len: 40,
        // Count, prefix (which also writes the offsets output), compaction.
        kernels: 3,
        scratch: 1,
        plan: "compact %6",
    },
];

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

fn graph(case: &Case) -> Graph {
    Graph::parse(case.text).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

#[test]
fn resident_kernels_match_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(11);
    for case in CASES {
        let g = graph(case);
        let spec = Spec::for_graph(&g, case.max_len as u64, Arch::Sm80).expect("spec");
        let general = compile_general(&g, &spec).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            general.kernel.launches.len(),
            case.kernels,
            "{}\n{}",
            case.name,
            general.plan
        );
        assert!(
            general.plan.contains(case.plan),
            "{}\n{}",
            case.name,
            general.plan
        );
        let attrs = [("max_len", AttrValue::Index(case.max_len))];
        let attrs: Vec<(&str, AttrValue)> = attrs
            .into_iter()
            .filter(|(n, _)| g.attr(n).is_some())
            .collect();
        let mut cases = adversarial_lengths(case.max_len, &mut rng);
        // Sequences longer than any staged rows, next to short ones.
        cases.push(vec![3, 2 * case.max_len, 0, case.max_len + 1]);
        for lengths in &cases {
            let inputs = random_inputs(&g, lengths, case.max_len, 2.0, &mut rng);
            let named: Vec<(&str, &DenseTensor)> =
                inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let want = jagged::ir::evaluate(&g, &named, &attrs).expect("reference");
            let got = rt
                .run_compiled_host(&g, &general.kernel, &named, &attrs)
                .unwrap_or_else(|e| panic!("{} {lengths:?}: {e}\n{}", case.name, general.plan));
            for (name, want) in &want {
                let out = &got[name];
                let tol = Tolerance::composed(want.dtype());
                assert!(
                    out.shape() == want.shape() && tol.accepts(&out.to_f64(), &want.to_f64()),
                    "{} {lengths:?}: output {name} differs from the reference\n{}",
                    case.name,
                    general.plan
                );
            }
        }
    }
}

/// The statistics are not stored: no scratch buffer (but a compaction's
/// offsets), and the kernel reads each input row once from global memory
/// (checked on the cost model by `examples/cost_model.rs`).
#[test]
fn resident_statistics_need_no_scratch() {
    for case in CASES {
        let g = graph(case);
        let spec = Spec::for_graph(&g, case.max_len as u64, Arch::Sm80).expect("spec");
        let general = compile_general(&g, &spec).expect("compiles");
        assert_eq!(
            general.kernel.scratch.len(),
            case.scratch,
            "{}\n{}",
            case.name,
            general.plan
        );
    }
}

#[test]
fn resident_kernels_assemble_without_spills() {
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "resident_kernels_assemble_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    for case in CASES {
        let g = graph(case);
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, case.max_len as u64, arch).expect("spec");
            let general = compile_general(&g, &spec).expect("compiles");
            let report = ptxas::assemble(&general.kernel.ptx, arch)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert!(
                report.offenders().is_empty(),
                "{} {arch}: {:?}",
                case.name,
                report.offenders()
            );
        }
    }
}
