//! `jagc emu`: run a PTX kernel in the emulator, with the memory checker on.
//!
//! Kernel arguments are given in PTX parameter order with `--arg SPEC`:
//! scalars (`u32:7`, `i32:-1`, `u64:0x10`, `i64:5`, `f32:0.5`, `f64:1e-3`), and
//! device buffers read from or written to `.npy` files (`in:X.npy`,
//! `out:Y.npy:f32:1024`, `inout:X.npy:Y.npy`). bf16 buffers are stored as uint16.

use clap::Args;
use jagged_emu::{Device, DevicePtr, EmuError, KernelArg, LaunchConfig, Module};
use jagged_ir::npy::{self, NpyArray, NpyDtype, NpyError};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Arguments of `jagc emu`.
#[derive(Args)]
pub struct EmuArgs {
    /// The PTX file.
    pub file: PathBuf,
    /// The entry to launch; may be left out when the module has exactly one.
    #[arg(long)]
    pub kernel: Option<String>,
    /// CTAs in the grid: X[,Y[,Z]].
    #[arg(long, value_parser = parse_dim3)]
    pub grid: [u32; 3],
    /// Threads per CTA: X[,Y[,Z]].
    #[arg(long, value_parser = parse_dim3)]
    pub block: [u32; 3],
    /// Dynamic shared memory per CTA, in bytes.
    #[arg(long, default_value_t = 0)]
    pub shared: u32,
    /// A kernel argument, in parameter order: u32:V, i32:V, u64:V, i64:V, f32:V, f64:V,
    /// in:IN.npy, out:OUT.npy:DTYPE:COUNT (DTYPE: f32 f16 bf16 i32 i64 u32 u64 u8),
    /// inout:IN.npy:OUT.npy.
    #[arg(long = "arg", value_name = "SPEC")]
    pub args: Vec<ArgSpec>,
}

/// One `--arg SPEC`: a scalar, or a device buffer with the files it comes from and goes to.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgSpec {
    /// A scalar passed by value.
    Scalar(Scalar),
    /// A buffer filled with the raw elements of an `.npy` file.
    In(PathBuf),
    /// A buffer of `count` elements of `dtype`, poisoned with 0xFF bytes, written to
    /// `path` after the run.
    Out {
        /// Where the result goes.
        path: PathBuf,
        /// The element type.
        dtype: NpyDtype,
        /// The number of elements.
        count: usize,
    },
    /// A buffer filled from `input` and written, with the same dtype and shape, to `output`.
    InOut {
        /// The initial contents.
        input: PathBuf,
        /// Where the result goes.
        output: PathBuf,
    },
}

/// A scalar kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// `u32:V`.
    U32(u32),
    /// `i32:V`.
    I32(i32),
    /// `u64:V`.
    U64(u64),
    /// `i64:V`.
    I64(i64),
    /// `f32:V`.
    F32(f32),
    /// `f64:V`.
    F64(f64),
}

impl FromStr for ArgSpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<ArgSpec, String> {
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| format!("'{spec}' is not KIND:VALUE"))?;
        let bad = |what: &str| format!("'{spec}': {what}");
        Ok(match kind {
            "u32" => ArgSpec::Scalar(Scalar::U32(parse_int(rest).map_err(|e| bad(&e))?)),
            "i32" => ArgSpec::Scalar(Scalar::I32(parse_int(rest).map_err(|e| bad(&e))?)),
            "u64" => ArgSpec::Scalar(Scalar::U64(parse_int(rest).map_err(|e| bad(&e))?)),
            "i64" => ArgSpec::Scalar(Scalar::I64(parse_int(rest).map_err(|e| bad(&e))?)),
            "f32" => ArgSpec::Scalar(Scalar::F32(rest.parse().map_err(|_| bad("not an f32"))?)),
            "f64" => ArgSpec::Scalar(Scalar::F64(rest.parse().map_err(|_| bad("not an f64"))?)),
            "in" if rest.is_empty() => return Err(bad("expected in:PATH.npy")),
            "in" => ArgSpec::In(PathBuf::from(rest)),
            "out" => {
                // The path may itself contain ':', so take DTYPE and COUNT from the right.
                let mut parts = rest.rsplitn(3, ':');
                let (count, dtype, path) = match (parts.next(), parts.next(), parts.next()) {
                    (Some(c), Some(d), Some(p)) if !p.is_empty() => (c, d, p),
                    _ => return Err(bad("expected out:PATH.npy:DTYPE:COUNT")),
                };
                ArgSpec::Out {
                    path: PathBuf::from(path),
                    dtype: parse_dtype(dtype).map_err(|e| bad(&e))?,
                    count: count
                        .parse()
                        .map_err(|_| bad(&format!("count '{count}' is not a number")))?,
                }
            }
            "inout" => match rest.split_once(':') {
                Some((input, output)) if !input.is_empty() && !output.is_empty() => {
                    ArgSpec::InOut {
                        input: PathBuf::from(input),
                        output: PathBuf::from(output),
                    }
                }
                _ => return Err(bad("expected inout:IN.npy:OUT.npy")),
            },
            _ => {
                return Err(bad(
                    "unknown kind (expected u32, i32, u64, i64, f32, f64, in, out or inout)",
                ));
            }
        })
    }
}

/// Parses a decimal or `0x` hexadecimal integer of any width.
fn parse_int<T: TryFrom<i128>>(text: &str) -> Result<T, String> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => i128::from_str_radix(hex, 16),
        None => digits.parse::<i128>(),
    }
    .map_err(|_| format!("'{text}' is not an integer"))?;
    let value = if negative { -magnitude } else { magnitude };
    T::try_from(value).map_err(|_| format!("{text} is out of range"))
}

fn parse_dtype(name: &str) -> Result<NpyDtype, String> {
    Ok(match name {
        "f32" => NpyDtype::F32,
        "f64" => NpyDtype::F64,
        "f16" => NpyDtype::F16,
        "bf16" => NpyDtype::BF16,
        "i32" => NpyDtype::I32,
        "i64" => NpyDtype::I64,
        "u32" => NpyDtype::U32,
        "u64" => NpyDtype::U64,
        "u8" => NpyDtype::U8,
        _ => {
            return Err(format!(
                "unknown dtype '{name}' (expected f32, f64, f16, bf16, i32, i64, u32, u64 or u8)"
            ));
        }
    })
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
    /// The device refused a host-side copy.
    #[error("--arg {index}: {source}")]
    Device {
        /// 1-based position of the argument.
        index: usize,
        /// The emulator's error.
        source: Box<EmuError>,
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
    let mut kernel_args = Vec::with_capacity(args.args.len());
    let mut outputs = Vec::new();
    for (i, spec) in args.args.iter().enumerate() {
        let index = i + 1;
        let npy_err = |source| EmuCliError::Npy { index, source };
        kernel_args.push(match spec {
            ArgSpec::Scalar(s) => match *s {
                Scalar::U32(v) => KernelArg::U32(v),
                Scalar::I32(v) => KernelArg::I32(v),
                Scalar::U64(v) => KernelArg::U64(v),
                Scalar::I64(v) => KernelArg::I64(v),
                Scalar::F32(v) => KernelArg::F32(v),
                Scalar::F64(v) => KernelArg::F64(v),
            },
            ArgSpec::In(input) => {
                let array = npy::read(input).map_err(npy_err)?;
                KernelArg::Ptr(device.upload(&array.data))
            }
            ArgSpec::Out {
                path: out,
                dtype,
                count,
            } => {
                let ptr = device.upload(&vec![0xFF; count * dtype.size()]);
                outputs.push(Output {
                    index,
                    ptr,
                    path: out.clone(),
                    dtype: *dtype,
                    shape: vec![*count],
                });
                KernelArg::Ptr(ptr)
            }
            ArgSpec::InOut { input, output } => {
                let array = npy::read(input).map_err(npy_err)?;
                let ptr = device.upload(&array.data);
                outputs.push(Output {
                    index,
                    ptr,
                    path: output.clone(),
                    dtype: array.dtype,
                    shape: array.shape,
                });
                KernelArg::Ptr(ptr)
            }
        });
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
        let len: usize = out.shape.iter().product::<usize>() * out.dtype.size();
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
    let seconds = stats.elapsed.as_secs_f64();
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
    fn parses_scalar_specs() {
        let p = |s: &str| s.parse::<ArgSpec>().unwrap();
        assert_eq!(p("u32:7"), ArgSpec::Scalar(Scalar::U32(7)));
        assert_eq!(p("i32:-3"), ArgSpec::Scalar(Scalar::I32(-3)));
        assert_eq!(p("u64:0x10"), ArgSpec::Scalar(Scalar::U64(16)));
        assert_eq!(p("i64:-0x10"), ArgSpec::Scalar(Scalar::I64(-16)));
        assert_eq!(p("f32:0.5"), ArgSpec::Scalar(Scalar::F32(0.5)));
        assert_eq!(p("f64:1e-3"), ArgSpec::Scalar(Scalar::F64(1e-3)));
    }

    #[test]
    fn parses_buffer_specs() {
        let p = |s: &str| s.parse::<ArgSpec>().unwrap();
        assert_eq!(p("in:x.npy"), ArgSpec::In("x.npy".into()));
        assert_eq!(
            p("out:dir:with:colons/y.npy:bf16:12"),
            ArgSpec::Out {
                path: "dir:with:colons/y.npy".into(),
                dtype: NpyDtype::BF16,
                count: 12
            }
        );
        assert_eq!(
            p("inout:a.npy:b.npy"),
            ArgSpec::InOut {
                input: "a.npy".into(),
                output: "b.npy".into()
            }
        );
    }

    #[test]
    fn bad_specs_name_themselves() {
        for (spec, needle) in [
            ("u32", "not KIND:VALUE"),
            ("u32:-1", "out of range"),
            ("i32:abc", "not an integer"),
            ("f32:x", "not an f32"),
            ("q8:1", "unknown kind"),
            ("out:y.npy:f99:4", "unknown dtype 'f99'"),
            ("out:y.npy:f32:many", "count 'many'"),
            ("out:y.npy", "expected out:"),
            ("inout:a.npy", "expected inout:"),
            ("in:", "expected in:"),
        ] {
            let err = spec.parse::<ArgSpec>().unwrap_err();
            assert!(err.contains(spec), "{spec}: {err}");
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn parses_dimensions() {
        assert_eq!(parse_dim3("4").unwrap(), [4, 1, 1]);
        assert_eq!(parse_dim3("4,2").unwrap(), [4, 2, 1]);
        assert_eq!(parse_dim3("4,2,3").unwrap(), [4, 2, 3]);
        assert!(parse_dim3("0").unwrap_err().contains("at least 1"));
        assert!(parse_dim3("1,2,3,4").unwrap_err().contains("more than 3"));
        assert!(parse_dim3("x").unwrap_err().contains("'x'"));
    }
}
