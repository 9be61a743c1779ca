//! The interaction ops of OPS.md (`jagged::ops::interactions`): every op,
//! forward and backward, on the emulator against the f64 reference over the
//! adversarial lengths of `jagged::testing`, for every dtype x offsets dtype
//! x arch; tensor cores for f16 / bf16 (and for f32 with tf32); the backward
//! ops against the gradients of the IR's autodiff; ptxas with no spill; the
//! SASS's HMMA count against the PTX's mma count; an epilogue fused into
//! `jagged_dense_bmm`'s kernel; the ops through `jagc run`.

mod common;

use std::sync::Arc;

use jagged::codegen::{Arch, Spec, compile_with_plan, ptxas};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph, autodiff, evaluate};
use jagged::ops::interactions::*;
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference, random_inputs, rel_l2};

/// Dims no tile divides: `K`, `M` (or `D`, `F`; `M`, `P`).
const A: usize = 20;
const C: usize = 12;
/// The `max_len` of the checks (lengths above it are among the cases).
const MAX_LEN: usize = 19;

/// One interaction op: its name, and its graph for a dtype, offsets dtype
/// and tf32 choice.
struct OpCase {
    name: &'static str,
    /// Whether its contraction runs on tensor cores (f16 / bf16, tf32).
    mma: bool,
    graph: fn(DType, DType, bool) -> Graph,
}

fn built(g: Result<Graph, jagged::KernelError>) -> Graph {
    g.unwrap_or_else(|e| panic!("{e}"))
}

const OPS: [OpCase; 6] = [
    OpCase {
        name: "jagged_dense_bmm",
        mma: true,
        graph: |t, i, tf32| {
            built(if tf32 {
                jagged_dense_bmm_tf32::graph(t, A, C, i)
            } else {
                jagged_dense_bmm_full::graph(t, A, C, i)
            })
        },
    },
    OpCase {
        name: "jagged_jagged_bmm",
        mma: true,
        graph: |t, i, tf32| {
            built(if tf32 {
                jagged_jagged_bmm_tf32::graph(t, A, C, i)
            } else {
                jagged_jagged_bmm_full::graph(t, A, C, i)
            })
        },
    },
    OpCase {
        name: "jagged_dense_dot",
        mma: true,
        graph: |t, i, tf32| {
            built(if tf32 {
                jagged_dense_dot_tf32::graph(t, A, C, i)
            } else {
                jagged_dense_dot_full::graph(t, A, C, i)
            })
        },
    },
    OpCase {
        name: "jagged_pairwise_dot",
        // Each packed dot product is computed where it is stored.
        mma: false,
        graph: |t, i, tf32| {
            built(if tf32 {
                jagged_pairwise_dot_tf32::graph(t, A, i)
            } else {
                jagged_pairwise_dot_full::graph(t, A, i)
            })
        },
    },
    OpCase {
        name: "jagged_dense_bmm_backward",
        mma: true,
        graph: |t, i, tf32| {
            built(if tf32 {
                jagged_dense_bmm_backward_tf32::graph(t, A, C, i)
            } else {
                jagged_dense_bmm_backward_full::graph(t, A, C, i)
            })
        },
    },
    OpCase {
        name: "jagged_jagged_bmm_backward",
        mma: true,
        graph: |t, i, tf32| {
            built(if tf32 {
                jagged_jagged_bmm_backward_tf32::graph(t, A, C, i)
            } else {
                jagged_jagged_bmm_backward_full::graph(t, A, C, i)
            })
        },
    },
];

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

/// Every op, dtype, offsets dtype and arch (and tf32 for f32) on the
/// emulator, against the reference; tensor cores where the op has them.
#[test]
fn every_op_matches_the_reference_on_the_emulator() {
    let mut rt = runtime();
    let mut checked = 0;
    for op in &OPS {
        let variants = [
            (DType::F32, false),
            (DType::F32, true),
            (DType::F16, false),
            (DType::BF16, false),
        ];
        for (dtype, tf32) in variants {
            for index in [DType::I32, DType::I64] {
                let g = (op.graph)(dtype, index, tf32);
                for arch in Arch::ALL {
                    let what = format!("{} {dtype} tf32={tf32} {index} {arch}", op.name);
                    let spec = Spec::for_graph(&g, MAX_LEN as u64, arch).expect("spec");
                    let (kernel, plan) =
                        compile_with_plan(&g, &spec).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let mma = kernel.ptx.contains("mma.sync.aligned");
                    let expect_mma = op.mma && (dtype != DType::F32 || tf32);
                    assert_eq!(mma, expect_mma, "{what}: mma in the PTX\n{plan}");
                    if tf32 && op.mma {
                        assert!(kernel.ptx.contains(".tf32.tf32.f32"), "{what}\n{plan}");
                    }
                    let cases = check_spec_against_reference(
                        &g,
                        &spec,
                        &mut rt,
                        MAX_LEN,
                        &[],
                        &mut Rng::new(11),
                        Tolerance::design,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}\n{plan}"));
                    assert!(cases >= 5);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 6 * 4 * 2 * 2);
}

/// Renames the inputs of a run.
fn renamed<'a>(
    inputs: &'a [(String, DenseTensor)],
    from: &str,
    to: &'a str,
) -> Vec<(&'a str, &'a DenseTensor)> {
    inputs
        .iter()
        .map(|(n, t)| (if n == from { to } else { n.as_str() }, t))
        .collect()
}

/// The backward ops compute the gradients that the IR's autodiff derives
/// from the forward graphs (both on the f64 reference), rows `i >= n_b`
/// included (zero).
#[test]
fn backward_ops_are_the_autodiff_gradients() {
    let pairs = [
        (
            built(jagged_dense_bmm_full::graph(DType::F32, A, C, DType::I64)),
            built(jagged_dense_bmm_backward_full::graph(
                DType::F32,
                A,
                C,
                DType::I64,
            )),
        ),
        (
            built(jagged_jagged_bmm_full::graph(DType::F32, A, C, DType::I32)),
            built(jagged_jagged_bmm_backward_full::graph(
                DType::F32,
                A,
                C,
                DType::I32,
            )),
        ),
    ];
    let mut rng = Rng::new(5);
    for (forward, ours) in &pairs {
        let derived = autodiff::backward(forward, &["x", "y"]).unwrap_or_else(|e| panic!("{e}"));
        for lengths in jagged::testing::adversarial_lengths(MAX_LEN, &mut rng) {
            let inputs = random_inputs(ours, &lengths, MAX_LEN, 2.0, &mut rng);
            let attrs = [("max_len", AttrValue::Index(MAX_LEN))];
            let got =
                evaluate(ours, &renamed(&inputs, "", ""), &attrs).unwrap_or_else(|e| panic!("{e}"));
            let want = evaluate(&derived, &renamed(&inputs, "dout", "grad_out"), &attrs)
                .unwrap_or_else(|e| panic!("{e}"));
            for (mine, theirs) in [("dx", "grad_x"), ("dy", "grad_y")] {
                let (a, b) = (got[mine].to_f64(), want[theirs].to_f64());
                assert_eq!(got[mine].shape(), want[theirs].shape(), "{mine}");
                assert!(
                    rel_l2(&a, &b) < 1e-12,
                    "{} {mine} on {lengths:?}: {}",
                    ours.name(),
                    rel_l2(&a, &b)
                );
            }
        }
    }
}

/// `jagged_pairwise_dot` packs `x_i . x_j`, `i < j < n_b`, row-major, with
/// its offsets, through the front function (explicit values).
#[test]
fn pairwise_dot_packs_the_upper_triangle() {
    let mut rt = runtime();
    // Lengths 3, 0, 5 (truncated to 4), 2; x_r = (r, 1).
    let offsets = DenseTensor::from_f64(DType::I32, vec![5], &[0.0, 3.0, 3.0, 8.0, 10.0]).unwrap();
    let rows: Vec<f64> = (0..10).flat_map(|r| [r as f64, 1.0]).collect();
    let x = DenseTensor::from_f64(DType::F32, vec![10, 2], &rows).unwrap();
    let (o, x) = (
        rt.upload_tensor(&offsets).unwrap(),
        rt.upload_tensor(&x).unwrap(),
    );
    let options = InteractionOptions {
        max_len: 4,
        tf32: false,
    };
    let (values, packed_offsets) =
        jagged_pairwise_dot(&mut rt, &o, &x, &options).unwrap_or_else(|e| panic!("{e}"));
    let values = rt.download_tensor(&values).unwrap().to_f64();
    let packed_offsets = rt.download_tensor(&packed_offsets).unwrap();
    assert_eq!(packed_offsets.dtype(), DType::I32);
    assert_eq!(packed_offsets.to_f64(), [0.0, 3.0, 3.0, 9.0, 10.0]);
    let mut expected = Vec::new();
    for (start, n) in [(0usize, 3usize), (3, 0), (3, 4), (8, 2)] {
        for i in 0..n {
            for j in i + 1..n {
                expected.push(((start + i) * (start + j) + 1) as f64);
            }
        }
    }
    assert_eq!(values, expected);
}

/// The front functions run the kernels they name (plain and tf32).
#[test]
fn front_functions_run() {
    let mut rt = runtime();
    let mut rng = Rng::new(3);
    let g = built(jagged_dense_bmm_backward_full::graph(
        DType::F32,
        4,
        3,
        DType::I64,
    ));
    let inputs = random_inputs(&g, &[2, 0, 5], 4, 1.0, &mut rng);
    let get = |n: &str| inputs.iter().find(|(m, _)| m == n).map(|(_, t)| t).unwrap();
    let up = |rt: &mut Runtime, n: &str| rt.upload_tensor(get(n)).unwrap();
    let (o, x, y, dout) = (
        up(&mut rt, "offsets"),
        up(&mut rt, "x"),
        up(&mut rt, "y"),
        up(&mut rt, "dout"),
    );
    for tf32 in [false, true] {
        let options = InteractionOptions { max_len: 4, tf32 };
        let out = jagged_dense_bmm(&mut rt, &o, &x, &y, &options).unwrap();
        assert_eq!(out.shape, [7, 3]);
        let (dx, dy) = jagged_dense_bmm_backward(&mut rt, &o, &x, &y, &dout, &options).unwrap();
        assert_eq!(
            (dx.shape.as_slice(), dy.shape.as_slice()),
            (&[7, 4][..], &[3, 4, 3][..])
        );
        let dot = jagged_dense_dot(&mut rt, &o, &x, &dx, &options);
        // dx is [T, K], not the [B, F, K] that y must be.
        assert!(dot.is_err());
        let jj = jagged_jagged_bmm(&mut rt, &o, &x, &dx, &options).unwrap();
        assert_eq!(jj.shape, [3, 4, 4]);
        let (gx, gy) = jagged_jagged_bmm_backward(&mut rt, &o, &x, &dx, &jj, &options).unwrap();
        assert_eq!(
            (gx.shape.as_slice(), gy.shape.as_slice()),
            (&[7, 4][..], &[7, 4][..])
        );
    }
}

/// `jagged_dense_bmm` with epilogues, written with `#[jagged_kernel]`.
mod epilogues {
    use jagged::dsl::*;

    /// A bias, a gelu (tanh form) and a residual add of a jagged tensor.
    #[jagged_kernel(outputs(out))]
    pub fn bmm_epilogue<T: Float, K, M>(
        x: Jagged<T, (K,)>,
        y: PerSeq<T, (K, M)>,
        bias: Dense<T, (M,)>,
        residual: Jagged<T, (M,)>,
        #[attr] max_len: usize,
    ) -> Jagged<T, (M,)> {
        let h = x.matmul(y) + bias;
        let g = h * 0.5 * ((h + h * h * h * 0.044715) * 0.7978846).tanh() + h * 0.5;
        g + residual
    }

    /// A bias, then relu and silu of the same product.
    #[jagged_kernel(outputs(relu, silu))]
    pub fn bmm_relu_silu<T: Float, K, M>(
        x: Jagged<T, (K,)>,
        y: PerSeq<T, (K, M)>,
        bias: Dense<T, (M,)>,
        #[attr] max_len: usize,
    ) -> (Jagged<T, (M,)>, Jagged<T, (M,)>) {
        let h = x.matmul(y) + bias;
        (h.relu(), h.silu())
    }
}

use epilogues::{bmm_epilogue, bmm_relu_silu};

#[test]
fn epilogues_fuse_into_one_tensor_core_kernel() {
    let mut rt = runtime();
    for dtype in [DType::BF16, DType::F16] {
        let g = built(bmm_epilogue::graph(dtype, 32, 24, DType::I32));
        let spec = Spec::for_graph(&g, MAX_LEN as u64, Arch::Sm80).expect("spec");
        let (kernel, plan) = compile_with_plan(&g, &spec).unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.contains("1 kernel(s)"), "{plan}");
        assert!(plan.contains("tensor cores: mma"), "{plan}");
        assert!(kernel.scratch.is_empty(), "{plan}");
        check_spec_against_reference(
            &g,
            &spec,
            &mut rt,
            MAX_LEN,
            &[],
            &mut Rng::new(2),
            Tolerance::design,
        )
        .unwrap_or_else(|e| panic!("{e}\n{plan}"));
    }
    // Two activations of one product: each output's kernel computes it.
    let g = built(bmm_relu_silu::graph(DType::BF16, 32, 24, DType::I64));
    let spec = Spec::for_graph(&g, MAX_LEN as u64, Arch::Sm90a).expect("spec");
    let (_, plan) = compile_with_plan(&g, &spec).unwrap_or_else(|e| panic!("{e}"));
    check_spec_against_reference(
        &g,
        &spec,
        &mut rt,
        MAX_LEN,
        &[],
        &mut Rng::new(4),
        Tolerance::design,
    )
    .unwrap_or_else(|e| panic!("{e}\n{plan}"));
}

/// `jagc emit --plan` shows the fused epilogue: one kernel, on tensor cores.
#[test]
fn jagc_emit_plan_shows_one_kernel() {
    let dir = std::env::temp_dir().join(format!("jagged-interactions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let g = built(bmm_epilogue::graph(DType::BF16, 64, 64, DType::I32));
    let path = dir.join("bmm_epilogue.jir");
    std::fs::write(&path, g.to_string()).expect("write graph");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(["emit", "--plan", "--attr", "max_len=256", "--graph"])
        .arg(&path)
        .output()
        .expect("run jagc");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("// general path, 1 kernel(s):"), "{text}");
    assert!(text.contains("tensor cores: mma"), "{text}");
    assert_eq!(text.matches(".entry ").count(), 1, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every interaction op assembles for sm_80 and sm_90a without spills.
#[test]
fn interaction_kernels_assemble_without_spills() {
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "interaction_kernels_assemble_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    for op in &OPS {
        for (dtype, tf32) in [
            (DType::F32, false),
            (DType::F32, true),
            (DType::BF16, false),
        ] {
            let g = (op.graph)(dtype, DType::I64, tf32);
            for arch in Arch::ALL {
                let spec = Spec::for_graph(&g, 256, arch).expect("spec");
                let (kernel, _) = compile_with_plan(&g, &spec).expect("compiles");
                let report = ptxas::assemble(&kernel.ptx, arch)
                    .unwrap_or_else(|e| panic!("{} {dtype} {arch}: {e}", op.name));
                assert!(
                    report.offenders().is_empty(),
                    "{} {dtype} tf32={tf32} {arch}: {:?}",
                    op.name,
                    report.offenders()
                );
            }
        }
    }
}

/// The lines of `text` matching `count`, per kernel: a kernel starts at a
/// line holding `marker` followed by its name (`.entry NAME(` in PTX,
/// `.section\t.text.NAME,` in nvdisasm's SASS).
fn per_entry(
    text: &str,
    marker: &str,
    count: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some((_, rest)) = line.split_once(marker) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name.clone(), 0);
            current = Some(name);
        } else if let Some(name) = &current
            && count(line)
        {
            *out.entry(name.clone()).or_insert(0) += 1;
        }
    }
    out
}

/// Every `mma.sync` of each kernel's PTX is an HMMA instruction in its
/// sm_90a SASS, once per copy of the K loop that ptxas unrolls.
#[test]
fn every_mma_is_an_hmma_in_the_sass() {
    let test = "every_mma_is_an_hmma_in_the_sass";
    let (Some(ptxas_path), Some(nvdisasm)) =
        (common::tools::ptxas(test), common::tools::nvdisasm(test))
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("jagged-interactions-mma-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut checked = 0;
    for op in OPS.iter().filter(|op| op.mma) {
        for (dtype, tf32, hmma_kind) in [
            (DType::BF16, false, "HMMA.16816.F32.BF16"),
            (DType::F16, false, "HMMA.16816.F32"),
            (DType::F32, true, "HMMA.1688.F32.TF32"),
        ] {
            let g = (op.graph)(dtype, DType::I32, tf32);
            let spec = Spec::for_graph(&g, 256, Arch::Sm90a).expect("spec");
            let (kernel, _) = compile_with_plan(&g, &spec).expect("compiles");
            let ptx_mma = per_entry(&kernel.ptx, ".entry ", |l| l.contains("mma.sync"));
            assert!(ptx_mma.values().any(|&n| n > 0), "{}", op.name);
            let stem = format!("{}_{dtype}", op.name);
            let (ptx_path, cubin) = (
                dir.join(format!("{stem}.ptx")),
                dir.join(format!("{stem}.cubin")),
            );
            std::fs::write(&ptx_path, &kernel.ptx).expect("write ptx");
            let status = std::process::Command::new(&ptxas_path)
                .args(["-arch=sm_90a", "-o"])
                .arg(&cubin)
                .arg(&ptx_path)
                .status()
                .expect("run ptxas");
            assert!(status.success(), "{stem}");
            let out = std::process::Command::new(&nvdisasm)
                .arg(&cubin)
                .output()
                .expect("run nvdisasm");
            assert!(out.status.success(), "{stem}");
            let sass = String::from_utf8_lossy(&out.stdout);
            let hmma = per_entry(&sass, ".section\t.text.", |l| {
                l.contains(hmma_kind) && (dtype != DType::F16 || !l.contains(".BF16"))
            });
            for (entry, &mma) in &ptx_mma {
                let found = hmma.get(entry).copied().unwrap_or(0);
                assert!(
                    (mma == 0 && found == 0) || (found > 0 && found % mma == 0),
                    "{stem} {entry}: {found} {hmma_kind} for {mma} mma.sync"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `jagc run` knows the interaction ops: the emulator's outputs are the
/// reference's (`--backend reference`), tf32 included, and the packed
/// values of `jagged_pairwise_dot` have exactly `offsets[B]` rows.
#[test]
fn jagc_runs_the_interaction_ops() {
    use jagged::cli::npy;
    let dir = std::env::temp_dir().join(format!("jagged-interactions-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = Rng::new(8);
    let lengths = [3usize, 0, 9, 1];
    let t: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    let tensor = |dtype, shape: Vec<usize>, values: &[f64]| {
        DenseTensor::from_f64(dtype, shape, values).expect("tensor")
    };
    let random = |rng: &mut Rng, n: usize| -> Vec<f64> { (0..n).map(|_| rng.float(1.0)).collect() };
    let files = [
        ("offsets", tensor(DType::I64, vec![5], &offsets)),
        (
            "x",
            tensor(DType::F32, vec![t, 8], &random(&mut rng, t * 8)),
        ),
        (
            "y",
            tensor(DType::F32, vec![4, 8, 6], &random(&mut rng, 4 * 48)),
        ),
        (
            "features",
            tensor(DType::F32, vec![4, 6, 8], &random(&mut rng, 4 * 48)),
        ),
    ];
    for (name, t) in &files {
        npy::save_dense(t, dir.join(format!("{name}.npy"))).expect("write npy");
    }
    let run = |op: &str, inputs: &[&str], extra: &[&str], backend: &str, out: &str| {
        let mut args: Vec<String> =
            vec!["run".into(), op.into(), "--backend".into(), backend.into()];
        for input in inputs {
            // `name` or `name=file` (a file of another name).
            let (name, file) = input.split_once('=').unwrap_or((input, input));
            args.push("--in".into());
            args.push(format!(
                "{name}={}",
                dir.join(format!("{file}.npy")).display()
            ));
        }
        args.extend(["--attr".into(), "max_len=6".into()]);
        for e in extra {
            args.push("--attr".into());
            args.push((*e).into());
        }
        for name in out.split(',') {
            args.push("--out".into());
            args.push(format!(
                "{name}={}",
                dir.join(format!("{backend}_{name}.npy")).display()
            ));
        }
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_jagc"))
            .args(&args)
            .output()
            .expect("run jagc");
        assert!(
            status.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        out.split(',')
            .map(|name| {
                npy::load_dense(dir.join(format!("{backend}_{name}.npy")))
                    .expect("read npy")
                    .to_f64()
            })
            .collect::<Vec<_>>()
    };
    for (op, inputs, extra, out) in [
        (
            "jagged_dense_bmm",
            &["x", "offsets", "y"][..],
            &["tf32=true"][..],
            "out",
        ),
        (
            "jagged_dense_dot",
            &["x", "offsets", "y=features"][..],
            &[][..],
            "out",
        ),
        (
            "jagged_pairwise_dot",
            &["x", "offsets"][..],
            &[][..],
            "values,offsets",
        ),
    ] {
        let reference = run(op, inputs, extra, "reference", out);
        let emulated = run(op, inputs, extra, "emu", out);
        for (r, e) in reference.iter().zip(&emulated) {
            assert_eq!(r.len(), e.len(), "{op}");
            assert!(rel_l2(e, r) < 1e-5, "{op}: {}", rel_l2(e, r));
        }
        if op == "jagged_pairwise_dot" {
            // n_b = 3, 0, 6 (of 9), 1: 3 + 0 + 15 + 0 pairs.
            assert_eq!(emulated[1], [0.0, 3.0, 3.0, 18.0, 18.0]);
            assert_eq!(emulated[0].len(), 18);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
