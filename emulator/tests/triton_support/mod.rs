//! Shared helpers of the Triton fixture tests (`triton.rs`, `planted.rs`): loading a
//! fixture and its metadata, a seeded RNG, bf16 conversion, byte packing and the
//! relative-error norm used by every tolerance.

#![allow(dead_code)] // Each test file uses a different subset.

use jagged_emu::tensormap::{
    TensorMapDataType, TensorMapFloatOobFill, TensorMapInterleave, TensorMapL2Promotion,
    TensorMapSwizzle,
};
use jagged_emu::{Device, DevicePtr, KernelArg, LaunchConfig, Module, TensorMap};
use std::path::PathBuf;

/// A Triton kernel from `emulator/fixtures/`: its PTX text and launch metadata.
pub struct Fixture {
    /// The PTX text as Triton wrote it.
    pub ptx: String,
    /// The entry name.
    pub kernel: String,
    /// Threads per CTA (32 * num_warps).
    pub block: u32,
    /// Dynamic shared memory Triton launches the kernel with.
    pub shared_bytes: u32,
    /// Number of PTX parameters (user arguments plus Triton's trailing scratch pointers).
    pub param_count: usize,
    /// Number of Triton's trailing scratch-pointer parameters.
    pub scratch_params: usize,
    /// The JSON metadata as written.
    pub meta: String,
}

impl Fixture {
    /// Loads `emulator/fixtures/NAME.ptx` and `NAME.json`.
    pub fn load(name: &str) -> Fixture {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let ptx = std::fs::read_to_string(dir.join(format!("{name}.ptx"))).expect("fixture .ptx");
        let meta =
            std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("fixture .json");
        let kernel = json_string(&meta, "kernel");
        let shared_bytes = json_number(&meta, "shared_bytes") as u32;
        let block = json_number(&meta, "num_warps") as u32 * 32;
        let param_count = meta.matches("\"ptx_type\"").count();
        let scratch_params = meta.matches("\"triton_scratch\"").count();
        Fixture {
            ptx,
            kernel,
            block,
            shared_bytes,
            param_count,
            scratch_params,
            meta,
        }
    }

    /// The PTX arguments of the host-side tensor descriptor `arg` over the row-major
    /// [rows, cols] tensor at `ptr`, as Triton's launcher passes them: the 128-byte map
    /// (built from the fixture's `tensor_maps` entry like `fill_tma_descriptor_tiled`),
    /// then the shape (i32 x 2) and the strides in elements (i64 x 2).
    pub fn desc_args(&self, arg: &str, ptr: DevicePtr, [rows, cols]: [usize; 2]) -> [KernelArg; 5] {
        let maps = json_after_key(&self.meta, "tensor_maps");
        let entry = maps
            .split("\"arg\":")
            .find(|e| e.trim_start().starts_with(&format!("\"{arg}\"")))
            .unwrap_or_else(|| panic!("{}: no tensor map for {arg}", self.kernel));
        let block = json_after_key(entry, "block");
        let block: Vec<u32> = block[..block.find(']').expect("block list")]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("block entry"))
            .collect();
        let data_type = match json_number(entry, "data_type") {
            6 => TensorMapDataType::Float16,
            7 => TensorMapDataType::Float32,
            9 => TensorMapDataType::Bfloat16,
            t => panic!("{arg}: data type {t}"),
        };
        let swizzle = match json_number(entry, "swizzle") {
            0 => TensorMapSwizzle::None,
            1 => TensorMapSwizzle::B32,
            2 => TensorMapSwizzle::B64,
            _ => TensorMapSwizzle::B128,
        };
        let elem = u64::from(data_type.size());
        let map = TensorMap::encode_tiled(
            data_type,
            2,
            ptr.0,
            &[cols as u64, rows as u64],
            &[cols as u64 * elem],
            &[block[1], block[0]],
            &[1, 1],
            TensorMapInterleave::None,
            swizzle,
            TensorMapL2Promotion::L2_128B,
            TensorMapFloatOobFill::None,
        )
        .unwrap_or_else(|e| panic!("{}: tensor map {arg}: {e}", self.kernel));
        [
            KernelArg::TensorMap(map),
            KernelArg::I32(rows as i32),
            KernelArg::I32(cols as i32),
            KernelArg::I64(cols as i64),
            KernelArg::I64(1),
        ]
    }

    /// Parses this fixture's PTX (or an edited copy of it).
    pub fn module(&self, ptx: &str) -> Module {
        match Module::parse(ptx) {
            Ok(m) => m,
            Err(e) => panic!("{}: PTX does not parse: {e}", self.kernel),
        }
    }

    /// The PTX arguments for the user arguments `args`: Triton's trailing scratch
    /// pointers are appended as null, as Triton's launcher passes them when unused.
    pub fn args(&self, mut args: Vec<KernelArg>) -> Vec<KernelArg> {
        args.extend((0..self.scratch_params).map(|_| KernelArg::U64(0)));
        assert_eq!(
            args.len(),
            self.param_count,
            "{}: argument count",
            self.kernel
        );
        args
    }

    /// The launch configuration for a 1- or 2-D grid of this kernel.
    pub fn config(&self, grid: [u32; 3]) -> LaunchConfig {
        LaunchConfig {
            grid,
            block: [self.block, 1, 1],
            dynamic_shared_bytes: self.shared_bytes,
        }
    }
}

/// The value of `"key": "value"` in the flat JSON written by gen_triton.py.
fn json_string(json: &str, key: &str) -> String {
    let after = json_after_key(json, key);
    let start = after.find('"').expect("string value") + 1;
    let len = after[start..].find('"').expect("closing quote");
    after[start..start + len].to_string()
}

/// The value of `"key": number` in the flat JSON written by gen_triton.py.
fn json_number(json: &str, key: &str) -> u64 {
    let after = json_after_key(json, key);
    let digits: String = after
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().expect("numeric value")
}

fn json_after_key<'a>(json: &'a str, key: &str) -> &'a str {
    let pattern = format!("\"{key}\":");
    let at = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in fixture json"));
    &json[at + pattern.len()..]
}

/// xorshift64*: a tiny deterministic RNG so inputs are the same on every run.
pub struct Rng(u64);

impl Rng {
    /// A generator from a nonzero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// `n` values uniform in [lo, hi).
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Rounds to the nearest bf16 (ties to even), as Triton's host-side conversion does.
pub fn to_bf16(values: &[f32]) -> Vec<half::bf16> {
    values.iter().map(|&v| half::bf16::from_f32(v)).collect()
}

/// Little-endian bytes of bf16 values.
pub fn bf16_bytes(values: &[half::bf16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Rounds to the nearest f16 (ties to even).
pub fn to_f16(values: &[f32]) -> Vec<half::f16> {
    values.iter().map(|&v| half::f16::from_f32(v)).collect()
}

/// Little-endian bytes of f16 values.
pub fn f16_bytes(values: &[half::f16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// f16 values from little-endian bytes, widened to f32.
pub fn f16s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

/// The user arguments of the `matmul_bf16`/`matmul_tf32` fixtures: pointers to row-major
/// `a [m, k]`, `b [k, n]` and `c [m, n]`, the sizes and the row strides.
pub fn matmul_args([a, b, c]: [DevicePtr; 3], m: usize, n: usize, k: usize) -> Vec<KernelArg> {
    vec![
        KernelArg::Ptr(a),
        KernelArg::Ptr(b),
        KernelArg::Ptr(c),
        KernelArg::I32(m as i32),
        KernelArg::I32(n as i32),
        KernelArg::I32(k as i32),
        KernelArg::I32(k as i32),
        KernelArg::I32(n as i32),
        KernelArg::I32(n as i32),
    ]
}

/// The user arguments of the `attention_fwd` fixture: pointers to `q`, `k`, `v` and `o`
/// (rows of `d` elements), the key count, the score scale and the four row strides.
pub fn attention_args(
    [q, k, v, o]: [DevicePtr; 4],
    keys: usize,
    scale: f32,
    d: usize,
) -> Vec<KernelArg> {
    vec![
        KernelArg::Ptr(q),
        KernelArg::Ptr(k),
        KernelArg::Ptr(v),
        KernelArg::Ptr(o),
        KernelArg::I32(keys as i32),
        KernelArg::F32(scale),
        KernelArg::I32(d as i32),
        KernelArg::I32(d as i32),
        KernelArg::I32(d as i32),
        KernelArg::I32(d as i32),
    ]
}

/// The f64 product of row-major `a [m, k]` and `b [k, n]`.
pub fn matmul_reference(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    c
}

/// Little-endian bytes of f32 values.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// f32 values from little-endian bytes.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A buffer of `bytes` bytes filled with 0xFF (a NaN for every float type), so that
/// an element the kernel does not write fails the comparison.
pub fn poisoned(dev: &mut Device, bytes: usize) -> DevicePtr {
    dev.upload(&vec![0xFF; bytes])
}

/// `||out - reference|| / ||reference||` (2-norms, in f64); infinite if any output is NaN.
pub fn rel_err(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len());
    if out.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = out
        .iter()
        .zip(reference)
        .map(|(&o, &r)| (f64::from(o) - r).powi(2))
        .sum();
    let norm: f64 = reference.iter().map(|r| r * r).sum();
    (diff / norm).sqrt()
}

// ------------------------------------------------------------------------------------------
// Helpers of the conformance corpus (`triton_corpus.rs`): element types, jagged layouts.

/// An element type of a kernel buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// `values` rounded to this type (nearest, ties to even) and widened back to f64: the
    /// values the kernel sees, for the reference.
    pub fn round(self, values: &[f32]) -> Vec<f64> {
        self.decode(&self.encode(values))
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// Little-endian bytes of `values` rounded to this type.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F32 => f32_bytes(values),
            Dtype::F16 => f16_bytes(&to_f16(values)),
            Dtype::Bf16 => bf16_bytes(&to_bf16(values)),
        }
    }

    /// Elements of this type from little-endian bytes, widened to f32.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Dtype::F32 => f32s(bytes),
            Dtype::F16 => f16s(bytes),
            Dtype::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        }
    }

    /// Uploads `values` rounded to this type; returns the pointer and the rounded values.
    pub fn upload(self, dev: &mut Device, values: &[f32]) -> (DevicePtr, Vec<f64>) {
        (dev.upload(&self.encode(values)), self.round(values))
    }

    /// Reads `n` elements of this type at `ptr`, widened to f32.
    pub fn read(self, dev: &Device, ptr: DevicePtr, n: usize) -> Vec<f32> {
        self.decode(&dev.read(ptr, n * self.size()).expect("read back output"))
    }
}

/// Little-endian bytes of i32 values.
pub fn i32_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// i32 values from little-endian bytes.
pub fn i32s(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The offsets `[B + 1]` of a jagged tensor whose sequences have `lengths` rows.
pub fn jagged_offsets(lengths: &[usize]) -> Vec<i32> {
    let mut offsets = vec![0i32];
    for &len in lengths {
        offsets.push(offsets[offsets.len() - 1] + len as i32);
    }
    offsets
}
