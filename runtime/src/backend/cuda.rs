//! The CUDA backend: cudarc's driver API on device 0, one stream.

use super::{BufferId, KernelArg, LaunchDims, LaunchTiming, ModuleId};
use crate::RuntimeError;
use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute_enum, cudaError_enum};
use cudarc::driver::{
    CudaContext, CudaModule, CudaSlice, CudaStream, DriverError, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use jagged_codegen::Arch;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Device 0 of the CUDA driver, its default stream, and the buffers and
/// modules loaded on it.
pub(crate) struct CudaBackend {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    buffers: HashMap<BufferId, CudaSlice<u8>>,
    modules: HashMap<ModuleId, Arc<CudaModule>>,
}

/// The dynamic shared memory a kernel may use without opting in.
const DEFAULT_DYNAMIC_SHARED_LIMIT: u32 = 48 * 1024;

fn driver(op: &'static str) -> impl FnOnce(DriverError) -> RuntimeError {
    move |source| RuntimeError::Cuda { op, source }
}

impl CudaBackend {
    /// Opens device 0; a missing driver library or a machine without a
    /// device is an error, not the panic `CudaContext::new` would raise.
    pub(crate) fn new() -> Result<CudaBackend, RuntimeError> {
        // SAFETY: `is_culib_present` only tries to dlopen the driver library
        // under its usual names and drops it again; loading libcuda runs no
        // code that could break this process's invariants.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(RuntimeError::CudaDriverMissing);
        }
        // A driver without a GPU may fail cuInit itself with NO_DEVICE.
        let count = match CudaContext::device_count() {
            Err(DriverError(cudaError_enum::CUDA_ERROR_NO_DEVICE)) => 0,
            other => other.map_err(driver("device count"))?,
        };
        if count < 1 {
            return Err(RuntimeError::CudaNoDevice);
        }
        let context = CudaContext::new(0).map_err(driver("context creation"))?;
        let stream = context.default_stream();
        Ok(CudaBackend {
            context,
            stream,
            buffers: HashMap::new(),
            modules: HashMap::new(),
        })
    }

    pub(crate) fn device_name(&self) -> String {
        let name = self
            .context
            .name()
            .unwrap_or_else(|_| "unknown CUDA device".to_string());
        match self.context.compute_capability() {
            Ok((major, minor)) => format!("{name} (sm_{major}{minor})"),
            Err(_) => name,
        }
    }

    /// sm_90a on compute capability 9.x (Hopper), else the portable sm_80
    /// (the `a` features of sm_90a do not run on later generations).
    pub(crate) fn preferred_arch(&self) -> Arch {
        match self.context.compute_capability() {
            Ok((9, _)) => Arch::Sm90a,
            _ => Arch::Sm80,
        }
    }

    pub(crate) fn load_module(&mut self, id: ModuleId, ptx: &str) -> Result<(), RuntimeError> {
        // cudarc turns the text into a C string and panics on an interior NUL.
        if ptx.contains('\0') {
            return Err(RuntimeError::BadPtx {
                reason: "the text contains a NUL byte".to_string(),
            });
        }
        let module = self
            .context
            .load_module(Ptx::from_src(ptx))
            .map_err(driver("module load (cuModuleLoadData)"))?;
        self.modules.insert(id, module);
        Ok(())
    }

    pub(crate) fn alloc(&mut self, id: BufferId, bytes: usize) -> Result<(), RuntimeError> {
        // At least one byte: a zero-byte allocation is an error for the driver.
        let slice = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(driver("alloc"))?;
        self.buffers.insert(id, slice);
        Ok(())
    }

    pub(crate) fn upload(&mut self, id: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.alloc(id, bytes.len())?;
        self.write(id, bytes)
    }

    pub(crate) fn write(&mut self, id: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        let slice = self
            .buffers
            .get_mut(&id)
            .ok_or(RuntimeError::UnknownBuffer(id))?;
        if bytes.is_empty() {
            return Ok(());
        }
        // `memcpy_htod` asserts that the destination is long enough.
        if bytes.len() > slice.len() {
            return Err(RuntimeError::ByteLength {
                what: id.to_string(),
                bytes: bytes.len(),
                reason: format!("the buffer holds {} bytes", slice.len()),
            });
        }
        let mut view = slice.slice_mut(..bytes.len());
        self.stream
            .memcpy_htod(bytes, &mut view)
            .map_err(driver("copy to device"))
    }

    pub(crate) fn read(&mut self, id: BufferId, len: usize) -> Result<Vec<u8>, RuntimeError> {
        let slice = self
            .buffers
            .get(&id)
            .ok_or(RuntimeError::UnknownBuffer(id))?;
        if len > slice.len() {
            return Err(RuntimeError::ByteLength {
                what: id.to_string(),
                bytes: len,
                reason: format!("the buffer holds {} bytes", slice.len()),
            });
        }
        let mut host = vec![0u8; len];
        if len > 0 {
            self.stream
                .memcpy_dtoh(&slice.slice(..len), &mut host)
                .map_err(driver("copy to host"))?;
        }
        self.synchronize()?;
        Ok(host)
    }

    pub(crate) fn free(&mut self, id: BufferId) -> Result<(), RuntimeError> {
        // Dropping the slice frees it once the stream's work on it is done.
        self.buffers
            .remove(&id)
            .map(drop)
            .ok_or(RuntimeError::UnknownBuffer(id))
    }

    /// Submits a launch to the stream, without waiting.
    pub(crate) fn launch(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), RuntimeError> {
        let loaded = self
            .modules
            .get(&module)
            .ok_or(RuntimeError::UnknownModule(module))?;
        if kernel.contains('\0') {
            return Err(RuntimeError::UnknownKernel {
                module,
                kernel: kernel.to_string(),
            });
        }
        let function = loaded
            .load_function(kernel)
            .map_err(driver("function lookup (cuModuleGetFunction)"))?;
        // Above 48 KiB a kernel must opt in to dynamic shared memory
        // (Ampere and Hopper allow up to 163 / 227 KiB per block).
        if dims.dynamic_shared_bytes > DEFAULT_DYNAMIC_SHARED_LIMIT {
            let bytes = i32::try_from(dims.dynamic_shared_bytes).unwrap_or(i32::MAX);
            function
                .set_attribute(
                    CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes,
                )
                .map_err(driver("dynamic shared memory opt-in"))?;
        }
        // The builder borrows every argument (scalars from `args`, buffers
        // from the buffer table) until the launch is submitted.
        let mut builder = self.stream.launch_builder(&function);
        for arg in args {
            match arg {
                KernelArg::U32(v) => builder.arg(v),
                KernelArg::I32(v) => builder.arg(v),
                KernelArg::U64(v) => builder.arg(v),
                KernelArg::I64(v) => builder.arg(v),
                KernelArg::F32(v) => builder.arg(v),
                KernelArg::F64(v) => builder.arg(v),
                KernelArg::Buffer(id) => builder.arg(
                    self.buffers
                        .get(id)
                        .ok_or(RuntimeError::UnknownBuffer(*id))?,
                ),
            };
        }
        let config = LaunchConfig {
            grid_dim: (dims.grid[0], dims.grid[1], dims.grid[2]),
            block_dim: (dims.block[0], dims.block[1], dims.block[2]),
            shared_mem_bytes: dims.dynamic_shared_bytes,
        };
        // SAFETY: the runtime checked before this call that `args` has the
        // count and byte sizes of the kernel's `.param` list (read from its
        // PTX), so the driver reads every parameter from a live value of the
        // right size; every buffer argument is a live allocation of this
        // context, kept borrowed until the launch is submitted. What the
        // kernel then does with the addresses (staying inside each buffer) is
        // the guarantee of the caller of `Runtime::launch`, as for any CUDA
        // launch: a fault is reported by the driver as an error at the next
        // synchronization, never as host memory corruption.
        unsafe { builder.launch(config) }.map_err(driver("launch"))?;
        Ok(())
    }

    /// Launches between two timing events and waits for the end one.
    pub(crate) fn launch_timed(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<LaunchTiming, RuntimeError> {
        let start = self
            .stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver("event record"))?;
        self.launch(module, kernel, dims, args)?;
        let end = self
            .stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver("event record"))?;
        let ms = start.elapsed_ms(&end).map_err(driver("kernel execution"))?;
        Ok(LaunchTiming {
            elapsed: Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3),
            warp_instructions: None,
        })
    }

    pub(crate) fn synchronize(&mut self) -> Result<(), RuntimeError> {
        self.stream.synchronize().map_err(driver("synchronize"))
    }
}
