//! Unchecked size products (regressions): a device tensor whose shape's
//! element count overflows a usize passed the buffer-size check (the
//! product wrapped around to the buffer's length), and jagged bytes with
//! overflowing inner dims passed validation.

use jagged_codegen::{Arch, Spec};
use jagged_ir::DType;
use jagged_ir::bind::BindError;
use jagged_ir::ops::{self, JaggedSpec};
use jagged_runtime::{
    BackendKind, DeviceTensor, GraphRunError, JaggedBytes, OffsetType, Runtime, RuntimeError,
};

#[test]
fn device_tensor_with_an_overflowing_shape_is_refused() {
    let mut rt = Runtime::with_backend(BackendKind::Emu).unwrap();
    // 16 * (2^60 + 4) wraps around to 64 elements: the buffer's length.
    let inner = (1usize << 60) + 4;
    let graph = ops::jagged_reduce(
        &JaggedSpec {
            dtype: DType::F32,
            offsets: DType::I32,
            inner: vec![inner],
        },
        jagged_ir::ReduceOp::Sum,
    )
    .unwrap();
    let values = rt.upload(&[0.5f32; 64]).unwrap();
    assert!(
        !values.holds(&[16, inner]),
        "the buffer cannot hold that shape"
    );
    assert!(values.holds(&[16, 4]));
    let offsets = rt.upload(&[0i32, 16]).unwrap();
    let values = DeviceTensor {
        buffer: values,
        shape: vec![16, inner],
    };
    let offsets = DeviceTensor {
        buffer: offsets,
        shape: vec![2],
    };
    let spec = Spec::new(vec![4], 16, DType::F32, DType::I32, Arch::Sm80);
    let err = rt
        .run_graph(
            &graph,
            &spec,
            &[("values", &values), ("offsets", &offsets)],
            &[("max_len", jagged_ir::AttrValue::Index(16))],
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            GraphRunError::Bind(BindError::InputTooLarge { name, .. }) if name == "values"
        ),
        "{err}"
    );
}

#[test]
fn jagged_bytes_with_overflowing_inner_dims_are_refused() {
    let bytes = JaggedBytes {
        dtype: DType::F32,
        inner_dims: vec![1 << 62, 8],
        values: Vec::new(),
        offset_type: OffsetType::I64,
        offsets: vec![0, 0],
    };
    assert_eq!(bytes.row_elems(), None);
    let err = bytes.validate().unwrap_err();
    assert!(matches!(&err, RuntimeError::ByteLength { .. }), "{err}");
    assert!(err.to_string().contains("overflow"), "{err}");
}
