//! `ptx_crosscheck`: runs one PTX kernel on the CUDA backend and the
//! emulator, compares every buffer and prints the times. See
//! `jagged_runtime::crosscheck` for the argument specs; `--backends emu` is
//! the dry run for machines without a GPU.

use jagged_runtime::crosscheck::{CrosscheckError, Options};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("ptx_crosscheck: {err}");
            ExitCode::from(2)
        }
    }
}

/// Runs the check; `Ok(false)` when a buffer differs beyond the tolerance.
fn run(args: &[String]) -> Result<bool, CrosscheckError> {
    let options = Options::parse(args)?;
    let check = &options.check;
    println!(
        "kernel {}: grid {:?} block {:?} shared {} B",
        check.kernel, check.dims.grid, check.dims.block, check.dims.dynamic_shared_bytes
    );
    let mut runs = Vec::new();
    for &backend in &options.backends {
        let run = check.run(backend)?;
        let instructions = run
            .warp_instructions
            .map(|n| format!(", {n} warp instructions"))
            .unwrap_or_default();
        println!(
            "{backend:<4} on {}: best {:.3} ms of {} launch(es){instructions}",
            run.device,
            run.best().as_secs_f64() * 1e3,
            run.times.len()
        );
        if runs.is_empty() {
            // Saved before the other backends run, so that a failure there
            // still leaves the first backend's results.
            check.save_outputs(&run)?;
            if let Some(dir) = &options.save_dir {
                check.save_all(&run, dir)?;
            }
        }
        runs.push(run);
    }
    let Some(first) = runs.first() else {
        return Err(CrosscheckError::Usage(
            "--backends names no backend".to_string(),
        ));
    };
    let (reference, others) = match &options.expect_dir {
        Some(dir) => (check.load_reference(dir)?, &runs[..]),
        None => (first.clone(), &runs[1..]),
    };
    let reference = &reference;
    let mut pass = true;
    for run in others {
        for comparison in check.compare(run, reference, options.tolerance) {
            println!("{} vs {}: {comparison}", run.backend, reference.device);
            pass &= comparison.pass;
        }
    }
    if others.is_empty() {
        println!("single backend: nothing compared");
    }
    println!("RESULT {}", if pass { "PASS" } else { "FAIL" });
    Ok(pass)
}
