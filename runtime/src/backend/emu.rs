//! The emulator backend: jagged-emu's device and the modules parsed for it.

use super::{BufferId, KernelArg, LaunchDims, LaunchTiming, ModuleId};
use crate::RuntimeError;
use jagged_emu::{Device, DevicePtr, EmuError, LaunchConfig, Module};
use std::collections::HashMap;

/// The emulated device, its buffers (address and length) and parsed modules.
pub(crate) struct EmuBackend {
    device: Device,
    buffers: HashMap<BufferId, DevicePtr>,
    modules: HashMap<ModuleId, Module>,
}

fn emulator(op: &'static str) -> impl FnOnce(EmuError) -> RuntimeError {
    move |source| RuntimeError::Emu { op, source }
}

impl EmuBackend {
    pub(crate) fn new() -> EmuBackend {
        EmuBackend {
            device: Device::new(),
            buffers: HashMap::new(),
            modules: HashMap::new(),
        }
    }

    fn ptr(&self, id: BufferId) -> Result<DevicePtr, RuntimeError> {
        self.buffers
            .get(&id)
            .copied()
            .ok_or(RuntimeError::UnknownBuffer(id))
    }

    pub(crate) fn load_module(&mut self, id: ModuleId, ptx: &str) -> Result<(), RuntimeError> {
        let module = Module::parse(ptx).map_err(emulator("PTX parse"))?;
        self.modules.insert(id, module);
        Ok(())
    }

    pub(crate) fn alloc(&mut self, id: BufferId, bytes: usize) -> Result<(), RuntimeError> {
        let ptr = self.device.try_alloc(bytes).map_err(emulator("alloc"))?;
        self.buffers.insert(id, ptr);
        Ok(())
    }

    pub(crate) fn upload(&mut self, id: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        let ptr = self.device.try_upload(bytes).map_err(emulator("upload"))?;
        self.buffers.insert(id, ptr);
        Ok(())
    }

    pub(crate) fn write(&mut self, id: BufferId, bytes: &[u8]) -> Result<(), RuntimeError> {
        let ptr = self.ptr(id)?;
        // Empty copies (T = 0, B = 0) never reach the device.
        if bytes.is_empty() {
            return Ok(());
        }
        self.device.write(ptr, bytes).map_err(emulator("write"))
    }

    pub(crate) fn read(&mut self, id: BufferId, len: usize) -> Result<Vec<u8>, RuntimeError> {
        let ptr = self.ptr(id)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        self.device.read(ptr, len).map_err(emulator("read"))
    }

    pub(crate) fn free(&mut self, id: BufferId) -> Result<(), RuntimeError> {
        let ptr = self.ptr(id)?;
        self.buffers.remove(&id);
        self.device.free(ptr).map_err(emulator("free"))
    }

    pub(crate) fn launch(
        &mut self,
        module: ModuleId,
        kernel: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<LaunchTiming, RuntimeError> {
        let args = args
            .iter()
            .map(|arg| arg.to_emu(|id| self.ptr(id)))
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let loaded = self
            .modules
            .get(&module)
            .ok_or(RuntimeError::UnknownModule(module))?;
        let config = LaunchConfig {
            grid: dims.grid,
            block: dims.block,
            dynamic_shared_bytes: dims.dynamic_shared_bytes,
        };
        let stats = self
            .device
            .launch(loaded, kernel, &config, &args)
            .map_err(emulator("launch"))?;
        Ok(LaunchTiming {
            elapsed: stats.elapsed,
            warp_instructions: Some(stats.warp_instructions),
        })
    }
}
