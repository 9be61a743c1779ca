//! Emulator throughput on real tensor-core PTX: runs the Triton bf16 matmul fixture
//! (mma.sync, ldmatrix, cp.async) and prints warp instructions per second, the median
//! of several launches.
//!
//! `cargo bench -p jagged-emu --bench triton_matmul [-- SIZE RUNS HOST_THREADS]`
//! (SIZE: M = N = K, a multiple of 64; default 128. RUNS: default 5. HOST_THREADS:
//! host threads running CTAs; default all cores.)

#[path = "../tests/triton_support/mod.rs"]
mod triton_support;

use jagged_emu::Device;
use triton_support::{Fixture, Rng, bf16_bytes, matmul_args, to_bf16};

fn main() {
    // `cargo bench` appends `--bench`: only the positional arguments count.
    let mut cli = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let size: usize = cli.next().and_then(|s| s.parse().ok()).unwrap_or(128);
    let runs: usize = cli.next().and_then(|s| s.parse().ok()).unwrap_or(5).max(1);
    let host_threads: Option<usize> = cli.next().and_then(|s| s.parse().ok());
    assert!(
        size > 0 && size.is_multiple_of(64),
        "SIZE must be a positive multiple of 64"
    );

    let fx = Fixture::load("matmul_bf16");
    let module = fx.module(&fx.ptx);
    let mut rng = Rng::new(42);
    let mut dev = Device::new();
    if let Some(n) = host_threads {
        dev.set_host_threads(n);
    }
    let a = dev.upload(&bf16_bytes(&to_bf16(&rng.vec(size * size, -1.0, 1.0))));
    let b = dev.upload(&bf16_bytes(&to_bf16(&rng.vec(size * size, -1.0, 1.0))));
    let c = dev.alloc(size * size * 4);
    let tiles = (size / 64) as u32;
    let config = fx.config([tiles, tiles, 1]);

    let mut rates = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let args = fx.args(matmul_args([a, b, c], size, size, size));
        let stats = match dev.launch(&module, &fx.kernel, &config, &args) {
            Ok(stats) => stats,
            Err(e) => {
                eprintln!("launch failed: {e}");
                std::process::exit(1);
            }
        };
        rates.push(stats.warp_instructions as f64 / stats.elapsed.as_secs_f64());
        last = Some(stats);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    if let Some(stats) = last {
        println!(
            "matmul_bf16 {size}x{size}x{size}, grid {tiles}x{tiles} x {} threads: {} warp instructions, {} thread instructions, {:.1} ms per launch",
            fx.block,
            stats.warp_instructions,
            stats.thread_instructions,
            stats.elapsed.as_secs_f64() * 1e3
        );
    }
    println!(
        "median of {runs}: {:.2} M warp instructions/s (min {:.2}, max {:.2})",
        median / 1e6,
        rates[0] / 1e6,
        rates[rates.len() - 1] / 1e6
    );
}
