//! Softmax over the keys of `q . k`, a mask `j >= i`, then a sum over the
//! keys, written with `#[jagged_kernel]`: per sequence, head `h` and query
//! row `i < n_b`,
//!
//! ```text
//! p[i, j] = softmax_j(q[i] . k[j])          over the keys j < n_b
//! mass[i] = sum_{j >= i} p[i, j]            the probability on keys at or after i
//! ```
//!
//! giving `mass [T, H]`. The `[n_b, n_b]` probabilities never reach memory:
//! the general path stores the softmax's statistics (max and sum per query
//! row) and recomputes the masked probabilities inside the sum. The example
//! runs it on random jagged inputs (an empty sequence and one longer than
//! `max_len` included) on the best backend present (a GPU, else the PTX
//! emulator), checks it against the f64 reference evaluator and prints the
//! plan.
//!
//! `cargo run --release --example softmax_mask_sum`

use std::error::Error;
use std::time::Instant;

use jagged::codegen::{Spec, compile_with_plan};
use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, DenseTensor};
use jagged::runtime::Runtime;
use jagged::testing::{Rng, random_inputs, rel_l2, tolerance};

/// Softmax over the keys, then the mask `j >= i`, then the sum over the keys.
#[jagged_kernel(outputs(mass))]
fn softmax_mask_sum<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    #[attr] max_len: usize,
) -> Jagged<T, (H,)> {
    q.dot(k).softmax_over_keys().anticausal().sum_over_keys()
}

const HEADS: usize = 2;
const HEAD_DIM: usize = 16;
const MAX_LEN: usize = 48;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(7);
    // One empty sequence, one longer than max_len, the rest random.
    let mut lengths = vec![0, MAX_LEN + 20];
    lengths.extend((0..14).map(|_| 1 + rng.below(MAX_LEN)));
    let total: usize = lengths.iter().sum();

    let graph = softmax_mask_sum::graph(DType::F32, HEADS, HEAD_DIM, DType::I32)?;
    // Random inputs for every input of the graph: offsets from the lengths,
    // q and k uniform in [-1, 1).
    let inputs = random_inputs(&graph, &lengths, MAX_LEN, 1.0, &mut rng);
    let input = |name: &str| -> &DenseTensor {
        &inputs.iter().find(|(n, _)| n == name).expect("an input").1
    };
    println!(
        "softmax_mask_sum: B = {} sequences (lengths {:?}...), T = {total} rows, H = {HEADS}, D = {HEAD_DIM}, max_len = {MAX_LEN}, f32",
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

    let (offsets, q, k) = (
        rt.upload_tensor(input("offsets"))?,
        rt.upload_tensor(input("q"))?,
        rt.upload_tensor(input("k"))?,
    );
    let start = Instant::now();
    let mass = softmax_mask_sum::launch(&mut rt, &offsets, &q, &k, MAX_LEN)?;
    rt.synchronize()?;
    let first = start.elapsed();
    let start = Instant::now();
    let again = softmax_mask_sum::launch(&mut rt, &offsets, &q, &k, MAX_LEN)?;
    rt.synchronize()?;
    let cached = start.elapsed();
    let got = rt.download_tensor(&mass)?;
    let _ = rt.download_tensor(&again)?;

    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let reference =
        jagged::ir::evaluate(&graph, &named, &[("max_len", AttrValue::Index(MAX_LEN))])?;
    let want = &reference["mass"];
    let error = rel_l2(&got.to_f64(), &want.to_f64());
    let tol = tolerance(DType::F32);
    println!(
        "output mass {:?}: relative error vs the f64 reference {error:.2e} (tolerance {tol:e})",
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
