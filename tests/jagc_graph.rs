//! `jagc emit|stats|run --graph FILE.jir`: graphs in the canonical text form
//! (the fixtures in `tests/graphs/`) run through the built binary on the
//! reference evaluator and on the emulator, on random `.npy` inputs, and
//! agree within the f32 tolerance; parse and argument errors name the file,
//! the line and column, or the bad argument.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Rng, offsets, rel_l2};
use jagged::cli::npy;
use jagged_ir::{DType, DenseTensor};

/// DESIGN.md's tolerance for f32 math.
const F32_TOLERANCE: f64 = 1e-5;

/// Sequence lengths: empty, one row, longer than `MAX_LEN`, not a multiple of anything.
const LENGTHS: [usize; 6] = [3, 0, 1, 13, 8, 5];
const MAX_LEN: usize = 8;

fn jagc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(args)
        .env_remove("JAGGED_BACKEND")
        .output()
        .expect("run jagc")
}

fn ok(args: &[&str]) -> String {
    let out = jagc(args);
    assert!(
        out.status.success(),
        "jagc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with exit code 1 (an error, not a panic) and returns stderr.
fn fails(args: &[&str]) -> String {
    let out = jagc(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "jagc {args:?}: {err}");
    err
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/graphs")
        .join(format!("{name}.jir"))
        .display()
        .to_string()
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jagc-graph-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn save(dir: &Path, name: &str, t: &DenseTensor) -> String {
    let path = dir.join(format!("{name}.npy"));
    npy::save_dense(t, &path).expect("write npy");
    path.display().to_string()
}

fn random(rng: &mut Rng, shape: Vec<usize>) -> DenseTensor {
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.float()).collect();
    DenseTensor::from_f64(DType::F32, shape, &v).expect("tensor")
}

/// `jagc run --graph` on `backend`, writing `output` to `dir/{tag}_{backend}.npy`.
fn run_graph(
    graph: &str,
    inputs: &[(&str, &str)],
    attrs: &[&str],
    output: &str,
    backend: &str,
    dir: &Path,
    tag: &str,
) -> DenseTensor {
    let out = dir.join(format!("{tag}_{backend}.npy"));
    let mut args: Vec<String> = vec!["run".into(), "--graph".into(), fixture(graph)];
    for (name, path) in inputs {
        args.extend(["--in".into(), format!("{name}={path}")]);
    }
    for a in attrs {
        args.extend(["--attr".into(), a.to_string()]);
    }
    args.extend([
        "--out".into(),
        format!("{output}={}", out.display()),
        "--backend".into(),
        backend.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let printed = ok(&args);
    assert!(printed.contains(&format!("{output}: f32 ")), "{printed}");
    npy::load_dense(&out).expect("read output")
}

/// Runs on the reference and the emulator; asserts they agree within the f32
/// tolerance and returns the reference's output.
fn reference_and_emu(
    graph: &str,
    inputs: &[(&str, &str)],
    attrs: &[&str],
    output: &str,
    dir: &Path,
) -> DenseTensor {
    let reference = run_graph(graph, inputs, attrs, output, "reference", dir, graph);
    let emu = run_graph(graph, inputs, attrs, output, "emu", dir, graph);
    assert_eq!(emu.shape(), reference.shape(), "{graph}");
    let err = rel_l2(&emu.to_f64(), &reference.to_f64());
    assert!(
        err <= F32_TOLERANCE,
        "{graph}: emulator vs reference relative L2 error {err:e}"
    );
    reference
}

/// Row ranges `(start, n_b)` of each sequence.
fn rows() -> Vec<(usize, usize)> {
    let mut start = 0;
    LENGTHS
        .iter()
        .map(|&l| {
            let r = (start, l.min(MAX_LEN));
            start += l;
            r
        })
        .collect()
}

#[test]
fn weighted_pool_graph_runs_on_reference_and_emulator() {
    let dir = temp_dir("pool");
    let mut rng = Rng(11);
    let total: usize = LENGTHS.iter().sum();
    let x = random(&mut rng, vec![total, 8]);
    let w = random(&mut rng, vec![total]);
    let o = save(&dir, "offsets", &offsets(&LENGTHS, DType::I32));
    let (xp, wp) = (save(&dir, "x", &x), save(&dir, "w", &w));
    let max_len = format!("max_len={MAX_LEN}");
    let pooled = reference_and_emu(
        "weighted_pool",
        &[("offsets", &o), ("x", &xp), ("w", &wp)],
        &[&max_len],
        "pooled",
        &dir,
    );
    // By hand: pooled[b] = sum_{i < n_b} w_i x_i.
    assert_eq!(pooled.shape(), &[LENGTHS.len(), 8]);
    let (x, w) = (x.to_f64(), w.to_f64());
    let mut want = vec![0.0; LENGTHS.len() * 8];
    for (b, (start, n)) in rows().into_iter().enumerate() {
        for i in start..start + n {
            for d in 0..8 {
                want[b * 8 + d] += w[i] * x[i * 8 + d];
            }
        }
    }
    assert!(rel_l2(&pooled.to_f64(), &want) <= 1e-6);
    assert_eq!(&pooled.to_f64()[8..16], &[0.0; 8], "the empty sequence");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rms_norm_graph_runs_with_its_default_and_a_given_eps() {
    let dir = temp_dir("rms");
    let mut rng = Rng(12);
    let total: usize = LENGTHS.iter().sum();
    let x = random(&mut rng, vec![total, 16]);
    let gamma = random(&mut rng, vec![16]);
    let o = save(&dir, "offsets", &offsets(&LENGTHS, DType::I32));
    let (xp, gp) = (save(&dir, "x", &x), save(&dir, "gamma", &gamma));
    let inputs = [("offsets", o.as_str()), ("x", &xp), ("gamma", &gp)];
    let max_len = format!("max_len={MAX_LEN}");
    let (x, gamma) = (x.to_f64(), gamma.to_f64());
    // By hand: y_i = x_i / sqrt(mean(x_i^2) + eps) * gamma for i < n_b, else 0.
    let by_hand = |eps: f64| {
        let mut want = vec![0.0; total * 16];
        for (start, n) in rows() {
            for i in start..start + n {
                let row = &x[i * 16..(i + 1) * 16];
                let ms = row.iter().map(|v| v * v).sum::<f64>() / 16.0;
                for d in 0..16 {
                    want[i * 16 + d] = row[d] / (ms + eps).sqrt() * gamma[d];
                }
            }
        }
        want
    };
    // The file's default eps (1e-5), then eps = 4 from --attr (a float attribute).
    let y = reference_and_emu("rms_norm", &inputs, &[&max_len], "y", &dir);
    assert_eq!(y.shape(), &[total, 16]);
    assert!(rel_l2(&y.to_f64(), &by_hand(1e-5)) <= 1e-6);
    let y = reference_and_emu("rms_norm", &inputs, &[&max_len, "eps=4"], "y", &dir);
    assert!(rel_l2(&y.to_f64(), &by_hand(4.0)) <= 1e-6);
    assert!(
        rel_l2(&y.to_f64(), &by_hand(1e-5)) > 1e-2,
        "eps was ignored"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn softmax_mask_sum_graph_runs_on_reference_and_emulator() {
    let dir = temp_dir("smsum");
    let mut rng = Rng(13);
    let total: usize = LENGTHS.iter().sum();
    let q = random(&mut rng, vec![total, 4]);
    let k = random(&mut rng, vec![total, 4]);
    let o = save(&dir, "offsets", &offsets(&LENGTHS, DType::I64));
    let (qp, kp) = (save(&dir, "q", &q), save(&dir, "k", &k));
    let max_len = format!("max_len={MAX_LEN}");
    let s = reference_and_emu(
        "softmax_mask_sum",
        &[("offsets", &o), ("q", &qp), ("k", &kp)],
        &[&max_len],
        "s",
        &dir,
    );
    assert_eq!(s.shape(), &[total]);
    // By hand: s_i = sum_{j >= i} softmax_j(q_i . k_j) over j < n_b.
    let (q, k) = (q.to_f64(), k.to_f64());
    let mut want = vec![0.0; total];
    for (start, n) in rows() {
        for i in 0..n {
            let dot = |j: usize| -> f64 {
                (0..4)
                    .map(|d| q[(start + i) * 4 + d] * k[(start + j) * 4 + d])
                    .sum()
            };
            let m = (0..n).map(dot).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..n).map(|j| (dot(j) - m).exp()).sum();
            want[start + i] = (i..n).map(|j| (dot(j) - m).exp() / z).sum();
        }
    }
    assert!(rel_l2(&s.to_f64(), &want) <= 1e-6);
    // The last row of a sequence keeps only its own weight; the first all (1).
    let (start, _) = rows()[3];
    assert!((s.to_f64()[start] - 1.0).abs() < 1e-6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emit_and_stats_take_a_graph_file() {
    let ptx = ok(&["emit", "--graph", &fixture("rms_norm"), "--arch", "sm_90a"]);
    assert!(ptx.contains(".target sm_90a"), "{ptx}");
    assert!(ptx.contains(".visible .entry jg_rms_norm"), "{ptx}");
    // max_len from --attr (else the file's default, else 128) sets the
    // spec's bucket, which a fast path's kernel names carry.
    let dir = temp_dir("emit");
    let softmax = dir.join("softmax.jir");
    std::fs::write(
        &softmax,
        "graph jagged_softmax {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input values : f32[%1, 4]
  %3 = softmax %2, axis 0 : f32[%1, 4]
  output values = %3
}
",
    )
    .expect("write graph");
    let softmax = softmax.display().to_string();
    let ptx = ok(&["emit", "--graph", &softmax]);
    assert!(ptx.contains("_n128"), "{ptx}");
    let ptx = ok(&["emit", "--graph", &softmax, "--attr", "max_len=300"]);
    assert!(ptx.contains("_n512") && !ptx.contains("_n128"), "{ptx}");
    let _ = std::fs::remove_dir_all(&dir);
    if jagged_codegen::ptxas::find().is_some() {
        let out = ok(&["stats", "--graph", &fixture("softmax_mask_sum")]);
        assert!(out.contains("# softmax_mask_sum for sm_80: "), "{out}");
        assert!(out.contains("ptxas info    : Used "), "{out}");
    } else {
        eprintln!("stats --graph not checked: no ptxas (run scripts/install-tools.sh)");
    }
}

#[test]
fn graph_errors_name_the_file_line_and_argument() {
    let dir = temp_dir("errors");
    // A parse error: the file, then the parser's line and column.
    let bad = dir.join("bad.jir");
    std::fs::write(
        &bad,
        "graph bad {\n  attr max_len: index\n  %0 = input offsets : i32[B+1]\n  %1 = frobnicate %0 : seqs\n}\n",
    )
    .expect("write bad graph");
    let bad = bad.display().to_string();
    for sub in ["emit", "stats", "run"] {
        let err = fails(&[sub, "--graph", &bad]);
        assert!(err.contains(&format!("{bad}:4:")), "{sub}: {err}");
    }
    let o = save(&dir, "o", &offsets(&[2, 1], DType::I32));
    let zeros = |shape: Vec<usize>| {
        let n = shape.iter().product();
        DenseTensor::from_f64(DType::F32, shape, &vec![0.0; n]).expect("zeros")
    };
    let x = save(&dir, "x", &zeros(vec![3, 8]));
    let w = save(&dir, "w", &zeros(vec![3]));
    let (pool, rms) = (fixture("weighted_pool"), fixture("rms_norm"));
    let (oi, xi, wi) = (format!("offsets={o}"), format!("x={x}"), format!("w={w}"));
    let (offsets_as_x, x_as_offsets) = (format!("offsets={x}"), format!("x={o}"));
    let run = ["run", "--graph", pool.as_str()];
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["emit", "--graph", "/nonexistent/g.jir"],
            &["--graph /nonexistent/g.jir"],
        ),
        (
            [&run[..], &["--in", &oi, "--in", &xi, "--attr", "max_len=4"]].concat(),
            &["graph `weighted_pool`", "missing input `w`"],
        ),
        (
            [
                &run[..],
                &[
                    "--in",
                    &oi,
                    "--in",
                    &xi,
                    "--in",
                    &wi,
                    "--in",
                    "values=v.npy",
                ],
            ]
            .concat(),
            &["unknown input `values`", "inputs: offsets, x, w"],
        ),
        (
            vec!["emit", "--graph", &pool, "--attr", "scale=2"],
            &[
                "graph `weighted_pool`",
                "no attribute `scale`",
                "attributes: max_len",
            ],
        ),
        (
            vec!["emit", "--graph", &pool, "--attr", "max_len=-1"],
            &["--attr max_len=-1", "non-negative integer"],
        ),
        (
            vec!["emit", "--graph", &rms, "--attr", "eps=tiny"],
            &["--attr eps=tiny", "expected a number"],
        ),
        (
            [
                &run[..],
                &["--in", &oi, "--in", &xi, "--in", &wi, "--backend", "emu"],
            ]
            .concat(),
            &["missing attribute 'max_len'"],
        ),
        (
            [
                &run[..],
                &[
                    "--in",
                    &oi,
                    "--in",
                    &xi,
                    "--in",
                    &wi,
                    "--attr",
                    "max_len=4",
                    "--out",
                    "y=y.npy",
                ],
            ]
            .concat(),
            &["no output `y`", "outputs: pooled"],
        ),
        (
            [
                &run[..],
                &[
                    "--in",
                    &offsets_as_x,
                    "--in",
                    &xi,
                    "--in",
                    &wi,
                    "--attr",
                    "max_len=4",
                ],
            ]
            .concat(),
            &["offsets"],
        ),
        (
            [
                &run[..],
                &[
                    "--in",
                    &oi,
                    "--in",
                    &x_as_offsets,
                    "--in",
                    &wi,
                    "--attr",
                    "max_len=4",
                ],
            ]
            .concat(),
            &["input `x`", "expected a float array"],
        ),
    ];
    for (args, words) in cases {
        let err = fails(&args);
        assert!(words.iter().all(|w| err.contains(w)), "{args:?}: {err}");
    }
    // An op and --graph together, or neither, is a usage error (clap's exit 2).
    for args in [
        vec!["emit", "jagged_softmax", "--graph", pool.as_str()],
        vec!["run", "--dtype", "bf16", "--graph", pool.as_str()],
        vec!["emit"],
    ] {
        let out = jagc(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lines of `emit --plan` before the PTX: all PTX comments, returned without `// `.
fn plan_lines(out: &str) -> Vec<String> {
    let head = &out[..out.find(".version").expect("PTX after the plan")];
    head.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            assert!(
                l.starts_with("//"),
                "a plan line that is not a comment: {l}"
            );
            l.trim_start_matches("//").trim_start().to_string()
        })
        .collect()
}

#[test]
fn emit_plan_names_the_fast_path_or_the_general_path_kernels() {
    // A builtin op matches its template.
    let out = ok(&["emit", "jagged_softmax", "--plan"]);
    let plan = plan_lines(&out);
    assert_eq!(plan[0], "fast path: jagged_softmax", "{out}");
    assert!(out.contains(".visible .entry jg_jagged_softmax"), "{out}");
    let without = ok(&["emit", "jagged_softmax"]);
    assert!(!without.contains("fast path"), "{without}");
    assert!(out.ends_with(&without), "--plan changes the PTX");

    // A graph no template takes: why, then the general path's kernels (one
    // plan line per kernel entry of the PTX), what each fuses and how it is
    // scheduled, its scratch (none: the softmax statistics are computed by
    // the resident kernel that reads them).
    let out = ok(&["emit", "--graph", &fixture("softmax_mask_sum"), "--plan"]);
    let plan = plan_lines(&out);
    assert!(
        plan[0].starts_with("fast path: none (") && plan[0].contains("softmax_mask_sum"),
        "{out}"
    );
    let entries = out.matches(".visible .entry").count();
    assert_eq!(
        plan[1],
        format!("general path, {entries} kernel(s):"),
        "{out}"
    );
    for k in 0..entries {
        assert!(
            plan.iter().any(|l| l.starts_with(&format!("kernel {k}: "))),
            "kernel {k}: {out}"
        );
    }
    assert!(
        plan.iter().any(|l| l.contains("-> output0")
            && l.contains("(fused: %4 %5 %6 %7 %8)")
            && l.contains("(resident: a warp per sequence, rows of %2 %3 in shared memory)")),
        "{out}"
    );
    assert!(!plan.iter().any(|l| l.starts_with("scratch")), "{out}");
}
