//! `jagc emu`: run a PTX kernel in the emulator, with the memory checker on.
//!
//! Kernel arguments are given in PTX parameter order with `--arg SPEC`:
//! scalars (`u32:7`, `i32:-1`, `u64:0x10`, `i64:5`, `f32:0.5`, `f64:1e-3`), and
//! device buffers read from or written to `.npy` files (`in:X.npy`,
//! `out:Y.npy:f32:1024`, `inout:X.npy:Y.npy`). bf16 buffers are stored as uint16.
//! The syntax is `jagc crosscheck`'s too: both parse it with
//! [`jagged::cli::argspec::KernelArgSpec`]. An `out:` buffer starts as 0xFF bytes.
//! `jagc emu` also takes 1- and 2-byte scalars (`u8:1`, `s8:-1`, `u16:0xffff`,
//! `s16:-2`, `f16:0.5`, `bf16:-1.25`; `i8`/`i16` are aliases of `s8`/`s16`), which the
//! emulator passes to `.u8`/`.s8`/`.b8`/`.u16`/`.s16`/`.b16`/`.f16`/`.bf16` parameters
//! (Triton passes a bool as `.u8`).
//! A TMA tensor map (a `.param .align 64 .b8 [128]` parameter) is
//! `tmap:BUF:DTYPE:DIMS:STRIDES:BOX[:OPTIONS]`, built like `cuTensorMapEncodeTiled` over
//! the buffer of the earlier argument number BUF (1-based): DTYPE one of u8 u16 u32 i32 u64
//! i64 f16 f32 f64 bf16 tf32; DIMS, STRIDES (bytes, of dimensions 1..; `-` for rank 1)
//! and BOX `x`-separated, innermost first; OPTIONS comma-separated `swizzle=32|64|128`,
//! `estrides=AxB..`, `nan` (NaN out-of-bounds fill). `host:` before an `in:`, `out:` or
//! `inout:` spec makes a buffer the kernel takes no parameter for (it still counts in BUF):
//! the tensor of a Triton host-side descriptor, whose kernel takes only the map.

use clap::Args;
use jagged::cli::argspec::{ArgSpecError, KernelArgSpec, parse_int};
use jagged::cli::npy::{self, NpyArray, NpyDtype, NpyError};
use jagged_emu::tensormap::{TensorMapDataType, TensorMapSwizzle};
use jagged_emu::{Device, DevicePtr, EmuError, KernelArg, LaunchConfig, Module};
use jagged_runtime::TiledMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Arguments of `jagc emu`.
#[derive(Args)]
pub struct EmuArgs {
    /// The PTX file.
    pub file: PathBuf,
    /// The entry to launch; may be left out when the module has exactly one.
    #[arg(long)]
    pub kernel: Option<String>,
    /// CTAs in the grid: X, X,Y or X,Y,Z.
    #[arg(long, value_parser = parse_dim3)]
    pub grid: [u32; 3],
    /// Threads per CTA: X, X,Y or X,Y,Z.
    #[arg(long, value_parser = parse_dim3)]
    pub block: [u32; 3],
    /// Dynamic shared memory per CTA, in bytes.
    #[arg(long, default_value_t = 0)]
    pub shared: u32,
    /// A kernel argument, in parameter order: u32:V, i32:V, u64:V, i64:V, f32:V, f64:V,
    /// u8:V, s8:V, u16:V, s16:V, f16:V, bf16:V,
    /// in:IN.npy, out:OUT.npy:DTYPE:COUNT (DTYPE: f32 f16 bf16 i32 i64 u32 u64 u8),
    /// inout:IN.npy:OUT.npy, tmap:BUF:DTYPE:DIMS:STRIDES:BOX, optionally :OPTIONS (a tensor map over
    /// argument BUF's buffer), host:BUFFER-SPEC (a buffer passed to no parameter).
    #[arg(long = "arg", value_name = "SPEC")]
    pub args: Vec<EmuArgSpec>,
    /// Fail on shared-memory races that store (nearly) the value already there
    /// (by default they are warnings on stderr).
    #[arg(long)]
    pub strict_races: bool,
    /// Stop the launch after this many warp instructions (all CTAs together).
    #[arg(long, value_name = "N", default_value_t = jagged_emu::DEFAULT_LAUNCH_INSTRUCTION_LIMIT)]
    pub max_instructions: u64,
    /// Stop the launch after this many seconds of wall-clock time (0: no limit).
    #[arg(long, value_name = "S", value_parser = parse_seconds,
          default_value_t = jagged_emu::DEFAULT_LAUNCH_TIME_LIMIT.as_secs_f64())]
    pub max_seconds: f64,
    /// Print the emulator's cost model of the launch: warp instructions by class,
    /// global bytes and 32-byte sectors, shared-memory bank conflicts.
    #[arg(long)]
    pub profile: bool,
}

/// Parses a non-negative, finite number of seconds.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 && Duration::try_from_secs_f64(s).is_ok() => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds")),
    }
}

/// One `--arg` of `jagc emu`: a 1- or 2-byte scalar, or the SPEC syntax shared with
/// `jagc crosscheck`.
#[derive(Clone, Debug, PartialEq)]
pub enum EmuArgSpec {
    /// `u8:V`, `s8:V`, `u16:V`, `s16:V`, `f16:V` or `bf16:V`.
    Small(KernelArg),
    /// Any kind of [`KernelArgSpec`].
    Shared(KernelArgSpec),
    /// `tmap:...`: a tensor map over an earlier buffer argument.
    TensorMap(TensorMapSpec),
    /// `host:` followed by `in:`, `out:` or `inout:`: a buffer the kernel takes no
    /// parameter for, only tensor maps refer to it (Triton's host-side descriptors).
    Host(KernelArgSpec),
}

/// A `tmap:` argument: a tiled map (`cuTensorMapEncodeTiled`'s fields, less the address)
/// over an earlier buffer argument. `jagc crosscheck` parses it with this too.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMapSpec {
    /// 1-based number of the buffer argument whose device address the map takes.
    pub buffer: usize,
    /// The map's fields (element strides all 1 unless given).
    pub map: TiledMap,
}

impl TensorMapSpec {
    /// Parses `BUF:DTYPE:DIMS:STRIDES:BOX[:OPTIONS]` (what follows `tmap:`).
    pub fn parse(text: &str) -> Result<TensorMapSpec, String> {
        fn list<T: TryFrom<i128>>(text: &str) -> Result<Vec<T>, String> {
            if text == "-" {
                return Ok(Vec::new());
            }
            text.split('x').map(parse_int).collect()
        }
        let parts: Vec<&str> = text.split(':').collect();
        let [buffer, dtype, dims, strides, boxes, rest @ ..] = &parts[..] else {
            return Err("expected tmap:BUF:DTYPE:DIMS:STRIDES:BOX[:OPTIONS]".to_string());
        };
        use TensorMapDataType as T;
        let data_type = match *dtype {
            "u8" => T::Uint8,
            "u16" => T::Uint16,
            "u32" => T::Uint32,
            "i32" => T::Int32,
            "u64" => T::Uint64,
            "i64" => T::Int64,
            "f16" => T::Float16,
            "f32" => T::Float32,
            "f64" => T::Float64,
            "bf16" => T::Bfloat16,
            "tf32" => T::Tfloat32,
            d => return Err(format!("unknown tensor map element type `{d}`")),
        };
        let global_dim: Vec<u64> = list(dims)?;
        let mut map = TiledMap {
            data_type,
            element_strides: vec![1; global_dim.len()],
            global_dim,
            global_strides: list(strides)?,
            box_dim: list(boxes)?,
            swizzle: TensorMapSwizzle::None,
            nan_fill: false,
        };
        for option in rest.iter().flat_map(|r| r.split(',')) {
            match option.split_once('=') {
                Some(("swizzle", "32")) => map.swizzle = TensorMapSwizzle::B32,
                Some(("swizzle", "64")) => map.swizzle = TensorMapSwizzle::B64,
                Some(("swizzle", "128")) => map.swizzle = TensorMapSwizzle::B128,
                Some(("estrides", e)) => map.element_strides = list(e)?,
                None if option == "nan" => map.nan_fill = true,
                _ => return Err(format!("unknown tensor map option `{option}`")),
            }
        }
        Ok(TensorMapSpec {
            buffer: parse_int(buffer)?,
            map,
        })
    }

    /// The 0-based index of the map's buffer argument if it comes before argument
    /// `index` (1-based: the map's own).
    pub fn buffer_before(&self, index: usize) -> Option<usize> {
        self.buffer.checked_sub(1).filter(|_| self.buffer < index)
    }

    /// Why the map's buffer argument is refused.
    pub fn not_a_buffer(&self) -> String {
        format!("argument {} is not an earlier buffer argument", self.buffer)
    }
}

impl FromStr for EmuArgSpec {
    type Err = ArgSpecError;

    fn from_str(spec: &str) -> Result<EmuArgSpec, ArgSpecError> {
        let bad = |reason: String| ArgSpecError {
            spec: spec.to_string(),
            reason,
        };
        let Some((kind, value)) = spec.split_once(':') else {
            return spec.parse().map(EmuArgSpec::Shared);
        };
        let float = |what: &str| bad(format!("not an {what}"));
        let arg = match kind {
            "tmap" => {
                return TensorMapSpec::parse(value)
                    .map(EmuArgSpec::TensorMap)
                    .map_err(bad);
            }
            "host" => {
                return match value.parse::<KernelArgSpec>()? {
                    KernelArgSpec::Scalar(_) => Err(bad("host: takes a buffer spec".to_string())),
                    buffer => Ok(EmuArgSpec::Host(buffer)),
                };
            }
            "u8" => KernelArg::U8(parse_int(value).map_err(bad)?),
            "s8" | "i8" => KernelArg::I8(parse_int(value).map_err(bad)?),
            "u16" => KernelArg::U16(parse_int(value).map_err(bad)?),
            "s16" | "i16" => KernelArg::I16(parse_int(value).map_err(bad)?),
            "f16" => KernelArg::F16(half::f16::from_f64(
                value.parse().map_err(|_| float("f16"))?,
            )),
            "bf16" => KernelArg::BF16(half::bf16::from_f64(
                value.parse().map_err(|_| float("bf16"))?,
            )),
            _ => {
                return spec.parse().map(EmuArgSpec::Shared).map_err(|e| {
                    if e.reason.starts_with("unknown kind") {
                        bad(
                            "unknown kind (expected u8, s8, u16, s16, u32, i32, u64, i64, f16, bf16, f32, f64, in, out, inout or tmap)"
                                .to_string(),
                        )
                    } else {
                        e
                    }
                });
            }
        };
        Ok(EmuArgSpec::Small(arg))
    }
}

/// Parses `X[,Y[,Z]]` into three dimensions, each at least 1 (missing ones are 1).
fn parse_dim3(text: &str) -> Result<[u32; 3], String> {
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > 3 {
        return Err(format!("'{text}' has more than 3 dimensions"));
    }
    let mut dims = [1u32; 3];
    for (dim, part) in dims.iter_mut().zip(&parts) {
        *dim = part
            .trim()
            .parse()
            .map_err(|_| format!("'{part}' is not a dimension"))?;
        if *dim == 0 {
            return Err(format!("'{text}': dimensions must be at least 1"));
        }
    }
    Ok(dims)
}

/// Why `jagc emu` failed; each variant names the file, kernel or argument at fault.
#[derive(Debug, thiserror::Error)]
pub enum EmuCliError {
    /// The PTX file could not be read.
    #[error("{}: {source}", path.display())]
    ReadPtx {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The PTX file does not parse.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: Box<EmuError>,
    },
    /// `--kernel` names no entry of the module, or is missing and the module has several.
    #[error("{}: {problem} (kernels: {})", path.display(), available.join(", "))]
    Kernel {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// The module's entries.
        available: Vec<String>,
    },
    /// An `.npy` file of an argument could not be read or written.
    #[error("--arg {index}: {source}")]
    Npy {
        /// 1-based position of the argument.
        index: usize,
        /// The npy error (it names the file).
        source: NpyError,
    },
    /// An `out:` buffer whose byte size does not fit in memory.
    #[error("--arg {index}: {count} elements of {elem_bytes} bytes do not fit in memory")]
    BufferSize {
        /// 1-based position of the argument.
        index: usize,
        /// The element count asked for.
        count: usize,
        /// Bytes per element.
        elem_bytes: usize,
    },
    /// The device refused a host-side copy, or an argument has no emulator form.
    #[error("--arg {index}: {source}")]
    Device {
        /// 1-based position of the argument.
        index: usize,
        /// The emulator's error.
        source: Box<EmuError>,
    },
    /// A `tmap:` argument names no earlier buffer, or breaks `cuTensorMapEncodeTiled`'s
    /// rules.
    #[error("--arg {index}: tensor map: {reason}")]
    TensorMap {
        /// 1-based position of the argument.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The launch failed: bad arguments, an unsupported instruction, or checker reports.
    #[error("kernel `{kernel}` in {}: {source}", path.display())]
    Launch {
        /// The file.
        path: PathBuf,
        /// The kernel.
        kernel: String,
        /// The emulator's error, with the checker's reports.
        source: Box<EmuError>,
    },
}

/// A device buffer whose contents go to a file after the run.
struct Output {
    index: usize,
    ptr: DevicePtr,
    path: PathBuf,
    dtype: NpyDtype,
    shape: Vec<usize>,
}

/// Runs `jagc emu`.
pub fn run(args: EmuArgs) -> Result<(), Box<dyn std::error::Error>> {
    Ok(emulate(&args)?)
}

fn emulate(args: &EmuArgs) -> Result<(), EmuCliError> {
    let path = &args.file;
    let ptx = std::fs::read_to_string(path).map_err(|source| EmuCliError::ReadPtx {
        path: path.clone(),
        source,
    })?;
    let module = Module::parse(&ptx).map_err(|source| EmuCliError::Parse {
        path: path.clone(),
        source: Box::new(source),
    })?;
    let kernel = pick_kernel(&module, args.kernel.as_deref(), path)?;

    let mut device = Device::new();
    let mut options = device.run_options();
    options.strict_races = args.strict_races;
    options.max_warp_instructions = args.max_instructions;
    options.max_duration = if args.max_seconds > 0.0 {
        Duration::try_from_secs_f64(args.max_seconds).ok()
    } else {
        None
    };
    device.set_run_options(options);
    // Every spec's argument (tensor maps refer to them by number), and those the kernel takes.
    let mut spec_args = Vec::with_capacity(args.args.len());
    let mut kernel_args = Vec::with_capacity(args.args.len());
    let mut outputs = Vec::new();
    for (i, spec) in args.args.iter().enumerate() {
        let index = i + 1;
        let npy_err = |source| EmuCliError::Npy { index, source };
        let device_err = |source| EmuCliError::Device {
            index,
            source: Box::new(source),
        };
        let (spec, param) = match spec {
            EmuArgSpec::Small(arg) => {
                spec_args.push(*arg);
                kernel_args.push(*arg);
                continue;
            }
            EmuArgSpec::TensorMap(map) => {
                let address = match map.buffer_before(index).and_then(|b| spec_args.get(b)) {
                    Some(KernelArg::Ptr(p)) => *p,
                    _ => {
                        return Err(EmuCliError::TensorMap {
                            index,
                            reason: map.not_a_buffer(),
                        });
                    }
                };
                let map = map
                    .map
                    .encode_emu(address.0)
                    .map_err(|e| EmuCliError::TensorMap {
                        index,
                        reason: e.to_string(),
                    })?;
                spec_args.push(KernelArg::TensorMap(map));
                kernel_args.push(KernelArg::TensorMap(map));
                continue;
            }
            EmuArgSpec::Shared(spec) => (spec, true),
            EmuArgSpec::Host(spec) => (spec, false),
        };
        let arg = match spec {
            KernelArgSpec::Scalar(arg) => arg
                .to_emu(|id| Err(EmuError::BadLaunch(format!("{id} is not a scalar"))))
                .map_err(|source| EmuCliError::Device {
                    index,
                    source: Box::new(source),
                })?,
            KernelArgSpec::In(input) => {
                let array = npy::read(input).map_err(npy_err)?;
                KernelArg::Ptr(device.try_upload(&array.data).map_err(device_err)?)
            }
            KernelArgSpec::Out {
                path: out,
                dtype,
                count,
            } => {
                let bytes = count
                    .checked_mul(dtype.size())
                    .ok_or(EmuCliError::BufferSize {
                        index,
                        count: *count,
                        elem_bytes: dtype.size(),
                    })?;
                let ptr = device.try_alloc(bytes).map_err(device_err)?;
                device.write(ptr, &vec![0xFF; bytes]).map_err(device_err)?;
                outputs.push(Output {
                    index,
                    ptr,
                    path: out.clone(),
                    dtype: *dtype,
                    shape: vec![*count],
                });
                KernelArg::Ptr(ptr)
            }
            KernelArgSpec::InOut { input, output } => {
                let array = npy::read(input).map_err(npy_err)?;
                let ptr = device.try_upload(&array.data).map_err(device_err)?;
                outputs.push(Output {
                    index,
                    ptr,
                    path: output.clone(),
                    dtype: array.dtype,
                    shape: array.shape,
                });
                KernelArg::Ptr(ptr)
            }
        };
        if param {
            kernel_args.push(arg);
        }
        spec_args.push(arg);
    }

    let config = LaunchConfig {
        grid: args.grid,
        block: args.block,
        dynamic_shared_bytes: args.shared,
    };
    let stats = device
        .launch(&module, &kernel, &config, &kernel_args)
        .map_err(|source| EmuCliError::Launch {
            path: path.clone(),
            kernel: kernel.clone(),
            source: Box::new(source),
        })?;

    for out in outputs {
        // The buffer was allocated with this many bytes, so the product fits.
        let len = out
            .shape
            .iter()
            .try_fold(out.dtype.size(), |n, &d| n.checked_mul(d))
            .ok_or(EmuCliError::BufferSize {
                index: out.index,
                count: out.shape.iter().fold(1, |n: usize, &d| n.saturating_mul(d)),
                elem_bytes: out.dtype.size(),
            })?;
        let data = device
            .read(out.ptr, len)
            .map_err(|source| EmuCliError::Device {
                index: out.index,
                source: Box::new(source),
            })?;
        let array = NpyArray {
            dtype: out.dtype,
            shape: out.shape,
            data,
        };
        npy::write(&out.path, &array).map_err(|source| EmuCliError::Npy {
            index: out.index,
            source,
        })?;
    }
    for warning in &stats.warnings {
        eprintln!("warning: {warning}");
    }
    let seconds = stats.elapsed.as_secs_f64();
    if args.profile {
        println!("{}", stats.profile);
    }
    println!(
        "{kernel}: {} warp instructions ({} thread instructions) in {:.3} ms, {:.1} M warp instructions/s",
        stats.warp_instructions,
        stats.thread_instructions,
        seconds * 1e3,
        if seconds > 0.0 {
            stats.warp_instructions as f64 / seconds / 1e6
        } else {
            0.0
        }
    );
    Ok(())
}

/// The kernel to launch: `requested` if the module has it, else the module's only one.
fn pick_kernel(
    module: &Module,
    requested: Option<&str>,
    path: &Path,
) -> Result<String, EmuCliError> {
    let available: Vec<String> = module.kernel_names().map(str::to_string).collect();
    let problem = match requested {
        Some(name) if available.iter().any(|k| k == name) => return Ok(name.to_string()),
        Some(name) => format!("no kernel `{name}`"),
        None if available.len() == 1 => return Ok(available[0].clone()),
        None => "--kernel is required: the module has no single kernel".to_string(),
    };
    Err(EmuCliError::Kernel {
        path: path.to_path_buf(),
        problem,
        available,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dimensions() {
        assert_eq!(parse_dim3("4").unwrap(), [4, 1, 1]);
        assert_eq!(parse_dim3("4,2").unwrap(), [4, 2, 1]);
        assert_eq!(parse_dim3("4,2,3").unwrap(), [4, 2, 3]);
        assert!(parse_dim3("0").unwrap_err().contains("at least 1"));
        assert!(parse_dim3("1,2,3,4").unwrap_err().contains("more than 3"));
        assert!(parse_dim3("x").unwrap_err().contains("'x'"));
    }

    #[test]
    fn parses_tensor_maps() {
        let p = |s: &str| s.parse::<EmuArgSpec>().unwrap();
        assert_eq!(
            p("tmap:2:bf16:64x32:128:64x8:swizzle=128,estrides=1x2,nan"),
            EmuArgSpec::TensorMap(TensorMapSpec {
                buffer: 2,
                map: TiledMap {
                    data_type: TensorMapDataType::Bfloat16,
                    global_dim: vec![64, 32],
                    global_strides: vec![128],
                    box_dim: vec![64, 8],
                    element_strides: vec![1, 2],
                    swizzle: TensorMapSwizzle::B128,
                    nan_fill: true,
                },
            })
        );
        assert_eq!(
            p("host:out:y.npy:f32:4"),
            EmuArgSpec::Host(KernelArgSpec::Out {
                path: PathBuf::from("y.npy"),
                dtype: NpyDtype::F32,
                count: 4,
            })
        );
        assert!("host:u32:1".parse::<EmuArgSpec>().is_err());
        assert_eq!(
            p("tmap:1:u8:256:-:16"),
            EmuArgSpec::TensorMap(TensorMapSpec {
                buffer: 1,
                map: TiledMap {
                    data_type: TensorMapDataType::Uint8,
                    global_dim: vec![256],
                    global_strides: vec![],
                    box_dim: vec![16],
                    element_strides: vec![1],
                    swizzle: TensorMapSwizzle::None,
                    nan_fill: false,
                },
            })
        );
    }

    #[test]
    fn parses_seconds() {
        assert_eq!(parse_seconds("0.25"), Ok(0.25));
        assert_eq!(parse_seconds("0"), Ok(0.0));
        for bad in ["-1", "inf", "NaN", "x", "1e300"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_small_scalar_kinds() {
        let p = |s: &str| s.parse::<EmuArgSpec>().unwrap();
        assert_eq!(p("u8:255"), EmuArgSpec::Small(KernelArg::U8(255)));
        assert_eq!(p("s8:-128"), EmuArgSpec::Small(KernelArg::I8(-128)));
        assert_eq!(p("i8:-1"), EmuArgSpec::Small(KernelArg::I8(-1)));
        assert_eq!(p("u16:0xffff"), EmuArgSpec::Small(KernelArg::U16(0xffff)));
        assert_eq!(p("s16:-2"), EmuArgSpec::Small(KernelArg::I16(-2)));
        assert_eq!(
            p("f16:0.5"),
            EmuArgSpec::Small(KernelArg::F16(half::f16::from_f32(0.5)))
        );
        assert_eq!(
            p("bf16:-1.25"),
            EmuArgSpec::Small(KernelArg::BF16(half::bf16::from_f32(-1.25)))
        );
        assert!(matches!(p("u32:7"), EmuArgSpec::Shared(_)));
        assert!(matches!(p("in:x.npy"), EmuArgSpec::Shared(_)));
        for (spec, needle) in [
            ("u8:256", "out of range"),
            ("s8:128", "out of range"),
            ("u16:-1", "out of range"),
            ("f16:x", "not an f16"),
            ("q8:1", "unknown kind"),
            ("u32", "not KIND:VALUE"),
            ("tmap:1:q8:4:-:4", "element type"),
            ("tmap:1:f32:4x4", "expected tmap:"),
            ("tmap:1:f32:4:-:4:swizzle=16", "option"),
        ] {
            let err = spec.parse::<EmuArgSpec>().unwrap_err().to_string();
            assert!(err.contains(spec) && err.contains(needle), "{spec}: {err}");
        }
    }
}
