//! `Runtime::run_graph` end to end on the emulator: every primitive graph of
//! `jagged_ir::ops` against the f64 reference evaluator on jagged layouts with
//! empty sequences, sequences longer than `max_len`, `B = 0` and `T = 0`, with
//! outputs poisoned; the caches (no code generation on a second run, none in a
//! second runtime sharing the disk cache); typed errors for bad inputs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use jagged_codegen::{Arch, Spec};
use jagged_ir::bind::BindError;
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrValue, DType, DenseTensor, Dim, Graph, ReduceOp, TensorError};
use jagged_runtime::{BackendKind, GraphRunError, KernelCache, Runtime};

const MAX_LEN: usize = 8;
const PADDING: f64 = -1.5;

/// xorshift64*: deterministic inputs without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-2, 2).
    fn float(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    }
}

/// A runtime with a fresh in-memory kernel cache and poisoned outputs.
fn prepared(mut rt: Runtime) -> Runtime {
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

fn emu() -> Runtime {
    prepared(Runtime::with_backend(BackendKind::Emu).expect("emulator"))
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jagged-launcher-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Inputs for every graph input of `graph` on sequences of `lengths`.
fn inputs_for(graph: &Graph, lengths: &[usize], rng: &mut Rng) -> Vec<(String, DenseTensor)> {
    let total: usize = lengths.iter().sum();
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    graph
        .inputs()
        .map(|(_, name, ty)| {
            let shape: Vec<usize> = ty
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Ragged(_) => total,
                    Dim::Batch => lengths.len(),
                    Dim::BatchPlusOne => lengths.len() + 1,
                    Dim::MaxLen => MAX_LEN,
                    Dim::Static(n) => *n,
                })
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = match name {
                "offsets" => offsets.clone(),
                "lengths" => lengths.iter().map(|&l| l as f64).collect(),
                // Set rows hold any nonzero byte: a kernel testing `== 1` fails.
                "mask" => (0..n)
                    .map(|_| match rng.next() % 2 {
                        0 => 0.0,
                        _ => (1 + rng.next() % 255) as f64,
                    })
                    .collect(),
                _ => (0..n).map(|_| rng.float()).collect(),
            };
            let tensor = DenseTensor::from_f64(ty.dtype, shape, &values).expect("input");
            (name.to_string(), tensor)
        })
        .collect()
}

fn attrs_for(graph: &Graph) -> Vec<(&'static str, AttrValue)> {
    [
        ("max_len", AttrValue::Index(MAX_LEN)),
        ("padding_value", AttrValue::Float(PADDING)),
    ]
    .into_iter()
    .filter(|(n, _)| graph.attr(n).is_some())
    .collect()
}

/// `||a - b|| / ||b||` (absolute when `b` is zero); NaN gives infinity.
fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    if a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}

fn run_and_compare(rt: &mut Runtime, graph: &Graph, lengths: &[usize], rng: &mut Rng) {
    let inputs = inputs_for(graph, lengths, rng);
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let attrs = attrs_for(graph);
    let expected = jagged_ir::evaluate(graph, &named, &attrs).expect("reference");
    let spec = Spec::for_graph(graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
    let got: BTreeMap<String, DenseTensor> = rt
        .run_graph_host(graph, &spec, &named, &attrs)
        .unwrap_or_else(|e| panic!("{} on {lengths:?}: {e}", graph.name()));
    assert_eq!(got.len(), expected.len());
    for (name, want) in &expected {
        let have = &got[name];
        let what = format!("{} output '{name}' on {lengths:?}", graph.name());
        assert_eq!(have.shape(), want.shape(), "{what}");
        assert_eq!(have.dtype(), want.dtype(), "{what}");
        let err = rel_l2(&have.to_f64(), &want.to_f64());
        assert!(err <= 1e-5, "{what}: relative error {err}");
    }
}

fn primitives() -> Vec<Graph> {
    let spec = |inner: &[usize]| JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: inner.to_vec(),
    };
    let i64_spec = JaggedSpec {
        offsets: DType::I64,
        ..spec(&[3])
    };
    vec![
        ops::complete_cumsum(DType::I64).expect("graph"),
        ops::jagged_to_padded_dense(&spec(&[2, 3])).expect("graph"),
        ops::dense_to_jagged(&spec(&[5])).expect("graph"),
        ops::jagged_dense_elementwise_mul(&spec(&[4])).expect("graph"),
        ops::jagged_softmax(&spec(&[6])).expect("graph"),
        ops::jagged_reduce(&i64_spec, ReduceOp::Sum).expect("graph"),
        ops::jagged_reduce(&spec(&[3]), ReduceOp::Mean).expect("graph"),
        ops::jagged_reduce(&spec(&[3]), ReduceOp::Max).expect("graph"),
        ops::masked_select_jagged(&spec(&[2]), DType::Bool).expect("graph"),
        ops::masked_select_jagged(&i64_spec, DType::U8).expect("graph"),
    ]
}

fn every_primitive_on(rt: &mut Runtime) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let layouts: [&[usize]; 4] = [
        &[],
        &[0, 0],
        &[0, MAX_LEN + 5, 1, MAX_LEN, 2],
        &[3, 0, 17, 7],
    ];
    for graph in primitives() {
        for lengths in layouts {
            run_and_compare(rt, &graph, lengths, &mut rng);
        }
    }
}

#[test]
fn every_primitive_matches_the_reference() {
    every_primitive_on(&mut emu());
}

/// The same on a GPU, where one is present (skipped loudly otherwise).
#[test]
fn every_primitive_matches_the_reference_on_cuda() {
    match Runtime::with_backend(BackendKind::Cuda) {
        Ok(rt) => every_primitive_on(&mut prepared(rt)),
        Err(why) => eprintln!("SKIPPED every_primitive_matches_the_reference_on_cuda: {why}"),
    }
}

#[test]
fn a_second_run_does_no_code_generation() {
    let dir = temp_dir("second-run");
    let cache = Arc::new(KernelCache::in_dir(&dir).expect("cache dir"));
    let graph = ops::jagged_softmax(&JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![4],
    })
    .expect("graph");
    let mut rng = Rng(7);
    let mut rt = emu();
    rt.set_kernel_cache(cache.clone());
    run_and_compare(&mut rt, &graph, &[2, 9, 0], &mut rng);
    run_and_compare(&mut rt, &graph, &[5, 1], &mut rng);
    let stats = rt.graph_run_stats();
    assert_eq!(
        (stats.runs, stats.codegen_runs, stats.module_loads),
        (2, 1, 1)
    );
    assert_eq!(cache.stats().misses, 1);

    // A second runtime (a second process, as far as the cache can tell: it
    // reads the entry from disk) generates nothing either.
    let mut other = emu();
    other.set_kernel_cache(Arc::new(KernelCache::in_dir(&dir).expect("cache dir")));
    run_and_compare(&mut other, &graph, &[3, 3], &mut rng);
    let stats = other.graph_run_stats();
    assert_eq!((stats.codegen_runs, stats.kernel_cache_hits), (0, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn outputs_stay_on_the_device_until_freed() {
    let graph = ops::masked_select_jagged(
        &JaggedSpec {
            dtype: DType::F32,
            offsets: DType::I32,
            inner: vec![2],
        },
        DType::U8,
    )
    .expect("graph");
    let mut rt = emu();
    let values = DenseTensor::from_f64(DType::F32, vec![4, 2], &[1., 2., 3., 4., 5., 6., 7., 8.])
        .expect("values");
    let offsets = DenseTensor::from_f64(DType::I32, vec![3], &[0., 3., 4.]).expect("offsets");
    let mask = DenseTensor::from_f64(DType::U8, vec![4], &[1., 0., 1., 0.]).expect("mask");
    let inputs: Vec<_> = [("values", &values), ("offsets", &offsets), ("mask", &mask)]
        .into_iter()
        .map(|(n, t)| (n, rt.upload_tensor(t).expect("upload")))
        .collect();
    let named: Vec<_> = inputs.iter().map(|(n, t)| (*n, t)).collect();
    let spec = Spec::for_graph(&graph, 0, Arch::Sm80).expect("spec");
    let outs = rt.run_graph(&graph, &spec, &named, &[]).expect("run");
    // Kept rows 0 and 2 of sequence 0, nothing of sequence 1.
    let kept = rt.download_tensor(&outs["values"]).expect("download");
    assert_eq!(kept.shape(), &[2, 2]);
    assert_eq!(kept.to_f64(), vec![1., 2., 5., 6.]);
    let new_offsets = rt.download_tensor(&outs["offsets"]).expect("download");
    assert_eq!(new_offsets.to_f64(), vec![0., 2., 2.]);
    for t in outs.into_values().chain(inputs.into_iter().map(|(_, t)| t)) {
        rt.free(t.buffer).expect("free");
    }
}

#[test]
fn bad_inputs_are_typed_errors_naming_the_argument() {
    let graph = ops::jagged_softmax(&JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![2],
    })
    .expect("graph");
    let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
    let mut rt = emu();
    let values = DenseTensor::from_f64(DType::F32, vec![3, 2], &[0.0; 6]).expect("values");
    let offsets = DenseTensor::from_f64(DType::I32, vec![3], &[0., 2., 3.]).expect("offsets");
    let max_len = [("max_len", AttrValue::Index(MAX_LEN))];
    let mut run = |inputs: &[(&str, &DenseTensor)], attrs: &[(&str, AttrValue)]| {
        rt.run_graph_host(&graph, &spec, inputs, attrs)
            .expect_err("must fail")
    };

    let err = run(&[("values", &values)], &max_len);
    assert!(
        matches!(&err, GraphRunError::Bind(BindError::MissingInput { name }) if name == "offsets"),
        "{err}"
    );

    let err = run(
        &[("values", &values), ("offsets", &offsets), ("x", &values)],
        &max_len,
    );
    assert!(
        matches!(&err, GraphRunError::Bind(BindError::UnknownInput { name }) if name == "x"),
        "{err}"
    );

    let bad = DenseTensor::from_f64(DType::I32, vec![3], &[0., 2., 1.]).expect("offsets");
    let err = run(&[("values", &values), ("offsets", &bad)], &max_len);
    assert!(
        matches!(&err, GraphRunError::Offsets(TensorError::DecreasingOffsets { arg, .. }) if arg == "offsets"),
        "{err}"
    );

    let short = DenseTensor::from_f64(DType::I32, vec![3], &[0., 2., 2.]).expect("offsets");
    let err = run(&[("values", &values), ("offsets", &short)], &max_len);
    assert!(
        matches!(
            &err,
            GraphRunError::Offsets(TensorError::LastOffsetMismatch { .. })
        ),
        "{err}"
    );

    let wide = DenseTensor::from_f64(DType::F32, vec![3, 3], &[0.0; 9]).expect("values");
    let err = run(&[("values", &wide), ("offsets", &offsets)], &max_len);
    assert!(
        matches!(&err, GraphRunError::Bind(BindError::InputShape { name, .. }) if name == "values"),
        "{err}"
    );

    let err = run(&[("values", &values), ("offsets", &offsets)], &[]);
    assert!(
        matches!(&err, GraphRunError::Bind(BindError::MissingAttribute { name }) if name == "max_len"),
        "{err}"
    );

    let err = run(
        &[("values", &values), ("offsets", &offsets)],
        &[
            ("max_len", AttrValue::Index(MAX_LEN)),
            ("alpha", AttrValue::Float(1.0)),
        ],
    );
    assert!(
        matches!(&err, GraphRunError::Bind(BindError::UnknownAttribute { name }) if name == "alpha"),
        "{err}"
    );

    let err = run(
        &[("values", &values), ("offsets", &offsets)],
        &[("max_len", AttrValue::Index(1000))],
    );
    assert!(
        matches!(err, GraphRunError::MaxLenAboveBucket { max_len: 1000, .. }),
        "{err}"
    );
}

/// Lengths that would make invalid offsets (a negative one, or a sum past
/// the offsets dtype) are refused by `run_graph` before any kernel runs,
/// with the reference evaluator's typed errors.
#[test]
fn complete_cumsum_refuses_bad_lengths_before_launching() {
    let graph = ops::complete_cumsum(DType::I32).expect("graph");
    let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
    let mut rt = emu();
    for lengths in [vec![3.0, -1.0, 2.0], vec![2e9, 2e9]] {
        let t = DenseTensor::from_f64(DType::I32, vec![lengths.len()], &lengths).expect("lengths");
        let err = rt
            .run_graph_host(&graph, &spec, &[("lengths", &t)], &[])
            .expect_err("bad lengths must be refused");
        let reference = jagged_ir::evaluate(&graph, &[("lengths", &t)], &[])
            .expect_err("the reference refuses them too");
        assert_eq!(err.to_string(), reference.to_string(), "{lengths:?}");
    }
}

/// A cached module the device cannot load (here: a decodable entry whose
/// PTX is not PTX) is evicted and generated again, instead of failing on
/// every run.
#[test]
fn a_cached_module_that_fails_to_load_is_evicted_and_regenerated() {
    use jagged_runtime::{CacheEntry, graph_cache_key};
    let graph = ops::jagged_softmax(&JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![4],
    })
    .expect("graph");
    let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
    let cache = Arc::new(KernelCache::memory_only());
    let mut bad = jagged_codegen::compile(&graph, &spec).expect("compile");
    bad.ptx = "this is not PTX".to_string();
    let key = graph_cache_key(&graph, &spec);
    cache.insert(&key, bad.encode()).expect("insert");
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(cache.clone());
    let lengths = [3usize, 0, 5];
    let mut rng = Rng(7);
    let inputs = inputs_for(&graph, &lengths, &mut rng);
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let attrs = [("max_len", AttrValue::Index(MAX_LEN))];
    let got = rt
        .run_graph_host(&graph, &spec, &named, &attrs)
        .expect("regenerated after the bad entry");
    let want = jagged_ir::evaluate(&graph, &named, &attrs).expect("reference");
    assert_eq!(got["values"].shape(), want["values"].shape());
    assert_eq!(rt.graph_run_stats().codegen_runs, 1);
    // The cache now holds the good module: a second runtime loads it as is.
    let mut again = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    again.set_kernel_cache(cache);
    again
        .run_graph_host(&graph, &spec, &named, &attrs)
        .expect("the regenerated entry");
    assert_eq!(again.graph_run_stats().codegen_runs, 0);
}

/// `Runtime::take_launch_log` on the emulator: one record per launch of a
/// two-kernel graph, in the compiled module's launch order, whose counts sum
/// to the step total `take_emulator_profile` reports; a second call is empty.
#[test]
fn the_launch_log_has_each_kernel_of_a_run_in_order() {
    // Off the tensor-core template (f32, D = 8), attention is two kernels:
    // the softmax statistics, then the output.
    let graph = ops::fbgemm_jagged_flash_attention_basic(&ops::FbgemmAttentionSpec {
        input_dtype: DType::F32,
        dtype: DType::F32,
        offsets: DType::I32,
        head_dim: 8,
        use_mask: false,
    })
    .expect("graph");
    let spec = Spec::for_graph(&graph, MAX_LEN as u64, Arch::Sm80).expect("spec");
    let mut rt = emu();
    let (kernel, _) = rt.compile_graph(&graph, &spec).expect("compile");
    let entries: Vec<&str> = kernel.launches.iter().map(|l| l.entry.as_str()).collect();
    assert_eq!(entries.len(), 2, "a two-kernel graph: {entries:?}");
    assert_eq!(rt.take_launch_log(), Some(Vec::new()));
    let _ = rt.take_emulator_profile();

    run_and_compare(&mut rt, &graph, &[3, 0, 7], &mut Rng(5));
    let step = rt.take_emulator_profile().expect("emulator");
    let log = rt.take_launch_log().expect("emulator");
    let logged: Vec<&str> = log.iter().map(|r| r.entry.as_str()).collect();
    assert_eq!(logged, entries);
    let mut sum = jagged_emu::Profile::default();
    for record in &log {
        assert_eq!(record.profile.launches, 1);
        assert!(record.profile.global_bytes() > 0, "{}", record.entry);
        sum.add(&record.profile);
    }
    assert_eq!(
        log.iter()
            .map(|r| r.profile.global_sector_bytes())
            .sum::<u64>(),
        step.global_sector_bytes()
    );
    assert_eq!(sum, step);
    assert_eq!(rt.take_launch_log(), Some(Vec::new()));
}
