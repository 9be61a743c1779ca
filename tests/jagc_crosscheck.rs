//! `jagc crosscheck` in its dry-run form (emulator only), as CI can run it:
//! the subcommand on one kernel, and bench/gpu/run_crosscheck.sh over every
//! fixture with its recipe.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_jagc");

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `jagc crosscheck`, its arguments still to add.
fn crosscheck() -> Command {
    let mut command = Command::new(BIN);
    command.arg("crosscheck");
    command
}

/// The runtime's test kernel: `c[i] = a[i] + b[i]` for `i < n`.
fn vadd() -> PathBuf {
    repo_root().join("runtime/tests/data/vadd.ptx")
}

/// The stdout of a command that must have succeeded (else a panic with its output).
fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_subcommand_runs_a_kernel_on_the_emulator_twice_and_compares() {
    let output = crosscheck()
        .args([
            "--backends",
            "emu,emu",
            "--grid",
            "4",
            "--block",
            "64",
            "--tol",
            "0",
        ])
        .arg(vadd())
        .args([
            "vadd",
            "rand:f32:250",
            "rand:f32:250:2",
            "poison:f32:250",
            "u32:250",
        ])
        .output()
        .unwrap();
    let stdout = succeeded(&output);
    // Two inputs and the output, each compared.
    assert_eq!(stdout.matches(": PASS").count(), 3, "{stdout}");
    assert!(stdout.contains("RESULT PASS"), "{stdout}");
}

#[test]
fn the_subcommand_reports_bad_arguments_with_status_2() {
    let output = crosscheck()
        .args(["--backends", "emu"])
        .arg(vadd())
        .args(["vadd", "zeros:f32:4", "zeros:f32:4", "zeros:f32:4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("argument 3"), "{stderr}");
}

#[test]
fn a_tensor_map_must_name_an_earlier_buffer() {
    let output = crosscheck()
        .args(["--backends", "emu"])
        .arg(vadd())
        .args([
            "vadd",
            "tmap:2:f32:16:-:16",
            "zeros:f32:16",
            "zeros:f32:16",
            "u32:16",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("argument 2 is not an earlier buffer argument"),
        "{stderr}"
    );
}

/// The fixtures the dry run must pass: the runtime's own kernel, the
/// first Triton fixtures, Triton's wgmma matmuls and its Hopper TMA kernels
/// (host-side tensor descriptors: `host:` buffers and `tmap:` arguments). The script runs every
/// fixture on the GPU machine; this list is fixed so that a fixture added while
/// the emulator cannot run it yet does not fail this crate's tests.
const DRY_RUN_FIXTURES: [&str; 13] = [
    "vadd",
    "sum_atomic",
    "softmax_rows",
    "matmul_bf16",
    "attention_fwd",
    "wgmma_matmul_bf16",
    "wgmma_matmul_f16_nk",
    "wgmma_matmul_f16_wide",
    "hopper_matmul_tma",
    "hopper_matmul_persistent",
    "hopper_attention_d64",
    "hopper_attention_d64_causal",
    "hopper_attention_d128",
];

#[test]
fn the_gpu_script_dry_runs_the_fixtures_on_the_emulator() {
    let output = Command::new("bash")
        .arg(repo_root().join("bench/gpu/run_crosscheck.sh"))
        .arg("--dry-run")
        .args(DRY_RUN_FIXTURES)
        .env("JAGGED_CROSSCHECK_BIN", BIN)
        .output()
        .unwrap();
    let stdout = succeeded(&output);
    for name in DRY_RUN_FIXTURES {
        assert!(
            stdout.contains(&format!("\n{name} PASS emu ")),
            "{name}: {stdout}"
        );
    }
}

#[test]
fn the_gpu_script_skips_a_fixture_without_a_recipe() {
    let output = Command::new("bash")
        .arg(repo_root().join("bench/gpu/run_crosscheck.sh"))
        .args(["--dry-run", "vadd", "no_such_fixture"])
        .env("JAGGED_CROSSCHECK_BIN", BIN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A fixture file that is missing is a failure; one without a recipe a skip.
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no_such_fixture MISSING"), "{stdout}");
}

#[test]
fn npy_inputs_and_outputs_round_trip_through_the_subcommand() {
    use jagged::cli::npy::{self, NpyArray, NpyDtype};
    let dir = std::env::temp_dir().join(format!("jagged-xc-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = 100usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 1.5).collect();
    let b: Vec<f32> = (0..n).map(|i| 7.0 - i as f32).collect();
    for (name, values) in [("a.npy", &a), ("b.npy", &b)] {
        let array = NpyArray {
            dtype: NpyDtype::F32,
            shape: vec![n],
            data: jagged_runtime::to_bytes(values),
        };
        npy::write(dir.join(name), &array).unwrap();
    }
    let spec = |s: &str| s.replace("DIR", &dir.display().to_string());
    let output = crosscheck()
        .args(["--backends", "emu", "--grid", "1", "--block", "128"])
        .arg(vadd())
        .arg("vadd")
        .args([
            spec("in:DIR/a.npy"),
            spec("inout:DIR/b.npy:DIR/b_after.npy"),
        ])
        .args([spec("out:DIR/c.npy:f32:100"), "u32:100".to_string()])
        .output()
        .unwrap();
    succeeded(&output);
    let c = npy::read(dir.join("c.npy")).unwrap();
    let c: Vec<f32> = jagged_runtime::from_bytes("c", &c.data).unwrap();
    // Sums of small integers and halves: exact in f32.
    let expected: Vec<f32> = (0..n)
        .map(|i| (i as f64 * 1.5 + 7.0 - i as f64) as f32)
        .collect();
    assert_eq!(c, expected);
    let b_after = npy::read(dir.join("b_after.npy")).unwrap();
    assert_eq!(b_after.data, jagged_runtime::to_bytes(&b));
    std::fs::remove_dir_all(&dir).unwrap();
}
