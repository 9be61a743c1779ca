//! The CUDA backend: cudarc's driver API on one device (the primary context,
//! as PyTorch and the CUDA runtime use it), one stream; and launches on
//! memory and streams the runtime does not own (`launch_external`).

use super::{BufferId, KernelArg, LaunchDims, LaunchTiming, ModuleId, TensorMapBytes, TiledMap};
use crate::RuntimeError;
use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute_enum, cudaError_enum};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    DriverError, LaunchConfig, PushKernelArg, result, sys,
};
use cudarc::nvrtc::Ptx;
use jagged_codegen::Arch;
use jagged_emu::tensormap::{TensorMapDataType, TensorMapSwizzle};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

/// A device of the CUDA driver (its primary context), its default stream,
/// and the buffers and modules loaded on it.
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
    /// Opens device `ordinal` (retaining its primary context); a missing
    /// driver library, a machine without a device or an ordinal past the
    /// last device is an error, not the panic `CudaContext::new` would raise.
    pub(crate) fn on_device(ordinal: usize) -> Result<CudaBackend, RuntimeError> {
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
        if usize::try_from(count).map_or(true, |count| ordinal >= count) {
            return Err(RuntimeError::CudaNoSuchDevice { ordinal, count });
        }
        let context = CudaContext::new(ordinal).map_err(driver("context creation"))?;
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

    /// Whether this device runs `arch`'s code: sm_80 on compute capability
    /// 8.0 and later, sm_90a (its `a` features) on 9.x only.
    pub(crate) fn check_arch(&self, arch: Arch) -> Result<(), RuntimeError> {
        let (major, _) = self
            .context
            .compute_capability()
            .map_err(driver("compute capability query"))?;
        let (runs, needs) = match arch {
            Arch::Sm80 => (major >= 8, "sm_80 needs compute capability 8.0 or later"),
            Arch::Sm90a => (major == 9, "sm_90a needs compute capability 9.0"),
        };
        if runs {
            Ok(())
        } else {
            Err(RuntimeError::ArchUnsupported {
                arch,
                device: self.device_name(),
                needs,
            })
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

    /// The device address of buffer `id`. A tensor map records it; the
    /// kernels that read through the map are ordered on the stream like
    /// any other use of the buffer.
    pub(crate) fn address(&self, id: BufferId) -> Result<u64, RuntimeError> {
        let slice = self
            .buffers
            .get(&id)
            .ok_or(RuntimeError::UnknownBuffer(id))?;
        let (address, sync) = slice.device_ptr(&self.stream);
        drop(sync);
        Ok(address)
    }

    /// A tensor map over the device address `address` of this context (a
    /// runtime buffer's, [`Self::address`], or memory the runtime does not
    /// own: a PyTorch tensor's), encoded on the host by the driver's
    /// `cuTensorMapEncodeTiled`, which only records the address (no device
    /// access, no synchronization). The map is first checked by the
    /// emulator's encoder (the driver's rules), so a bad map is a typed
    /// error, not a driver code. Triton's launcher
    /// (`fill_tma_descriptor_tiled`) makes the same call: dims and box
    /// innermost first, byte strides of dimensions 1.., element strides 1,
    /// interleave none; it asks for L2 promotion 128B, which changes no
    /// result (none here).
    pub(crate) fn tensor_map_at(
        &mut self,
        address: u64,
        map: &TiledMap,
    ) -> Result<KernelArg, RuntimeError> {
        use sys::CUtensorMapDataType_enum as D;
        use sys::CUtensorMapSwizzle_enum as S;
        map.encode_emu(address)?;
        let data_type = match map.data_type {
            TensorMapDataType::Uint8 => D::CU_TENSOR_MAP_DATA_TYPE_UINT8,
            TensorMapDataType::Uint16 => D::CU_TENSOR_MAP_DATA_TYPE_UINT16,
            TensorMapDataType::Uint32 => D::CU_TENSOR_MAP_DATA_TYPE_UINT32,
            TensorMapDataType::Int32 => D::CU_TENSOR_MAP_DATA_TYPE_INT32,
            TensorMapDataType::Uint64 => D::CU_TENSOR_MAP_DATA_TYPE_UINT64,
            TensorMapDataType::Int64 => D::CU_TENSOR_MAP_DATA_TYPE_INT64,
            TensorMapDataType::Float16 => D::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
            TensorMapDataType::Float32 => D::CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
            TensorMapDataType::Float64 => D::CU_TENSOR_MAP_DATA_TYPE_FLOAT64,
            TensorMapDataType::Bfloat16 => D::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            TensorMapDataType::Float32Ftz => D::CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ,
            TensorMapDataType::Tfloat32 => D::CU_TENSOR_MAP_DATA_TYPE_TFLOAT32,
            TensorMapDataType::Tfloat32Ftz => D::CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ,
        };
        let swizzle = match map.swizzle {
            TensorMapSwizzle::None => S::CU_TENSOR_MAP_SWIZZLE_NONE,
            TensorMapSwizzle::B32 => S::CU_TENSOR_MAP_SWIZZLE_32B,
            TensorMapSwizzle::B64 => S::CU_TENSOR_MAP_SWIZZLE_64B,
            TensorMapSwizzle::B128 => S::CU_TENSOR_MAP_SWIZZLE_128B,
        };
        let oob_fill = if map.nan_fill {
            sys::CUtensorMapFloatOOBfill_enum::CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA
        } else {
            sys::CUtensorMapFloatOOBfill_enum::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE
        };
        let mut encoded = sys::CUtensorMap { opaque: [0; 16] };
        // The driver call acts on the thread's current context.
        self.context
            .bind_to_thread()
            .map_err(driver("context bind"))?;
        // SAFETY: `encoded` is a live, writable, 64-byte-aligned CUtensorMap; the
        // dimension, stride, box and element-stride arrays are live for the call and
        // have the lengths the rank (their count, 1..=5) requires, which
        // `encode_emu` checked above together with the driver's other rules; the
        // driver only records the address (a launch that reads through the map
        // must pass live memory, as with any address).
        unsafe {
            sys::cuTensorMapEncodeTiled(
                &mut encoded,
                data_type,
                map.global_dim.len() as u32,
                address as *mut c_void,
                map.global_dim.as_ptr(),
                map.global_strides.as_ptr(),
                map.box_dim.as_ptr(),
                map.element_strides.as_ptr(),
                sys::CUtensorMapInterleave_enum::CU_TENSOR_MAP_INTERLEAVE_NONE,
                swizzle,
                sys::CUtensorMapL2promotion_enum::CU_TENSOR_MAP_L2_PROMOTION_NONE,
                oob_fill,
            )
        }
        .result()
        .map_err(driver("tensor map (cuTensorMapEncodeTiled)"))?;
        let mut bytes = [0u8; jagged_emu::tensormap::TENSOR_MAP_BYTES];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(encoded.opaque) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        Ok(KernelArg::TensorMap(TensorMapBytes(bytes)))
    }

    pub(crate) fn free(&mut self, id: BufferId) -> Result<(), RuntimeError> {
        // Dropping the slice frees it once the stream's work on it is done.
        self.buffers
            .remove(&id)
            .map(drop)
            .ok_or(RuntimeError::UnknownBuffer(id))
    }

    /// `kernel` of `module`, opted in to `dims`' dynamic shared memory.
    fn function(
        &self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
    ) -> Result<CudaFunction, RuntimeError> {
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
        Ok(function)
    }

    /// Submits a launch to the stream, without waiting.
    pub(crate) fn launch(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), RuntimeError> {
        let function = self.function(module, kernel, dims)?;
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
                KernelArg::TensorMap(map) => builder.arg(map),
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

    /// Submits `kernel` of `module` to `stream`, a stream of this device's
    /// primary context that the runtime does not own (PyTorch's, say), with
    /// device addresses the runtime does not own passed as
    /// [`KernelArg::U64`] and tensor maps over them as
    /// [`KernelArg::TensorMap`] ([`CudaBackend::tensor_map_at`]); without
    /// waiting. A launch of no CTAs (a zero grid
    /// dimension) does nothing and is not submitted: the driver refuses it.
    ///
    /// # Safety
    ///
    /// `stream` must be a live stream of this device's primary context (or
    /// null, the legacy default stream), and every address among `args` must
    /// be device memory of that context (as must the memory every tensor map
    /// among them covers) that stays allocated until the
    /// kernel has finished on `stream` and holds what the kernel reads and
    /// writes there (the runtime checked only the parameters' count and sizes).
    pub(crate) unsafe fn launch_external(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
        stream: sys::CUstream,
    ) -> Result<(), RuntimeError> {
        if dims.grid.contains(&0) {
            return Ok(());
        }
        // The raw calls below act on the thread's current context.
        self.context
            .bind_to_thread()
            .map_err(driver("context bind"))?;
        let function = self.function(module, kernel, dims)?;
        let mut slots: Vec<ParamSlot> = Vec::with_capacity(args.len());
        for (index, arg) in args.iter().enumerate() {
            // The runtime's buffers are ordered on its own stream, not on
            // the caller's: not mixed into an external launch.
            let slot = param_slot(arg).ok_or_else(|| RuntimeError::BadArgument {
                kernel: kernel.to_string(),
                index,
                reason: "a runtime buffer in a launch on an external stream (pass \
                         device addresses as u64)"
                    .to_string(),
            })?;
            slots.push(slot);
        }
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(ParamSlot::as_ptr).collect();
        // SAFETY: `function` is a kernel of a module loaded in this context,
        // which is bound to the thread; `params` points at one live slot per
        // parameter holding its value from the first byte (8 bytes for the
        // scalars and addresses, the 128 bytes of a tensor map, 64-byte
        // aligned; the runtime checked the count and each parameter's size),
        // alive until the call returns, which is when the driver has copied
        // them. The stream and the addresses (and those the maps hold) are
        // this function's caller's guarantee (see `# Safety`).
        unsafe {
            result::launch_kernel(
                function.cu_function(),
                (dims.grid[0], dims.grid[1], dims.grid[2]),
                (dims.block[0], dims.block[1], dims.block[2]),
                dims.dynamic_shared_bytes,
                stream,
                &mut params,
            )
        }
        .map_err(driver("launch (cuLaunchKernel)"))
    }
}

/// The bytes `cuLaunchKernel` reads for one parameter of an external
/// launch.
enum ParamSlot {
    /// A scalar or an address: the value's native bytes from the start of
    /// an 8-byte slot (a 4-byte parameter reads the first four).
    Word([u8; 8]),
    /// A tensor map, by value (boxed: its address stays put as the slots
    /// grow).
    Map(Box<TensorMapBytes>),
}

impl ParamSlot {
    /// Where the driver reads the parameter.
    fn as_ptr(&mut self) -> *mut c_void {
        match self {
            ParamSlot::Word(word) => word.as_mut_ptr().cast(),
            ParamSlot::Map(map) => map.0.as_mut_ptr().cast(),
        }
    }
}

/// A kernel argument's slot for an external launch. `None` for a runtime
/// buffer.
fn param_slot(arg: &KernelArg) -> Option<ParamSlot> {
    let mut slot = [0u8; 8];
    match *arg {
        KernelArg::U32(v) => slot[..4].copy_from_slice(&v.to_ne_bytes()),
        KernelArg::I32(v) => slot[..4].copy_from_slice(&v.to_ne_bytes()),
        KernelArg::F32(v) => slot[..4].copy_from_slice(&v.to_ne_bytes()),
        KernelArg::U64(v) => slot = v.to_ne_bytes(),
        KernelArg::I64(v) => slot = v.to_ne_bytes(),
        KernelArg::F64(v) => slot = v.to_ne_bytes(),
        KernelArg::TensorMap(map) => return Some(ParamSlot::Map(Box::new(map))),
        KernelArg::Buffer(_) => return None,
    }
    Some(ParamSlot::Word(slot))
}

// SAFETY: a `TensorMapBytes` is plain bytes (no pointers the driver would follow, no
// padding: `repr(C)`, 128 bytes, 64-byte aligned like `CUtensorMap`), which the driver
// copies as the by-value 128-byte kernel parameter it is passed for.
unsafe impl DeviceRepr for TensorMapBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_start_at_the_slot() {
        let word = |arg| match param_slot(&arg) {
            Some(ParamSlot::Word(w)) => Some(w),
            _ => None,
        };
        let first4 = |arg| word(arg).map(|s| [s[0], s[1], s[2], s[3]]);
        assert_eq!(first4(KernelArg::U32(7)), Some(7u32.to_ne_bytes()));
        assert_eq!(first4(KernelArg::I32(-2)), Some((-2i32).to_ne_bytes()));
        assert_eq!(first4(KernelArg::F32(1.5)), Some(1.5f32.to_ne_bytes()));
        let addr = 0x7f00_dead_beef_0000u64;
        assert_eq!(word(KernelArg::U64(addr)), Some(addr.to_ne_bytes()));
        assert_eq!(word(KernelArg::F64(-0.25)), Some((-0.25f64).to_ne_bytes()));
        assert!(param_slot(&KernelArg::Buffer(BufferId::fresh())).is_none());
        // A tensor map's 128 bytes, read in place from a 64-byte-aligned slot.
        let bytes = std::array::from_fn(|i| i as u8);
        let mut slot = param_slot(&KernelArg::TensorMap(TensorMapBytes(bytes))).expect("slot");
        let at = slot.as_ptr();
        assert_eq!(at as usize % 64, 0);
        // SAFETY: `at` points at the slot's 128 live bytes (`slot` is alive).
        let read = unsafe { std::slice::from_raw_parts(at.cast::<u8>(), 128) };
        assert_eq!(read, &bytes[..]);
    }
}
