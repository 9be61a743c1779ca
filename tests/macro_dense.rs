//! `Dense<T, S>` parameters (static dims only: weight vectors and matrices)
//! and the reductions over the last inner dim (`.sum_over_features()`,
//! `.mean_over_features()`, `.max_over_features()`), written with
//! `#[jagged_kernel]`, compiled through the general path and checked on the
//! emulator against the f64 reference on adversarial lengths.

use std::sync::Arc;

use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, check_against_reference};

/// RMS norm of each row times a per-feature weight:
/// `x / sqrt(mean(x^2) + eps) * w`.
#[jagged_kernel(outputs(y))]
fn rms_norm<T: Float, D>(
    x: Jagged<T, (D,)>,
    w: Dense<T, (D,)>,
    #[attr(default = 1e-6)] eps: f32,
) -> Jagged<T, (D,)> {
    x * ((x * x).mean_over_features() + eps).rsqrt() * w
}

/// RMS norm computed in f32 whatever the input dtype, rows past `max_len`
/// dropped.
#[jagged_kernel(outputs(y))]
fn rms_norm_f32<T: Float, D>(
    x: Jagged<T, (D,)>,
    w: Dense<f32, (D,)>,
    #[attr] max_len: usize,
    #[attr(default = 1e-5)] eps: f32,
) -> Jagged<T, (D,)> {
    let xf = x.cast::<f32>();
    let inv = ((xf * xf).mean_over_features() + eps).rsqrt();
    (xf * inv * w).cast::<T>()
}

/// A per-head, per-feature scale matrix and a bias vector over the heads.
#[jagged_kernel(outputs(y))]
fn head_affine<H, D>(
    x: Jagged<f32, (H, D)>,
    scale: Dense<f32, (H, D)>,
    bias: Dense<f32, (H,)>,
    #[attr] max_len: usize,
) -> Jagged<f32, (H,)> {
    (x * scale).sum_over_features() + bias
}

/// A weight meeting one row per sequence, and the largest feature of each row.
#[jagged_kernel(outputs(pooled, peak))]
fn pooled_weighted<D>(
    x: Jagged<f32, (D,)>,
    w: Dense<f32, (D,)>,
    #[attr] max_len: usize,
) -> (PerSeq<f32, (D,)>, Jagged<f32, ()>) {
    (x.mean_over_seq() * w, (x * w).max_over_features())
}

/// A dense-only computation is a dense output.
#[jagged_kernel(outputs(norm))]
fn weight_norm<D>(w: Dense<f32, (D,)>) -> Dense<f32, ()> {
    (w * w).sum_over_features().sqrt()
}

/// A linear layer on every row: `x W + b` (f32 accumulation, `b` converted
/// to it, the sum rounded to `T`).
#[jagged_kernel(outputs(y))]
fn linear<T: Float, K, M>(
    x: Jagged<T, (K,)>,
    w: Dense<T, (K, M)>,
    b: Dense<T, (M,)>,
    #[attr] max_len: usize,
) -> Jagged<T, (M,)> {
    x.matmul(w) + b
}

/// A per-head projection by one square matrix, and the pooled rows
/// projected per sequence.
#[jagged_kernel(outputs(heads, pooled))]
fn project<H, D>(
    x: Jagged<f32, (H, D)>,
    w: Dense<f32, (D, D)>,
    #[attr] max_len: usize,
) -> (Jagged<f32, (H, D)>, PerSeq<f32, (H, D)>) {
    (x.matmul(w), x.mean_over_seq().matmul(w).relu())
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

fn check(graph: &Graph, max_len: usize, attrs: &[(&str, AttrValue)], seed: u64) {
    let mut rt = runtime();
    let cases = check_against_reference(graph, &mut rt, max_len, attrs, &mut Rng::new(seed))
        .unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()));
    assert!(cases >= 5);
}

#[test]
fn rms_norm_graph_has_a_dense_weight_and_a_feature_mean() {
    let g = rms_norm::graph(DType::F32, 8, DType::I32).expect("graph");
    let text = g.to_string();
    assert!(text.contains("input w : f32[8]"), "{text}");
    assert!(text.contains("reduce mean"), "{text}");
    let inputs: Vec<&str> = g.inputs().map(|(_, n, _)| n).collect();
    assert_eq!(inputs, ["offsets", "x", "w"]);
}

#[test]
fn rms_norm_times_a_weight_matches_the_reference() {
    for (dtype, seed) in [(DType::F32, 1), (DType::BF16, 2), (DType::F16, 3)] {
        let g = rms_norm::graph(dtype, 16, DType::I64).expect("graph");
        check(&g, 9, &[("eps", AttrValue::Float(1e-3))], seed);
    }
}

#[test]
fn rms_norm_in_f32_with_max_len_matches_the_reference() {
    for (dtype, seed) in [(DType::F32, 4), (DType::BF16, 5)] {
        let g = rms_norm_f32::graph(dtype, 12, DType::I32).expect("graph");
        check(&g, 7, &[], seed);
    }
}

#[test]
fn a_weight_matrix_and_a_bias_vector_broadcast_by_structure() {
    let g = head_affine::graph(3, 8, DType::I32).expect("graph");
    check(&g, 6, &[], 6);
}

#[test]
fn weights_meet_per_sequence_values_and_rows() {
    let g = pooled_weighted::graph(5, DType::I64).expect("graph");
    check(&g, 8, &[], 7);
}

/// The graph of a kernel without sequences is dense throughout; the
/// reference computes it. (The code generator needs an offsets input to
/// compile a graph today: running it is a typed `unsupported` error.)
#[test]
fn a_dense_only_kernel_has_a_dense_output() {
    use jagged::ir::DenseTensor;
    let g = weight_norm::graph(3).expect("graph");
    assert!(g.to_string().contains("input w : f32[3]"), "{g}");
    let w = DenseTensor::from_f64(DType::F32, vec![3], &[1.0, 2.0, 2.0]).unwrap();
    let out = jagged::ir::evaluate(&g, &[("w", &w)], &[]).expect("reference");
    assert_eq!(out["norm"].to_f64(), [3.0]);
}

#[test]
fn launch_reads_the_weight_dims_from_its_shape() {
    use jagged::ir::DenseTensor;
    let mut rt = runtime();
    let d = 4;
    let lens = [2usize, 0, 3];
    let total: usize = lens.iter().sum();
    let mut offsets = vec![0.0];
    for l in lens {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    let xs: Vec<f64> = (0..total * d).map(|k| (k as f64 * 0.37).sin()).collect();
    let ws: Vec<f64> = (0..d).map(|k| 0.5 + k as f64).collect();
    let o = DenseTensor::from_f64(DType::I32, vec![lens.len() + 1], &offsets).unwrap();
    let x = DenseTensor::from_f64(DType::F32, vec![total, d], &xs).unwrap();
    let w = DenseTensor::from_f64(DType::F32, vec![d], &ws).unwrap();
    let (o, x, w) = (
        rt.upload_tensor(&o).unwrap(),
        rt.upload_tensor(&x).unwrap(),
        rt.upload_tensor(&w).unwrap(),
    );
    let y = rms_norm::launch(&mut rt, &o, &x, &w, 1e-6).expect("launch");
    let got = rt.download_tensor(&y).unwrap().data().to_f64();
    for r in 0..total {
        let row = &xs[r * d..(r + 1) * d];
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        for c in 0..d {
            let want = row[c] / (ms + 1e-6).sqrt() * ws[c];
            assert!((got[r * d + c] - want).abs() < 1e-4, "row {r} col {c}");
        }
    }
    // A weight of the wrong length is an error naming it, not a panic.
    let bad = DenseTensor::from_f64(DType::F32, vec![d + 1], &[1.0; 5]).unwrap();
    let bad = rt.upload_tensor(&bad).unwrap();
    let e = rms_norm::launch(&mut rt, &o, &x, &bad, 1e-6).expect_err("mismatched weight");
    assert!(
        e.to_string().contains('w') || e.to_string().contains("shape"),
        "{e}"
    );
}

#[test]
fn a_linear_layer_with_a_weight_matrix_matches_the_reference() {
    let g = linear::graph(DType::BF16, 8, 5, DType::I32).expect("graph");
    assert!(g.to_string().contains("-> [im] : f32[%1, 5]"), "{g}");
    check(&g, 7, &[], 9);
    let g = linear::graph(DType::F32, 16, 3, DType::I64).expect("graph");
    check(&g, 5, &[], 10);
}

#[test]
fn per_head_and_per_sequence_projections_match_the_reference() {
    let g = project::graph(2, 4, DType::I32).expect("graph");
    check(&g, 6, &[], 11);
}
