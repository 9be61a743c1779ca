//! `jagc demo`: the whole pipeline on one screen. Builds `jagged_softmax` and
//! `jagged_reduce` (mean) for a batch of random sequences (empty ones and
//! ones longer than `max_len` included), prints the IR, compiles and runs it on
//! the best backend present (a GPU, else the PTX emulator), and reports the
//! error against the f64 reference evaluator and the times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use jagged_codegen::{Arch, Spec};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrValue, DType, DenseTensor, Graph, ReduceOp};
use jagged_runtime::{DeviceTensor, KernelCache, Runtime};

/// Arguments of `jagc demo`. `JAGGED_BACKEND=emu|cuda` forces a backend.
#[derive(Args)]
pub struct DemoArgs {
    /// Number of sequences.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Columns per row (`H`).
    #[arg(long, default_value_t = 16)]
    pub heads: usize,
    /// The `max_len` attribute: rows past it are ignored (and zero in the output).
    #[arg(long, default_value_t = 64)]
    pub max_len: usize,
    /// Seed of the random lengths and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The target architecture of the generated PTX [default: the device's
    /// preferred one, sm_90a on compute capability 9.x, else sm_80].
    #[arg(long, value_parser = crate::opspec::parse_arch)]
    pub arch: Option<Arch>,
}

/// DESIGN.md's tolerance for f32 math.
const F32_TOLERANCE: f64 = 1e-5;

/// xorshift64*: reproducible inputs without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Runs `jagc demo`.
pub fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Lengths 0 ..= 1.5 max_len, with every fourth sequence empty.
    let lengths: Vec<usize> = (0..args.batch)
        .map(|b| {
            if b % 4 == 1 {
                0
            } else {
                (rng.next() % (args.max_len as u64 * 3 / 2 + 1)) as usize
            }
        })
        .collect();
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in &lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    let values: Vec<f64> = (0..total * args.heads)
        .map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0)
        .collect();
    let values = DenseTensor::from_f64(DType::F32, vec![total, args.heads], &values)?;
    let offsets = DenseTensor::from_f64(DType::I32, vec![args.batch + 1], &offsets)?;
    let empty = lengths.iter().filter(|&&l| l == 0).count();
    let long = lengths.iter().filter(|&&l| l > args.max_len).count();
    println!(
        "jagged demo: {} sequences ({empty} empty, {long} longer than max_len = {}), \
         {total} rows of {} f32 columns",
        args.batch, args.max_len, args.heads
    );

    let mut rt = Runtime::new()?;
    // A fresh in-memory kernel cache, so that the first run really generates code.
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    // Outputs start as NaN, so a row no kernel writes fails the check
    // instead of passing as a zero.
    rt.set_poison_outputs(true);
    print!("backend: {} ({})", rt.backend_name(), rt.device_name());
    match rt.fallback_reason() {
        Some(why) => println!(" - no GPU: {why}"),
        None => println!(),
    }

    let arch = args.arch.unwrap_or_else(|| rt.preferred_arch());

    let spec = JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![args.heads],
    };
    let inputs = [("values", &values), ("offsets", &offsets)];
    let mut ok = true;
    for graph in [
        ops::jagged_softmax(&spec)?,
        ops::jagged_reduce(&spec, ReduceOp::Mean)?,
    ] {
        ok &= demo_graph(&mut rt, &graph, &inputs, args.max_len, arch)?;
    }
    if ok {
        Ok(())
    } else {
        Err(format!("an output exceeds the f32 tolerance {F32_TOLERANCE:e}").into())
    }
}

/// Compiles and runs one graph twice (first and cached launch), checks it
/// against the reference; true when within tolerance.
fn demo_graph(
    rt: &mut Runtime,
    graph: &Graph,
    inputs: &[(&str, &DenseTensor)],
    max_len: usize,
    arch: Arch,
) -> Result<bool, Box<dyn std::error::Error>> {
    println!("\n== {} ==\n{graph}", graph.name());
    let attrs = [("max_len", AttrValue::Index(max_len))];
    let spec = Spec::for_graph(graph, max_len as u64, arch)?;
    println!("spec: {spec}");

    let device: Vec<(&str, DeviceTensor)> = inputs
        .iter()
        .map(|(n, t)| Ok((*n, rt.upload_tensor(t)?)))
        .collect::<Result<_, jagged_runtime::RuntimeError>>()?;
    let named: Vec<(&str, &DeviceTensor)> = device.iter().map(|(n, t)| (*n, t)).collect();

    let before = rt.graph_run_stats();
    let start = Instant::now();
    let first = rt.run_graph(graph, &spec, &named, &attrs)?;
    rt.synchronize()?;
    let first_time = start.elapsed();
    let after_first = rt.graph_run_stats();
    let codegen = after_first.codegen_time - before.codegen_time;

    let start = Instant::now();
    let second = rt.run_graph(graph, &spec, &named, &attrs)?;
    rt.synchronize()?;
    let cached_time = start.elapsed();
    let after_second = rt.graph_run_stats();

    let reference = jagged_ir::evaluate(graph, inputs, &attrs)?;
    let mut ok = true;
    for (name, out) in &second {
        let got = rt.download_tensor(out)?;
        let want = &reference[name];
        let err = rel_l2(&got.to_f64(), &want.to_f64());
        let verdict = if err <= F32_TOLERANCE { "ok" } else { "FAILED" };
        ok &= err <= F32_TOLERANCE;
        println!(
            "output {name} {:?}: relative error vs f64 reference {err:.2e} ({verdict}, tolerance {F32_TOLERANCE:e})",
            got.shape()
        );
    }
    let (kernel, _) = rt.compile_graph(graph, &spec)?;
    println!(
        "codegen: {} ({} kernel(s), {} bytes of PTX)",
        ms(codegen),
        kernel.launches.len(),
        kernel.ptx.len()
    );
    println!(
        "first launch (codegen + module load + run): {}",
        ms(first_time)
    );
    println!(
        "cached launch: {} (code generator runs: {} then {})",
        ms(cached_time),
        after_first.codegen_runs - before.codegen_runs,
        after_second.codegen_runs - after_first.codegen_runs
    );
    for t in first
        .into_values()
        .chain(second.into_values())
        .chain(device.into_iter().map(|(_, t)| t))
    {
        rt.free(t.buffer)?;
    }
    Ok(ok)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// `||a - b|| / ||b||` (absolute when `b` is zero); NaN gives infinity.
fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}
