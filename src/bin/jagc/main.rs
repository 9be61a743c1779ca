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
    /// Build, compile and run jagged_softmax and jagged_reduce on random
    /// sequences on the best backend present; report error and times.
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

fn main() -> ExitCode {
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
