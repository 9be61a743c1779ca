//! `jagc stats`: ptxas's resource report (registers, spills, stack frame,
//! shared memory) for every kernel of an op or `--graph` file, as ptxas writes
//! it; with `--sass`, each kernel's steady-state loop in SASS instead
//! (`jagged_codegen::sass`), also for a PTX or cubin file from elsewhere.

use std::path::PathBuf;

use clap::{ArgGroup, Args};
use jagged_codegen::sass::{self, LoopReport};
use jagged_codegen::{Arch, ptxas};

use crate::emit::{OpArgs, compile_op};
use crate::opspec;

/// Arguments of `jagc stats`.
#[derive(Args)]
#[command(after_help = opspec::ATTR_HELP)]
#[command(group(ArgGroup::new("input").required(true).args(["op", "graph", "ptx", "cubin"])))]
pub struct StatsArgs {
    #[command(flatten)]
    pub op: OpArgs,
    /// The target architecture(s) (repeatable) [sm_80 and sm_90a].
    #[arg(long, value_parser = opspec::parse_arch)]
    pub arch: Vec<Arch>,
    /// Instead of ptxas's report: assemble, disassemble (nvdisasm) and count
    /// each kernel's steady-state loop (the loop with the most HMMA/HGMMA
    /// outside nested loops; without MMAs, the largest innermost loop).
    #[arg(long)]
    pub sass: bool,
    /// With --sass: after each kernel, the blocks of its loop that a
    /// forward jump inside the loop skips (what an iteration may not run).
    #[arg(long, requires = "sass")]
    pub skips: bool,
    /// Attention ops: the backward's kernels instead of the forward's.
    #[arg(long, conflicts_with_all = ["ptx", "cubin"])]
    pub backward: bool,
    /// With --sass: a PTX file instead of an op, assembled for each --arch.
    #[arg(long, value_name = "FILE.ptx", requires = "sass", conflicts_with_all = ["op", "graph", "cubin"])]
    pub ptx: Option<PathBuf>,
    /// With --sass: a cubin instead of an op, disassembled as it is (for
    /// the arch it was built for; --arch is ignored).
    #[arg(long, value_name = "FILE.cubin", requires = "sass", conflicts_with_all = ["op", "graph"])]
    pub cubin: Option<PathBuf>,
}

/// Runs `jagc stats`.
pub fn run(args: StatsArgs) -> Result<(), Box<dyn std::error::Error>> {
    let archs = if args.arch.is_empty() {
        Arch::ALL.to_vec()
    } else {
        args.arch.clone()
    };
    if let Some(path) = &args.cubin {
        let reports = sass::analyze_cubin_file(path)?;
        print_sass(&path.display().to_string(), &reports, args.skips);
        return Ok(());
    }
    // Find the tools before compiling anything, so that their absence is the error.
    ptxas::find().ok_or(ptxas::PtxasError::NotFound)?;
    if args.sass {
        sass::find_nvdisasm().ok_or(sass::SassError::NvdisasmNotFound)?;
    }
    for arch in archs {
        let (name, ptx, kernels) = match &args.ptx {
            Some(path) => {
                let ptx = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                (path.display().to_string(), ptx, None)
            }
            None => {
                let compiled = compile_op(&args.op, arch, args.backward)?;
                let name = compiled.graph.name().to_string();
                let n = compiled.kernel.launches.len();
                (name, compiled.kernel.ptx, Some(n))
            }
        };
        let title = match (kernels, args.backward) {
            (Some(n), false) => format!("{name} for {arch}: {n} kernel(s)"),
            (Some(n), true) => format!("{name} (backward) for {arch}: {n} kernel(s)"),
            (None, _) => format!("{name} for {arch}"),
        };
        if args.sass {
            print_sass(&title, &sass::analyze_ptx(&ptx, arch)?, args.skips);
        } else {
            let report = ptxas::assemble(&ptx, arch)?;
            println!("# {title}");
            for line in &report.lines {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The columns of `--sass`, after the loop's span and before the kernel.
const COLUMNS: [&str; 14] = [
    "instrs",
    "HMMA",
    "HGMMA",
    "LDSM",
    "LDGSTS",
    "UTMALDG",
    "BAR",
    "EX2",
    "SHFL",
    "FFMA",
    "FMUL",
    "FADD",
    "instr/MMA",
    "instr/16816",
];

/// One row: `span`, the cells under [`COLUMNS`], then `kernel`.
fn row(span: &str, cells: &[String], kernel: &str) -> String {
    let mut line = format!("{span:<12}");
    for (cell, head) in cells.iter().zip(COLUMNS) {
        line.push_str(&format!(" {cell:>w$}", w = head.len().max(5)));
    }
    format!("{line}  {kernel}")
}

/// Prints the steady-state loop of every kernel, one row each (with
/// `skips`, then one line per skippable block).
fn print_sass(title: &str, reports: &[LoopReport], skips: bool) {
    println!("# {title}: steady-state loop (static SASS counts per iteration)");
    let heads: Vec<String> = COLUMNS.iter().map(|h| h.to_string()).collect();
    println!("{}", row("loop", &heads, "kernel (instructions)"));
    for r in reports {
        let c = &r.counts;
        let span = r.span.map_or_else(
            || "no loop".to_string(),
            |(a, b)| format!("{a:04x}-{b:04x}"),
        );
        let kind = if c.hgmma > 0 { "HGMMA" } else { "HMMA" };
        let ratio = |x: Option<f64>, unit: &str| {
            x.map_or_else(|| "-".to_string(), |x| format!("{x:.2}{unit}"))
        };
        let mut cells: Vec<String> = [
            c.instructions,
            c.hmma,
            c.hgmma,
            c.ldsm,
            c.ldgsts,
            c.utmaldg,
            c.bar,
            c.mufu_ex2,
            c.shfl,
            c.ffma,
            c.fmul,
            c.fadd,
        ]
        .iter()
        .map(u32::to_string)
        .collect();
        cells.push(ratio(c.per_mma(), &format!("/{kind}")));
        cells.push(ratio(c.per_hmma_work(), ""));
        let kernel = format!("{} ({})", r.kernel, r.total_instructions);
        println!("{}", row(&span, &cells, &kernel));
        for skip in r.skips.iter().filter(|_| skips) {
            let (first, last) = skip.span;
            let jump = skip.predicate.as_deref().unwrap_or("unconditional");
            println!(
                "  skip {first:04x}-{last:04x}: {:>4} instrs ({} MMA, {} LDGSTS) when the {jump} jump at {:04x} is taken",
                skip.counts.instructions,
                skip.counts.mma(),
                skip.counts.ldgsts,
                skip.branch
            );
        }
    }
}
