//! Runs NVIDIA's `ptxas` on generated PTX and parses its resource report
//! (`-v`): registers, spills, stack frame, shared memory per kernel.
//!
//! The test suite uses it to prove every generated module assembles without
//! spills; `jagc stats` prints the raw report lines, and `jagc stats --sass`
//! disassembles the cubin (`crate::sass`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::spec::Arch;

/// Why `ptxas` could not check a module.
#[derive(Debug, thiserror::Error)]
pub enum PtxasError {
    /// No `ptxas` binary was found (see [`find`]).
    #[error("ptxas not found (set JAGGED_PTXAS or run scripts/install-tools.sh)")]
    NotFound,
    /// Writing the temporary input or running the binary failed.
    #[error("running {path}: {source}")]
    Io {
        /// The file or binary involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `ptxas` rejected the module; `log` is its output.
    #[error("ptxas -arch={arch} failed:\n{log}")]
    Rejected {
        /// Target architecture.
        arch: Arch,
        /// Its stdout and stderr.
        log: String,
    },
}

/// Resources of one kernel, as reported by `ptxas -v`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// Entry name.
    pub name: String,
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of spill stores.
    pub spill_stores: u32,
    /// Bytes of spill loads.
    pub spill_loads: u32,
    /// Bytes of stack frame.
    pub stack_frame: u32,
    /// Bytes of static shared memory.
    pub shared_bytes: u32,
}

/// The report of one `ptxas -v` run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtxasReport {
    /// Target architecture.
    pub arch: Arch,
    /// The raw `ptxas info` lines (what `jagc stats` prints).
    pub lines: Vec<String>,
    /// Parsed per-kernel resources, in report order.
    pub kernels: Vec<KernelResources>,
}

impl PtxasReport {
    /// Kernels that spill or use a stack frame (a bug in generated code).
    pub fn offenders(&self) -> Vec<&KernelResources> {
        self.kernels
            .iter()
            .filter(|k| k.spill_loads > 0 || k.spill_stores > 0 || k.stack_frame > 0)
            .collect()
    }
}

/// Locates `ptxas`: `$JAGGED_PTXAS`, then [`find_tool`].
pub fn find() -> Option<PathBuf> {
    std::env::var_os("JAGGED_PTXAS")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| find_tool("ptxas"))
}

/// Locates one of the CUDA tools (`ptxas`, `nvdisasm`) by `name`: in
/// `.tools/bin` at the workspace root (where scripts/install-tools.sh puts
/// them), next to `$JAGGED_PTXAS`, then on `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut dirs = vec![workspace.join(".tools").join("bin")];
    if let Some(p) = std::env::var_os("JAGGED_PTXAS") {
        dirs.extend(Path::new(&p).parent().map(Path::to_path_buf));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A fresh path in the temporary directory, ending in `.{ext}`.
pub fn temp_path(ext: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("jagged-ptxas-{}-{n}.{ext}", std::process::id()))
}

/// Assembles `ptx` for `arch` with `ptxas -v` and returns its report.
pub fn assemble(ptx: &str, arch: Arch) -> Result<PtxasReport, PtxasError> {
    let ptxas = find().ok_or(PtxasError::NotFound)?;
    assemble_with(&ptxas, ptx, arch)
}

/// [`assemble`] with an explicit `ptxas` binary.
pub fn assemble_with(ptxas: &Path, ptx: &str, arch: Arch) -> Result<PtxasReport, PtxasError> {
    assemble_cubin_with(ptxas, ptx, arch).map(|(report, _)| report)
}

/// [`assemble_with`], also returning the cubin.
pub fn assemble_cubin_with(
    ptxas: &Path,
    ptx: &str,
    arch: Arch,
) -> Result<(PtxasReport, Vec<u8>), PtxasError> {
    let input = temp_path("ptx");
    let output = input.with_extension("cubin");
    std::fs::write(&input, ptx).map_err(|source| PtxasError::Io {
        path: input.clone(),
        source,
    })?;
    let result = Command::new(ptxas)
        .arg(format!("-arch={}", arch.ptx_target()))
        .arg("-v")
        .arg("-o")
        .arg(&output)
        .arg(&input)
        .output();
    let cubin = std::fs::read(&output);
    // Best-effort cleanup: leftover temporaries are harmless.
    let _ = std::fs::remove_file(&input);
    let _ = std::fs::remove_file(&output);
    let result = result.map_err(|source| PtxasError::Io {
        path: ptxas.to_path_buf(),
        source,
    })?;
    let mut log = String::from_utf8_lossy(&result.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&result.stderr));
    if !result.status.success() {
        return Err(PtxasError::Rejected { arch, log });
    }
    let cubin = cubin.map_err(|source| PtxasError::Io {
        path: output,
        source,
    })?;
    Ok((parse_report(arch, &log), cubin))
}

/// Parses the `-v` output of `ptxas`.
pub fn parse_report(arch: Arch, log: &str) -> PtxasReport {
    let lines: Vec<String> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in &lines {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            kernels.push(KernelResources {
                name,
                ..KernelResources::default()
            });
            continue;
        }
        let Some(current) = kernels.last_mut() else {
            continue;
        };
        if line.contains("bytes stack frame") {
            current.stack_frame = number_before(line, "bytes stack frame");
            current.spill_stores = number_before(line, "bytes spill stores");
            current.spill_loads = number_before(line, "bytes spill loads");
        }
        if line.contains("registers") {
            current.registers = number_before(line, "registers");
            current.shared_bytes = number_before(line, "bytes smem");
        }
    }
    PtxasReport {
        arch,
        lines,
        kernels,
    }
}

/// The integer right before `marker` in `line` (0 when absent).
fn number_before(line: &str, marker: &str) -> u32 {
    let Some(pos) = line.find(marker) else {
        return 0;
    };
    line[..pos]
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_verbose_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'k1' for 'sm_80'\n\
ptxas info    : Function properties for k1\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 23 registers, used 1 barriers, 128 bytes smem, 380 bytes cmem[0]\n";
        let report = parse_report(Arch::Sm80, log);
        assert_eq!(report.lines.len(), 5);
        assert_eq!(
            report.kernels,
            vec![KernelResources {
                name: "k1".into(),
                registers: 23,
                spill_stores: 4,
                spill_loads: 12,
                stack_frame: 8,
                shared_bytes: 128,
            }]
        );
        assert_eq!(report.offenders().len(), 1);
    }
}
