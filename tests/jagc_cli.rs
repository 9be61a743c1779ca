//! `jagc emit`, `stats`, `run` and `demo` through the built binary: PTX for
//! every op, ptxas reports, runs on the emulator against the f64 reference
//! evaluator (and a hand-derived case), and errors that name the bad argument.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::rel_l2;
use jagged::cli::npy;
use jagged_ir::{DType, DenseTensor};

const OPS: [&str; 9] = [
    "complete_cumsum",
    "jagged_to_padded_dense",
    "dense_to_jagged",
    "jagged_dense_elementwise_mul",
    "jagged_softmax",
    "jagged_reduce",
    "masked_select_jagged",
    "jagged_flash_attention",
    "fbgemm_jagged_flash_attention_basic",
];

fn jagc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(args)
        .env_remove("JAGGED_BACKEND")
        .output()
        .expect("run jagc")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Succeeds, or panics with the command's stderr.
fn ok(args: &[&str]) -> String {
    let out = jagc(args);
    assert!(
        out.status.success(),
        "jagc {args:?} failed:\n{}",
        stderr(&out)
    );
    stdout(&out)
}

/// Fails with exit code 1 (an error, not a panic) and returns stderr.
fn fails(args: &[&str]) -> String {
    let out = jagc(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "jagc {args:?}: {}",
        stderr(&out)
    );
    stderr(&out)
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jagc-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn save(dir: &Path, name: &str, t: &DenseTensor) -> String {
    let path = dir.join(format!("{name}.npy"));
    npy::save_dense(t, &path).expect("write npy");
    path.display().to_string()
}

fn load(path: &Path) -> DenseTensor {
    npy::load_dense(path).expect("read npy")
}

#[test]
fn emit_prints_ptx_for_every_op() {
    for op in OPS {
        for arch in ["sm_80", "sm_90a"] {
            let out = jagc(&["emit", op, "--arch", arch]);
            if out.status.success() {
                let ptx = stdout(&out);
                assert!(ptx.contains(&format!(".target {arch}")), "{op} {arch}");
                assert!(ptx.contains(".visible .entry"), "{op} {arch}");
            } else {
                // Ops the code generator does not support yet fail with its
                // typed error (exit 1), never a panic.
                assert_eq!(out.status.code(), Some(1), "{op}: {}", stderr(&out));
                assert!(stderr(&out).contains("compiling"), "{op}: {}", stderr(&out));
            }
        }
    }
    // Primitives always compile; attributes change the specialization.
    let ptx = ok(&[
        "emit",
        "jagged_softmax",
        "--attr",
        "inner=2x8",
        "--dtype",
        "bf16",
    ]);
    assert!(
        ptx.contains("jg_jagged_softmax_bf16_i32_w2x8_n128"),
        "{ptx}"
    );
    let ptx = ok(&[
        "emit",
        "jagged_reduce",
        "--attr",
        "reduce=max",
        "--attr",
        "max_len=300",
    ]);
    assert!(ptx.contains("_n512_max("), "{ptx}");
    let plan = ok(&["emit", "masked_select_jagged", "--plan"]);
    assert!(
        plan.contains("// output0: T*64 x f32 (capacity; rows used = output1[B])"),
        "{plan}"
    );
    // The attention backward's module: its three kernels (pre, main,
    // post) in place of the forward's one, wgmma on sm_90a.
    for arch in ["sm_80", "sm_90a"] {
        let fwd = ok(&["emit", "jagged_flash_attention", "--arch", arch]);
        let bwd = ok(&[
            "emit",
            "jagged_flash_attention",
            "--backward",
            "--arch",
            arch,
        ]);
        assert_eq!(fwd.matches(".visible .entry").count(), 1, "{fwd}");
        assert_eq!(bwd.matches(".visible .entry").count(), 3, "{bwd}");
        assert_eq!(bwd.contains("wgmma.mma_async"), arch == "sm_90a", "{bwd}");
    }
}

#[test]
fn stats_prints_the_ptxas_report() {
    let found = jagged_codegen::ptxas::find().ok_or_else(|| "was not found".to_string());
    if common::tools::require("stats_prints_the_ptxas_report", "ptxas", found).is_none() {
        return;
    }
    let out = ok(&["stats", "masked_select_jagged", "--attr", "inner=32"]);
    // As many kernels as the module has entries, for both archs.
    let entries = ok(&["emit", "masked_select_jagged", "--attr", "inner=32"])
        .matches(".visible .entry")
        .count();
    assert!(entries >= 2, "a compaction takes a scan and a scatter");
    for arch in ["sm_80", "sm_90a"] {
        let header = format!("# masked_select_jagged for {arch}: {entries} kernel(s)");
        assert!(out.contains(&header), "{out}");
    }
    // One report per kernel per arch, in ptxas's own words.
    assert_eq!(
        out.matches("ptxas info    : Used ").count(),
        2 * entries,
        "{out}"
    );
    assert!(out.contains("0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"));
    let out = ok(&["stats", "jagged_softmax", "--arch", "sm_90a"]);
    assert!(
        out.contains("for 'sm_90a'") && !out.contains("for 'sm_80'"),
        "{out}"
    );
}

/// Writes softmax inputs: f32 values [T, 3] on lengths [2, 0, 5, 1], i64 offsets.
fn softmax_inputs(dir: &Path) -> (String, String) {
    let offsets = [0.0, 2.0, 2.0, 7.0, 8.0];
    let values: Vec<f64> = (0..8 * 3)
        .map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0)
        .collect();
    let values = DenseTensor::from_f64(DType::F32, vec![8, 3], &values).expect("values");
    let offsets = DenseTensor::from_f64(DType::I64, vec![5], &offsets).expect("offsets");
    (save(dir, "values", &values), save(dir, "offsets", &offsets))
}

/// `jagc run jagged_softmax` with max_len 4 on the `values` and `offsets` files and
/// `extra` arguments; returns stdout.
fn run_softmax(values: &str, offsets: &str, extra: &[&str]) -> String {
    let (v, o) = (format!("values={values}"), format!("offsets={offsets}"));
    let args = [
        "run",
        "jagged_softmax",
        "--in",
        &v,
        "--in",
        &o,
        "--attr",
        "max_len=4",
    ];
    ok(&[&args[..], extra].concat())
}

#[test]
fn run_on_the_emulator_matches_the_reference() {
    let dir = temp_dir("run");
    let (values, offsets) = softmax_inputs(&dir);
    let out_for = |backend: &str| dir.join(format!("softmax_{backend}.npy"));
    for backend in ["reference", "emu"] {
        let out = format!("values={}", out_for(backend).display());
        let printed = run_softmax(&values, &offsets, &["--out", &out, "--backend", backend]);
        assert!(printed.contains("values: f32 [8, 3]"), "{printed}");
    }
    let reference = load(&out_for("reference"));
    let emu = load(&out_for("emu"));
    assert_eq!(emu.shape(), &[8, 3]);
    for (a, b) in emu.to_f64().iter().zip(reference.to_f64()) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
    // By hand: the single-row sequence (row 7) is all ones; rows 6 (past
    // max_len = 4 in the 5-row sequence) are zero; sequence 0's columns sum to 1.
    let y = emu.to_f64();
    assert_eq!(&y[21..24], &[1.0, 1.0, 1.0]);
    assert_eq!(&y[18..21], &[0.0, 0.0, 0.0]);
    for h in 0..3 {
        assert!((y[h] + y[3 + h] - 1.0).abs() < 1e-6);
    }

    // bf16: the f32 file is rounded to bf16, the output written as f32.
    let out = dir.join("softmax_bf16.npy");
    let out_arg = format!("values={}", out.display());
    run_softmax(
        &values,
        &offsets,
        &["--dtype", "bf16", "--out", &out_arg, "--backend", "emu"],
    );
    let bf16 = load(&out);
    assert_eq!(bf16.dtype(), DType::F32);
    for (a, b) in bf16.to_f64().iter().zip(reference.to_f64()) {
        assert!((a - b).abs() <= 2e-2, "{a} vs {b}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_masked_select_writes_trimmed_values_and_offsets() {
    let dir = temp_dir("masked");
    let values = DenseTensor::from_f64(
        DType::F32,
        vec![5, 2],
        &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.],
    )
    .expect("values");
    let offsets = DenseTensor::from_f64(DType::I32, vec![3], &[0., 2., 5.]).expect("offsets");
    let mask = DenseTensor::from_f64(DType::Bool, vec![5], &[0., 1., 1., 0., 1.]).expect("mask");
    let (v, o, m) = (
        save(&dir, "v", &values),
        save(&dir, "o", &offsets),
        save(&dir, "m", &mask),
    );
    for backend in ["reference", "emu"] {
        let kept = dir.join(format!("kept_{backend}.npy"));
        let new_offsets = dir.join(format!("offsets_{backend}.npy"));
        ok(&[
            "run",
            "masked_select_jagged",
            "--in",
            &format!("values={v}"),
            "--in",
            &format!("offsets={o}"),
            "--in",
            &format!("mask={m}"),
            "--out",
            &format!("values={}", kept.display()),
            "--out",
            &format!("offsets={}", new_offsets.display()),
            "--backend",
            backend,
        ]);
        // Kept: row 1 of sequence 0, rows 2 and 4 of sequence 1.
        let kept = load(&kept);
        assert_eq!(kept.shape(), &[3, 2], "{backend}");
        assert_eq!(kept.to_f64(), vec![3., 4., 5., 6., 9., 10.], "{backend}");
        let new_offsets = load(&new_offsets);
        assert_eq!(new_offsets.dtype(), DType::I32, "{backend}");
        assert_eq!(new_offsets.to_f64(), vec![0., 1., 3.], "{backend}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_name_the_bad_argument() {
    let dir = temp_dir("errors");
    let (values, offsets) = softmax_inputs(&dir);
    let v = format!("values={values}");
    let o = format!("offsets={offsets}");

    let mask = format!("mask={values}");
    let offsets_as_values = format!("values={offsets}");
    let softmax = ["run", "jagged_softmax"];
    // Each failing command line and the words its error must contain.
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["emit", "jagged_sofmax"],
            &["unknown op `jagged_sofmax`"],
        ),
        (
            vec!["emit", "jagged_softmax", "--attr", "alpha=1"],
            &["no attribute `alpha`"],
        ),
        (
            vec!["emit", "jagged_softmax", "--attr", "inner=0"],
            &["--attr inner=0"],
        ),
        (
            vec!["emit", "jagged_reduce", "--attr", "reduce=median"],
            &["--attr reduce=median"],
        ),
        (
            vec!["emit", "jagged_softmax", "--attr", "max_len"],
            &["--attr max_len: expected NAME=VALUE"],
        ),
        (
            [
                &softmax[..],
                &["--in", &v, "--attr", "max_len=4", "--backend", "emu"],
            ]
            .concat(),
            &["missing input `offsets`"],
        ),
        (
            [&softmax[..], &["--in", &v, "--in", &o, "--in", &mask]].concat(),
            &["unknown input `mask`"],
        ),
        (
            [
                &softmax[..],
                &["--in", "values=/nonexistent.npy", "--in", &o],
            ]
            .concat(),
            &["input `values` (/nonexistent.npy)"],
        ),
        (
            [&softmax[..], &["--in", &offsets_as_values, "--in", &o]].concat(),
            &["input `values`", "expected a float array"],
        ),
        (
            [&softmax[..], &["--in", &v, "--in", &o, "--backend", "emu"]].concat(),
            &["missing attribute 'max_len'"],
        ),
        (
            [&softmax[..], &["--in", &v, "--in", &o, "--attr", "inner=3"]].concat(),
            &["no attribute `inner`"],
        ),
        (
            [
                &softmax[..],
                &[
                    "--in",
                    &v,
                    "--in",
                    &o,
                    "--attr",
                    "max_len=4",
                    "--out",
                    "lse=x.npy",
                ],
            ]
            .concat(),
            &["no output `lse`"],
        ),
    ];
    for (args, words) in cases {
        let err = fails(&args);
        assert!(words.iter().all(|w| err.contains(w)), "{args:?}: {err}");
    }
    // Offsets that do not end at T rows name the input, on every backend.
    let bad = save(
        &dir,
        "bad_offsets",
        &DenseTensor::from_f64(DType::I64, vec![3], &[0., 2., 5.]).expect("offsets"),
    );
    for backend in ["reference", "emu"] {
        let err = fails(&[
            "run",
            "jagged_softmax",
            "--in",
            &v,
            "--in",
            &format!("offsets={bad}"),
            "--attr",
            "max_len=4",
            "--backend",
            backend,
        ]);
        assert!(err.contains("offsets"), "{backend}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_runs_and_checks_itself() {
    let out = ok(&["demo", "--batch", "12", "--heads", "4", "--max-len", "16"]);
    assert!(out.contains("backend: "), "{out}");
    // Attention: the fast path, checked (out in bf16, lse in f32), next to
    // its padded equivalent.
    assert!(out.contains("fast path: flash_attention"), "{out}");
    assert!(out.contains("(ok, tolerance 1e-2)"), "{out}");
    assert!(out.contains("padded flash attention"), "{out}");
    assert!(out.contains("an estimate, not run"), "{out}");
    // The composed op: the general path, its graph and plan, checked.
    assert!(out.contains("graph weighted_pool {"), "{out}");
    assert!(out.contains("general path, 1 kernel(s)"), "{out}");
    assert_eq!(out.matches("(ok, tolerance 1e-5)").count(), 2, "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert_eq!(
        out.matches("code generator runs: 1 then 0").count(),
        2,
        "{out}"
    );
}

#[test]
fn attention_runs_on_the_emulator_within_the_bf16_tolerance() {
    let dir = temp_dir("attention");
    let lengths = [0usize, 3, 20, 1];
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    let offsets = save(
        &dir,
        "offsets",
        &DenseTensor::from_f64(DType::I32, vec![lengths.len() + 1], &offsets).expect("offsets"),
    );
    let random = |shape: Vec<usize>, seed: usize| {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| (((i + seed) * 2_654_435_761) % 1000) as f64 / 500.0 - 1.0)
            .collect();
        DenseTensor::from_f64(DType::F32, shape, &v).expect("tensor")
    };
    let cases: [(&str, Vec<usize>, &[&str]); 2] = [
        (
            "jagged_flash_attention",
            vec![total, 2, 32],
            &["causal=true", "max_len=16"],
        ),
        (
            "fbgemm_jagged_flash_attention_basic",
            vec![total, 32],
            &["use_mask=true", "max_len=16"],
        ),
    ];
    for (op, shape, attrs) in cases {
        let mut args: Vec<String> = vec!["run".into(), op.into()];
        for (k, name) in ["q", "k", "v"].into_iter().enumerate() {
            let path = save(&dir, name, &random(shape.clone(), 17 * k));
            args.extend(["--in".into(), format!("{name}={path}")]);
        }
        args.extend(["--in".into(), format!("offsets={offsets}")]);
        for a in attrs {
            args.extend(["--attr".into(), a.to_string()]);
        }
        let out = |backend: &str| dir.join(format!("{op}_{backend}.npy"));
        for backend in ["reference", "emu"] {
            let mut run = args.clone();
            run.extend([
                "--backend".into(),
                backend.into(),
                "--out".into(),
                format!("out={}", out(backend).display()),
            ]);
            let run: Vec<&str> = run.iter().map(String::as_str).collect();
            ok(&run);
        }
        let (emu, reference) = (load(&out("emu")), load(&out("reference")));
        assert_eq!(emu.shape(), shape.as_slice(), "{op}");
        let err = rel_l2(&emu.to_f64(), &reference.to_f64());
        assert!(err <= 1e-2, "{op}: relative error {err}");
    }
    let err = fails(&[
        "emit",
        "jagged_flash_attention",
        "--attr",
        "activation=relu",
    ]);
    assert!(err.contains("--attr activation=relu"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Values [T, 64] on lengths [3, 0, 9] (T = 12) with every third row kept by
/// the mask: the masked_select_jagged files, as `--in` arguments.
fn masked_select_inputs(dir: &Path) -> Vec<String> {
    let (t, d) = (12, 64);
    let values: Vec<f64> = (0..t * d).map(|i| i as f64).collect();
    let values = DenseTensor::from_f64(DType::F32, vec![t, d], &values).expect("values");
    let offsets = DenseTensor::from_f64(DType::I32, vec![4], &[0., 3., 3., 12.]).expect("offsets");
    let mask: Vec<f64> = (0..t).map(|i| f64::from(i % 3 == 0)).collect();
    let mask = DenseTensor::from_f64(DType::U8, vec![t], &mask).expect("mask");
    vec![
        format!("values={}", save(dir, "in_values", &values)),
        format!("offsets={}", save(dir, "in_offsets", &offsets)),
        format!("mask={}", save(dir, "in_mask", &mask)),
    ]
}

/// `jagc run masked_select_jagged` on the reference with `extra` arguments.
fn masked_select_args(inputs: &[String], extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "masked_select_jagged".into()];
    for i in inputs {
        args.extend(["--in".into(), i.clone()]);
    }
    args.extend(["--backend".into(), "reference".into()]);
    args.extend(extra.iter().cloned());
    args
}

/// The files of `dir` whose names mark them as jagc's temporaries or probes.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".jagc-"))
        .collect()
}

#[test]
fn an_unwritable_or_duplicate_out_path_fails_before_running() {
    let dir = temp_dir("out_paths");
    let inputs = masked_select_inputs(&dir);
    let offsets_out = dir.join("offsets_out.npy");
    std::fs::write(&offsets_out, b"previous offsets").expect("write");
    let offsets_arg = format!("offsets={}", offsets_out.display());
    let not_a_dir = dir.join("a_file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let a_dir = dir.join("a_dir");
    std::fs::create_dir_all(&a_dir).expect("dir");
    // Each bad second output, and the words its error must contain.
    let same = format!("values={}/./offsets_out.npy", dir.display());
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("values={}/missing/values.npy", dir.display()),
            vec!["--out values=", "missing", "No such file"],
        ),
        (
            format!("values={}/values.npy", not_a_dir.display()),
            vec!["--out values=", "is not a directory"],
        ),
        (
            format!("values={}", a_dir.display()),
            vec!["--out values=", "is a directory"],
        ),
        (
            same,
            vec!["--out values=", "the same file as --out offsets"],
        ),
        (
            "values=".to_string(),
            vec!["--out values=", "not a file name"],
        ),
    ];
    for (bad, words) in cases {
        let args = masked_select_args(
            &inputs,
            &["--out".into(), offsets_arg.clone(), "--out".into(), bad],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = jagc(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(words.iter().all(|w| err.contains(w)), "{args:?}: {err}");
        // Checked before anything ran: no backend chosen, no output touched.
        assert!(!stdout(&out).contains("backend:"), "{}", stdout(&out));
        assert_eq!(
            std::fs::read(&offsets_out).expect("read"),
            b"previous offsets"
        );
    }
    // A directory that cannot be written (only enforceable when not root).
    let read_only = dir.join("read_only");
    std::fs::create_dir_all(&read_only).expect("dir");
    let mut perms = std::fs::metadata(&read_only).expect("meta").permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&read_only, perms.clone()).expect("chmod");
    if std::fs::write(read_only.join("probe"), b"").is_err() {
        let bad = format!("values={}/values.npy", read_only.display());
        let args = masked_select_args(
            &inputs,
            &["--out".into(), offsets_arg.clone(), "--out".into(), bad],
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(err.contains("is not writable"), "{err}");
        assert_eq!(
            std::fs::read(&offsets_out).expect("read"),
            b"previous offsets"
        );
    } else {
        eprintln!("read-only directory not checked: running as root");
    }
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&read_only, perms).expect("chmod");
    assert_eq!(leftovers(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failed_second_output_write_leaves_no_output_changed() {
    let dir = temp_dir("atomic");
    let inputs = masked_select_inputs(&dir);
    let offsets_out = dir.join("offsets_out.npy");
    let values_out = dir.join("values_out.npy");
    let outs = [
        "--out".to_string(),
        format!("offsets={}", offsets_out.display()),
        "--out".to_string(),
        format!("values={}", values_out.display()),
    ];
    let args = masked_select_args(&inputs, &outs);
    // A success replaces both files and leaves no temporary behind.
    std::fs::write(&offsets_out, b"previous offsets").expect("write");
    std::fs::write(&values_out, b"previous values").expect("write");
    let plain: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&plain);
    assert_eq!(load(&offsets_out).to_f64(), vec![0., 1., 1., 4.]);
    assert_eq!(load(&values_out).shape(), &[4, 64]);
    assert_eq!(leftovers(&dir), Vec::<String>::new());

    // A file size limit of one block (512 or 1024 bytes): the offsets
    // output (144 bytes) is written first and fits, the values output
    // (4 x 64 f32 = 1024 bytes + header) does not, as on a full disk.
    std::fs::write(&offsets_out, b"previous offsets").expect("write");
    std::fs::write(&values_out, b"previous values").expect("write");
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_jagc").to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{a}'"))
        .collect();
    // SIGXFSZ ignored (inherited through exec), so the write fails with EFBIG.
    let script = format!("trap '' XFSZ; ulimit -f 1; exec {}", quoted.join(" "));
    let out = Command::new("sh")
        .args(["-c", &script])
        .env_remove("JAGGED_BACKEND")
        .output()
        .expect("run sh");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--out values=") && err.contains("no output was written"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&offsets_out).expect("read"),
        b"previous offsets"
    );
    assert_eq!(
        std::fs::read(&values_out).expect("read"),
        b"previous values"
    );
    assert_eq!(leftovers(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_repeated_in_attr_or_out_name_is_an_error_not_last_one_wins() {
    let dir = temp_dir("repeated");
    let (values, offsets) = softmax_inputs(&dir);
    let (v, o) = (format!("values={values}"), format!("offsets={offsets}"));
    let out_a = format!("values={}", dir.join("a.npy").display());
    let out_b = format!("values={}", dir.join("b.npy").display());
    let softmax = ["run", "jagged_softmax", "--in", &v, "--in", &o];
    let pool = format!(
        "{}/tests/graphs/weighted_pool.jir",
        env!("CARGO_MANIFEST_DIR")
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&softmax[..], &["--in", &v, "--attr", "max_len=4"]].concat(),
            "--in values=...: given more than once",
        ),
        (
            [
                &softmax[..],
                &["--attr", "max_len=4", "--attr", "max_len=8"],
            ]
            .concat(),
            "--attr max_len=...: given more than once",
        ),
        (
            [
                &softmax[..],
                &["--attr", "max_len=4", "--out", &out_a, "--out", &out_b],
            ]
            .concat(),
            "--out values=...: given more than once",
        ),
        (
            vec![
                "emit",
                "jagged_reduce",
                "--attr",
                "reduce=max",
                "--attr",
                "reduce=sum",
            ],
            "--attr reduce=...: given more than once",
        ),
        (
            vec![
                "emit",
                "--graph",
                &pool,
                "--attr",
                "max_len=4",
                "--attr",
                "max_len=8",
            ],
            "--attr max_len=...: given more than once",
        ),
        (
            vec!["run", "--graph", &pool, "--in", &o, "--in", &o],
            "--in offsets=...: given more than once",
        ),
    ];
    for (args, words) in cases {
        let err = fails(&args);
        assert!(err.contains(words), "{args:?}: {err}");
    }
    assert!(!dir.join("a.npy").exists() && !dir.join("b.npy").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rows_no_kernel_writes_would_read_nan_so_zero_and_padding_rows_are_written() {
    // `jagc run` poisons outputs (NaN) before the kernels run: rows past
    // max_len, empty sequences and padding must be written by a kernel.
    let dir = temp_dir("poison");
    let (values, offsets) = softmax_inputs(&dir);
    let (v, o) = (format!("values={values}"), format!("offsets={offsets}"));
    let run = |op: &str, extra: &[&str], output: &str| -> Vec<f64> {
        let path = dir.join(format!("{op}.npy"));
        let out = format!("{output}={}", path.display());
        let args = [
            &[
                "run",
                op,
                "--in",
                &v,
                "--in",
                &o,
                "--backend",
                "emu",
                "--out",
                &out,
            ][..],
            extra,
        ]
        .concat();
        ok(&args);
        let y = load(&path).to_f64();
        assert!(
            y.iter().all(|x| !x.is_nan()),
            "{op}: an unwritten element: {y:?}"
        );
        y
    };
    // Lengths [2, 0, 5, 1], max_len 4: sequence 2's row 4 (row 6) is past it.
    let y = run("jagged_softmax", &["--attr", "max_len=4"], "values");
    assert_eq!(&y[18..21], &[0.0; 3]);
    // Padded [4, 4, 3]: sequence 1 (empty) all padding, sequence 3 rows 1.. too.
    let y = run(
        "jagged_to_padded_dense",
        &["--attr", "max_len=4", "--attr", "padding_value=-7"],
        "dense",
    );
    assert_eq!(y.len(), 4 * 4 * 3);
    assert!(y[12..24].iter().all(|&x| x == -7.0), "{y:?}");
    assert!(y[39..48].iter().all(|&x| x == -7.0), "{y:?}");
    // The max of an empty sequence is 0 (OPS.md).
    let y = run(
        "jagged_reduce",
        &["--attr", "max_len=4", "--attr", "reduce=max"],
        "out",
    );
    assert_eq!(&y[3..6], &[0.0; 3]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `jagc emit ... | head` ends quietly when the reader closes the pipe (the
/// default SIGPIPE action), instead of panicking in `println!`: stdout is a
/// pipe whose read end is closed before jagc writes anything.
#[test]
fn a_closed_stdout_pipe_ends_jagc_quietly() {
    use std::process::{Command, Stdio};
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(["emit", "jagged_softmax", "--attr", "inner=4"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("jagc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert!(!out.status.success(), "jagc cannot have written its PTX");
}

/// A 4-D `q` file is reported as the file's shape, naming `q`, not as a
/// bad `--attr heads=` the user never gave.
#[test]
fn a_four_dimensional_q_names_q_not_an_attribute() {
    let dir = temp_dir("q4d");
    let zeros = |shape: Vec<usize>| {
        let n = shape.iter().product();
        DenseTensor::from_f64(DType::F32, shape, &vec![0.0; n]).expect("tensor")
    };
    let q = save(&dir, "q", &zeros(vec![5, 2, 4, 8]));
    let kv = save(&dir, "k", &zeros(vec![5, 2, 8]));
    let offsets = DenseTensor::from_f64(DType::I32, vec![3], &[0.0, 2.0, 5.0]).expect("offsets");
    let off = save(&dir, "offsets", &offsets);
    let out = dir.join("out.npy").display().to_string();
    let err = fails(&[
        "run",
        "jagged_flash_attention",
        "--in",
        &format!("q={q}"),
        "--in",
        &format!("k={kv}"),
        "--in",
        &format!("v={kv}"),
        "--in",
        &format!("offsets={off}"),
        "--attr",
        "max_len=4",
        "--out",
        &format!("out={out}"),
    ]);
    assert!(err.contains("q") && err.contains("[T, H, D]"), "{err}");
    assert!(!err.contains("--attr heads"), "{err}");
}

/// A uint16 `.npy` (how bf16 arrays are saved) is read as bf16 only for a
/// bf16 input; for an f32 op it is an error naming the input, not uint16
/// values silently taken for bf16 bits.
#[test]
fn a_uint16_npy_is_bf16_only_where_bf16_is_expected() {
    let dir = temp_dir("u16");
    let values = DenseTensor::from_f64(DType::BF16, vec![5, 4], &[0.5; 20]).expect("bf16 values");
    let v = save(&dir, "values", &values);
    let offsets = DenseTensor::from_f64(DType::I32, vec![3], &[0.0, 2.0, 5.0]).expect("offsets");
    let off = save(&dir, "offsets", &offsets);
    let out = dir.join("out.npy").display().to_string();
    let args = |dtype: &'static str| {
        vec![
            "run".to_string(),
            "jagged_softmax".to_string(),
            "--in".to_string(),
            format!("values={v}"),
            "--in".to_string(),
            format!("offsets={off}"),
            "--attr".to_string(),
            "max_len=4".to_string(),
            "--dtype".to_string(),
            dtype.to_string(),
            "--out".to_string(),
            format!("values={out}"),
        ]
    };
    let f32_args = args("f32");
    let err = fails(&f32_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("values") && err.contains("uint16"), "{err}");
    let bf16_args = args("bf16");
    ok(&bf16_args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Regression: `--attr inner=4294967300` emitted a width-4 kernel (the dim
/// was narrowed to 32 bits); it is an error naming the dim now.
#[test]
fn an_inner_dim_past_32_bits_is_refused_not_truncated() {
    let err = fails(&["emit", "jagged_softmax", "--attr", "inner=4294967300"]);
    assert!(
        err.contains("4294967300") && err.contains("32 bits"),
        "{err}"
    );
}
