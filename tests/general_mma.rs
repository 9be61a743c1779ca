//! Contractions with f16 / bf16 operands compile to tensor-core kernels
//! (`mma.sync.m16n8k16`) on the general path, whatever the roles of their
//! axes: jagged x dense, jagged x jagged summed over the sequence, a batch
//! letter shared by both operands, several summed letters, a dense operand
//! per sequence, fully dense; with a fused operand prologue and an output
//! epilogue. Each runs on the emulator like the f64 reference over the
//! adversarial lengths of `jagged::testing`, and assembles with ptxas with
//! no spill.

mod common;

use std::sync::Arc;

use jagged::codegen::general::compile_general;
use jagged::codegen::{Arch, Spec, compile_with_plan, ptxas};
use jagged::ir::{AttrValue, DType, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference};

/// `(name, graph text with `{t}` for the operand dtype)`.
const GRAPHS: &[(&str, &str)] = &[
    (
        "jagged x dense, bias + relu epilogue into the operand dtype",
        "graph jd_bias_relu {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 24]
  %3 = input w : {t}[24, 20]
  %4 = input bias : f32[20]
  %5 = contract %2[id], %3[de] -> [ie] : f32[%1, 20]
  %6 = add %5, %4 : f32[%1, 20]
  %7 = relu %6 : f32[%1, 20]
  %8 = cast %7 : {t}[%1, 20]
  output y = %8
}",
    ),
    (
        "jagged x jagged summed over the sequence",
        "graph jj {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 12]
  %3 = input y : {t}[%1, 10]
  %4 = contract %2[id], %3[ie] -> [de] : f32[B, 12, 10]
  output z = %4
}",
    ),
    (
        "a batch letter (heads) on both sides, an f32 operand cast in the prologue",
        "graph heads {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 2, 16]
  %3 = input w : {t}[2, 16, 9]
  %4 = cast %2 : {t}[%1, 2, 16]
  %5 = contract %4[ihd], %3[hde] -> [ihe] : f32[%1, 2, 9]
  output y = %5
}",
    ),
    (
        "two summed letters, rows from the right operand",
        "graph two_k {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input w : {t}[2, 8, 6]
  %3 = input x : {t}[%1, 2, 8]
  %4 = contract %2[hde], %3[ihd] -> [ie] : f32[%1, 6]
  output y = %4
}",
    ),
    (
        "a dense operand per sequence",
        "graph per_seq {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 16]
  %3 = input w : {t}[B, 16, 8]
  %4 = contract %2[id], %3[de] -> [ie] : f32[%1, 8]
  output y = %4
}",
    ),
    (
        "untruncated sequences: rows past max_len take more row tiles",
        "graph untruncated {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0 : seqs
  %2 = input x : {t}[%1, 16]
  %3 = input w : {t}[16, 8]
  %4 = contract %2[id], %3[de] -> [ie] : f32[%1, 8]
  output y = %4
}",
    ),
    (
        "fully dense",
        "graph dense {
  attr max_len: index
  %0 = input a : {t}[20, 16]
  %1 = input b : {t}[16, 12]
  %2 = contract %0[md], %1[dn] -> [mn] : f32[20, 12]
  output c = %2
}",
    ),
];

fn graph(text: &str, dtype: DType) -> Graph {
    Graph::parse(&text.replace("{t}", &dtype.to_string())).unwrap_or_else(|e| panic!("{e}"))
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

#[test]
fn contractions_run_on_tensor_cores_like_the_reference() {
    let mut rt = runtime();
    for (name, text) in GRAPHS {
        for dtype in [DType::F16, DType::BF16] {
            let g = graph(text, dtype);
            for arch in Arch::ALL {
                let spec = Spec::for_graph(&g, 19, arch).expect("spec");
                let (kernel, plan) = compile_with_plan(&g, &spec)
                    .unwrap_or_else(|e| panic!("{name} ({dtype}): {e}"));
                assert!(
                    kernel.ptx.contains("mma.sync.aligned.m16n8k16"),
                    "{name} ({dtype}): no mma in\n{plan}"
                );
                assert!(plan.contains("tensor cores"), "{name}: {plan}");
                let attrs: &[(&str, AttrValue)] = if text.contains("attr scale") {
                    &[("scale", AttrValue::Float(0.7))]
                } else {
                    &[]
                };
                let cases = check_spec_against_reference(
                    &g,
                    &spec,
                    &mut rt,
                    19,
                    attrs,
                    &mut Rng::new(7),
                    Tolerance::design,
                )
                .unwrap_or_else(|e| panic!("{name} ({dtype}, {arch}): {e}\n{plan}"));
                assert!(cases >= 5);
            }
        }
    }
}

/// f32 operands keep the SIMT loop (tensor cores would round them).
#[test]
fn f32_contractions_stay_on_simt() {
    let g = graph(GRAPHS[0].1, DType::F32);
    let spec = Spec::for_graph(&g, 19, Arch::Sm80).expect("spec");
    let general = compile_general(&g, &spec).expect("compiles");
    assert!(!general.kernel.ptx.contains("mma.sync"));
}

/// The epilogue is fused: one kernel computes the contraction, the bias,
/// the activation and the cast.
#[test]
fn the_epilogue_is_one_kernel() {
    let g = graph(GRAPHS[0].1, DType::BF16);
    let spec = Spec::for_graph(&g, 19, Arch::Sm80).expect("spec");
    let general = compile_general(&g, &spec).expect("compiles");
    assert_eq!(general.kernel.launches.len(), 1, "{}", general.plan);
    assert!(general.kernel.scratch.is_empty(), "{}", general.plan);
}

#[test]
fn tensor_core_kernels_assemble_without_spills() {
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "tensor_core_kernels_assemble_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    let graphs = GRAPHS
        .iter()
        .flat_map(|(name, text)| [(name, graph(text, DType::BF16)), (name, tf32_graph(text))]);
    for (name, g) in graphs {
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, 64, arch).expect("spec");
            let general = compile_general(&g, &spec).expect("compiles");
            let report = ptxas::assemble(&general.kernel.ptx, arch)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                report.offenders().is_empty(),
                "{name} {arch}: {:?}",
                report.offenders()
            );
        }
    }
}

/// Every `mma.sync` of the PTX is an HMMA instruction in the sm_90a SASS
/// (once per copy of the K loop that ptxas unrolls).
#[test]
fn every_mma_is_an_hmma_in_the_sass() {
    let test = "every_mma_is_an_hmma_in_the_sass";
    let (Some(ptxas_path), Some(nvdisasm)) =
        (common::tools::ptxas(test), common::tools::nvdisasm(test))
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("jagged-general-mma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let graphs = GRAPHS.iter().flat_map(|(name, text)| {
        [
            (name, graph(text, DType::BF16), "HMMA.16816.F32.BF16"),
            (name, tf32_graph(text), "HMMA.1688.F32.TF32"),
        ]
    });
    for (k, (name, g, hmma_kind)) in graphs.enumerate() {
        let spec = Spec::for_graph(&g, 64, Arch::Sm90a).expect("spec");
        let ptx = compile_general(&g, &spec).expect("compiles").kernel.ptx;
        let ptx_mma = ptx.lines().filter(|l| l.contains("mma.sync")).count();
        assert!(ptx_mma > 0, "{name}");
        let (ptx_path, cubin) = (dir.join(format!("{k}.ptx")), dir.join(format!("{k}.cubin")));
        std::fs::write(&ptx_path, &ptx).expect("write ptx");
        let status = std::process::Command::new(&ptxas_path)
            .args(["-arch=sm_90a", "-o"])
            .arg(&cubin)
            .arg(&ptx_path)
            .status()
            .expect("run ptxas");
        assert!(status.success(), "{name}");
        let out = std::process::Command::new(&nvdisasm)
            .arg(&cubin)
            .output()
            .expect("run nvdisasm");
        assert!(out.status.success(), "{name}");
        let sass = String::from_utf8_lossy(&out.stdout);
        let hmma = sass.lines().filter(|l| l.contains(hmma_kind)).count();
        // ptxas may unroll the loop over K: each copy keeps all its products.
        assert!(
            hmma > 0 && hmma % ptx_mma == 0,
            "{name}: {hmma} HMMA for {ptx_mma} mma.sync"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A prologue that is not exact in the operand dtype (`x * scale` typed
/// bf16: the reference does not round it) keeps the SIMT loop, and matches
/// the reference at f32's tolerance.
#[test]
fn an_inexact_prologue_keeps_simt() {
    let text = "graph scaled {
  attr max_len: index
  attr scale: float
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : bf16[%1, 16]
  %3 = input w : bf16[16, 8]
  %4 = attr scale : bf16[]
  %5 = mul %2, %4 : bf16[%1, 16]
  %6 = contract %5[id], %3[de] -> [ie] : f32[%1, 8]
  output y = %6
}";
    let g = Graph::parse(text).expect("parses");
    let spec = Spec::for_graph(&g, 19, Arch::Sm80).expect("spec");
    let general = compile_general(&g, &spec).expect("compiles");
    assert!(!general.kernel.ptx.contains("mma.sync"), "{}", general.plan);
    let mut rt = runtime();
    let attrs = [("scale", AttrValue::Float(0.3))];
    check_spec_against_reference(
        &g,
        &spec,
        &mut rt,
        19,
        &attrs,
        &mut Rng::new(3),
        Tolerance::design,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The graph of `text` in f32 with every contraction opted in to tf32.
fn tf32_graph(text: &str) -> Graph {
    let text: String = text
        .replace("{t}", "f32")
        .lines()
        .map(|l| {
            if l.contains("= contract ") {
                l.replacen(" : ", ", tf32 : ", 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Graph::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// f32 contractions opted in to tf32 (`contract ..., tf32`) run on tf32
/// tensor cores (`mma.sync.m16n8k8`), like the reference, which rounds the
/// operands to tf32 as `cvt.rna.tf32.f32` does.
#[test]
fn tf32_contractions_run_on_tensor_cores_like_the_reference() {
    let mut rt = runtime();
    for (name, text) in GRAPHS {
        let g = tf32_graph(text);
        assert!(g.to_string().contains(", tf32 :"), "{g}");
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, 19, arch).expect("spec");
            let (kernel, plan) =
                compile_with_plan(&g, &spec).unwrap_or_else(|e| panic!("{name} (tf32): {e}"));
            assert!(
                kernel
                    .ptx
                    .contains("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"),
                "{name}: no tf32 mma in\n{plan}"
            );
            assert!(kernel.ptx.contains("cvt.rna.tf32.f32"), "{name}");
            check_spec_against_reference(
                &g,
                &spec,
                &mut rt,
                19,
                &[],
                &mut Rng::new(5),
                Tolerance::design,
            )
            .unwrap_or_else(|e| panic!("{name} (tf32, {arch}): {e}\n{plan}"));
        }
    }
}

/// A tf32 contraction fused into a pair reduction (never stored, so no mma)
/// rounds its operands on the SIMT path too, and matches the reference.
#[test]
fn a_fused_tf32_contraction_rounds_on_simt() {
    let text = "graph scores_sum {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f32[%1, 12]
  %3 = input k : f32[%1, 12]
  %4 = contract %2[id], %3[jd] -> [ij], tf32 : f32[%1, %1]
  %5 = reduce sum %4, axis 1 : f32[%1]
  output s = %5
}";
    let g = Graph::parse(text).expect("parses");
    let spec = Spec::for_graph(&g, 19, Arch::Sm80).expect("spec");
    let general = compile_general(&g, &spec).expect("compiles");
    assert!(general.kernel.ptx.contains("cvt.rna.tf32.f32"));
    let mut rt = runtime();
    check_spec_against_reference(
        &g,
        &spec,
        &mut rt,
        19,
        &[],
        &mut Rng::new(9),
        Tolerance::design,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// tf32 is an opt-in for f32 operands only.
#[test]
fn tf32_takes_f32_operands_only() {
    let text = "graph bad {
  attr max_len: index
  %0 = input a : bf16[4, 8]
  %1 = input b : bf16[8, 4]
  %2 = contract %0[md], %1[dn] -> [mn], tf32 : f32[4, 4]
  output c = %2
}";
    let err = Graph::parse(text).expect_err("tf32 of bf16 operands");
    assert!(err.to_string().contains("tf32"), "{err}");
}
