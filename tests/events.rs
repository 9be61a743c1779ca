//! Event streams (issue 11): the ops of `jagged::ops::events` on the
//! emulator against f64 references written here as plain loops
//! (independent of the IR's evaluator), over adversarial nestings (no user,
//! users without sessions, empty sessions, one session, sessions longer
//! than 1024 rows), i32 and i64 offsets, sm_80 and sm_90a; every kernel
//! through ptxas without spills; bad offsets on the device as typed errors
//! naming the level.

mod common;
mod events_support;

use std::sync::Arc;

use events_support::*;
use jagged::codegen::{Arch, Spec, compile_with_plan, ptxas};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph};
use jagged::nested::{Level, NestedError, NestedJagged};
use jagged::ops::events::*;
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, rel_l2};

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

// ---------------------------------------------------------------- kernels

/// Runs `graph` for `arch` on the emulator on host inputs.
fn run(
    rt: &mut Runtime,
    graph: &Graph,
    arch: Arch,
    inputs: &[(&str, &DenseTensor)],
    attrs: &[(&str, AttrValue)],
) -> std::collections::BTreeMap<String, DenseTensor> {
    let spec = Spec::for_graph(graph, 0, arch).expect("spec");
    rt.run_graph_host(graph, &spec, inputs, attrs)
        .unwrap_or_else(|e| panic!("{} {arch}: {e}", graph.name()))
}

/// Per segment `s` (rows `offsets[s] .. offsets[s+1]` of `values [.., d]`),
/// the sum, mean (`sum / max(n, 1)`) or max (0 when empty) of each column.
fn pool_reference(values: &[f64], d: usize, offsets: &[usize], reduce: Reduce) -> Vec<f64> {
    let mut out = Vec::new();
    for w in offsets.windows(2) {
        let n = w[1] - w[0];
        for c in 0..d {
            let col = (w[0]..w[1]).map(|r| values[r * d + c]);
            out.push(match reduce {
                Reduce::Sum => col.sum(),
                Reduce::Mean => col.sum::<f64>() / n.max(1) as f64,
                Reduce::Max => col
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
                    .unwrap_or(0.0),
            });
        }
    }
    out
}

fn assert_close(what: &str, dtype: DType, got: &DenseTensor, want: &[f64]) {
    let got = got.to_f64();
    assert!(
        Tolerance::design(dtype).accepts(&got, want),
        "{what}: relative error {:e} (lengths {} and {})",
        rel_l2(&got, want),
        got.len(),
        want.len()
    );
}

/// `session_pool` and `user_pool` (as `nested_pool` chains them) on every
/// nesting, reduce, dtype, offsets dtype and arch, against the loops.
#[test]
fn session_and_user_pool_match_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(5);
    let mut checked = 0;
    for (dtype, inner) in [
        (DType::F32, vec![5]),
        (DType::BF16, vec![5]),
        (DType::F32, vec![2, 3]),
    ] {
        let d: usize = inner.iter().product();
        for index in [DType::I32, DType::I64] {
            for reduce in Reduce::ALL {
                let sg = session_pool_graph(reduce, dtype, &inner, index).expect("graph");
                let ug = user_pool_graph(reduce, dtype, &inner, index).expect("graph");
                for arch in Arch::ALL {
                    for nesting in adversarial_nestings(&mut rng) {
                        let what =
                            format!("{reduce:?} {dtype} {inner:?} {index} {arch} {nesting:?}");
                        let (sessions, users) = nesting_offsets(&nesting);
                        let (t, s, b) = (
                            sessions[sessions.len() - 1],
                            sessions.len() - 1,
                            users.len() - 1,
                        );
                        let values = random_values(&mut rng, dtype, t * d);
                        let mut shape = vec![t];
                        shape.extend(&inner);
                        let v = tensor(dtype, shape, &values);
                        let so = index_tensor(index, &sessions);
                        let pooled = run(
                            &mut rt,
                            &sg,
                            arch,
                            &[("values", &v), ("session_offsets", &so)],
                            &[],
                        );
                        let out = &pooled["out"];
                        let mut want_shape = vec![s];
                        want_shape.extend(&inner);
                        assert_eq!(out.shape(), &want_shape[..], "{what}");
                        let want = pool_reference(&values, d, &sessions, reduce);
                        assert_close(&what, dtype, out, &want);
                        // The user level pools the kernel's session rows.
                        let uo = index_tensor(index, &users);
                        let per_user = run(
                            &mut rt,
                            &ug,
                            arch,
                            &[("pooled", out), ("user_offsets", &uo)],
                            &[],
                        );
                        let out = &per_user["out"];
                        assert_eq!(out.shape()[0], b, "{what}");
                        let want_users = pool_reference(&want, d, &users, reduce);
                        assert_close(&format!("users: {what}"), dtype, out, &want_users);
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * 3 * 2 * 8);
}

/// `nested_pool` checks both levels before running and pools with mixed
/// reductions (mean of sessions, then max over each user's sessions).
#[test]
fn nested_pool_front_function() {
    let mut rt = runtime();
    let mut rng = Rng::new(9);
    let nesting: Nesting = vec![vec![3, 0, 2], vec![], vec![1200], vec![0]];
    let (sessions, users) = nesting_offsets(&nesting);
    let t = sessions[sessions.len() - 1];
    let values = random_values(&mut rng, DType::F32, t * 4);
    let host = NestedJagged::new(
        tensor(DType::F32, vec![t, 4], &values),
        index_tensor(DType::I64, &sessions),
        index_tensor(DType::I64, &users),
    )
    .expect("nested");
    let dev = DeviceNested::upload(&mut rt, &host).expect("upload");
    let (s, u) = nested_pool(&mut rt, &dev, Reduce::Mean, Reduce::Max).expect("pool");
    let want_s = pool_reference(&values, 4, &sessions, Reduce::Mean);
    let want_u = pool_reference(&want_s, 4, &users, Reduce::Max);
    let (s, u) = (
        rt.download_tensor(&s).unwrap(),
        rt.download_tensor(&u).unwrap(),
    );
    assert_eq!((s.shape(), u.shape()), (&[5, 4][..], &[4, 4][..]));
    assert_close("sessions", DType::F32, &s, &want_s);
    assert_close("users", DType::F32, &u, &want_u);
    // The flat form's offsets on the device.
    let e = dev.event_offsets(&mut rt).expect("event offsets");
    let e = rt.download_tensor(&e).unwrap();
    assert_eq!(e.dtype(), DType::I64);
    assert_eq!(e.to_f64(), [0.0, 5.0, 5.0, 1205.0, 1205.0]);
    // Bad user offsets on the device: a typed error naming the level.
    let bad = DeviceNested {
        user_offsets: rt
            .upload_tensor(&raw_index(DType::I64, &[0, 3, 2, 4, 5]))
            .unwrap(),
        ..dev.clone()
    };
    match nested_pool(&mut rt, &bad, Reduce::Sum, Reduce::Sum) {
        Err(EventsError::Nested(NestedError::Offsets { level, index, .. })) => {
            assert_eq!((level, index), (Level::Users, 2));
        }
        other => panic!("expected a user-level offsets error, got {other:?}"),
    }
    let bad = DeviceNested {
        session_offsets: rt
            .upload_tensor(&raw_index(DType::I64, &[0, 3, 3, 5, 1205, 1204]))
            .unwrap(),
        ..dev
    };
    match nested_pool(&mut rt, &bad, Reduce::Sum, Reduce::Sum) {
        Err(EventsError::Nested(NestedError::Offsets { level, index, .. })) => {
            assert_eq!((level, index), (Level::Sessions, 5));
        }
        other => panic!("expected a session-level offsets error, got {other:?}"),
    }
}

/// `event_boost`'s reference: `factor = table[segment[b], cond[i]]` (1 out
/// of range), applied to the masked columns.
#[allow(clippy::too_many_arguments)]
fn boost_reference(
    values: &[f64],
    d: usize,
    offsets: &[usize],
    segment: &[i64],
    cond: &[i64],
    table: &[f64],
    (g, c): (usize, usize),
    columns: &[bool],
) -> Vec<f64> {
    let mut out = values.to_vec();
    for b in 0..offsets.len() - 1 {
        for i in offsets[b]..offsets[b + 1] {
            let (sg, cd) = (segment[b], cond[i]);
            let factor = if (0..g as i64).contains(&sg) && (0..c as i64).contains(&cd) {
                table[sg as usize * c + cd as usize]
            } else {
                1.0
            };
            for col in 0..d {
                if columns[col] {
                    out[i * d + col] = values[i * d + col] * factor;
                }
            }
        }
    }
    out
}

/// `event_boost` on every user nesting's flat form, dtype, index dtypes,
/// mask dtype and arch, with segments and conditions out of range.
#[test]
fn event_boost_matches_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(13);
    let (d, g, c) = (6, 3, 4);
    let mut checked = 0;
    for dtype in [DType::F32, DType::BF16] {
        for (index, offsets_dtype, mask_dtype) in [
            (DType::I32, DType::I32, DType::U8),
            (DType::I64, DType::I64, DType::U8),
            (DType::I64, DType::I32, DType::F32),
            (DType::I32, DType::I64, DType::Bool),
        ] {
            let mask_dtype = if mask_dtype == DType::F32 {
                dtype
            } else {
                mask_dtype
            };
            let graph = event_boost_graph(dtype, d, g * c, index, mask_dtype, offsets_dtype)
                .unwrap_or_else(|e| panic!("{e}"));
            for arch in Arch::ALL {
                for nesting in adversarial_nestings(&mut rng) {
                    let what =
                        format!("{dtype} {index} {offsets_dtype} {mask_dtype} {arch} {nesting:?}");
                    let offsets = offsets_of(nesting.iter().map(|u| u.iter().sum::<usize>()));
                    let (t, b) = (offsets[offsets.len() - 1], offsets.len() - 1);
                    let values = random_values(&mut rng, dtype, t * d);
                    // -1 ..= G and -1 ..= C: out of range on both sides.
                    let segment: Vec<i64> = (0..b).map(|_| rng.below(g + 2) as i64 - 1).collect();
                    let cond: Vec<i64> = (0..t).map(|_| rng.below(c + 2) as i64 - 1).collect();
                    let table = random_values(&mut rng, dtype, g * c);
                    let columns: Vec<bool> = (0..d).map(|k| k % 3 != 1).collect();
                    let mask: Vec<f64> = columns
                        .iter()
                        .map(|&m| {
                            if m {
                                1.0 + 6.0 * rng.below(2) as f64
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let inputs = [
                        ("values", tensor(dtype, vec![t, d], &values)),
                        ("offsets", index_tensor(offsets_dtype, &offsets)),
                        ("segment", raw_index(index, &segment)),
                        ("cond", raw_index(index, &cond)),
                        ("table", tensor(dtype, vec![g * c], &table)),
                        ("columns", tensor(mask_dtype, vec![d], &mask)),
                    ];
                    let named: Vec<(&str, &DenseTensor)> =
                        inputs.iter().map(|(n, t)| (*n, t)).collect();
                    let attrs = [
                        ("segments", AttrValue::Index(g)),
                        ("conditions", AttrValue::Index(c)),
                    ];
                    let out = run(&mut rt, &graph, arch, &named, &attrs);
                    let want = boost_reference(
                        &values,
                        d,
                        &offsets,
                        &segment,
                        &cond,
                        &table,
                        (g, c),
                        &columns,
                    );
                    assert_eq!(out["values"].shape(), [t, d], "{what}");
                    assert_close(&what, dtype, &out["values"], &want);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 4 * 2 * 8);
}

/// The front function: a `[G, C]` table, columns from a list, the flat
/// form of a nested tensor; factors exactly as given.
#[test]
fn event_boost_front_function() {
    let mut rt = runtime();
    // Two users of 2 and 3 events, values 1..; D = 3, columns 0 and 2.
    let values: Vec<f64> = (1..=15).map(f64::from).collect();
    let v = rt
        .upload_tensor(&tensor(DType::F32, vec![5, 3], &values))
        .unwrap();
    let o = rt
        .upload_tensor(&raw_index(DType::I32, &[0, 2, 5]))
        .unwrap();
    let seg = rt.upload_tensor(&raw_index(DType::I32, &[1, 0])).unwrap();
    let cond = rt
        .upload_tensor(&raw_index(DType::I32, &[0, 1, 1, 2, -1]))
        .unwrap();
    // table[g, c] = 10 g + c + 2.
    let table: Vec<f64> = (0..2)
        .flat_map(|g| (0..2).map(move |c| f64::from(10 * g + c + 2)))
        .collect();
    let tab = rt
        .upload_tensor(&tensor(DType::F32, vec![2, 2], &table))
        .unwrap();
    let cols = column_mask(&mut rt, 3, &[0, 2]).unwrap();
    let out =
        event_boost(&mut rt, &v, &o, &seg, &cond, &tab, &cols).unwrap_or_else(|e| panic!("{e}"));
    let out = rt.download_tensor(&out).unwrap().to_f64();
    // Factors: user 0 (segment 1): 12, 13; user 1 (segment 0): 3, 1 (cond
    // 2 >= C), 1 (cond -1).
    let factors = [12.0, 13.0, 3.0, 1.0, 1.0];
    let want: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(k, &x)| if k % 3 == 1 { x } else { x * factors[k / 3] })
        .collect();
    assert_eq!(out, want);
    assert!(column_mask(&mut rt, 3, &[3]).is_err());
    let bad_table = rt
        .upload_tensor(&tensor(DType::F32, vec![4], &table))
        .unwrap();
    assert!(matches!(
        event_boost(&mut rt, &v, &o, &seg, &cond, &bad_table, &cols),
        Err(EventsError::Input { input: "table", .. })
    ));
}

/// Every event kernel assembles for sm_80 and sm_90a without spills.
#[test]
fn event_kernels_assemble_without_spills() {
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "event_kernels_assemble_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    let mut graphs = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        for reduce in Reduce::ALL {
            graphs.push(session_pool_graph(reduce, dtype, &[64], DType::I64).unwrap());
            graphs.push(user_pool_graph(reduce, dtype, &[64], DType::I32).unwrap());
        }
        graphs.push(event_boost_graph(dtype, 64, 12, DType::I64, DType::U8, DType::I64).unwrap());
        // Rows of 32 columns: cond read 32 rows at a time, shuffled.
        graphs.push(event_boost_graph(dtype, 32, 12, DType::I32, DType::U8, DType::I32).unwrap());
        graphs.push(session_boost_factors::graph(dtype, 12, DType::I32, DType::I32).unwrap());
        graphs.push(boost_sessions::graph(dtype, 64, DType::Bool, DType::I64).unwrap());
    }
    for index in [DType::I32, DType::I64] {
        for by_surface in [false, true] {
            graphs.push(session_segment_int::graph(index, DType::I32, by_surface, index).unwrap());
            graphs.push(
                session_segment_float::graph(DType::F32, index, DType::I64, by_surface, index)
                    .unwrap(),
            );
        }
    }
    assert_no_spills(&graphs);
}

/// The rank-based event kernels (`jagged_topk`, `event_prune` in each
/// selection) through ptxas without spills (the general path gives kernels
/// with a rank room for 64+ registers since d7ed0cb; before, the rank kernel
/// spilled 4 to 12 bytes).
#[test]
fn rank_based_event_kernels_assemble_without_spills() {
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "rank_based_event_kernels_assemble_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    let mut graphs = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        graphs.push(jagged_topk_kernel::graph(dtype, DType::I64, DType::I64).unwrap());
        for (t, r) in [(true, true), (false, true), (true, false), (false, false)] {
            graphs.push(event_prune_kernel::graph(dtype, DType::I32, t, r, DType::I32).unwrap());
        }
    }
    assert_no_spills(&graphs);
}

/// Every graph assembles for sm_80 and sm_90a without a spill or a stack
/// frame (all offenders listed).
fn assert_no_spills(graphs: &[Graph]) {
    let mut offenders = Vec::new();
    for g in graphs {
        for arch in Arch::ALL {
            let spec = Spec::for_graph(g, 0, arch).expect("spec");
            let (kernel, plan) = compile_with_plan(g, &spec).expect("compiles");
            let report = ptxas::assemble(&kernel.ptx, arch)
                .unwrap_or_else(|e| panic!("{} {arch}: {e}\n{plan}", g.name()));
            if !report.offenders().is_empty() {
                offenders.push(format!(
                    "{} {arch}: {:?}\n{plan}",
                    g.name(),
                    report.offenders()
                ));
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// `jagc run` knows the event ops: the emulator's outputs are the
/// reference evaluator's and the loops' (`event_boost`'s table given as
/// its `[G, C]` file).
#[test]
fn jagc_runs_the_event_ops() {
    use jagged::cli::npy;
    let dir = std::env::temp_dir().join(format!("jagged-events-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = Rng::new(17);
    let nesting: Nesting = vec![vec![2, 0, 1100], vec![], vec![3]];
    let (sessions, users) = nesting_offsets(&nesting);
    let events = offsets_of(nesting.iter().map(|u| u.iter().sum::<usize>()));
    let (t, d, g, c) = (sessions[sessions.len() - 1], 4, 2, 3);
    let values = random_values(&mut rng, DType::F32, t * d);
    let segment: Vec<i64> = vec![1, 0, 5];
    let cond: Vec<i64> = (0..t).map(|_| rng.below(c + 1) as i64).collect();
    let table = random_values(&mut rng, DType::F32, g * c);
    let columns = [1.0, 0.0, 0.0, 1.0];
    let files = [
        ("values", tensor(DType::F32, vec![t, d], &values)),
        ("session_offsets", index_tensor(DType::I32, &sessions)),
        ("user_offsets", index_tensor(DType::I32, &users)),
        ("offsets", index_tensor(DType::I64, &events)),
        ("segment", raw_index(DType::I64, &segment)),
        ("cond", raw_index(DType::I64, &cond)),
        ("table", tensor(DType::F32, vec![g, c], &table)),
        ("columns", tensor(DType::U8, vec![d], &columns)),
    ];
    for (name, t) in &files {
        npy::save_dense(t, dir.join(format!("{name}.npy"))).expect("write npy");
    }
    let run = |op: &str, inputs: &[&str], extra: &[&str], backend: &str| -> Vec<f64> {
        let out = dir.join(format!("{op}_{backend}.npy"));
        let mut args: Vec<String> =
            vec!["run".into(), op.into(), "--backend".into(), backend.into()];
        for input in inputs {
            let (name, file) = input.split_once('=').unwrap_or((input, input));
            args.push("--in".into());
            args.push(format!(
                "{name}={}",
                dir.join(format!("{file}.npy")).display()
            ));
        }
        for e in extra {
            args.push("--attr".into());
            args.push((*e).into());
        }
        args.push("--out".into());
        let name = if op == "event_boost" { "values" } else { "out" };
        args.push(format!("{name}={}", out.display()));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_jagc"))
            .args(&args)
            .output()
            .expect("run jagc");
        assert!(
            status.status.success(),
            "{op}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        npy::load_dense(&out).expect("read npy").to_f64()
    };
    let session_means = pool_reference(&values, d, &sessions, Reduce::Mean);
    // user_pool over the reference's session means (a file of them).
    npy::save_dense(
        &tensor(DType::F32, vec![sessions.len() - 1, d], &session_means),
        dir.join("pooled.npy"),
    )
    .expect("write npy");
    // (op, inputs, attributes, the loops' output)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], Vec<f64>);
    let cases: [Case; 3] = [
        (
            "session_pool",
            &["values", "session_offsets"],
            &["reduce=mean"],
            session_means.clone(),
        ),
        (
            "user_pool",
            &["pooled", "user_offsets"],
            &["reduce=max"],
            pool_reference(&session_means, d, &users, Reduce::Max),
        ),
        (
            "event_boost",
            &["values", "offsets", "segment", "cond", "table", "columns"],
            &[],
            boost_reference(
                &values,
                d,
                &events,
                &segment,
                &cond,
                &table,
                (g, c),
                &[true, false, false, true],
            ),
        ),
    ];
    for (op, inputs, extra, want) in cases {
        let reference = run(op, inputs, extra, "reference");
        let emulated = run(op, inputs, extra, "emu");
        assert!(
            rel_l2(&reference, &want) < 1e-6,
            "{op}: reference {}",
            rel_l2(&reference, &want)
        );
        assert!(
            rel_l2(&emulated, &want) < 1e-5,
            "{op}: emulator {}",
            rel_l2(&emulated, &want)
        );
    }
    // jagged_topk: the kept rows of each user's 3 highest scores (with
    // ties), through the emulator and the reference.
    let s = scores(&mut rng, DType::F32, t, false);
    npy::save_dense(&tensor(DType::F32, vec![t], &s), dir.join("scores.npy")).expect("npy");
    let rank = descending_ranks(&s, &events);
    let (want, want_o) = kept_rows(&events, |i| rank[i] < 3);
    for backend in ["reference", "emu"] {
        let (ip, op) = (
            dir.join(format!("indices_{backend}.npy")),
            dir.join(format!("offsets_{backend}.npy")),
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jagc"))
            .args([
                "run",
                "jagged_topk",
                "--backend",
                backend,
                "--attr",
                "k=3",
                "--in",
            ])
            .arg(format!("scores={}", dir.join("scores.npy").display()))
            .arg("--in")
            .arg(format!("offsets={}", dir.join("offsets.npy").display()))
            .arg("--out")
            .arg(format!("indices={}", ip.display()))
            .arg("--out")
            .arg(format!("offsets={}", op.display()))
            .output()
            .expect("run jagc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let indices = npy::load_dense(&ip).expect("npy");
        assert_eq!(indices.dtype(), DType::I64, "{backend}");
        assert_eq!(as_usize(&indices), want, "{backend}");
        assert_eq!(
            as_usize(&npy::load_dense(&op).expect("npy")),
            want_o,
            "{backend}"
        );
    }
    // A bad offsets file is an error naming the input.
    npy::save_dense(
        &raw_index(DType::I32, &[0, 3, 2, 1105]),
        dir.join("bad.npy"),
    )
    .expect("npy");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(["run", "session_pool", "--backend", "emu", "--in"])
        .arg(format!("values={}", dir.join("values.npy").display()))
        .arg("--in")
        .arg(format!("session_offsets={}", dir.join("bad.npy").display()))
        .output()
        .expect("run jagc");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("session_offsets[2]"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `event_boost` with a condition per session: the two kernels on every
/// nesting, dtype, index dtype and arch, and the front function, against
/// the loops (the per-event reference with each event given its session's
/// condition).
#[test]
fn event_boost_per_session_matches_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(31);
    let (d, g, c) = (5, 4, 3);
    let mut checked = 0;
    for dtype in [DType::F32, DType::BF16] {
        for index in [DType::I32, DType::I64] {
            let fg = session_boost_factors::graph(dtype, g * c, index, index).expect("graph");
            let bg = boost_sessions::graph(dtype, d, DType::U8, index).expect("graph");
            for arch in Arch::ALL {
                for nesting in adversarial_nestings(&mut rng) {
                    let what = format!("{dtype} {index} {arch} {nesting:?}");
                    let (sessions, users) = nesting_offsets(&nesting);
                    let (t, s, b) = (
                        sessions[sessions.len() - 1],
                        sessions.len() - 1,
                        users.len() - 1,
                    );
                    let values = random_values(&mut rng, dtype, t * d);
                    let segment: Vec<i64> = (0..b).map(|_| rng.below(g + 2) as i64 - 1).collect();
                    let cond: Vec<i64> = (0..s).map(|_| rng.below(c + 2) as i64 - 1).collect();
                    let table = random_values(&mut rng, dtype, g * c);
                    let columns: Vec<bool> = (0..d).map(|k| k != 2).collect();
                    let mask: Vec<f64> = columns.iter().map(|&m| f64::from(u8::from(m))).collect();
                    let (seg_t, cond_t, table_t) = (
                        raw_index(index, &segment),
                        raw_index(index, &cond),
                        tensor(dtype, vec![g * c], &table),
                    );
                    let uo = index_tensor(index, &users);
                    let attrs = [
                        ("segments", AttrValue::Index(g)),
                        ("conditions", AttrValue::Index(c)),
                    ];
                    let f = run(
                        &mut rt,
                        &fg,
                        arch,
                        &[
                            ("cond", &cond_t),
                            ("segment", &seg_t),
                            ("table", &table_t),
                            ("user_offsets", &uo),
                        ],
                        &attrs,
                    );
                    let (v, so, m) = (
                        tensor(dtype, vec![t, d], &values),
                        index_tensor(index, &sessions),
                        tensor(DType::U8, vec![d], &mask),
                    );
                    let out = run(
                        &mut rt,
                        &bg,
                        arch,
                        &[
                            ("values", &v),
                            ("factor", &f["factor"]),
                            ("columns", &m),
                            ("session_offsets", &so),
                        ],
                        &[],
                    );
                    // Each event takes its session's condition; the users'
                    // events are the flat form.
                    let event_cond: Vec<i64> = (0..s)
                        .flat_map(|k| std::iter::repeat_n(cond[k], sessions[k + 1] - sessions[k]))
                        .collect();
                    let events = offsets_of(nesting.iter().map(|u| u.iter().sum::<usize>()));
                    let want = boost_reference(
                        &values,
                        d,
                        &events,
                        &segment,
                        &event_cond,
                        &table,
                        (g, c),
                        &columns,
                    );
                    assert_close(&what, dtype, &out["values"], &want);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 2 * 8);
    // The front function, on a nested tensor with a [G, C] table.
    let nesting: Nesting = vec![vec![2, 0, 3], vec![], vec![1]];
    let (sessions, users) = nesting_offsets(&nesting);
    let values: Vec<f64> = (0..6 * 2).map(f64::from).collect();
    let host = NestedJagged::new(
        tensor(DType::F32, vec![6, 2], &values),
        index_tensor(DType::I32, &sessions),
        index_tensor(DType::I32, &users),
    )
    .expect("nested");
    let dev = DeviceNested::upload(&mut rt, &host).expect("upload");
    let seg = rt
        .upload_tensor(&raw_index(DType::I32, &[1, 7, 0]))
        .unwrap();
    let cond = rt
        .upload_tensor(&raw_index(DType::I32, &[0, 1, 1, 0]))
        .unwrap();
    // table[g, c] = 10 g + c + 2, G = C = 2.
    let table = [2.0, 3.0, 12.0, 13.0];
    let tab = rt
        .upload_tensor(&tensor(DType::F32, vec![2, 2], &table))
        .unwrap();
    let cols = column_mask(&mut rt, 2, &[1]).unwrap();
    let out = event_boost_sessions(&mut rt, &dev, &seg, &cond, &tab, &cols).expect("boost");
    let out = rt.download_tensor(&out).unwrap().to_f64();
    // Sessions 0, 1, 2 of user 0 (segment 1): 12, 13, 13; session 3 of
    // user 2 (segment 0): 2. Events: 2 + 0 + 3 + 1.
    let factors = [12.0, 12.0, 13.0, 13.0, 13.0, 2.0];
    let want: Vec<f64> = values
        .iter()
        .enumerate()
        .map(|(k, &x)| if k % 2 == 1 { x * factors[k / 2] } else { x })
        .collect();
    assert_eq!(out, want);
}

/// `session_segment`'s reference: per user, a session starts at its first
/// event, where `t_i - t_{i-1} > gap`, and (given `surface`) where the
/// surface changes; `dwell_i = t_{i+1} - t_i` within a session, 0 at its
/// last event. Returns `(session_offsets, user_offsets, dwell)`.
fn segment_reference(
    t: &[f64],
    offsets: &[usize],
    gap: f64,
    surface: Option<&[f64]>,
) -> (Vec<usize>, Vec<usize>, Vec<f64>) {
    let (mut sessions, mut users, mut dwell) = (vec![], vec![0], vec![0.0; t.len()]);
    let new_session = |i: usize| t[i] - t[i - 1] > gap || surface.is_some_and(|s| s[i] != s[i - 1]);
    for w in offsets.windows(2) {
        for i in w[0]..w[1] {
            if i == w[0] || new_session(i) {
                sessions.push(i);
            }
            // A NaN step is no gap: the session goes on (a NaN dwell).
            let gap_after = i + 1 < w[1] && new_session(i + 1);
            if i + 1 < w[1] && !gap_after {
                dwell[i] = t[i + 1] - t[i];
            }
        }
        users.push(sessions.len());
    }
    sessions.push(t.len());
    (sessions, users, dwell)
}

/// Timestamps of users with `counts` events: integer steps of 0 to 20
/// (sometimes a step back), now and then a jump of 30 to 99; the user of
/// more than 1024 events never jumps (one long session).
fn timestamps(rng: &mut Rng, counts: &[usize]) -> Vec<f64> {
    let mut t = Vec::new();
    for &n in counts {
        let mut now = rng.below(1000) as f64;
        for _ in 0..n {
            now += match rng.below(10) {
                0 if n <= 1024 => 30.0 + rng.below(70) as f64,
                1 => -(rng.below(5) as f64),
                _ => rng.below(21) as f64,
            };
            t.push(now);
        }
    }
    t
}

/// `session_segment` on every nesting's user totals, f32 / f64 / i64
/// timestamps, i32 / i64 offsets, sm_80 and sm_90a (its kernel, then
/// `complete_cumsum`), against the loops; the front function on sm_80.
#[test]
fn session_segment_matches_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(41);
    // An integer gap for i64 timestamps; 10.5 for floats (the same sessions
    // on integer timestamps: no difference ties with it).
    let mut checked = 0;
    for dtype in [DType::F32, DType::F64, DType::I64] {
        for index in [DType::I32, DType::I64] {
            for by_surface in [false, true] {
                let (graph, gap, attr) = if dtype == DType::I64 {
                    let g = session_segment_int::graph(index, DType::I32, by_surface, index)
                        .expect("graph");
                    (g, 10.0, AttrValue::Index(10))
                } else {
                    let g =
                        session_segment_float::graph(dtype, index, DType::I32, by_surface, index)
                            .expect("graph");
                    (g, 10.5, AttrValue::Float(10.5))
                };
                let cumsum = jagged::ops::complete_cumsum::graph(index).expect("graph");
                for arch in Arch::ALL {
                    for nesting in adversarial_nestings(&mut rng) {
                        let counts: Vec<usize> = nesting.iter().map(|u| u.iter().sum()).collect();
                        let what = format!("{dtype} {index} {arch} {counts:?}");
                        let events = offsets_of(counts.iter().copied());
                        let t = timestamps(&mut rng, &counts);
                        // Surfaces in runs (a change about every eighth event).
                        let mut surface = vec![0.0; t.len()];
                        for i in 1..t.len() {
                            surface[i] = if rng.below(8) == 0 {
                                rng.below(3) as f64
                            } else {
                                surface[i - 1]
                            };
                        }
                        let (want_s, want_u, want_dwell) =
                            segment_reference(&t, &events, gap, by_surface.then_some(&surface[..]));
                        let (tt, o, st) = (
                            tensor(dtype, vec![t.len()], &t),
                            index_tensor(index, &events),
                            tensor(DType::I32, vec![t.len()], &surface),
                        );
                        let out = run(
                            &mut rt,
                            &graph,
                            arch,
                            &[("timestamps", &tt), ("offsets", &o), ("surface", &st)],
                            &[("gap", attr)],
                        );
                        let lengths = &out["lengths"];
                        assert_eq!(lengths.dtype(), index, "{what}");
                        let s = run(&mut rt, &cumsum, arch, &[("lengths", lengths)], &[]);
                        let got_s: Vec<usize> =
                            s["offsets"].to_f64().iter().map(|&x| x as usize).collect();
                        assert_eq!(got_s, want_s, "session_offsets: {what}");
                        let got_u: Vec<usize> = out["user_offsets"]
                            .to_f64()
                            .iter()
                            .map(|&x| x as usize)
                            .collect();
                        assert_eq!(got_u, want_u, "user_offsets: {what}");
                        assert_eq!(out["dwell"].dtype(), dtype, "{what}");
                        // Integer timestamps: exact in every dtype.
                        assert_eq!(out["dwell"].to_f64(), want_dwell, "dwell: {what}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * 2 * 2 * 8);
    // The front function, and a nested tensor from its offsets.
    let counts = [4usize, 0, 1300, 7];
    let events = offsets_of(counts);
    let t = timestamps(&mut rng, &counts);
    let (want_s, want_u, want_dwell) = segment_reference(&t, &events, 10.0, None);
    for dtype in [DType::F32, DType::I64] {
        let tt = rt.upload_tensor(&tensor(dtype, vec![t.len()], &t)).unwrap();
        let o = rt
            .upload_tensor(&index_tensor(DType::I64, &events))
            .unwrap();
        let gap = if dtype == DType::I64 { 10.9 } else { 10.0 };
        let sessions =
            session_segment(&mut rt, &tt, &o, gap, None).unwrap_or_else(|e| panic!("{e}"));
        let nested = DeviceNested {
            values: tt.clone(),
            session_offsets: sessions.session_offsets.clone(),
            user_offsets: sessions.user_offsets.clone(),
        };
        let (s, u) = nested.check(&mut rt).expect("valid nested offsets");
        assert_eq!((s, u), (want_s.clone(), want_u.clone()), "{dtype}");
        let dwell = rt.download_tensor(&sessions.dwell).unwrap().to_f64();
        assert_eq!(dwell, want_dwell, "{dtype}");
    }
    // The front function with a surface per event (u8: any dtype does),
    // and a surface of the wrong length.
    let surface: Vec<f64> = (0..t.len()).map(|i| ((i / 5) % 3) as f64).collect();
    let (want_s, want_u, want_dwell) = segment_reference(&t, &events, 10.0, Some(&surface));
    let tt = rt
        .upload_tensor(&tensor(DType::F32, vec![t.len()], &t))
        .unwrap();
    let o = rt
        .upload_tensor(&index_tensor(DType::I32, &events))
        .unwrap();
    let st = rt
        .upload_tensor(&tensor(DType::U8, vec![t.len()], &surface))
        .unwrap();
    let sessions = session_segment(&mut rt, &tt, &o, 10.0, Some(&st)).expect("segment");
    let nested = DeviceNested {
        values: tt.clone(),
        session_offsets: sessions.session_offsets.clone(),
        user_offsets: sessions.user_offsets.clone(),
    };
    assert_eq!(nested.check(&mut rt).expect("valid"), (want_s, want_u));
    let dwell = rt.download_tensor(&sessions.dwell).unwrap().to_f64();
    assert_eq!(dwell, want_dwell);
    let short = rt
        .upload_tensor(&tensor(DType::U8, vec![3], &[0.0, 1.0, 2.0]))
        .unwrap();
    assert!(matches!(
        session_segment(&mut rt, &tt, &o, 10.0, Some(&short)),
        Err(EventsError::Input {
            input: "surface",
            ..
        })
    ));
    // A NaN timestamp: its differences are no gap, its dwell times NaN.
    let nan_t = [0.0, f64::NAN, 5.0, 100.0];
    let nan_tt = rt
        .upload_tensor(&tensor(DType::F32, vec![4], &nan_t))
        .unwrap();
    let one = rt
        .upload_tensor(&index_tensor(DType::I32, &[0, 4]))
        .unwrap();
    let sessions = session_segment(&mut rt, &nan_tt, &one, 10.0, None).expect("segment");
    let (want_s, _, want_dwell) = segment_reference(&nan_t, &[0, 4], 10.0, None);
    assert_eq!(want_s, [0, 3, 4]);
    let got_s = rt
        .download_tensor(&sessions.session_offsets)
        .unwrap()
        .to_f64();
    assert_eq!(got_s, [0.0, 3.0, 4.0]);
    let dwell = rt.download_tensor(&sessions.dwell).unwrap().to_f64();
    let text = |v: &[f64]| -> Vec<String> { v.iter().map(|x| format!("{x}")).collect() };
    assert_eq!(text(&dwell), text(&want_dwell));
    assert_eq!(text(&dwell), ["NaN", "NaN", "0", "0"]);
    let tt = rt
        .upload_tensor(&tensor(DType::I64, vec![t.len()], &t))
        .unwrap();
    let o = rt
        .upload_tensor(&index_tensor(DType::I64, &events))
        .unwrap();
    assert!(matches!(
        session_segment(&mut rt, &tt, &o, -1.0, None),
        Err(EventsError::Input { input: "gap", .. })
    ));
}

/// Each row's place in its sequence's sort, highest score first, a NaN
/// above any number, ties to the lower row.
fn descending_ranks(scores: &[f64], offsets: &[usize]) -> Vec<usize> {
    let mut rank = vec![0; scores.len()];
    for w in offsets.windows(2) {
        let mut rows: Vec<usize> = (w[0]..w[1]).collect();
        rows.sort_by(|&a, &b| {
            let (x, y) = (scores[a], scores[b]);
            match (x.is_nan(), y.is_nan()) {
                (true, true) => a.cmp(&b),
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ => y.partial_cmp(&x).unwrap().then(a.cmp(&b)),
            }
        });
        for (place, &r) in rows.iter().enumerate() {
            rank[r] = place;
        }
    }
    rank
}

/// The rows kept by `keep`, per sequence, in order: `(indices, offsets)`.
fn kept_rows(offsets: &[usize], keep: impl Fn(usize) -> bool) -> (Vec<usize>, Vec<usize>) {
    let (mut rows, mut out) = (vec![], vec![0]);
    for w in offsets.windows(2) {
        rows.extend((w[0]..w[1]).filter(|&i| keep(i)));
        out.push(rows.len());
    }
    (rows, out)
}

/// Scores with ties (a few distinct values) and, in `with_nan`, NaNs.
fn scores(rng: &mut Rng, dtype: DType, n: usize, with_nan: bool) -> Vec<f64> {
    (0..n)
        .map(|_| match rng.below(12) {
            0 if with_nan => f64::NAN,
            1..=4 => (rng.below(4) as f64 - 1.5) / 2.0,
            _ => dtype.round(rng.float(2.0)),
        })
        .collect()
}

fn as_usize(t: &DenseTensor) -> Vec<usize> {
    t.to_f64().iter().map(|&x| x as usize).collect()
}

/// `jagged_topk` and `event_prune`'s selection on every nesting's user
/// totals, with ties and NaNs, for several `k` (0, 1, 3, more than any
/// sequence), thresholds, dtypes, offsets dtypes and archs, against the
/// loops.
#[test]
fn topk_and_prune_match_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(53);
    let mut checked = 0;
    for dtype in [DType::F32, DType::BF16] {
        for index in [DType::I32, DType::I64] {
            let topk = jagged_topk_kernel::graph(dtype, index, index).expect("graph");
            let prune: Vec<(bool, bool, Graph)> =
                [(true, true), (true, false), (false, true), (false, false)]
                    .into_iter()
                    .map(|(t, r)| {
                        (
                            t,
                            r,
                            event_prune_kernel::graph(dtype, index, t, r, index).expect("graph"),
                        )
                    })
                    .collect();
            for arch in Arch::ALL {
                for nesting in adversarial_nestings(&mut rng) {
                    let counts: Vec<usize> = nesting.iter().map(|u| u.iter().sum()).collect();
                    let offsets = offsets_of(counts.iter().copied());
                    let b = counts.len();
                    let s = scores(&mut rng, dtype, offsets[b], true);
                    let rank = descending_ranks(&s, &offsets);
                    let (st, o, starts) = (
                        tensor(dtype, vec![s.len()], &s),
                        index_tensor(index, &offsets),
                        index_tensor(index, &offsets[..b]),
                    );
                    let inputs = [("scores", &st), ("offsets", &o), ("starts", &starts)];
                    for k in [0, 1, 3, 2000] {
                        let what = format!("k={k} {dtype} {index} {arch} {counts:?}");
                        let out = run(&mut rt, &topk, arch, &inputs, &[("k", AttrValue::Index(k))]);
                        let (want, want_o) = kept_rows(&offsets, |i| rank[i] < k);
                        assert_eq!(out["indices"].dtype(), index, "{what}");
                        assert_eq!(as_usize(&out["indices"]), want, "indices: {what}");
                        assert_eq!(as_usize(&out["offsets"]), want_o, "offsets: {what}");
                        checked += 1;
                    }
                    let threshold = 0.25;
                    let th = dtype.round(threshold);
                    for (by_t, by_r, g) in &prune {
                        let k = 2;
                        let what =
                            format!("prune t={by_t} r={by_r} {dtype} {index} {arch} {counts:?}");
                        let attrs = [
                            ("k", AttrValue::Index(k)),
                            ("threshold", AttrValue::Float(threshold)),
                        ];
                        let out = run(&mut rt, g, arch, &inputs, &attrs);
                        let keep = |i: usize| (!by_t || s[i] >= th) && (!by_r || rank[i] < k);
                        let (want, want_o) = kept_rows(&offsets, keep);
                        assert_eq!(as_usize(&out["indices"]), want, "indices: {what}");
                        assert_eq!(as_usize(&out["offsets"]), want_o, "offsets: {what}");
                        let mask: Vec<bool> =
                            out["mask"].to_f64().iter().map(|&m| m != 0.0).collect();
                        let want_mask: Vec<bool> = (0..s.len()).map(keep).collect();
                        assert_eq!(mask, want_mask, "mask: {what}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 2 * 8 * (4 + 4));
}

/// The front functions: `jagged_topk`, and `event_prune` carrying two
/// feature tensors along (values checked row by row).
#[test]
fn topk_and_prune_front_functions() {
    let mut rt = runtime();
    let mut rng = Rng::new(61);
    let counts = [5usize, 0, 1100, 1, 9];
    let offsets = offsets_of(counts);
    let t = offsets[counts.len()];
    let s = scores(&mut rng, DType::F32, t, false);
    let rank = descending_ranks(&s, &offsets);
    let x = random_values(&mut rng, DType::F32, t * 3);
    let y = random_values(&mut rng, DType::BF16, t);
    let (st, o, xt, yt) = (
        rt.upload_tensor(&tensor(DType::F32, vec![t], &s)).unwrap(),
        rt.upload_tensor(&index_tensor(DType::I64, &offsets))
            .unwrap(),
        rt.upload_tensor(&tensor(DType::F32, vec![t, 3], &x))
            .unwrap(),
        rt.upload_tensor(&tensor(DType::BF16, vec![t], &y)).unwrap(),
    );
    let (indices, kept_offsets) = jagged_topk(&mut rt, &st, &o, 4).expect("topk");
    let (want, want_o) = kept_rows(&offsets, |i| rank[i] < 4);
    assert_eq!(as_usize(&rt.download_tensor(&indices).unwrap()), want);
    assert_eq!(
        as_usize(&rt.download_tensor(&kept_offsets).unwrap()),
        want_o
    );
    for options in [
        PruneOptions {
            threshold: Some(0.1),
            k: Some(3),
        },
        PruneOptions {
            threshold: Some(-0.5),
            k: None,
        },
        PruneOptions {
            threshold: None,
            k: Some(1),
        },
        PruneOptions::default(),
    ] {
        let keep = |i: usize| {
            options.threshold.is_none_or(|th| s[i] >= f64::from(th))
                && options.k.is_none_or(|k| rank[i] < k)
        };
        let (want, want_o) = kept_rows(&offsets, keep);
        let pruned = event_prune(&mut rt, &st, &o, &[&xt, &yt], &options).expect("prune");
        assert_eq!(
            as_usize(&rt.download_tensor(&pruned.indices).unwrap()),
            want,
            "{options:?}"
        );
        assert_eq!(
            as_usize(&rt.download_tensor(&pruned.offsets).unwrap()),
            want_o,
            "{options:?}"
        );
        let px = rt.download_tensor(&pruned.features[0]).unwrap();
        let py = rt.download_tensor(&pruned.features[1]).unwrap();
        assert_eq!(px.shape(), [want.len(), 3]);
        let want_x: Vec<f64> = want
            .iter()
            .flat_map(|&r| x[r * 3..r * 3 + 3].to_vec())
            .collect();
        let want_y: Vec<f64> = want.iter().map(|&r| y[r]).collect();
        assert_eq!(px.to_f64(), want_x, "{options:?}");
        assert_eq!(
            (py.dtype(), py.to_f64()),
            (DType::BF16, want_y),
            "{options:?}"
        );
    }
}
