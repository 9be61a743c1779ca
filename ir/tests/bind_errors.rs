//! Binding errors a user can act on: types written with `T`, `B` and
//! `max_len` (not the IR's `%1`), and two jagged inputs with different row
//! counts both named (not whichever came second blamed).

use jagged_ir::{AttrValue, DType, DenseTensor, Graph, evaluate};

fn graph() -> Graph {
    Graph::parse(
        "graph g {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : bf16[%1, 2, 4]
  %3 = input k : bf16[%1, 2, 4]
  %4 = add %2, %3 : bf16[%1, 2, 4]
  output y = %4
}",
    )
    .expect("graph")
}

fn zeros(shape: Vec<usize>) -> DenseTensor {
    let n = shape.iter().product();
    DenseTensor::from_f64(DType::BF16, shape, &vec![0.0; n]).expect("tensor")
}

#[test]
fn rows_that_disagree_name_both_inputs() {
    let offsets = DenseTensor::from_f64(DType::I32, vec![3], &[0.0, 5.0, 12.0]).expect("offsets");
    let (q, k) = (zeros(vec![10, 2, 4]), zeros(vec![12, 2, 4]));
    let err = evaluate(
        &graph(),
        &[("offsets", &offsets), ("q", &q), ("k", &k)],
        &[("max_len", AttrValue::Index(8))],
    )
    .expect_err("q has 10 rows, k 12")
    .to_string();
    assert!(err.contains("'q' and 'k' have 10 and 12 rows"), "{err}");
}

#[test]
fn shape_errors_write_types_as_users_see_them() {
    let offsets = DenseTensor::from_f64(DType::I32, vec![2], &[0.0, 3.0]).expect("offsets");
    let (q, k) = (zeros(vec![3, 2, 4]), zeros(vec![3, 2, 5]));
    let err = evaluate(
        &graph(),
        &[("offsets", &offsets), ("q", &q), ("k", &k)],
        &[("max_len", AttrValue::Index(8))],
    )
    .expect_err("k's inner dim is 5")
    .to_string();
    assert!(
        err.contains("input 'k'") && err.contains("bf16[T, 2, 4]"),
        "{err}"
    );
    assert!(!err.contains('%'), "{err}");
}

/// Regression (fuzzer): a `scan complete` along a static axis of extent
/// `usize::MAX` overflowed `n + 1` in the validator.
#[test]
fn a_complete_scan_of_the_largest_static_axis_is_an_error_not_an_overflow() {
    let err = Graph::parse(
        "graph g {
  %0 = input x : i64[18446744073709551615]
  %1 = scan complete %0, axis 0 : i64[1]
  output y = %1
}",
    );
    assert!(err.is_err());
}

/// Regression (fuzzer): `JaggedTensor::from_padded_dense` on an empty dense
/// tensor whose inner dims multiply past `usize` overflowed an unchecked
/// product; it is a typed error.
#[test]
fn from_padded_dense_with_overflowing_inner_dims_is_an_error() {
    let dense = DenseTensor::from_f64(DType::F32, vec![1, 0, 1 << 32, 1 << 32], &[])
        .expect("an empty dense tensor");
    let offsets = jagged_ir::TensorData::from_f64(DType::I32, &[0.0, 0.0]);
    assert!(jagged_ir::JaggedTensor::from_padded_dense(&dense, offsets).is_err());
}

/// A `max_len` above 2^31 is refused by the binder, so the reference and
/// the kernels (whose buckets stop at 2^31) agree on what is valid.
#[test]
fn max_len_above_two_to_the_31_is_refused_like_the_kernels_refuse_it() {
    let offsets = DenseTensor::from_f64(DType::I32, vec![2], &[0.0, 3.0]).expect("offsets");
    let (q, k) = (zeros(vec![3, 2, 4]), zeros(vec![3, 2, 4]));
    let inputs = [("offsets", &offsets), ("q", &q), ("k", &k)];
    let too_big = jagged_ir::bind::MAX_MAX_LEN + 1;
    let err = evaluate(&graph(), &inputs, &[("max_len", AttrValue::Index(too_big))])
        .expect_err("above 2^31")
        .to_string();
    assert!(err.contains("2^31"), "{err}");
    let at_limit = jagged_ir::bind::MAX_MAX_LEN;
    assert!(
        evaluate(
            &graph(),
            &inputs,
            &[("max_len", AttrValue::Index(at_limit))]
        )
        .is_ok()
    );
}
