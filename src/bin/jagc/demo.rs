//! `jagc demo`: the project on one screen.
//!
//! 1. Jagged flash attention (the builtin `jagged_flash_attention`, softmax,
//!    bf16 with f32 accumulation) on a skewed batch: Zipf-like lengths
//!    (`P(L = l) ~ 1/l`) from 1 to a little past `max_len`, plus one empty
//!    sequence and one longer than `max_len`. It runs on the best backend present (a GPU, else the PTX
//!    emulator), is checked against the f64 reference evaluator, and is set
//!    next to its padded equivalent: the same kernel on the batch padded to
//!    `max_len` rows per sequence (timed on the same backend, not checked:
//!    padded keys without a mask change the softmax), and the bytes of each
//!    layout computed from the shapes, including dense attention with its
//!    `[B, H, N, N]` scores materialized, which is not run.
//! 2. A composed op no template matches, weighted sum pooling written with
//!    `#[jagged_kernel]`, compiled by the general path: its IR, its plan, its
//!    error against the reference.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use jagged::dsl::*;
use jagged::ops::attention::jagged_flash_attention_softmax;
use jagged_codegen::{Arch, Spec};
use jagged_ir::{AttrValue, DType, DenseTensor, Graph};
use jagged_runtime::{DeviceTensor, KernelCache, Runtime};

/// Arguments of `jagc demo`. `JAGGED_BACKEND=emu|cuda` forces a backend.
#[derive(Args)]
pub struct DemoArgs {
    /// Number of sequences (one of them empty, one longer than max_len).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Attention heads (`H`).
    #[arg(long, default_value_t = 2)]
    pub heads: usize,
    /// Head dim (`D`) of q, k and v.
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    /// The `max_len` attribute: rows past it are ignored (and zero in the
    /// output); lengths are drawn from 1 to 5/4 of it.
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Seed of the random lengths and values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The target architecture of the generated PTX [default: the device's
    /// preferred one, sm_90a on compute capability 9.x, else sm_80].
    #[arg(long, value_parser = crate::opspec::parse_arch)]
    pub arch: Option<Arch>,
}

/// The tolerance of bf16 inputs (relative L2 against the f64 reference).
const BF16_TOLERANCE: f64 = 1e-2;
/// The tolerance of f32 math.
const F32_TOLERANCE: f64 = 1e-5;
/// Cached runs timed (the best is reported).
const CACHED_RUNS: usize = 2;
/// Feature columns of the pooling example.
const FEATURES: usize = 32;

/// Weighted sum pooling: each event's features times its weight, summed
/// over the sequence.
#[jagged_kernel(outputs(pooled))]
fn weighted_pool<S>(
    x: Jagged<f32, S>,
    w: Jagged<f32, ()>,
    #[attr] max_len: usize,
) -> PerSeq<f32, S> {
    (x * w).sum_over_seq()
}

/// xorshift64*: reproducible inputs without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` values uniform in `[-1, 1)`.
    fn values(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.unit() * 2.0 - 1.0).collect()
    }
}

/// Inverse-CDF sample of `P(L = l) ~ 1/l` on `[1, max]`.
fn zipf_length(rng: &mut Rng, max: usize) -> usize {
    let total: f64 = (1..=max).map(|l| 1.0 / l as f64).sum();
    let mut u = rng.unit() * total;
    for l in 1..=max {
        u -= 1.0 / l as f64;
        if u <= 0.0 {
            return l;
        }
    }
    max
}

/// Offsets `[B+1]` (i32) of sequences of `lengths`.
fn offsets_of(lengths: &[usize]) -> Result<DenseTensor, Box<dyn std::error::Error>> {
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

/// Runs `jagc demo`.
pub fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let longest = (args.max_len * 5 / 4).max(1);
    // One sequence longer than max_len (its rows past max_len are ignored),
    // one empty, the others Zipf-like on [1, 5/4 max_len].
    let lengths: Vec<usize> = (0..args.batch)
        .map(|b| match b {
            0 => longest,
            1 => 0,
            _ => zipf_length(&mut rng, longest),
        })
        .collect();

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
    let emulated = rt.emulator_profile().is_some();
    if emulated {
        println!("(times below are the emulator's CPU wall time, not GPU time)");
    }

    let ok_attention = attention(&mut rt, &args, &lengths, arch, &mut rng)?;
    let ok_pool = pooling(&mut rt, &lengths, args.max_len, arch, &mut rng)?;
    if ok_attention && ok_pool {
        Ok(())
    } else {
        Err("an output exceeds its tolerance against the f64 reference".into())
    }
}

/// Part 1: jagged flash attention next to its padded equivalent; true when
/// within tolerance.
fn attention(
    rt: &mut Runtime,
    args: &DemoArgs,
    lengths: &[usize],
    arch: Arch,
    rng: &mut Rng,
) -> Result<bool, Box<dyn std::error::Error>> {
    let (batch, h, d, max_len) = (args.batch, args.heads, args.head_dim, args.max_len);
    let total: usize = lengths.iter().sum();
    let valid: Vec<usize> = lengths.iter().map(|&l| l.min(max_len)).collect();
    let pairs: usize = valid.iter().map(|n| n * n).sum();
    let padded_pairs = batch * max_len * max_len;
    println!(
        "\n== jagged flash attention (builtin jagged_flash_attention: softmax, bf16 inputs, f32 accumulation) =="
    );
    println!(
        "B = {batch} sequences, Zipf-like lengths on [1, {}] (P ~ 1/l), {} empty: \
         min {}, median {}, max {}; {} longer than max_len = {max_len}",
        (max_len * 5 / 4).max(1),
        lengths.iter().filter(|&&l| l == 0).count(),
        lengths.iter().min().copied().unwrap_or(0),
        median(lengths),
        lengths.iter().max().copied().unwrap_or(0),
        lengths.iter().filter(|&&l| l > max_len).count(),
    );
    println!(
        "T = {total} rows, H = {h}, D = {d}; (query, key) pairs per head: jagged {pairs}, \
         padded B*N^2 = {padded_pairs} ({:.1}x)",
        padded_pairs as f64 / pairs.max(1) as f64
    );

    let graph = jagged_flash_attention_softmax::graph(DType::BF16, h, d, d, DType::I32)?;
    let scale = 1.0 / (d as f64).sqrt();
    let attrs = [
        ("max_len", AttrValue::Index(max_len)),
        ("scale", AttrValue::Float(scale)),
    ];
    let spec = Spec::for_graph(&graph, max_len as u64, arch)?;
    let (kernel, plan) = jagged_codegen::compile_with_plan(&graph, &spec)?;
    println!("spec: {spec}");
    println!(
        "plan: {} ({} kernel(s), {} bytes of PTX)",
        plan.lines().next().unwrap_or(""),
        kernel.launches.len(),
        kernel.ptx.len()
    );

    // Jagged inputs: T rows.
    let bf16 =
        |rows: usize, values: &[f64]| DenseTensor::from_f64(DType::BF16, vec![rows, h, d], values);
    let row = h * d;
    let host: Vec<Vec<f64>> = (0..3).map(|_| rng.values(total * row)).collect();
    let offsets = offsets_of(lengths)?;
    let (q, k, v) = (
        bf16(total, &host[0])?,
        bf16(total, &host[1])?,
        bf16(total, &host[2])?,
    );
    let inputs = [("q", &q), ("k", &k), ("v", &v), ("offsets", &offsets)];
    let run = timed_runs(rt, &graph, &spec, &inputs, &attrs)?;

    let reference = jagged_ir::evaluate(&graph, &inputs, &attrs)?;
    let mut ok = true;
    for (name, got) in &run.outputs {
        let err = rel_l2(&got.to_f64(), &reference[name].to_f64());
        let tol = if got.dtype() == DType::BF16 {
            BF16_TOLERANCE
        } else {
            F32_TOLERANCE
        };
        let verdict = if err <= tol { "ok" } else { "FAILED" };
        ok &= err <= tol;
        println!(
            "output {name} {:?} ({}): relative error vs f64 reference {err:.2e} ({verdict}, tolerance {tol:e})",
            got.shape(),
            got.dtype()
        );
    }

    // The padded equivalent: every sequence padded (with zeros) to max_len
    // rows, the same kernel over B * max_len rows.
    let mut padded_host: Vec<Vec<f64>> = vec![vec![0.0; batch * max_len * row]; 3];
    let mut start = 0;
    for (b, &l) in lengths.iter().enumerate() {
        let n = l.min(max_len);
        for (dst, src) in padded_host.iter_mut().zip(&host) {
            dst[b * max_len * row..(b * max_len + n) * row]
                .copy_from_slice(&src[start * row..(start + n) * row]);
        }
        start += l;
    }
    let padded_offsets = offsets_of(&vec![max_len; batch])?;
    let rows = batch * max_len;
    let (pq, pk, pv) = (
        bf16(rows, &padded_host[0])?,
        bf16(rows, &padded_host[1])?,
        bf16(rows, &padded_host[2])?,
    );
    let padded_inputs = [
        ("q", &pq),
        ("k", &pk),
        ("v", &pv),
        ("offsets", &padded_offsets),
    ];
    let padded = timed_runs(rt, &graph, &spec, &padded_inputs, &attrs)?;

    println!(
        "time of one run on {} (best of {CACHED_RUNS}, kernel cached, the same for both; output allocation included):",
        rt.backend_name()
    );
    println!(
        "  jagged  {:>12}   (first launch with codegen + module load: {}; code generator runs: {} then {})",
        ms(run.cached),
        ms(run.first),
        run.codegen_runs.0,
        run.codegen_runs.1
    );
    println!(
        "  padded  {:>12}   ({:.1}x the jagged time; padded keys unmasked, not checked)",
        ms(padded.cached),
        padded.cached.as_secs_f64() / run.cached.as_secs_f64().max(1e-12)
    );
    if let (Some(j), Some(p)) = (run.profile, padded.profile) {
        println!(
            "emulator cost model (counted): global memory traffic jagged {} vs padded {}, \
             mma warp instructions {} vs {}",
            mib(j.global_bytes()),
            mib(p.global_bytes()),
            j.mma,
            p.mma
        );
    }

    // Memory, computed from the shapes (not measured allocations).
    let elem = DType::BF16.size() as u64;
    let (t, b, n, hh, dd) = (
        total as u64,
        batch as u64,
        max_len as u64,
        h as u64,
        d as u64,
    );
    let jagged_bytes = 4 * t * hh * dd * elem + t * hh * 4 + (b + 1) * 4;
    let padded_io = 4 * b * n * hh * dd * elem + b * n * hh * 4;
    let scores = b * hh * n * n * (4 + elem);
    println!("memory of q, k, v, out, lse (and intermediates), computed from the shapes:");
    println!("  jagged flash attention          {}", mib(jagged_bytes));
    println!(
        "  padded flash attention          {}   ({:.1}x)",
        mib(padded_io),
        padded_io as f64 / jagged_bytes as f64
    );
    println!(
        "  dense padded, scores in memory  {}   ({:.1}x; [B, H, N, N] scores in f32 and \
         probabilities in bf16; an estimate, not run)",
        mib(padded_io + scores),
        (padded_io + scores) as f64 / jagged_bytes as f64
    );
    Ok(ok)
}

/// What [`timed_runs`] measured.
struct Timed {
    /// The first run's outputs (poisoned before the run), downloaded.
    outputs: Vec<(String, DenseTensor)>,
    /// The first run (code generation and module load included, unless cached).
    first: Duration,
    /// The best of [`CACHED_RUNS`] runs from the caches.
    cached: Duration,
    /// Code generator runs during the first run and during the cached ones.
    codegen_runs: (u64, u64),
    /// The emulator's cost model of one cached run (None on CUDA).
    profile: Option<jagged_emu::Profile>,
}

/// Uploads `inputs`, runs `graph` once (code generation and module load
/// included; outputs poisoned, and these are the outputs returned) then
/// [`CACHED_RUNS`] times from the caches (outputs not poisoned, so that the
/// time is the kernels' and the allocation's, not a host-to-device fill),
/// and frees every buffer.
fn timed_runs(
    rt: &mut Runtime,
    graph: &Graph,
    spec: &Spec,
    inputs: &[(&str, &DenseTensor)],
    attrs: &[(&str, AttrValue)],
) -> Result<Timed, Box<dyn std::error::Error>> {
    let device: Vec<(&str, DeviceTensor)> = inputs
        .iter()
        .map(|(n, t)| Ok((*n, rt.upload_tensor(t)?)))
        .collect::<Result<_, jagged_runtime::RuntimeError>>()?;
    let named: Vec<(&str, &DeviceTensor)> = device.iter().map(|(n, t)| (*n, t)).collect();

    let before = rt.graph_run_stats();
    let start = Instant::now();
    let first = rt.run_graph(graph, spec, &named, attrs)?;
    rt.synchronize()?;
    let first_time = start.elapsed();
    let after_first = rt.graph_run_stats();

    let mut outputs = Vec::new();
    for (name, out) in &first {
        outputs.push((name.clone(), rt.download_tensor(out)?));
    }

    // The best of a few cached runs: the machine may be busy with other work.
    rt.set_poison_outputs(false);
    let mut cached = Duration::MAX;
    let mut profile = None;
    let mut second = None;
    for repeat in 0..CACHED_RUNS {
        let _ = rt.take_emulator_profile();
        let start = Instant::now();
        let outputs = rt.run_graph(graph, spec, &named, attrs)?;
        rt.synchronize()?;
        cached = cached.min(start.elapsed());
        if repeat == 0 {
            profile = rt.take_emulator_profile();
        }
        if let Some(previous) = second.replace(outputs) {
            for t in previous.into_values() {
                rt.free(t.buffer)?;
            }
        }
    }
    rt.set_poison_outputs(true);
    let second = second.unwrap_or_default();
    let after_second = rt.graph_run_stats();

    for t in first
        .into_values()
        .chain(second.into_values())
        .chain(device.into_iter().map(|(_, t)| t))
    {
        rt.free(t.buffer)?;
    }
    Ok(Timed {
        outputs,
        first: first_time,
        cached,
        codegen_runs: (
            after_first.codegen_runs - before.codegen_runs,
            after_second.codegen_runs - after_first.codegen_runs,
        ),
        profile,
    })
}

/// Part 2: a composed op through the general path; true when within tolerance.
fn pooling(
    rt: &mut Runtime,
    lengths: &[usize],
    max_len: usize,
    arch: Arch,
    rng: &mut Rng,
) -> Result<bool, Box<dyn std::error::Error>> {
    println!("\n== a composed op: weighted sum pooling, (x * w).sum_over_seq(), general path ==");
    let graph = weighted_pool::graph(&[FEATURES], DType::I32)?;
    print!("{graph}");
    let spec = Spec::for_graph(&graph, max_len as u64, arch)?;
    let (_, plan) = jagged_codegen::compile_with_plan(&graph, &spec)?;
    println!("spec: {spec}\nplan:");
    for line in plan.lines() {
        println!("  {line}");
    }

    let total: usize = lengths.iter().sum();
    let offsets = offsets_of(lengths)?;
    let x = DenseTensor::from_f64(
        DType::F32,
        vec![total, FEATURES],
        &rng.values(total * FEATURES),
    )?;
    let w = DenseTensor::from_f64(DType::F32, vec![total], &rng.values(total))?;
    let inputs = [("offsets", &offsets), ("x", &x), ("w", &w)];
    let attrs = [("max_len", AttrValue::Index(max_len))];
    let run = timed_runs(rt, &graph, &spec, &inputs, &attrs)?;
    let reference = jagged_ir::evaluate(&graph, &inputs, &attrs)?;
    let mut ok = true;
    for (name, got) in &run.outputs {
        let err = rel_l2(&got.to_f64(), &reference[name].to_f64());
        let verdict = if err <= F32_TOLERANCE { "ok" } else { "FAILED" };
        ok &= err <= F32_TOLERANCE;
        println!(
            "output {name} {:?}: relative error vs f64 reference {err:.2e} ({verdict}, tolerance {F32_TOLERANCE:e})",
            got.shape()
        );
    }
    println!(
        "time on {}: first launch (codegen + module load + run) {}, cached launch {} \
         (best of {CACHED_RUNS}; code generator runs: {} then {})",
        rt.backend_name(),
        ms(run.first),
        ms(run.cached),
        run.codegen_runs.0,
        run.codegen_runs.1
    );
    Ok(ok)
}

fn median(values: &[usize]) -> usize {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:>9.3} MiB", bytes as f64 / (1u64 << 20) as f64)
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
    if diff == 0.0 {
        0.0
    } else if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}
