//! jagged-runtime: runs compiled jagged kernels.
//!
//! - [`Runtime`] is one interface over two backends, a CUDA GPU (cudarc's
//!   driver API) and the PTX emulator (jagged-emu): load PTX, allocate and copy
//!   buffers, launch a kernel by name with typed arguments, synchronize, time.
//!   [`Runtime::new`] picks CUDA when a driver and a device are present, else
//!   the emulator; `JAGGED_BACKEND=cuda|emu` forces one. Kernels are compiled
//!   for the device's arch, or the one `JAGGED_ARCH=sm_80|sm_90a` or
//!   [`Runtime::set_arch`] sets.
//! - [`DeviceBuffer`] and [`DeviceJagged`] are device tensors with their dtype
//!   and shape; [`JaggedBytes`] is their host form.
//! - [`KernelCache`] keeps compiled artifacts in memory and on disk, keyed
//!   by graph, specialization and code-generator version.
//! - [`Runtime::run_graph`] runs a whole jagged-ir graph: compile through the
//!   cache, allocate, bind parameters from the launch metadata, launch.

mod backend;
pub mod cache;
mod error;
mod launcher;
mod params;
mod runtime;
mod tensor;

pub use backend::{
    BackendKind, BufferId, KernelArg, LaunchDims, LaunchRecord, LaunchTiming, ModuleId,
    TensorMapBytes, TiledMap,
};
pub use cache::{CacheEntry, CacheError, CacheKey, CacheStats, KernelCache};
pub use error::RuntimeError;
pub use jagged_ir::DType;
pub use launcher::{
    BufferRole, DeviceTensor, ExternalBinding, GraphRunError, GraphRunStats, InputCheck,
    LaunchTarget, POISON_BYTE, Planned, bind_external, codegen_key, graph_cache_key, launch_plan,
};
pub use params::EntrySignatures;
pub use runtime::{ARCH_ENV, BACKEND_ENV, Runtime, arch_from_env, parse_arch};
pub use tensor::{
    DeviceBuffer, DeviceJagged, Element, JaggedBytes, OffsetType, from_bytes, tensor_bytes,
    tensor_data, to_bytes,
};
