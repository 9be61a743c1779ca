//! Required-or-skip for the external tools some tests run (ptxas and
//! nvdisasm). One decision for every test crate: the facade's tests include it
//! as `common::tools`, the code generator's with
//! `#[path = "../../tests/common/tools.rs"] mod tools;`.
//!
//! Under the test command (`scripts/test.sh`, which exports `JAGGED_PTXAS`)
//! or in CI (`CI` set) a missing tool fails the test; a plain `cargo test`
//! without the tools skips it, saying so on stderr.

#![allow(dead_code)] // Each test crate uses a different subset.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Whether missing tools fail the run, given the values of `CI` and
/// `JAGGED_PTXAS`: either one set (to anything, even empty) requires them.
pub fn required_by(ci: Option<OsString>, jagged_ptxas: Option<OsString>) -> bool {
    ci.is_some() || jagged_ptxas.is_some()
}

/// [`required_by`] on this process's environment.
pub fn required() -> bool {
    required_by(std::env::var_os("CI"), std::env::var_os("JAGGED_PTXAS"))
}

/// The message for a missing `tool` in `test`; it panics with it when the
/// tools are `required`, else it returns the `SKIPPED` line to print.
pub fn missing(test: &str, tool: &str, why: &str, required: bool) -> String {
    let fix = "run scripts/install-tools.sh, or the test command scripts/test.sh";
    assert!(
        !required,
        "{test}: {tool} is required (CI or JAGGED_PTXAS is set) but {why}: {fix}"
    );
    format!("SKIPPED {test}: {tool} {why} ({fix}; required when CI or JAGGED_PTXAS is set)")
}

/// `found`, or, when the tool is missing (`Err(why)`): a panic if the tools
/// are [`required`], else `None` after a `SKIPPED` line on stderr. The line
/// is written to the process's stderr directly, not with `eprintln!`, which
/// the test harness captures and hides for a passing test.
pub fn require<T>(test: &str, tool: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(t) => Some(t),
        Err(why) => {
            let line = missing(test, tool, &why, required());
            let _ = writeln!(std::io::stderr(), "{line}");
            None
        }
    }
}

/// `ptxas` as the code generator finds it (`$JAGGED_PTXAS`, `.tools/bin`,
/// `PATH`), or [`require`]'s skip.
pub fn ptxas(test: &str) -> Option<PathBuf> {
    let found = jagged_codegen::ptxas::find().ok_or_else(|| "was not found".to_string());
    require(test, "ptxas", found)
}

/// `nvdisasm` from the workspace's `.tools/bin`, next to `$JAGGED_PTXAS`, or
/// on `PATH`, or [`require`]'s skip.
pub fn nvdisasm(test: &str) -> Option<PathBuf> {
    require(test, "nvdisasm", find("nvdisasm"))
}

/// The first `name` in `.tools/bin` of the workspace, the folder of
/// `$JAGGED_PTXAS`, then `PATH`.
pub fn find(name: &str) -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = manifest
        .ancestors()
        .take(2)
        .map(|d| d.join(".tools").join("bin"))
        .collect();
    if let Some(p) = std::env::var_os("JAGGED_PTXAS") {
        dirs.extend(Path::new(&p).parent().map(Path::to_path_buf));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| "was not found in .tools/bin or on PATH".to_string())
}
