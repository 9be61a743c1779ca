//! `jagc run`: runs an op of OPS.md (or a graph file in the canonical text
//! form, `--graph FILE.jir`) on `.npy` inputs, on the reference evaluator,
//! the emulator or a GPU, and writes its outputs as `.npy`.
//!
//! Float input files (f32, f64, f16; bf16 stored as uint16) are converted to
//! the op's dtype; offsets, lengths and masks keep their integer type, which
//! specializes the graph. Inner dims come from the files' shapes. Float
//! outputs are written as f32, integer outputs as they are.
//!
//! Hardening: every `--out` path is checked before anything runs (its
//! directory exists and is writable, no two outputs to one file); outputs
//! are written all or none, through temporary files renamed over the
//! targets; a name repeated in `--in`, `--attr` or `--out` is an error; the
//! kernels' outputs are poisoned (NaN) first, so a row no kernel writes
//! shows as NaN, not 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use jagged::cli::npy;
use jagged_codegen::{Arch, Spec};
use jagged_ir::{AttrValue, DType, DenseTensor, Graph};
use jagged_runtime::{BackendKind, Runtime};

use crate::opspec::{self, Attrs, CliError, Facts, Op, key_values};

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
    /// The op (OPS.md's name, e.g. jagged_softmax); or give --graph.
    #[arg(required_unless_present = "graph", conflicts_with = "graph")]
    pub op: Option<String>,
    /// A graph in the canonical text form instead of a builtin op: --in and
    /// --out use its input and output names, --attr its attributes (index
    /// attributes as integers, float ones as numbers; defaults from the file).
    #[arg(long, value_name = "FILE.jir")]
    pub graph: Option<PathBuf>,
    /// An input, NAME=FILE.npy, with OPS.md's input names or the graph
    /// file's (repeatable, each name once).
    #[arg(long = "in", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// An attribute, K=V (repeatable, each name once; sizes come from the
    /// input files).
    #[arg(long = "attr", value_name = "K=V")]
    pub attrs: Vec<String>,
    /// An output to write, NAME=FILE.npy (repeatable, each name and file
    /// once; all are written or none).
    #[arg(long = "out", value_name = "NAME=FILE.npy")]
    pub outputs: Vec<String>,
    /// The float dtype the op computes in [f32; attention ops: bf16] (not
    /// with --graph: float files are converted to the dtypes the file declares).
    #[arg(long, value_parser = opspec::parse_dtype, conflicts_with = "graph")]
    pub dtype: Option<DType>,
    /// Where to run it.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// The target architecture of the generated PTX [default: the device's
    /// preferred one, sm_90a on compute capability 9.x, else sm_80].
    #[arg(long, value_parser = opspec::parse_arch)]
    pub arch: Option<Arch>,
}

/// A graph ready to run: its inputs loaded and converted, its attributes.
struct Prepared {
    graph: Graph,
    /// How errors name it (``op `x` `` or ``graph `x` (FILE)``).
    subject: String,
    /// Inputs by name, in the dtypes the graph takes.
    inputs: BTreeMap<String, DenseTensor>,
    /// The attributes given (the graph's defaults apply to the others).
    attrs: Vec<(String, AttrValue)>,
    /// The `max_len` the spec is bucketed by.
    spec_max_len: u64,
    /// `residual_quantize`: the level loop ([`run_levels`]).
    levels: Option<Levels>,
}

/// A graph's outputs by name, or why it did not run.
type RunResult = Result<BTreeMap<String, DenseTensor>, Box<dyn std::error::Error>>;

/// A graph's inputs by name.
type Named<'a> = [(&'a str, &'a DenseTensor)];

/// Runs a graph on the chosen backend.
type Execute<'e> = dyn FnMut(&Graph, &Named<'_>) -> RunResult + 'e;

/// `residual_quantize`'s levels: `graph` (of `Prepared`) encodes the first
/// level, `next` the others (an f32 residual); `codebooks [L, K, D]`.
struct Levels {
    next: Graph,
    codebooks: DenseTensor,
}

/// Runs `jagc run`.
pub fn run(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let outputs = output_files(&args.outputs)?;
    let prepared = match (&args.op, &args.graph) {
        (Some(name), None) => prepare_op(Op::from_name(name)?, &args)?,
        (None, Some(path)) => prepare_graph_file(path, &args)?,
        _ => return Err(CliError::NoOp.into()),
    };
    let graph = &prepared.graph;
    for name in outputs.keys() {
        if !graph.outputs().iter().any(|o| &o.name == name) {
            let known: Vec<&str> = graph.outputs().iter().map(|o| o.name.as_str()).collect();
            return Err(CliError::UnknownOutput {
                subject: prepared.subject.clone(),
                name: name.clone(),
                known: known.join(", "),
            }
            .into());
        }
    }
    let named: Vec<(&str, &DenseTensor)> = prepared
        .inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t))
        .collect();
    let graph_attrs: Vec<(&str, AttrValue)> = prepared
        .attrs
        .iter()
        .map(|(n, v)| (n.as_str(), *v))
        .collect();
    let mut exec = match args.backend {
        Backend::Reference => {
            println!("backend: reference (f64 evaluator)");
            None
        }
        backend => {
            let mut rt = match backend {
                Backend::Emu => Runtime::with_backend(BackendKind::Emu)?,
                Backend::Cuda => Runtime::with_backend(BackendKind::Cuda)?,
                _ => Runtime::new()?,
            };
            // An element no kernel writes reads as NaN, not as a plausible 0.
            rt.set_poison_outputs(true);
            println!("backend: {} ({})", rt.backend_name(), rt.device_name());
            let arch = args.arch.unwrap_or_else(|| rt.preferred_arch());
            println!("arch: {arch}");
            Some((rt, arch))
        }
    };
    let mut execute = |graph: &Graph, named: &[(&str, &DenseTensor)]| -> RunResult {
        Ok(match &mut exec {
            None => jagged_ir::evaluate(graph, named, &graph_attrs)?,
            Some((rt, arch)) => {
                let spec = Spec::for_graph(graph, prepared.spec_max_len, *arch)?;
                rt.run_graph_host(graph, &spec, named, &graph_attrs)?
            }
        })
    };
    let results = match &prepared.levels {
        None => execute(graph, &named)?,
        Some(levels) => run_levels(graph, levels, &prepared.inputs, &mut execute)?,
    };
    for (name, tensor) in &results {
        let target = outputs.get(name);
        println!(
            "{name}: {} {:?}{}",
            tensor.dtype(),
            tensor.shape(),
            target.map_or(String::new(), |p| format!(" -> {}", p.display()))
        );
    }
    write_outputs(&results, &outputs)?;
    Ok(())
}

/// Greedy `residual_quantize`, level by level: each level's graph takes the
/// residual (`x` at the first level), the level's codebook `[K, D]`, the
/// codes so far `[T, L]` (zeros at first) and the one-hot `level [L]`, and
/// gives the codes with this level's column and the next residual. Returns
/// the last level's `codes` and `residual` (`x - sum_l codebooks[l, c_l]`).
fn run_levels(
    first: &Graph,
    levels: &Levels,
    inputs: &BTreeMap<String, DenseTensor>,
    execute: &mut Execute<'_>,
) -> RunResult {
    let (x, offsets) = (&inputs["residual"], &inputs["offsets"]);
    let [l_count, k, d] = levels.codebooks.shape()[..] else {
        unreachable!("checked by facts_from_files")
    };
    let books = levels.codebooks.to_f64();
    let rows = x.shape()[0];
    let mut codes =
        DenseTensor::from_f64(DType::I32, vec![rows, l_count], &vec![0.0; rows * l_count])?;
    let mut residual = x.clone();
    for l in 0..l_count {
        let book = &books[l * k * d..(l + 1) * k * d];
        let codebook = DenseTensor::from_f64(levels.codebooks.dtype(), vec![k, d], book)?;
        let book_t = jagged::ops::quantize::transpose(book, k, d);
        let codebook_t = DenseTensor::from_f64(levels.codebooks.dtype(), vec![d, k], &book_t)?;
        let one_hot: Vec<f64> = (0..l_count).map(|j| f64::from(u8::from(j == l))).collect();
        let level = DenseTensor::from_f64(DType::I32, vec![l_count], &one_hot)?;
        let named = [
            ("offsets", offsets),
            ("residual", &residual),
            ("codebook", &codebook),
            ("codebook_t", &codebook_t),
            ("codes", &codes),
            ("level", &level),
        ];
        let graph = if l == 0 { first } else { &levels.next };
        let mut out = execute(graph, &named)?;
        let take = |out: &mut BTreeMap<String, DenseTensor>, name: &str| {
            out.remove(name)
                .ok_or_else(|| format!("residual_quantize level {l}: no output `{name}`"))
        };
        codes = take(&mut out, "codes")?;
        residual = take(&mut out, "residual")?;
    }
    Ok(BTreeMap::from([
        ("codes".to_string(), codes),
        ("residual".to_string(), residual),
    ]))
}

/// A builtin op: its graph built from the input files' dtypes and shapes.
fn prepare_op(op: Op, args: &RunArgs) -> Result<Prepared, Box<dyn std::error::Error>> {
    let attrs = Attrs::parse(op, &args.attrs, false)?;
    let files = input_files(&op.subject(), op.inputs(), &args.inputs)?;
    let dtype = Facts::dtype(op, args.dtype, &attrs)?;
    let float_input = |name: &str| {
        !matches!(
            name,
            "offsets"
                | "lengths"
                | "mask"
                | "session_offsets"
                | "user_offsets"
                | "segment"
                | "cond"
                | "columns"
                | "codes"
        )
    };
    let loaded = load_files(&files, |name| dtype == DType::BF16 && float_input(name))?;
    let facts = facts_from_files(op, dtype, &loaded, &files)?;
    let graph = opspec::build_graph(op, &facts, &attrs)?;
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
    let mut attrs: Vec<(String, AttrValue)> = attrs
        .graph_attrs(op)?
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    if op == Op::EventBoost {
        // The kernel takes the [G, C] table flattened, G and C as attributes.
        let (g, c) = (facts.inner[1], facts.inner[2]);
        if let Some(table) = inputs.get_mut("table") {
            *table = DenseTensor::new(vec![g * c], table.data().clone())?;
        }
        attrs.push(("segments".to_string(), AttrValue::Index(g)));
        attrs.push(("conditions".to_string(), AttrValue::Index(c)));
    }
    if op == Op::JaggedTopk
        && let Some(offsets) = inputs.get("offsets")
    {
        // The kernel's `starts [B]`: each sequence's first row.
        let entries = offsets.to_f64();
        let b = entries.len().saturating_sub(1);
        let starts = DenseTensor::from_f64(offsets.dtype(), vec![b], &entries[..b])?;
        inputs.insert("starts".to_string(), starts);
    }
    let mut levels = None;
    match op {
        // x [T, M * S] read as [T, M, S]; the kernel reads the centroids
        // of each sub-space transposed, `centroids_t [M, S, K]`.
        Op::ProductQuantize => {
            let [m, k, s] = facts.inner[..] else {
                unreachable!("checked by facts_from_files")
            };
            if let Some(x) = inputs.get_mut("x") {
                *x = DenseTensor::new(vec![x.shape()[0], m, s], x.data().clone())?;
            }
            if let Some(c) = inputs.remove("centroids") {
                let v = c.to_f64();
                let t: Vec<f64> = (0..m * s * k)
                    .map(|e| {
                        let (g, r) = (e / (s * k), e % (s * k));
                        v[g * k * s + (r % k) * s + r / k]
                    })
                    .collect();
                let centroids_t = DenseTensor::from_f64(c.dtype(), vec![m, s, k], &t)?;
                inputs.insert("centroids_t".to_string(), centroids_t);
            }
        }
        // The codebooks as one table [L * K, D], its levels' first rows
        // `base` and K as `codewords`.
        Op::SidEmbed => {
            let [l, k, d] = facts.inner[..] else {
                unreachable!("checked by facts_from_files")
            };
            if let Some(books) = inputs.remove("codebooks") {
                inputs.insert(
                    "table".to_string(),
                    DenseTensor::new(vec![l * k, d], books.data().clone())?,
                );
            }
            let base: Vec<f64> = (0..l).map(|i| (i * k) as f64).collect();
            inputs.insert(
                "base".to_string(),
                DenseTensor::from_f64(DType::I32, vec![l], &base)?,
            );
            attrs.push(("codewords".to_string(), AttrValue::Index(k)));
        }
        // One graph per level (run_levels).
        Op::ResidualQuantize => {
            let codebooks = inputs.remove("codebooks").expect("a checked input");
            if let Some(x) = inputs.remove("x") {
                inputs.insert("residual".to_string(), x);
            }
            let parsed = Attrs::parse(op, &args.attrs, false)?;
            levels = Some(Levels {
                next: opspec::quantize_graph(op, &facts, &parsed, DType::F32)?,
                codebooks,
            });
        }
        _ => {}
    }
    let spec_max_len = spec_max_len(op, &attrs, &inputs);
    Ok(Prepared {
        graph,
        subject: op.subject(),
        inputs,
        attrs,
        spec_max_len,
        levels,
    })
}

/// A `--graph` file: inputs named as its inputs, float files converted to
/// the float dtype each input declares (other dtypes must match, as the
/// runtime checks), attributes by their declared kinds.
fn prepare_graph_file(path: &Path, args: &RunArgs) -> Result<Prepared, Box<dyn std::error::Error>> {
    let graph = opspec::load_graph(path)?;
    let subject = opspec::graph_subject(&graph, path);
    let attrs = opspec::graph_file_attrs(&graph, path, &args.attrs)?;
    let names: Vec<&str> = graph.inputs().map(|(_, n, _)| n).collect();
    let files = input_files(&subject, &names, &args.inputs)?;
    let declared = |name: &str| {
        graph
            .inputs()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, t)| t.dtype)
    };
    let loaded = load_files(&files, |name| declared(name) == Some(DType::BF16))?;
    let mut inputs = BTreeMap::new();
    for (_, name, ty) in graph.inputs() {
        let tensor = &loaded[name];
        let tensor = if ty.dtype.is_float() && tensor.dtype() != ty.dtype {
            if !tensor.dtype().is_float() {
                let reason = format!("dtype {}, expected a float array", tensor.dtype());
                return Err(bad_input(name, &files[name], reason).into());
            }
            DenseTensor::from_f64(ty.dtype, tensor.shape().to_vec(), &tensor.to_f64())?
        } else {
            tensor.clone()
        };
        inputs.insert(name.to_string(), tensor);
    }
    let spec_max_len = match opspec::graph_attr_value(&graph, &attrs, "max_len") {
        Some(AttrValue::Index(n)) => n as u64,
        _ => 0,
    };
    Ok(Prepared {
        graph,
        subject,
        inputs,
        attrs,
        spec_max_len,
        levels: None,
    })
}

/// Loads every input file. A `<u2` (uint16) file is read as bf16 bits, the
/// project's convention for bf16 data (NumPy has no bf16), only for an
/// input that `is_bf16` names: elsewhere it is an error, not real uint16
/// values silently read as bf16.
fn load_files(
    files: &BTreeMap<String, PathBuf>,
    is_bf16: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, DenseTensor>, CliError> {
    let mut loaded = BTreeMap::new();
    for (name, path) in files {
        let bad = |e: String| bad_input(name, path, e);
        let array = npy::read(path).map_err(|e| bad(e.to_string()))?;
        if array.dtype == npy::NpyDtype::U16 && !is_bf16(name) {
            return Err(bad(
                "a uint16 array; uint16 .npy files are read as bf16 bits only for a bf16 input \
                 (use --dtype bf16, or save the values as floats)"
                    .to_string(),
            ));
        }
        let tensor = npy::to_dense(array, path).map_err(|e| bad(e.to_string()))?;
        loaded.insert(name.clone(), tensor);
    }
    Ok(loaded)
}

fn bad_input(name: &str, path: &std::path::Path, reason: String) -> CliError {
    CliError::BadInput {
        name: name.to_string(),
        path: path.display().to_string(),
        reason,
    }
}

/// `--in NAME=FILE` checked against the inputs of `subject`: none unknown,
/// none missing.
fn input_files(
    subject: &str,
    known: &[&str],
    args: &[String],
) -> Result<BTreeMap<String, PathBuf>, CliError> {
    let input_error = |problem, name: &str| CliError::Input {
        subject: subject.to_string(),
        problem,
        name: name.to_string(),
        known: known.join(", "),
    };
    let mut files = BTreeMap::new();
    for (name, path) in key_values("--in", args)? {
        if !known.contains(&name.as_str()) {
            return Err(input_error("unknown", &name));
        }
        files.insert(name, PathBuf::from(path));
    }
    if let Some(missing) = known.iter().find(|n| !files.contains_key(**n)) {
        return Err(input_error("missing", missing));
    }
    Ok(files)
}

/// `--out NAME=FILE` targets, each checked before anything runs: a name
/// given once, a file name whose directory exists and is writable, not a
/// directory, and no two outputs to the same file.
fn output_files(args: &[String]) -> Result<BTreeMap<String, PathBuf>, CliError> {
    let mut files = BTreeMap::new();
    // (the file, with its directory resolved; the output writing it)
    let mut seen: Vec<(PathBuf, String)> = Vec::new();
    for (name, path) in key_values("--out", args)? {
        let path = PathBuf::from(path);
        let resolved =
            check_output_path(&path).map_err(|reason| bad_output(&name, &path, reason))?;
        if let Some((_, first)) = seen.iter().find(|(p, _)| *p == resolved) {
            let reason = format!("the same file as --out {first}");
            return Err(bad_output(&name, &path, reason));
        }
        seen.push((resolved, name.clone()));
        files.insert(name, path);
    }
    Ok(files)
}

fn bad_output(name: &str, path: &Path, reason: String) -> CliError {
    CliError::BadOutput {
        name: name.to_string(),
        path: path.display().to_string(),
        reason,
    }
}

/// The directory an output file is written in (`.` for a bare file name).
fn output_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Checks that `path` can be written (atomically, through a temporary file
/// in its directory); returns it with its directory resolved, to compare.
fn check_output_path(path: &Path) -> Result<PathBuf, String> {
    let file = path
        .file_name()
        .ok_or_else(|| "not a file name".to_string())?;
    let dir = output_dir(path);
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) => return Err(format!("directory {}: {e}", dir.display())),
    }
    if path.is_dir() {
        return Err("is a directory".to_string());
    }
    // Writable: create (and remove) a file in it.
    let probe = dir.join(format!(".jagc-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| format!("directory {} is not writable: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("directory {}: {e}", dir.display()))?;
    Ok(dir.join(file))
}

/// The temporary file an output is written to before it is renamed over
/// `path`: hidden, in the same directory (so the rename is atomic), named
/// after it and this process.
fn temp_path(path: &Path) -> PathBuf {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Room for the prefix and suffix within a 255-byte file name.
    let mut end = file.len().min(200);
    while !file.is_char_boundary(end) {
        end -= 1;
    }
    output_dir(path).join(format!(".{}.jagc-{}.tmp", &file[..end], std::process::id()))
}

/// Writes the outputs named in `targets` atomically, all or none: every
/// output to a temporary file first (on a failure those are removed and no
/// target is touched), then each renamed over its target. Float outputs are
/// written as f32, integer outputs as they are.
fn write_outputs(
    results: &BTreeMap<String, DenseTensor>,
    targets: &BTreeMap<String, PathBuf>,
) -> Result<(), CliError> {
    let mut written: Vec<(&str, PathBuf, &Path)> = Vec::new();
    let remove_all = |written: &[(&str, PathBuf, &Path)]| {
        for (_, temp, _) in written {
            let _ = std::fs::remove_file(temp);
        }
    };
    for (name, path) in targets {
        let temp = temp_path(path);
        let result = results
            .get(name)
            .ok_or_else(|| "the run produced no such output".to_string())
            .and_then(|tensor| {
                let tensor = if tensor.dtype().is_float() && tensor.dtype() != DType::F32 {
                    &DenseTensor::from_f64(DType::F32, tensor.shape().to_vec(), &tensor.to_f64())
                        .map_err(|e| e.to_string())?
                } else {
                    tensor
                };
                npy::save_dense(tensor, &temp).map_err(|e| e.to_string())
            });
        if let Err(reason) = result {
            let _ = std::fs::remove_file(&temp);
            remove_all(&written);
            let reason = format!("{reason} (no output was written)");
            return Err(bad_output(name, path, reason));
        }
        written.push((name, temp, path));
    }
    for (k, (name, temp, path)) in written.iter().enumerate() {
        if let Err(e) = std::fs::rename(temp, path) {
            remove_all(&written[k..]);
            let done: Vec<&str> = written[..k].iter().map(|(n, _, _)| *n).collect();
            let reason = format!(
                "renaming {} over it: {e} (outputs already written: {})",
                temp.display(),
                if done.is_empty() {
                    "none".to_string()
                } else {
                    done.join(", ")
                }
            );
            return Err(bad_output(name, path, reason));
        }
    }
    Ok(())
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
            subject: op.subject(),
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
    let index_name = match op {
        Op::CompleteCumsum => "lengths",
        Op::SessionPool => "session_offsets",
        Op::UserPool => "user_offsets",
        _ => "offsets",
    };
    let index = integer(index_name, &[DType::I32, DType::I64])?;
    let mask = match op {
        Op::MaskedSelectJagged => integer("mask", &[DType::U8, DType::Bool])?,
        Op::EventBoost => integer("columns", &[DType::U8, DType::Bool])?,
        _ => DType::U8,
    };
    if op == Op::EventBoost {
        // segment and cond in the offsets' dtype.
        integer("segment", &[index])?;
        integer("cond", &[index])?;
    }
    for name in [
        "values",
        "dense",
        "q",
        "k",
        "v",
        "x",
        "y",
        "dout",
        "pooled",
        "table",
        "centroids",
        "codebooks",
    ] {
        if op.inputs().contains(&name) {
            float(name, 1)?;
        }
    }
    let (inner, value_dim) = match op {
        Op::CompleteCumsum => (Vec::new(), 0),
        Op::DenseToJagged => (float("dense", 2)?[2..].to_vec(), 0),
        Op::JaggedFlashAttention => {
            // q is [T, H, D] and v [T, H, Dv]: another rank is the file's
            // fault, not an attribute's.
            for name in ["q", "k", "v"] {
                let shape = float(name, 3)?;
                if shape.len() != 3 {
                    return Err(bad(
                        name,
                        format!("shape {shape:?}, expected [T, H, D] (3 dims)"),
                    ));
                }
            }
            let (q, v) = (float("q", 3)?, float("v", 3)?);
            (q[1..].to_vec(), v[2])
        }
        Op::FbgemmJaggedFlashAttentionBasic => {
            let q = float("q", 2)?;
            (q[1..].to_vec(), q[1])
        }
        // x [T, K] and y [B, K, M]; x [T, M] and y [T, P]; x [T, D] and
        // y [B, F, D]; x [T, D]. The kernels check the rest of the shapes.
        Op::JaggedDenseBmm | Op::JaggedDenseBmmBackward => {
            let (x, y) = (float("x", 2)?, float("y", 3)?);
            (vec![x[1], y[2]], 0)
        }
        Op::JaggedJaggedBmm | Op::JaggedJaggedBmmBackward => {
            let (x, y) = (float("x", 2)?, float("y", 2)?);
            (vec![x[1], y[1]], 0)
        }
        Op::JaggedDenseDot => {
            let (x, y) = (float("x", 2)?, float("y", 3)?);
            (vec![x[1], y[1]], 0)
        }
        Op::JaggedPairwiseDot => (vec![float("x", 2)?[1]], 0),
        Op::UserPool => (float("pooled", 1)?[1..].to_vec(), 0),
        Op::JaggedTopk => {
            float("scores", 1)?;
            (Vec::new(), 0)
        }
        // values [T, D], table [G, C]: inner [D, G, C].
        Op::EventBoost => {
            let (values, table) = (float("values", 2)?, float("table", 2)?);
            if values.len() != 2 || table.len() != 2 {
                let reason =
                    format!("values {values:?} and table {table:?}: expected [T, D] and [G, C]");
                return Err(bad("table", reason));
            }
            (vec![values[1], table[0], table[1]], 0)
        }
        // centroids [M, K, S] and x [T, M * S]; codebooks [L, K, D] and
        // x [T, D] or codes [T, L] (i32): inner [M, K, S] or [L, K, D].
        Op::ProductQuantize | Op::ResidualQuantize | Op::SidEmbed => {
            let books = if op == Op::ProductQuantize {
                "centroids"
            } else {
                "codebooks"
            };
            let c = float(books, 3)?;
            let rows = if op == Op::SidEmbed {
                integer("codes", &[DType::I32])?;
                file("codes")?.shape().to_vec()
            } else {
                float("x", 2)?
            };
            let row_len = match op {
                Op::ProductQuantize => c[0] * c.get(2).copied().unwrap_or(0),
                Op::ResidualQuantize => c.get(2).copied().unwrap_or(0),
                _ => c[0],
            };
            if c.len() != 3 || rows.len() != 2 || rows[1] != row_len {
                let (rows_name, want) = match op {
                    Op::ProductQuantize => ("x", "x [T, M * S] and centroids [M, K, S]"),
                    Op::ResidualQuantize => ("x", "x [T, D] and codebooks [L, K, D]"),
                    _ => ("codes", "codes [T, L] and codebooks [L, K, D]"),
                };
                let reason = format!("{rows_name} {rows:?} and {books} {c:?}: expected {want}");
                return Err(bad(books, reason));
            }
            (c, 0)
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
    attrs: &[(String, AttrValue)],
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
