//! `jagc emu`: run a PTX kernel in the emulator.

use clap::Args;

/// Arguments of `jagc emu`.
#[derive(Args)]
pub struct EmuArgs {
    /// The PTX file.
    pub file: std::path::PathBuf,
}

/// Runs `jagc emu`.
pub fn run(args: EmuArgs) -> Result<(), Box<dyn std::error::Error>> {
    Err(format!("jagc emu {}: not implemented yet", args.file.display()).into())
}
