//! PTX written by another compiler: the Triton fixtures in `emulator/fixtures/` run in the
//! emulator on seeded random inputs and are compared with an f64 reference computed here.
//! Outputs are poisoned (0xFF bytes) before each run so an unwritten element fails.

mod triton_support;

use jagged_emu::{Device, DevicePtr, KernelArg, LaunchStats};
use triton_support::{
    Fixture, Rng, attention_args, bf16_bytes, f16_bytes, f16s, f32_bytes, f32s, matmul_args,
    matmul_reference, poisoned, rel_err, to_bf16, to_f16,
};

/// Tolerance for bf16 inputs with f32 accumulation (DESIGN.md).
const BF16_TOL: f64 = 1e-2;
/// Tolerance for f16 inputs (DESIGN.md).
const F16_TOL: f64 = 2e-3;
/// Tolerance for f32 math (DESIGN.md).
const F32_TOL: f64 = 1e-5;
/// Tolerance for f32 inputs multiplied in tf32 (DESIGN.md).
const TF32_TOL: f64 = 1e-3;

/// Launches `fx` with the user arguments `args` plus Triton's null scratch pointers.
fn run(dev: &mut Device, fx: &Fixture, grid: [u32; 3], args: Vec<KernelArg>) -> LaunchStats {
    let module = fx.module(&fx.ptx);
    let stats = dev
        .launch(&module, &fx.kernel, &fx.config(grid), &fx.args(args))
        .unwrap_or_else(|e| panic!("{} failed: {e}", fx.kernel));
    assert!(stats.warp_instructions > 0);
    assert!(stats.thread_instructions >= stats.warp_instructions);
    stats
}

fn read_f32(dev: &Device, ptr: DevicePtr, n: usize) -> Vec<f32> {
    f32s(&dev.read(ptr, n * 4).expect("read back output"))
}

fn read_i32(dev: &Device, ptr: DevicePtr, n: usize) -> Vec<i32> {
    let bytes = dev.read(ptr, n * 4).expect("read back output");
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn fixtures_parse_and_name_their_kernel() {
    for name in [
        "matmul_bf16",
        "softmax_rows",
        "sum_atomic",
        "attention_fwd",
        "matmul_tf32",
        "matmul_f16_wide",
        "layernorm_f16",
        "cumsum_i32",
        "histogram_atomic",
        "jagged_sum",
    ] {
        let fx = Fixture::load(name);
        let module = fx.module(&fx.ptx);
        let names: Vec<&str> = module.kernel_names().collect();
        assert_eq!(names, vec![fx.kernel.as_str()], "{name}");
    }
}

/// Runs the `matmul_bf16`/`matmul_tf32` fixture `name` on `a [m, k]` and `b [k, n]`
/// (`to_device` gives their element bytes and f64 values) and returns the relative error
/// of the f32 output `c [m, n]` against the f64 product.
fn matmul_error<T>(
    name: &str,
    (m, n, k): (usize, usize, usize),
    (a, b): (&[T], &[T]),
    to_device: impl Fn(&[T]) -> (Vec<u8>, Vec<f64>),
) -> f64 {
    let fx = Fixture::load(name);
    let ((a_bytes, a64), (b_bytes, b64)) = (to_device(a), to_device(b));
    let mut dev = Device::new();
    let a_dev = dev.upload(&a_bytes);
    let b_dev = dev.upload(&b_bytes);
    let c_dev = poisoned(&mut dev, m * n * 4);
    run(
        &mut dev,
        &fx,
        [m.div_ceil(64) as u32, (n / 64) as u32, 1],
        matmul_args([a_dev, b_dev, c_dev], m, n, k),
    );
    let reference = matmul_reference(&a64, &b64, m, n, k);
    rel_err(&read_f32(&dev, c_dev, m * n), &reference)
}

#[test]
fn matmul_bf16_matches_f64_reference() {
    // M is not a multiple of the 64-row tile: the last tile's loads are masked
    // (cp.async with src-size 0) and its stores predicated off.
    let (m, n, k) = (96usize, 128usize, 192usize);
    let mut rng = Rng::new(0x5eed_0001);
    let a = to_bf16(&rng.vec(m * k, -1.0, 1.0));
    let b = to_bf16(&rng.vec(k * n, -1.0, 1.0));
    let err = matmul_error("matmul_bf16", (m, n, k), (&a, &b), |v| {
        (
            bf16_bytes(v),
            v.iter().map(|x| f64::from(x.to_f32())).collect(),
        )
    });
    assert!(err <= BF16_TOL, "matmul relative error {err}");
}

#[test]
fn softmax_rows_matches_f64_reference() {
    let fx = Fixture::load("softmax_rows");
    // 200 of the 256-wide block are valid (masked loads/stores); rows are padded to 208.
    let (rows, cols, stride) = (6usize, 200usize, 208usize);
    let mut rng = Rng::new(0x5eed_0002);
    let x = rng.vec(rows * stride, -4.0, 4.0);
    let mut dev = Device::new();
    let x_dev = dev.upload(&f32_bytes(&x));
    let y_dev = poisoned(&mut dev, rows * stride * 4);
    run(
        &mut dev,
        &fx,
        [rows as u32, 1, 1],
        vec![
            KernelArg::Ptr(x_dev),
            KernelArg::Ptr(y_dev),
            KernelArg::I32(cols as i32),
            KernelArg::I32(stride as i32),
            KernelArg::I32(stride as i32),
        ],
    );
    let y = read_f32(&dev, y_dev, rows * stride);
    let mut out = Vec::new();
    let mut reference = Vec::new();
    for r in 0..rows {
        let row: Vec<f64> = x[r * stride..r * stride + cols]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
        reference.extend(row.iter().map(|v| (v - max).exp() / sum));
        out.extend_from_slice(&y[r * stride..r * stride + cols]);
        for (c, v) in y[r * stride + cols..(r + 1) * stride].iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                u32::MAX,
                "padding column {} of row {r} was written",
                cols + c
            );
        }
    }
    let err = rel_err(&out, &reference);
    assert!(err <= F32_TOL, "softmax relative error {err}");
}

#[test]
fn sum_atomic_matches_f64_reference() {
    let fx = Fixture::load("sum_atomic");
    // 5 programs of 1024; the last one is partly masked.
    let n = 5000usize;
    let mut rng = Rng::new(0x5eed_0003);
    let x = rng.vec(n, 0.0, 1.0);
    let mut dev = Device::new();
    let x_dev = dev.upload(&f32_bytes(&x));
    let out_dev = dev.alloc(4);
    run(
        &mut dev,
        &fx,
        [n.div_ceil(1024) as u32, 1, 1],
        vec![
            KernelArg::Ptr(x_dev),
            KernelArg::Ptr(out_dev),
            KernelArg::I32(n as i32),
        ],
    );
    let reference: f64 = x.iter().map(|&v| f64::from(v)).sum();
    let out = read_f32(&dev, out_dev, 1);
    let err = rel_err(&out, &[reference]);
    assert!(
        err <= F32_TOL,
        "sum {} vs {reference}: relative error {err}",
        out[0]
    );
}

#[test]
fn attention_fwd_matches_f64_reference() {
    let fx = Fixture::load("attention_fwd");
    // Two 64-row query blocks, each online over four 32-row key blocks.
    let (queries, keys, d) = (128usize, 128usize, 64usize);
    let scale = 0.125f32;
    let mut rng = Rng::new(0x5eed_0004);
    let q = to_bf16(&rng.vec(queries * d, -1.0, 1.0));
    let k = to_bf16(&rng.vec(keys * d, -1.0, 1.0));
    let v = to_bf16(&rng.vec(keys * d, -1.0, 1.0));
    let mut dev = Device::new();
    let q_dev = dev.upload(&bf16_bytes(&q));
    let k_dev = dev.upload(&bf16_bytes(&k));
    let v_dev = dev.upload(&bf16_bytes(&v));
    let o_dev = poisoned(&mut dev, queries * d * 4);
    run(
        &mut dev,
        &fx,
        [(queries / 64) as u32, 1, 1],
        attention_args([q_dev, k_dev, v_dev, o_dev], keys, scale, d),
    );
    let f = |x: half::bf16| f64::from(x.to_f32());
    let mut reference = vec![0f64; queries * d];
    for i in 0..queries {
        let s: Vec<f64> = (0..keys)
            .map(|j| {
                (0..d)
                    .map(|c| f(q[i * d + c]) * f(k[j * d + c]))
                    .sum::<f64>()
                    * f64::from(scale)
            })
            .collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let p: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let l: f64 = p.iter().sum();
        for c in 0..d {
            reference[i * d + c] = (0..keys).map(|j| p[j] * f(v[j * d + c])).sum::<f64>() / l;
        }
    }
    let o = read_f32(&dev, o_dev, queries * d);
    let err = rel_err(&o, &reference);
    assert!(err <= BF16_TOL, "attention relative error {err}");
}

#[test]
fn matmul_tf32_matches_f64_reference() {
    // mma.m16n8k8 .tf32, two 32-deep K steps, a partial (masked) row tile.
    let (m, n, k) = (96usize, 64usize, 64usize);
    let mut rng = Rng::new(0x5eed_0005);
    let a = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(k * n, -1.0, 1.0);
    let err = matmul_error("matmul_tf32", (m, n, k), (&a, &b), |v| {
        (f32_bytes(v), v.iter().map(|&x| f64::from(x)).collect())
    });
    assert!(err <= TF32_TOL, "tf32 matmul relative error {err}");
}

#[test]
fn layernorm_f16_matches_f64_reference() {
    let fx = Fixture::load("layernorm_f16");
    // 300 columns of a 512-wide block; rows are 600 bytes apart (scalar b16 accesses).
    let (rows, cols) = (4usize, 300usize);
    let eps = 1e-5f32;
    let mut rng = Rng::new(0x5eed_0006);
    let x = to_f16(&rng.vec(rows * cols, -2.0, 2.0));
    let w = to_f16(&rng.vec(cols, 0.5, 1.5));
    let b = to_f16(&rng.vec(cols, -0.5, 0.5));
    let mut dev = Device::new();
    let x_dev = dev.upload(&f16_bytes(&x));
    let w_dev = dev.upload(&f16_bytes(&w));
    let b_dev = dev.upload(&f16_bytes(&b));
    let y_dev = poisoned(&mut dev, rows * cols * 2);
    run(
        &mut dev,
        &fx,
        [rows as u32, 1, 1],
        vec![
            KernelArg::Ptr(x_dev),
            KernelArg::Ptr(w_dev),
            KernelArg::Ptr(b_dev),
            KernelArg::Ptr(y_dev),
            KernelArg::I32(cols as i32),
            KernelArg::F32(eps),
        ],
    );
    let y = f16s(&dev.read(y_dev, rows * cols * 2).expect("read back output"));
    let f = |h: half::f16| f64::from(h.to_f32());
    let mut reference = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row: Vec<f64> = x[r * cols..(r + 1) * cols].iter().map(|&h| f(h)).collect();
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + f64::from(eps)).sqrt();
        reference.extend(
            row.iter()
                .enumerate()
                .map(|(c, v)| (v - mean) * rstd * f(w[c]) + f(b[c])),
        );
    }
    let err = rel_err(&y, &reference);
    assert!(err <= F16_TOL, "layernorm relative error {err}");
}

#[test]
fn cumsum_i32_is_exact() {
    let fx = Fixture::load("cumsum_i32");
    // One 1024-wide program; the last 24 lanes are masked off.
    let n = 1000usize;
    let mut rng = Rng::new(0x5eed_0007);
    let x: Vec<i32> = (0..n)
        .map(|_| (rng.next_u64() % 2001) as i32 - 1000)
        .collect();
    let mut dev = Device::new();
    let x_dev = dev.upload(&i32_bytes(&x));
    let y_dev = poisoned(&mut dev, n * 4);
    run(
        &mut dev,
        &fx,
        [1, 1, 1],
        vec![
            KernelArg::Ptr(x_dev),
            KernelArg::Ptr(y_dev),
            KernelArg::I32(n as i32),
        ],
    );
    let y = read_i32(&dev, y_dev, n);
    let mut running = 0i32;
    for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
        running += xi;
        assert_eq!(yi, running, "prefix sum at {i}");
    }
}

#[test]
fn histogram_atomic_counts_exactly() {
    let fx = Fixture::load("histogram_atomic");
    // 10 programs of 512 increment 37 bins with contended atom.global.add.u32.
    let (n, bins) = (5000usize, 37usize);
    let mut rng = Rng::new(0x5eed_0008);
    let x: Vec<i32> = (0..n)
        .map(|_| (rng.next_u64() % bins as u64) as i32)
        .collect();
    let mut dev = Device::new();
    let x_dev = dev.upload(&i32_bytes(&x));
    let bins_dev = dev.alloc(bins * 4);
    run(
        &mut dev,
        &fx,
        [n.div_ceil(512) as u32, 1, 1],
        vec![
            KernelArg::Ptr(x_dev),
            KernelArg::Ptr(bins_dev),
            KernelArg::I32(n as i32),
        ],
    );
    let mut expected = vec![0i32; bins];
    for &v in &x {
        expected[v as usize] += 1;
    }
    assert_eq!(read_i32(&dev, bins_dev, bins), expected);
}

#[test]
fn jagged_sum_matches_f64_reference() {
    let fx = Fixture::load("jagged_sum");
    // Sequence lengths include 0, 1, a non-multiple of the 32-row block, exactly
    // max_len and above max_len (truncated to the first 64 rows).
    let lengths = [0usize, 1, 33, 64, 100, 7];
    let (d, max_len) = (64usize, 64usize);
    let mut offsets = vec![0i32];
    for len in lengths {
        offsets.push(offsets[offsets.len() - 1] + len as i32);
    }
    let total = offsets[lengths.len()] as usize;
    let mut rng = Rng::new(0x5eed_0009);
    let values = rng.vec(total * d, -1.0, 1.0);
    let mut dev = Device::new();
    let values_dev = dev.upload(&f32_bytes(&values));
    let offsets_dev = dev.upload(&i32_bytes(&offsets));
    let out_dev = poisoned(&mut dev, lengths.len() * d * 4);
    run(
        &mut dev,
        &fx,
        [lengths.len() as u32, 1, 1],
        vec![
            KernelArg::Ptr(values_dev),
            KernelArg::Ptr(offsets_dev),
            KernelArg::Ptr(out_dev),
            KernelArg::I32(max_len as i32),
        ],
    );
    let out = read_f32(&dev, out_dev, lengths.len() * d);
    let mut reference = vec![0f64; lengths.len() * d];
    for (b, len) in lengths.iter().enumerate() {
        let start = offsets[b] as usize;
        for row in start..start + (*len).min(max_len) {
            for c in 0..d {
                reference[b * d + c] += f64::from(values[row * d + c]);
            }
        }
    }
    // The empty sequence's row is exactly zero (written, not left poisoned).
    assert!(
        out[..d].iter().all(|&v| v == 0.0),
        "empty sequence: {:?}",
        &out[..4]
    );
    let err = rel_err(&out, &reference);
    assert!(err <= F32_TOL, "jagged sum relative error {err}");
}

#[test]
fn matmul_f16_wide_matches_f64_reference() {
    let fx = Fixture::load("matmul_f16_wide");
    // One 128x128 program of 8 warps, 4 K steps, 48 KiB of dynamic shared memory.
    let (m, n, k) = (128usize, 128usize, 128usize);
    assert_eq!((fx.block, fx.shared_bytes), (256, 49152));
    let mut rng = Rng::new(0x5eed_000a);
    let a = to_f16(&rng.vec(m * k, -1.0, 1.0));
    let b = to_f16(&rng.vec(k * n, -1.0, 1.0));
    let mut dev = Device::new();
    let a_dev = dev.upload(&f16_bytes(&a));
    let b_dev = dev.upload(&f16_bytes(&b));
    let c_dev = poisoned(&mut dev, m * n * 2);
    run(
        &mut dev,
        &fx,
        [1, 1, 1],
        vec![
            KernelArg::Ptr(a_dev),
            KernelArg::Ptr(b_dev),
            KernelArg::Ptr(c_dev),
            KernelArg::I32(k as i32),
        ],
    );
    let c = f16s(&dev.read(c_dev, m * n * 2).expect("read back output"));
    let f = |v: &[half::f16]| -> Vec<f64> { v.iter().map(|x| f64::from(x.to_f32())).collect() };
    let reference = matmul_reference(&f(&a), &f(&b), m, n, k);
    let err = rel_err(&c, &reference);
    assert!(err <= F16_TOL, "f16 matmul relative error {err}");
}
