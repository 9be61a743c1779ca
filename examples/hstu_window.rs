//! HSTU attention under a causal sliding window with an ALiBi-style
//! relative-position bias, written with `#[jagged_kernel]`: per sequence,
//! head `h` and rows `i, j < n_b`,
//!
//! ```text
//! s[i, j]   = alpha * q[i] . k[j] - slope * |i - j|
//! p[i, j]   = silu(s[i, j]) / max_len   for j <= i and i - j <= window, else 0
//! out[i]    = sum_j p[i, j] * v[j]
//! ```
//!
//! The positions `i` and `j` are `s.query_pos()` and `s.key_pos()`, the
//! window test is the comparison `dist.le(window)` feeding `select`. The
//! kernel declares its offsets (`offsets: Offsets`), so `launch` takes its
//! arguments in the signature's order.
//!
//! The example runs it in bf16 (f32 scores) and f32 on random jagged inputs
//! (an empty sequence and one longer than `max_len` included) on the best
//! backend present (a GPU, else the PTX emulator), checks each against the
//! f64 reference evaluator and prints the plan: no attention template
//! matches positions and windows, so the general path compiles it, with the
//! `[n_b, n_b]` scores fused into the contraction with `v`.
//!
//! `cargo run --release --example hstu_window`

use std::error::Error;
use std::time::Instant;

use jagged::codegen::{Spec, compile_with_plan};
use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, DenseTensor};
use jagged::runtime::Runtime;
use jagged::testing::{Rng, random_inputs, rel_l2, tolerance};

/// Causal HSTU attention over the window `i - j <= window`, with the
/// relative-position bias `-slope * |i - j|` on the scores.
#[jagged_kernel(outputs(out))]
fn hstu_window<T: Float, H, D, E>(
    offsets: Offsets,
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] alpha: f32,
    #[attr] window: usize,
    #[attr] slope: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * alpha;
    let dist = (s.query_pos() - s.key_pos()).abs();
    let p = silu(s - slope * dist) / max_len as f32;
    select(dist.le(window), p, 0.0).causal().dot(v)
}

const HEADS: usize = 2;
const HEAD_DIM: usize = 32;
const MAX_LEN: usize = 48;
const ALPHA: f32 = 0.25;
const WINDOW: usize = 8;
const SLOPE: f32 = 0.125;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(5);
    // One empty sequence, one longer than max_len, the rest random.
    let mut lengths = vec![0, MAX_LEN + 21];
    lengths.extend((0..14).map(|_| 1 + rng.below(MAX_LEN)));
    let total: usize = lengths.iter().sum();
    println!(
        "hstu_window: B = {} sequences (lengths {:?}...), T = {total} rows, H = {HEADS}, D = {HEAD_DIM}, max_len = {MAX_LEN}, alpha = {ALPHA}, window = {WINDOW}, slope = {SLOPE}",
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

    let attrs = [
        ("max_len", AttrValue::Index(MAX_LEN)),
        ("alpha", AttrValue::Float(f64::from(ALPHA))),
        ("window", AttrValue::Index(WINDOW)),
        ("slope", AttrValue::Float(f64::from(SLOPE))),
    ];
    let mut failed = Vec::new();
    for dtype in [DType::BF16, DType::F32] {
        let graph = hstu_window::graph(dtype, HEADS, HEAD_DIM, HEAD_DIM, DType::I32)?;
        // Random inputs for every input of the graph: offsets from the
        // lengths, q, k and v uniform in [-2, 2) rounded to the dtype.
        let inputs = random_inputs(&graph, &lengths, MAX_LEN, 2.0, &mut rng);
        let input = |name: &str| -> &DenseTensor {
            &inputs.iter().find(|(n, _)| n == name).expect("an input").1
        };
        if dtype == DType::BF16 {
            println!("\n{graph}");
            let spec = Spec::for_graph(&graph, MAX_LEN as u64, rt.preferred_arch())?;
            let (_, plan) = compile_with_plan(&graph, &spec)?;
            println!("spec: {spec}\nplan:\n{plan}");
        }

        let (offsets, q, k, v) = (
            rt.upload_tensor(input("offsets"))?,
            rt.upload_tensor(input("q"))?,
            rt.upload_tensor(input("k"))?,
            rt.upload_tensor(input("v"))?,
        );
        let start = Instant::now();
        let out =
            hstu_window::launch(&mut rt, &offsets, &q, &k, &v, MAX_LEN, ALPHA, WINDOW, SLOPE)?;
        rt.synchronize()?;
        let first = start.elapsed();
        let got = rt.download_tensor(&out)?;

        let named: Vec<(&str, &DenseTensor)> =
            inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let reference = jagged::ir::evaluate(&graph, &named, &attrs)?;
        let error = rel_l2(&got.to_f64(), &reference["out"].to_f64());
        let tol = tolerance(dtype);
        println!(
            "{dtype}: output out {:?}: relative error vs the f64 reference {error:.2e} (tolerance {tol:e}); first launch (codegen + load + run) {:.3} ms on {}",
            got.shape(),
            first.as_secs_f64() * 1e3,
            rt.backend_name()
        );
        if error.is_nan() || error > tol {
            failed.push(format!("{dtype}: relative error {error:e} above {tol:e}"));
        }
        for t in [offsets, q, k, v, out] {
            rt.free(t.buffer)?;
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("; ").into());
    }
    Ok(())
}
