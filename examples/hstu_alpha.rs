//! HSTU attention (pointwise SiLU instead of softmax, causal), written with
//! `#[jagged_kernel]`, with its scale attribute named `alpha`: per sequence,
//! head `h` and rows `i, j < n_b`,
//!
//! ```text
//! s[i, j] = alpha * q[i] . k[j]
//! p[i, j] = silu(s[i, j]) / max_len   for j <= i, else 0
//! out[i]  = sum_j p[i, j] * v[j]
//! ```
//!
//! The example runs it in bf16 (f32 accumulation) on random jagged inputs
//! (an empty sequence and one longer than `max_len` included) on the best
//! backend present (a GPU, else the PTX emulator), checks it against the f64
//! reference evaluator and prints the plan. The flash-attention fast path
//! matches a scale attribute named `scale` only, so this graph is a miss
//! there and the plan shows the general path taking it, with the `[n_b, n_b]`
//! scores fused into the contraction with `v`.
//!
//! `cargo run --release --example hstu_alpha`

use std::error::Error;
use std::time::Instant;

use jagged::codegen::{Spec, compile_with_plan};
use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, DenseTensor};
use jagged::runtime::Runtime;
use jagged::testing::{Rng, random_inputs, rel_l2, tolerance};

/// HSTU attention, causal, with the scale named `alpha`.
#[jagged_kernel(outputs(out))]
fn hstu_alpha<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] alpha: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * alpha;
    let p = silu(s) / max_len as f32;
    p.causal().dot(v)
}

const HEADS: usize = 2;
const HEAD_DIM: usize = 32;
const MAX_LEN: usize = 48;
const ALPHA: f32 = 0.25;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(11);
    // One empty sequence, one longer than max_len, the rest random.
    let mut lengths = vec![0, MAX_LEN + 25];
    lengths.extend((0..14).map(|_| 1 + rng.below(MAX_LEN)));
    let total: usize = lengths.iter().sum();

    let dtype = DType::BF16;
    let graph = hstu_alpha::graph(dtype, HEADS, HEAD_DIM, HEAD_DIM, DType::I32)?;
    // Random inputs for every input of the graph: offsets from the lengths,
    // q, k and v uniform in [-2, 2) rounded to bf16.
    let inputs = random_inputs(&graph, &lengths, MAX_LEN, 2.0, &mut rng);
    let input = |name: &str| -> &DenseTensor {
        &inputs.iter().find(|(n, _)| n == name).expect("an input").1
    };
    println!(
        "hstu_alpha: B = {} sequences (lengths {:?}...), T = {total} rows, H = {HEADS}, D = {HEAD_DIM}, max_len = {MAX_LEN}, alpha = {ALPHA}, {dtype}",
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

    println!("\n{graph}");
    let spec = Spec::for_graph(&graph, MAX_LEN as u64, rt.preferred_arch())?;
    let (_, plan) = compile_with_plan(&graph, &spec)?;
    println!("spec: {spec}\nplan:\n{plan}");

    let (offsets, q, k, v) = (
        rt.upload_tensor(input("offsets"))?,
        rt.upload_tensor(input("q"))?,
        rt.upload_tensor(input("k"))?,
        rt.upload_tensor(input("v"))?,
    );
    let start = Instant::now();
    let out = hstu_alpha::launch(&mut rt, &offsets, &q, &k, &v, MAX_LEN, ALPHA)?;
    rt.synchronize()?;
    let first = start.elapsed();
    let start = Instant::now();
    let again = hstu_alpha::launch(&mut rt, &offsets, &q, &k, &v, MAX_LEN, ALPHA)?;
    rt.synchronize()?;
    let cached = start.elapsed();
    let got = rt.download_tensor(&out)?;
    let _ = rt.download_tensor(&again)?;

    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let attrs = [
        ("max_len", AttrValue::Index(MAX_LEN)),
        ("alpha", AttrValue::Float(f64::from(ALPHA))),
    ];
    let reference = jagged::ir::evaluate(&graph, &named, &attrs)?;
    let want = &reference["out"];
    let error = rel_l2(&got.to_f64(), &want.to_f64());
    let tol = tolerance(dtype);
    println!(
        "output out {:?}: relative error vs the f64 reference {error:.2e} (tolerance {tol:e}, {dtype})",
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
