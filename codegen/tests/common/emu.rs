//! Runs a [`CompiledKernel`] in the PTX emulator from its launch metadata
//! alone (the way a backend would), with outputs and scratch poisoned.

use jagged_codegen::kernel::Swizzle;
use jagged_codegen::{CompiledKernel, DType, ParamBinding, RunSizes, TensorMapBinding};
use jagged_emu::tensormap::{
    TensorMapDataType, TensorMapFloatOobFill, TensorMapInterleave, TensorMapL2Promotion,
    TensorMapSwizzle,
};
use jagged_emu::{Device, DevicePtr, KernelArg, LaunchConfig, Module, TensorMap};
use jagged_ir::{DenseTensor, Dim, Graph};

/// Poison byte: 0xFF.. is NaN for f32/f16/bf16 and -1 for integers.
pub const POISON: u8 = 0xFF;

/// Runs every launch; returns the bytes of each output. `attrs` gives the
/// float attributes by name.
pub fn run(
    compiled: &CompiledKernel,
    inputs: &[Vec<u8>],
    sizes: RunSizes,
    attrs: &[(&str, f32)],
) -> Vec<Vec<u8>> {
    run_capped(compiled, inputs, sizes, attrs, u32::MAX)
}

/// [`run`] with every grid clamped to at most `max_grid` CTAs: kernels loop
/// grid-stride, so any grid must give the same result.
pub fn run_capped(
    compiled: &CompiledKernel,
    inputs: &[Vec<u8>],
    sizes: RunSizes,
    attrs: &[(&str, f32)],
    max_grid: u32,
) -> Vec<Vec<u8>> {
    try_run_capped(compiled, inputs, sizes, attrs, max_grid).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_capped`] that returns a failed launch (an emulator error or a
/// checker finding) as its message instead of panicking: for tests of
/// planted bugs.
pub fn try_run_capped(
    compiled: &CompiledKernel,
    inputs: &[Vec<u8>],
    sizes: RunSizes,
    attrs: &[(&str, f32)],
    max_grid: u32,
) -> Result<Vec<Vec<u8>>, String> {
    let module = Module::parse(&compiled.ptx)
        .unwrap_or_else(|e| panic!("emulator rejected the PTX: {e}\n{}", compiled.ptx));
    let mut dev = Device::new();
    let inputs: Vec<DevicePtr> = inputs.iter().map(|bytes| dev.upload(bytes)).collect();
    let poisoned = |dev: &mut Device, len: usize| dev.upload(&vec![POISON; len]);
    let outputs: Vec<(DevicePtr, usize)> = compiled
        .outputs
        .iter()
        .map(|o| {
            let len = o.elems.eval(&sizes) as usize * elem_size(o.elem);
            (poisoned(&mut dev, len), len)
        })
        .collect();
    let scratch: Vec<DevicePtr> = compiled
        .scratch
        .iter()
        .map(|s| poisoned(&mut dev, s.bytes.eval(&sizes) as usize))
        .collect();
    for launch in &compiled.launches {
        let args: Vec<KernelArg> = launch
            .params
            .iter()
            .map(|p| match p {
                ParamBinding::Input(i) => KernelArg::Ptr(inputs[*i]),
                ParamBinding::Output(i) => KernelArg::Ptr(outputs[*i].0),
                ParamBinding::Scratch(i) => KernelArg::Ptr(scratch[*i]),
                ParamBinding::Size(e) => KernelArg::U64(e.eval(&sizes)),
                ParamBinding::FloatAttr(name) => KernelArg::F32(
                    attrs
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or_else(|| panic!("attribute {name} not given"), |&(_, v)| v),
                ),
                ParamBinding::TensorMap(map) => tensor_map(map, inputs[map.input], &sizes),
            })
            .collect();
        let config = LaunchConfig {
            grid: [launch.grid.eval(&sizes).min(max_grid), 1, 1],
            block: launch.block_dims(),
            dynamic_shared_bytes: launch.dynamic_shared_bytes,
        };
        dev.launch(&module, &launch.entry, &config, &args)
            .map_err(|e| format!("launch of {} ({sizes:?}) failed: {e}", launch.entry))?;
    }
    Ok(outputs
        .iter()
        .map(|&(ptr, len)| dev.read(ptr, len).expect("reading an output back"))
        .collect())
}

/// The tensor map `map` over the input at `address`, encoded as the
/// runtime's launcher does (packed strides, element strides 1, zero fill;
/// `eval_dims` counts an empty dimension as 1).
fn tensor_map(map: &TensorMapBinding, address: DevicePtr, sizes: &RunSizes) -> KernelArg {
    let data_type = match map.dtype {
        DType::BF16 => TensorMapDataType::Bfloat16,
        DType::F16 => TensorMapDataType::Float16,
        DType::F32 => TensorMapDataType::Float32,
        other => panic!("a tensor map of {other}"),
    };
    let swizzle = match map.swizzle {
        Swizzle::None => TensorMapSwizzle::None,
        Swizzle::B32 => TensorMapSwizzle::B32,
        Swizzle::B64 => TensorMapSwizzle::B64,
        Swizzle::B128 => TensorMapSwizzle::B128,
    };
    let dims = map.eval_dims(sizes);
    let encoded = TensorMap::encode_tiled(
        data_type,
        dims.len() as u32,
        address.0,
        &dims,
        &map.packed_strides(&dims),
        &map.box_dim,
        &vec![1; dims.len()],
        TensorMapInterleave::None,
        swizzle,
        TensorMapL2Promotion::None,
        TensorMapFloatOobFill::None,
    )
    .unwrap_or_else(|e| panic!("tensor map {map}: {e}"));
    KernelArg::TensorMap(encoded)
}

/// Bytes per element.
pub fn elem_size(e: DType) -> usize {
    e.size()
}

/// Rounds `x` to `dtype` (the values a kernel of that dtype sees).
pub fn round_to(x: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => f64::from(x as f32),
        DType::F16 => half::f16::from_f64(x).to_f64(),
        DType::BF16 => half::bf16::from_f64(x).to_f64(),
        _ => x,
    }
}

/// Encodes floats as `dtype` bytes.
pub fn encode_floats(values: &[f64], dtype: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * elem_size(dtype));
    for &v in values {
        match dtype {
            DType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            other => panic!("not a float dtype: {other}"),
        }
    }
    out
}

/// Decodes `dtype` bytes to floats.
pub fn decode_floats(bytes: &[u8], dtype: DType) -> Vec<f64> {
    match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        other => panic!("not a float dtype: {other}"),
    }
}

/// Encodes integers as i32 / i64 bytes.
pub fn encode_ints(values: &[i64], elem: DType) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        match elem {
            DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&v.to_le_bytes()),
            DType::U8 => out.push(v as u8),
            other => panic!("not an integer dtype: {other}"),
        }
    }
    out
}

/// Decodes i32 / i64 bytes.
pub fn decode_ints(bytes: &[u8], elem: DType) -> Vec<i64> {
    match elem {
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        other => panic!("not an index dtype: {other}"),
    }
}

/// `||out - ref|| / ||ref||` (absolute when the reference is zero); NaN
/// anywhere in `out` gives infinity.
pub fn rel_l2(out: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "output length");
    if out.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff: f64 = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = reference.iter().map(|b| b * b).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}

/// DESIGN.md tolerance for float outputs computed from `dtype` inputs.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

/// A small deterministic PRNG (xorshift64*), so tests need no extra crates.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `[-1, 1)` times `scale`.
    pub fn float(&mut self, scale: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (2.0 * u - 1.0) * scale
    }
}

/// The run sizes of sequences of `lengths` under `max_len`.
pub fn run_sizes(lengths: &[usize], max_len: usize) -> RunSizes {
    RunSizes {
        batch: lengths.len() as u64,
        total_rows: lengths.iter().sum::<usize>() as u64,
        max_len: max_len as u64,
    }
}

/// Random inputs for every input of `graph` on sequences of `lengths`, by name and
/// type: offsets and lengths from `lengths`, a 0/1 `mask`, and values uniform in
/// `[-amplitude, amplitude)` rounded to their dtype.
pub fn inputs_for(
    graph: &Graph,
    lengths: &[usize],
    max_len: usize,
    amplitude: f64,
    rng: &mut Rng,
) -> Vec<(String, DenseTensor)> {
    let batch = lengths.len();
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets.last().copied().unwrap_or(0.0) + l as f64);
    }
    graph
        .inputs()
        .map(|(_, name, ty)| {
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Ragged(_) => total,
                    Dim::Batch => batch,
                    Dim::BatchPlusOne => batch + 1,
                    Dim::MaxLen => max_len,
                    Dim::Static(n) => *n,
                })
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = match name {
                "offsets" => offsets.clone(),
                "lengths" => lengths.iter().map(|&l| l as f64).collect(),
                // Set rows hold any nonzero byte: a kernel testing `== 1` fails.
                "mask" => (0..n)
                    .map(|_| match rng.below(2) {
                        0 => 0.0,
                        _ => 1.0 + rng.below(255) as f64,
                    })
                    .collect(),
                _ => (0..n)
                    .map(|_| round_to(rng.float(amplitude), ty.dtype))
                    .collect(),
            };
            let tensor = DenseTensor::from_f64(ty.dtype, shape, &values).expect("input tensor");
            (name.to_string(), tensor)
        })
        .collect()
}

/// The device bytes of a host tensor: floats in their dtype, indices as i32/i64,
/// masks (u8 / bool) one byte per element.
pub fn tensor_bytes(t: &DenseTensor) -> Vec<u8> {
    let values = t.to_f64();
    let dtype = t.dtype();
    if dtype.is_float() {
        encode_floats(&values, dtype)
    } else {
        let ints: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        let elem = if dtype.is_index() { dtype } else { DType::U8 };
        encode_ints(&ints, elem)
    }
}
