//! The generated PTX of every primitive, run in the emulator on random jagged
//! inputs (empty sequences, length 1, lengths above max_len, B = 0, T = 0),
//! compared with straightforward f64 loops written from OPS.md.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
#[path = "common/emu.rs"]
mod emu;

use emu::{
    Rng, decode_floats, decode_ints, encode_floats, encode_ints, rel_l2, round_to, tolerance,
};
use jagged_codegen::templates::segment::ReduceKind;
use jagged_codegen::{Arch, CompiledKernel, DType, Primitive, RunSizes, Spec, lower};

/// A jagged layout: lengths and the run-time max_len.
struct Layout {
    lengths: Vec<usize>,
    max_len: usize,
}

impl Layout {
    fn offsets(&self) -> Vec<usize> {
        let mut o = vec![0];
        for &l in &self.lengths {
            o.push(o.last().copied().unwrap_or(0) + l);
        }
        o
    }

    fn total(&self) -> usize {
        self.lengths.iter().sum()
    }

    fn sizes(&self) -> RunSizes {
        RunSizes {
            batch: self.lengths.len() as u64,
            total_rows: self.total() as u64,
            max_len: self.max_len as u64,
        }
    }
}

/// The layouts every primitive runs on, for a max_len.
fn layouts(max_len: usize, rng: &mut Rng) -> Vec<Layout> {
    let mut random: Vec<usize> = (0..9)
        .map(|_| rng.below(max_len as u64 + 12) as usize)
        .collect();
    random[2] = 0;
    vec![
        Layout {
            lengths: vec![],
            max_len,
        },
        Layout {
            lengths: vec![0, 0, 0],
            max_len,
        },
        Layout {
            lengths: vec![1],
            max_len,
        },
        Layout {
            lengths: vec![0, 1, max_len + 7, 3, 0, max_len, 2],
            max_len,
        },
        Layout {
            lengths: random,
            max_len,
        },
    ]
}

/// The specs each primitive runs under: (spec, run-time max_len).
fn specs() -> Vec<(Spec, usize)> {
    vec![
        (
            Spec::new(vec![8], 20, DType::F32, DType::I32, Arch::Sm80),
            20,
        ),
        (
            Spec::new(vec![3, 5], 300, DType::BF16, DType::I64, Arch::Sm90a),
            300,
        ),
        (
            Spec::new(vec![6], 40, DType::F16, DType::I32, Arch::Sm80),
            40,
        ),
        // 16-byte f16 vectors: 8 columns per lane.
        (
            Spec::new(vec![16], 50, DType::F16, DType::I64, Arch::Sm90a),
            50,
        ),
    ]
}

fn offsets_bytes(layout: &Layout, index: DType) -> Vec<u8> {
    let o: Vec<i64> = layout.offsets().iter().map(|&x| x as i64).collect();
    encode_ints(&o, index)
}

fn random_values(n: usize, dtype: DType, rng: &mut Rng) -> Vec<f64> {
    (0..n).map(|_| round_to(rng.float(2.0), dtype)).collect()
}

/// Checks the output bytes `out` (floats of `dtype`) against `reference` within the
/// dtype's tolerance.
fn assert_close(what: &str, out: &[u8], reference: &[f64], dtype: DType) {
    let out = &decode_floats(out, dtype);
    let err = rel_l2(out, reference);
    assert!(
        err <= tolerance(dtype),
        "{what}: relative error {err:e} > {:e}\nout: {out:?}\nref: {reference:?}",
        tolerance(dtype)
    );
}

#[test]
fn complete_cumsum() {
    let mut rng = Rng::new(1);
    for index in [DType::I32, DType::I64] {
        let spec = Spec::new(vec![], 16, DType::F32, index, Arch::Sm80);
        let compiled = lower(&Primitive::CompleteCumsum, &spec).expect("lowering");
        let mut cases: Vec<Vec<i64>> = vec![vec![], vec![0], vec![5], vec![0, 3, 0, 1]];
        // Several tiles (TILE = 1024) to exercise the scan of tile sums.
        cases.push((0..3000).map(|_| rng.below(9) as i64).collect());
        // More than 256 tiles: the tile-sum scan carries across its chunks.
        cases.push((0..(257 * 1024 + 5)).map(|_| rng.below(3) as i64).collect());
        for lengths in cases {
            let sizes = RunSizes {
                batch: lengths.len() as u64,
                total_rows: lengths.iter().sum::<i64>() as u64,
                max_len: 0,
            };
            let out = emu::run(&compiled, &[encode_ints(&lengths, index)], sizes, &[]);
            let mut expected = vec![0i64];
            for &l in &lengths {
                expected.push(expected.last().copied().unwrap_or(0) + l);
            }
            assert_eq!(
                decode_ints(&out[0], index),
                expected,
                "{index} B={}",
                lengths.len()
            );
        }
    }
}

/// Lowers `prim` under every spec and calls `check` on each layout with the spec, its
/// row width, the layout and the compiled kernel.
fn for_each_layout(
    prim: &Primitive,
    rng: &mut Rng,
    mut check: impl FnMut(&Spec, usize, &Layout, &CompiledKernel, &mut Rng),
) {
    for (spec, max_len) in specs() {
        let w = spec.row_width() as usize;
        let compiled = lower(prim, &spec).expect("lowering");
        for layout in layouts(max_len, rng) {
            check(&spec, w, &layout, &compiled, rng);
        }
    }
}

/// Runs `compiled` on the inputs `first` (floats of `spec.dtype`), the layout's offsets,
/// then `rest`.
fn run_with_offsets(
    compiled: &CompiledKernel,
    spec: &Spec,
    layout: &Layout,
    first: &[f64],
    rest: &[Vec<u8>],
    attrs: &[(&str, f32)],
) -> Vec<Vec<u8>> {
    let mut inputs = vec![
        encode_floats(first, spec.dtype),
        offsets_bytes(layout, spec.index),
    ];
    inputs.extend_from_slice(rest);
    emu::run(compiled, &inputs, layout.sizes(), attrs)
}

#[test]
fn jagged_to_padded_dense() {
    let mut rng = Rng::new(2);
    let pad = -1.5f32;
    let prim = Primitive::JaggedToPaddedDense;
    for_each_layout(&prim, &mut rng, |spec, w, layout, compiled, rng| {
        let values = random_values(layout.total() * w, spec.dtype, rng);
        let attrs = [("padding_value", pad)];
        let out = run_with_offsets(compiled, spec, layout, &values, &[], &attrs);
        let offsets = layout.offsets();
        let mut expected = Vec::new();
        for (b, &len) in layout.lengths.iter().enumerate() {
            for i in 0..layout.max_len {
                for c in 0..w {
                    expected.push(if i < len.min(layout.max_len) {
                        values[(offsets[b] + i) * w + c]
                    } else {
                        f64::from(pad)
                    });
                }
            }
        }
        assert_eq!(
            decode_floats(&out[0], spec.dtype),
            expected,
            "{spec} lengths {:?}",
            layout.lengths
        );
    });
}

#[test]
fn dense_to_jagged() {
    let mut rng = Rng::new(3);
    for_each_layout(
        &Primitive::DenseToJagged,
        &mut rng,
        |spec, w, layout, compiled, rng| {
            let max_len = layout.max_len;
            let dense = random_values(layout.lengths.len() * max_len * w, spec.dtype, rng);
            let out = run_with_offsets(compiled, spec, layout, &dense, &[], &[]);
            let mut expected = Vec::new();
            for (b, &len) in layout.lengths.iter().enumerate() {
                for i in 0..len {
                    for c in 0..w {
                        expected.push(if i < max_len {
                            dense[(b * max_len + i) * w + c]
                        } else {
                            0.0
                        });
                    }
                }
            }
            assert_eq!(
                decode_floats(&out[0], spec.dtype),
                expected,
                "{spec} lengths {:?}",
                layout.lengths
            );
        },
    );
}

#[test]
fn jagged_dense_elementwise_mul() {
    let mut rng = Rng::new(4);
    let prim = Primitive::jagged_dense_elementwise_mul();
    for_each_layout(&prim, &mut rng, |spec, w, layout, compiled, rng| {
        let max_len = layout.max_len;
        let values = random_values(layout.total() * w, spec.dtype, rng);
        let dense = random_values(layout.lengths.len() * max_len * w, spec.dtype, rng);
        let rest = [encode_floats(&dense, spec.dtype)];
        let out = run_with_offsets(compiled, spec, layout, &values, &rest, &[]);
        let offsets = layout.offsets();
        let mut expected = Vec::new();
        for (b, &len) in layout.lengths.iter().enumerate() {
            for i in 0..len {
                for c in 0..w {
                    expected.push(if i < max_len {
                        values[(offsets[b] + i) * w + c] * dense[(b * max_len + i) * w + c]
                    } else {
                        0.0
                    });
                }
            }
        }
        let what = format!("{spec} lengths {:?}", layout.lengths);
        assert_close(&what, &out[0], &expected, spec.dtype);
    });
}

#[test]
fn jagged_reduce() {
    let mut rng = Rng::new(5);
    for kind in [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max] {
        let prim = Primitive::JaggedReduce(kind);
        for_each_layout(&prim, &mut rng, |spec, w, layout, compiled, rng| {
            let values = random_values(layout.total() * w, spec.dtype, rng);
            let out = run_with_offsets(compiled, spec, layout, &values, &[], &[]);
            let offsets = layout.offsets();
            let mut expected = Vec::new();
            for (b, &len) in layout.lengths.iter().enumerate() {
                let n = len.min(layout.max_len);
                for c in 0..w {
                    let column = (0..n).map(|i| values[(offsets[b] + i) * w + c]);
                    expected.push(match kind {
                        ReduceKind::Sum => column.sum(),
                        ReduceKind::Mean => column.sum::<f64>() / n.max(1) as f64,
                        ReduceKind::Max => column
                            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
                            .unwrap_or(0.0),
                    });
                }
            }
            let what = format!("{kind:?} {spec} lengths {:?}", layout.lengths);
            assert_close(&what, &out[0], &expected, spec.dtype);
        });
    }
}

#[test]
fn jagged_softmax() {
    let mut rng = Rng::new(6);
    for_each_layout(
        &Primitive::JaggedSoftmax,
        &mut rng,
        |spec, w, layout, compiled, rng| {
            let values = random_values(layout.total() * w, spec.dtype, rng);
            let out = run_with_offsets(compiled, spec, layout, &values, &[], &[]);
            let offsets = layout.offsets();
            let mut expected = vec![0.0; layout.total() * w];
            for (b, &len) in layout.lengths.iter().enumerate() {
                let n = len.min(layout.max_len);
                for c in 0..w {
                    let at = |i: usize| (offsets[b] + i) * w + c;
                    let m = (0..n)
                        .map(|i| values[at(i)])
                        .fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = (0..n).map(|i| (values[at(i)] - m).exp()).sum();
                    for i in 0..n {
                        expected[at(i)] = (values[at(i)] - m).exp() / s;
                    }
                }
            }
            let what = format!("{spec} lengths {:?}", layout.lengths);
            assert_close(&what, &out[0], &expected, spec.dtype);
        },
    );
}

#[test]
fn masked_select_jagged() {
    let mut rng = Rng::new(7);
    let prim = Primitive::MaskedSelectJagged;
    for_each_layout(&prim, &mut rng, |spec, w, layout, compiled, rng| {
        let t = layout.total();
        let values = random_values(t * w, spec.dtype, rng);
        let mask: Vec<i64> = (0..t).map(|_| [0, 1, 7][rng.below(3) as usize]).collect();
        let rest = [encode_ints(&mask, DType::U8)];
        let out = run_with_offsets(compiled, spec, layout, &values, &rest, &[]);
        let offsets = layout.offsets();
        let mut kept = Vec::new();
        let mut new_offsets = vec![0i64];
        for b in 0..layout.lengths.len() {
            for r in offsets[b]..offsets[b + 1] {
                if mask[r] != 0 {
                    kept.extend_from_slice(&values[r * w..(r + 1) * w]);
                }
            }
            new_offsets.push((kept.len() / w.max(1)) as i64);
        }
        let what = format!("{spec} lengths {:?}", layout.lengths);
        assert_eq!(decode_ints(&out[1], spec.index), new_offsets, "{what}");
        let got = decode_floats(&out[0], spec.dtype);
        assert_eq!(&got[..kept.len()], &kept[..], "{what}");
    });
}

/// Every primitive with grids clamped to 2 CTAs: the grid-stride loops (and
/// the carried mixed-radix indices of the padding kernel) take many turns,
/// and the outputs must equal those of the full grids bit for bit.
#[test]
fn tiny_grids_give_the_same_results() {
    let mut rng = Rng::new(8);
    let prims = [
        Primitive::CompleteCumsum,
        Primitive::JaggedToPaddedDense,
        Primitive::DenseToJagged,
        Primitive::jagged_dense_elementwise_mul(),
        Primitive::JaggedReduce(ReduceKind::Mean),
        Primitive::JaggedSoftmax,
        Primitive::MaskedSelectJagged,
    ];
    for (spec, max_len) in specs() {
        let w = spec.row_width() as usize;
        let layout = Layout {
            lengths: (0..23)
                .map(|_| rng.below(max_len as u64 + 9) as usize)
                .collect(),
            max_len,
        };
        let t = layout.total();
        let b = layout.lengths.len();
        let lengths: Vec<i64> = layout.lengths.iter().map(|&l| l as i64).collect();
        // Set rows hold any nonzero byte: a kernel testing `== 1` fails.
        let mask: Vec<i64> = (0..t)
            .map(|_| match rng.below(2) {
                0 => 0,
                _ => 1 + rng.below(255) as i64,
            })
            .collect();
        let values = encode_floats(&random_values(t * w, spec.dtype, &mut rng), spec.dtype);
        let dense = encode_floats(
            &random_values(b * max_len * w, spec.dtype, &mut rng),
            spec.dtype,
        );
        let offsets = offsets_bytes(&layout, spec.index);
        for prim in &prims {
            let inputs = match prim {
                Primitive::CompleteCumsum => vec![encode_ints(&lengths, spec.index)],
                Primitive::DenseToJagged => vec![dense.clone(), offsets.clone()],
                Primitive::Map { .. } => vec![values.clone(), offsets.clone(), dense.clone()],
                Primitive::MaskedSelectJagged => {
                    vec![
                        values.clone(),
                        offsets.clone(),
                        encode_ints(&mask, DType::U8),
                    ]
                }
                _ => vec![values.clone(), offsets.clone()],
            };
            let compiled = lower(prim, &spec).expect("lowering");
            let attrs = [("padding_value", 0.25f32)];
            let full = emu::run(&compiled, &inputs, layout.sizes(), &attrs);
            let tiny = emu::run_capped(&compiled, &inputs, layout.sizes(), &attrs, 2);
            assert_eq!(full, tiny, "{} {spec}", prim.name());
        }
    }
}
