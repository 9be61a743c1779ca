//! The reference's memory budget (regressions): `dense_to_jagged` with
//! offsets `[0, 0, 0, 2^62]` panicked on an overflowing `offsets * row`,
//! `[0, 3, 3, 2^40]` aborted on a 17 TB allocation, and
//! `jagged_to_padded_dense` with `max_len = 2^31` aborted too. Sizes are now
//! checked against the budget before anything is allocated.

mod common;

use common::{f64_tensor, index_tensor};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::{AttrValue, BindError, DType, EvalOptions, evaluate, evaluate_with};

fn spec(inner: &[usize]) -> JaggedSpec {
    JaggedSpec {
        dtype: DType::F64,
        offsets: DType::I64,
        inner: inner.to_vec(),
    }
}

fn assert_budget_error(err: &BindError, value: &str) {
    match err {
        BindError::MemoryBudget {
            value: v, budget, ..
        } => {
            assert!(v.contains(value), "{err}");
            assert_eq!(*budget, EvalOptions::from_env().unwrap().memory_budget);
        }
        other => panic!("expected a memory budget error, got {other}"),
    }
    assert!(
        err.to_string().contains("JAGGED_REF_MEMORY_BUDGET"),
        "{err}"
    );
}

#[test]
fn dense_to_jagged_with_offsets_overflowing_a_usize_is_a_typed_error() {
    let g = ops::dense_to_jagged(&spec(&[2])).unwrap();
    let dense = f64_tensor(vec![3, 2, 2], &[1.0; 12]);
    let offsets = index_tensor(&[0, 0, 0, 1 << 62], true);
    let err = evaluate(&g, &[("dense", &dense), ("offsets", &offsets)], &[]).unwrap_err();
    assert_budget_error(&err, "from_padded");
    assert!(err.to_string().contains("more bytes than a usize"), "{err}");
}

#[test]
fn dense_to_jagged_with_offsets_of_2_pow_40_rows_is_a_typed_error() {
    let g = ops::dense_to_jagged(&spec(&[2])).unwrap();
    let dense = f64_tensor(vec![3, 2, 2], &[1.0; 12]);
    let offsets = index_tensor(&[0, 3, 3, 1 << 40], true);
    let err = evaluate(&g, &[("dense", &dense), ("offsets", &offsets)], &[]).unwrap_err();
    assert_budget_error(&err, "from_padded");
    // 2^40 rows of 2 f64: 16 TiB.
    assert!(
        matches!(err, BindError::MemoryBudget { bytes: Some(b), .. } if b >= 1 << 44),
        "{err}"
    );
}

#[test]
fn jagged_to_padded_dense_with_max_len_2_pow_31_is_a_typed_error() {
    let g = ops::jagged_to_padded_dense(&spec(&[4])).unwrap();
    let values = f64_tensor(vec![3, 4], &[1.0; 12]);
    let offsets = index_tensor(&[0, 1, 3], true);
    let err = evaluate(
        &g,
        &[("values", &values), ("offsets", &offsets)],
        &[("max_len", AttrValue::Index(1 << 31))],
    )
    .unwrap_err();
    assert_budget_error(&err, "to_padded");
}

#[test]
fn the_budget_is_an_option_and_counts_every_value() {
    let g = ops::jagged_to_padded_dense(&spec(&[4])).unwrap();
    let values = f64_tensor(vec![3, 4], &[1.0; 12]);
    let offsets = index_tensor(&[0, 1, 3], true);
    let inputs = [("values", &values), ("offsets", &offsets)];
    let attrs = [("max_len", AttrValue::Index(2))];
    // Values held: offsets 3, values 12, padded 16, mask 4, pad 1, select 16 = 52 f64.
    let exact = EvalOptions {
        memory_budget: 52 * 8,
    };
    let out = evaluate_with(&g, &inputs, &attrs, &exact).unwrap();
    assert_eq!(out["dense"].shape(), &[2, 2, 4]);
    let tight = EvalOptions {
        memory_budget: 52 * 8 - 1,
    };
    let err = evaluate_with(&g, &inputs, &attrs, &tight).unwrap_err();
    assert!(
        matches!(
            err,
            BindError::MemoryBudget {
                bytes: Some(416),
                budget: 415,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn host_padded_conversions_check_the_budget_before_allocating() {
    use jagged_ir::{DenseTensor, JaggedTensor, TensorData, TensorError};
    // 2^40 rows of 2: 16 TiB of f64 (aborted before).
    let dense = DenseTensor::new(vec![1, 2, 2], TensorData::F32(vec![1.0; 4])).unwrap();
    let err =
        JaggedTensor::from_padded_dense(&dense, TensorData::I64(vec![0, 1 << 40])).unwrap_err();
    assert!(
        matches!(&err, TensorError::OverBudget { arg, .. } if arg == "offsets"),
        "{err}"
    );
    let j = JaggedTensor::from_offsets(
        TensorData::F32(vec![1.0; 2]),
        &[2],
        TensorData::I64(vec![0, 1]),
    )
    .unwrap();
    let err = j.to_padded_dense(1 << 40, 0.0).unwrap_err();
    assert!(
        matches!(&err, TensorError::OverBudget { arg, .. } if arg == "dense"),
        "{err}"
    );
    assert_eq!(
        j.to_padded_dense(2, -1.0).unwrap().to_f64(),
        vec![1.0, 1.0, -1.0, -1.0]
    );
}
