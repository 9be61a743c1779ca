//! The DSL methods of grouped features and arg reductions:
//! `argmin_over_features` / `argmax_over_features`, `sum_over_groups`,
//! `matmul_t_grouped`, `matmul_grouped` and `table.at(index)` with an index of one inner dim.
//! Each kernel's graph (the macro's lowering) is checked against naive f64
//! loops by the reference evaluator, and compiled to PTX and run on the
//! emulator against that reference for sm_80 and sm_90a.

mod common;

use std::sync::Arc;

use common::Rng;
use jagged::codegen::{Arch, Spec};
use jagged::dsl::*;
use jagged::ir::{DType, DenseTensor, evaluate};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Tolerance, check_spec_against_reference};

/// Per row and group, the nearest of `N` codewords by `|c|^2 - 2 x.c`
/// (argmin), the farthest by the same score (argmax), and the sum of the
/// groups of `x`.
#[jagged_kernel(outputs(nearest, farthest, total))]
fn grouped<T: Float, G, N, K>(
    x: Jagged<T, (G, K)>,
    c: Dense<T, (G, N, K)>,
) -> (Jagged<i32, (G,)>, Jagged<i32, (G,)>, Jagged<T, (K,)>) {
    let score = (c * c).sum_over_features() - x.matmul_t_grouped(c) * 2.0;
    (
        score.argmin_over_features(),
        score.argmax_over_features(),
        x.sum_over_groups(),
    )
}

/// The nearest codeword of `grouped` from the codewords transposed per
/// group, `ct [G, K, N]` (`ct[g, k, n] = c[g, n, k]`): `x.matmul_grouped`.
#[jagged_kernel(outputs(nearest))]
fn grouped_transposed<T: Float, G, N, K>(
    x: Jagged<T, (G, K)>,
    ct: Dense<T, (G, K, N)>,
) -> Jagged<i32, (G,)> {
    ((ct * ct).sum_over_groups() - x.matmul_grouped(ct) * 2.0).argmin_over_features()
}

/// The same on one row per sequence, and on a dense tensor.
#[jagged_kernel(outputs(nearest, total, dense_max, dense_total))]
fn grouped_per_seq<T: Float, G, N, K>(
    x: PerSeq<T, (G, K)>,
    c: Dense<T, (G, N, K)>,
) -> (
    PerSeq<i32, (G,)>,
    PerSeq<T, (K,)>,
    Dense<i32, (G,)>,
    Dense<T, (G, K)>,
) {
    (
        x.matmul_t_grouped(c).argmin_over_features(),
        x.sum_over_groups(),
        c.sum_over_features().argmax_over_features(),
        c.sum_over_groups(),
    )
}

/// Rows of a table at an index with one inner dim, summed over it.
#[jagged_kernel(outputs(rows))]
fn gather_rows<T: Float, L, R, D>(
    idx: Jagged<i32, (L,)>,
    table: Dense<T, (R, D)>,
) -> Jagged<T, (D,)> {
    table.at(idx).sum_over_groups()
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

fn tensor(dtype: DType, shape: Vec<usize>, v: &[f64]) -> DenseTensor {
    DenseTensor::from_f64(dtype, shape, v).expect("tensor")
}

fn random(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.float()).collect()
}

/// The index of the smallest (`max`: largest) entry, the lowest on ties.
fn arg(v: &[f64], max: bool) -> f64 {
    let mut best = 0;
    for (j, &x) in v.iter().enumerate() {
        if (max && x > v[best]) || (!max && x < v[best]) {
            best = j;
        }
    }
    best as f64
}

#[test]
fn grouped_lowering_is_the_loops() {
    let (g, n, k) = (3, 5, 4);
    let graph = grouped::graph(DType::F64, g, n, k, DType::I32).expect("graph");
    let text = graph.to_string();
    assert!(
        text.contains("[igk], %") && text.contains("[gnk] -> [ign]"),
        "{text}"
    );
    assert!(
        text.contains("reduce argmin") && text.contains("reduce argmax"),
        "{text}"
    );
    let mut rng = Rng(17);
    let t = 9;
    let x = random(&mut rng, t * g * k);
    let c = random(&mut rng, g * n * k);
    let offsets = tensor(DType::I32, vec![4], &[0.0, 4.0, 4.0, 9.0]);
    let inputs = [
        ("offsets", &offsets),
        ("x", &tensor(DType::F64, vec![t, g, k], &x)),
        ("c", &tensor(DType::F64, vec![g, n, k], &c)),
    ];
    let out = evaluate(&graph, &inputs, &[]).expect("evaluates");
    let (mut nearest, mut farthest, mut total) = (vec![], vec![], vec![0.0; t * k]);
    for r in 0..t {
        for gi in 0..g {
            let xs = &x[(r * g + gi) * k..(r * g + gi + 1) * k];
            let scores: Vec<f64> = (0..n)
                .map(|j| {
                    let cs = &c[(gi * n + j) * k..(gi * n + j + 1) * k];
                    cs.iter().map(|v| v * v).sum::<f64>()
                        - 2.0 * xs.iter().zip(cs).map(|(a, b)| a * b).sum::<f64>()
                })
                .collect();
            nearest.push(arg(&scores, false));
            farthest.push(arg(&scores, true));
            for e in 0..k {
                total[r * k + e] += xs[e];
            }
        }
    }
    assert_eq!(out["nearest"].dtype(), DType::I32);
    assert_eq!(out["nearest"].to_f64(), nearest);
    assert_eq!(out["farthest"].to_f64(), farthest);
    let got = out["total"].to_f64();
    assert!(got.iter().zip(&total).all(|(a, b)| (a - b).abs() < 1e-12));
    // The same codewords transposed per group: the same nearest ones.
    let graph = grouped_transposed::graph(DType::F64, g, n, k, DType::I32).expect("graph");
    let text = graph.to_string();
    assert!(
        text.contains("[igk], %") && text.contains("[gkn] -> [ign]"),
        "{text}"
    );
    let ct: Vec<f64> = (0..g * k * n)
        .map(|e| {
            let (gi, rest) = (e / (k * n), e % (k * n));
            c[(gi * n + rest % n) * k + rest / n]
        })
        .collect();
    let inputs = [
        ("offsets", &offsets),
        ("x", &tensor(DType::F64, vec![t, g, k], &x)),
        ("ct", &tensor(DType::F64, vec![g, k, n], &ct)),
    ];
    let out = evaluate(&graph, &inputs, &[]).expect("evaluates");
    assert_eq!(out["nearest"].to_f64(), nearest);
}

#[test]
fn gather_with_an_index_row_is_the_loops() {
    let (l, r, d) = (3, 6, 5);
    let graph = gather_rows::graph(DType::F64, l, r, d, DType::I64).expect("graph");
    let mut rng = Rng(3);
    let t = 7;
    // Indices -1 .. 7: some outside 0..6 (those rows add 0).
    let idx: Vec<f64> = (0..t * l).map(|_| rng.below(9) as f64 - 1.0).collect();
    let table = random(&mut rng, r * d);
    let offsets = tensor(DType::I64, vec![3], &[0.0, 2.0, 7.0]);
    let inputs = [
        ("offsets", &offsets),
        ("idx", &tensor(DType::I32, vec![t, l], &idx)),
        ("table", &tensor(DType::F64, vec![r, d], &table)),
    ];
    let out = evaluate(&graph, &inputs, &[]).expect("evaluates");
    let mut want = vec![0.0; t * d];
    for row in 0..t {
        for j in 0..l {
            let i = idx[row * l + j];
            if (0.0..r as f64).contains(&i) {
                for e in 0..d {
                    want[row * d + e] += table[i as usize * d + e];
                }
            }
        }
    }
    let got = out["rows"].to_f64();
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12),
        "{got:?}\n{want:?}"
    );
}

#[test]
fn grouped_kernels_match_the_reference_on_the_emulator() {
    let mut rt = runtime();
    for dtype in [DType::F32, DType::BF16] {
        let graphs = [
            grouped::graph(dtype, 3, 37, 20, DType::I32).expect("graph"),
            grouped_transposed::graph(dtype, 3, 37, 20, DType::I32).expect("graph"),
            grouped_per_seq::graph(dtype, 3, 9, 20).expect("graph"),
            gather_rows::graph(dtype, 4, 12, 33, DType::I32).expect("graph"),
        ];
        for g in &graphs {
            for arch in Arch::ALL {
                let spec = Spec::for_graph(g, 0, arch).expect("spec");
                check_spec_against_reference(
                    g,
                    &spec,
                    &mut rt,
                    8,
                    &[],
                    &mut jagged::testing::Rng::new(4),
                    Tolerance::design,
                )
                .unwrap_or_else(|e| panic!("{} {dtype} {arch}: {e}", g.name()));
            }
        }
    }
}
