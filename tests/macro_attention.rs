//! The builtin attention ops of `jagged::ops::attention`: each DSL kernel
//! builds the graph `jagged_ir::ops` builds for the same spec (but for the
//! default of `scale`, which the front function supplies), and the front
//! functions run on the emulator like the reference evaluator on those graphs,
//! with an empty sequence, a sequence of length 1, one longer than `max_len`,
//! and no sequences at all, compiled for each arch (the emulator runs sm_90a's
//! wgmma forward, which head dim 64 takes).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Rng, offsets, rel_l2};
use jagged::codegen::{Arch, Spec};
use jagged::ir::ops::{self as reference, Activation, AttentionSpec, FbgemmAttentionSpec};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph, evaluate};
use jagged::ops::attention::{
    self, AttentionOptions, FbgemmAttentionOptions, fbgemm_jagged_flash_attention_basic_masked,
    fbgemm_jagged_flash_attention_basic_unmasked, jagged_flash_attention_silu,
    jagged_flash_attention_silu_causal, jagged_flash_attention_softmax,
    jagged_flash_attention_softmax_causal,
};
use jagged::runtime::{BackendKind, DeviceTensor, KernelCache, Runtime};
use jagged::{dsl::*, jagged_kernel};

/// Every (activation, causal) pair of `jagged_flash_attention`.
const VARIANTS: [(Activation, bool); 4] = [
    (Activation::Softmax, false),
    (Activation::Softmax, true),
    (Activation::Silu, false),
    (Activation::Silu, true),
];

/// The DSL kernel's graph for `spec` (whose `dtype` must be its `input_dtype`:
/// the kernels compute in the inputs' dtype).
fn dsl_graph(spec: &AttentionSpec) -> Graph {
    assert_eq!(spec.dtype, spec.input_dtype);
    let (t, h, d, dv, o) = (
        spec.input_dtype,
        spec.heads,
        spec.head_dim,
        spec.value_dim,
        spec.offsets,
    );
    match (spec.activation, spec.causal) {
        (Activation::Softmax, false) => jagged_flash_attention_softmax::graph(t, h, d, dv, o),
        (Activation::Softmax, true) => jagged_flash_attention_softmax_causal::graph(t, h, d, dv, o),
        (Activation::Silu, false) => jagged_flash_attention_silu::graph(t, h, d, dv, o),
        (Activation::Silu, true) => jagged_flash_attention_silu_causal::graph(t, h, d, dv, o),
    }
    .unwrap()
}

fn fbgemm_dsl_graph(spec: &FbgemmAttentionSpec) -> Graph {
    assert_eq!(spec.dtype, spec.input_dtype);
    let (t, d, o) = (spec.input_dtype, spec.head_dim, spec.offsets);
    if spec.use_mask {
        fbgemm_jagged_flash_attention_basic_masked::graph(t, d, o)
    } else {
        fbgemm_jagged_flash_attention_basic_unmasked::graph(t, d, o)
    }
    .unwrap()
}

/// The reference graph's text without the default of `scale` (`1/sqrt(D)`,
/// which a DSL attribute default cannot express).
fn without_scale_default(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("attr scale: float") {
            out.push_str("  attr scale: float");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn attention_kernels_build_the_reference_graphs() {
    for input_dtype in [DType::F32, DType::BF16, DType::F16, DType::F64] {
        for offsets in [DType::I32, DType::I64] {
            for (activation, causal) in VARIANTS {
                let spec = AttentionSpec {
                    input_dtype,
                    dtype: input_dtype,
                    offsets,
                    heads: 2,
                    head_dim: 16,
                    value_dim: 8,
                    causal,
                    activation,
                };
                let ours = dsl_graph(&spec).to_string();
                let theirs = reference::jagged_flash_attention(&spec)
                    .unwrap()
                    .to_string();
                assert_ne!(ours, theirs, "the scale default is expected to differ");
                assert_eq!(ours, without_scale_default(&theirs), "{spec:?}");
            }
        }
    }
}

#[test]
fn fbgemm_attention_kernels_build_the_reference_graphs() {
    for input_dtype in [DType::F32, DType::BF16, DType::F16, DType::F64] {
        for offsets in [DType::I32, DType::I64] {
            for use_mask in [false, true] {
                let spec = FbgemmAttentionSpec {
                    input_dtype,
                    dtype: input_dtype,
                    offsets,
                    head_dim: 32,
                    use_mask,
                };
                let ours = fbgemm_dsl_graph(&spec);
                let theirs = reference::fbgemm_jagged_flash_attention_basic(&spec).unwrap();
                assert_eq!(ours.to_string(), theirs.to_string(), "{spec:?}");
            }
        }
    }
}

fn random(rng: &mut Rng, dtype: DType, shape: Vec<usize>) -> DenseTensor {
    let n = shape.iter().product::<usize>();
    let v: Vec<f64> = (0..n).map(|_| rng.float()).collect();
    DenseTensor::from_f64(dtype, shape, &v).unwrap()
}

/// Random `q`, `k`, `v` of `inner` dims (`[H, D]`, or `[D]` for FBGEMM's) on
/// sequences of `lens`, and their offsets.
fn qkv(rng: &mut Rng, dtype: DType, lens: &[usize], inner: &[usize], o: DType) -> [DenseTensor; 4] {
    let rows = lens.iter().sum::<usize>();
    let shape = |inner: &[usize]| [&[rows][..], inner].concat();
    [
        offsets(lens, o),
        random(rng, dtype, shape(inner)),
        random(rng, dtype, shape(inner)),
        random(rng, dtype, shape(inner)),
    ]
}

/// Lengths with an empty sequence, a length 1 and lengths above `MAX_LEN`.
const LENS: [usize; 6] = [0, 1, 13, 5, 0, 3];
const MAX_LEN: usize = 6;

#[test]
fn attention_kernels_evaluate_like_the_reference_with_the_same_scale() {
    let mut rng = Rng(0x5eed_a77e);
    let (h, d, dv) = (2, 4, 3);
    for (activation, causal) in VARIANTS {
        let spec = AttentionSpec {
            input_dtype: DType::F64,
            dtype: DType::F64,
            offsets: DType::I32,
            heads: h,
            head_dim: d,
            value_dim: dv,
            causal,
            activation,
        };
        let ours = dsl_graph(&spec);
        let theirs = reference::jagged_flash_attention(&spec).unwrap();
        let [o, q, k, _] = qkv(&mut rng, DType::F64, &LENS, &[h, d], DType::I32);
        let v = random(&mut rng, DType::F64, vec![q.shape()[0], h, dv]);
        let inputs = [("q", &q), ("k", &k), ("v", &v), ("offsets", &o)];
        let attrs = [
            ("max_len", AttrValue::Index(MAX_LEN)),
            ("scale", AttrValue::Float(0.7)),
        ];
        let a = evaluate(&ours, &inputs, &attrs).unwrap();
        let b = evaluate(&theirs, &inputs, &attrs).unwrap();
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, want) in &b {
            let err = rel_l2(&a[name].to_f64(), &want.to_f64());
            assert!(err <= 1e-12, "{activation:?} causal={causal} {name}: {err}");
        }
    }
}

/// An emulator runtime compiling for `arch`, with a fresh in-memory kernel
/// cache and poisoned outputs.
fn runtime(arch: Arch) -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).unwrap();
    rt.set_arch(Some(arch)).unwrap();
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

fn upload(rt: &mut Runtime, hosts: &[DenseTensor; 4]) -> Vec<DeviceTensor> {
    hosts.iter().map(|t| rt.upload_tensor(t).unwrap()).collect()
}

fn free(rt: &mut Runtime, ts: impl IntoIterator<Item = DeviceTensor>) {
    for t in ts {
        rt.free(t.buffer).unwrap();
    }
}

/// Checks `got` against the reference `want` at bf16's tolerance, 1e-2
/// relative L2 (absolute 1e-2 where the reference is all zeros).
fn assert_close(got: &DenseTensor, want: &DenseTensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    assert_eq!(got.dtype(), want.dtype(), "{what}");
    let err = rel_l2(&got.to_f64(), &want.to_f64());
    assert!(err <= 1e-2, "{what}: relative L2 error {err}");
}

/// Sequence sets for the emulator: an empty one, length 1, one longer than
/// `max_len = 16`; and no sequences at all (`B = 0`).
const RUN_LENS: [&[usize]; 2] = [&[0, 1, 23, 9, 0], &[]];
const RUN_MAX_LEN: usize = 16;

fn reference_outputs(
    graph: &Graph,
    hosts: &[DenseTensor; 4],
    scale: Option<f32>,
) -> BTreeMap<String, DenseTensor> {
    let [o, q, k, v] = hosts;
    let inputs = [("q", q), ("k", k), ("v", v), ("offsets", o)];
    let mut attrs = vec![("max_len", AttrValue::Index(RUN_MAX_LEN))];
    if let Some(s) = scale {
        attrs.push(("scale", AttrValue::Float(f64::from(s))));
    }
    evaluate(graph, &inputs, &attrs).unwrap()
}

#[test]
fn jagged_flash_attention_runs_like_the_reference() {
    for arch in Arch::ALL {
        // Both run the wgmma forward on sm_90a (D = 32 with the 64-byte swizzle).
        for (h, d) in [(2, 32), (1, 64)] {
            check_jagged_flash_attention(arch, h, d);
        }
    }
}

/// What [`jagged_flash_attention_runs_like_the_reference`] runs: through the
/// runtime set to sm_90a, head dims 32, 64 and 256 compile to the wgmma
/// forward; sm_80 has no wgmma.
#[test]
fn the_runtime_arch_picks_the_attention_forward() {
    for arch in Arch::ALL {
        let mut rt = runtime(arch);
        for (h, d) in [(2, 32), (1, 64), (1, 256)] {
            let spec = AttentionSpec {
                input_dtype: DType::BF16,
                dtype: DType::BF16,
                offsets: DType::I32,
                heads: h,
                head_dim: d,
                value_dim: d,
                causal: false,
                activation: Activation::Softmax,
            };
            let graph = dsl_graph(&spec);
            let cspec = Spec::for_graph(&graph, RUN_MAX_LEN as u64, rt.preferred_arch()).unwrap();
            let (kernel, _) = rt.compile_graph(&graph, &cspec).unwrap();
            let wgmma = kernel.ptx.contains("wgmma.mma_async");
            assert_eq!(wgmma, arch == Arch::Sm90a, "{arch} D={d}");
            assert!(
                kernel.ptx.contains(&format!(".target {arch}")),
                "{arch} D={d}"
            );
        }
    }
}

fn check_jagged_flash_attention(arch: Arch, h: usize, d: usize) {
    let mut rt = runtime(arch);
    let mut rng = Rng(0xa77e_0001);
    for lens in RUN_LENS {
        for (activation, causal) in VARIANTS {
            // The default scale (`None`) is the reference graph's default.
            for scale in [None, Some(0.3)] {
                let what =
                    format!("{arch} D={d} {activation:?} causal={causal} scale={scale:?} {lens:?}");
                let hosts = qkv(&mut rng, DType::BF16, lens, &[h, d], DType::I32);
                let dev = upload(&mut rt, &hosts);
                let options = AttentionOptions {
                    max_len: RUN_MAX_LEN,
                    scale,
                    causal,
                    activation,
                };
                let (out, lse) = attention::jagged_flash_attention(
                    &mut rt, &dev[0], &dev[1], &dev[2], &dev[3], &options,
                )
                .unwrap();
                let spec = AttentionSpec {
                    input_dtype: DType::BF16,
                    dtype: DType::BF16,
                    offsets: DType::I32,
                    heads: h,
                    head_dim: d,
                    value_dim: d,
                    causal,
                    activation,
                };
                let graph = reference::jagged_flash_attention(&spec).unwrap();
                let want = reference_outputs(&graph, &hosts, scale);
                if !lens.is_empty() {
                    let norm: f64 = want["out"].to_f64().iter().map(|x| x * x).sum();
                    assert!(norm > 1e-3, "{what}: a vacuous reference ({norm})");
                }
                let got = rt.download_tensor(&out).unwrap();
                assert_close(&got, &want["out"], &format!("{what}: out"));
                assert_eq!(lse.is_some(), activation == Activation::Softmax, "{what}");
                if let Some(lse) = &lse {
                    let got = rt.download_tensor(lse).unwrap();
                    assert_close(&got, &want["lse"], &format!("{what}: lse"));
                }
                free(&mut rt, dev.into_iter().chain([out]).chain(lse));
            }
        }
    }
    let stats = rt.graph_run_stats();
    assert_eq!(stats.runs, 16, "{stats:?}");
    // One kernel per variant: the scale and the sequences are run-time values.
    assert_eq!(stats.codegen_runs, 4, "{stats:?}");
}

#[test]
fn fbgemm_jagged_flash_attention_basic_runs_like_the_reference() {
    for arch in Arch::ALL {
        check_fbgemm_jagged_flash_attention_basic(arch);
    }
}

fn check_fbgemm_jagged_flash_attention_basic(arch: Arch) {
    let mut rt = runtime(arch);
    let mut rng = Rng(0xfb9e_0002);
    // 64: the wgmma forward on sm_90a.
    let d = 64;
    for lens in RUN_LENS {
        for use_mask in [false, true] {
            let what = format!("{arch} use_mask={use_mask} {lens:?}");
            let hosts = qkv(&mut rng, DType::BF16, lens, &[d], DType::I64);
            let dev = upload(&mut rt, &hosts);
            let options = FbgemmAttentionOptions {
                max_len: RUN_MAX_LEN,
                use_mask,
            };
            let out = attention::fbgemm_jagged_flash_attention_basic(
                &mut rt, &dev[0], &dev[1], &dev[2], &dev[3], &options,
            )
            .unwrap();
            let spec = FbgemmAttentionSpec {
                input_dtype: DType::BF16,
                dtype: DType::BF16,
                offsets: DType::I64,
                head_dim: d,
                use_mask,
            };
            let graph = reference::fbgemm_jagged_flash_attention_basic(&spec).unwrap();
            let want = reference_outputs(&graph, &hosts, None);
            if !lens.is_empty() {
                let norm: f64 = want["out"].to_f64().iter().map(|x| x * x).sum();
                assert!(norm > 1e-6, "{what}: a vacuous reference ({norm})");
            }
            let got = rt.download_tensor(&out).unwrap();
            assert_close(&got, &want["out"], &what);
            free(&mut rt, dev.into_iter().chain([out]));
        }
    }
    let stats = rt.graph_run_stats();
    assert_eq!((stats.runs, stats.codegen_runs), (4, 2), "{stats:?}");
}

#[test]
fn front_function_errors_name_the_input() {
    let mut rt = runtime(Arch::Sm80);
    let mut rng = Rng(3);
    let hosts = qkv(&mut rng, DType::BF16, &[2, 1], &[32], DType::I32);
    let dev = upload(&mut rt, &hosts);
    // `q [T, D]` is FBGEMM's layout, not `[T, H, D]`: the default scale needs D.
    let options = AttentionOptions {
        max_len: 4,
        scale: None,
        causal: false,
        activation: Activation::Softmax,
    };
    let err =
        attention::jagged_flash_attention(&mut rt, &dev[0], &dev[1], &dev[2], &dev[3], &options)
            .unwrap_err();
    assert!(err.to_string().contains("input `q`"), "{err}");
    free(&mut rt, dev);
}

/// Softmax attention with the value dim's generic named `Dv`, OPS.md's name:
/// the macro then names `v`'s axes `[jhd]`, not the reference's `[jhe]`.
#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
fn attention_with_dv<T: Float, H, D, Dv>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, Dv)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> (Jagged<T, (H, Dv)>, Jagged<f32, (H,)>) {
    let s = q.dot(k) * scale;
    let p = s.softmax_over_keys();
    let lse = s.logsumexp_over_keys().cast::<f32>();
    (p.dot(v), lse)
}

/// The code generator matches attention by the roles of the contraction axes,
/// not their letters: the `Dv` kernel's graph differs from the reference's in
/// them only, compiles, and runs like the reference.
#[test]
fn value_dim_named_dv_compiles_and_runs() {
    let (h, d) = (2, 32);
    let spec = AttentionSpec {
        input_dtype: DType::BF16,
        dtype: DType::BF16,
        offsets: DType::I32,
        heads: h,
        head_dim: d,
        value_dim: d,
        causal: false,
        activation: Activation::Softmax,
    };
    let ours = attention_with_dv::graph(DType::BF16, h, d, d, DType::I32)
        .unwrap()
        .to_string();
    let theirs = without_scale_default(
        &reference::jagged_flash_attention(&spec)
            .unwrap()
            .to_string(),
    );
    assert!(ours.contains("[jhd] -> [ihd]"), "{ours}");
    assert_eq!(ours.replace("[jhd] -> [ihd]", "[jhe] -> [ihe]"), theirs);

    let graph = reference::jagged_flash_attention(&spec).unwrap();
    for arch in Arch::ALL {
        run_attention_with_dv(arch, &graph);
    }
}

/// [`attention_with_dv`] on `arch`, against the reference `graph`.
fn run_attention_with_dv(arch: Arch, graph: &Graph) {
    let (h, d) = (2, 32);
    let mut rt = runtime(arch);
    let mut rng = Rng(0xd0_0003);
    for lens in RUN_LENS {
        let hosts = qkv(&mut rng, DType::BF16, lens, &[h, d], DType::I32);
        let dev = upload(&mut rt, &hosts);
        let (out, lse) = attention_with_dv::launch(
            &mut rt,
            &dev[0],
            &dev[1],
            &dev[2],
            &dev[3],
            RUN_MAX_LEN,
            0.3,
        )
        .unwrap();
        let want = reference_outputs(graph, &hosts, Some(0.3));
        let what = format!("{arch} Dv {lens:?}");
        if !lens.is_empty() {
            let norm: f64 = want["out"].to_f64().iter().map(|x| x * x).sum();
            assert!(norm > 1e-3, "{what}: a vacuous reference ({norm})");
        }
        assert_close(
            &rt.download_tensor(&out).unwrap(),
            &want["out"],
            &format!("{what}: out"),
        );
        assert_close(
            &rt.download_tensor(&lse).unwrap(),
            &want["lse"],
            &format!("{what}: lse"),
        );
        free(&mut rt, dev.into_iter().chain([out, lse]));
    }
}
