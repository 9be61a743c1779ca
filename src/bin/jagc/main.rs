//! `jagc`: the command-line face of jagged.

mod crosscheck;
mod demo;
mod emit;
mod emu;
mod opspec;
mod run;
mod stats;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Compile, inspect and run jagged kernels.
#[derive(Parser)]
#[command(name = "jagc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Jagged flash attention on a skewed batch next to its padded
    /// equivalent, and one composed op through the general path, on the best
    /// backend present: errors against the reference, times, memory.
    Demo(demo::DemoArgs),
    /// Print the PTX of an op (or a --graph file) for a specialization.
    Emit(emit::EmitArgs),
    /// Print ptxas's resource report for every kernel of an op (or a --graph file).
    Stats(stats::StatsArgs),
    /// Run an op (or a --graph file) on .npy inputs (reference, emulator or GPU)
    /// and write .npy outputs.
    Run(run::RunArgs),
    /// Run a PTX kernel in the emulator, with the memory checker on.
    Emu(emu::EmuArgs),
    /// Run a PTX kernel on the GPU and in the emulator and compare every
    /// buffer (exit status 0: all pass, 1: a mismatch, 2: an error).
    Crosscheck(crosscheck::CrosscheckArgs),
}

/// Restores the default action of SIGPIPE, so that writing to a closed pipe
/// (`jagc emit ... | head`) ends the process quietly, as command-line tools
/// do, instead of panicking in `println!`.
fn quiet_on_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: `signal` with `SIG_DFL` only resets the disposition of SIGPIPE;
    // it is called once, first thing in `main`, before any other thread
    // exists, and no handler code of ours runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Emit(args) => emit::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Run(args) => run::run(args),
        Command::Emu(args) => emu::run(args),
        // Its own exit status: a mismatch (1) is not an error (2).
        Command::Crosscheck(args) => return crosscheck::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jagc: {err}");
            ExitCode::FAILURE
        }
    }
}
