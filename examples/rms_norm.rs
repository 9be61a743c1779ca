//! RMS norm times a per-feature weight, written with `#[jagged_kernel]`: for
//! each row `x[i]` (`D` features) of each sequence,
//!
//! ```text
//! y[i] = x[i] / sqrt(mean_d(x[i, d]^2) + eps) * w      (w: [D], one weight per feature)
//! ```
//!
//! `w` is a `Dense<T, (D,)>` parameter: static dims only, broadcast to every
//! row. The kernel declares its offsets (`offsets: Offsets`), so `launch`
//! takes its arguments in the signature's order. Rows past `max_len` are
//! zero in the output.
//!
//! The example runs it in bf16 and f32 on random jagged inputs (an empty
//! sequence and one longer than `max_len` included) on the best backend
//! present (a GPU, else the PTX emulator), checks each against the f64
//! reference evaluator and prints the plan.
//!
//! `cargo run --release --example rms_norm`

use std::error::Error;
use std::time::Instant;

use jagged::codegen::{Spec, compile_with_plan};
use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, DenseTensor};
use jagged::runtime::Runtime;
use jagged::testing::{Rng, random_inputs, rel_l2, tolerance};

/// RMS norm of each row, times a per-feature weight.
#[jagged_kernel(outputs(y))]
fn rms_norm<T: Float, D>(
    offsets: Offsets,
    x: Jagged<T, (D,)>,
    w: Dense<T, (D,)>,
    #[attr] max_len: usize,
    #[attr(default = 1e-6)] eps: f32,
) -> Jagged<T, (D,)> {
    x * ((x * x).mean_over_features() + eps).rsqrt() * w
}

const FEATURES: usize = 256;
const MAX_LEN: usize = 64;
const EPS: f32 = 1e-5;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(7);
    // One empty sequence, one longer than max_len (its rows past max_len
    // come out zero), the rest random.
    let mut lengths = vec![0, MAX_LEN + 19];
    lengths.extend((0..30).map(|_| 1 + rng.below(MAX_LEN)));
    let total: usize = lengths.iter().sum();
    println!(
        "rms_norm: B = {} sequences (lengths {:?}...), T = {total} rows, D = {FEATURES}, max_len = {MAX_LEN}, eps = {EPS}",
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

    let mut failed = Vec::new();
    for dtype in [DType::BF16, DType::F32] {
        let graph = rms_norm::graph(dtype, FEATURES, DType::I32)?;
        // Random inputs for every input of the graph: offsets from the
        // lengths, x and w uniform in [-2, 2) rounded to the dtype.
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

        let (offsets, x, w) = (
            rt.upload_tensor(input("offsets"))?,
            rt.upload_tensor(input("x"))?,
            rt.upload_tensor(input("w"))?,
        );
        let start = Instant::now();
        let y = rms_norm::launch(&mut rt, &offsets, &x, &w, MAX_LEN, EPS)?;
        rt.synchronize()?;
        let first = start.elapsed();
        let got = rt.download_tensor(&y)?;

        let named: Vec<(&str, &DenseTensor)> =
            inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let attrs = [
            ("max_len", AttrValue::Index(MAX_LEN)),
            ("eps", AttrValue::Float(f64::from(EPS))),
        ];
        let reference = jagged::ir::evaluate(&graph, &named, &attrs)?;
        let error = rel_l2(&got.to_f64(), &reference["y"].to_f64());
        let tol = tolerance(dtype);
        println!(
            "{dtype}: output y {:?}: relative error vs the f64 reference {error:.2e} (tolerance {tol:e}); first launch (codegen + load + run) {:.3} ms on {}",
            got.shape(),
            first.as_secs_f64() * 1e3,
            rt.backend_name()
        );
        if error.is_nan() || error > tol {
            failed.push(format!("{dtype}: relative error {error:e} above {tol:e}"));
        }
        for t in [offsets, x, w, y] {
            rt.free(t.buffer)?;
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("; ").into());
    }
    Ok(())
}
