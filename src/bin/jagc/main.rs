//! `jagc`: the command-line face of jagged.

mod emu;

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
    /// Run a PTX kernel in the emulator, with the memory checker on.
    Emu(emu::EmuArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Emu(args) => emu::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jagc: {err}");
            ExitCode::FAILURE
        }
    }
}
