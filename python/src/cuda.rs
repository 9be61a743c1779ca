//! CUDA tensors: a graph run in place on PyTorch's device memory, on
//! PyTorch's current stream, in the device's primary context (the one
//! PyTorch uses).
//!
//! The Python layer passes each input's dtype, shape and `data_ptr()`, the
//! device ordinal, the raw `CUstream` of `torch.cuda.current_stream(device)`
//! and a *host* object whose methods this module calls back (with the GIL):
//!
//! - `alloc(dtype, elems, role)`: a zeroed flat tensor on the device (an
//!   `output`, or the compiled plan's `scratch`), from PyTorch's caching
//!   allocator on the current stream, so it is stream-ordered with the
//!   launches and reused only after them;
//! - `check(kind, name, rows_or_dtype)`: the input contents' checks the
//!   runtime does on the host for CPU tensors (offsets, lengths), done the
//!   Python layer's way (on the device by default, without a sync);
//! - `read_last(name)` and `read_index(tensor, index)`: the synchronizing
//!   reads of a data-dependent size (`T = offsets[B]` when no input has rows
//!   on the offsets, a compaction's row count), the only syncs.
//!
//! The kernels come from the runtime's kernel cache for the device's arch
//! (one [`Runtime`] per device ordinal, opened on first use) and are
//! launched with the raw driver API ([`Runtime::launch_external`]).
//! Nothing here is exercised without a GPU: the binding and planning it
//! relies on ([`jagged_runtime::bind_external`], [`launch_plan`]) are
//! tested on the emulator in the runtime's tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use jagged_codegen::CompiledKernel;
use jagged_ir::bind::InputDesc;
use jagged_ir::ops::AttentionSpec;
use jagged_ir::{AttrValue, DType, Graph};
use jagged_runtime::{
    BufferRole, GraphRunError, InputCheck, KernelArg, LaunchDims, LaunchTarget, ModuleId, Runtime,
    TiledMap, bind_external, launch_plan,
};
use pyo3::prelude::*;

use crate::engine::{self, BackwardKernel, guarded, spec_for};
use crate::error::Error;

/// An input tensor on the device: name, dtype, shape and device address.
#[derive(Clone, Debug)]
pub struct DeviceInput {
    /// The graph input's name.
    pub name: String,
    /// The element type.
    pub dtype: DType,
    /// The shape (the tensor is contiguous).
    pub shape: Vec<usize>,
    /// `tensor.data_ptr()`.
    pub ptr: u64,
}

/// The device, stream and host object of one call.
pub struct Place<'a, 'py> {
    /// The CUDA device ordinal (the tensors').
    pub ordinal: usize,
    /// `torch.cuda.current_stream(device).cuda_stream`.
    pub stream: u64,
    /// The Python host object (`alloc`, `check`, `read_last`, `read_index`).
    pub host: &'a Bound<'py, PyAny>,
}

/// One device's runtime, and a number no other opened runtime had (a
/// module handle is only valid in the runtime that loaded it).
struct Opened {
    runtime: Runtime,
    id: u64,
}

static DEVICES: Mutex<BTreeMap<usize, Option<Opened>>> = Mutex::new(BTreeMap::new());

/// Runs `f` on the runtime of device `ordinal` (opened on first use; see
/// [`guarded`] for panics), set to the arch `jagged.set_arch` chose.
fn with_device<T>(
    ordinal: usize,
    f: impl FnOnce(&mut Opened) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut devices = DEVICES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let slot = devices.entry(ordinal).or_insert(None);
    let open = || {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let runtime = Runtime::with_cuda_device(ordinal)
            .map_err(|e| Error::Run(format!("cannot open CUDA device {ordinal}: {e}")))?;
        Ok(Opened {
            runtime,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        })
    };
    guarded(slot, open, |d| {
        engine::apply_chosen_arch(&mut d.runtime)?;
        f(d)
    })
}

/// The compiled module to launch: the kernel, its handle, and the runtime
/// that loaded it.
struct Loaded {
    kernel: Arc<CompiledKernel>,
    module: ModuleId,
    runtime_id: u64,
}

/// `graph` compiled for `spec_max_len` and device `ordinal`'s arch, through
/// the runtime's kernel cache (memory and disk), loaded on the device.
fn load(graph: &Graph, spec_max_len: u64, ordinal: usize) -> Result<Loaded, Error> {
    with_device(ordinal, |d| {
        let spec = spec_for(graph, spec_max_len, &d.runtime)?;
        let (kernel, module) = d.runtime.compile_graph(graph, &spec)?;
        Ok(Loaded {
            kernel,
            module,
            runtime_id: d.id,
        })
    })
}

/// The attention backward template's kernel for device `ordinal`'s arch
/// (see [`engine::backward_kernel`]), loaded on the device.
fn load_backward(
    spec: &AttentionSpec,
    max_len: usize,
    ordinal: usize,
) -> Result<(BackwardKernel, Loaded), Error> {
    with_device(ordinal, |d| {
        let entry = engine::backward_kernel(spec, max_len, d.runtime.preferred_arch())?;
        let kernel = entry.1.clone();
        let module = d
            .runtime
            .load_module(&kernel.ptx)
            .map_err(|e| Error::Run(e.to_string()))?;
        Ok((
            entry,
            Loaded {
                kernel,
                module,
                runtime_id: d.id,
            },
        ))
    })
}

/// An output of a run: name, flat tensor (at least the shape's elements),
/// shape.
pub type DeviceOutput<'py> = (String, Bound<'py, PyAny>, Vec<usize>);

/// A flat device tensor the host object allocated, and its address.
pub struct TorchBuffer<'py> {
    /// The tensor.
    pub tensor: Bound<'py, PyAny>,
    ptr: u64,
}

/// [`LaunchTarget`] on PyTorch's memory and stream. A Python callback's
/// exception is kept (and the plan stopped with a placeholder error) so
/// that the caller raises it unchanged.
struct TorchTarget<'a, 'py> {
    place: &'a Place<'a, 'py>,
    loaded: &'a Loaded,
    failure: Option<PyErr>,
}

impl<'py> TorchTarget<'_, 'py> {
    /// `r`'s value, or the error kept and a placeholder returned.
    fn keep<T>(&mut self, r: PyResult<T>) -> Result<T, GraphRunError> {
        r.map_err(|e| {
            let what = e.to_string();
            self.failure = Some(e);
            GraphRunError::Unsupported(format!("a Python callback failed: {what}"))
        })
    }

    /// `f` on the runtime that loaded the module, refused if the device's
    /// runtime was reopened since (the module handle is only valid in the
    /// runtime that loaded it). The device's lock is taken without the
    /// GIL: a thread holding it while compiling never waits for the GIL.
    fn on_loaded_runtime<T: Send>(
        &mut self,
        f: impl FnOnce(&mut Runtime) -> Result<T, Error> + Send,
    ) -> Result<T, GraphRunError> {
        let (ordinal, runtime_id) = (self.place.ordinal, self.loaded.runtime_id);
        let done = self.place.host.py().detach(|| {
            with_device(ordinal, |d| {
                if d.id != runtime_id {
                    return Err(Error::Run(format!(
                        "CUDA device {ordinal}'s runtime was reopened during the call; run it again"
                    )));
                }
                f(&mut d.runtime)
            })
        });
        self.keep(done.map_err(PyErr::from))
    }
}

impl<'py> LaunchTarget for TorchTarget<'_, 'py> {
    type Buffer = TorchBuffer<'py>;

    fn alloc(
        &mut self,
        dtype: DType,
        elems: usize,
        role: BufferRole,
    ) -> Result<TorchBuffer<'py>, GraphRunError> {
        let role = match role {
            BufferRole::Output => "output",
            BufferRole::Scratch => "scratch",
        };
        let made = self
            .place
            .host
            .call_method1("alloc", (dtype.name(), elems, role))
            .and_then(|tensor| {
                let ptr: u64 = tensor.call_method0("data_ptr")?.extract()?;
                Ok(TorchBuffer { tensor, ptr })
            });
        self.keep(made)
    }

    fn arg(&self, buffer: &TorchBuffer<'py>) -> KernelArg {
        KernelArg::U64(buffer.ptr)
    }

    fn launch(
        &mut self,
        entry: &str,
        dims: &LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), GraphRunError> {
        let stream = self.place.stream;
        let module = self.loaded.module;
        self.on_loaded_runtime(|runtime| {
            // SAFETY: `stream` is `torch.cuda.current_stream(device)`
            // of this device (the Python layer checked every tensor is
            // on it), a live stream of its primary context, which this
            // runtime's context is (`CudaContext::new` retains the
            // primary context). Every address in `args` is the
            // `data_ptr()` of a contiguous tensor on that device: an
            // input whose dtype and shape `bind_external` checked
            // against the graph's type (so it holds what the kernel's
            // metadata says it reads), or an output or scratch tensor
            // allocated for the sizes the metadata gives; every tensor map
            // in `args` was encoded by `tensor_map` below over such an
            // input's address, with the dimensions the metadata gives it.
            // The tensors come from PyTorch's caching allocator: the
            // outputs and scratch on this stream (freed blocks are reused
            // in stream order, after these kernels), the inputs alive in
            // the caller, whose reuse across streams is PyTorch's rule
            // (`record_stream`) as for any op.
            unsafe {
                runtime
                    .launch_external(module, entry, dims, args, stream)
                    .map_err(|e| Error::Run(e.to_string()))
            }
        })
    }

    fn read_index(
        &mut self,
        _name: &str,
        buffer: &TorchBuffer<'py>,
        _dtype: DType,
        _elems: usize,
        index: usize,
    ) -> Result<i64, GraphRunError> {
        let read = self
            .place
            .host
            .call_method1("read_index", (&buffer.tensor, index))
            .and_then(|v| v.extract::<i64>());
        self.keep(read)
    }

    /// The map over the input tensor at `input`'s address (its `data_ptr()`),
    /// encoded on the host (`cuTensorMapEncodeTiled` records the address:
    /// no device access, no synchronization with PyTorch's stream).
    fn tensor_map(&mut self, input: KernelArg, map: &TiledMap) -> Result<KernelArg, GraphRunError> {
        let KernelArg::U64(address) = input else {
            return Err(GraphRunError::Unsupported(format!(
                "a tensor map over {input:?}, not a device address"
            )));
        };
        self.on_loaded_runtime(|runtime| {
            runtime
                .tensor_map_at(address, map)
                .map_err(|e| Error::Run(e.to_string()))
        })
    }
}

/// Runs `graph` (specialized for `spec_max_len`) on device tensors in
/// place; returns each output as `(name, flat tensor, shape)` in the graph's
/// order (the tensor may be longer than the shape: a compaction's rows
/// past those written). `total_rows`, when given, is `T` where no input
/// has rows on the offsets (`dense_to_jagged`'s `total_L`); else it is read.
pub fn run_graph<'py>(
    py: Python<'py>,
    graph: &Graph,
    spec_max_len: u64,
    inputs: &[DeviceInput],
    attrs: &[(String, AttrValue)],
    total_rows: Option<usize>,
    place: &Place<'_, 'py>,
) -> PyResult<Vec<DeviceOutput<'py>>> {
    let ordinal = place.ordinal;
    let loaded = crate::detached(py, || load(graph, spec_max_len, ordinal))?;
    run_loaded(graph, &loaded, inputs, attrs, total_rows, place)
}

/// `dq, dk, dv` of `jagged_flash_attention` by the backward template on
/// device tensors in place (`inputs` named as [`engine::backward_kernel`]
/// says), as [`run_graph`] returns outputs.
pub fn attention_backward<'py>(
    py: Python<'py>,
    spec: &AttentionSpec,
    max_len: usize,
    scale: f64,
    inputs: &[DeviceInput],
    place: &Place<'_, 'py>,
) -> PyResult<Vec<DeviceOutput<'py>>> {
    let ordinal = place.ordinal;
    let (entry, loaded) = crate::detached(py, || load_backward(spec, max_len, ordinal))?;
    let attrs = engine::backward_attrs(max_len, scale);
    run_loaded(&entry.0, &loaded, inputs, &attrs, None, place)
}

/// Binds, checks and launches `loaded` (compiled from `graph`).
fn run_loaded<'py>(
    graph: &Graph,
    loaded: &Loaded,
    inputs: &[DeviceInput],
    attrs: &[(String, AttrValue)],
    total_rows: Option<usize>,
    place: &Place<'_, 'py>,
) -> PyResult<Vec<DeviceOutput<'py>>> {
    let described: Vec<InputDesc<'_>> = inputs
        .iter()
        .map(|t| InputDesc {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
        })
        .collect();
    let attrs: Vec<(&str, AttrValue)> = attrs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut failure = None;
    let bound = bind_external(graph, &described, &attrs, |name| match total_rows {
        Some(t) => Ok(t),
        None => place
            .host
            .call_method1("read_last", (name,))
            .and_then(|v| v.extract::<usize>())
            .map_err(|e| {
                let what = e.to_string();
                failure = Some(e);
                GraphRunError::Unsupported(format!("reading offsets[B] failed: {what}"))
            }),
    });
    let bound = match (bound, failure) {
        (_, Some(e)) => return Err(e),
        (b, None) => b.map_err(Error::from)?,
    };
    for check in &bound.checks {
        match check {
            InputCheck::Offsets { name, rows } => {
                place.host.call_method1("check", ("offsets", name, *rows))?;
            }
            InputCheck::Lengths { name, dtype } => {
                place
                    .host
                    .call_method1("check", ("lengths", name, dtype.name()))?;
            }
        }
    }
    let args: Vec<KernelArg> = graph
        .inputs()
        .map(|(_, name, _)| {
            inputs
                .iter()
                .find(|t| t.name == name)
                .map(|t| KernelArg::U64(t.ptr))
                .ok_or_else(|| Error::Input(format!("missing input `{name}`")))
        })
        .collect::<Result<_, Error>>()?;
    let mut target = TorchTarget {
        place,
        loaded,
        failure: None,
    };
    let planned = launch_plan(
        graph,
        &loaded.kernel,
        &bound.sizes,
        &bound.attrs,
        &args,
        &mut target,
    );
    if let Some(e) = target.failure.take() {
        return Err(e);
    }
    // The scratch tensors are dropped here, after the launches were
    // submitted: their blocks return to PyTorch's cache for this stream.
    let planned = planned.map_err(Error::from)?;
    Ok(planned
        .outputs
        .into_iter()
        .map(|(name, buffer, shape)| (name, buffer.tensor, shape))
        .collect())
}
