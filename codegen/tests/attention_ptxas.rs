//! Flash attention PTX: every specialization assembles with ptxas for sm_80
//! and sm_90a without spills or a stack frame; the SASS runs both products
//! on tensor cores (HMMA on sm_80, HGMMA and no HMMA in the wgmma kernel
//! of sm_90a, whose Q, K and V come by TMA: UTMALDG, no LDGSTS); insta
//! snapshots of two fixed specs (a diff is a review item).

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
mod common;
#[path = "../../tests/common/tools.rs"]
mod tools;

use std::process::Command;

use common::attention_graph;
use jagged_codegen::templates::attention_bwd::compile_attention_backward;
use jagged_codegen::{Arch, CompiledKernel, DType, Spec, compile, ptxas};
use jagged_ir::Graph;
use jagged_ir::ops::{self, Activation, FbgemmAttentionSpec};

/// Every attention graph the tests and benchmarks specialize.
fn graphs() -> Vec<Graph> {
    let mut out = Vec::new();
    for head_dim in [32, 64, 128, 256] {
        for dtype in [DType::F16, DType::BF16] {
            for act in [Activation::Softmax, Activation::Silu] {
                for causal in [false, true] {
                    out.push(attention_graph(dtype, 2, head_dim, act, causal));
                }
            }
        }
    }
    for use_mask in [false, true] {
        out.push(
            ops::fbgemm_jagged_flash_attention_basic(&FbgemmAttentionSpec {
                input_dtype: DType::BF16,
                dtype: DType::BF16,
                offsets: DType::I64,
                head_dim: 64,
                use_mask,
            })
            .expect("graph"),
        );
    }
    out
}

fn compiled(graph: &Graph, max_len: u64, arch: Arch) -> CompiledKernel {
    let spec = Spec::for_graph(graph, max_len, arch).expect("spec");
    compile(graph, &spec).unwrap_or_else(|e| panic!("{} {spec}: {e}", graph.name()))
}

/// Prints each kernel's resources and fails on any spill or stack frame.
fn assert_no_spills(arch: Arch, report: &ptxas::PtxasReport) {
    for k in &report.kernels {
        eprintln!(
            "{arch} {:<72} regs {:>3} spill {}/{} stack {}",
            k.name, k.registers, k.spill_stores, k.spill_loads, k.stack_frame
        );
    }
    assert!(
        report.offenders().is_empty(),
        "spills or stack frame:\n{}",
        report.lines.join("\n")
    );
}

#[test]
fn every_attention_specialization_assembles_without_spills() {
    let Some(ptxas_path) = tools::ptxas("every_attention_specialization_assembles_without_spills")
    else {
        return;
    };
    let mut checked = 0;
    for graph in graphs() {
        // Buckets on both sides of the tile choice (32 keys vs 64 keys per block).
        for max_len in [32, 1024] {
            for arch in Arch::ALL {
                let c = compiled(&graph, max_len, arch);
                let report = ptxas::assemble_with(&ptxas_path, &c.ptx, arch)
                    .unwrap_or_else(|e| panic!("{}: {e}", c.launches[0].entry));
                assert_eq!(report.kernels.len(), 1, "{:#?}", report.lines);
                assert_no_spills(arch, &report);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 34 * 2 * 2);
}

/// The backward kernels (D = 32, 64, 128, 256) assemble without spills as well.
#[test]
fn every_backward_specialization_assembles_without_spills() {
    let Some(ptxas_path) = tools::ptxas("every_backward_specialization_assembles_without_spills")
    else {
        return;
    };
    let mut checked = 0;
    for head_dim in [32, 64, 128, 256] {
        for dtype in [DType::F16, DType::BF16] {
            for act in [Activation::Softmax, Activation::Silu] {
                for causal in [false, true] {
                    let graph = attention_graph(dtype, 2, head_dim, act, causal);
                    for arch in Arch::ALL {
                        let spec = Spec::for_graph(&graph, 1024, arch).expect("spec");
                        let c = compile_attention_backward(&graph, &spec).expect("backward");
                        let report = ptxas::assemble_with(&ptxas_path, &c.ptx, arch)
                            .unwrap_or_else(|e| panic!("{}: {e}", c.launches[1].entry));
                        assert_eq!(report.kernels.len(), 3, "{:#?}", report.lines);
                        assert_no_spills(arch, &report);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 4 * 2 * 2 * 2 * 2);
}

/// The SASS of `ptx` assembled for `arch` (`ptxas -o` + `nvdisasm`).
fn sass(ptxas_path: &std::path::Path, nvdisasm: &std::path::Path, ptx: &str, arch: Arch) -> String {
    let dir = std::env::temp_dir().join(format!("jagged-attn-sass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ptx_path = dir.join(format!("attn_{arch}.ptx"));
    let cubin = dir.join(format!("attn_{arch}.cubin"));
    std::fs::write(&ptx_path, ptx).expect("write ptx");
    let status = Command::new(ptxas_path)
        .arg(format!("-arch={arch}"))
        .arg("-o")
        .arg(&cubin)
        .arg(&ptx_path)
        .status()
        .expect("run ptxas");
    assert!(status.success());
    let out = Command::new(nvdisasm)
        .arg(&cubin)
        .output()
        .expect("run nvdisasm");
    assert!(
        out.status.success(),
        "nvdisasm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&ptx_path);
    let _ = std::fs::remove_file(&cubin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On sm_80 every `mma.sync` of the module (the `Q K^T` and the `P V`
/// products) is an HMMA instruction in the SASS.
#[test]
fn sm80_sass_runs_both_products_on_tensor_cores() {
    let test = "sm80_sass_runs_both_products_on_tensor_cores";
    let (Some(ptxas_path), Some(nvdisasm)) = (tools::ptxas(test), tools::nvdisasm(test)) else {
        return;
    };
    let graph = attention_graph(DType::BF16, 2, 128, Activation::Softmax, true);
    let c = compiled(&graph, 1024, Arch::Sm80);
    let ptx_mma = c.ptx.lines().filter(|l| l.contains("mma.sync")).count();
    // D = 128, 64 keys per block: Q K^T is 8 k-steps x 8 key tiles, P V is
    // 4 k-steps x 16 column tiles; twice: the loop over interior key blocks
    // and the one over boundary blocks.
    assert_eq!(ptx_mma, 2 * (8 * 8 + 4 * 16));
    let sass = sass(&ptxas_path, &nvdisasm, &c.ptx, Arch::Sm80);
    let hmma: Vec<&str> = sass
        .lines()
        .filter(|l| l.contains("HMMA.16816.F32.BF16"))
        .collect();
    assert_eq!(hmma.len(), ptx_mma, "HMMA lines:\n{}", hmma.join("\n"));
}

/// On sm_90a (D = 32, 64, 128 and 256, f16 and bf16, bucket 1024) the forward
/// kernel runs both products on `wgmma.mma_async` and has no `mma.sync`
/// (the main loop's, or any other); each `wgmma` is one HGMMA in the SASS
/// (`Q K^T`: D / 16 of `64xBNx16`, `P V`: BN / 16 of `64xDx16`, with 128
/// keys per block at this bucket, 64 at D = 256; each product three times:
/// the pipelined key loop peels `Q K^T` of block 0, runs as two loops
/// (interior blocks, then boundary ones) and ends with `P V` of the last
/// block), and there is no HMMA. Q, K and V come by TMA: one
/// `cp.async.bulk.tensor` per column block (64 columns, all 32 at D = 32)
/// of Q, K and V in the producer warpgroup of the warp-specialized kernel
/// (`setmaxnreg` both ways, USETMAXREG in the SASS); each one UTMALDG.2D in
/// the SASS, and no `cp.async` (LDGSTS) at all.
#[test]
fn sm90a_forward_runs_both_products_on_wgmma() {
    let test = "sm90a_forward_runs_both_products_on_wgmma";
    let (Some(ptxas_path), Some(nvdisasm)) = (tools::ptxas(test), tools::nvdisasm(test)) else {
        return;
    };
    for head_dim in [32, 64, 128, 256] {
        let block_n = if head_dim == 256 { 64 } else { 128 };
        for dtype in [DType::F16, DType::BF16] {
            let graph = attention_graph(dtype, 2, head_dim, Activation::Softmax, true);
            let c = compiled(&graph, 1024, Arch::Sm90a);
            let count = |what: &str| c.ptx.lines().filter(|l| l.contains(what)).count();
            assert_eq!(count("mma.sync"), 0);
            let wgmma =
                |n: usize| format!("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{dtype}.{dtype}");
            // Per N: Q K^T's D / 16 of m64nBN, then P V's BN / 16 of m64nD,
            // in both loops and once outside them.
            let mut per_n = std::collections::BTreeMap::new();
            *per_n.entry(block_n).or_insert(0) += 3 * head_dim / 16;
            *per_n.entry(head_dim).or_insert(0) += 3 * block_n / 16;
            for (&n, &k) in &per_n {
                assert_eq!(count(&wgmma(n)), k, "m64n{n}");
            }
            assert_eq!(count("wgmma.mma_async"), 3 * (head_dim / 16 + block_n / 16));
            let sass = sass(&ptxas_path, &nvdisasm, &c.ptx, Arch::Sm90a);
            // nvdisasm names bf16 operands (`.F32.BF16`), not f16 ones.
            let ty = if dtype == DType::F16 { " " } else { ".BF16" };
            let hgmma = |n: usize| {
                sass.lines()
                    .filter(|l| l.contains(&format!("HGMMA.64x{n}x16.F32{ty}")))
                    .count()
            };
            for (&n, &k) in &per_n {
                assert_eq!(hgmma(n), k, "64x{n}: {sass}");
            }
            assert!(!sass.contains("HMMA"), "HMMA in the sm_90a forward");
            let column_blocks = (2 * head_dim).div_ceil(128);
            let bulk = count("cp.async.bulk.tensor.2d");
            // The warp-specialized kernel: a producer warpgroup issues Q, K
            // and V from one place each (Q as two 64-row sub-tiles at
            // D = 256, whose key blocks are 64 rows); registers move from it
            // to the two consumer warpgroups, which meet and take turns on
            // named barriers only, no CTA-wide barrier after the split.
            let copies = if head_dim == 256 { 4 } else { 3 };
            assert_eq!(bulk, column_blocks * copies, "D = {head_dim}");
            assert_eq!(count("setmaxnreg.dec.sync.aligned.u32 24;"), 1);
            assert_eq!(count("setmaxnreg.inc.sync.aligned.u32 240;"), 1);
            assert_eq!(count("bar.sync 0;"), 1, "CTA barriers past the split");
            // Ping-pong: the first turn, then one pass per product issue
            // (block 0, both loops, the last P V).
            assert_eq!(count("bar.arrive"), 5);
            assert!(sass.contains("USETMAXREG.DEALLOC"), "{sass}");
            assert!(sass.contains("USETMAXREG.TRY_ALLOC"), "{sass}");
            assert_eq!(count("cp.async.cg"), 0);
            let utmaldg = sass.lines().filter(|l| l.contains("UTMALDG.2D")).count();
            assert_eq!(utmaldg, bulk, "UTMALDG: {sass}");
            assert!(!sass.contains("LDGSTS"), "LDGSTS in the sm_90a forward");
        }
    }
}

/// On sm_90a at every head dim (f16 and bf16, softmax and SiLU, causal)
/// the backward's main kernel runs every product on `wgmma.mma_async` and
/// no module kernel has `mma.sync`; each `wgmma` is one HGMMA, there is no
/// HMMA. Per query block of a pass over C columns (D, or D / 2 at D = 256):
/// `S^T` and `dP^T` (D / 16 `m64n64` each), `dV` and `dK` (4 `m64nC`
/// each), `dQ` (4 `m64nQ` per Q = min(C, 64) columns).
#[test]
fn sm90a_backward_runs_every_product_on_wgmma() {
    let test = "sm90a_backward_runs_every_product_on_wgmma";
    let (Some(ptxas_path), Some(nvdisasm)) = (tools::ptxas(test), tools::nvdisasm(test)) else {
        return;
    };
    for head_dim in [32, 64, 128, 256] {
        let cols = head_dim.min(128);
        let chunk = cols.min(64);
        for dtype in [DType::F16, DType::BF16] {
            for act in [Activation::Softmax, Activation::Silu] {
                let graph = attention_graph(dtype, 2, head_dim, act, true);
                let spec = Spec::for_graph(&graph, 1024, Arch::Sm90a).expect("spec");
                let c = compile_attention_backward(&graph, &spec).expect("backward");
                let count = |what: &str| c.ptx.lines().filter(|l| l.contains(what)).count();
                assert_eq!(count("mma.sync"), 0);
                let wgmma = |n: usize| {
                    format!("wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{dtype}.{dtype}")
                };
                let mut per_n = std::collections::BTreeMap::new();
                *per_n.entry(64).or_insert(0) += 2 * head_dim / 16;
                *per_n.entry(cols).or_insert(0) += 2 * 4;
                *per_n.entry(chunk).or_insert(0) += 4 * cols / chunk;
                for (&n, &k) in &per_n {
                    assert_eq!(count(&wgmma(n)), k, "m64n{n}");
                }
                // After the query block's copies, after the dS^T stores.
                assert_eq!(count("fence.proxy.async.shared::cta"), 2);
                let sass = sass(&ptxas_path, &nvdisasm, &c.ptx, Arch::Sm90a);
                let ty = if dtype == DType::F16 { " " } else { ".BF16" };
                for (&n, &k) in &per_n {
                    let hgmma = sass
                        .lines()
                        .filter(|l| l.contains(&format!("HGMMA.64x{n}x16.F32{ty}")))
                        .count();
                    assert_eq!(hgmma, k, "64x{n}: {sass}");
                }
                assert!(!sass.contains("HMMA"), "HMMA in the sm_90a backward");
            }
        }
    }
}

#[test]
fn snapshot_d64_n256_bf16_sm80() {
    let graph = attention_graph(DType::BF16, 2, 64, Activation::Softmax, true);
    let c = compiled(&graph, 256, Arch::Sm80);
    insta::assert_snapshot!(format!("{c}\n{}", c.ptx));
}

#[test]
fn snapshot_d128_n1024_bf16_sm90a_wgmma() {
    let graph = attention_graph(DType::BF16, 2, 128, Activation::Softmax, true);
    let c = compiled(&graph, 1024, Arch::Sm90a);
    insta::assert_snapshot!(format!("{c}\n{}", c.ptx));
}
