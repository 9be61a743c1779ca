//! Unchecked size products (regressions): a shape whose element count
//! overflows a usize built a tensor (the product wrapped around to 0), and
//! binding accepted such a shape for an input.

use jagged_ir::bind::{BindError, InputDesc, bind};
use jagged_ir::ops::{self, JaggedSpec};
use jagged_ir::tensor::shape_elems;
use jagged_ir::{DType, DenseTensor, JaggedTensor, TensorData, TensorError};

#[test]
fn dense_tensor_whose_shape_overflows_is_a_typed_error() {
    let err = DenseTensor::new(vec![1 << 32, 1 << 32], TensorData::F32(vec![])).unwrap_err();
    assert!(matches!(&err, TensorError::SizeOverflow { .. }), "{err}");
    let err = DenseTensor::new(vec![1 << 62, 4, 0], TensorData::F32(vec![])).unwrap_err();
    assert!(matches!(&err, TensorError::SizeOverflow { .. }), "{err}");
    // Zero-sized shapes whose prefix products do not overflow are fine.
    assert!(DenseTensor::new(vec![0, 1 << 40], TensorData::F32(vec![])).is_ok());
    assert_eq!(shape_elems(&[3, 4, 5]), Some(60));
    assert_eq!(shape_elems(&[usize::MAX, 2]), None);
}

#[test]
fn jagged_tensor_whose_rows_overflow_is_a_typed_error() {
    let err = JaggedTensor::from_offsets(
        TensorData::F32(vec![]),
        &[1 << 40],
        TensorData::I64(vec![0, 1 << 40]),
    )
    .unwrap_err();
    assert!(matches!(&err, TensorError::SizeOverflow { .. }), "{err}");
    let j = JaggedTensor::from_offsets(
        TensorData::F32(vec![]),
        &[1 << 40],
        TensorData::I64(vec![0, 0, 0]),
    )
    .unwrap();
    let err = j.to_padded_dense(1 << 40, 0.0).unwrap_err();
    assert!(matches!(&err, TensorError::SizeOverflow { .. }), "{err}");
}

#[test]
fn binding_an_input_whose_shape_overflows_is_a_typed_error() {
    let g = ops::jagged_softmax(&JaggedSpec {
        dtype: DType::F32,
        offsets: DType::I32,
        inner: vec![(1 << 60) + 4],
    })
    .unwrap();
    let values_shape = [16, (1usize << 60) + 4];
    let inputs = [
        InputDesc {
            name: "values",
            dtype: DType::F32,
            shape: &values_shape,
        },
        InputDesc {
            name: "offsets",
            dtype: DType::I32,
            shape: &[2],
        },
    ];
    let err = bind(&g, &inputs, &[("max_len", jagged_ir::AttrValue::Index(4))]).unwrap_err();
    assert!(
        matches!(&err, BindError::InputTooLarge { name, .. } if name == "values"),
        "{err}"
    );
}
