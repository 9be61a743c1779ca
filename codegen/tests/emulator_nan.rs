//! NaN and infinities through the generated kernels (compiled by
//! `compile(graph, spec)`, run in the emulator) against the reference
//! evaluator, whose documented semantics are IEEE-like NaN propagation: a
//! NaN in a reduced or softmaxed line makes the line NaN, `max` / `min` of a
//! NaN is NaN, NaN in `q` or `scale = nan` makes attention rows NaN.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;

use emu::{decode_floats, run_sizes, tensor_bytes};
use jagged_codegen::{Arch, DType, Spec, compile};
use jagged_ir::ops::{self, Activation, AttentionSpec, JaggedSpec};
use jagged_ir::{AttrValue, DenseTensor, Graph, ReduceOp};

const NAN: f64 = f64::NAN;
const INF: f64 = f64::INFINITY;

/// The kernel's (for sm_80) and the reference's values of every output, by name.
fn kernel_and_reference(
    graph: &Graph,
    inputs: &[(&str, DenseTensor)],
    lengths: &[usize],
    max_len: usize,
    attrs: &[(&str, f64)],
) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    kernel_and_reference_on(Arch::Sm80, graph, inputs, lengths, max_len, attrs)
}

/// [`kernel_and_reference`] with the kernel compiled for `arch`.
fn kernel_and_reference_on(
    arch: Arch,
    graph: &Graph,
    inputs: &[(&str, DenseTensor)],
    lengths: &[usize],
    max_len: usize,
    attrs: &[(&str, f64)],
) -> Vec<(String, Vec<f64>, Vec<f64>)> {
    let spec = Spec::for_graph(graph, max_len as u64, arch).expect("spec");
    let compiled = compile(graph, &spec).unwrap_or_else(|e| panic!("{}: {e}", graph.name()));
    // Inputs in the graph's input order.
    let bytes: Vec<Vec<u8>> = graph
        .inputs()
        .map(|(_, name, _)| {
            let (_, t) = inputs
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("input {name}"));
            tensor_bytes(t)
        })
        .collect();
    let float_attrs: Vec<(&str, f32)> = attrs.iter().map(|&(n, v)| (n, v as f32)).collect();
    let outs = emu::run(&compiled, &bytes, run_sizes(lengths, max_len), &float_attrs);
    let named: Vec<(&str, &DenseTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
    let mut ir_attrs = vec![("max_len", AttrValue::Index(max_len))];
    ir_attrs.extend(
        attrs
            .iter()
            .filter(|(n, _)| graph.attr(n).is_some())
            .map(|&(n, v)| (n, AttrValue::Float(v))),
    );
    let want = jagged_ir::evaluate(graph, &named, &ir_attrs).expect("reference");
    graph
        .outputs()
        .iter()
        .enumerate()
        .map(|(k, out)| {
            let got = decode_floats(&outs[k], compiled.outputs[k].elem);
            (out.name.clone(), got, want[&out.name].to_f64())
        })
        .collect()
}

/// NaN exactly where the reference has NaN, infinities equal, the rest
/// within `tol` (absolute, values here are O(1)).
fn assert_agree(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() || g.is_nan() {
            w.is_nan() && g.is_nan()
        } else if w.is_infinite() || g.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= tol
        };
        assert!(
            ok,
            "{what}: element {k}: kernel {g}, reference {w}\nkernel    {got:?}\nreference {want:?}"
        );
    }
}

fn jagged(values: &[f64], lengths: &[usize]) -> Vec<(&'static str, DenseTensor)> {
    let mut offsets = vec![0.0];
    for &l in lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    vec![
        (
            "values",
            DenseTensor::from_f64(DType::F32, vec![values.len(), 1], values).expect("values"),
        ),
        (
            "offsets",
            DenseTensor::from_f64(DType::I32, vec![offsets.len()], &offsets).expect("offsets"),
        ),
    ]
}

fn spec1() -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![1],
    }
}

/// Lines: [nan, inf, 1], [inf, 1], [1, nan], [-inf, -inf], [2, 3], [] and a
/// NaN past max_len 3.
const LENGTHS: [usize; 7] = [3, 2, 2, 2, 2, 0, 4];
const VALUES: [f64; 15] = [
    NAN, INF, 1.0, INF, 1.0, 1.0, NAN, -INF, -INF, 2.0, 3.0, 0.5, 0.25, 0.0, NAN,
];

/// Lines without NaN or `+inf` (those the kernels agree on): [-inf, -inf],
/// [-inf, 0], [2, 3], [] and a NaN past max_len 3, which is not part of
/// its sequence.
const CLEAN_LENGTHS: [usize; 5] = [2, 2, 2, 0, 4];
const CLEAN_VALUES: [f64; 10] = [-INF, -INF, -INF, 0.0, 2.0, 3.0, 0.5, 0.25, 0.0, NAN];

#[test]
fn softmax_and_max_kernels_agree_on_masked_lines_and_ignore_nan_past_max_len() {
    let input = jagged(&CLEAN_VALUES, &CLEAN_LENGTHS);
    let softmax = ops::jagged_softmax(&spec1()).expect("graph");
    let max = ops::jagged_reduce(&spec1(), ReduceOp::Max).expect("graph");
    for g in [softmax, max] {
        for (name, got, want) in kernel_and_reference(&g, &input, &CLEAN_LENGTHS, 3, &[]) {
            assert_agree(&format!("{} {name}", g.name()), &got, &want, 1e-6);
        }
    }
}

/// Regression: the softmax kernel computed `inv = sum > 0 ? 1 / sum : 0`, so
/// a NaN sum (a NaN or `+inf` in the line) gave `inv = 0` (`[nan, inf, 1]`
/// gave `[nan, nan, 0]`), and its running max (`max.f32`) dropped NaN; it
/// now tests `sum == 0` and takes a NaN-propagating max.
#[test]
fn softmax_kernel_propagates_nan_like_the_reference() {
    let g = ops::jagged_softmax(&spec1()).expect("graph");
    for (name, got, want) in kernel_and_reference(&g, &jagged(&VALUES, &LENGTHS), &LENGTHS, 3, &[])
    {
        assert_agree(&format!("softmax {name}"), &got, &want, 1e-6);
    }
}

#[test]
fn sum_and_mean_kernels_propagate_nan_like_the_reference() {
    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        let g = ops::jagged_reduce(&spec1(), op).expect("graph");
        for (name, got, want) in
            kernel_and_reference(&g, &jagged(&VALUES, &LENGTHS), &LENGTHS, 3, &[])
        {
            assert_agree(&format!("{op:?} {name}"), &got, &want, 1e-6);
        }
    }
}

/// Regression: the reduce kernel's `max` combined with PTX `max.f32`, which
/// returns the non-NaN operand, so a NaN in a line was dropped.
#[test]
fn max_kernel_propagates_nan_like_the_reference() {
    let g = ops::jagged_reduce(&spec1(), ReduceOp::Max).expect("graph");
    for (name, got, want) in kernel_and_reference(&g, &jagged(&VALUES, &LENGTHS), &LENGTHS, 3, &[])
    {
        assert_agree(&format!("max {name}"), &got, &want, 1e-6);
    }
}

fn attention_inputs(
    nan_row: Option<usize>,
    dtype: DType,
    d: usize,
) -> (Vec<(&'static str, DenseTensor)>, Vec<usize>) {
    let lengths = vec![0, 3, 5, 1];
    let rows: usize = lengths.iter().sum();
    let h = 2;
    let make = |seed: f64, nan: Option<usize>| {
        let mut v: Vec<f64> = (0..rows * h * d)
            .map(|k| ((k as f64 + seed) * 0.37).sin())
            .collect();
        if let Some(r) = nan {
            v[r * h * d + 3] = NAN;
        }
        DenseTensor::from_f64(dtype, vec![rows, h, d], &v).expect("tensor")
    };
    let mut offsets = vec![0.0];
    for &l in &lengths {
        offsets.push(offsets[offsets.len() - 1] + l as f64);
    }
    let inputs = vec![
        ("q", make(0.0, nan_row)),
        ("k", make(1.0, None)),
        ("v", make(2.0, None)),
        (
            "offsets",
            DenseTensor::from_f64(DType::I32, vec![offsets.len()], &offsets).expect("offsets"),
        ),
    ];
    (inputs, lengths)
}

/// Attention over f32 (the general path) or f16 / bf16 (the flash template).
fn attention_graph(causal: bool, dtype: DType, head_dim: usize) -> Graph {
    ops::jagged_flash_attention(&AttentionSpec {
        input_dtype: dtype,
        dtype,
        offsets: DType::I32,
        heads: 2,
        head_dim,
        value_dim: head_dim,
        causal,
        activation: Activation::Softmax,
    })
    .expect("graph")
}

#[test]
fn attention_kernel_with_nan_in_q_agrees_with_the_reference() {
    for causal in [false, true] {
        let (inputs, lengths) = attention_inputs(Some(4), DType::F32, 16);
        let g = attention_graph(causal, DType::F32, 16);
        for (name, got, want) in kernel_and_reference(&g, &inputs, &lengths, 8, &[("scale", 0.25)])
        {
            assert!(want.iter().any(|x| x.is_nan()), "the reference has no NaN");
            assert_agree(&format!("causal {causal} {name}"), &got, &want, 1e-3);
        }
    }
}

#[test]
fn attention_kernel_with_scale_nan_agrees_with_the_reference() {
    let (inputs, lengths) = attention_inputs(None, DType::F32, 16);
    let g = attention_graph(true, DType::F32, 16);
    for (name, got, want) in kernel_and_reference(&g, &inputs, &lengths, 8, &[("scale", NAN)]) {
        assert!(want.iter().all(|x| x.is_nan()), "{name}: {want:?}");
        assert_agree(&format!("scale nan {name}"), &got, &want, 1e-3);
    }
}

/// The flash-attention template (bf16; every key block of these short
/// sequences is a boundary block, where masks apply): a NaN in `q` makes its
/// rows NaN whatever the scale's sign (the kernel negates q for a negative
/// scale and multiplies it by 0 for a zero one; both keep the NaN), and
/// `scale = nan` makes every row NaN.
#[test]
fn flash_attention_kernel_propagates_nan_like_the_reference() {
    for causal in [false, true] {
        let g = attention_graph(causal, DType::BF16, 32);
        for scale in [0.25, 0.0, -0.5] {
            let (inputs, lengths) = attention_inputs(Some(4), DType::BF16, 32);
            for (name, got, want) in
                kernel_and_reference(&g, &inputs, &lengths, 8, &[("scale", scale)])
            {
                assert!(want.iter().any(|x| x.is_nan()), "the reference has no NaN");
                let what = format!("causal {causal} scale {scale} {name}");
                assert_agree(&what, &got, &want, 2e-2);
            }
        }
        let (inputs, lengths) = attention_inputs(None, DType::BF16, 32);
        for (name, got, want) in kernel_and_reference(&g, &inputs, &lengths, 8, &[("scale", NAN)]) {
            assert!(want.iter().all(|x| x.is_nan()), "{name}: {want:?}");
            assert_agree(
                &format!("causal {causal} scale nan {name}"),
                &got,
                &want,
                2e-2,
            );
        }
    }
}

/// Rows a sequence's tiles cover but that are not its own hold infinities
/// and NaN: the next sequences' rows and rows past `max_len`. The `cp.async`
/// loads of sm_80 zero-fill rows at or past `n_b`; the TMA copies of sm_90a
/// bring whatever is there (the next sequences' rows, zeros past `T`), so
/// the kernel must keep them out of `P V` (P is 0 there, but `0 * inf` is
/// NaN) and out of the stored rows. Lengths 3, 5, 1, 12 under max_len 8: V
/// has `+inf` in the first row of sequence 1 (every row of sequence 1
/// attends to it, causal or not, so its outputs are `+inf` in that column
/// in both) and NaN in sequence 3's rows past max_len, K NaN and Q NaN
/// there too; sequences 0 and 2 read sequence 1's and 3's rows in their key
/// blocks. The same with sequence 3 of 300 rows under max_len 260 (the
/// warp-specialized sm_90a kernel, whose two consumer warpgroups zero V's
/// rows past the end together).
#[test]
fn flash_attention_keeps_other_rows_infinities_and_nan_out() {
    // Max length 260 (bucket 512): sm_90a's warp-specialized kernel.
    for (lengths, max_len) in [([3, 5, 1, 12], 8), ([3, 5, 1, 300], 260)] {
        other_rows_stay_out(&lengths, max_len);
    }
}

/// [`flash_attention_keeps_other_rows_infinities_and_nan_out`] for one
/// layout (sequence 3 longer than `max_len`).
fn other_rows_stay_out(lengths: &[usize], max_len: usize) {
    let h = 2;
    let rows: usize = lengths.iter().sum();
    // Sequence 3's first row past max_len.
    let past = 9 + max_len;
    for d in [32, 64] {
        let make = |seed: f64, bad: &[(usize, f64)]| {
            let mut v: Vec<f64> = (0..rows * h * d)
                .map(|k| ((k as f64 + seed) * 0.37).sin())
                .collect();
            for &(row, x) in bad {
                for head in 0..h {
                    v[(row * h + head) * d + 5] = x;
                }
            }
            DenseTensor::from_f64(DType::BF16, vec![rows, h, d], &v).expect("tensor")
        };
        let mut offsets = vec![0.0];
        for &l in lengths {
            offsets.push(offsets[offsets.len() - 1] + l as f64);
        }
        // Sequence 3 starts at row 9: its rows from `past` are past max_len.
        let inputs = vec![
            ("q", make(0.0, &[(past + 1, NAN)])),
            ("k", make(1.0, &[(past, NAN), (past + 3, INF)])),
            ("v", make(2.0, &[(3, INF), (past, NAN), (past + 2, -INF)])),
            (
                "offsets",
                DenseTensor::from_f64(DType::I32, vec![offsets.len()], &offsets).expect("offsets"),
            ),
        ];
        for arch in [Arch::Sm80, Arch::Sm90a] {
            for causal in [false, true] {
                let g = attention_graph(causal, DType::BF16, d);
                let outputs = kernel_and_reference_on(
                    arch,
                    &g,
                    &inputs,
                    lengths,
                    max_len,
                    &[("scale", 0.25)],
                );
                let infinite = |(_, _, want): &(String, Vec<f64>, Vec<f64>)| {
                    want.iter().any(|x| x.is_infinite())
                };
                assert!(outputs.iter().any(infinite), "no inf in the reference");
                for (name, got, want) in outputs {
                    let what = format!("{arch} D {d} causal {causal} {name}");
                    assert_agree(&what, &got, &want, 2e-2);
                }
            }
        }
    }
}
