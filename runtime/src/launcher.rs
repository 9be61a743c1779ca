//! Runs a whole jagged-ir graph on the runtime's device: compile through the
//! kernel cache, load the module, allocate outputs and scratch, bind every
//! kernel parameter from the launch metadata, launch in order, and hand back
//! the outputs by name.
//!
//! Inputs and outputs are named exactly as the graph names them, the way the
//! reference evaluator [`jagged_ir::evaluate`] takes them: a jagged tensor is
//! its `values [T, inner...]` and its `offsets [B+1]`, two [`DeviceTensor`]s.
//! Run-time sizes (`B`, `T`, `max_len`) are read from the inputs' shapes, the
//! offsets and the `max_len` attribute; the offsets are downloaded and checked
//! before any kernel runs, so bad offsets are an error naming the input, never
//! an out-of-bounds access.
//!
//! Compiled kernels are cached three ways: per runtime (kernel metadata and
//! loaded module), in the [`KernelCache`]'s memory, and on its disk (as
//! [`CompiledKernel::to_text`]), keyed by [`graph_cache_key`]. Only a miss in
//! all three runs the code generator; [`GraphRunStats::codegen_runs`] counts
//! those.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jagged_codegen::kernel::Swizzle;
use jagged_codegen::{
    CODEGEN_SOURCE_HASH, CODEGEN_VERSION, CodegenError, CompiledKernel, ParamBinding, RunSizes,
    Spec, TensorMapBinding,
};
use jagged_emu::tensormap::{TensorMapDataType, TensorMapSwizzle};
use jagged_ir::bind::{BindError, InputDesc, find_input};
use jagged_ir::tensor::check_offsets;
use jagged_ir::{AttrValue, DType, DenseTensor, Dim, Graph, Handle, Node, TensorError};

use crate::RuntimeError;
use crate::backend::{KernelArg, LaunchDims, ModuleId, TiledMap};
use crate::cache::{CacheEntry, CacheKey, KernelCache};
use crate::runtime::Runtime;
use crate::tensor::DeviceBuffer;

/// A dense tensor on the device: a buffer and its shape (row-major). Graph
/// inputs and outputs cross [`Runtime::run_graph`] in this form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceTensor {
    /// The elements (at least `prod(shape)` of them).
    pub buffer: DeviceBuffer,
    /// The shape.
    pub shape: Vec<usize>,
}

impl DeviceTensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.buffer.dtype()
    }
}

/// Why a graph could not be run.
#[derive(Debug, thiserror::Error)]
pub enum GraphRunError {
    /// The inputs or attributes do not fit the graph (names, dtypes, shapes,
    /// unbound symbolic dims): the binding shared with the reference evaluator.
    #[error(transparent)]
    Bind(BindError),
    /// Invalid offsets (the error names the input).
    #[error(transparent)]
    Offsets(#[from] TensorError),
    /// The run-time `max_len` exceeds the spec's bucket.
    #[error("max_len {max_len} exceeds the spec's max-length bucket {bucket}")]
    MaxLenAboveBucket {
        /// The run-time value.
        max_len: usize,
        /// `Spec::max_len_bucket`.
        bucket: u32,
    },
    /// Something the launcher does not support (e.g. two sequence sets with
    /// different row counts).
    #[error("unsupported graph: {0}")]
    Unsupported(String),
    /// The compiled kernel's metadata disagrees with the graph (a code
    /// generator bug, reported instead of a panic).
    #[error("kernel metadata of graph `{graph}`: {reason}")]
    BadMetadata {
        /// The graph.
        graph: String,
        /// What is inconsistent.
        reason: String,
    },
    /// The code generator failed.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// The device failed (allocation, copy, launch).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The binding errors keep their own variants here, so that callers match
/// one flat error type whatever step of a run failed.
impl From<BindError> for GraphRunError {
    fn from(err: BindError) -> Self {
        match err {
            BindError::Offsets(err) => GraphRunError::Offsets(err),
            other => GraphRunError::Bind(other),
        }
    }
}

/// What [`Runtime::run_graph`] has done on one runtime; tests use it to check
/// that a cached specialization runs no code generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphRunStats {
    /// Graph runs started.
    pub runs: u64,
    /// Times the code generator ran (a miss in every cache).
    pub codegen_runs: u64,
    /// Wall time of the code generator in all those runs.
    pub codegen_time: Duration,
    /// Compiled kernels read from the [`KernelCache`] (memory or disk)
    /// instead of being generated.
    pub kernel_cache_hits: u64,
    /// Modules loaded onto the device.
    pub module_loads: u64,
}

/// The runtime's per-graph state: the kernel cache, the kernels already
/// loaded on this device, and counters.
#[derive(Default)]
pub(crate) struct GraphState {
    cache: Option<Arc<KernelCache>>,
    loaded: HashMap<CacheKey, (Arc<CompiledKernel>, ModuleId)>,
    stats: GraphRunStats,
    poison_outputs: bool,
}

/// The byte every output is filled with when poisoning is on: `0xFF..` is a
/// NaN in f32, f16 and bf16, and -1 in integers.
pub const POISON_BYTE: u8 = 0xFF;

impl CacheEntry for CompiledKernel {
    fn encode(&self) -> Vec<u8> {
        self.to_text().into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        CompiledKernel::from_text(text).ok()
    }
}

/// The cache key of `graph` specialized by `spec` under this code generator.
pub fn graph_cache_key(graph: &Graph, spec: &Spec) -> CacheKey {
    CacheKey::from_graph_text(&graph.to_string(), spec.to_string(), codegen_key())
}

/// The code-generator part of cache keys: [`CODEGEN_VERSION`] and
/// [`CODEGEN_SOURCE_HASH`], the hash of the code generator's sources, so an
/// entry is read only by a build with the same code generator. Nothing else
/// about the build is in it (a rebuilt executable reads the entries the
/// previous one wrote); the graph's canonical hash and the spec, the other
/// inputs of the code generator, are the key's other fields.
pub fn codegen_key() -> String {
    format!("{CODEGEN_VERSION}+{CODEGEN_SOURCE_HASH}")
}

/// The named outputs of a run and the scratch buffers to free after it.
type Launched = (BTreeMap<String, DeviceTensor>, Vec<DeviceBuffer>);

/// Where the module of a run comes from.
#[derive(Clone, Copy)]
enum Compiled<'a> {
    /// Compiled (or found in the caches) for this spec.
    Spec(&'a Spec),
    /// Given by the caller.
    Given(&'a CompiledKernel),
}

/// Run-time sizes bound from the inputs and attributes.
struct Bound {
    sizes: RunSizes,
    attrs: BTreeMap<String, AttrValue>,
}

impl Runtime {
    /// Uses `cache` for compiled kernels from now on (e.g. a temporary
    /// directory in tests, or one cache shared by several runtimes).
    pub fn set_kernel_cache(&mut self, cache: Arc<KernelCache>) {
        self.graphs.cache = Some(cache);
    }

    /// The kernel cache: the one set by [`Runtime::set_kernel_cache`], else
    /// [`KernelCache::from_env_or_memory`] (memory only if its directory is
    /// not usable, said once on stderr and in its stats' `disk_disabled`).
    pub fn kernel_cache(&mut self) -> Arc<KernelCache> {
        self.graphs
            .cache
            .get_or_insert_with(|| Arc::new(KernelCache::from_env_or_memory()))
            .clone()
    }

    /// Fill every output with [`POISON_BYTE`] before the kernels run, so that
    /// an element no kernel writes reads as NaN (off by default: it costs a
    /// copy per output).
    pub fn set_poison_outputs(&mut self, poison: bool) {
        self.graphs.poison_outputs = poison;
    }

    /// The graph-run counters of this runtime.
    pub fn graph_run_stats(&self) -> GraphRunStats {
        self.graphs.stats
    }

    /// The compiled kernel of `graph` for `spec`, loaded on this device:
    /// from this runtime's table, else the kernel cache, else the code generator.
    pub fn compile_graph(
        &mut self,
        graph: &Graph,
        spec: &Spec,
    ) -> Result<(Arc<CompiledKernel>, ModuleId), GraphRunError> {
        let key = graph_cache_key(graph, spec);
        if let Some((kernel, module)) = self.graphs.loaded.get(&key) {
            return Ok((kernel.clone(), *module));
        }
        let cache = self.kernel_cache();
        let mut generated = None;
        let kernel = cache.get_or_insert_entry(&key, || {
            let start = Instant::now();
            let kernel = jagged_codegen::compile(graph, spec);
            generated = Some(start.elapsed());
            kernel
        })?;
        match generated {
            Some(time) => {
                self.graphs.stats.codegen_runs += 1;
                self.graphs.stats.codegen_time += time;
            }
            None => self.graphs.stats.kernel_cache_hits += 1,
        }
        let loaded_before = self.loaded_modules();
        let (kernel, module) = match self.load_module(&kernel.ptx) {
            Ok(module) => (kernel, module),
            // A cached module this device cannot load (written by another
            // build, or damaged in a way its checksum did not catch) is
            // evicted and generated again, once; a fresh one that fails to
            // load is an error.
            Err(_) if generated.is_none() => {
                cache.evict(&key);
                let start = Instant::now();
                let kernel =
                    cache.get_or_insert_entry(&key, || jagged_codegen::compile(graph, spec))?;
                self.graphs.stats.codegen_runs += 1;
                self.graphs.stats.codegen_time += start.elapsed();
                let module = self.load_module(&kernel.ptx)?;
                (kernel, module)
            }
            Err(err) => return Err(err.into()),
        };
        if self.loaded_modules() > loaded_before {
            self.graphs.stats.module_loads += 1;
        }
        let kernel = Arc::new(kernel);
        self.graphs.loaded.insert(key, (kernel.clone(), module));
        Ok((kernel, module))
    }

    /// A host dense tensor on the device.
    pub fn upload_tensor(&mut self, host: &DenseTensor) -> Result<DeviceTensor, RuntimeError> {
        Ok(DeviceTensor {
            buffer: self.upload_dense(host)?,
            shape: host.shape().to_vec(),
        })
    }

    /// A device tensor on the host (its first `prod(shape)` elements).
    pub fn download_tensor(&mut self, device: &DeviceTensor) -> Result<DenseTensor, RuntimeError> {
        let elems: usize = device.shape.iter().product();
        let bytes = self.download_bytes(&device.buffer)?;
        let used =
            bytes
                .get(..elems * device.dtype().size())
                .ok_or_else(|| RuntimeError::ByteLength {
                    what: device.buffer.id().to_string(),
                    bytes: bytes.len(),
                    reason: format!("shape {:?} needs {elems} elements", device.shape),
                })?;
        let data = crate::tensor_data(&device.buffer.id().to_string(), device.dtype(), used)?;
        Ok(DenseTensor::new(device.shape.clone(), data)?)
    }

    /// Runs `graph`, specialized by `spec`, on device tensors named as the
    /// graph's inputs; returns its outputs by name (owned by the caller, to
    /// be freed with [`Runtime::free`]). Attributes not given take their
    /// declared defaults. The offsets inputs are downloaded and checked
    /// first (a synchronization), as is the row count of a compaction's
    /// output; the kernels themselves are launched without waiting.
    pub fn run_graph(
        &mut self,
        graph: &Graph,
        spec: &Spec,
        inputs: &[(&str, &DeviceTensor)],
        attrs: &[(&str, AttrValue)],
    ) -> Result<BTreeMap<String, DeviceTensor>, GraphRunError> {
        self.run_module(graph, Compiled::Spec(spec), inputs, attrs)
    }

    /// [`Runtime::run_graph`] with a module compiled elsewhere (for example
    /// the general path of a graph a template also takes, to compare the two
    /// plans side by side). `kernel` must have been compiled from `graph`.
    pub fn run_compiled(
        &mut self,
        graph: &Graph,
        kernel: &CompiledKernel,
        inputs: &[(&str, &DeviceTensor)],
        attrs: &[(&str, AttrValue)],
    ) -> Result<BTreeMap<String, DeviceTensor>, GraphRunError> {
        self.run_module(graph, Compiled::Given(kernel), inputs, attrs)
    }

    fn run_module(
        &mut self,
        graph: &Graph,
        compiled: Compiled<'_>,
        inputs: &[(&str, &DeviceTensor)],
        attrs: &[(&str, AttrValue)],
    ) -> Result<BTreeMap<String, DeviceTensor>, GraphRunError> {
        self.graphs.stats.runs += 1;
        let bound = self.bind(graph, inputs, attrs)?;
        let (kernel, module) = match compiled {
            Compiled::Spec(spec) => {
                let n = bound.sizes.max_len;
                if n > u64::from(spec.max_len_bucket) {
                    return Err(GraphRunError::MaxLenAboveBucket {
                        max_len: n as usize,
                        bucket: spec.max_len_bucket,
                    });
                }
                self.compile_graph(graph, spec)?
            }
            Compiled::Given(kernel) => {
                let module = self.load_module(&kernel.ptx)?;
                (Arc::new(kernel.clone()), module)
            }
        };
        let mut owned = Vec::new();
        let result = self.launch_all(graph, &kernel, module, &bound, inputs, &mut owned);
        let (outputs, scratch) = match result {
            Ok(done) => done,
            Err(err) => {
                for buffer in owned {
                    // Best effort: the first error is the one to report.
                    let _ = self.free(buffer);
                }
                return Err(err);
            }
        };
        for buffer in scratch {
            self.free(buffer)?;
        }
        Ok(outputs)
    }

    /// [`Runtime::run_graph`] on host tensors: uploads the inputs, runs,
    /// downloads the outputs and frees every device buffer.
    pub fn run_graph_host(
        &mut self,
        graph: &Graph,
        spec: &Spec,
        inputs: &[(&str, &DenseTensor)],
        attrs: &[(&str, AttrValue)],
    ) -> Result<BTreeMap<String, DenseTensor>, GraphRunError> {
        self.run_host(graph, Compiled::Spec(spec), inputs, attrs)
    }

    /// [`Runtime::run_compiled`] on host tensors.
    pub fn run_compiled_host(
        &mut self,
        graph: &Graph,
        kernel: &CompiledKernel,
        inputs: &[(&str, &DenseTensor)],
        attrs: &[(&str, AttrValue)],
    ) -> Result<BTreeMap<String, DenseTensor>, GraphRunError> {
        self.run_host(graph, Compiled::Given(kernel), inputs, attrs)
    }

    fn run_host(
        &mut self,
        graph: &Graph,
        compiled: Compiled<'_>,
        inputs: &[(&str, &DenseTensor)],
        attrs: &[(&str, AttrValue)],
    ) -> Result<BTreeMap<String, DenseTensor>, GraphRunError> {
        let mut device = Vec::with_capacity(inputs.len());
        let mut result = Ok(BTreeMap::new());
        for (name, tensor) in inputs {
            match self.upload_tensor(tensor) {
                Ok(t) => device.push((*name, t)),
                Err(err) => {
                    result = Err(err.into());
                    break;
                }
            }
        }
        if result.is_ok() {
            let named: Vec<(&str, &DeviceTensor)> = device.iter().map(|(n, t)| (*n, t)).collect();
            result = self
                .run_module(graph, compiled, &named, attrs)
                .and_then(|outs| {
                    let mut host = BTreeMap::new();
                    let mut first_error = None;
                    for (name, tensor) in outs {
                        match self.download_tensor(&tensor) {
                            Ok(t) => {
                                host.insert(name, t);
                            }
                            Err(err) => {
                                first_error.get_or_insert(err);
                            }
                        }
                        if let Err(err) = self.free(tensor.buffer) {
                            first_error.get_or_insert(err);
                        }
                    }
                    match first_error {
                        Some(err) => Err(err.into()),
                        None => Ok(host),
                    }
                });
        }
        for (_, tensor) in device {
            let freed = self.free(tensor.buffer);
            if result.is_ok() {
                freed?;
            }
        }
        result
    }

    /// Binds `B`, `T`, `max_len` and the attributes, checking every input's
    /// dtype and shape and every offsets input's invariants.
    fn bind(
        &mut self,
        graph: &Graph,
        inputs: &[(&str, &DeviceTensor)],
        attrs: &[(&str, AttrValue)],
    ) -> Result<Bound, GraphRunError> {
        let described: Vec<InputDesc<'_>> = inputs
            .iter()
            .map(|(name, t)| InputDesc {
                name,
                dtype: t.dtype(),
                shape: &t.shape,
            })
            .collect();
        let binding = jagged_ir::bind(graph, &described, attrs)?;
        for (_, name, ty) in graph.inputs() {
            let tensor = find_input(inputs, name)?;
            if tensor.buffer.len() < tensor.shape.iter().product() {
                return Err(GraphRunError::Bind(BindError::InputShape {
                    name: name.to_string(),
                    expected: jagged_ir::bind::user_type(ty),
                    found: tensor.shape.clone(),
                }));
            }
        }
        let mut total_rows: Option<usize> = None;
        for (s, name) in offsets_inputs(graph)? {
            let tensor = find_input(inputs, name)?;
            let values = self.download_index(name, tensor)?;
            check_offsets(name, &values, binding.rows.get(&s).copied())?;
            // check_offsets: non-empty and non-negative.
            let t = values[values.len() - 1] as usize;
            match total_rows {
                Some(other) if other != t => {
                    return Err(GraphRunError::Unsupported(format!(
                        "offsets '{name}' give {t} rows where other offsets give {other}"
                    )));
                }
                _ => total_rows = Some(t),
            }
        }
        // Lengths that become offsets (complete_cumsum) must be non-negative
        // and sum within the offsets dtype: checked before any kernel runs,
        // as the reference evaluator checks them.
        for (name, _) in jagged_ir::bind::lengths_inputs(graph) {
            let tensor = find_input(inputs, name)?;
            let values = self.download_index(name, tensor)?;
            jagged_ir::bind::check_lengths_inputs(graph, &[(name, &values)])?;
        }
        Ok(Bound {
            sizes: RunSizes {
                batch: binding.batch as u64,
                total_rows: total_rows.unwrap_or(0) as u64,
                max_len: binding.max_len as u64,
            },
            attrs: binding.attrs,
        })
    }

    /// The elements of an i32 / i64 input, as i64.
    fn download_index(
        &mut self,
        name: &str,
        tensor: &DeviceTensor,
    ) -> Result<Vec<i64>, GraphRunError> {
        let elems: usize = tensor.shape.iter().product();
        Ok(match tensor.dtype() {
            DType::I32 => self.download::<i32>(&tensor.buffer)?[..elems]
                .iter()
                .map(|&o| i64::from(o))
                .collect(),
            DType::I64 => self.download::<i64>(&tensor.buffer)?[..elems].to_vec(),
            found => {
                return Err(GraphRunError::Bind(BindError::InputDtype {
                    name: name.to_string(),
                    expected: DType::I64,
                    found,
                }));
            }
        })
    }

    /// Allocates outputs and scratch (recorded in `owned` as they are made),
    /// launches every kernel and shapes the outputs.
    fn launch_all(
        &mut self,
        graph: &Graph,
        kernel: &CompiledKernel,
        module: ModuleId,
        bound: &Bound,
        inputs: &[(&str, &DeviceTensor)],
        owned: &mut Vec<DeviceBuffer>,
    ) -> Result<Launched, GraphRunError> {
        let buffers: Vec<DeviceBuffer> = graph
            .inputs()
            .map(|(_, name, _)| Ok(find_input(inputs, name)?.buffer.clone()))
            .collect::<Result<_, GraphRunError>>()?;
        let graph_inputs: Vec<KernelArg> = buffers.iter().map(DeviceBuffer::arg).collect();
        let mut target = RuntimeTarget {
            runtime: self,
            module,
            inputs: buffers,
            owned,
        };
        let planned = launch_plan(
            graph,
            kernel,
            &bound.sizes,
            &bound.attrs,
            &graph_inputs,
            &mut target,
        )?;
        let mut named = BTreeMap::new();
        for (name, mut buffer, shape) in planned.outputs {
            // The rows past the used ones stay allocated; the buffer handle
            // only covers the used part (freeing it frees the whole).
            buffer.len = shape.iter().product();
            named.insert(name, DeviceTensor { buffer, shape });
        }
        Ok((named, planned.scratch))
    }

    /// An output buffer: poisoned when poisoning is on, else zeroed.
    fn alloc_output(&mut self, dtype: DType, elems: usize) -> Result<DeviceBuffer, RuntimeError> {
        if self.graphs.poison_outputs {
            let bytes = vec![POISON_BYTE; elems * dtype.size()];
            self.upload_bytes(dtype, &bytes)
        } else {
            self.alloc(dtype, elems)
        }
    }
}

/// The offsets inputs of `graph`'s sequence sets, each once: the first set
/// built on it and its name. A set over computed offsets is unsupported.
fn offsets_inputs(graph: &Graph) -> Result<Vec<(Handle<Node>, &str)>, GraphRunError> {
    let mut found: Vec<(Handle<Node>, Handle<Node>, &str)> = Vec::new();
    for (s, node) in graph.nodes().iter() {
        let Node::Seqs { offsets, .. } = node else {
            continue;
        };
        if found.iter().any(|(_, o, _)| o == offsets) {
            continue;
        }
        let Node::Input { name, .. } = graph.node(*offsets) else {
            return Err(GraphRunError::Unsupported(format!(
                "sequence set {s} over computed offsets %{}",
                offsets.index()
            )));
        };
        found.push((s, *offsets, name.as_str()));
    }
    Ok(found.into_iter().map(|(s, _, name)| (s, name)).collect())
}

/// What a buffer [`LaunchTarget::alloc`] makes is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferRole {
    /// A graph output.
    Output,
    /// Scratch of the compiled plan (bytes, `DType::U8`), dropped after the launches.
    Scratch,
}

/// Where [`launch_plan`] allocates a compiled graph's outputs and scratch
/// and submits its kernels: the runtime's own buffers and stream
/// ([`Runtime::run_graph`]), or memory and a stream the runtime does not own
/// (PyTorch's, through [`Runtime::launch_external`]).
pub trait LaunchTarget {
    /// An allocation, alive as long as the value (or its owner's copy).
    type Buffer;
    /// A buffer of `elems` zeroed elements of `dtype`.
    fn alloc(
        &mut self,
        dtype: DType,
        elems: usize,
        role: BufferRole,
    ) -> Result<Self::Buffer, GraphRunError>;
    /// The kernel argument that passes `buffer`.
    fn arg(&self, buffer: &Self::Buffer) -> KernelArg;
    /// Submits one launch of the compiled module.
    fn launch(
        &mut self,
        entry: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), GraphRunError>;
    /// Element `index` of the i32 / i64 output `name` (`buffer`, of
    /// `elems` elements of `dtype`) once the launches before have finished:
    /// a synchronizing read.
    fn read_index(
        &mut self,
        name: &str,
        buffer: &Self::Buffer,
        dtype: DType,
        elems: usize,
        index: usize,
    ) -> Result<i64, GraphRunError>;
    /// A tensor map `map` over the input passed as `input`, encoded for this
    /// target's device: over the runtime's buffer ([`Runtime::tensor_map`]),
    /// or over a device address the runtime does not own
    /// ([`Runtime::tensor_map_at`], as the Python CUDA path does). The
    /// default refuses: a target that cannot encode one runs no module with
    /// a tensor-map parameter (the sm_90a attention forward has three).
    fn tensor_map(&mut self, input: KernelArg, map: &TiledMap) -> Result<KernelArg, GraphRunError> {
        let _ = (input, map);
        Err(GraphRunError::Unsupported(
            "a tensor-map parameter on memory the runtime does not own".to_string(),
        ))
    }
}

/// The runtime's own buffers and stream, for [`Runtime::run_graph`].
struct RuntimeTarget<'a> {
    runtime: &'a mut Runtime,
    module: ModuleId,
    /// The graph's input buffers, which tensor maps are encoded over.
    inputs: Vec<DeviceBuffer>,
    /// Every buffer allocated, to free on an error.
    owned: &'a mut Vec<DeviceBuffer>,
}

impl LaunchTarget for RuntimeTarget<'_> {
    type Buffer = DeviceBuffer;

    fn alloc(
        &mut self,
        dtype: DType,
        elems: usize,
        role: BufferRole,
    ) -> Result<DeviceBuffer, GraphRunError> {
        let buffer = match role {
            BufferRole::Output => self.runtime.alloc_output(dtype, elems)?,
            BufferRole::Scratch => self.runtime.alloc(dtype, elems)?,
        };
        self.owned.push(buffer.clone());
        Ok(buffer)
    }

    fn arg(&self, buffer: &DeviceBuffer) -> KernelArg {
        buffer.arg()
    }

    fn launch(
        &mut self,
        entry: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), GraphRunError> {
        Ok(self.runtime.launch(self.module, entry, dims, args)?)
    }

    fn read_index(
        &mut self,
        name: &str,
        buffer: &DeviceBuffer,
        _dtype: DType,
        elems: usize,
        index: usize,
    ) -> Result<i64, GraphRunError> {
        let tensor = DeviceTensor {
            buffer: buffer.clone(),
            shape: vec![elems],
        };
        let values = self.runtime.download_index(name, &tensor)?;
        values.get(index).copied().ok_or_else(|| {
            GraphRunError::Unsupported(format!("output '{name}' has no element {index}"))
        })
    }

    fn tensor_map(&mut self, input: KernelArg, map: &TiledMap) -> Result<KernelArg, GraphRunError> {
        let buffer = self
            .inputs
            .iter()
            .find(|b| b.arg() == input)
            .ok_or_else(|| {
                GraphRunError::Unsupported(format!("a tensor map over {input:?}, no input buffer"))
            })?;
        Ok(self.runtime.tensor_map(buffer, map)?)
    }
}

/// What [`launch_plan`] made.
#[derive(Debug)]
pub struct Planned<B> {
    /// The outputs in the graph's output order: name, buffer and shape (a
    /// compaction's trimmed to the rows written; the buffer may be longer).
    pub outputs: Vec<(String, B, Vec<usize>)>,
    /// The scratch buffers, to be dropped or freed once the launches are done.
    pub scratch: Vec<B>,
}

/// Runs `kernel`, compiled from `graph`, on `target` for the run-time
/// `sizes` and attribute values `attrs` (every attribute the launches
/// read): allocates each output (the size its metadata gives for `sizes`)
/// and scratch buffer, binds every parameter (`inputs`: the graph's inputs'
/// arguments in its input order), submits the launches in order, and shapes
/// the outputs; a compaction's row count is read from the offsets output it
/// names (a synchronizing read, the only one).
pub fn launch_plan<T: LaunchTarget>(
    graph: &Graph,
    kernel: &CompiledKernel,
    sizes: &RunSizes,
    attrs: &BTreeMap<String, AttrValue>,
    inputs: &[KernelArg],
    target: &mut T,
) -> Result<Planned<T::Buffer>, GraphRunError> {
    let bad = |reason: String| GraphRunError::BadMetadata {
        graph: graph.name().to_string(),
        reason,
    };
    if kernel.outputs.len() != graph.outputs().len() {
        return Err(bad(format!(
            "{} output buffers for {} graph outputs",
            kernel.outputs.len(),
            graph.outputs().len()
        )));
    }
    let mut outputs = Vec::with_capacity(kernel.outputs.len());
    for (o, out) in kernel.outputs.iter().zip(graph.outputs()) {
        let declared = graph
            .type_of(out.value)
            .as_tensor()
            .ok_or_else(|| bad(format!("output '{}' is not a tensor", out.name)))?;
        if declared.dtype != o.elem {
            return Err(bad(format!(
                "output '{}' is {} in the graph, {} in the kernel",
                out.name, declared.dtype, o.elem
            )));
        }
        let elems = usize::try_from(o.elems.eval(sizes))
            .map_err(|_| bad(format!("output '{}' too large", out.name)))?;
        outputs.push((target.alloc(o.elem, elems, BufferRole::Output)?, elems));
    }
    let mut scratch = Vec::with_capacity(kernel.scratch.len());
    for s in &kernel.scratch {
        let bytes = usize::try_from(s.bytes.eval(sizes))
            .map_err(|_| bad("scratch buffer too large".to_string()))?;
        scratch.push(target.alloc(DType::U8, bytes, BufferRole::Scratch)?);
    }
    for launch in &kernel.launches {
        let mut args = Vec::with_capacity(launch.params.len());
        for param in &launch.params {
            let missing = |what: &str, i: usize| {
                bad(format!(
                    "{} binds {what} {i}, which does not exist",
                    launch.entry
                ))
            };
            args.push(match param {
                ParamBinding::Input(i) => *inputs.get(*i).ok_or_else(|| missing("input", *i))?,
                ParamBinding::Output(i) => {
                    target.arg(&outputs.get(*i).ok_or_else(|| missing("output", *i))?.0)
                }
                ParamBinding::Scratch(i) => {
                    target.arg(scratch.get(*i).ok_or_else(|| missing("scratch", *i))?)
                }
                ParamBinding::Size(e) => KernelArg::U64(e.eval(sizes)),
                ParamBinding::FloatAttr(name) => {
                    let value = attrs.get(name).ok_or_else(|| {
                        GraphRunError::Bind(BindError::MissingAttribute { name: name.clone() })
                    })?;
                    KernelArg::F32(value.as_f64() as f32)
                }
                ParamBinding::TensorMap(map) => {
                    let input = *inputs
                        .get(map.input)
                        .ok_or_else(|| missing("input", map.input))?;
                    let tiled = tiled_map(map, sizes).map_err(bad)?;
                    target.tensor_map(input, &tiled)?
                }
            });
        }
        let dims = LaunchDims {
            grid: launch.grid_dims(sizes),
            block: launch.block_dims(),
            dynamic_shared_bytes: launch.dynamic_shared_bytes,
        };
        target.launch(&launch.entry, &dims, &args)?;
    }
    // Shapes; data-dependent outputs are trimmed to the rows written.
    let mut used_rows = vec![None; outputs.len()];
    for (k, o) in kernel.outputs.iter().enumerate() {
        if let Some(src) = o.used_rows_from {
            let (offsets, elems) = outputs.get(src).ok_or_else(|| {
                bad(format!(
                    "output {k} takes its rows from missing output {src}"
                ))
            })?;
            let name = &graph.outputs()[src].name;
            let dtype = kernel.outputs[src].elem;
            let last = match elems.checked_sub(1) {
                Some(index) => Some(target.read_index(name, offsets, dtype, *elems, index)?),
                None => None,
            };
            let rows = last
                .and_then(|r| usize::try_from(r).ok())
                .ok_or_else(|| bad(format!("output '{name}' ends in {last:?}")))?;
            used_rows[k] = Some(rows);
        }
    }
    let mut named = Vec::with_capacity(outputs.len());
    for (k, ((buffer, elems), out)) in outputs.into_iter().zip(graph.outputs()).enumerate() {
        let ty = graph
            .type_of(out.value)
            .as_tensor()
            .ok_or_else(|| bad(format!("output '{}' is not a tensor", out.name)))?;
        let shape = output_shape(&ty.dims, sizes, elems, used_rows[k]).ok_or_else(|| {
            bad(format!(
                "output '{}' of {elems} elements does not fit {ty}",
                out.name
            ))
        })?;
        named.push((out.name.clone(), buffer, shape));
    }
    Ok(Planned {
        outputs: named,
        scratch,
    })
}

/// A check of an input's contents that [`bind_external`] leaves to the
/// caller: on memory the runtime does not own, reading the input would
/// synchronize, so the caller chooses how (on the device, or on request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputCheck {
    /// The offsets input `name` must be valid offsets of `rows` rows:
    /// `offsets[0] = 0`, non-decreasing, `offsets[B] = rows`.
    Offsets {
        /// The input.
        name: String,
        /// `T`.
        rows: usize,
    },
    /// The lengths input `name` (which a scan makes offsets of) must be
    /// non-negative, summing within `dtype`.
    Lengths {
        /// The input.
        name: String,
        /// Its dtype (and the offsets').
        dtype: DType,
    },
}

/// The run-time sizes and attribute values of a run on memory the runtime
/// does not own, and the checks of the inputs' contents left to the caller.
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalBinding {
    /// `B`, `T`, `max_len`.
    pub sizes: RunSizes,
    /// Every declared attribute's value.
    pub attrs: BTreeMap<String, AttrValue>,
    /// The contents' checks, which [`Runtime::run_graph`] does on the host.
    pub checks: Vec<InputCheck>,
}

/// Binds `graph` to inputs described by dtype and shape alone (their
/// contents are on a device the runtime does not own): `B` and `max_len`
/// from the shapes and attributes, `T` from the rows of the jagged inputs
/// on the offsets, else (no input has rows on them: `dense_to_jagged`) from
/// `total_rows(name)` of the first offsets input, which may read
/// `offsets[B]` (a synchronization). Sequence sets on several offsets
/// inputs must have the same rows, as [`Runtime::run_graph`] requires.
pub fn bind_external(
    graph: &Graph,
    inputs: &[InputDesc<'_>],
    attrs: &[(&str, AttrValue)],
    mut total_rows: impl FnMut(&str) -> Result<usize, GraphRunError>,
) -> Result<ExternalBinding, GraphRunError> {
    let binding = jagged_ir::bind(graph, inputs, attrs)?;
    let mut rows: Option<usize> = None;
    let offsets = offsets_inputs(graph)?;
    for (s, name) in &offsets {
        let t = match binding.rows.get(s) {
            Some(&t) => t,
            None => match rows {
                Some(t) => t,
                None => total_rows(name)?,
            },
        };
        match rows {
            Some(other) if other != t => {
                return Err(GraphRunError::Unsupported(format!(
                    "offsets '{name}' give {t} rows where other offsets give {other}"
                )));
            }
            _ => rows = Some(t),
        }
    }
    let t = rows.unwrap_or(0);
    let mut checks: Vec<InputCheck> = offsets
        .iter()
        .map(|(_, name)| InputCheck::Offsets {
            name: name.to_string(),
            rows: t,
        })
        .collect();
    checks.extend(
        jagged_ir::bind::lengths_inputs(graph)
            .into_iter()
            .map(|(name, dtype)| InputCheck::Lengths {
                name: name.to_string(),
                dtype,
            }),
    );
    Ok(ExternalBinding {
        sizes: RunSizes {
            batch: binding.batch as u64,
            total_rows: t as u64,
            max_len: binding.max_len as u64,
        },
        attrs: binding.attrs,
        checks,
    })
}

/// The runtime's form of a tensor-map binding for `sizes`: the packed
/// strides of its dimensions (an empty one counted as 1:
/// [`TensorMapBinding::eval_dims`]), element strides 1, zero fill.
fn tiled_map(map: &TensorMapBinding, sizes: &RunSizes) -> Result<TiledMap, String> {
    let data_type = match map.dtype {
        DType::BF16 => TensorMapDataType::Bfloat16,
        DType::F16 => TensorMapDataType::Float16,
        DType::F32 => TensorMapDataType::Float32,
        DType::F64 => TensorMapDataType::Float64,
        DType::I32 => TensorMapDataType::Int32,
        DType::I64 => TensorMapDataType::Int64,
        DType::U8 | DType::Bool => TensorMapDataType::Uint8,
    };
    let swizzle = match map.swizzle {
        Swizzle::None => TensorMapSwizzle::None,
        Swizzle::B32 => TensorMapSwizzle::B32,
        Swizzle::B64 => TensorMapSwizzle::B64,
        Swizzle::B128 => TensorMapSwizzle::B128,
    };
    if map.box_dim.len() != map.dims.len() {
        return Err(format!(
            "a tensor map of {} dimensions with a box of {}",
            map.dims.len(),
            map.box_dim.len()
        ));
    }
    let global_dim = map.eval_dims(sizes);
    Ok(TiledMap {
        data_type,
        global_strides: map.packed_strides(&global_dim),
        global_dim,
        box_dim: map.box_dim.clone(),
        element_strides: vec![1; map.box_dim.len()],
        swizzle,
        nan_fill: false,
    })
}

/// The shape of an output of type `dims`: symbolic dims from `sizes`, the
/// (one) ragged dim from `used_rows` or from the element count.
fn output_shape(
    dims: &[Dim],
    sizes: &RunSizes,
    elems: usize,
    used_rows: Option<usize>,
) -> Option<Vec<usize>> {
    let mut shape = Vec::with_capacity(dims.len());
    let mut ragged = None;
    for (k, dim) in dims.iter().enumerate() {
        shape.push(match dim {
            Dim::Batch => sizes.batch as usize,
            Dim::BatchPlusOne => sizes.batch as usize + 1,
            Dim::MaxLen => sizes.max_len as usize,
            Dim::Static(n) => *n,
            Dim::Ragged(_) if ragged.is_none() => {
                ragged = Some(k);
                0
            }
            Dim::Ragged(_) => return None,
        });
    }
    if let Some(k) = ragged {
        let row: usize = shape
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .map(|(_, &d)| d)
            .product();
        let rows = match used_rows {
            Some(rows) => rows,
            None if row == 0 => 0,
            None => elems / row,
        };
        if rows.checked_mul(row)? > elems {
            return None;
        }
        shape[k] = rows;
    } else if shape.iter().product::<usize>() > elems {
        return None;
    }
    Some(shape)
}
