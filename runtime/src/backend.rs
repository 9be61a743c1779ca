//! The two places a kernel can run: a CUDA GPU through the driver API, or the
//! PTX emulator on the CPU. Both take the same PTX text, the same buffers and
//! the same arguments, which is what makes the emulator's results evidence
//! about the GPU's.

mod cuda;
mod emu;

pub(crate) use cuda::CudaBackend;
pub(crate) use emu::EmuBackend;

use crate::RuntimeError;
use jagged_codegen::Arch;
use jagged_emu::DevicePtr;
use jagged_emu::tensormap::{
    TensorMapDataType, TensorMapFloatOobFill, TensorMapInterleave, TensorMapL2Promotion,
    TensorMapSwizzle,
};
use jagged_emu::{TensorMap, TensorMapError};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which backend runs the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// A CUDA GPU, through the driver API (cudarc).
    Cuda,
    /// The PTX emulator (jagged-emu) on the CPU.
    Emu,
}

impl BackendKind {
    /// The name used by `JAGGED_BACKEND` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Emu => "emu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = RuntimeError;
    fn from_str(name: &str) -> Result<BackendKind, RuntimeError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cuda" => Ok(BackendKind::Cuda),
            "emu" => Ok(BackendKind::Emu),
            _ => Err(RuntimeError::UnknownBackend {
                name: name.to_string(),
            }),
        }
    }
}

/// A device buffer's handle; unique across all runtimes of the process, so a
/// handle used with the wrong runtime is an error, not another buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferId(u64);

impl BufferId {
    pub(crate) fn fresh() -> BufferId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        BufferId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buf{}", self.0)
    }
}

/// A loaded module's handle: an index into the runtime's module list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModuleId(pub(crate) usize);

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "module{}", self.0)
    }
}

/// One kernel argument, by value; a buffer is passed as its device address.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg {
    /// `.u32`
    U32(u32),
    /// `.s32`
    I32(i32),
    /// `.u64`
    U64(u64),
    /// `.s64`
    I64(i64),
    /// `.f32`
    F32(f32),
    /// `.f64`
    F64(f64),
    /// A device buffer's address (`.u64`).
    Buffer(BufferId),
    /// A TMA tensor map passed by value (a `.param .align 64 .b8 [128]` parameter),
    /// encoded for this runtime's device by [`crate::Runtime::tensor_map`].
    TensorMap(TensorMapBytes),
}

/// The 128 bytes of an encoded tensor map (CUDA's `CUtensorMap`, 64-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct TensorMapBytes(pub [u8; jagged_emu::tensormap::TENSOR_MAP_BYTES]);

/// A tiled tensor map over a buffer: `cuTensorMapEncodeTiled`'s arguments less the
/// address (interleave none, L2 promotion none). Dimensions are innermost first;
/// `global_strides` are the byte strides of dimensions 1...
#[derive(Clone, Debug, PartialEq)]
pub struct TiledMap {
    /// Element type.
    pub data_type: TensorMapDataType,
    /// Global dimensions, innermost first (the rank is their count).
    pub global_dim: Vec<u64>,
    /// Byte strides of dimensions 1...
    pub global_strides: Vec<u64>,
    /// Box dimensions.
    pub box_dim: Vec<u32>,
    /// Element strides.
    pub element_strides: Vec<u32>,
    /// Shared-memory swizzle.
    pub swizzle: TensorMapSwizzle,
    /// NaN out-of-bounds fill (else zeros).
    pub nan_fill: bool,
}

impl TiledMap {
    /// The out-of-bounds fill mode.
    pub fn oob_fill(&self) -> TensorMapFloatOobFill {
        if self.nan_fill {
            TensorMapFloatOobFill::NanRequestZeroFma
        } else {
            TensorMapFloatOobFill::None
        }
    }

    /// The map over the tensor at `address`, encoded as the emulator reads it (and
    /// checked against `cuTensorMapEncodeTiled`'s rules).
    pub fn encode_emu(&self, address: u64) -> Result<TensorMap, TensorMapError> {
        TensorMap::encode_tiled(
            self.data_type,
            self.global_dim.len() as u32,
            address,
            &self.global_dim,
            &self.global_strides,
            &self.box_dim,
            &self.element_strides,
            TensorMapInterleave::None,
            self.swizzle,
            TensorMapL2Promotion::None,
            self.oob_fill(),
        )
    }
}

impl KernelArg {
    /// The number of bytes the kernel parameter must have.
    pub fn size(&self) -> usize {
        match self {
            KernelArg::U32(_) | KernelArg::I32(_) | KernelArg::F32(_) => 4,
            KernelArg::U64(_) | KernelArg::I64(_) | KernelArg::F64(_) | KernelArg::Buffer(_) => 8,
            KernelArg::TensorMap(map) => map.0.len(),
        }
    }

    /// The emulator's form of this argument, `ptr` giving a buffer's address:
    /// the emulator backend and `jagc emu` pass arguments to jagged-emu.
    pub fn to_emu<E>(
        self,
        ptr: impl FnOnce(BufferId) -> Result<DevicePtr, E>,
    ) -> Result<jagged_emu::KernelArg, E> {
        Ok(match self {
            KernelArg::U32(v) => jagged_emu::KernelArg::U32(v),
            KernelArg::I32(v) => jagged_emu::KernelArg::I32(v),
            KernelArg::U64(v) => jagged_emu::KernelArg::U64(v),
            KernelArg::I64(v) => jagged_emu::KernelArg::I64(v),
            KernelArg::F32(v) => jagged_emu::KernelArg::F32(v),
            KernelArg::F64(v) => jagged_emu::KernelArg::F64(v),
            KernelArg::Buffer(id) => jagged_emu::KernelArg::Ptr(ptr(id)?),
            KernelArg::TensorMap(map) => jagged_emu::KernelArg::TensorMap(TensorMap(map.0)),
        })
    }
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    /// CTAs in x, y, z.
    pub grid: [u32; 3],
    /// Threads per CTA in x, y, z.
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory per CTA.
    pub dynamic_shared_bytes: u32,
}

impl LaunchDims {
    /// A 1-D launch of `grid` CTAs of `block` threads, no dynamic shared memory.
    pub fn linear(grid: u32, block: u32) -> LaunchDims {
        LaunchDims {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            dynamic_shared_bytes: 0,
        }
    }
}

/// What a timed launch measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchTiming {
    /// The kernel's duration: CUDA events around it on a GPU, wall time of
    /// the emulation on the CPU.
    pub elapsed: Duration,
    /// Warp instructions executed (emulator only).
    pub warp_instructions: Option<u64>,
}

/// One kernel launch on the emulator and what its cost model counted: an entry of
/// [`crate::Runtime::take_launch_log`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRecord {
    /// The kernel's entry name.
    pub entry: String,
    /// Its grid, block and dynamic shared memory.
    pub dims: LaunchDims,
    /// The emulator's counts for this launch alone (`launches` is 1); summed
    /// over the launches, they are [`crate::Runtime::take_emulator_profile`]'s.
    pub profile: jagged_emu::Profile,
}

/// A backend, chosen at run time. Handles (buffers, modules) are the
/// runtime's; each backend maps them to its own objects.
pub(crate) enum Backend {
    /// A CUDA GPU.
    Cuda(CudaBackend),
    /// The emulator.
    Emu(EmuBackend),
}

impl Backend {
    /// Opens a backend of `kind` (CUDA: device 0), with an error (never a
    /// panic) if it is unavailable.
    pub(crate) fn open(kind: BackendKind) -> Result<Backend, RuntimeError> {
        Ok(match kind {
            BackendKind::Cuda => Backend::Cuda(CudaBackend::on_device(0)?),
            BackendKind::Emu => Backend::Emu(EmuBackend::new()),
        })
    }

    /// Which backend this is.
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            Backend::Cuda(_) => BackendKind::Cuda,
            Backend::Emu(_) => BackendKind::Emu,
        }
    }

    /// The emulator's cost model summed over its launches (see
    /// [`crate::Runtime::emulator_profile`]); `None` on CUDA.
    pub(crate) fn emu_profile(&self) -> Option<jagged_emu::Profile> {
        match self {
            Backend::Cuda(_) => None,
            Backend::Emu(emu) => Some(emu.profile()),
        }
    }

    /// [`Backend::emu_profile`], restarting the sum.
    pub(crate) fn take_emu_profile(&mut self) -> Option<jagged_emu::Profile> {
        match self {
            Backend::Cuda(_) => None,
            Backend::Emu(emu) => Some(emu.take_profile()),
        }
    }

    /// The emulator's launches since the last call, oldest first (see
    /// [`crate::Runtime::take_launch_log`]); `None` on CUDA.
    pub(crate) fn take_launch_log(&mut self) -> Option<Vec<LaunchRecord>> {
        match self {
            Backend::Cuda(_) => None,
            Backend::Emu(emu) => Some(emu.take_launch_log()),
        }
    }

    /// A description of the device, for reports.
    pub(crate) fn device_name(&self) -> String {
        match self {
            Backend::Cuda(cuda) => cuda.device_name(),
            Backend::Emu(_) => "PTX emulator (CPU)".to_string(),
        }
    }

    /// The architecture to compile for on this device by default (on the
    /// emulator sm_80, though it runs sm_90a code too).
    pub(crate) fn preferred_arch(&self) -> Arch {
        match self {
            Backend::Cuda(cuda) => cuda.preferred_arch(),
            Backend::Emu(_) => Arch::Sm80,
        }
    }

    /// Whether this device runs code compiled for `arch` (the emulator runs all).
    pub(crate) fn check_arch(&self, arch: Arch) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.check_arch(arch),
            Backend::Emu(_) => Ok(()),
        }
    }

    /// Loads PTX text; the runtime stores the module under `id`.
    pub(crate) fn load_module(&mut self, id: ModuleId, ptx: &str) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.load_module(id, ptx),
            Backend::Emu(emu) => emu.load_module(id, ptx),
        }
    }

    /// Allocates `bytes` zeroed bytes.
    pub(crate) fn alloc(&mut self, id: BufferId, bytes: usize) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.alloc(id, bytes),
            Backend::Emu(emu) => emu.alloc(id, bytes),
        }
    }

    /// Allocates a buffer holding `bytes`.
    pub(crate) fn upload(&mut self, id: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.upload(id, bytes),
            Backend::Emu(emu) => emu.upload(id, bytes),
        }
    }

    /// Overwrites the start of buffer `id` with `bytes` (the caller checked the length).
    pub(crate) fn write(&mut self, id: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.write(id, bytes),
            Backend::Emu(emu) => emu.write(id, bytes),
        }
    }

    /// The first `len` bytes of buffer `id`, after all launched work finished.
    pub(crate) fn read(&mut self, id: BufferId, len: usize) -> Result<Vec<u8>, RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.read(id, len),
            Backend::Emu(emu) => emu.read(id, len),
        }
    }

    /// The device address of buffer `id` (what a tensor map over it
    /// records).
    pub(crate) fn address(&self, id: BufferId) -> Result<u64, RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.address(id),
            Backend::Emu(emu) => Ok(emu.ptr(id)?.0),
        }
    }

    /// A tensor map over the device address `address` (memory the runtime
    /// need not own), encoded for this device.
    pub(crate) fn tensor_map_at(
        &mut self,
        address: u64,
        map: &TiledMap,
    ) -> Result<KernelArg, RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.tensor_map_at(address, map),
            Backend::Emu(_) => EmuBackend::tensor_map_at(address, map),
        }
    }

    /// Frees buffer `id`.
    pub(crate) fn free(&mut self, id: BufferId) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.free(id),
            Backend::Emu(emu) => emu.free(id),
        }
    }

    /// Submits `kernel` of `module` (the emulator runs it to completion).
    /// The runtime has checked the arguments against the kernel's signature.
    pub(crate) fn launch(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.launch(module, kernel, dims, args),
            Backend::Emu(emu) => emu.launch(module, kernel, dims, args).map(drop),
        }
    }

    /// Runs `kernel` of `module` to completion and measures it.
    pub(crate) fn launch_timed(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<LaunchTiming, RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.launch_timed(module, kernel, dims, args),
            Backend::Emu(emu) => emu.launch(module, kernel, dims, args),
        }
    }

    /// The CUDA backend, or [`RuntimeError::NeedsCuda`] for `op`.
    pub(crate) fn cuda(&mut self, op: &'static str) -> Result<&mut CudaBackend, RuntimeError> {
        match self {
            Backend::Cuda(cuda) => Ok(cuda),
            Backend::Emu(_) => Err(RuntimeError::NeedsCuda { op }),
        }
    }

    /// Waits until all launched work has finished.
    pub(crate) fn synchronize(&mut self) -> Result<(), RuntimeError> {
        match self {
            Backend::Cuda(cuda) => cuda.synchronize(),
            Backend::Emu(_) => Ok(()),
        }
    }
}
