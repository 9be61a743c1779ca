//! The emulator backend: jagged-emu's device and the modules parsed for it.

use super::{
    BufferId, KernelArg, LaunchDims, LaunchRecord, LaunchTiming, ModuleId, TensorMapBytes, TiledMap,
};
use crate::RuntimeError;
use jagged_emu::{Device, DevicePtr, EmuError, LaunchConfig, Module, Profile};
use std::collections::HashMap;

/// The emulated device, its buffers (address and length) and parsed modules.
pub(crate) struct EmuBackend {
    device: Device,
    buffers: HashMap<BufferId, DevicePtr>,
    modules: HashMap<ModuleId, Module>,
    /// The cost model summed over the launches since the last [`EmuBackend::take_profile`].
    profile: Profile,
    /// Each launch's own counts since the last [`EmuBackend::take_launch_log`].
    launch_log: Vec<LaunchRecord>,
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
            profile: Profile::default(),
            launch_log: Vec::new(),
        }
    }

    /// The cost model summed over the launches since the backend was opened or the last
    /// [`EmuBackend::take_profile`].
    pub(crate) fn profile(&self) -> Profile {
        self.profile
    }

    /// Returns the summed cost model and starts a new sum.
    pub(crate) fn take_profile(&mut self) -> Profile {
        std::mem::take(&mut self.profile)
    }

    /// The launches since the backend was opened or the last call, oldest first; starts
    /// a new log.
    pub(crate) fn take_launch_log(&mut self) -> Vec<LaunchRecord> {
        std::mem::take(&mut self.launch_log)
    }

    /// The emulator address of buffer `id`.
    pub(crate) fn ptr(&self, id: BufferId) -> Result<DevicePtr, RuntimeError> {
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

    /// A tensor map over the emulator address `address` (the emulator's
    /// encoding).
    pub(crate) fn tensor_map_at(address: u64, map: &TiledMap) -> Result<KernelArg, RuntimeError> {
        let encoded = map.encode_emu(address)?;
        Ok(KernelArg::TensorMap(TensorMapBytes(encoded.0)))
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
        self.profile.add(&stats.profile);
        self.launch_log.push(LaunchRecord {
            entry: kernel.to_string(),
            dims: *dims,
            profile: stats.profile,
        });
        Ok(LaunchTiming {
            elapsed: stats.elapsed,
            warp_instructions: Some(stats.warp_instructions),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{BackendKind, LaunchDims, Runtime};

    /// `out[i] = inp[i]` for `i = ctaid.x * 256 + tid.x`.
    const COPY: &str = r#".version 8.0
.target sm_80
.address_size 64
.visible .entry copy(.param .u64 .ptr .global .align 1 inp, .param .u64 .ptr .global .align 1 out)
{
    .reg .b32 %r<4>;
    .reg .f32 %f<2>;
    .reg .b64 %rd<8>;
    ld.param.u64 %rd1, [inp];
    ld.param.u64 %rd2, [out];
    mov.u32 %r1, %ctaid.x;
    mov.u32 %r2, %tid.x;
    mad.lo.u32 %r3, %r1, 256, %r2;
    mul.wide.u32 %rd3, %r3, 4;
    add.s64 %rd4, %rd1, %rd3;
    add.s64 %rd5, %rd2, %rd3;
    ld.global.f32 %f1, [%rd4];
    st.global.f32 [%rd5], %f1;
    ret;
}
"#;

    #[test]
    fn emulator_profile_sums_the_launches_and_take_restarts_it() {
        let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator runtime");
        assert_eq!(rt.emulator_profile().map(|p| p.launches), Some(0));
        let module = rt.load_module(COPY).expect("load");
        let x: Vec<f32> = (0..1024).map(|i| i as f32).collect();
        let inp = rt.upload(&x).expect("upload");
        let out = rt.upload(&vec![0f32; 1024]).expect("upload");
        let dims = LaunchDims::linear(4, 256);
        for _ in 0..2 {
            rt.launch(module, "copy", &dims, &[inp.arg(), out.arg()])
                .expect("launch");
        }
        assert_eq!(rt.download::<f32>(&out).expect("download"), x);
        // Each launch: 1024 floats read and written, coalesced: 128 sectors each way;
        // 32 warps x 11 instructions.
        let p = rt.emulator_profile().expect("emulator");
        assert_eq!(p.launches, 2);
        assert_eq!((p.global_read_bytes, p.global_read_sectors), (8192, 256));
        assert_eq!((p.global_write_bytes, p.global_write_sectors), (8192, 256));
        assert_eq!(p.warp_instructions(), 2 * 32 * 11);
        assert_eq!(rt.take_emulator_profile(), Some(p));
        assert_eq!(rt.emulator_profile(), Some(jagged_emu::Profile::default()));
    }

    /// A tensor map over a runtime buffer: 128 bytes by value, checked against the
    /// driver's rules (a box row of 256 bytes exceeds the 128-byte swizzle span).
    #[test]
    fn tensor_maps_are_encoded_over_live_buffers() {
        use crate::{KernelArg, RuntimeError, TiledMap};
        use jagged_emu::tensormap::{TensorMapDataType, TensorMapSwizzle};
        let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator runtime");
        let x = rt.upload(&vec![0f32; 64 * 64]).expect("upload");
        let mut map = TiledMap {
            data_type: TensorMapDataType::Float32,
            global_dim: vec![64, 64],
            global_strides: vec![256],
            box_dim: vec![32, 8],
            element_strides: vec![1, 1],
            swizzle: TensorMapSwizzle::B128,
            nan_fill: false,
        };
        let arg = rt.tensor_map(&x, &map).expect("a valid map");
        assert!(matches!(arg, KernelArg::TensorMap(_)));
        assert_eq!(arg.size(), 128);
        map.box_dim = vec![64, 8];
        assert!(matches!(
            rt.tensor_map(&x, &map),
            Err(RuntimeError::TensorMap(_))
        ));
    }
}
