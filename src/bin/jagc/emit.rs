//! `jagc emit`: the PTX of an op for a specialization (and, with `--plan`,
//! its launch plan). `jagc stats` compiles the same way.

use clap::Args;
use jagged_codegen::{Arch, CompiledKernel, Spec};
use jagged_ir::{DType, Graph};

use crate::opspec::{self, Attrs, Facts, Op};

/// The op and specialization options `emit` and `stats` share.
#[derive(Args)]
pub struct OpArgs {
    /// The op (OPS.md's name, e.g. jagged_softmax).
    pub op: String,
    /// An attribute or size, K=V (repeatable; see below).
    #[arg(long = "attr", value_name = "K=V")]
    pub attrs: Vec<String>,
    /// The float dtype [f32; attention ops: bf16].
    #[arg(long, value_parser = opspec::parse_dtype)]
    pub dtype: Option<DType>,
}

/// Arguments of `jagc emit`.
#[derive(Args)]
#[command(after_help = opspec::ATTR_HELP)]
pub struct EmitArgs {
    #[command(flatten)]
    pub op: OpArgs,
    /// The target architecture.
    #[arg(long, default_value = "sm_80", value_parser = opspec::parse_arch)]
    pub arch: Arch,
    /// Print the launch plan (outputs, scratch, launches) before the PTX, as
    /// PTX comments.
    #[arg(long)]
    pub plan: bool,
}

/// The default `max_len` of `emit` and `stats` (a bucket of 128).
pub const DEFAULT_MAX_LEN: usize = 128;

/// Builds and compiles the op of `args` for `arch`.
pub fn compile_op(
    args: &OpArgs,
    arch: Arch,
) -> Result<(Graph, CompiledKernel), Box<dyn std::error::Error>> {
    let op = Op::from_name(&args.op)?;
    let attrs = Attrs::parse(op, &args.attrs, true)?;
    let dtype = Facts::dtype(op, args.dtype, &attrs)?;
    let facts = Facts::from_attrs(op, dtype, &attrs)?;
    let graph = opspec::build_graph(op, &facts, &attrs)?;
    let max_len = attrs.max_len()?.unwrap_or(DEFAULT_MAX_LEN);
    let spec = Spec::for_graph(&graph, max_len as u64, arch)?;
    let kernel = jagged_codegen::compile(&graph, &spec)
        .map_err(|e| format!("compiling `{}` for {spec}: {e}", op.name()))?;
    Ok((graph, kernel))
}

/// Runs `jagc emit`.
pub fn run(args: EmitArgs) -> Result<(), Box<dyn std::error::Error>> {
    let (_, kernel) = compile_op(&args.op, args.arch)?;
    if args.plan {
        for line in kernel.to_string().lines() {
            println!("// {line}");
        }
    }
    print!("{}", kernel.ptx);
    Ok(())
}
