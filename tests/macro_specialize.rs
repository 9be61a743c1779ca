//! `specialize(...)`: the kernels generated inside the macro are the ones the
//! code generator gives at run time, for the graphs `graph(...)` builds and
//! for each architecture (sm_80 and sm_90a unless `arch = [...]` says
//! otherwise), and `launch` uses them without running the code generator.

use std::sync::Arc;

use jagged::codegen::{Arch, Spec};
use jagged::dsl::*;
use jagged::ir::{DType, DenseTensor};
use jagged::runtime::{BackendKind, KernelCache, Runtime};

/// A column softmax, specialized ahead of time for two dtypes and two shapes
/// (and both architectures).
#[jagged_kernel(
    outputs(values),
    specialize(T = [f32, bf16], S = [[4], [2, 3]], offsets = [i32], max_len = [64])
)]
fn softmax_aot<T: Float, S>(values: Jagged<T, S>, #[attr] max_len: usize) -> Jagged<T, S> {
    values.softmax_over_seq()
}

/// The same softmax, embedded for Hopper only.
#[jagged_kernel(
    outputs(values),
    specialize(T = [f32], S = [[4]], offsets = [i32], max_len = [64], arch = [sm_90a])
)]
fn softmax_hopper<T: Float, S>(values: Jagged<T, S>, #[attr] max_len: usize) -> Jagged<T, S> {
    values.softmax_over_seq()
}

#[test]
fn embedded_kernels_match_run_time_code_generation() {
    assert_eq!(softmax_aot::SPECIALIZED.len(), 8);
    let mut seen = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        for inner in [&[4][..], &[2, 3]] {
            for arch in [Arch::Sm80, Arch::Sm90a] {
                let graph = softmax_aot::graph(dtype, inner, DType::I32).unwrap();
                // The lookup `launch` does for a runtime preferring `arch`.
                let spec = Spec::for_graph(&graph, 64, arch).unwrap();
                let text = graph.to_string();
                let entry = softmax_aot::SPECIALIZED
                    .iter()
                    .find(|e| e.graph == text && e.spec == spec.to_string())
                    .unwrap_or_else(|| panic!("no specialization for {dtype} {inner:?} {arch}"));
                let kernel = jagged::codegen::compile(&graph, &spec).unwrap();
                assert_eq!(entry.kernel, kernel.to_text(), "{dtype} {inner:?} {arch}");
                assert_eq!(kernel.arch, arch);
                seen.push(entry.spec);
            }
        }
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 8);
}

#[test]
fn arch_key_limits_the_embedded_architectures() {
    let [entry] = softmax_hopper::SPECIALIZED else {
        panic!("{:?}", softmax_hopper::SPECIALIZED);
    };
    let graph = softmax_hopper::graph(DType::F32, &[4], DType::I32).unwrap();
    let spec = Spec::for_graph(&graph, 64, Arch::Sm90a).unwrap();
    assert_eq!(entry.spec, spec.to_string());
    let kernel = jagged::codegen::compile(&graph, &spec).unwrap();
    assert_eq!(entry.kernel, kernel.to_text());
}

fn run(rt: &mut Runtime, dtype: DType, offsets: DType) -> Vec<f64> {
    let values = DenseTensor::from_f64(dtype, vec![5, 4], &[0.5; 20]).unwrap();
    let offs = DenseTensor::from_f64(offsets, vec![3], &[0.0, 2.0, 5.0]).unwrap();
    let (v, o) = (
        rt.upload_tensor(&values).unwrap(),
        rt.upload_tensor(&offs).unwrap(),
    );
    let out = softmax_aot::launch(rt, &o, &v, 64).unwrap();
    let host = rt.download_tensor(&out).unwrap().to_f64();
    for t in [v, o, out] {
        rt.free(t.buffer).unwrap();
    }
    host
}

#[test]
fn launch_uses_the_embedded_kernels() {
    let mut rt = Runtime::with_backend(BackendKind::Emu).unwrap();
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    // Rows of equal values: softmax gives 1/n_b (n_b = 2 and 3).
    let third = 1.0 / 3.0;
    let mut want = vec![0.5; 8];
    want.extend([third; 12]);
    let got = run(&mut rt, DType::F32, DType::I32);
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{got:?}"
    );
    assert_eq!(
        rt.graph_run_stats().codegen_runs,
        0,
        "a specialized launch ran codegen"
    );
    // i64 offsets were not specialized: generated on first use.
    let got = run(&mut rt, DType::F32, DType::I64);
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
        "{got:?}"
    );
    assert_eq!(rt.graph_run_stats().codegen_runs, 1);
}
