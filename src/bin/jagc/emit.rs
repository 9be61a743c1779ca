//! `jagc emit`: the PTX of an op, or of a graph file, for a specialization
//! (and, with `--plan`, the code generator's plan: the fast path that took
//! the graph, or why none did and the general path's kernels). `jagc stats`
//! compiles the same way.

use std::path::PathBuf;

use clap::{ArgGroup, Args};
use jagged_codegen::templates::attention_bwd::compile_attention_backward;
use jagged_codegen::{Arch, CompiledKernel, Spec};
use jagged_ir::{AttrValue, DType, Graph};

use crate::opspec::{self, Attrs, CliError, Facts, Op};

/// The op (or graph file) and specialization options `emit` and `stats` share.
#[derive(Args)]
pub struct OpArgs {
    /// The op (OPS.md's name, e.g. jagged_softmax); or give --graph (each
    /// command requires one: see its `input` group).
    #[arg(conflicts_with = "graph")]
    pub op: Option<String>,
    /// A graph in the canonical text form instead of a builtin op; --attr
    /// then sets the attributes it declares (max_len sets the spec).
    #[arg(long, value_name = "FILE.jir")]
    pub graph: Option<PathBuf>,
    /// An attribute or size, K=V (repeatable; see below).
    #[arg(long = "attr", value_name = "K=V")]
    pub attrs: Vec<String>,
    /// The float dtype [f32; attention ops: bf16] (not with --graph: the
    /// file gives its dtypes).
    #[arg(long, value_parser = opspec::parse_dtype, conflicts_with = "graph")]
    pub dtype: Option<DType>,
}

/// Arguments of `jagc emit`.
#[derive(Args)]
#[command(after_help = opspec::ATTR_HELP)]
#[command(group(ArgGroup::new("input").required(true).args(["op", "graph"])))]
pub struct EmitArgs {
    #[command(flatten)]
    pub op: OpArgs,
    /// The target architecture.
    #[arg(long, default_value = "sm_80", value_parser = opspec::parse_arch)]
    pub arch: Arch,
    /// Print the code generator's plan before the PTX, as PTX comments: the
    /// fast path that took the graph, or why none did and the general path's
    /// kernels (what each fuses, scratch buffers); then the launches.
    #[arg(long)]
    pub plan: bool,
    /// Attention ops: the backward's kernels instead of the forward's.
    #[arg(long)]
    pub backward: bool,
}

/// The default `max_len` of `emit` and `stats` (a bucket of 128).
pub const DEFAULT_MAX_LEN: usize = 128;

/// A graph compiled for a spec, with the code generator's plan.
pub struct Compiled {
    /// The graph (the op's, or the file's).
    pub graph: Graph,
    /// Its kernels.
    pub kernel: CompiledKernel,
    /// The plan as text (`jagged_codegen::compile_with_plan`).
    pub plan: String,
}

/// The graph of `args` (builtin op or `--graph` file) and the `max_len` its
/// spec is bucketed by.
fn graph_of(args: &OpArgs) -> Result<(Graph, usize), CliError> {
    match (&args.op, &args.graph) {
        (Some(name), None) => {
            let op = Op::from_name(name)?;
            let attrs = Attrs::parse(op, &args.attrs, true)?;
            let dtype = Facts::dtype(op, args.dtype, &attrs)?;
            let facts = Facts::from_attrs(op, dtype, &attrs)?;
            let graph = opspec::build_graph(op, &facts, &attrs)?;
            Ok((graph, attrs.max_len()?.unwrap_or(DEFAULT_MAX_LEN)))
        }
        (None, Some(path)) => {
            let graph = opspec::load_graph(path)?;
            let attrs = opspec::graph_file_attrs(&graph, path, &args.attrs)?;
            let max_len = match opspec::graph_attr_value(&graph, &attrs, "max_len") {
                Some(AttrValue::Index(n)) => n,
                _ => DEFAULT_MAX_LEN,
            };
            Ok((graph, max_len))
        }
        _ => Err(CliError::NoOp),
    }
}

/// Builds and compiles the op (or graph file) of `args` for `arch`; with
/// `backward`, the backward of an attention forward instead (its plan is
/// then empty).
pub fn compile_op(
    args: &OpArgs,
    arch: Arch,
    backward: bool,
) -> Result<Compiled, Box<dyn std::error::Error>> {
    let (graph, max_len) = graph_of(args)?;
    let spec = Spec::for_graph(&graph, max_len as u64, arch)
        .map_err(|e| format!("specializing `{}`: {e}", graph.name()))?;
    let (kernel, plan) = if backward {
        let kernel = compile_attention_backward(&graph, &spec).map_err(|e| {
            format!(
                "compiling the backward of `{}` for {spec}: {e}",
                graph.name()
            )
        })?;
        (kernel, String::new())
    } else {
        jagged_codegen::compile_with_plan(&graph, &spec)
            .map_err(|e| format!("compiling `{}` for {spec}: {e}", graph.name()))?
    };
    Ok(Compiled {
        graph,
        kernel,
        plan,
    })
}

/// Runs `jagc emit`.
pub fn run(args: EmitArgs) -> Result<(), Box<dyn std::error::Error>> {
    let compiled = compile_op(&args.op, args.arch, args.backward)?;
    if args.plan {
        for line in compiled.plan.lines() {
            println!("// {line}");
        }
    }
    print!("{}", compiled.kernel.ptx);
    Ok(())
}
