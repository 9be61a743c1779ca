//! `bench/gpu/attention_bench.py --dry-run`: the GPU benchmark harness runs
//! end to end on tiny sizes with the emulator as its backend, says what its
//! columns measure, and refuses a plan built for another number of heads.

#[path = "../../tests/common/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `python3 bench/gpu/attention_bench.py ARGS` from the repository root, or
/// `None` (a skip) without python3 where the tools are not required.
fn bench(test: &str, args: &[&str]) -> Option<Output> {
    let python = tools::python3(test)?;
    let script = root().join("bench").join("gpu").join("attention_bench.py");
    let output = Command::new(python)
        .arg(&script)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run python3");
    Some(output)
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn attention_bench_dry_run() {
    let Some(output) = bench("attention_bench_dry_run", &["--dry-run"]) else {
        return;
    };
    let (stdout, stderr) = text(&output);
    assert!(
        output.status.success(),
        "dry run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("dry run ok: 4 configurations"), "{stdout}");
    // H is explicit: 16 by default, in the header and in every name.
    assert!(stdout.contains("H = 16 heads for every D"), "{stdout}");
    assert_eq!(stdout.matches(" H=16 ").count(), 4, "{stdout}");
    // What the baselines measure, and the spread of the times.
    for said in [
        "median [min-max] ms",
        "valid (query, key) pairs only",
        "sdpa-flash-padded: zero-padded inputs and NO padding mask",
        "sdpa-padded-masked: the padded inputs with a boolean padding (and causal) mask",
        "mostly host overhead",
        "sdpa-nested-graph: sdpa-nested replayed from CUDA graphs",
        "sdpa-padded-masked fwd",
        "sdpa-nested-graph bwd",
    ] {
        assert!(stdout.contains(said), "missing {said:?}:\n{stdout}");
    }
}

/// `--heads` reaches the kernels: the emulator runs them for H = 4.
#[test]
fn attention_bench_dry_run_heads_option() {
    let args = [
        "--dry-run",
        "--heads",
        "4",
        "--fwd-only",
        "--filter",
        "d64_n40_full",
    ];
    let Some(output) = bench("attention_bench_dry_run_heads_option", &args) else {
        return;
    };
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("dry run ok: 2 configurations"), "{stdout}");
    assert!(stdout.contains("H = 4 heads for every D"), "{stdout}");
    assert_eq!(stdout.matches("d64_n40_full H=4 ").count(), 2, "{stdout}");
}

/// Regression: the plan's D = 128 specs had H = 1024 / D = 8 while the
/// results said H = 16. A plan without an H = 16 build of a selected spec
/// now stops the GPU run (exit 2) before any GPU module is imported.
#[test]
fn attention_bench_refuses_a_plan_for_other_heads() {
    let dir = std::env::temp_dir().join(format!("jagged-bench-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = |id: &str, d: u32, h: u32| {
        format!(
            "{{\"id\": \"{id}\", \"head_dim\": {d}, \"heads\": {h}, \"max_len\": 256, \"causal\": false, \"scale\": 0.125, \"fwd\": {{}}, \"bwd\": {{}}}}"
        )
    };
    let manifest = format!(
        "{{\"specs\": [{}, {}]}}",
        spec("d64_n256_full", 64, 16),
        spec("d128_n256_full", 128, 8)
    );
    std::fs::write(dir.join("manifest.json"), manifest).expect("manifest");
    let plan = dir.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["--plan", plan.as_str()];
        all.extend_from_slice(args);
        bench("attention_bench_refuses_a_plan_for_other_heads", &all)
    };
    let Some(default_heads) = run(&[]) else {
        return;
    };
    let matching = run(&["--heads", "8", "--filter", "d64"]).expect("python3 ran before");
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = text(&default_heads);
    assert_eq!(default_heads.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no H=16 build of d128_n256_full (H=8)"),
        "{stderr}"
    );
    // Nothing of the plan has H = 8 among the d64 specs either.
    let (stdout, stderr) = text(&matching);
    assert_eq!(matching.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no H=8 build of d64_n256_full (H=16)"),
        "{stderr}"
    );
}
