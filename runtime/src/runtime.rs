//! [`Runtime`]: the one interface over both backends.

use crate::RuntimeError;
use crate::backend::{
    Backend, BackendKind, BufferId, CudaBackend, KernelArg, LaunchDims, LaunchRecord, LaunchTiming,
    ModuleId, TiledMap,
};
use crate::params::EntrySignatures;
use crate::tensor::{
    DeviceBuffer, DeviceJagged, Element, JaggedBytes, OffsetType, from_bytes, tensor_bytes,
    tensor_data, to_bytes,
};
use cudarc::driver::sys;
use jagged_codegen::Arch;
use jagged_ir::{DType, DenseTensor, JaggedTensor};
use std::collections::{HashMap, HashSet};

/// The environment variable that forces a backend (`cuda` or `emu`) in [`Runtime::new`].
pub const BACKEND_ENV: &str = "JAGGED_BACKEND";

/// The environment variable that sets the arch kernels are compiled for
/// (`sm_80` or `sm_90a`) in every runtime opened while it is set: see
/// [`Runtime::set_arch`]. Unset or empty: the device's arch.
pub const ARCH_ENV: &str = "JAGGED_ARCH";

/// The arch named `value` (`sm_80` or `sm_90a`, any case); `setting` names
/// where the value came from (such as [`ARCH_ENV`]) for the error.
pub fn parse_arch(setting: &str, value: &str) -> Result<Arch, RuntimeError> {
    Arch::from_name(&value.trim().to_ascii_lowercase()).ok_or_else(|| RuntimeError::UnknownArch {
        setting: setting.to_string(),
        value: value.to_string(),
    })
}

/// The arch [`ARCH_ENV`] sets, `None` when it is unset or empty.
pub fn arch_from_env() -> Result<Option<Arch>, RuntimeError> {
    match std::env::var_os(ARCH_ENV).filter(|v| !v.is_empty()) {
        Some(value) => parse_arch(ARCH_ENV, &value.to_string_lossy()).map(Some),
        None => Ok(None),
    }
}

/// A device (GPU or emulator) with its buffers and loaded modules. Loading
/// the same PTX text twice returns the module loaded the first time.
pub struct Runtime {
    backend: Backend,
    /// The arch kernels are compiled for when not the device's ([`Runtime::set_arch`]).
    arch: Option<Arch>,
    /// Why CUDA was not chosen, when [`Runtime::new`] fell back to the emulator.
    fallback_reason: Option<String>,
    /// The parameter lists of each loaded module, indexed by `ModuleId`.
    modules: Vec<EntrySignatures>,
    /// blake3 of a module's PTX text to its handle.
    modules_by_ptx: HashMap<[u8; 32], ModuleId>,
    /// Live buffers.
    buffers: HashSet<BufferId>,
    /// Compiled graphs loaded here, the kernel cache and counters ([`Runtime::run_graph`]).
    pub(crate) graphs: crate::launcher::GraphState,
}

impl Runtime {
    /// CUDA when a driver and a device are present, else the emulator;
    /// `JAGGED_BACKEND=cuda|emu` forces one (an error if unavailable). Like
    /// every constructor, it applies [`ARCH_ENV`] when set.
    pub fn new() -> Result<Runtime, RuntimeError> {
        if let Some(name) = std::env::var_os(BACKEND_ENV).filter(|v| !v.is_empty()) {
            let kind = name.to_string_lossy().parse::<BackendKind>()?;
            return Runtime::with_backend(kind);
        }
        match Runtime::with_backend(BackendKind::Cuda) {
            Ok(runtime) => Ok(runtime),
            Err(cuda_error) => {
                let mut runtime = Runtime::with_backend(BackendKind::Emu)?;
                runtime.fallback_reason = Some(cuda_error.to_string());
                Ok(runtime)
            }
        }
    }

    /// The backend `kind` (CUDA: device 0), or an error saying why it is
    /// unavailable.
    pub fn with_backend(kind: BackendKind) -> Result<Runtime, RuntimeError> {
        Runtime::on(Backend::open(kind)?)
    }

    /// The CUDA backend on device `ordinal` (its primary context, the one
    /// PyTorch and the CUDA runtime use), or an error saying why it is
    /// unavailable.
    pub fn with_cuda_device(ordinal: usize) -> Result<Runtime, RuntimeError> {
        Runtime::on(Backend::Cuda(CudaBackend::on_device(ordinal)?))
    }

    /// A runtime on `backend`, compiling for the arch of [`ARCH_ENV`] if set.
    fn on(backend: Backend) -> Result<Runtime, RuntimeError> {
        let mut runtime = Runtime {
            backend,
            arch: None,
            fallback_reason: None,
            modules: Vec::new(),
            modules_by_ptx: HashMap::new(),
            buffers: HashSet::new(),
            graphs: Default::default(),
        };
        runtime.set_arch(arch_from_env()?)?;
        Ok(runtime)
    }

    /// Compiles kernels for `arch` from now on ([`Runtime::preferred_arch`]),
    /// or for the device's arch again with `None`. The emulator runs either
    /// arch (sm_90a's wgmma included); a GPU runs sm_80 code on compute
    /// capability 8.0 and later (so sm_80 kernels can be measured on a
    /// Hopper next to the sm_90a ones) and sm_90a code on 9.0 only, else
    /// [`RuntimeError::ArchUnsupported`] and the arch stays as it was.
    pub fn set_arch(&mut self, arch: Option<Arch>) -> Result<(), RuntimeError> {
        if let Some(arch) = arch {
            self.backend.check_arch(arch)?;
        }
        self.arch = arch;
        Ok(())
    }

    /// Which backend runs the kernels.
    pub fn backend_kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// `cuda` or `emu`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.kind().name()
    }

    /// The device, in words (GPU name and arch, or the emulator).
    pub fn device_name(&self) -> String {
        self.backend.device_name()
    }

    /// The architecture to compile kernels for when the caller does not
    /// choose one: the one [`Runtime::set_arch`] (or [`ARCH_ENV`]) set, else
    /// sm_90a on a GPU of compute capability 9.x (Hopper), else sm_80, the
    /// portable baseline (also the emulator's default).
    pub fn preferred_arch(&self) -> Arch {
        self.arch.unwrap_or_else(|| self.backend.preferred_arch())
    }

    /// On the emulator backend, its cost model ([`jagged_emu::Profile`]: warp
    /// instructions by class, global bytes and 32-byte sectors, shared-memory bank
    /// conflicts) summed over the launches since the runtime was opened or the last
    /// [`Runtime::take_emulator_profile`]; `None` on CUDA.
    pub fn emulator_profile(&self) -> Option<jagged_emu::Profile> {
        self.backend.emu_profile()
    }

    /// [`Runtime::emulator_profile`], and starts a new sum (to profile one run at a time).
    pub fn take_emulator_profile(&mut self) -> Option<jagged_emu::Profile> {
        self.backend.take_emu_profile()
    }

    /// On the emulator backend, one [`LaunchRecord`] per kernel launch since the
    /// runtime was opened or the last call, in launch order: the entry name, grid and
    /// block, and the cost model ([`jagged_emu::Profile`]) of that launch alone, so the
    /// cost of each kernel of a step (e.g. the launches of one [`Runtime::run_graph`])
    /// can be told apart. The records are the same counts
    /// [`Runtime::take_emulator_profile`] sums, kept until taken (the two are reset
    /// independently). `None` on CUDA, which has no cost model and keeps no log.
    pub fn take_launch_log(&mut self) -> Option<Vec<LaunchRecord>> {
        self.backend.take_launch_log()
    }

    /// Why [`Runtime::new`] did not pick CUDA, if it fell back to the emulator.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Loads a PTX module, or returns the handle of the identical text loaded before.
    pub fn load_module(&mut self, ptx: &str) -> Result<ModuleId, RuntimeError> {
        let digest = *blake3::hash(ptx.as_bytes()).as_bytes();
        if let Some(&id) = self.modules_by_ptx.get(&digest) {
            return Ok(id);
        }
        let signatures =
            EntrySignatures::parse(ptx).map_err(|reason| RuntimeError::BadPtx { reason })?;
        let id = ModuleId(self.modules.len());
        self.backend.load_module(id, ptx)?;
        self.modules.push(signatures);
        self.modules_by_ptx.insert(digest, id);
        Ok(id)
    }

    /// The number of distinct modules loaded.
    pub fn loaded_modules(&self) -> usize {
        self.modules.len()
    }

    /// The kernel names of a loaded module.
    pub fn kernel_names(&self, module: ModuleId) -> Result<Vec<String>, RuntimeError> {
        let signatures = self
            .modules
            .get(module.0)
            .ok_or(RuntimeError::UnknownModule(module))?;
        let mut names: Vec<String> = signatures.kernel_names().map(str::to_string).collect();
        names.sort();
        Ok(names)
    }

    /// A zeroed buffer of `len` elements of `dtype`.
    pub fn alloc(&mut self, dtype: DType, len: usize) -> Result<DeviceBuffer, RuntimeError> {
        let bytes = len
            .checked_mul(dtype.size())
            .ok_or_else(|| RuntimeError::ByteLength {
                what: format!("alloc of {len} x {dtype}"),
                bytes: usize::MAX,
                reason: "the size overflows".to_string(),
            })?;
        let id = BufferId::fresh();
        self.backend.alloc(id, bytes)?;
        self.buffers.insert(id);
        Ok(DeviceBuffer { id, dtype, len })
    }

    /// A buffer holding `bytes`, read as elements of `dtype`.
    pub fn upload_bytes(
        &mut self,
        dtype: DType,
        bytes: &[u8],
    ) -> Result<DeviceBuffer, RuntimeError> {
        if !bytes.len().is_multiple_of(dtype.size()) {
            return Err(RuntimeError::ByteLength {
                what: "upload".to_string(),
                bytes: bytes.len(),
                reason: format!("not a multiple of the {}-byte {dtype}", dtype.size()),
            });
        }
        let id = BufferId::fresh();
        self.backend.upload(id, bytes)?;
        self.buffers.insert(id);
        Ok(DeviceBuffer {
            id,
            dtype,
            len: bytes.len() / dtype.size(),
        })
    }

    /// A buffer holding `values`.
    pub fn upload<T: Element>(&mut self, values: &[T]) -> Result<DeviceBuffer, RuntimeError> {
        self.upload_bytes(T::DTYPE, &to_bytes(values))
    }

    /// Overwrites the whole of `buffer` with `bytes`, which must have its byte size.
    pub fn write_bytes(&mut self, buffer: &DeviceBuffer, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.check_live(buffer)?;
        if bytes.len() != buffer.bytes() {
            return Err(RuntimeError::ByteLength {
                what: buffer.id.to_string(),
                bytes: bytes.len(),
                reason: format!("the buffer holds {} bytes", buffer.bytes()),
            });
        }
        self.backend.write(buffer.id, bytes)
    }

    /// The bytes of `buffer`, once all launched work has finished.
    pub fn download_bytes(&mut self, buffer: &DeviceBuffer) -> Result<Vec<u8>, RuntimeError> {
        self.check_live(buffer)?;
        self.backend.read(buffer.id, buffer.bytes())
    }

    /// The elements of `buffer`, whose dtype must be `T`'s.
    pub fn download<T: Element>(&mut self, buffer: &DeviceBuffer) -> Result<Vec<T>, RuntimeError> {
        if buffer.dtype != T::DTYPE {
            return Err(RuntimeError::DTypeMismatch {
                what: buffer.id.to_string(),
                expected: T::DTYPE,
                found: buffer.dtype,
            });
        }
        let bytes = self.download_bytes(buffer)?;
        from_bytes(&buffer.id.to_string(), &bytes)
    }

    /// Frees `buffer`.
    pub fn free(&mut self, buffer: DeviceBuffer) -> Result<(), RuntimeError> {
        self.check_live(&buffer)?;
        self.buffers.remove(&buffer.id);
        self.backend.free(buffer.id)
    }

    /// Uploads a jagged tensor after checking its invariants.
    pub fn upload_jagged(&mut self, host: &JaggedBytes) -> Result<DeviceJagged, RuntimeError> {
        host.validate()?;
        let values = self.upload_bytes(host.dtype, &host.values)?;
        let offsets = self.upload_bytes(host.offset_type.dtype(), &host.offset_bytes())?;
        Ok(DeviceJagged {
            values,
            offsets,
            inner_dims: host.inner_dims.clone(),
            // validate() checked offsets[B] >= 0 and that it is the row count.
            total_rows: host.offsets[host.offsets.len() - 1] as usize,
        })
    }

    /// Downloads a jagged tensor.
    pub fn download_jagged(&mut self, device: &DeviceJagged) -> Result<JaggedBytes, RuntimeError> {
        let values = self.download_bytes(&device.values)?;
        let offsets = match device.offset_type() {
            OffsetType::I32 => self
                .download::<i32>(&device.offsets)?
                .into_iter()
                .map(i64::from)
                .collect(),
            OffsetType::I64 => self.download::<i64>(&device.offsets)?,
        };
        Ok(JaggedBytes {
            dtype: device.dtype(),
            inner_dims: device.inner_dims.clone(),
            values,
            offset_type: device.offset_type(),
            offsets,
        })
    }

    /// Uploads a host jagged tensor of jagged-ir (valid by construction).
    pub fn upload_jagged_tensor(
        &mut self,
        host: &JaggedTensor,
    ) -> Result<DeviceJagged, RuntimeError> {
        self.upload_jagged(&JaggedBytes::from_tensor(host))
    }

    /// Downloads a jagged tensor into a host jagged tensor of jagged-ir; an
    /// error if a kernel left its offsets invalid.
    pub fn download_jagged_tensor(
        &mut self,
        device: &DeviceJagged,
    ) -> Result<JaggedTensor, RuntimeError> {
        self.download_jagged(device)?.to_tensor()
    }

    /// Uploads the elements of a host dense tensor (row-major; the shape is
    /// the caller's to keep).
    pub fn upload_dense(&mut self, host: &DenseTensor) -> Result<DeviceBuffer, RuntimeError> {
        self.upload_bytes(host.dtype(), &tensor_bytes(host.data()))
    }

    /// Downloads `buffer` as a host dense tensor of `shape`, whose element
    /// count must be the buffer's length.
    pub fn download_dense(
        &mut self,
        buffer: &DeviceBuffer,
        shape: &[usize],
    ) -> Result<DenseTensor, RuntimeError> {
        let bytes = self.download_bytes(buffer)?;
        let data = tensor_data(&buffer.id.to_string(), buffer.dtype, &bytes)?;
        Ok(DenseTensor::new(shape.to_vec(), data)?)
    }

    /// Frees both buffers of a jagged tensor.
    pub fn free_jagged(&mut self, device: DeviceJagged) -> Result<(), RuntimeError> {
        self.free(device.values)?;
        self.free(device.offsets)
    }

    /// Launches `kernel` of `module` without waiting for it (the emulator
    /// runs it to completion). The arguments are checked against the
    /// kernel's `.param` list first.
    pub fn launch(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), RuntimeError> {
        self.check_args(module, kernel, args)?;
        self.backend.launch(module, kernel, dims, args)
    }

    /// Launches `kernel`, waits for it and returns how long it took.
    pub fn launch_timed(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<LaunchTiming, RuntimeError> {
        self.check_args(module, kernel, args)?;
        self.backend.launch_timed(module, kernel, dims, args)
    }

    /// Submits `kernel` of `module` to `stream`, a raw `CUstream` of this
    /// runtime's device (its primary context) that the runtime does not own,
    /// such as PyTorch's current stream (`0`: the legacy default stream),
    /// without waiting. Buffers the runtime does not own either (PyTorch
    /// tensors) are passed as their device addresses, [`KernelArg::U64`],
    /// and tensor maps over them as [`KernelArg::TensorMap`]
    /// ([`Self::tensor_map_at`]); runtime buffers ([`KernelArg::Buffer`]) are
    /// refused. The arguments are
    /// checked against the kernel's `.param` list first. A launch of no CTAs
    /// is not submitted. CUDA backend only ([`RuntimeError::NeedsCuda`]).
    ///
    /// # Safety
    ///
    /// `stream` must be a live stream of this device's primary context (or
    /// 0), and every address among `args` device memory of that context that
    /// stays allocated until the kernel has finished on `stream` and is
    /// large enough for what the kernel reads and writes there.
    pub unsafe fn launch_external(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
        stream: u64,
    ) -> Result<(), RuntimeError> {
        self.check_args(module, kernel, args)?;
        let cuda = self.backend.cuda("a launch on an external stream")?;
        // SAFETY: the stream and the addresses are this function's caller's
        // guarantee (see `# Safety`); the arguments fit the kernel's
        // parameter list (checked above).
        unsafe { cuda.launch_external(module, kernel, dims, args, stream as sys::CUstream) }
    }

    /// The argument of a tensor map over `buffer` (a kernel's by-value
    /// `.param .align 64 .b8 [128]`), encoded for this runtime's device: by
    /// `cuTensorMapEncodeTiled` on CUDA, by the emulator's encoder (the same rules)
    /// otherwise. The map holds the buffer's address: it is valid while the buffer is.
    pub fn tensor_map(
        &mut self,
        buffer: &DeviceBuffer,
        map: &TiledMap,
    ) -> Result<KernelArg, RuntimeError> {
        self.check_live(buffer)?;
        let address = self.backend.address(buffer.id)?;
        self.backend.tensor_map_at(address, map)
    }

    /// The argument of a tensor map over the device address `address`,
    /// memory the runtime does not own (a PyTorch tensor's, for
    /// [`Self::launch_external`]), encoded for this runtime's device on the
    /// host: `cuTensorMapEncodeTiled` only records the address, so nothing
    /// is read and nothing waits. The map is valid while that memory is.
    pub fn tensor_map_at(
        &mut self,
        address: u64,
        map: &TiledMap,
    ) -> Result<KernelArg, RuntimeError> {
        self.backend.tensor_map_at(address, map)
    }

    /// Waits until all launched work has finished; a kernel fault surfaces here.
    pub fn synchronize(&mut self) -> Result<(), RuntimeError> {
        self.backend.synchronize()
    }

    fn check_live(&self, buffer: &DeviceBuffer) -> Result<(), RuntimeError> {
        if self.buffers.contains(&buffer.id) {
            Ok(())
        } else {
            Err(RuntimeError::UnknownBuffer(buffer.id))
        }
    }

    fn check_args(
        &self,
        module: ModuleId,
        kernel: &str,
        args: &[KernelArg],
    ) -> Result<(), RuntimeError> {
        let params = self
            .modules
            .get(module.0)
            .ok_or(RuntimeError::UnknownModule(module))?
            .params(kernel)
            .ok_or_else(|| RuntimeError::UnknownKernel {
                module,
                kernel: kernel.to_string(),
            })?;
        let bad = |index: usize, reason: String| RuntimeError::BadArgument {
            kernel: kernel.to_string(),
            index,
            reason,
        };
        if params.len() != args.len() {
            return Err(bad(
                args.len().min(params.len()),
                format!(
                    "the kernel takes {} parameters, {} given",
                    params.len(),
                    args.len()
                ),
            ));
        }
        for (index, (&size, arg)) in params.iter().zip(args).enumerate() {
            if arg.size() != size {
                return Err(bad(
                    index,
                    format!("{arg:?} has {} bytes, the parameter {size}", arg.size()),
                ));
            }
            if let KernelArg::Buffer(id) = arg
                && !self.buffers.contains(id)
            {
                return Err(RuntimeError::UnknownBuffer(*id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulator_prefers_the_portable_baseline() {
        // The default, whatever JAGGED_ARCH this test runs under.
        let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator runtime");
        rt.set_arch(None).expect("the default arch");
        assert_eq!(rt.preferred_arch(), Arch::Sm80);
    }

    #[test]
    fn the_emulator_compiles_for_either_arch_on_request() {
        let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator runtime");
        for arch in Arch::ALL {
            rt.set_arch(Some(arch))
                .expect("the emulator runs every arch");
            assert_eq!(rt.preferred_arch(), arch);
        }
        rt.set_arch(None).expect("the default arch");
        assert_eq!(rt.preferred_arch(), Arch::Sm80);
    }

    #[test]
    fn arch_names_parse_and_an_unknown_one_is_a_typed_error() {
        assert_eq!(parse_arch(ARCH_ENV, "sm_80").unwrap(), Arch::Sm80);
        assert_eq!(parse_arch(ARCH_ENV, " SM_90a ").unwrap(), Arch::Sm90a);
        let err = parse_arch(ARCH_ENV, "sm_90").unwrap_err();
        assert!(
            matches!(&err, RuntimeError::UnknownArch { setting, value }
                if setting == ARCH_ENV && value == "sm_90"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("JAGGED_ARCH") && text.contains("\"sm_90\""),
            "{text}"
        );
    }
}
