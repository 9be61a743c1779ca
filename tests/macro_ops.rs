//! The builtin ops written with `#[jagged_kernel]` (src/ops) build exactly the
//! reference graphs of `jagged_ir::ops`: same canonical text for each dtype,
//! inner shape and offsets dtype.

mod common;

use common::{Rng, offsets};
use jagged::ir::ops::{self as reference, JaggedSpec};
use jagged::ir::{DType, ReduceOp};
use jagged::ops::{self, KernelError};

/// Specializations covering every value dtype, both offsets dtypes and inner
/// ranks 0, 1 and 2.
fn specs() -> Vec<JaggedSpec> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
        for offsets in [DType::I32, DType::I64] {
            for inner in [vec![], vec![4], vec![2, 3]] {
                out.push(JaggedSpec {
                    dtype,
                    offsets,
                    inner,
                });
            }
        }
    }
    out
}

fn same(ours: jagged::ir::Graph, theirs: jagged::ir::Graph, what: &str) {
    assert_eq!(ours.to_string(), theirs.to_string(), "{what}");
}

#[test]
fn complete_cumsum_matches_reference() {
    for lengths in [DType::I32, DType::I64] {
        let ours = ops::complete_cumsum::graph(lengths).unwrap();
        same(
            ours,
            reference::complete_cumsum(lengths).unwrap(),
            "complete_cumsum",
        );
    }
}

#[test]
fn jagged_ops_match_reference() {
    for spec in specs() {
        let (t, s, o) = (spec.dtype, spec.inner.as_slice(), spec.offsets);
        let what = format!("{spec:?}");
        same(
            ops::jagged_to_padded_dense::graph(t, s, o).unwrap(),
            reference::jagged_to_padded_dense(&spec).unwrap(),
            &what,
        );
        same(
            ops::dense_to_jagged::graph(t, s, o).unwrap(),
            reference::dense_to_jagged(&spec).unwrap(),
            &what,
        );
        same(
            ops::jagged_dense_elementwise_mul::graph(t, s, o).unwrap(),
            reference::jagged_dense_elementwise_mul(&spec).unwrap(),
            &what,
        );
        same(
            ops::jagged_softmax::graph(t, s, o).unwrap(),
            reference::jagged_softmax(&spec).unwrap(),
            &what,
        );
        same(
            ops::jagged_reduce_sum::graph(t, s, o).unwrap(),
            reference::jagged_reduce(&spec, ReduceOp::Sum).unwrap(),
            &what,
        );
        same(
            ops::jagged_reduce_mean::graph(t, s, o).unwrap(),
            reference::jagged_reduce(&spec, ReduceOp::Mean).unwrap(),
            &what,
        );
        same(
            ops::jagged_reduce_max::graph(t, s, o).unwrap(),
            reference::jagged_reduce(&spec, ReduceOp::Max).unwrap(),
            &what,
        );
        for mask in [DType::Bool, DType::U8] {
            same(
                ops::masked_select_jagged::graph(t, s, mask, o).unwrap(),
                reference::masked_select_jagged(&spec, mask).unwrap(),
                &what,
            );
        }
    }
}

#[test]
fn bounds_reject_wrong_dtype_classes() {
    let err = ops::complete_cumsum::graph(DType::F32).unwrap_err();
    assert!(err.to_string().contains("`I`"), "{err}");
    let err = ops::jagged_softmax::graph(DType::I32, &[4], DType::I32).unwrap_err();
    assert!(err.to_string().contains("float"), "{err}");
}

// ---- launchers on the emulator vs the reference evaluator ----

use jagged::ir::{AttrValue, DenseTensor, Graph, evaluate};
use jagged::runtime::{BackendKind, DeviceTensor, Runtime};
use std::collections::BTreeMap;

/// Sequence-length sets: empty sequences, length 1, lengths above `MAX_LEN`,
/// a length above a 32-row tile, `B = 0`, and only empty sequences (`T = 0`).
const LENGTHS: [&[usize]; 4] = [&[0, 1, 7, 5, 0, 3], &[], &[0, 0], &[40, 2, 17]];
const MAX_LEN: usize = 5;

/// A `dtype` tensor of `shape`: uniform in [-2, 2) for floats, else 0 or 1.
fn random_tensor(rng: &mut Rng, dtype: DType, shape: Vec<usize>) -> DenseTensor {
    let n = shape.iter().product::<usize>();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let x = rng.float();
            if dtype.is_float() {
                x
            } else {
                f64::from(u8::from(x > 0.0))
            }
        })
        .collect();
    DenseTensor::from_f64(dtype, shape, &v).unwrap()
}

fn with_inner(lead: &[usize], inner: &[usize]) -> Vec<usize> {
    lead.iter().chain(inner).copied().collect()
}

/// DESIGN.md tolerances by input dtype.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 1e-2,
        DType::F16 => 2e-3,
        _ => 1e-5,
    }
}

/// Downloads (and frees) the launcher's outputs and compares them with the
/// reference evaluator's on the same host inputs.
fn compare(
    rt: &mut Runtime,
    graph: &Graph,
    host: &[(&str, &DenseTensor)],
    attrs: &[(&str, AttrValue)],
    outputs: Vec<(&str, DeviceTensor)>,
    tol: f64,
    what: &str,
) {
    let expected: BTreeMap<String, DenseTensor> = evaluate(graph, host, attrs).unwrap();
    assert_eq!(outputs.len(), expected.len(), "{what}");
    for (name, device) in outputs {
        let got = rt.download_tensor(&device).unwrap();
        rt.free(device.buffer).unwrap();
        let want = &expected[name];
        let what = format!("{what}: output {name}");
        assert_eq!(got.shape(), want.shape(), "{what}");
        assert_eq!(got.dtype(), want.dtype(), "{what}");
        let (a, b) = (got.to_f64(), want.to_f64());
        assert!(
            a.iter().all(|x| x.is_finite()),
            "{what}: non-finite output {a:?}"
        );
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt();
        let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
        assert!(
            err <= tol * norm.max(1e-30),
            "{what}: error {err} vs norm {norm}"
        );
    }
}

fn upload(rt: &mut Runtime, t: &DenseTensor) -> DeviceTensor {
    rt.upload_tensor(t).unwrap()
}

fn free(rt: &mut Runtime, ts: impl IntoIterator<Item = DeviceTensor>) {
    for t in ts {
        rt.free(t.buffer).unwrap();
    }
}

/// The emulator, or the backend `JAGGED_BACKEND` names (`cuda` on a GPU machine).
fn runtime() -> Runtime {
    match std::env::var_os(jagged::runtime::BACKEND_ENV) {
        Some(_) => Runtime::new().unwrap(),
        None => Runtime::with_backend(BackendKind::Emu).unwrap(),
    }
}

/// The launcher and graph builder of an op on one jagged input with a `max_len`
/// attribute, and the name of its output.
type RowOp = (
    fn(&mut Runtime, &DeviceTensor, &DeviceTensor, usize) -> Result<DeviceTensor, KernelError>,
    fn(DType, &[usize], DType) -> Result<Graph, KernelError>,
    &'static str,
);

#[test]
fn launchers_run_like_the_reference() {
    let mut rt = runtime();
    eprintln!("backend: {}", rt.device_name());
    rt.set_poison_outputs(true);
    let mut rng = Rng(0x2545_f491);
    let max_len = [("max_len", AttrValue::Index(MAX_LEN))];
    for (case, lengths) in LENGTHS.iter().enumerate() {
        let (dtype, index, inner): (DType, DType, &[usize]) = match case % 2 {
            0 => (DType::F32, DType::I32, &[4]),
            _ => (DType::BF16, DType::I64, &[2, 3]),
        };
        let tol = tolerance(dtype);
        let what = format!("lengths {lengths:?}, {dtype}, offsets {index}, inner {inner:?}");
        let rows: usize = lengths.iter().sum();
        let b = lengths.len();
        let values = random_tensor(&mut rng, dtype, with_inner(&[rows], inner));
        let offsets = offsets(lengths, index);
        let padded = random_tensor(&mut rng, dtype, with_inner(&[b, MAX_LEN], inner));
        let mask = random_tensor(&mut rng, DType::U8, vec![rows]);
        let lens_f: Vec<f64> = lengths.iter().map(|&l| l as f64).collect();
        let lens = DenseTensor::from_f64(index, vec![b], &lens_f).unwrap();
        let (v, o, p, m, l) = (
            upload(&mut rt, &values),
            upload(&mut rt, &offsets),
            upload(&mut rt, &padded),
            upload(&mut rt, &mask),
            upload(&mut rt, &lens),
        );
        let jagged_in = [("values", &values), ("offsets", &offsets)];

        let out = ops::complete_cumsum::launch(&mut rt, &l).unwrap();
        let g = ops::complete_cumsum::graph(index).unwrap();
        compare(
            &mut rt,
            &g,
            &[("lengths", &lens)],
            &[],
            vec![("offsets", out)],
            0.0,
            &what,
        );

        let out = ops::jagged_to_padded_dense::launch(&mut rt, &o, &v, MAX_LEN, -1.5).unwrap();
        let g = ops::jagged_to_padded_dense::graph(dtype, inner, index).unwrap();
        let attrs = [max_len[0], ("padding_value", AttrValue::Float(-1.5))];
        compare(
            &mut rt,
            &g,
            &jagged_in,
            &attrs,
            vec![("dense", out)],
            tol,
            &what,
        );

        let out = ops::dense_to_jagged::launch(&mut rt, &p, &o).unwrap();
        let g = ops::dense_to_jagged::graph(dtype, inner, index).unwrap();
        let host = [("dense", &padded), ("offsets", &offsets)];
        compare(&mut rt, &g, &host, &[], vec![("values", out)], tol, &what);

        let out = ops::jagged_dense_elementwise_mul::launch(&mut rt, &o, &v, &p, MAX_LEN).unwrap();
        let g = ops::jagged_dense_elementwise_mul::graph(dtype, inner, index).unwrap();
        let host = [
            ("values", &values),
            ("offsets", &offsets),
            ("dense", &padded),
        ];
        compare(
            &mut rt,
            &g,
            &host,
            &max_len,
            vec![("values", out)],
            tol,
            &what,
        );

        // One row-wise op per sequence: softmax keeps the jagged `values`, the
        // reductions give one `out` row per sequence.
        let row_ops: [RowOp; 4] = [
            (
                ops::jagged_softmax::launch,
                ops::jagged_softmax::graph,
                "values",
            ),
            (
                ops::jagged_reduce_sum::launch,
                ops::jagged_reduce_sum::graph,
                "out",
            ),
            (
                ops::jagged_reduce_mean::launch,
                ops::jagged_reduce_mean::graph,
                "out",
            ),
            (
                ops::jagged_reduce_max::launch,
                ops::jagged_reduce_max::graph,
                "out",
            ),
        ];
        for (launch, graph, output) in row_ops {
            let out = launch(&mut rt, &o, &v, MAX_LEN).unwrap();
            let g = graph(dtype, inner, index).unwrap();
            let outs = vec![(output, out)];
            compare(&mut rt, &g, &jagged_in, &max_len, outs, tol, &what);
        }

        let (kept, kept_offsets) = ops::masked_select_jagged::launch(&mut rt, &o, &v, &m).unwrap();
        let g = ops::masked_select_jagged::graph(dtype, inner, DType::U8, index).unwrap();
        let host = [("values", &values), ("offsets", &offsets), ("mask", &mask)];
        let outs = vec![("values", kept), ("offsets", kept_offsets)];
        compare(&mut rt, &g, &host, &[], outs, tol, &what);

        free(&mut rt, [v, o, p, m, l]);
    }
}

#[test]
fn launcher_errors_name_the_input() {
    let mut rt = Runtime::with_backend(BackendKind::Emu).unwrap();
    let values = DenseTensor::from_f64(DType::F32, vec![3], &[1.0, 2.0, 3.0]).unwrap();
    let v = rt.upload_tensor(&values).unwrap();
    let bad = DenseTensor::from_f64(DType::I32, vec![2], &[0.0, 5.0]).unwrap();
    let o = rt.upload_tensor(&bad).unwrap();
    // Offsets ending past the values: an error, not an out-of-bounds access.
    let err = ops::jagged_softmax::launch(&mut rt, &o, &v, 4).unwrap_err();
    assert!(err.to_string().contains("offsets"), "{err}");
    // Values whose rank does not match a kernel with named dims.
    let p = rt.upload_tensor(&values).unwrap();
    let err = ops::dense_to_jagged::launch(&mut rt, &p, &o).unwrap_err();
    assert!(err.to_string().contains("dense"), "{err}");
    free(&mut rt, [v, o, p]);
}
