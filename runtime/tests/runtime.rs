//! The runtime over its backends: backend choice, buffers, jagged tensors,
//! module caching, argument checks, and launches of hand-written PTX.
//!
//! Launch tests run on the emulator (the backend every machine has); the
//! CUDA tests check the typed errors on a machine without a driver and run
//! the same launches where a GPU is present.

use jagged_runtime::{
    BackendKind, DType, JaggedBytes, KernelArg, LaunchDims, OffsetType, Runtime, RuntimeError,
};
use std::process::{Command, Stdio};

const VADD: &str = include_str!("data/vadd.ptx");
const JAGGED_SUM: &str = include_str!("data/jagged_sum.ptx");

fn emu() -> Runtime {
    Runtime::with_backend(BackendKind::Emu).expect("the emulator is always available")
}

/// The runtimes to launch on: the emulator, and CUDA when it is available.
fn runtimes() -> Vec<Runtime> {
    let mut all = vec![emu()];
    all.extend(Runtime::with_backend(BackendKind::Cuda).ok());
    all
}

#[test]
fn cuda_is_a_typed_error_or_a_device() {
    match Runtime::with_backend(BackendKind::Cuda) {
        Ok(runtime) => assert_eq!(runtime.backend_kind(), BackendKind::Cuda),
        Err(RuntimeError::CudaDriverMissing | RuntimeError::CudaNoDevice) => {}
        Err(other) => panic!("unexpected error opening CUDA: {other}"),
    }
}

#[test]
fn new_falls_back_to_the_emulator_without_cuda() {
    if std::env::var_os("JAGGED_BACKEND").is_some() {
        return; // the forced choice is tested in `backend_env_child`
    }
    let runtime = Runtime::new().expect("some backend");
    match Runtime::with_backend(BackendKind::Cuda) {
        Ok(_) => assert_eq!(runtime.backend_name(), "cuda"),
        Err(cuda_error) => {
            assert_eq!(runtime.backend_name(), "emu");
            assert_eq!(
                runtime.fallback_reason(),
                Some(cuda_error.to_string().as_str())
            );
        }
    }
}

const ENV_CHILD: &str = "JAGGED_RUNTIME_TEST_ENV_CHILD";

/// A worker of `jagged_backend_env_is_honoured`: checks `Runtime::new()`
/// under the `JAGGED_BACKEND` its parent set; does nothing in a normal run.
#[test]
fn backend_env_child() {
    if std::env::var_os(ENV_CHILD).is_none() {
        return;
    }
    let forced = std::env::var("JAGGED_BACKEND").unwrap_or_default();
    match (forced.as_str(), Runtime::new()) {
        ("emu", Ok(runtime)) => assert_eq!(runtime.backend_kind(), BackendKind::Emu),
        ("cuda", Ok(runtime)) => assert_eq!(runtime.backend_kind(), BackendKind::Cuda),
        ("cuda", Err(RuntimeError::CudaDriverMissing | RuntimeError::CudaNoDevice)) => {}
        ("bogus", Err(RuntimeError::UnknownBackend { name })) => assert_eq!(name, "bogus"),
        (forced, result) => panic!(
            "JAGGED_BACKEND={forced}: {:?}",
            result.map(|r| r.backend_name())
        ),
    }
}

#[test]
fn jagged_backend_env_is_honoured() {
    let exe = std::env::current_exe().unwrap();
    for forced in ["emu", "cuda", "bogus"] {
        let output = Command::new(&exe)
            .args(["--exact", "backend_env_child", "--quiet"])
            .env(ENV_CHILD, "1")
            .env("JAGGED_BACKEND", forced)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "JAGGED_BACKEND={forced}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn backend_names_parse() {
    assert_eq!("cuda".parse::<BackendKind>().unwrap(), BackendKind::Cuda);
    assert_eq!(" EMU ".parse::<BackendKind>().unwrap(), BackendKind::Emu);
    assert!(matches!(
        "gpu".parse::<BackendKind>(),
        Err(RuntimeError::UnknownBackend { .. })
    ));
}

#[test]
fn buffers_round_trip_with_their_dtype() {
    for mut rt in runtimes() {
        let values = [1.5f32, -2.0, 3.25];
        let buffer = rt.upload(&values).unwrap();
        assert_eq!(
            (buffer.dtype(), buffer.len(), buffer.bytes()),
            (DType::F32, 3, 12)
        );
        assert_eq!(rt.download::<f32>(&buffer).unwrap(), values);
        assert!(matches!(
            rt.download::<i32>(&buffer),
            Err(RuntimeError::DTypeMismatch { .. })
        ));
        rt.write_bytes(&buffer, &jagged_runtime::to_bytes(&[4.0f32, 5.0, 6.0]))
            .unwrap();
        assert_eq!(rt.download::<f32>(&buffer).unwrap(), [4.0, 5.0, 6.0]);
        assert!(matches!(
            rt.write_bytes(&buffer, &[0; 4]),
            Err(RuntimeError::ByteLength { .. })
        ));
        let zeros = rt.alloc(DType::I64, 5).unwrap();
        assert_eq!(rt.download::<i64>(&zeros).unwrap(), [0; 5]);
        let empty = rt.alloc(DType::F32, 0).unwrap();
        assert_eq!(rt.download_bytes(&empty).unwrap(), Vec::<u8>::new());
        assert!(matches!(
            rt.upload_bytes(DType::F32, &[0; 6]),
            Err(RuntimeError::ByteLength { .. })
        ));
        rt.free(buffer.clone()).unwrap();
        assert!(matches!(
            rt.download_bytes(&buffer),
            Err(RuntimeError::UnknownBuffer(_))
        ));
        assert!(matches!(
            rt.free(buffer),
            Err(RuntimeError::UnknownBuffer(_))
        ));
    }
}

/// A jagged tensor `[T, 2]` with sequences of lengths 2, 0, 3, 1.
fn sample_jagged(offset_type: OffsetType) -> JaggedBytes {
    let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    JaggedBytes {
        dtype: DType::F32,
        inner_dims: vec![2],
        values: jagged_runtime::to_bytes(&values),
        offset_type,
        offsets: vec![0, 2, 2, 5, 6],
    }
}

#[test]
fn jagged_tensors_round_trip() {
    let mut rt = emu();
    for offset_type in [OffsetType::I32, OffsetType::I64] {
        let host = sample_jagged(offset_type);
        let device = rt.upload_jagged(&host).unwrap();
        assert_eq!((device.batch(), device.total_rows()), (4, 6));
        assert_eq!(device.offsets().dtype(), offset_type.dtype());
        assert_eq!(device.inner_dims(), [2]);
        assert_eq!(rt.download_jagged(&device).unwrap(), host);
        rt.free_jagged(device).unwrap();
    }
    // B = 0, T = 0 is valid.
    let empty = JaggedBytes {
        dtype: DType::BF16,
        inner_dims: vec![4, 8],
        values: Vec::new(),
        offset_type: OffsetType::I32,
        offsets: vec![0],
    };
    let device = rt.upload_jagged(&empty).unwrap();
    assert_eq!((device.batch(), device.total_rows()), (0, 0));
    assert_eq!(rt.download_jagged(&device).unwrap(), empty);
}

#[test]
fn bad_jagged_tensors_are_rejected_with_the_reason() {
    let mut rt = emu();
    type Breakage = Box<dyn Fn(&mut JaggedBytes)>;
    let cases: [(&str, Breakage); 6] = [
        ("B + 1 >= 1 offsets", Box::new(|j| j.offsets.clear())),
        ("offsets[0] = 1", Box::new(|j| j.offsets[0] = 1)),
        ("non-decreasing", Box::new(|j| j.offsets[2] = 1)),
        ("values", Box::new(|j| *j.offsets.last_mut().unwrap() = 5)),
        ("values", Box::new(|j| j.values.push(0))),
        (
            "does not fit i32",
            Box::new(|j| *j.offsets.last_mut().unwrap() = 1 << 40),
        ),
    ];
    for (expected, break_it) in cases {
        let mut host = sample_jagged(OffsetType::I32);
        break_it(&mut host);
        let err = rt.upload_jagged(&host).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}

#[test]
fn identical_ptx_loads_once() {
    let mut rt = emu();
    let first = rt.load_module(VADD).unwrap();
    let second = rt.load_module(VADD).unwrap();
    assert_eq!(first, second);
    assert_eq!(rt.loaded_modules(), 1);
    let other = rt.load_module(JAGGED_SUM).unwrap();
    assert_ne!(first, other);
    assert_eq!(rt.loaded_modules(), 2);
    assert_eq!(rt.kernel_names(first).unwrap(), ["vadd"]);
}

#[test]
fn vector_add_runs() {
    for mut rt in runtimes() {
        let n = 1000u32; // not a multiple of the block
        let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
        let b: Vec<f32> = (0..n).map(|i| 1000.0 - i as f32).collect();
        let module = rt.load_module(VADD).unwrap();
        let (da, db) = (rt.upload(&a).unwrap(), rt.upload(&b).unwrap());
        let dc = rt.upload(&vec![f32::NAN; n as usize]).unwrap();
        let timing = rt
            .launch_timed(
                module,
                "vadd",
                &LaunchDims::linear(n.div_ceil(128), 128),
                &[da.arg(), db.arg(), dc.arg(), KernelArg::U32(n)],
            )
            .unwrap();
        // Each sum is exact in f32: i/4 + (1000 - i) has at most 12 significant bits.
        let expected: Vec<f32> = (0..n)
            .map(|i| (i as f64 * 0.25 + 1000.0 - i as f64) as f32)
            .collect();
        assert_eq!(
            rt.download::<f32>(&dc).unwrap(),
            expected,
            "{}",
            rt.backend_name()
        );
        if rt.backend_kind() == BackendKind::Emu {
            assert!(timing.warp_instructions.is_some_and(|n| n > 0));
        }
    }
}

#[test]
fn jagged_sum_runs_over_a_device_jagged_tensor() {
    for mut rt in runtimes() {
        let host = sample_jagged(OffsetType::I32);
        let device = rt.upload_jagged(&host).unwrap();
        let (batch, dim) = (device.batch(), 2usize);
        let out = rt.upload(&vec![f32::NAN; batch * dim]).unwrap();
        let module = rt.load_module(JAGGED_SUM).unwrap();
        rt.launch(
            module,
            "jagged_sum",
            &LaunchDims::linear(1, 32),
            &[
                device.values().arg(),
                device.offsets().arg(),
                out.arg(),
                KernelArg::U32(batch as u32),
                KernelArg::U32(dim as u32),
            ],
        )
        .unwrap();
        rt.synchronize().unwrap();
        // Reference: per-sequence loops in f64 over the host tensor.
        let values: Vec<f32> = jagged_runtime::from_bytes("values", &host.values).unwrap();
        let mut expected = vec![0.0f64; batch * dim];
        for b in 0..batch {
            for row in host.offsets[b] as usize..host.offsets[b + 1] as usize {
                for d in 0..dim {
                    expected[b * dim + d] += f64::from(values[row * dim + d]);
                }
            }
        }
        let got = rt.download::<f32>(&out).unwrap();
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(*g) - e).abs() <= 1e-6 * e.abs().max(1.0),
                "out[{i}] = {g}, expected {e}"
            );
        }
        // The empty sequence (b = 1) sums to zero.
        assert_eq!(&got[2..4], &[0.0, 0.0]);
    }
}

#[test]
fn launch_arguments_are_checked_against_the_ptx() {
    let mut rt = emu();
    let module = rt.load_module(VADD).unwrap();
    let buf = rt.alloc(DType::F32, 4).unwrap();
    let dims = LaunchDims::linear(1, 32);
    let launch =
        |rt: &mut Runtime, kernel: &str, args: &[KernelArg]| rt.launch(module, kernel, &dims, args);
    let err = launch(&mut rt, "vadd", &[buf.arg(), buf.arg(), buf.arg()]).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BadArgument { index: 3, .. }),
        "missing argument: {err}"
    );
    let err = launch(
        &mut rt,
        "vadd",
        &[buf.arg(), buf.arg(), buf.arg(), KernelArg::U64(4)],
    )
    .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BadArgument { index: 3, .. }),
        "u64 for a .u32: {err}"
    );
    let err = launch(
        &mut rt,
        "vadd",
        &[KernelArg::U32(0), buf.arg(), buf.arg(), KernelArg::U32(4)],
    )
    .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::BadArgument { index: 0, .. }),
        "u32 for a pointer: {err}"
    );
    let err = launch(&mut rt, "vsub", &[]).unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownKernel { .. }), "{err}");
    let freed = rt.alloc(DType::F32, 4).unwrap();
    let freed_arg = freed.arg();
    rt.free(freed).unwrap();
    let err = launch(
        &mut rt,
        "vadd",
        &[buf.arg(), buf.arg(), freed_arg, KernelArg::U32(4)],
    )
    .unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownBuffer(_)), "{err}");
    assert!(matches!(
        rt.load_module(".entry broken(.param .u64"),
        Err(RuntimeError::BadPtx { .. })
    ));
}

#[test]
fn jagged_ir_host_tensors_round_trip() {
    use jagged_runtime::{DType as D, to_bytes};
    let mut rt = emu();
    let values: Vec<half::bf16> = (0..15)
        .map(|i| half::bf16::from_f32(i as f32 - 7.0))
        .collect();
    // Lengths 3, 0, 2 over inner dims [3]: T = 5 rows of 3.
    let host = jagged_ir::JaggedTensor::from_lengths(
        jagged_ir::TensorData::BF16(values.clone()),
        &[3],
        jagged_ir::TensorData::I64(vec![3, 0, 2]),
    )
    .unwrap();
    let device = rt.upload_jagged_tensor(&host).unwrap();
    assert_eq!(
        (device.batch(), device.total_rows(), device.dtype()),
        (3, 5, D::BF16)
    );
    assert_eq!(device.offset_type(), OffsetType::I64);
    assert_eq!(rt.download::<i64>(device.offsets()).unwrap(), [0, 3, 3, 5]);
    assert_eq!(rt.download::<half::bf16>(device.values()).unwrap(), values);
    assert_eq!(rt.download_jagged_tensor(&device).unwrap(), host);

    // A kernel that breaks the offsets makes the download an error, not a tensor.
    rt.write_bytes(device.offsets(), &to_bytes(&[0i64, 4, 3, 5]))
        .unwrap();
    let err = rt.download_jagged_tensor(&device).unwrap_err();
    assert!(matches!(err, RuntimeError::Tensor(_)), "{err}");

    let dense =
        jagged_ir::DenseTensor::from_f64(D::F32, vec![2, 2], &[1.0, -2.0, 0.5, 4.0]).unwrap();
    let buffer = rt.upload_dense(&dense).unwrap();
    assert_eq!(rt.download_dense(&buffer, &[2, 2]).unwrap(), dense);
    assert!(rt.download_dense(&buffer, &[3]).is_err());
}

#[test]
fn dynamic_shared_memory_above_48_kib_is_usable() {
    const SMEM_ROTATE: &str = include_str!("data/smem_rotate.ptx");
    for mut rt in runtimes() {
        let module = rt.load_module(SMEM_ROTATE).unwrap();
        let out = rt.alloc(DType::I32, 256).unwrap();
        let shared = 100 * 1024u32;
        let base = shared - 1024; // the top kilobyte
        let dims = LaunchDims {
            grid: [1, 1, 1],
            block: [256, 1, 1],
            dynamic_shared_bytes: shared,
        };
        rt.launch(
            module,
            "smem_rotate",
            &dims,
            &[out.arg(), KernelArg::U32(base)],
        )
        .unwrap();
        let expected: Vec<i32> = (0..256).map(|i| 3 * ((i + 1) % 256)).collect();
        assert_eq!(
            rt.download::<i32>(&out).unwrap(),
            expected,
            "{}",
            rt.backend_name()
        );
    }
}
