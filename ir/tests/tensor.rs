//! Host tensors: every bad-offsets case has its own typed error naming the
//! argument and the first bad index; padded conversions; little-endian byte round trips.

use jagged_ir::{DType, DenseTensor, JaggedTensor, TensorData, TensorError};

fn f32s(n: usize) -> TensorData {
    TensorData::F32((0..n).map(|k| k as f32 + 0.5).collect())
}

fn from_offsets(offsets: Vec<i64>, rows: usize) -> Result<JaggedTensor, TensorError> {
    JaggedTensor::from_offsets(f32s(rows * 2), &[2], TensorData::I64(offsets))
}

#[test]
fn empty_offsets() {
    let e = from_offsets(vec![], 0).unwrap_err();
    assert!(
        matches!(&e, TensorError::EmptyOffsets { arg } if arg == "offsets"),
        "{e}"
    );
}

#[test]
fn first_offset_not_zero() {
    let e = from_offsets(vec![1, 3], 3).unwrap_err();
    assert!(
        matches!(&e, TensorError::FirstOffsetNotZero { arg, value: 1 } if arg == "offsets"),
        "{e}"
    );
    assert_eq!(e.to_string(), "offsets[0] = 1, must be 0");
}

#[test]
fn negative_offset() {
    let e = from_offsets(vec![0, 2, -1, 4], 4).unwrap_err();
    assert!(
        matches!(
            e,
            TensorError::NegativeOffset {
                index: 2,
                value: -1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.to_string(), "offsets[2] = -1 is negative");
}

#[test]
fn decreasing_offsets() {
    let e = from_offsets(vec![0, 3, 2, 2, 1], 1).unwrap_err();
    assert!(
        matches!(
            e,
            TensorError::DecreasingOffsets {
                index: 2,
                value: 2,
                previous: 3,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.to_string(), "offsets[2] = 2 is less than offsets[1] = 3");
}

#[test]
fn last_offset_must_match_the_rows() {
    // Five rows of values, offsets ending at 4.
    let values = f32s(10);
    let e = JaggedTensor::from_offsets(values, &[2], TensorData::I32(vec![0, 1, 4])).unwrap_err();
    assert!(
        matches!(
            &e,
            TensorError::ValuesLength {
                rows: 4,
                expected: 8,
                found: 10,
                ..
            }
        ),
        "{e}"
    );
    // The check shared with the evaluator reports the last offset itself.
    let e = jagged_ir::tensor::check_offsets("offsets", &[0, 1, 4], Some(5)).unwrap_err();
    assert!(
        matches!(
            e,
            TensorError::LastOffsetMismatch {
                index: 2,
                value: 4,
                rows: 5,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn inner_dims_must_fit_the_values() {
    let e = JaggedTensor::from_offsets(f32s(7), &[2], TensorData::I64(vec![0, 3])).unwrap_err();
    assert!(
        matches!(&e, TensorError::ValuesLength { arg, rows: 3, expected: 6, found: 7, .. } if arg == "values"),
        "{e}"
    );
}

#[test]
fn offsets_must_be_integers() {
    let e = JaggedTensor::from_offsets(f32s(0), &[2], TensorData::F32(vec![0.0])).unwrap_err();
    assert!(
        matches!(
            e,
            TensorError::IndexDtype {
                dtype: DType::F32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn negative_length() {
    let e = JaggedTensor::from_lengths(f32s(4), &[2], TensorData::I32(vec![1, 2, -3])).unwrap_err();
    assert!(
        matches!(&e, TensorError::NegativeLength { arg, index: 2, value: -3 } if arg == "lengths"),
        "{e}"
    );
}

#[test]
fn lengths_overflowing_i32() {
    let e =
        JaggedTensor::from_lengths(f32s(0), &[], TensorData::I32(vec![i32::MAX, 1])).unwrap_err();
    assert!(
        matches!(
            e,
            TensorError::OffsetsOverflow {
                index: 1,
                dtype: DType::I32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn from_lengths_builds_offsets_of_the_same_dtype() {
    let j = JaggedTensor::from_lengths(f32s(8), &[2], TensorData::I32(vec![0, 3, 0, 1])).unwrap();
    assert_eq!(j.offsets().data(), &TensorData::I32(vec![0, 0, 3, 3, 4]));
    assert_eq!((j.batch(), j.inner()), (4, &[2usize][..]));
    let empty = JaggedTensor::from_lengths(f32s(0), &[3], TensorData::I64(vec![])).unwrap();
    assert_eq!(
        (empty.batch(), empty.values().shape()),
        (0, &[0usize, 3][..])
    );
}

#[test]
fn padded_round_trip() {
    // Lengths 2, 0, 3 with max_len 2: the third sequence is truncated.
    let j = JaggedTensor::from_lengths(f32s(10), &[2], TensorData::I64(vec![2, 0, 3])).unwrap();
    let dense = j.to_padded_dense(2, -1.0).unwrap();
    assert_eq!(dense.shape(), &[3, 2, 2]);
    #[rustfmt::skip]
    let want = [
        0.5, 1.5, 2.5, 3.5,
        -1.0, -1.0, -1.0, -1.0,
        4.5, 5.5, 6.5, 7.5,
    ];
    assert_eq!(dense.to_f64(), want);
    // Back: rows past N = 2 of the third sequence become 0.
    let back = JaggedTensor::from_padded_dense(&dense, TensorData::I64(vec![0, 2, 2, 5])).unwrap();
    let want: Vec<f64> = vec![0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 0.0, 0.0];
    assert_eq!(back.values().to_f64(), want);
    let e = JaggedTensor::from_padded_dense(&dense, TensorData::I64(vec![0, 5])).unwrap_err();
    assert!(
        matches!(&e, TensorError::Shape { arg, .. } if arg == "dense"),
        "{e}"
    );
}

#[test]
fn dense_tensor_checks_its_length() {
    let e = DenseTensor::new(vec![2, 3], f32s(5)).unwrap_err();
    assert!(
        matches!(
            e,
            TensorError::DataLength {
                expected: 6,
                found: 5,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn le_bytes_round_trip_every_dtype() {
    for dtype in DType::ALL {
        let t = DenseTensor::from_f64(dtype, vec![2, 2], &[0.0, 1.0, 2.0, 3.0]).unwrap();
        let bytes = t.data().to_le_bytes();
        assert_eq!(bytes.len(), 4 * dtype.size(), "{dtype}");
        let back = TensorData::from_le_bytes(dtype, &bytes).unwrap();
        assert_eq!(&back, t.data(), "{dtype}");
        if dtype.size() > 1 {
            assert_eq!(
                TensorData::from_le_bytes(dtype, &bytes[1..]),
                None,
                "{dtype}"
            );
        }
    }
}
