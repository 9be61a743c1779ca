//! `jagc stats`: ptxas's resource report (registers, spills, stack frame,
//! shared memory) for every kernel of an op or `--graph` file, as ptxas writes it.

use clap::Args;
use jagged_codegen::{Arch, ptxas};

use crate::emit::{OpArgs, compile_op};
use crate::opspec;

/// Arguments of `jagc stats`.
#[derive(Args)]
#[command(after_help = opspec::ATTR_HELP)]
pub struct StatsArgs {
    #[command(flatten)]
    pub op: OpArgs,
    /// The target architecture(s) (repeatable) [sm_80 and sm_90a].
    #[arg(long, value_parser = opspec::parse_arch)]
    pub arch: Vec<Arch>,
}

/// Runs `jagc stats`.
pub fn run(args: StatsArgs) -> Result<(), Box<dyn std::error::Error>> {
    let archs = if args.arch.is_empty() {
        Arch::ALL.to_vec()
    } else {
        args.arch
    };
    // Find ptxas before compiling anything, so that its absence is the error.
    ptxas::find().ok_or(ptxas::PtxasError::NotFound)?;
    for arch in archs {
        let compiled = compile_op(&args.op, arch)?;
        let report = ptxas::assemble(&compiled.kernel.ptx, arch)?;
        println!(
            "# {} for {arch}: {} kernel(s)",
            compiled.graph.name(),
            compiled.kernel.launches.len()
        );
        for line in &report.lines {
            println!("{line}");
        }
    }
    Ok(())
}
