//! What the CPU can tell about the jagged feature-interaction contractions
//! on the general path: for each shape, in bf16 (tensor cores: `mma.sync`)
//! and in f32 (the SIMT loop), the emulator's cost model (warp instructions
//! by class, global bytes against the minimum: inputs read once, outputs
//! written once) and the code generator's time per specialization (median
//! of 50 compiles). Every run is checked against the f64 reference first.
//!
//! `cargo run --release --example interactions_cost`

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::Instant;

use jagged::codegen::{Arch, Spec, compile, compile_with_plan};
use jagged::ir::{DType, DenseTensor, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, random_inputs};

const MAX_LEN: usize = 64;

/// `(name, graph text with {t} for the operand dtype)`.
const SHAPES: &[(&str, &str)] = &[
    (
        "jagged x dense per sequence [T,64]x[B,64,64]",
        "graph jagged_dense_bmm {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 64]
  %3 = input y : {t}[B, 64, 64]
  %4 = contract %2[ik], %3[km] -> [im] : f32[%1, 64]
  %5 = cast %4 : {t}[%1, 64]
  output out = %5
}",
    ),
    (
        "jagged x shared weight [T,64]x[64,128] + bias, relu",
        "graph jagged_linear {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 64]
  %3 = input w : {t}[64, 128]
  %4 = input bias : f32[128]
  %5 = contract %2[ik], %3[km] -> [im] : f32[%1, 128]
  %6 = add %5, %4 : f32[%1, 128]
  %7 = relu %6 : f32[%1, 128]
  %8 = cast %7 : {t}[%1, 128]
  output out = %8
}",
    ),
    (
        "jagged x jagged over the sequence [T,32]x[T,32]",
        "graph jagged_jagged_bmm {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 32]
  %3 = input y : {t}[%1, 32]
  %4 = contract %2[im], %3[ip] -> [mp] : f32[B, 32, 32]
  output out = %4
}",
    ),
    (
        "jagged . dense features [T,64].[B,16,64]",
        "graph jagged_dense_dot {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 64]
  %3 = input y : {t}[B, 16, 64]
  %4 = contract %2[id], %3[fd] -> [if] : f32[%1, 16]
  output out = %4
}",
    ),
    (
        "jagged pairwise dot [T,64], packed i < j",
        "graph jagged_pairwise_dot {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 64]
  %3 = contract %2[id], %2[jd] -> [ij] : f32[%1, %1]
  %4 = cast %3 : {t}[%1, %1]
  %5 = seqs_triu %1 : seqs
  %6 = pack_triu %4, %5 : {t}[%5]
  %7 = offsets %5 : i32[B+1]
  output values = %6
  output offsets = %7
}",
    ),
    (
        "jagged x dense backward: dout y^T, x^T dout",
        "graph jagged_dense_bmm_backward {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 64]
  %3 = input y : {t}[B, 64, 64]
  %4 = input dout : {t}[%1, 64]
  %5 = contract %4[im], %3[km] -> [ik] : f32[%1, 64]
  %6 = cast %5 : {t}[%1, 64]
  %7 = contract %2[ik], %4[im] -> [km] : f32[B, 64, 64]
  %8 = cast %7 : {t}[B, 64, 64]
  output dx = %6
  output dy = %8
}",
    ),
];

/// Skewed lengths from 1 to 96 with some empty sequences (`max_len` 64, so
/// the longest are truncated).
fn lengths(rng: &mut Rng) -> Vec<usize> {
    (0..48)
        .map(|_| {
            let u = (rng.below(1000) as f64 + 1.0) / 1001.0;
            if rng.below(10) == 0 {
                0
            } else {
                ((12.0 / u.powf(0.6)) as usize).min(96)
            }
        })
        .collect()
}

fn bytes_of(t: &DenseTensor) -> u64 {
    (t.shape().iter().product::<usize>() * t.dtype().size()) as u64
}

fn median_micros(graph: &Graph, spec: &Spec) -> Result<f64, Box<dyn Error>> {
    let mut times = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        compile(graph, spec)?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut rt = Runtime::with_backend(BackendKind::Emu)?;
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    let mut rng = Rng::new(2026);
    let lens = lengths(&mut rng);
    println!(
        "general path on the emulator's cost model, B = {}, T = {}, max_len = {MAX_LEN}",
        lens.len(),
        lens.iter().sum::<usize>()
    );
    println!(
        "{:<52} {:>5} {:>9} {:>14} {:>9} {:>9} {:>9} {:>9}",
        "shape", "dtype", "min B", "bytes (x min)", "warp ins", "mma", "global", "codegen"
    );
    for (name, text) in SHAPES {
        for dtype in [DType::BF16, DType::F32] {
            let graph = Graph::parse(&text.replace("{t}", &dtype.to_string()))?;
            let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80)?;
            let (kernel, plan) = compile_with_plan(&graph, &spec)?;
            let inputs = random_inputs(&graph, &lens, MAX_LEN, 1.0, &mut rng);
            let named: Vec<(&str, &DenseTensor)> =
                inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let attrs = [("max_len", jagged::ir::AttrValue::Index(MAX_LEN))];
            let expected: BTreeMap<String, DenseTensor> =
                jagged::ir::evaluate(&graph, &named, &attrs)?;
            rt.take_emulator_profile();
            let got = rt.run_compiled_host(&graph, &kernel, &named, &attrs)?;
            let profile = rt.take_emulator_profile().ok_or("not the emulator")?;
            for (out, want) in &expected {
                let tol = Tolerance::design(want.dtype());
                if !tol.accepts(&got[out].to_f64(), &want.to_f64()) {
                    return Err(format!("{name} ({dtype}): {out} differs\n{plan}").into());
                }
            }
            let minimum: u64 = named.iter().map(|(_, t)| bytes_of(t)).sum::<u64>()
                + expected.values().map(bytes_of).sum::<u64>();
            let moved = 32 * (profile.global_read_sectors + profile.global_write_sectors);
            println!(
                "{:<52} {:>5} {:>9} {:>8} ({:.2}x) {:>9} {:>9} {:>9} {:>7.0}us",
                name,
                dtype.to_string(),
                minimum,
                moved,
                moved as f64 / minimum as f64,
                profile.warp_instructions(),
                profile.mma,
                profile.global,
                median_micros(&graph, &spec)?
            );
        }
    }
    Ok(())
}
