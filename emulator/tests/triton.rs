//! PTX written by another compiler: the Triton fixtures in `emulator/fixtures/` run in the
//! emulator on seeded random inputs and are compared with an f64 reference computed here.
//! Outputs are poisoned (0xFF bytes) before each run so an unwritten element fails.

mod triton_support;

use jagged_emu::{Device, DevicePtr, KernelArg, LaunchStats};
use triton_support::{Fixture, Rng, bf16_bytes, f32_bytes, f32s, poisoned, rel_err, to_bf16};

/// Tolerance for bf16 inputs with f32 accumulation (DESIGN.md).
const BF16_TOL: f64 = 1e-2;
/// Tolerance for f32 math (DESIGN.md).
const F32_TOL: f64 = 1e-5;

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

#[test]
fn fixtures_parse_and_name_their_kernel() {
    for name in ["matmul_bf16", "softmax_rows", "sum_atomic", "attention_fwd"] {
        let fx = Fixture::load(name);
        let module = fx.module(&fx.ptx);
        let names: Vec<&str> = module.kernel_names().collect();
        assert_eq!(names, vec![fx.kernel.as_str()], "{name}");
    }
}

#[test]
fn matmul_bf16_matches_f64_reference() {
    let fx = Fixture::load("matmul_bf16");
    // M is not a multiple of the 64-row tile: the last tile's loads are masked
    // (cp.async with src-size 0) and its stores predicated off.
    let (m, n, k) = (96usize, 128usize, 192usize);
    let mut rng = Rng::new(0x5eed_0001);
    let a = to_bf16(&rng.vec(m * k, -1.0, 1.0));
    let b = to_bf16(&rng.vec(k * n, -1.0, 1.0));
    let mut dev = Device::new();
    let a_dev = dev.upload(&bf16_bytes(&a));
    let b_dev = dev.upload(&bf16_bytes(&b));
    let c_dev = poisoned(&mut dev, m * n * 4);
    run(
        &mut dev,
        &fx,
        [m.div_ceil(64) as u32, (n / 64) as u32, 1],
        vec![
            KernelArg::Ptr(a_dev),
            KernelArg::Ptr(b_dev),
            KernelArg::Ptr(c_dev),
            KernelArg::I32(m as i32),
            KernelArg::I32(n as i32),
            KernelArg::I32(k as i32),
            KernelArg::I32(k as i32),
            KernelArg::I32(n as i32),
            KernelArg::I32(n as i32),
        ],
    );
    let mut reference = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            reference[i * n + j] = (0..k)
                .map(|p| f64::from(a[i * k + p].to_f32()) * f64::from(b[p * n + j].to_f32()))
                .sum();
        }
    }
    let c = read_f32(&dev, c_dev, m * n);
    let err = rel_err(&c, &reference);
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
        vec![
            KernelArg::Ptr(q_dev),
            KernelArg::Ptr(k_dev),
            KernelArg::Ptr(v_dev),
            KernelArg::Ptr(o_dev),
            KernelArg::I32(keys as i32),
            KernelArg::F32(scale),
            KernelArg::I32(d as i32),
            KernelArg::I32(d as i32),
            KernelArg::I32(d as i32),
            KernelArg::I32(d as i32),
        ],
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
