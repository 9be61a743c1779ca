//! The `complete_cumsum` launcher refuses negative lengths and lengths whose
//! sum overflows the offsets dtype with a typed error, before any kernel runs
//! (regression: the kernel wrapped around and returned invalid offsets).

use jagged::ir::{DenseTensor, TensorData, TensorError};
use jagged::ops::{self, KernelError};
use jagged::runtime::{BackendKind, GraphRunError, Runtime};

fn runtime() -> Runtime {
    Runtime::with_backend(BackendKind::Emu).unwrap()
}

fn launch(rt: &mut Runtime, data: TensorData) -> Result<Vec<i64>, KernelError> {
    let n = data.len();
    let host = DenseTensor::new(vec![n], data).unwrap();
    let dev = rt.upload_tensor(&host).unwrap();
    let result = ops::complete_cumsum::launch(rt, &dev);
    rt.free(dev.buffer).unwrap();
    let out = result?;
    let values = rt.download_tensor(&out).unwrap().data().to_i64().unwrap();
    rt.free(out.buffer).unwrap();
    Ok(values)
}

#[test]
fn complete_cumsum_launch_with_a_negative_length_is_refused() {
    let mut rt = runtime();
    for data in [
        TensorData::I32(vec![4, -1, 2]),
        TensorData::I64(vec![4, -1, 2]),
    ] {
        let err = launch(&mut rt, data).unwrap_err();
        assert!(
            matches!(
                &err,
                KernelError::Run(GraphRunError::Offsets(TensorError::NegativeLength {
                    index: 1,
                    value: -1,
                    ..
                }))
            ),
            "{err}"
        );
    }
}

#[test]
fn complete_cumsum_launch_overflowing_i32_offsets_is_refused() {
    let mut rt = runtime();
    let err = launch(&mut rt, TensorData::I32(vec![i32::MAX, 1])).unwrap_err();
    assert!(
        matches!(
            &err,
            KernelError::Run(GraphRunError::Offsets(TensorError::OffsetsOverflow {
                index: 1,
                ..
            }))
        ),
        "{err}"
    );
    // Valid lengths still run, on the kernel.
    assert_eq!(
        launch(&mut rt, TensorData::I32(vec![3, 0, 2])).unwrap(),
        vec![0, 3, 3, 5]
    );
}
