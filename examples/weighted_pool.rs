//! Weighted sum pooling, written with `#[jagged_kernel]`: each sequence's
//! event features `x [T, D]` are scaled by one weight per event `w [T]` and
//! summed, `pooled[b] = sum_{i < n_b} w[i] * x[i]`, giving `pooled [B, D]`.
//!
//! No fast-path template matches this graph (a broadcast multiply feeding a
//! reduction), so the general path compiles it: one kernel that fuses the
//! multiply into the sum. The example runs it on random jagged inputs (an
//! empty sequence and one longer than `max_len` included) on the best backend
//! present (a GPU, else the PTX emulator), checks it against the f64
//! reference evaluator and prints the plan.
//!
//! `cargo run --release --example weighted_pool`

use std::error::Error;
use std::time::Instant;

use jagged::codegen::{Spec, compile_with_plan};
use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, DenseTensor};
use jagged::runtime::Runtime;
use jagged::testing::{Rng, rel_l2, tolerance};

/// Weighted sum pooling: one weight per event.
#[jagged_kernel(outputs(pooled))]
fn weighted_pool<S>(
    x: Jagged<f32, S>,
    w: Jagged<f32, ()>,
    #[attr] max_len: usize,
) -> PerSeq<f32, S> {
    (x * w).sum_over_seq()
}

const FEATURES: usize = 32;
const MAX_LEN: usize = 64;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(2026);
    // One empty sequence, one longer than max_len (its rows past max_len are
    // ignored), the rest random.
    let mut lengths = vec![0, MAX_LEN + 37];
    lengths.extend((0..30).map(|_| 1 + rng.below(MAX_LEN)));
    let total: usize = lengths.iter().sum();
    let offsets = offsets_tensor(&lengths)?;
    let x = random(&mut rng, vec![total, FEATURES])?;
    let w = random(&mut rng, vec![total])?;
    println!(
        "weighted_pool: B = {} sequences (lengths {:?}...), T = {total} rows, D = {FEATURES}, max_len = {MAX_LEN}",
        lengths.len(),
        &lengths[..6]
    );

    let mut rt = Runtime::new()?;
    rt.set_poison_outputs(true);
    print!("backend: {} ({})", rt.backend_name(), rt.device_name());
    match rt.fallback_reason() {
        Some(why) => println!(", no GPU: {why}"),
        None => println!(),
    }

    // The graph the macro built, and the compiler's plan for it.
    let graph = weighted_pool::graph(&[FEATURES], DType::I32)?;
    println!("\n{graph}");
    let spec = Spec::for_graph(&graph, MAX_LEN as u64, rt.preferred_arch())?;
    let (_, plan) = compile_with_plan(&graph, &spec)?;
    println!("spec: {spec}\nplan:\n{plan}");

    // Run through the typed launcher (the implicit `offsets` input comes first).
    let (d_offsets, d_x, d_w) = (
        rt.upload_tensor(&offsets)?,
        rt.upload_tensor(&x)?,
        rt.upload_tensor(&w)?,
    );
    let start = Instant::now();
    let pooled = weighted_pool::launch(&mut rt, &d_offsets, &d_x, &d_w, MAX_LEN)?;
    rt.synchronize()?;
    let first = start.elapsed();
    let start = Instant::now();
    let again = weighted_pool::launch(&mut rt, &d_offsets, &d_x, &d_w, MAX_LEN)?;
    rt.synchronize()?;
    let cached = start.elapsed();
    let got = rt.download_tensor(&pooled)?;
    let _ = rt.download_tensor(&again)?;

    // The f64 reference evaluator defines what the answer is.
    let reference = jagged::ir::evaluate(
        &graph,
        &[("offsets", &offsets), ("x", &x), ("w", &w)],
        &[("max_len", AttrValue::Index(MAX_LEN))],
    )?;
    let want = &reference["pooled"];
    let error = rel_l2(&got.to_f64(), &want.to_f64());
    let tol = tolerance(DType::F32);
    println!(
        "output pooled {:?}: relative error vs the f64 reference {error:.2e} (tolerance {tol:e})",
        got.shape()
    );
    println!(
        "time on {}: first launch (codegen + load + run) {:.3} ms, cached launch {:.3} ms",
        rt.backend_name(),
        first.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3
    );
    if error > tol {
        return Err(format!("relative error {error:e} above the tolerance {tol:e}").into());
    }
    Ok(())
}

/// Offsets `[B+1]` (i32) of sequences of `lengths`.
fn offsets_tensor(lengths: &[usize]) -> Result<DenseTensor, Box<dyn Error>> {
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    Ok(DenseTensor::from_f64(
        DType::I32,
        vec![lengths.len() + 1],
        &offsets,
    )?)
}

/// f32 values uniform in `[-1, 1)`.
fn random(rng: &mut Rng, shape: Vec<usize>) -> Result<DenseTensor, Box<dyn Error>> {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.float(1.0)).collect();
    Ok(DenseTensor::from_f64(DType::F32, shape, &values)?)
}
