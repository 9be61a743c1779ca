//! Codegen time and ptxas resources of every flash-attention specialization
//! (benchmark (a) of bench/attention/README.md).
//!
//! `cargo run --release -p jagged-codegen --example attention_stats`
//! prints one row per (head dim, dtype, activation, causal, max-len bucket):
//! the median time of `compile(graph, spec)` (graph matching, kernel
//! generation, PTX printing) and, when ptxas is installed, registers,
//! spills, stack frame of the sm_80 and sm_90a builds.

use std::time::Instant;

use jagged_codegen::{Arch, DType, Spec, compile, ptxas};
use jagged_ir::ops::{Activation, AttentionSpec, FbgemmAttentionSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ptxas_path = ptxas::find();
    if ptxas_path.is_none() {
        eprintln!("ptxas not found: resource columns are empty (run scripts/install-tools.sh)");
    }
    println!(
        "{:<64} {:>9} {:>8} | {:>18} | {:>18}",
        "specialization", "codegen", "ptx KiB", "sm_80 regs/spill/stk", "sm_90a regs/spill/stk"
    );
    let mut graphs = Vec::new();
    for head_dim in [32, 64, 128, 256] {
        for dtype in [DType::F16, DType::BF16] {
            for activation in [Activation::Softmax, Activation::Silu] {
                for causal in [false, true] {
                    let g = jagged_ir::ops::jagged_flash_attention(&AttentionSpec {
                        input_dtype: dtype,
                        dtype,
                        offsets: DType::I32,
                        heads: 4,
                        head_dim,
                        value_dim: head_dim,
                        causal,
                        activation,
                    })?;
                    graphs.push(g);
                }
            }
        }
    }
    for use_mask in [false, true] {
        graphs.push(jagged_ir::ops::fbgemm_jagged_flash_attention_basic(
            &FbgemmAttentionSpec {
                input_dtype: DType::BF16,
                dtype: DType::BF16,
                offsets: DType::I64,
                head_dim: 128,
                use_mask,
            },
        )?);
    }
    for graph in &graphs {
        for max_len in [32u64, 256, 1024, 4096] {
            let mut cells = Vec::new();
            let mut timing = None;
            let mut name = String::new();
            let mut ptx_kib = 0.0;
            for arch in Arch::ALL {
                let spec = Spec::for_graph(graph, max_len, arch)?;
                let mut times = Vec::new();
                let mut compiled = compile(graph, &spec)?;
                for _ in 0..21 {
                    let t = Instant::now();
                    compiled = compile(graph, &spec)?;
                    times.push(t.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                if arch == Arch::Sm80 {
                    timing = Some(times[times.len() / 2]);
                    name = compiled.launches[0].entry.clone();
                    ptx_kib = compiled.ptx.len() as f64 / 1024.0;
                }
                cells.push(match &ptxas_path {
                    Some(p) => {
                        let report = ptxas::assemble_with(p, &compiled.ptx, arch)?;
                        let k = &report.kernels[0];
                        format!(
                            "{:>3} / {}+{} / {}",
                            k.registers, k.spill_stores, k.spill_loads, k.stack_frame
                        )
                    }
                    None => "-".to_string(),
                });
            }
            println!(
                "{:<64} {:>7.1}us {:>8.1} | {:>18} | {:>18}",
                name.trim_start_matches("jg_attn_"),
                timing.unwrap_or(0.0) * 1e6,
                ptx_kib,
                cells[0],
                cells[1]
            );
        }
    }
    Ok(())
}
