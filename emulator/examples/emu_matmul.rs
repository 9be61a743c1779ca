//! Runs the Triton bf16 matmul fixture and reports correctness against an f64
//! reference and the emulator's throughput in warp instructions per second.
use jagged_emu::{Device, KernelArg, LaunchConfig, Module};

fn bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/matmul_bf16.ptx"
    ))?;
    let module = Module::parse(&text)?;
    let (m, n, k) = (size as usize, size as usize, size as usize);
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
    let ab: Vec<u8> = a.iter().flat_map(|&x| bf16(x).to_le_bytes()).collect();
    let bb: Vec<u8> = b.iter().flat_map(|&x| bf16(x).to_le_bytes()).collect();
    let pa = dev.upload(&ab);
    let pb = dev.upload(&bb);
    let pc = dev.alloc(m * n * 4);
    let cfg = LaunchConfig {
        grid: [size.div_ceil(64), size.div_ceil(64), 1],
        block: [128, 1, 1],
        dynamic_shared_bytes: 32768,
    };
    let args = [
        KernelArg::Ptr(pa),
        KernelArg::Ptr(pb),
        KernelArg::Ptr(pc),
        KernelArg::U32(size),
        KernelArg::U32(size),
        KernelArg::U32(size),
        KernelArg::U32(size),
        KernelArg::U32(size),
        KernelArg::U32(size),
        KernelArg::U64(0),
        KernelArg::U64(0),
    ];
    let stats = dev.launch(&module, "matmul_bf16", &cfg, &args)?;
    let out = dev.read(pc, m * n * 4)?;
    let c: Vec<f32> = out
        .chunks(4)
        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect();
    let mut err = 0f64;
    let mut norm = 0f64;
    for i in 0..m {
        for j in 0..n {
            let r: f64 = (0..k)
                .map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64)
                .sum();
            err += (c[i * n + j] as f64 - r).powi(2);
            norm += r * r;
        }
    }
    println!(
        "matmul {size}^3: rel err {:.3e}, {} warp instr in {:?} = {:.2} M warp-instr/s",
        (err / norm).sqrt(),
        stats.warp_instructions,
        stats.elapsed,
        stats.warp_instructions_per_second() / 1e6
    );
    Ok(())
}
