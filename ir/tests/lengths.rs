//! `complete_cumsum` with negative lengths or a sum overflowing the offsets
//! dtype: a typed error naming the input (regressions: the reference
//! saturated to the dtype's bounds and accepted negative lengths, the kernel
//! wrapped around).

use jagged_ir::bind::{check_lengths_inputs, lengths_inputs};
use jagged_ir::ops;
use jagged_ir::tensor::check_lengths;
use jagged_ir::{
    DType, DenseTensor, Dim, EvalError, GraphBuilder, ScanMode, TensorData, TensorError,
    TensorType, evaluate,
};

fn lengths(dtype: DType, values: &[i64]) -> DenseTensor {
    let data = match dtype {
        DType::I32 => TensorData::I32(values.iter().map(|&v| v as i32).collect()),
        _ => TensorData::I64(values.to_vec()),
    };
    DenseTensor::new(vec![values.len()], data).unwrap()
}

fn cumsum(dtype: DType, values: &[i64]) -> Result<Vec<i64>, EvalError> {
    let g = ops::complete_cumsum(dtype).unwrap();
    let out = evaluate(&g, &[("lengths", &lengths(dtype, values))], &[])?;
    Ok(out["offsets"].data().to_i64().unwrap())
}

#[test]
fn complete_cumsum_with_a_negative_length_is_a_typed_error() {
    for dtype in [DType::I32, DType::I64] {
        let err = cumsum(dtype, &[2, 0, -3, 4]).unwrap_err();
        match &err {
            EvalError::Offsets(TensorError::NegativeLength { arg, index, value }) => {
                assert_eq!((arg.as_str(), *index, *value), ("lengths", 2, -3), "{err}");
            }
            other => panic!("{dtype}: {other}"),
        }
        assert!(err.to_string().contains("lengths[2] = -3"), "{err}");
    }
}

#[test]
fn complete_cumsum_overflowing_the_offsets_dtype_is_a_typed_error() {
    let err = cumsum(DType::I32, &[1, i64::from(i32::MAX), 5]).unwrap_err();
    assert!(
        matches!(
            &err,
            EvalError::Offsets(TensorError::OffsetsOverflow {
                index: 1,
                dtype: DType::I32,
                ..
            })
        ),
        "{err}"
    );
    // Exactly i32::MAX fits.
    assert_eq!(
        cumsum(DType::I32, &[i64::from(i32::MAX) - 1, 1]).unwrap(),
        vec![0, i64::from(i32::MAX) - 1, i64::from(i32::MAX)]
    );
    let err = cumsum(DType::I64, &[i64::MAX / 2 + 1, i64::MAX / 2 + 1]).unwrap_err();
    assert!(
        matches!(
            &err,
            EvalError::Offsets(TensorError::OffsetsOverflow {
                index: 1,
                dtype: DType::I64,
                ..
            })
        ),
        "{err}"
    );
    // Valid lengths still give their offsets.
    assert_eq!(cumsum(DType::I64, &[3, 0, 2]).unwrap(), vec![0, 3, 3, 5]);
    assert_eq!(cumsum(DType::I32, &[]).unwrap(), vec![0]);
}

#[test]
fn integer_scans_that_overflow_are_typed_errors() {
    // An inclusive scan of i32 values beyond i32::MAX (not lengths: negative
    // values are fine there).
    let mut b = GraphBuilder::new("scan");
    let x = b.input("x", TensorType::new(DType::I32, vec![Dim::Batch]));
    let y = b.scan(ScanMode::Inclusive, x, 0);
    b.output("y", y);
    let g = b.finish().unwrap();
    let ok = evaluate(&g, &[("x", &lengths(DType::I32, &[-5, 3, -1]))], &[]).unwrap();
    assert_eq!(ok["y"].data().to_i64().unwrap(), vec![-5, -2, -3]);
    let err = evaluate(
        &g,
        &[("x", &lengths(DType::I32, &[i64::from(i32::MIN), -1]))],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            EvalError::Offsets(TensorError::OffsetsOverflow { index: 1, .. })
        ),
        "{err}"
    );
}

#[test]
fn executors_find_and_check_the_lengths_inputs() {
    let g = ops::complete_cumsum(DType::I64).unwrap();
    assert_eq!(lengths_inputs(&g), vec![("lengths", DType::I64)]);
    assert!(
        lengths_inputs(
            &ops::jagged_softmax(&ops::JaggedSpec {
                dtype: DType::F32,
                offsets: DType::I32,
                inner: vec![2],
            })
            .unwrap()
        )
        .is_empty()
    );
    check_lengths_inputs(&g, &[("lengths", &[1, 2, 3])]).unwrap();
    let err = check_lengths_inputs(&g, &[("lengths", &[1, -2])]).unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
    assert_eq!(
        check_lengths("l", &[2, 3], DType::I32).unwrap(),
        vec![0, 2, 5]
    );
}
