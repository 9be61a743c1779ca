//! The reference evaluator against naive per-sequence loops written here,
//! independently of the evaluator, on random jagged inputs (B = 0, T = 0, empty
//! sequences, length 1, lengths above max_len, i32 and i64 offsets).

// The naive references index like the spec does, on purpose.
#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use half::bf16;
use jagged_ir::ops::{self, Activation, AttentionSpec, FbgemmAttentionSpec, JaggedSpec};
use jagged_ir::{AttrValue, DType, DenseTensor, Graph, ReduceOp, evaluate};
use proptest::prelude::*;
use std::collections::BTreeMap;

const REL: f64 = 1e-9;

fn spec(case: &JaggedCase) -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F64,
        offsets: case.offsets_dtype(),
        inner: case.inner.clone(),
    }
}

fn max_len(case: &JaggedCase) -> (&'static str, AttrValue) {
    ("max_len", AttrValue::Index(case.max_len))
}

/// `g` evaluated on the case's `values` and `offsets` with `attrs`.
fn evaluate_on(
    g: &Graph,
    case: &JaggedCase,
    attrs: &[(&str, AttrValue)],
) -> BTreeMap<String, DenseTensor> {
    let inputs = [
        ("values", &case.values_tensor()),
        ("offsets", &case.offsets_tensor()),
    ];
    evaluate(g, &inputs, attrs).unwrap()
}

fn inner_1d() -> impl Strategy<Value = Vec<usize>> {
    (1usize..=3).prop_map(|d| vec![d])
}

fn inner_any() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=3, 0..=2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn complete_cumsum(lens in lengths(6), i64 in any::<bool>()) {
        let dtype = if i64 { DType::I64 } else { DType::I32 };
        let g = ops::complete_cumsum(dtype).unwrap();
        let lengths = index_tensor(&lens, i64);
        let out = evaluate(&g, &[("lengths", &lengths)], &[]).unwrap();
        let mut want = vec![0.0];
        for (b, &l) in lens.iter().enumerate() {
            want.push(want[b] + l as f64);
        }
        let got = &out["offsets"];
        prop_assert_eq!(got.dtype(), dtype);
        prop_assert_eq!(got.shape(), &[lens.len() + 1][..]);
        prop_assert_eq!(got.to_f64(), want);
    }

    #[test]
    fn jagged_to_padded_dense(case in jagged_case(inner_any()), pad in -3.0f64..3.0) {
        let g = ops::jagged_to_padded_dense(&spec(&case)).unwrap();
        let out = evaluate_on(&g, &case, &[max_len(&case), ("padding_value", AttrValue::Float(pad))]);
        let (o, f, n) = (case.offsets(), case.row(), case.max_len);
        let mut want = Vec::new();
        for b in 0..case.batch() {
            for i in 0..n {
                for c in 0..f {
                    want.push(if i < case.lens[b] { case.values[(o[b] + i) * f + c] } else { pad });
                }
            }
        }
        let mut shape = vec![case.batch(), n];
        shape.extend_from_slice(&case.inner);
        assert_close(&out["dense"], &shape, &want, REL);
    }

    #[test]
    fn dense_to_jagged(case in jagged_case(inner_any()), n in 0usize..=4, seed in any::<u64>()) {
        let f = case.row();
        let dense: Vec<f64> = (0..case.batch() * n * f)
            .map(|k| ((seed.wrapping_add(k as u64 * 7919)) % 1000) as f64 / 250.0 - 2.0)
            .collect();
        let mut dshape = vec![case.batch(), n];
        dshape.extend_from_slice(&case.inner);
        let g = ops::dense_to_jagged(&spec(&case)).unwrap();
        let out = evaluate(
            &g,
            &[("dense", &f64_tensor(dshape, &dense)), ("offsets", &case.offsets_tensor())],
            &[],
        ).unwrap();
        let o = case.offsets();
        let mut want = vec![0.0; case.rows() * f];
        for b in 0..case.batch() {
            for i in 0..case.lens[b].min(n) {
                for c in 0..f {
                    want[(o[b] + i) * f + c] = dense[(b * n + i) * f + c];
                }
            }
        }
        let mut shape = vec![case.rows()];
        shape.extend_from_slice(&case.inner);
        assert_close(&out["values"], &shape, &want, REL);
    }

    #[test]
    fn jagged_dense_elementwise_mul(case in jagged_case(inner_1d()), seed in any::<u64>()) {
        let (f, n) = (case.row(), case.max_len);
        let dense: Vec<f64> = (0..case.batch() * n * f)
            .map(|k| ((seed.wrapping_mul(31).wrapping_add(k as u64 * 104729)) % 997) as f64 / 300.0 - 1.5)
            .collect();
        let g = ops::jagged_dense_elementwise_mul(&spec(&case)).unwrap();
        let out = evaluate(
            &g,
            &[
                ("values", &case.values_tensor()),
                ("offsets", &case.offsets_tensor()),
                ("dense", &f64_tensor(vec![case.batch(), n, f], &dense)),
            ],
            &[max_len(&case)],
        ).unwrap();
        let o = case.offsets();
        let mut want = vec![0.0; case.rows() * f];
        for b in 0..case.batch() {
            for i in 0..case.n(b) {
                for c in 0..f {
                    want[(o[b] + i) * f + c] = case.values[(o[b] + i) * f + c] * dense[(b * n + i) * f + c];
                }
            }
        }
        assert_close(&out["values"], &[case.rows(), f], &want, REL);
    }

    #[test]
    fn jagged_softmax(case in jagged_case(inner_1d())) {
        let g = ops::jagged_softmax(&spec(&case)).unwrap();
        let out = evaluate_on(&g, &case, &[max_len(&case)]);
        let (o, f) = (case.offsets(), case.row());
        let mut want = vec![0.0; case.rows() * f];
        for b in 0..case.batch() {
            for c in 0..f {
                let x = |i: usize| case.values[(o[b] + i) * f + c];
                let total: f64 = (0..case.n(b)).map(|i| x(i).exp()).sum();
                for i in 0..case.n(b) {
                    want[(o[b] + i) * f + c] = x(i).exp() / total;
                }
            }
        }
        assert_close(&out["values"], &[case.rows(), f], &want, REL);
    }

    #[test]
    fn jagged_reduce(case in jagged_case(inner_1d()), which in 0usize..3) {
        let op = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max][which];
        let g = ops::jagged_reduce(&spec(&case), op).unwrap();
        let out = evaluate_on(&g, &case, &[max_len(&case)]);
        let (o, f) = (case.offsets(), case.row());
        let mut want = Vec::new();
        for b in 0..case.batch() {
            for c in 0..f {
                let col: Vec<f64> = (0..case.n(b)).map(|i| case.values[(o[b] + i) * f + c]).collect();
                let sum: f64 = col.iter().sum();
                want.push(match op {
                    ReduceOp::Sum => sum,
                    ReduceOp::Mean => sum / col.len().max(1) as f64,
                    _ => col.iter().copied().reduce(f64::max).unwrap_or(0.0),
                });
            }
        }
        assert_close(&out["out"], &[case.batch(), f], &want, REL);
    }

    #[test]
    fn masked_select_jagged(case in jagged_case(inner_any()), bits in any::<u64>(), bool_mask in any::<bool>()) {
        let t = case.rows();
        let keep: Vec<bool> = (0..t).map(|i| (bits >> (i % 64)) & 1 == 1).collect();
        let mask_dtype = if bool_mask { DType::Bool } else { DType::U8 };
        let mask = DenseTensor::new(
            vec![t],
            if bool_mask {
                jagged_ir::TensorData::Bool(keep.clone())
            } else {
                jagged_ir::TensorData::U8(keep.iter().map(|&k| u8::from(k) * 3).collect())
            },
        ).unwrap();
        let g = ops::masked_select_jagged(&spec(&case), mask_dtype).unwrap();
        let out = evaluate(
            &g,
            &[("values", &case.values_tensor()), ("offsets", &case.offsets_tensor()), ("mask", &mask)],
            &[],
        ).unwrap();
        let (o, f) = (case.offsets(), case.row());
        let mut want_values = Vec::new();
        let mut want_offsets = vec![0.0];
        for b in 0..case.batch() {
            let mut kept = 0;
            for r in o[b]..o[b + 1] {
                if keep[r] {
                    want_values.extend_from_slice(&case.values[r * f..(r + 1) * f]);
                    kept += 1;
                }
            }
            want_offsets.push(want_offsets[b] + kept as f64);
        }
        let rows = want_values.len() / f;
        let mut shape = vec![rows];
        shape.extend_from_slice(&case.inner);
        assert_close(&out["values"], &shape, &want_values, REL);
        prop_assert_eq!(out["offsets"].dtype(), case.offsets_dtype());
        prop_assert_eq!(out["offsets"].to_f64(), want_offsets);
    }
}

/// Naive attention for one sequence and head, rows `i, j < n`. `q`, `k` give
/// `[n][D]`, `v` `[n][Dv]`; returns `(out [n][Dv], lse [n])`.
struct Attention {
    scale: f64,
    causal: bool,
    silu: bool,
    max_len: f64,
}

impl Attention {
    fn run(&self, q: &[Vec<f64>], k: &[Vec<f64>], v: &[Vec<f64>]) -> (Vec<Vec<f64>>, Vec<f64>) {
        let n = q.len();
        let dv = v.first().map_or(0, |r| r.len());
        let mut out = vec![vec![0.0; dv]; n];
        let mut lse = vec![0.0; n];
        for i in 0..n {
            let allowed: Vec<usize> = (0..n).filter(|&j| !self.causal || j <= i).collect();
            let s: Vec<f64> = allowed
                .iter()
                .map(|&j| self.scale * q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f64>())
                .collect();
            let p: Vec<f64> = if self.silu {
                s.iter()
                    .map(|&x| x / (1.0 + (-x).exp()) / self.max_len)
                    .collect()
            } else {
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|&x| (x - m).exp()).sum();
                lse[i] = m + z.ln();
                s.iter().map(|&x| (x - m).exp() / z).collect()
            };
            for (&j, &pj) in allowed.iter().zip(&p) {
                for e in 0..dv {
                    out[i][e] += pj * v[j][e];
                }
            }
        }
        (out, lse)
    }
}

/// Per-sequence, per-head rows of a `[T, H, D]` buffer.
fn rows(x: &[f64], start: usize, n: usize, h: usize, heads: usize, d: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| x[((start + i) * heads + h) * d..][..d].to_vec())
        .collect()
}

#[derive(Clone, Debug)]
struct AttentionCase {
    seqs: JaggedCase,
    heads: usize,
    d: usize,
    dv: usize,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    causal: bool,
    silu: bool,
    scale: Option<f64>,
}

fn attention_case() -> impl Strategy<Value = AttentionCase> {
    (
        jagged_case(Just(vec![])),
        1usize..=2,
        1usize..=3,
        1usize..=3,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0.1f64..1.0),
    )
        .prop_flat_map(|(seqs, heads, d, dv, causal, silu, scale)| {
            let t = seqs.rows();
            let vals = |n| prop::collection::vec(-2.0f64..2.0, n);
            (
                vals(t * heads * d),
                vals(t * heads * d),
                vals(t * heads * dv),
            )
                .prop_map(move |(q, k, v)| AttentionCase {
                    seqs: seqs.clone(),
                    heads,
                    d,
                    dv,
                    q,
                    k,
                    v,
                    causal,
                    silu,
                    scale,
                })
        })
}

/// Runs `jagged_flash_attention` on `c` with inputs of `input` dtype rounded to
/// `dtype`, and checks it against the naive loops on the same rounded inputs.
fn check_attention(c: &AttentionCase, input: DType, dtype: DType, rel: f64) {
    let s = &c.seqs;
    let spec = AttentionSpec {
        input_dtype: input,
        dtype,
        offsets: s.offsets_dtype(),
        heads: c.heads,
        head_dim: c.d,
        value_dim: c.dv,
        causal: c.causal,
        activation: if c.silu {
            Activation::Silu
        } else {
            Activation::Softmax
        },
    };
    let g = ops::jagged_flash_attention(&spec).unwrap();
    let t = s.rows();
    let host = |x: &[f64], d| DenseTensor::from_f64(input, vec![t, c.heads, d], x).unwrap();
    let (q, k, v) = (host(&c.q, c.d), host(&c.k, c.d), host(&c.v, c.dv));
    let mut attrs = vec![max_len(s)];
    if let Some(scale) = c.scale {
        attrs.push(("scale", AttrValue::Float(scale)));
    }
    let out = evaluate(
        &g,
        &[
            ("q", &q),
            ("k", &k),
            ("v", &v),
            ("offsets", &s.offsets_tensor()),
        ],
        &attrs,
    )
    .unwrap();
    // The naive loops see the inputs as the host holds them, rounded to `dtype`.
    let round = |x: &DenseTensor| -> Vec<f64> {
        x.to_f64()
            .into_iter()
            .map(|x| match dtype {
                DType::BF16 => bf16::from_f64(x).to_f64(),
                DType::F32 => f64::from(x as f32),
                _ => x,
            })
            .collect()
    };
    let (qr, kr, vr) = (round(&q), round(&k), round(&v));
    let naive = Attention {
        scale: c.scale.unwrap_or(1.0 / (c.d as f64).sqrt()),
        causal: c.causal,
        silu: c.silu,
        max_len: s.max_len as f64,
    };
    let o = s.offsets();
    let mut want_out = vec![0.0; t * c.heads * c.dv];
    let mut want_lse = vec![0.0; t * c.heads];
    for b in 0..s.batch() {
        let n = s.n(b);
        for h in 0..c.heads {
            let (out, lse) = naive.run(
                &rows(&qr, o[b], n, h, c.heads, c.d),
                &rows(&kr, o[b], n, h, c.heads, c.d),
                &rows(&vr, o[b], n, h, c.heads, c.dv),
            );
            for i in 0..n {
                want_lse[(o[b] + i) * c.heads + h] = lse[i];
                for e in 0..c.dv {
                    want_out[((o[b] + i) * c.heads + h) * c.dv + e] = out[i][e];
                }
            }
        }
    }
    assert_close(&out["out"], &[t, c.heads, c.dv], &want_out, rel);
    assert_eq!(out["out"].dtype(), input);
    if c.silu {
        assert!(!out.contains_key("lse"));
    } else {
        assert_eq!(out["lse"].dtype(), DType::F32);
        assert_close(&out["lse"], &[t, c.heads], &want_lse, 1e-6);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn jagged_flash_attention_f64(c in attention_case()) {
        check_attention(&c, DType::F64, DType::F64, REL);
    }

    /// f32 inputs rounded to bf16 (the `dtype` attribute): only the final f32
    /// rounding separates the evaluator from the naive loops.
    #[test]
    fn jagged_flash_attention_bf16_rounding(c in attention_case()) {
        check_attention(&c, DType::F32, DType::BF16, 1e-5);
    }

    #[test]
    fn fbgemm_jagged_flash_attention_basic(
        (s, q, k, v) in jagged_case((1usize..=3).prop_map(|d| vec![d])).prop_flat_map(|s| {
            let n = s.values.len();
            let vals = prop::collection::vec(-2.0f64..2.0, n);
            (Just(s.clone()), Just(s.values), vals.clone(), vals)
        }),
        use_mask in any::<bool>(),
    ) {
        let (s, d, t) = (&s, s.inner[0], s.rows());
        let spec = FbgemmAttentionSpec {
            input_dtype: DType::F64,
            dtype: DType::F64,
            offsets: s.offsets_dtype(),
            head_dim: d,
            use_mask,
        };
        let g = ops::fbgemm_jagged_flash_attention_basic(&spec).unwrap();
        let out = evaluate(
            &g,
            &[
                ("q", &f64_tensor(vec![t, d], &q)),
                ("k", &f64_tensor(vec![t, d], &k)),
                ("v", &f64_tensor(vec![t, d], &v)),
                ("offsets", &s.offsets_tensor()),
            ],
            &[max_len(s)],
        ).unwrap();
        let o = s.offsets();
        let mut want = vec![0.0; t * d];
        for b in 0..s.batch() {
            let n = s.n(b);
            for i in 0..n {
                let score: Vec<f64> = (0..n)
                    .map(|j| (0..d).map(|e| q[(o[b] + i) * d + e] * k[(o[b] + j) * d + e]).sum())
                    .collect();
                let m = score.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = score.iter().map(|x| (x - m).exp()).sum();
                for j in 0..n {
                    if use_mask && j < i {
                        continue;
                    }
                    let p = (score[j] - m).exp() / z / s.max_len as f64;
                    for e in 0..d {
                        want[(o[b] + i) * d + e] += p * v[(o[b] + j) * d + e];
                    }
                }
            }
        }
        assert_close(&out["out"], &[t, d], &want, REL);
    }
}

/// DESIGN.md tolerances for outputs of each dtype.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        _ => 1e-2,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Low-precision values: converted exactly, computed in f64, the output
    /// rounded once; the naive loop runs on the same (rounded) values.
    #[test]
    fn jagged_softmax_and_sum_low_precision(case in jagged_case(inner_1d()), which in 0usize..3) {
        let dtype = [DType::F32, DType::F16, DType::BF16][which];
        let spec = JaggedSpec { dtype, offsets: case.offsets_dtype(), inner: case.inner.clone() };
        let values = DenseTensor::from_f64(dtype, vec![case.rows(), case.row()], &case.values).unwrap();
        let x = values.to_f64();
        let inputs = [("values", &values), ("offsets", &case.offsets_tensor())];
        let softmax = evaluate(&ops::jagged_softmax(&spec).unwrap(), &inputs, &[max_len(&case)]).unwrap();
        let sum = evaluate(&ops::jagged_reduce(&spec, ReduceOp::Sum).unwrap(), &inputs, &[max_len(&case)]).unwrap();
        let (o, f) = (case.offsets(), case.row());
        let mut want_softmax = vec![0.0; case.rows() * f];
        let mut want_sum = vec![0.0; case.batch() * f];
        for b in 0..case.batch() {
            for c in 0..f {
                let rows = (0..case.n(b)).map(|i| (o[b] + i) * f + c);
                let z: f64 = rows.clone().map(|r| x[r].exp()).sum();
                for r in rows.clone() {
                    want_softmax[r] = x[r].exp() / z;
                }
                want_sum[b * f + c] = rows.map(|r| x[r]).sum();
            }
        }
        prop_assert_eq!(softmax["values"].dtype(), dtype);
        assert_close(&softmax["values"], &[case.rows(), f], &want_softmax, tolerance(dtype));
        assert_close(&sum["out"], &[case.batch(), f], &want_sum, tolerance(dtype));
    }
}
