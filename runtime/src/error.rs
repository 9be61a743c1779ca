//! The runtime's error type.

use crate::backend::{BufferId, ModuleId};
use jagged_ir::DType;

/// Everything that can go wrong loading, allocating, copying or launching.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The CUDA driver library (libcuda.so / nvcuda.dll) could not be loaded.
    #[error("CUDA backend unavailable: the CUDA driver library (libcuda) was not found")]
    CudaDriverMissing,
    /// The driver loaded but reports no CUDA device.
    #[error("CUDA backend unavailable: the driver reports no CUDA device")]
    CudaNoDevice,
    /// The device ordinal asked for is past the last device.
    #[error("CUDA device {ordinal} does not exist (the driver reports {count})")]
    CudaNoSuchDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// The number of devices.
        count: i32,
    },
    /// An operation only the CUDA backend has (a launch on an external
    /// stream), asked of the emulator.
    #[error("{op} needs the CUDA backend (this runtime runs the emulator)")]
    NeedsCuda {
        /// The operation.
        op: &'static str,
    },
    /// A CUDA driver call failed.
    #[error("CUDA {op} failed: {source}")]
    Cuda {
        /// The operation that failed.
        op: &'static str,
        /// The driver's error.
        source: cudarc::driver::DriverError,
    },
    /// A tensor map breaks `cuTensorMapEncodeTiled`'s rules.
    #[error("tensor map: {0}")]
    TensorMap(#[from] jagged_emu::TensorMapError),
    /// The emulator refused an operation.
    #[error("emulator {op} failed: {source}")]
    Emu {
        /// The operation that failed.
        op: &'static str,
        /// The emulator's error.
        source: jagged_emu::EmuError,
    },
    /// `JAGGED_BACKEND` (or a command-line option) names no backend.
    #[error("unknown backend {name:?}: expected `cuda` or `emu`")]
    UnknownBackend {
        /// The name given.
        name: String,
    },
    /// `JAGGED_ARCH` (or another setting) names no arch.
    #[error("{setting}={value:?} names no arch: expected sm_80 or sm_90a")]
    UnknownArch {
        /// Where the value came from (the environment variable's name).
        setting: String,
        /// The value given.
        value: String,
    },
    /// Kernels for an arch the device cannot run were asked for.
    #[error("kernels for {arch} cannot run on {device}: {needs}")]
    ArchUnsupported {
        /// The arch asked for.
        arch: jagged_codegen::Arch,
        /// The device, in words (its name and compute capability).
        device: String,
        /// What the arch needs.
        needs: &'static str,
    },
    /// A buffer handle that this runtime does not own (freed, or another runtime's).
    #[error("unknown device buffer {0}")]
    UnknownBuffer(BufferId),
    /// A module handle that this runtime did not load.
    #[error("unknown module {0}")]
    UnknownModule(ModuleId),
    /// The module has no `.entry` of that name.
    #[error("module {module} has no kernel named {kernel:?}")]
    UnknownKernel {
        /// The module.
        module: ModuleId,
        /// The name asked for.
        kernel: String,
    },
    /// The PTX text could not be loaded.
    #[error("bad PTX: {reason}")]
    BadPtx {
        /// What is wrong with it.
        reason: String,
    },
    /// The launch arguments do not match the kernel's parameter list.
    #[error("kernel {kernel:?}: argument {index}: {reason}")]
    BadArgument {
        /// The kernel.
        kernel: String,
        /// The argument's position (0-based).
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A host byte string whose length does not fit the buffer or dtype.
    #[error("{what}: {bytes} bytes do not fit: {reason}")]
    ByteLength {
        /// Which buffer or argument.
        what: String,
        /// The byte count given.
        bytes: usize,
        /// What was expected.
        reason: String,
    },
    /// A typed access with the wrong element type.
    #[error("{what}: dtype {found} where {expected} was expected")]
    DTypeMismatch {
        /// Which buffer or tensor.
        what: String,
        /// The dtype required.
        expected: DType,
        /// The dtype given.
        found: DType,
    },
    /// Offsets that break the jagged-tensor invariants.
    #[error("offsets: {reason}")]
    BadOffsets {
        /// Which invariant, at which index.
        reason: String,
    },
    /// A host tensor that jagged-ir rejects (bad offsets or lengths).
    #[error(transparent)]
    Tensor(#[from] jagged_ir::TensorError),
}
