//! The CPU cost model on the example ops: for each, the global memory
//! traffic of the fused general-path plan, of the unfused plan (every value
//! stored, one kernel per op) and, for the builtins, of the template's
//! kernels, against the minimum (every input read once, every output
//! written once). Counts come from the emulator's profile (32-byte sectors
//! touched per warp-level access; no cache reuse across instructions).
//! Every plan's outputs are checked against the f64 reference first.
//!
//! `cargo run --release --example cost_model`

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;

use jagged::codegen::general::{Fusion, compile_general_with};
use jagged::codegen::{Arch, CompiledKernel, Spec, compile};
use jagged::ir::ops::{self, JaggedSpec};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph, ReduceOp};
use jagged::ops::quantize;
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, random_inputs};

/// Sequence lengths of the runs: skewed (Zipf-like) from 1 to 96 with some
/// empty sequences, `max_len` 64 (so the longest are truncated).
fn lengths(rng: &mut Rng) -> Vec<usize> {
    (0..64)
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

const MAX_LEN: usize = 64;

fn examples() -> Vec<(&'static str, Graph)> {
    let text = [
        (
            "weighted pooling",
            "graph weighted_pool {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 32]
  %3 = input w : f32[%1]
  %4 = mul %2, %3 : f32[%1, 32]
  %5 = reduce sum %4, axis 0 : f32[B, 32]
  output pooled = %5
}",
        ),
        (
            "RMS-norm x weight",
            "graph rms_norm {
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
        ),
        (
            "centered softmax-weighted sum",
            "graph centered {
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
        ),
        (
            "keep positive-score events",
            "graph keep_positive {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 16]
  %3 = input score : f32[%1]
  %4 = const 0 : f32[]
  %5 = gt %3, %4 : bool[%1]
  %6 = seqs_where %5 : seqs
  %7 = compact %2, %6 : f32[%6, 16]
  %8 = offsets %6 : i32[B+1]
  output values = %7
  output offsets = %8
}",
        ),
        (
            "softmax-mask-sum over keys",
            "graph softmax_mask_sum {
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
        ),
    ];
    let mut all: Vec<(&'static str, Graph)> = text
        .into_iter()
        .map(|(name, t)| (name, Graph::parse(t).expect("example graph")))
        .collect();
    let js = |dtype, inner: &[usize]| JaggedSpec {
        dtype,
        offsets: DType::I32,
        inner: inner.to_vec(),
    };
    all.push((
        "jagged_softmax",
        ops::jagged_softmax(&js(DType::F32, &[16])).expect("op"),
    ));
    all.push((
        "jagged_reduce sum",
        ops::jagged_reduce(&js(DType::F32, &[32]), ReduceOp::Sum).expect("op"),
    ));
    all.push((
        "jagged_dense_elementwise_mul",
        ops::jagged_dense_elementwise_mul(&js(DType::BF16, &[32])).expect("op"),
    ));
    all.push((
        "jagged_to_padded_dense",
        ops::jagged_to_padded_dense(&js(DType::F32, &[16])).expect("op"),
    ));
    all.push((
        "masked_select_jagged",
        ops::masked_select_jagged(&js(DType::F32, &[16]), DType::Bool).expect("op"),
    ));
    // Semantic IDs: one greedy RQ level (64 codewords of 32 features, 4
    // levels of codes) and PQ (4 sub-vectors of 8, 64 centroids), f32.
    all.push((
        "residual_quantize level",
        quantize::residual_quantize_level::graph(DType::F32, DType::F32, 64, 32, 4, DType::I32)
            .expect("op"),
    ));
    all.push((
        "product_quantize",
        quantize::product_quantize_kernel::graph(DType::F32, 4, 64, 8, DType::I32).expect("op"),
    ));
    all
}

fn bytes_of(t: &DenseTensor) -> u64 {
    (t.shape().iter().product::<usize>() * t.dtype().size()) as u64
}

/// Runs `kernel` on the emulator, checks it against `expected`, and returns
/// the global bytes it moved (32-byte sectors read + written).
fn traffic(
    rt: &mut Runtime,
    graph: &Graph,
    kernel: &CompiledKernel,
    inputs: &[(&str, &DenseTensor)],
    attrs: &[(&str, AttrValue)],
    expected: &BTreeMap<String, DenseTensor>,
) -> Result<(u64, usize), Box<dyn Error>> {
    rt.take_emulator_profile();
    let got = rt.run_compiled_host(graph, kernel, inputs, attrs)?;
    let profile = rt.take_emulator_profile().ok_or("not the emulator")?;
    for (name, want) in expected {
        let out = &got[name];
        let tol = Tolerance::composed(want.dtype());
        if out.shape() != want.shape() || !tol.accepts(&out.to_f64(), &want.to_f64()) {
            return Err(
                format!("{}: output {name} differs from the reference", graph.name()).into(),
            );
        }
    }
    Ok((
        32 * (profile.global_read_sectors + profile.global_write_sectors),
        kernel.launches.len(),
    ))
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut rt = Runtime::with_backend(BackendKind::Emu)?;
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    let mut rng = Rng::new(2026);
    let lens = lengths(&mut rng);
    println!(
        "cost model (emulator), B = {}, T = {}, max_len = {MAX_LEN}; bytes = 32 x sectors",
        lens.len(),
        lens.iter().sum::<usize>()
    );
    println!(
        "{:<30} {:>10} {:>18} {:>18} {:>18}",
        "op", "minimum", "fused (x min)", "unfused (x min)", "template (x min)"
    );
    for (name, graph) in examples() {
        let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80)?;
        let inputs = random_inputs(&graph, &lens, MAX_LEN, 1.0, &mut rng);
        let named: Vec<(&str, &DenseTensor)> =
            inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let attrs = [("max_len", AttrValue::Index(MAX_LEN))];
        let attrs: Vec<(&str, AttrValue)> = attrs
            .into_iter()
            .filter(|(n, _)| graph.attr(n).is_some())
            .collect();
        let expected = jagged::ir::evaluate(&graph, &named, &attrs)?;
        let minimum: u64 = inputs.iter().map(|(_, t)| bytes_of(t)).sum::<u64>()
            + expected.values().map(bytes_of).sum::<u64>();
        let cell = |(bytes, kernels): (u64, usize)| {
            format!(
                "{bytes} ({:.2}x, {kernels}k)",
                bytes as f64 / minimum as f64
            )
        };
        let fused = compile_general_with(&graph, &spec, Fusion::Fused)?.kernel;
        let unfused = compile_general_with(&graph, &spec, Fusion::Unfused)?.kernel;
        let fused = cell(traffic(&mut rt, &graph, &fused, &named, &attrs, &expected)?);
        let unfused = cell(traffic(
            &mut rt, &graph, &unfused, &named, &attrs, &expected,
        )?);
        let (_, plan) = jagged::codegen::compile_with_plan(&graph, &spec)?;
        let template = if plan.starts_with("fast path: none") {
            "-".to_string()
        } else {
            let kernel = compile(&graph, &spec)?;
            cell(traffic(
                &mut rt, &graph, &kernel, &named, &attrs, &expected,
            )?)
        };
        println!("{name:<30} {minimum:>10} {fused:>18} {unfused:>18} {template:>18}");
    }
    Ok(())
}
