//! `jagc crosscheck`: runs one PTX kernel on both backends (the CUDA GPU and
//! the emulator) and compares what it wrote: the evidence that the emulator's
//! results stand for the GPU's. `--backends emu` is the dry run for machines
//! without a GPU; `bench/gpu/run_crosscheck.sh` runs it over every fixture.
//!
//! Arguments are written as specs, one per kernel parameter:
//!
//! | spec | kernel argument |
//! |---|---|
//! | `u32:V` `i32:V` `u64:V` `i64:V` `f32:V` `f64:V` | a scalar |
//! | `null` | a `.u64` 0 (Triton's unused scratch pointers) |
//! | `rand:DTYPE:COUNT[:SEED]` | a buffer of COUNT values, floats uniform in [-1, 1), integers in [0, 100) |
//! | `zeros:DTYPE:COUNT` | a zeroed buffer |
//! | `offsets:DTYPE:B:T[:SEED]` | `B + 1` random jagged offsets (i32/i64) from 0 to T, non-decreasing, some sequences empty |
//! | `poison:DTYPE:COUNT` | a buffer of 0xFF bytes (NaN for floats): an element the kernel leaves unwritten fails |
//! | `in:PATH.npy` | a buffer holding the array of an `.npy` file |
//! | `out:PATH.npy:DTYPE:COUNT` | a poisoned buffer, saved to PATH.npy (first backend's result) after the run |
//! | `inout:IN.npy:OUT.npy` | a buffer holding IN.npy, saved to OUT.npy after the run |
//! | `tmap:BUF:DTYPE:DIMS:STRIDES:BOX[:OPTIONS]` | a TMA tensor map (by value, 128 bytes) over the buffer of the earlier argument BUF (1-based) |
//! | `host:BUFFER-SPEC` | a buffer the kernel takes no parameter for (a tensor map's tensor: Triton's host-side descriptors); compared like the others, counted in BUF |
//!
//! Scalars, `in:`, `out:` and `inout:` are the syntax `jagc emu` takes, parsed
//! by the one parser both use ([`jagged::cli::argspec`]; integers also in
//! hex, `u64:0x10`); `tmap:` is parsed by `jagc emu`'s [`TensorMapSpec`] and
//! encoded for each backend by [`Runtime::tensor_map`]: on CUDA by
//! `cuTensorMapEncodeTiled` with the buffer's device address, in the emulator by
//! its encoder. The fields map one to one onto the driver call: DTYPE is
//! `tensorDataType`, the rank is the count of DIMS, DIMS `globalDim` and STRIDES
//! `globalStrides` (bytes, dimensions 1..), BOX `boxDim`, `estrides=` `elementStrides`
//! (default all 1), `swizzle=` `swizzle`, `nan` the `oobFill`; interleave and L2
//! promotion are NONE. Triton's launcher builds a descriptor of a row-major
//! `[R, C]` tensor with block `[BR, BC]` as `DIMS = CxR`, `STRIDES = C * size`,
//! `BOX = BCxBR` (reversed: innermost first), swizzle from its metadata.
//!
//! Every buffer starts from the same bytes on every backend and every
//! repetition; after the run each buffer is compared: integers bit for bit,
//! floats by `||a - b|| / ||b||` against a tolerance, NaN never passing.
//! Exit status 0: all pass; 1: a mismatch; 2: an error.

use crate::emu::TensorMapSpec;
use clap::Args;
use jagged::cli::argspec::KernelArgSpec;
use jagged::cli::npy::{self, NpyArray};
use jagged_ir::TensorData;
use jagged_runtime::{
    BackendKind, DType, DeviceBuffer, KernelArg, LaunchDims, Runtime, RuntimeError, tensor_bytes,
    tensor_data,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Errors of the cross-check: bad specs, files, or a backend failing.
#[derive(Debug, thiserror::Error)]
pub enum CrosscheckError {
    /// An argument spec that does not parse.
    #[error("argument spec {spec:?}: {reason}")]
    BadSpec {
        /// The spec as written.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A command-line option that does not parse.
    #[error("{0}")]
    Usage(String),
    /// A file that cannot be read or written.
    #[error("{0}")]
    File(String),
    /// The runtime failed on one backend.
    #[error("{backend}: {source}")]
    Runtime {
        /// The backend.
        backend: BackendKind,
        /// The error.
        source: RuntimeError,
    },
}

/// Where a buffer's initial contents come from.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferInit {
    /// Pseudo-random values from a seed.
    Random {
        /// The seed.
        seed: u64,
    },
    /// Random jagged offsets ending at `total_rows` (the buffer holds `B + 1`).
    Offsets {
        /// `T`, the last offset.
        total_rows: u64,
        /// The seed.
        seed: u64,
    },
    /// All bytes zero.
    Zeros,
    /// All bytes 0xFF.
    Poison,
    /// The data of an `.npy` file.
    Npy(PathBuf),
}

/// One kernel argument spec.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgSpec {
    /// A scalar passed by value.
    Scalar(KernelArg),
    /// A buffer, its dtype and element count, its initial contents, and where
    /// to save its final contents (for `out:`).
    Buffer {
        /// The element type.
        dtype: DType,
        /// The element count.
        count: usize,
        /// The initial contents.
        init: BufferInit,
        /// Where to save the result as `.npy`.
        save: Option<PathBuf>,
        /// Whether the kernel takes the buffer's address as a parameter (`host:`
        /// buffers it does not: only tensor maps refer to them).
        param: bool,
    },
    /// A tensor map over an earlier buffer argument.
    TensorMap(TensorMapSpec),
}

impl ArgSpec {
    /// Parses one spec (see the module docs).
    pub fn parse(spec: &str) -> Result<ArgSpec, CrosscheckError> {
        let bad = |reason: &str| CrosscheckError::BadSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let number = |text: &str| -> Result<usize, CrosscheckError> {
            text.parse()
                .map_err(|_| bad("the count is not a non-negative integer"))
        };
        let dtype = |text: &str| -> Result<DType, CrosscheckError> {
            DType::from_name(text)
                .ok_or_else(|| bad("unknown dtype (f64 f32 f16 bf16 i32 i64 u8 bool)"))
        };
        let buffer = |dtype, count, init, save| ArgSpec::Buffer {
            dtype,
            count,
            init,
            save,
            param: true,
        };
        match parts.as_slice() {
            ["null"] => Ok(ArgSpec::Scalar(KernelArg::U64(0))),
            ["host", ..] => match ArgSpec::parse(&spec["host:".len()..])? {
                ArgSpec::Buffer {
                    dtype,
                    count,
                    init,
                    save,
                    ..
                } => Ok(ArgSpec::Buffer {
                    dtype,
                    count,
                    init,
                    save,
                    param: false,
                }),
                _ => Err(bad("host: takes a buffer spec")),
            },
            ["tmap", ..] => TensorMapSpec::parse(&spec["tmap:".len()..])
                .map(ArgSpec::TensorMap)
                .map_err(|reason| bad(&reason)),
            ["rand", d, count] => Ok(buffer(
                dtype(d)?,
                number(count)?,
                BufferInit::Random { seed: 1 },
                None,
            )),
            ["rand", d, count, seed] => {
                let seed = seed
                    .parse()
                    .map_err(|_| bad("the seed is not an integer"))?;
                Ok(buffer(
                    dtype(d)?,
                    number(count)?,
                    BufferInit::Random { seed },
                    None,
                ))
            }
            ["offsets", d, batch, total] | ["offsets", d, batch, total, _] => {
                let dtype = dtype(d)?;
                if !dtype.is_index() {
                    return Err(bad("offsets are i32 or i64"));
                }
                let seed = match parts.get(4) {
                    Some(seed) => seed
                        .parse()
                        .map_err(|_| bad("the seed is not an integer"))?,
                    None => 1,
                };
                let total_rows = total
                    .parse()
                    .map_err(|_| bad("T is not a non-negative integer"))?;
                if dtype == DType::I32 && total_rows > i32::MAX as u64 {
                    return Err(bad("T does not fit i32 offsets"));
                }
                let batch = number(batch)?;
                if batch == 0 && total_rows > 0 {
                    return Err(bad("B = 0 sequences hold T = 0 rows"));
                }
                let init = BufferInit::Offsets { total_rows, seed };
                Ok(buffer(dtype, batch + 1, init, None))
            }
            ["zeros", d, count] => Ok(buffer(dtype(d)?, number(count)?, BufferInit::Zeros, None)),
            ["poison", d, count] => Ok(buffer(dtype(d)?, number(count)?, BufferInit::Poison, None)),
            ["null" | "rand" | "offsets" | "zeros" | "poison", ..] => Err(bad(
                "expected null, rand:DTYPE:COUNT[:SEED], zeros:DTYPE:COUNT, \
                 offsets:DTYPE:B:T[:SEED] or poison:DTYPE:COUNT",
            )),
            // Scalars and file buffers: the syntax `jagc emu` shares.
            _ => {
                let shared =
                    spec.parse::<KernelArgSpec>()
                        .map_err(|e| CrosscheckError::BadSpec {
                            spec: e.spec,
                            reason: e.reason,
                        })?;
                let npy_input = |path: PathBuf, save| -> Result<ArgSpec, CrosscheckError> {
                    let array =
                        npy::read(&path).map_err(|e| CrosscheckError::File(e.to_string()))?;
                    let dtype = npy::tensor_dtype(array.dtype)
                        .ok_or_else(|| bad("the .npy dtype has no device dtype"))?;
                    Ok(buffer(dtype, array.len(), BufferInit::Npy(path), save))
                };
                match shared {
                    KernelArgSpec::Scalar(arg) => Ok(ArgSpec::Scalar(arg)),
                    KernelArgSpec::In(path) => npy_input(path, None),
                    KernelArgSpec::InOut { input, output } => npy_input(input, Some(output)),
                    KernelArgSpec::Out { path, dtype, count } => Ok(buffer(
                        npy::tensor_dtype(dtype)
                            .ok_or_else(|| bad("the dtype has no device dtype"))?,
                        count,
                        BufferInit::Poison,
                        Some(path),
                    )),
                }
            }
        }
    }

    /// The initial bytes of a buffer spec.
    fn initial_bytes(&self) -> Result<Option<Vec<u8>>, CrosscheckError> {
        let ArgSpec::Buffer {
            dtype, count, init, ..
        } = self
        else {
            return Ok(None);
        };
        let bytes = count * dtype.size();
        Ok(Some(match init {
            BufferInit::Zeros => vec![0; bytes],
            BufferInit::Poison => vec![0xFF; bytes],
            BufferInit::Random { seed } => random_bytes(*dtype, *count, *seed),
            BufferInit::Offsets { total_rows, seed } => {
                random_offsets(*dtype, *count, *total_rows, *seed)
            }
            BufferInit::Npy(path) => {
                npy::read(path)
                    .map_err(|e| CrosscheckError::File(e.to_string()))?
                    .data
            }
        }))
    }
}

/// SplitMix64: a fixed, portable sequence, so every backend and every run
/// sees the same inputs.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `count` pseudo-random elements: floats uniform in [-1, 1), integers in
/// [0, 100), booleans 0 or 1.
fn random_bytes(dtype: DType, count: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let values: Vec<f64> = (0..count)
        .map(|_| {
            let bits = splitmix64(&mut state);
            if dtype.is_float() {
                // 53 random bits to [0, 1), then to [-1, 1).
                2.0 * ((bits >> 11) as f64 / (1u64 << 53) as f64) - 1.0
            } else if dtype == DType::Bool {
                (bits & 1) as f64
            } else {
                (bits % 100) as f64
            }
        })
        .collect();
    tensor_bytes(&TensorData::from_f64(dtype, &values))
}

/// `count = B + 1` offsets: 0, then `B - 1` sorted random cut points in
/// `[0, T]` (repeats make empty sequences), then `T`.
fn random_offsets(dtype: DType, count: usize, total_rows: u64, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut cuts: Vec<u64> = (1..count.saturating_sub(1))
        .map(|_| splitmix64(&mut state) % (total_rows + 1))
        .collect();
    cuts.sort_unstable();
    let offsets: Vec<f64> = std::iter::once(0)
        .chain(cuts)
        .chain((count > 1).then_some(total_rows))
        .map(|o| o as f64)
        .collect();
    tensor_bytes(&TensorData::from_f64(dtype, &offsets))
}

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Crosscheck {
    /// The PTX text.
    pub ptx: String,
    /// The kernel's entry name.
    pub kernel: String,
    /// Grid, block and dynamic shared memory.
    pub dims: LaunchDims,
    /// One spec per kernel parameter.
    pub args: Vec<ArgSpec>,
    /// Timed launches per backend (the emulator always runs once).
    pub repeats: u32,
}

/// The result of running on one backend.
#[derive(Clone, Debug)]
pub struct BackendRun {
    /// The backend.
    pub backend: BackendKind,
    /// Its device, in words.
    pub device: String,
    /// The time of each timed launch.
    pub times: Vec<Duration>,
    /// Warp instructions (emulator only).
    pub warp_instructions: Option<u64>,
    /// The final bytes of each buffer argument, by argument index.
    pub buffers: Vec<(usize, Vec<u8>)>,
}

impl BackendRun {
    /// The fastest launch.
    pub fn best(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }
}

impl Crosscheck {
    /// Runs the kernel on `backend`: buffers are reset to their initial
    /// bytes before every launch, so repeated launches of a kernel that
    /// accumulates (atomics) leave the result of one launch.
    pub fn run(&self, backend: BackendKind) -> Result<BackendRun, CrosscheckError> {
        let fail = |source| CrosscheckError::Runtime { backend, source };
        let mut runtime = Runtime::with_backend(backend).map_err(fail)?;
        let module = runtime.load_module(&self.ptx).map_err(fail)?;
        let mut buffers: Vec<(usize, DeviceBuffer, Vec<u8>)> = Vec::new();
        let mut args = Vec::with_capacity(self.args.len());
        for (index, spec) in self.args.iter().enumerate() {
            match spec {
                ArgSpec::Scalar(arg) => args.push(*arg),
                ArgSpec::TensorMap(map) => {
                    let buffer = map
                        .buffer_before(index + 1)
                        .and_then(|b| buffers.iter().find(|(i, ..)| *i == b))
                        .ok_or_else(|| CrosscheckError::BadSpec {
                            spec: format!("tmap:{}:...", map.buffer),
                            reason: map.not_a_buffer(),
                        })?;
                    args.push(runtime.tensor_map(&buffer.1, &map.map).map_err(fail)?);
                }
                ArgSpec::Buffer { dtype, param, .. } => {
                    let bytes = spec.initial_bytes()?.unwrap_or_default();
                    let buffer = runtime.upload_bytes(*dtype, &bytes).map_err(fail)?;
                    if *param {
                        args.push(buffer.arg());
                    }
                    buffers.push((index, buffer, bytes));
                }
            }
        }
        let repeats = match backend {
            BackendKind::Emu => 1,
            BackendKind::Cuda => self.repeats.max(1),
        };
        let mut times = Vec::new();
        let mut warp_instructions = None;
        for repeat in 0..repeats {
            if repeat > 0 {
                for (_, buffer, bytes) in &buffers {
                    runtime.write_bytes(buffer, bytes).map_err(fail)?;
                }
            }
            let timing = runtime
                .launch_timed(module, &self.kernel, &self.dims, &args)
                .map_err(fail)?;
            times.push(timing.elapsed);
            warp_instructions = timing.warp_instructions;
        }
        let buffers = buffers
            .iter()
            .map(|(index, buffer, _)| Ok((*index, runtime.download_bytes(buffer).map_err(fail)?)))
            .collect::<Result<Vec<_>, CrosscheckError>>()?;
        Ok(BackendRun {
            backend,
            device: runtime.device_name(),
            times,
            warp_instructions,
            buffers,
        })
    }

    /// Saves the `out:` buffers of `run` as `.npy` files.
    pub fn save_outputs(&self, run: &BackendRun) -> Result<(), CrosscheckError> {
        for (index, bytes) in &run.buffers {
            if let ArgSpec::Buffer {
                dtype,
                count,
                save: Some(path),
                ..
            } = &self.args[*index]
            {
                let array = NpyArray {
                    dtype: npy::npy_dtype(*dtype),
                    shape: vec![*count],
                    data: bytes.clone(),
                };
                npy::write(path, &array).map_err(|e| CrosscheckError::File(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Saves every buffer of `run` as `DIR/argINDEX.npy` (a reference for
    /// [`Crosscheck::load_reference`] on a machine without a GPU).
    pub fn save_all(&self, run: &BackendRun, dir: &Path) -> Result<(), CrosscheckError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CrosscheckError::File(format!("{}: {e}", dir.display())))?;
        for (index, bytes) in &run.buffers {
            if let ArgSpec::Buffer { dtype, count, .. } = &self.args[*index] {
                let array = NpyArray {
                    dtype: npy::npy_dtype(*dtype),
                    shape: vec![*count],
                    data: bytes.clone(),
                };
                npy::write(dir.join(format!("arg{index}.npy")), &array)
                    .map_err(|e| CrosscheckError::File(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The buffers saved by [`Crosscheck::save_all`], as a run to compare with.
    pub fn load_reference(&self, dir: &Path) -> Result<BackendRun, CrosscheckError> {
        let mut buffers = Vec::new();
        for (index, spec) in self.args.iter().enumerate() {
            if let ArgSpec::Buffer { dtype, count, .. } = spec {
                let path = dir.join(format!("arg{index}.npy"));
                let array = npy::read(&path).map_err(|e| CrosscheckError::File(e.to_string()))?;
                if array.data.len() != count * dtype.size() {
                    return Err(CrosscheckError::File(format!(
                        "{}: {} bytes, the argument has {count} x {dtype}",
                        path.display(),
                        array.data.len()
                    )));
                }
                buffers.push((index, array.data));
            }
        }
        Ok(BackendRun {
            backend: BackendKind::Cuda,
            device: format!("saved outputs in {}", dir.display()),
            times: Vec::new(),
            warp_instructions: None,
            buffers,
        })
    }

    /// Compares every buffer of `run` with `reference`'s.
    pub fn compare(
        &self,
        run: &BackendRun,
        reference: &BackendRun,
        tolerance: f64,
    ) -> Vec<BufferComparison> {
        run.buffers
            .iter()
            .zip(&reference.buffers)
            .filter_map(|((index, got), (_, want))| match &self.args[*index] {
                ArgSpec::Buffer { dtype, .. } => {
                    Some(BufferComparison::new(*index, *dtype, got, want, tolerance))
                }
                ArgSpec::Scalar(_) | ArgSpec::TensorMap(_) => None,
            })
            .collect()
    }
}

/// How one buffer differs between two backends.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferComparison {
    /// The argument index.
    pub index: usize,
    /// The element type.
    pub dtype: DType,
    /// The element count.
    pub count: usize,
    /// Elements whose bits differ.
    pub differing: usize,
    /// NaN elements in either buffer.
    pub nans: usize,
    /// The largest absolute difference (floats).
    pub max_abs: f64,
    /// `||got - want|| / ||want||` (floats; `||got - want||` when `want` is all zero).
    pub rel_l2: f64,
    /// Whether the buffer passes: integers bit for bit, floats within the
    /// tolerance with no NaN.
    pub pass: bool,
}

impl BufferComparison {
    fn new(
        index: usize,
        dtype: DType,
        got: &[u8],
        want: &[u8],
        tolerance: f64,
    ) -> BufferComparison {
        let size = dtype.size();
        let is_float = dtype.is_float();
        let as_f64 = |bytes: &[u8]| {
            let whole = &bytes[..bytes.len() - bytes.len() % size];
            tensor_data("buffer", dtype, whole).map_or_else(|_| Vec::new(), |data| data.to_f64())
        };
        let differing = got
            .chunks_exact(size)
            .zip(want.chunks_exact(size))
            .filter(|(g, w)| g != w)
            .count();
        let mut nans = 0;
        let (mut max_abs, mut diff_sq, mut want_sq) = (0.0f64, 0.0f64, 0.0f64);
        for (g, w) in as_f64(got).into_iter().zip(as_f64(want)) {
            if is_float && (g.is_nan() || w.is_nan()) {
                nans += 1;
                continue;
            }
            max_abs = max_abs.max((g - w).abs());
            diff_sq += (g - w) * (g - w);
            want_sq += w * w;
        }
        let rel_l2 = if want_sq > 0.0 {
            (diff_sq / want_sq).sqrt()
        } else {
            diff_sq.sqrt()
        };
        let pass = got.len() == want.len()
            && if is_float {
                nans == 0 && rel_l2 <= tolerance
            } else {
                differing == 0
            };
        BufferComparison {
            index,
            dtype,
            count: want.len() / size,
            differing,
            nans,
            max_abs,
            rel_l2,
            pass,
        }
    }
}

impl fmt::Display for BufferComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arg {} {} x {}: {} ({} elements differ in bits, {} NaN, max |diff| {:.3e}, rel l2 {:.3e})",
            self.index,
            self.dtype,
            self.count,
            if self.pass { "PASS" } else { "FAIL" },
            self.differing,
            self.nans,
            self.max_abs,
            self.rel_l2
        )
    }
}

/// Arguments of `jagc crosscheck`.
#[derive(Args)]
pub struct CrosscheckArgs {
    /// CTAs in the grid: X, X,Y or X,Y,Z.
    #[arg(long, value_parser = parse_dims, default_value = "1")]
    pub grid: [u32; 3],
    /// Threads per CTA: X, X,Y or X,Y,Z.
    #[arg(long, value_parser = parse_dims, default_value = "1")]
    pub block: [u32; 3],
    /// Dynamic shared memory per CTA, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub shared: u32,
    /// The backends, in order (cuda, emu); every buffer is compared with the
    /// first backend's.
    #[arg(long, value_delimiter = ',', value_parser = parse_backend,
          default_value = "cuda,emu")]
    pub backends: Vec<BackendKind>,
    /// The float tolerance on `||a - b|| / ||b||`.
    #[arg(long = "tol", value_name = "REL", default_value_t = 1e-5)]
    pub tolerance: f64,
    /// Timed launches per GPU backend (the emulator always runs once).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub repeat: u32,
    /// Save the first backend's buffers as DIR/argN.npy.
    #[arg(long, value_name = "DIR")]
    pub save_dir: Option<PathBuf>,
    /// Compare every backend with buffers saved by --save-dir instead.
    #[arg(long, value_name = "DIR")]
    pub expect_dir: Option<PathBuf>,
    /// The PTX file.
    pub ptx_file: PathBuf,
    /// The kernel's entry name.
    pub kernel: String,
    /// A kernel argument, in parameter order: u32:V i32:V u64:V i64:V f32:V f64:V
    /// null rand:DTYPE:COUNT(:SEED) zeros:DTYPE:COUNT offsets:i32|i64:B:T(:SEED)
    /// poison:DTYPE:COUNT in:PATH.npy out:PATH.npy:DTYPE:COUNT inout:IN.npy:OUT.npy (a part in parentheses is optional).
    #[arg(value_name = "ARG")]
    pub args: Vec<String>,
}

/// Parses `X[,Y[,Z]]` into three dimensions (missing ones are 1).
fn parse_dims(text: &str) -> Result<[u32; 3], String> {
    let mut dims = [1u32; 3];
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > 3 {
        return Err(format!("{text}: expected X[,Y[,Z]]"));
    }
    for (dim, part) in dims.iter_mut().zip(&parts) {
        *dim = part
            .trim()
            .parse()
            .map_err(|_| format!("{text}: {part:?} is not a count"))?;
    }
    Ok(dims)
}

/// Parses one backend name of `--backends`.
fn parse_backend(name: &str) -> Result<BackendKind, String> {
    name.parse().map_err(|e: RuntimeError| e.to_string())
}

impl CrosscheckArgs {
    /// The check the arguments describe: reads the PTX file and parses the specs.
    pub fn check(&self) -> Result<Crosscheck, CrosscheckError> {
        let ptx = std::fs::read_to_string(&self.ptx_file)
            .map_err(|e| CrosscheckError::File(format!("{}: {e}", self.ptx_file.display())))?;
        let args = self
            .args
            .iter()
            .map(|s| ArgSpec::parse(s))
            .collect::<Result<_, _>>()?;
        Ok(Crosscheck {
            ptx,
            kernel: self.kernel.clone(),
            dims: LaunchDims {
                grid: self.grid,
                block: self.block,
                dynamic_shared_bytes: self.shared,
            },
            args,
            repeats: self.repeat,
        })
    }
}

/// Runs `jagc crosscheck`: 0 when every buffer passes, 1 on a mismatch, 2 on
/// an error (printed to stderr).
pub fn run(args: CrosscheckArgs) -> ExitCode {
    match check_and_compare(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("jagc crosscheck: {err}");
            ExitCode::from(2)
        }
    }
}

/// Runs the check; `Ok(false)` when a buffer differs beyond the tolerance.
fn check_and_compare(options: &CrosscheckArgs) -> Result<bool, CrosscheckError> {
    let check = &options.check()?;
    println!(
        "kernel {}: grid {:?} block {:?} shared {} B",
        check.kernel, check.dims.grid, check.dims.block, check.dims.dynamic_shared_bytes
    );
    let mut runs = Vec::new();
    for &backend in &options.backends {
        let run = check.run(backend)?;
        let instructions = run
            .warp_instructions
            .map(|n| format!(", {n} warp instructions"))
            .unwrap_or_default();
        println!(
            "{backend:<4} on {}: best {:.3} ms of {} launch(es){instructions}",
            run.device,
            run.best().as_secs_f64() * 1e3,
            run.times.len()
        );
        if runs.is_empty() {
            // Saved before the other backends run, so that a failure there
            // still leaves the first backend's results.
            check.save_outputs(&run)?;
            if let Some(dir) = &options.save_dir {
                check.save_all(&run, dir)?;
            }
        }
        runs.push(run);
    }
    let Some(first) = runs.first() else {
        return Err(CrosscheckError::Usage(
            "--backends names no backend".to_string(),
        ));
    };
    let (reference, others) = match &options.expect_dir {
        Some(dir) => (check.load_reference(dir)?, &runs[..]),
        None => (first.clone(), &runs[1..]),
    };
    let reference = &reference;
    let mut pass = true;
    for run in others {
        for comparison in check.compare(run, reference, options.tolerance) {
            println!("{} vs {}: {comparison}", run.backend, reference.device);
            pass &= comparison.pass;
        }
    }
    if others.is_empty() {
        println!("single backend: nothing compared");
    }
    println!("RESULT {}", if pass { "PASS" } else { "FAIL" });
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            ArgSpec::parse("u32:7").unwrap(),
            ArgSpec::Scalar(KernelArg::U32(7))
        );
        assert_eq!(
            ArgSpec::parse("f32:0.5").unwrap(),
            ArgSpec::Scalar(KernelArg::F32(0.5))
        );
        assert_eq!(
            ArgSpec::parse("null").unwrap(),
            ArgSpec::Scalar(KernelArg::U64(0))
        );
        assert_eq!(
            ArgSpec::parse("rand:bf16:10:3").unwrap(),
            ArgSpec::Buffer {
                dtype: DType::BF16,
                count: 10,
                init: BufferInit::Random { seed: 3 },
                save: None,
                param: true,
            }
        );
        assert!(ArgSpec::parse("u32:-1").is_err());
        assert_eq!(
            ArgSpec::parse("u64:0x10").unwrap(),
            ArgSpec::Scalar(KernelArg::U64(16))
        );
        assert!(ArgSpec::parse("u32:0x1ffffffff").is_err());
        assert_eq!(
            ArgSpec::parse("out:dir:with:colons/y.npy:bf16:12").unwrap(),
            ArgSpec::Buffer {
                dtype: DType::BF16,
                count: 12,
                init: BufferInit::Poison,
                save: Some(PathBuf::from("dir:with:colons/y.npy")),
                param: true,
            }
        );
        assert_eq!(
            ArgSpec::parse("host:zeros:f16:8").unwrap(),
            ArgSpec::Buffer {
                dtype: DType::F16,
                count: 8,
                init: BufferInit::Zeros,
                save: None,
                param: false,
            }
        );
        assert!(ArgSpec::parse("host:u32:1").is_err());
        let ArgSpec::TensorMap(map) =
            ArgSpec::parse("tmap:1:f16:64x32:128:64x8:swizzle=128").unwrap()
        else {
            panic!("not a tensor map");
        };
        assert_eq!((map.buffer, map.map.box_dim.as_slice()), (1, &[64, 8][..]));
        assert!(ArgSpec::parse("out:y.npy:f32").is_err());
        assert!(ArgSpec::parse("inout:a.npy").is_err());
        assert!(ArgSpec::parse("offsets:f32:4:10").is_err());
        assert!(ArgSpec::parse("zeros:f7:3").is_err());
        assert!(ArgSpec::parse("in:/nonexistent.npy").is_err());
    }

    #[test]
    fn random_floats_lie_in_the_unit_interval() {
        let bytes = random_bytes(DType::F32, 1000, 9);
        let values: Vec<f32> = jagged_runtime::from_bytes("r", &bytes).unwrap();
        assert!(values.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_ne!(values[0], values[1]);
        assert_eq!(bytes, random_bytes(DType::F32, 1000, 9));
    }

    #[test]
    fn random_offsets_are_valid_jagged_offsets() {
        for (batch, total) in [(0usize, 0u64), (1, 7), (8, 300), (50, 3)] {
            let bytes = random_offsets(DType::I64, batch + 1, total, 4);
            let offsets: Vec<i64> = jagged_runtime::from_bytes("o", &bytes).unwrap();
            assert_eq!(offsets.len(), batch + 1);
            assert_eq!((offsets[0], offsets[batch]), (0, total as i64));
            assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
        }
        // With more sequences than rows some are empty.
        let bytes = random_offsets(DType::I32, 51, 3, 4);
        let offsets: Vec<i32> = jagged_runtime::from_bytes("o", &bytes).unwrap();
        assert!(offsets.windows(2).any(|w| w[0] == w[1]));
    }

    #[test]
    fn comparison_measures_relative_error_and_rejects_nan() {
        let want = jagged_runtime::to_bytes(&[3.0f32, 4.0]);
        let got = jagged_runtime::to_bytes(&[3.0f32, 4.0 + 5e-6]);
        // ||diff|| = 5e-6, ||want|| = 5: rel 1e-6 (up to f32 rounding of 4 + 5e-6).
        let cmp = BufferComparison::new(0, DType::F32, &got, &want, 1e-5);
        assert!(cmp.pass && cmp.differing == 1);
        assert!((cmp.rel_l2 - 1e-6).abs() < 1e-7, "{}", cmp.rel_l2);
        let nan = jagged_runtime::to_bytes(&[3.0f32, f32::NAN]);
        assert!(!BufferComparison::new(0, DType::F32, &nan, &nan, 1e-5).pass);
        let ints = jagged_runtime::to_bytes(&[1i32, 2]);
        let other = jagged_runtime::to_bytes(&[1i32, 3]);
        assert!(!BufferComparison::new(0, DType::I32, &other, &ints, 1.0).pass);
    }

    #[test]
    fn parses_a_command_line() {
        use clap::Parser;
        /// `jagc crosscheck`'s arguments alone.
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: CrosscheckArgs,
        }
        let dir = std::env::temp_dir().join(format!("jagged-xc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ptx = dir.join("k.ptx");
        std::fs::write(&ptx, ".entry k() { ret; }").unwrap();
        let ptx = ptx.display().to_string();
        let cli = Cli::try_parse_from([
            "crosscheck",
            "--grid",
            "4,2",
            "--block",
            "128",
            "--shared",
            "16",
            "--backends",
            "emu",
            &ptx,
            "k",
            "zeros:u8:3",
        ])
        .unwrap();
        let check = cli.args.check().unwrap();
        assert_eq!(check.dims.grid, [4, 2, 1]);
        assert_eq!(check.dims.block, [128, 1, 1]);
        assert_eq!(check.dims.dynamic_shared_bytes, 16);
        assert_eq!(check.args.len(), 1);
        assert_eq!(cli.args.backends, vec![BackendKind::Emu]);
        let defaults = Cli::try_parse_from(["crosscheck", &ptx, "k"]).unwrap();
        assert_eq!(
            defaults.args.backends,
            vec![BackendKind::Cuda, BackendKind::Emu]
        );
        assert_eq!(
            defaults.args.check().unwrap().dims,
            LaunchDims::linear(1, 1)
        );
        assert!(Cli::try_parse_from(["crosscheck", "--grid"]).is_err());
        assert!(Cli::try_parse_from(["crosscheck", "--grid", "1,2,3,4", &ptx, "k"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
