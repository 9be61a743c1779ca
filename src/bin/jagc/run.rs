//! `jagc run`: runs an op of OPS.md on `.npy` inputs, on the reference
//! evaluator, the emulator or a GPU, and writes its outputs as `.npy`.
//!
//! Float input files (f32, f64, f16; bf16 stored as uint16) are converted to
//! the op's dtype; offsets, lengths and masks keep their integer type, which
//! specializes the graph. Inner dims come from the files' shapes. Float
//! outputs are written as f32, integer outputs as they are.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use jagged_codegen::{Arch, Spec};
use jagged_ir::{AttrValue, DType, DenseTensor};
use jagged_runtime::{BackendKind, Runtime};

use crate::opspec::{self, Attrs, CliError, Facts, Op, key_value};

/// Where `jagc run` runs the op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// CUDA when a GPU is present, else the emulator.
    Auto,
    /// jagged-ir's f64 reference evaluator (no kernels).
    Reference,
    /// The generated PTX in the emulator.
    Emu,
    /// The generated PTX on a CUDA GPU.
    Cuda,
}

/// Arguments of `jagc run`.
#[derive(Args)]
#[command(after_help = opspec::ATTR_HELP)]
pub struct RunArgs {
    /// The op (OPS.md's name, e.g. jagged_softmax).
    pub op: String,
    /// An input, NAME=FILE.npy, with OPS.md's input names (repeatable).
    #[arg(long = "in", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// An attribute, K=V (repeatable; sizes come from the input files).
    #[arg(long = "attr", value_name = "K=V")]
    pub attrs: Vec<String>,
    /// An output to write, NAME=FILE.npy (repeatable).
    #[arg(long = "out", value_name = "NAME=FILE.npy")]
    pub outputs: Vec<String>,
    /// The float dtype the op computes in [f32; attention ops: bf16].
    #[arg(long, value_parser = opspec::parse_dtype)]
    pub dtype: Option<DType>,
    /// Where to run it.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// The target architecture of the generated PTX [default: the device's
    /// preferred one, sm_90a on compute capability 9.x, else sm_80].
    #[arg(long, value_parser = opspec::parse_arch)]
    pub arch: Option<Arch>,
}

/// Runs `jagc run`.
pub fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let op = Op::from_name(&args.op)?;
    let attrs = Attrs::parse(op, &args.attrs, false)?;
    let files = input_files(op, &args.inputs)?;
    let outputs = output_files(&args.outputs)?;
    let mut loaded = BTreeMap::new();
    for (name, path) in &files {
        let tensor =
            DenseTensor::load_npy(path).map_err(|e| bad_input(name, path, e.to_string()))?;
        loaded.insert(name.clone(), tensor);
    }
    let dtype = Facts::dtype(op, args.dtype, &attrs)?;
    let facts = facts_from_files(op, dtype, &loaded, &files)?;
    let graph = opspec::build_graph(op, &facts, &attrs)?;
    for name in outputs.keys() {
        if !graph.outputs().iter().any(|o| &o.name == name) {
            let known: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
            return Err(CliError::UnknownOutput {
                op: op.name(),
                name: name.clone(),
                known: known.join(", "),
            }
            .into());
        }
    }
    // Float inputs in the op's dtype; integer inputs as they are.
    let mut inputs = BTreeMap::new();
    for (name, tensor) in loaded {
        let tensor = if tensor.dtype().is_float() && tensor.dtype() != dtype {
            DenseTensor::from_f64(dtype, tensor.shape().to_vec(), &tensor.to_f64())?
        } else {
            tensor
        };
        inputs.insert(name, tensor);
    }
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let graph_attrs = attrs.graph_attrs(op)?;
    let results = match args.backend {
        Backend::Reference => {
            println!("backend: reference (f64 evaluator)");
            jagged_ir::evaluate(&graph, &named, &graph_attrs)?
        }
        backend => {
            let mut rt = match backend {
                Backend::Emu => Runtime::with_backend(BackendKind::Emu)?,
                Backend::Cuda => Runtime::with_backend(BackendKind::Cuda)?,
                _ => Runtime::new()?,
            };
            println!("backend: {} ({})", rt.backend_name(), rt.device_name());
            let arch = args.arch.unwrap_or_else(|| rt.preferred_arch());
            println!("arch: {arch}");
            let spec = Spec::for_graph(&graph, spec_max_len(op, &graph_attrs, &inputs), arch)?;
            rt.run_graph_host(&graph, &spec, &named, &graph_attrs)?
        }
    };
    for (name, tensor) in &results {
        let target = outputs.get(name);
        println!(
            "{name}: {} {:?}{}",
            tensor.dtype(),
            tensor.shape(),
            target.map_or(String::new(), |p| format!(" -> {}", p.display()))
        );
        if let Some(path) = target {
            let written = if tensor.dtype().is_float() && tensor.dtype() != DType::F32 {
                DenseTensor::from_f64(DType::F32, tensor.shape().to_vec(), &tensor.to_f64())?
            } else {
                tensor.clone()
            };
            written
                .save_npy(path)
                .map_err(|e| format!("--out {name}={}: {e}", path.display()))?;
        }
    }
    Ok(())
}

fn bad_input(name: &str, path: &std::path::Path, reason: String) -> CliError {
    CliError::BadInput {
        name: name.to_string(),
        path: path.display().to_string(),
        reason,
    }
}

/// `--in NAME=FILE` checked against the op's inputs: none unknown, none missing.
fn input_files(op: Op, args: &[String]) -> Result<BTreeMap<String, PathBuf>, CliError> {
    let input_error = |problem, name: &str| CliError::Input {
        op: op.name(),
        problem,
        name: name.to_string(),
        known: op.inputs().join(", "),
    };
    let mut files = BTreeMap::new();
    for arg in args {
        let (name, path) = key_value("--in", arg)?;
        if !op.inputs().contains(&name.as_str()) {
            return Err(input_error("unknown", &name));
        }
        files.insert(name, PathBuf::from(path));
    }
    if let Some(missing) = op.inputs().iter().find(|n| !files.contains_key(**n)) {
        return Err(input_error("missing", missing));
    }
    Ok(files)
}

fn output_files(args: &[String]) -> Result<BTreeMap<String, PathBuf>, CliError> {
    args.iter()
        .map(|arg| key_value("--out", arg).map(|(n, p)| (n, PathBuf::from(p))))
        .collect()
}

/// Dtypes and inner dims from the input files.
fn facts_from_files(
    op: Op,
    dtype: DType,
    loaded: &BTreeMap<String, DenseTensor>,
    files: &BTreeMap<String, PathBuf>,
) -> Result<Facts, CliError> {
    let file = |name: &str| -> Result<&DenseTensor, CliError> {
        loaded.get(name).ok_or_else(|| CliError::Input {
            op: op.name(),
            problem: "missing",
            name: name.to_string(),
            known: op.inputs().join(", "),
        })
    };
    let bad = |name: &str, reason: String| bad_input(name, &files[name], reason);
    let float = |name: &str, min_rank: usize| -> Result<Vec<usize>, CliError> {
        let t = file(name)?;
        if !t.dtype().is_float() {
            return Err(bad(
                name,
                format!("dtype {}, expected a float array", t.dtype()),
            ));
        }
        if t.shape().len() < min_rank {
            return Err(bad(
                name,
                format!("shape {:?}, expected at least {min_rank} dims", t.shape()),
            ));
        }
        Ok(t.shape().to_vec())
    };
    let integer = |name: &str, allowed: &[DType]| -> Result<DType, CliError> {
        let t = file(name)?;
        if allowed.contains(&t.dtype()) {
            Ok(t.dtype())
        } else {
            let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
            Err(bad(
                name,
                format!("dtype {}, expected {}", t.dtype(), names.join(" or ")),
            ))
        }
    };
    let index_name = if op == Op::CompleteCumsum {
        "lengths"
    } else {
        "offsets"
    };
    let index = integer(index_name, &[DType::I32, DType::I64])?;
    let mask = if op == Op::MaskedSelectJagged {
        integer("mask", &[DType::U8, DType::Bool])?
    } else {
        DType::U8
    };
    for name in ["values", "dense", "q", "k", "v"] {
        if op.inputs().contains(&name) {
            float(name, 1)?;
        }
    }
    let (inner, value_dim) = match op {
        Op::CompleteCumsum => (Vec::new(), 0),
        Op::DenseToJagged => (float("dense", 2)?[2..].to_vec(), 0),
        Op::JaggedFlashAttention => {
            let q = float("q", 3)?;
            let v = float("v", 3)?;
            (q[1..].to_vec(), v[2])
        }
        Op::FbgemmJaggedFlashAttentionBasic => {
            let q = float("q", 2)?;
            (q[1..].to_vec(), q[1])
        }
        _ => (float("values", 1)?[1..].to_vec(), 0),
    };
    Ok(Facts {
        dtype,
        index,
        mask,
        inner,
        value_dim,
    })
}

/// The `max_len` the spec is bucketed by: the attribute, else the dense
/// input's `N`, else 0 (ops without a row limit).
fn spec_max_len(
    op: Op,
    attrs: &[(&str, AttrValue)],
    inputs: &BTreeMap<String, DenseTensor>,
) -> u64 {
    if let Some((_, v)) = attrs.iter().find(|(n, _)| *n == "max_len") {
        return v.as_f64() as u64;
    }
    match (op, inputs.get("dense")) {
        (Op::DenseToJagged, Some(dense)) => dense.shape().get(1).copied().unwrap_or(0) as u64,
        _ => 0,
    }
}
