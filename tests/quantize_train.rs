//! Codebook training (`jagged::ops::quantize_train`) on the emulator:
//!
//! - the update kernel (`kmeans_update`: per sequence, the sums and counts
//!   of the rows by code) against f64 loops written here, on random
//!   inputs with empty clusters, `K = 1`, fewer rows than clusters, codes
//!   outside `0 .. K`, several sequences and an empty one;
//! - determinism: the same seed gives bitwise the same codebooks (RQ and
//!   PQ, both inits), another seed other codebooks;
//! - the reconstruction MSE of `rq_train` / `pq_train` (codes by our
//!   `residual_quantize` / `product_quantize`, decoded and measured in f64
//!   here) within 5% of the MSE of FAISS's `ResidualQuantizer` /
//!   `ProductQuantizer` trained on the same rows with the same levels / M,
//!   K and iterations (`scripts/gen-faiss-train-fixtures.py`, FAISS 1.15.1,
//!   tests/data/faiss_train/);
//! - inputs that cannot be trained on are typed errors;
//! - the update kernel against the IR's f64 reference on the adversarial
//!   lengths of `jagged::testing` (sm_80 and sm_90a), and assembled by
//!   ptxas without spills.

mod common;

use std::path::Path;
use std::sync::Arc;

use jagged::cli::npy;
use jagged::codegen::{Arch, Spec, compile_with_plan, ptxas};
use jagged::ir::DType;
use jagged::ops::quantize::*;
use jagged::ops::quantize_train::*;
use jagged::runtime::{BackendKind, DeviceTensor, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference};

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

fn upload_f32(rt: &mut Runtime, values: &[f64], shape: Vec<usize>) -> DeviceTensor {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    DeviceTensor {
        buffer: rt.upload(&v).expect("upload"),
        shape,
    }
}

fn upload_i32(rt: &mut Runtime, values: &[i32], shape: Vec<usize>) -> DeviceTensor {
    DeviceTensor {
        buffer: rt.upload(values).expect("upload"),
        shape,
    }
}

fn download(rt: &mut Runtime, t: &DeviceTensor) -> Vec<f64> {
    rt.download_tensor(t).expect("download").to_f64()
}

/// The update kernel on `x [T, d]` (f32 values), `codes [T]` on
/// `offsets`, against the f64 sums and counts per sequence.
fn check_update(rt: &mut Runtime, x: &[f64], codes: &[i32], offsets: &[i32], k: usize, d: usize) {
    let t = codes.len();
    let b = offsets.len() - 1;
    let ids: Vec<f64> = (0..k).map(|i| i as f64).collect();
    let dx = upload_f32(rt, x, vec![t, d]);
    let dcodes = upload_i32(rt, codes, vec![t, 1]);
    let doffsets = upload_i32(rt, offsets, vec![b + 1]);
    let spread = upload_f32(rt, &vec![1.0; k], vec![1, k]);
    let dids = upload_f32(rt, &ids, vec![k]);
    let (sums, counts) = kmeans_update_kernel::launch(rt, &doffsets, &dx, &dcodes, &spread, &dids)
        .unwrap_or_else(|e| panic!("kmeans_update T = {t} K = {k} D = {d}: {e}"));
    assert_eq!(sums.shape, vec![b, k, d]);
    assert_eq!(counts.shape, vec![b, k]);
    let (got_sums, got_counts) = (download(rt, &sums), download(rt, &counts));
    let mut want_sums = vec![0.0; b * k * d];
    let mut want_counts = vec![0.0; b * k];
    for s in 0..b {
        for i in offsets[s] as usize..offsets[s + 1] as usize {
            let Ok(c) = usize::try_from(codes[i]) else {
                continue;
            };
            if c >= k {
                continue;
            }
            want_counts[s * k + c] += 1.0;
            for e in 0..d {
                // The kernel reads f32 values: compare with their sums.
                want_sums[(s * k + c) * d + e] += f64::from(x[i * d + e] as f32);
            }
        }
    }
    assert_eq!(got_counts, want_counts, "counts, T = {t} K = {k} D = {d}");
    for (j, (g, w)) in got_sums.iter().zip(&want_sums).enumerate() {
        // f32 sums of at most T terms of magnitude <= 1.
        assert!(
            (g - w).abs() <= 1e-5 * (t as f64 + 1.0),
            "sums[{j}] = {g}, f64 loop {w} (T = {t} K = {k} D = {d})"
        );
    }
}

#[test]
fn update_kernel_matches_f64_loops() {
    let mut rt = runtime();
    let mut rng = Rng::new(7);
    // (rows per sequence, K, D, codes drawn from): empty clusters (codes
    // from a third of 0 .. K), K = 1, fewer rows than clusters, codes out of
    // range (-1 and K), several sequences and an empty one, D = 1.
    let cases: [(&[usize], usize, usize, i32, i32); 6] = [
        (&[200], 12, 7, 0, 4),
        (&[50], 1, 5, 0, 1),
        (&[3], 8, 9, 0, 8),
        (&[40], 6, 3, -1, 7),
        (&[17, 0, 33, 1], 5, 20, 0, 5),
        (&[64], 33, 1, 0, 33),
    ];
    for (lengths, k, d, lo, hi) in cases {
        let mut offsets = vec![0i32];
        for &l in lengths {
            offsets.push(offsets[offsets.len() - 1] + l as i32);
        }
        let t = *offsets.last().expect("offsets") as usize;
        let x: Vec<f64> = (0..t * d).map(|_| rng.float(1.0)).collect();
        let codes: Vec<i32> = (0..t)
            .map(|_| lo + rng.below((hi - lo) as usize) as i32)
            .collect();
        check_update(&mut rt, &x, &codes, &offsets, k, d);
    }
}

/// Random rows `[n, d]` in f64, around a few centers.
fn clustered(rng: &mut Rng, n: usize, d: usize) -> Vec<f64> {
    let centers: Vec<f64> = (0..8 * d).map(|_| 2.0 * rng.float(1.0)).collect();
    (0..n)
        .flat_map(|_| {
            let c = rng.below(8);
            (0..d)
                .map(|e| centers[c * d + e] + 0.3 * rng.float(1.0))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn training_is_deterministic() {
    let mut rt = runtime();
    let mut rng = Rng::new(3);
    let (n, d, k) = (96, 6, 8);
    let x = clustered(&mut rng, n, d);
    let dx = upload_f32(&mut rt, &x, vec![n, d]);
    for init in [KMeansInit::PlusPlus, KMeansInit::Random] {
        let options = |seed| KMeansOptions {
            iterations: 3,
            seed,
            init,
        };
        let mut run = |which: &str, seed: u64| -> Vec<f64> {
            let books = match which {
                "rq" => rq_train(&mut rt, &dx, 2, k, &options(seed)),
                _ => pq_train(&mut rt, &dx, 3, k, &options(seed)),
            }
            .unwrap_or_else(|e| panic!("{which} {init:?}: {e}"));
            let want = if which == "rq" {
                vec![2, k, d]
            } else {
                vec![3, k, d / 3]
            };
            assert_eq!(books.shape, want, "{which}");
            download(&mut rt, &books)
        };
        for which in ["rq", "pq"] {
            let a = run(which, 11);
            let b = run(which, 11);
            let c = run(which, 12);
            assert!(a.iter().all(|v| v.is_finite()), "{which} {init:?}");
            assert_eq!(a, b, "{which} {init:?}: the same seed twice");
            assert_ne!(a, c, "{which} {init:?}: another seed");
        }
    }
}

/// A FAISS training fixture (f64).
fn load(what: &str) -> (Vec<usize>, Vec<f64>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/faiss_train")
        .join(format!("{what}.npy"));
    let t = npy::load_dense(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (t.shape().to_vec(), t.to_f64())
}

/// The fixture's levels (RQ), sub-vectors (PQ), codewords and iterations,
/// as in scripts/gen-faiss-train-fixtures.py.
const LEVELS: usize = 2;
const M: usize = 4;
const K: usize = 16;
const ITERATIONS: usize = 10;

/// Mean over the rows of `|x - y|^2`.
fn mse(x: &[f64], y: &[f64], d: usize) -> f64 {
    let n = x.len() / d;
    x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() / n as f64
}

#[test]
fn reconstruction_mse_within_5_percent_of_faiss() {
    let mut rt = runtime();
    let (shape, x) = load("x");
    let (_, faiss) = load("mse");
    let [n, d] = shape[..] else {
        panic!("x is {shape:?}")
    };
    let dx = upload_f32(&mut rt, &x, vec![n, d]);
    let options = KMeansOptions {
        iterations: ITERATIONS,
        ..KMeansOptions::default()
    };

    // RQ: codes by greedy residual_quantize, decoded here.
    let books = rq_train(&mut rt, &dx, LEVELS, K, &options).expect("rq_train");
    let codes = residual_quantize(
        &mut rt,
        &dx,
        None,
        &books,
        &ResidualQuantizeOptions::default(),
    )
    .expect("residual_quantize");
    let (b, c) = (download(&mut rt, &books), download(&mut rt, &codes));
    let decoded: Vec<f64> = (0..n)
        .flat_map(|i| {
            let c = &c;
            let b = &b;
            (0..d).map(move |e| {
                (0..LEVELS)
                    .map(|l| b[(l * K + c[i * LEVELS + l] as usize) * d + e])
                    .sum::<f64>()
            })
        })
        .collect();
    let rq = mse(&x, &decoded, d);

    // PQ: codes by product_quantize, decoded here.
    let s = d / M;
    let centroids = pq_train(&mut rt, &dx, M, K, &options).expect("pq_train");
    let codes = product_quantize(&mut rt, &dx, None, &centroids).expect("product_quantize");
    let (b, c) = (download(&mut rt, &centroids), download(&mut rt, &codes));
    let decoded: Vec<f64> = (0..n)
        .flat_map(|i| {
            let c = &c;
            let b = &b;
            (0..d).map(move |e| {
                let g = e / s;
                b[(g * K + c[i * M + g] as usize) * s + e % s]
            })
        })
        .collect();
    let pq = mse(&x, &decoded, d);

    println!(
        "reconstruction MSE on {n} x {d} rows, {ITERATIONS} iterations: \
         rq_train {rq:.4} vs FAISS ResidualQuantizer {:.4} ({:+.2}%), \
         pq_train {pq:.4} vs FAISS ProductQuantizer {:.4} ({:+.2}%)",
        faiss[0],
        100.0 * (rq / faiss[0] - 1.0),
        faiss[1],
        100.0 * (pq / faiss[1] - 1.0)
    );
    for (name, ours, theirs) in [("rq", rq, faiss[0]), ("pq", pq, faiss[1])] {
        assert!(
            (ours / theirs - 1.0).abs() <= 0.05,
            "{name}_train MSE {ours} not within 5% of FAISS's {theirs}"
        );
    }
}

#[test]
fn untrainable_inputs_are_errors() {
    let mut rt = runtime();
    let x = upload_f32(&mut rt, &[0.5; 12], vec![4, 3]);
    let options = KMeansOptions::default();
    for (what, result) in [
        ("N < K", rq_train(&mut rt, &x, 1, 5, &options)),
        ("K = 0", rq_train(&mut rt, &x, 1, 0, &options)),
        ("M does not divide D", pq_train(&mut rt, &x, 2, 2, &options)),
        ("pq N < K", pq_train(&mut rt, &x, 3, 8, &options)),
    ] {
        match result {
            Err(QuantizeError::Input { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    let flat = upload_f32(&mut rt, &[0.5; 12], vec![12]);
    assert!(matches!(
        rq_train(&mut rt, &flat, 1, 2, &options),
        Err(QuantizeError::Input { .. })
    ));
}

#[test]
fn empty_clusters_are_reseeded() {
    // 4 distinct rows, each repeated: k-means++ runs out of distinct rows
    // after 4 of the K = 6 centroids, so two start as duplicates, lose
    // every row to the lower index and are re-seeded by splitting.
    let mut rt = runtime();
    let (d, k) = (5, 6);
    let points = [
        [1.0, 0.0, 2.0, -1.0, 0.5],
        [-2.0, 1.0, 0.0, 0.5, 1.0],
        [0.0, -3.0, 1.0, 2.0, -0.5],
        [3.0, 3.0, -1.0, 0.0, 0.25],
    ];
    let x: Vec<f64> = (0..40).flat_map(|i| points[i % 4]).collect();
    let dx = upload_f32(&mut rt, &x, vec![40, d]);
    for init in [KMeansInit::PlusPlus, KMeansInit::Random] {
        let options = KMeansOptions {
            iterations: 4,
            seed: 5,
            init,
        };
        let books = rq_train(&mut rt, &dx, 1, k, &options).expect("rq_train");
        let books = download(&mut rt, &books);
        assert!(books.iter().all(|v| v.is_finite()), "{init:?}");
        // Every point keeps a codeword within the split's relative 1/1024.
        for p in points {
            let nearest = (0..k)
                .map(|j| {
                    (0..d)
                        .map(|e| (books[j * d + e] - p[e]).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min);
            let norm: f64 = p.iter().map(|v| v * v).sum();
            assert!(
                nearest <= 1e-5 * norm,
                "{init:?}: {p:?} is {nearest} from its nearest codeword"
            );
        }
    }
}

/// The index of the row of `book [k, d]` nearest to `x` (f64), and
/// whether the second nearest is within a relative 1e-5 (a near-tie).
fn nearest(x: &[f64], book: &[f64], d: usize) -> (usize, bool) {
    let mut ds: Vec<(f64, usize)> = book
        .chunks(d)
        .enumerate()
        .map(|(j, c)| (x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum(), j))
        .collect();
    ds.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    (ds[0].1, ds.len() > 1 && ds[1].0 - ds[0].0 <= 1e-5 * ds[0].0)
}

#[test]
fn one_iteration_is_the_mean_of_the_assignment() {
    // More rows than one update chunk (1024): the chunks' sums add up.
    let mut rt = runtime();
    let mut rng = Rng::new(21);
    let (n, d, k, m) = (1100, 6, 8, 2);
    let x: Vec<f64> = (0..n * d)
        .map(|_| f64::from(rng.float(1.0) as f32))
        .collect();
    let dx = upload_f32(&mut rt, &x, vec![n, d]);
    let options = |iterations| KMeansOptions {
        iterations,
        seed: 4,
        init: KMeansInit::Random,
    };
    // (name, sub-spaces, sub-space width, codebooks after 0 and 1 iteration)
    let mut runs = Vec::new();
    for iterations in [0, 1] {
        let rq = rq_train(&mut rt, &dx, 1, k, &options(iterations)).expect("rq_train");
        let pq = pq_train(&mut rt, &dx, m, k, &options(iterations)).expect("pq_train");
        runs.push((download(&mut rt, &rq), download(&mut rt, &pq)));
    }
    for (name, groups, s, init, trained) in [
        ("rq", 1, d, &runs[0].0, &runs[1].0),
        ("pq", m, d / m, &runs[0].1, &runs[1].1),
    ] {
        for g in 0..groups {
            let sub = |i: usize| &x[i * d + g * s..i * d + (g + 1) * s];
            let init = &init[g * k * s..(g + 1) * k * s];
            // The random init: K distinct rows (sub-vectors) of x.
            for c in init.chunks(s) {
                assert!((0..n).any(|i| sub(i) == c), "{name} {g}: {c:?} is no row");
            }
            let mut sums = vec![0.0; k * s];
            let mut counts = vec![0usize; k];
            for i in 0..n {
                let (j, tie) = nearest(sub(i), init, s);
                assert!(!tie, "{name} {g}: row {i} is a near-tie (change the seed)");
                counts[j] += 1;
                for e in 0..s {
                    sums[j * s + e] += sub(i)[e];
                }
            }
            for j in 0..k {
                assert!(counts[j] > 0, "{name} {g}: centroid {j} holds its own row");
                for e in 0..s {
                    let want = sums[j * s + e] / counts[j] as f64;
                    let got = trained[(g * k + j) * s + e];
                    assert!(
                        (got - want).abs() <= 1e-5,
                        "{name} sub-space {g} centroid {j}[{e}] = {got}, mean {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn update_kernel_matches_the_reference() {
    let mut rt = runtime();
    for index in [DType::I32, DType::I64] {
        // D = 7, K = 5.
        let g = kmeans_update_kernel::graph(7, 1, 5, index).expect("graph");
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, 16, arch).expect("spec");
            let (_, plan) = compile_with_plan(&g, &spec).expect("compiles");
            check_spec_against_reference(
                &g,
                &spec,
                &mut rt,
                16,
                &[],
                &mut Rng::new(9),
                Tolerance::design,
            )
            .unwrap_or_else(|e| panic!("kmeans_update {index} {arch}: {e}\n{plan}"));
        }
    }
}

#[test]
fn update_kernel_assembles_without_spills() {
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "update_kernel_assembles_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    // The sizes of semantic IDs: D = 64 and 256 codewords; D = 8 (a PQ
    // sub-space).
    for (d, k) in [(64, 256), (8, 256), (16, 16)] {
        let g = kmeans_update_kernel::graph(d, 1, k, DType::I32).expect("graph");
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, 1024, arch).expect("spec");
            let (kernel, _) = compile_with_plan(&g, &spec).expect("compiles");
            let report = ptxas::assemble(&kernel.ptx, arch)
                .unwrap_or_else(|e| panic!("kmeans_update D = {d} K = {k} {arch}: {e}"));
            assert!(
                report.offenders().is_empty(),
                "kmeans_update D = {d} K = {k} {arch}: {:?}",
                report.offenders()
            );
        }
    }
}
