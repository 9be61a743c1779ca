//! Runs the Triton bf16 matmul fixture and reports correctness against an f64
//! reference and the emulator's throughput in warp instructions per second.
//!
//! `cargo run --release -p jagged-emu --example emu_matmul [-- SIZE HOST_THREADS]`
//! (SIZE: M = N = K, default 128; HOST_THREADS: 0 for all cores, the default.)

#[path = "../tests/triton_support/mod.rs"]
mod triton_support;

use jagged_emu::Device;
use triton_support::{Fixture, bf16_bytes, f32s, matmul_args, matmul_reference, rel_err, to_bf16};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let fx = Fixture::load("matmul_bf16");
    let module = fx.module(&fx.ptx);
    let (m, n, k) = (size, size, size);
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
        .collect();
    let mut dev = Device::new();
    if threads > 0 {
        dev.set_host_threads(threads);
    }
    let (a, b) = (to_bf16(&a), to_bf16(&b));
    let pa = dev.upload(&bf16_bytes(&a));
    let pb = dev.upload(&bf16_bytes(&b));
    let pc = dev.alloc(m * n * 4);
    let tiles = size.div_ceil(64) as u32;
    let args = fx.args(matmul_args([pa, pb, pc], m, n, k));
    let stats = dev.launch(&module, &fx.kernel, &fx.config([tiles, tiles, 1]), &args)?;
    let c = f32s(&dev.read(pc, m * n * 4)?);
    let f64s = |v: &[half::bf16]| -> Vec<f64> { v.iter().map(|x| f64::from(x.to_f32())).collect() };
    let reference = matmul_reference(&f64s(&a), &f64s(&b), m, n, k);
    println!(
        "matmul {size}^3: rel err {:.3e}, {} warp instr in {:?} = {:.2} M warp-instr/s",
        rel_err(&c, &reference),
        stats.warp_instructions,
        stats.elapsed,
        stats.warp_instructions_per_second() / 1e6
    );
    Ok(())
}
