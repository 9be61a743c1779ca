//! `bench/gpu/attention_bench.py --dry-run`: the GPU benchmark harness runs
//! end to end on tiny sizes with the emulator as its backend.

#[path = "../../tests/common/tools.rs"]
mod tools;

use std::path::Path;
use std::process::Command;

#[test]
fn attention_bench_dry_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("bench").join("gpu").join("attention_bench.py");
    let Some(python) = tools::python3("attention_bench_dry_run") else {
        return;
    };
    let output = Command::new(python)
        .arg(&script)
        .arg("--dry-run")
        .current_dir(&root)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dry run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("dry run ok: 4 configurations"), "{stdout}");
}
