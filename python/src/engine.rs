//! The process's emulator runtime and what runs on it: a graph on host
//! tensors (through the runtime's kernel cache), and the flash-attention
//! backward template.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use jagged_codegen::templates::attention_bwd::compile_attention_backward;
use jagged_codegen::{Arch, CompiledKernel, ParamBinding, Spec};
use jagged_ir::ops::{Activation, AttentionSpec};
use jagged_ir::{
    AttrKind, AttrValue, DType, DenseTensor, Dim, Graph, GraphBuilder, MAX_LEN, TensorData,
    TensorType,
};
use jagged_runtime::{BackendKind, Runtime, arch_from_env, parse_arch};

use crate::error::Error;

/// A tensor crossing the Python boundary: dtype, shape and its elements as
/// little-endian bytes (row-major).
#[derive(Clone, Debug)]
pub struct HostTensor {
    /// The element type.
    pub dtype: DType,
    /// The shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub bytes: Vec<u8>,
}

impl HostTensor {
    fn to_dense(&self, name: &str) -> Result<DenseTensor, Error> {
        let data = TensorData::from_le_bytes(self.dtype, &self.bytes).ok_or_else(|| {
            Error::Input(format!(
                "input `{name}`: {} bytes are no whole number of {} elements",
                self.bytes.len(),
                self.dtype
            ))
        })?;
        DenseTensor::new(self.shape.clone(), data)
            .map_err(|e| Error::Input(format!("input `{name}`: {e}")))
    }

    fn from_dense(t: &DenseTensor) -> HostTensor {
        HostTensor {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            bytes: t.data().to_le_bytes(),
        }
    }
}

/// What the process keeps between calls.
pub(crate) struct State {
    /// The emulator runtime.
    pub(crate) runtime: Runtime,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// An attention backward kernel (rewired to its wrapper graph) and the
/// wrapper graph.
pub(crate) type BackwardKernel = Arc<(Graph, Arc<CompiledKernel>)>;

/// The attention backward kernels compiled so far, by attention spec and
/// code-generator spec (which holds the arch): the emulator's and each CUDA
/// device's.
static BACKWARD: Mutex<BTreeMap<String, BackwardKernel>> = Mutex::new(BTreeMap::new());

/// The arch `jagged.set_arch` chose for every runtime (`None`: the
/// device's); `None` until it is first called, and the runtimes keep the
/// arch they opened with (`JAGGED_ARCH`, else the device's).
static CHOSEN_ARCH: Mutex<Option<Option<Arch>>> = Mutex::new(None);

/// `jagged.set_arch`: the kernels of every runtime (the emulator's and each
/// CUDA device's) are compiled for the arch named `name` from the next call
/// on; `None` goes back to `JAGGED_ARCH`, else the device's arch. A name
/// that is no arch is an [`Error::Input`]; an arch a device cannot run is
/// an [`Error::Run`] of the next call on that device.
pub fn set_arch(name: Option<&str>) -> Result<(), Error> {
    let arch = match name {
        Some(name) => parse_arch("jagged.set_arch", name).map(Some),
        None => arch_from_env(),
    }
    .map_err(|e| Error::Input(e.to_string()))?;
    *CHOSEN_ARCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(arch);
    Ok(())
}

/// Sets `runtime` to the arch `jagged.set_arch` chose, if it was called.
pub(crate) fn apply_chosen_arch(runtime: &mut Runtime) -> Result<(), Error> {
    let chosen = *CHOSEN_ARCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match chosen {
        Some(arch) if arch != Some(runtime.preferred_arch()) => runtime
            .set_arch(arch)
            .map_err(|e| Error::Run(e.to_string())),
        _ => Ok(()),
    }
}

/// Runs `f` on the process's emulator runtime (opened on first use), set
/// to the arch `jagged.set_arch` chose. A panic inside `f` is an
/// [`Error::Internal`], and the runtime is dropped (the next call opens a
/// fresh one) since the panic may have left it half-way through a run.
pub(crate) fn with_state<T>(f: impl FnOnce(&mut State) -> Result<T, Error>) -> Result<T, Error> {
    let mut guard = STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let open = || {
        let runtime = Runtime::with_backend(BackendKind::Emu)
            .map_err(|e| Error::Run(format!("cannot open the emulator: {e}")))?;
        Ok(State { runtime })
    };
    guarded(&mut guard, open, |state| {
        apply_chosen_arch(&mut state.runtime)?;
        f(state)
    })
}

/// Runs `f` on the state in `slot`, made by `open` first if there is none.
/// A panic inside `f` is an [`Error::Internal`] and empties `slot` (the
/// next call opens a fresh state), since the panic may have left the state
/// half-way through a run.
pub(crate) fn guarded<S, T>(
    slot: &mut Option<S>,
    open: impl FnOnce() -> Result<S, Error>,
    f: impl FnOnce(&mut S) -> Result<T, Error>,
) -> Result<T, Error> {
    if slot.is_none() {
        *slot = Some(open()?);
    }
    let Some(state) = slot.as_mut() else {
        return Err(Error::Internal("no runtime".to_string()));
    };
    match catch_unwind(AssertUnwindSafe(|| f(state))) {
        Ok(result) => result,
        Err(panic) => {
            *slot = None;
            Err(Error::Internal(panic_message(panic.as_ref())))
        }
    }
}

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

/// The device the kernels run on, in words.
pub fn device_name() -> Result<String, Error> {
    with_state(|s| Ok(s.runtime.device_name()))
}

/// The kernel cache's and the runtime's counters, as `(name, value)` pairs.
pub fn stats() -> Result<Vec<(&'static str, u64)>, Error> {
    with_state(|s| {
        let g = s.runtime.graph_run_stats();
        Ok(vec![
            ("runs", g.runs),
            ("codegen_runs", g.codegen_runs),
            ("codegen_micros", g.codegen_time.as_micros() as u64),
            ("kernel_cache_hits", g.kernel_cache_hits),
            ("module_loads", g.module_loads),
            ("backward_kernels", backward_kernels().len() as u64),
        ])
    })
}

fn dense_inputs(inputs: &[(String, HostTensor)]) -> Result<Vec<(String, DenseTensor)>, Error> {
    inputs
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.to_dense(name)?)))
        .collect()
}

fn host_outputs(outputs: BTreeMap<String, DenseTensor>) -> Vec<(String, HostTensor)> {
    outputs
        .iter()
        .map(|(name, t)| (name.clone(), HostTensor::from_dense(t)))
        .collect()
}

/// The spec of `graph` for `max_len` on `runtime`.
pub(crate) fn spec_for(graph: &Graph, max_len: u64, runtime: &Runtime) -> Result<Spec, Error> {
    Spec::for_graph(graph, max_len, runtime.preferred_arch())
        .map_err(|e| Error::Input(format!("graph `{}`: {e}", graph.name())))
}

/// Runs `graph` (specialized for `spec_max_len`) on host tensors; returns
/// the outputs by name, in the graph's output order.
pub fn run_graph(
    graph: &Graph,
    spec_max_len: u64,
    inputs: &[(String, HostTensor)],
    attrs: &[(String, AttrValue)],
) -> Result<Vec<(String, HostTensor)>, Error> {
    let dense = dense_inputs(inputs)?;
    let named: Vec<(&str, &DenseTensor)> = dense.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let attrs: Vec<(&str, AttrValue)> = attrs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let outputs = with_state(|s| {
        let spec = spec_for(graph, spec_max_len, &s.runtime)?;
        Ok(s.runtime.run_graph_host(graph, &spec, &named, &attrs)?)
    })?;
    let mut by_name = host_outputs(outputs);
    // The graph's output order (the runtime returns them sorted by name).
    let mut ordered = Vec::with_capacity(by_name.len());
    for out in graph.outputs() {
        if let Some(k) = by_name.iter().position(|(n, _)| *n == out.name) {
            ordered.push(by_name.swap_remove(k));
        }
    }
    ordered.extend(by_name);
    Ok(ordered)
}

/// Parses a graph in the canonical text form.
pub fn parse_graph(text: &str) -> Result<Graph, Error> {
    Graph::parse(text)
        .map_err(|e| Error::Input(format!("graph text:{}:{}: {}", e.line, e.column, e.message)))
}

/// The `max_len` a graph's spec is bucketed by: the attribute given, else
/// its declared default, else 0.
pub fn graph_spec_max_len(graph: &Graph, attrs: &[(String, AttrValue)]) -> u64 {
    let given = attrs.iter().find(|(n, _)| n == MAX_LEN).map(|(_, v)| *v);
    let declared = || {
        graph
            .attrs()
            .iter()
            .find(|a| a.name == MAX_LEN)
            .and_then(|a| a.default)
    };
    match given.or_else(declared) {
        Some(AttrValue::Index(n)) => n as u64,
        _ => 0,
    }
}

/// The kinds of a graph's declared attributes, by name.
pub fn graph_attr_kind(graph: &Graph, name: &str) -> Option<AttrKind> {
    graph
        .attrs()
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.kind)
}

/// Whether the backward template takes attention of these facts.
pub fn attention_backward_supported(dtype: DType, head_dim: usize, value_dim: usize) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
        && matches!(head_dim, 32 | 64 | 128 | 256)
        && value_dim == head_dim
}

/// The tensors of an attention backward: `out` and `lse` with softmax only.
pub struct BackwardInputs {
    /// `offsets [B+1]`.
    pub offsets: HostTensor,
    /// `q [T, H, D]`.
    pub q: HostTensor,
    /// `k [T, H, D]`.
    pub k: HostTensor,
    /// `v [T, H, D]`.
    pub v: HostTensor,
    /// `out [T, H, D]` (softmax).
    pub out: Option<HostTensor>,
    /// `dout [T, H, D]`.
    pub dout: HostTensor,
    /// `lse [T, H]` f32 (softmax).
    pub lse: Option<HostTensor>,
}

/// The wrapper graph the backward kernel runs under: inputs `offsets, q,
/// k, v, (out, dout, lse | dout)`, outputs `dq, dk, dv` of `q`'s type. Its
/// nodes only give the runtime the inputs' and outputs' types (for binding
/// and allocation); the kernel computes the outputs.
fn backward_graph(spec: &AttentionSpec) -> Result<Graph, Error> {
    let mut b = GraphBuilder::new("jagged_flash_attention_backward");
    b.declare_attr(MAX_LEN, AttrKind::Index, None);
    b.declare_attr("scale", AttrKind::Float, None);
    let o = b.input(
        "offsets",
        TensorType::new(spec.offsets, vec![Dim::BatchPlusOne]),
    );
    let s = b.seqs(o, true);
    let (h, d) = (spec.heads, spec.head_dim);
    let ty = |dtype| TensorType::jagged(dtype, s, &[h, d]);
    let q = b.input("q", ty(spec.input_dtype));
    let k = b.input("k", ty(spec.input_dtype));
    let v = b.input("v", ty(spec.input_dtype));
    if spec.activation == Activation::Softmax {
        b.input("out", ty(spec.input_dtype));
        b.input("dout", ty(spec.input_dtype));
        b.input("lse", TensorType::jagged(DType::F32, s, &[h]));
    } else {
        b.input("dout", ty(spec.input_dtype));
    }
    for (name, x) in [("dq", q), ("dk", k), ("dv", v)] {
        let y = b.neg(x);
        b.output(name, y);
    }
    b.finish()
        .map_err(|e| Error::Internal(format!("attention backward graph: {e}")))
}

/// The backward kernel's inputs are numbered `q, k, v, (out, dout, lse |
/// dout), offsets`; the wrapper graph puts `offsets` first (a jagged
/// input's type names the sequence set built from it).
fn rewire(mut kernel: CompiledKernel, inputs: usize) -> CompiledKernel {
    for launch in &mut kernel.launches {
        for param in &mut launch.params {
            if let ParamBinding::Input(i) = param {
                *i = if *i + 1 == inputs { 0 } else { *i + 1 };
            }
        }
    }
    kernel
}

/// The table of compiled backward kernels.
fn backward_kernels() -> std::sync::MutexGuard<'static, BTreeMap<String, BackwardKernel>> {
    BACKWARD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The backward template's kernel for `spec` on `max_len` and `arch`, with
/// its wrapper graph (compiled once per process): f16 / bf16, `D = Dv` of
/// 32, 64, 128 or 256, `dtype` the inputs'. Its inputs, by name: `offsets,
/// q, k, v`, then `out, dout, lse` (softmax) or `dout` (silu).
pub(crate) fn backward_kernel(
    spec: &AttentionSpec,
    max_len: usize,
    arch: Arch,
) -> Result<BackwardKernel, Error> {
    if !attention_backward_supported(spec.input_dtype, spec.head_dim, spec.value_dim)
        || spec.dtype != spec.input_dtype
    {
        return Err(Error::Input(format!(
            "the attention backward template takes f16 / bf16 with D = Dv in 32, 64, 128, 256; got {} D={} Dv={}",
            spec.input_dtype, spec.head_dim, spec.value_dim
        )));
    }
    let forward = jagged_ir::ops::jagged_flash_attention(spec)
        .map_err(|e| Error::Input(format!("jagged_flash_attention: {e}")))?;
    let cspec = Spec::for_graph(&forward, max_len as u64, arch)
        .map_err(|e| Error::Input(format!("jagged_flash_attention: {e}")))?;
    let key = format!("{spec:?} {cspec}");
    let mut table = backward_kernels();
    if let Some(entry) = table.get(&key) {
        return Ok(entry.clone());
    }
    let kernel = compile_attention_backward(&forward, &cspec)
        .map_err(|e| Error::Run(format!("attention backward: {e}")))?;
    let inputs = match spec.activation {
        Activation::Softmax => 7,
        Activation::Silu => 5,
    };
    let entry = Arc::new((backward_graph(spec)?, Arc::new(rewire(kernel, inputs))));
    table.insert(key, entry.clone());
    Ok(entry)
}

/// `dq, dk, dv` of `jagged_flash_attention` by the backward template
/// (f16 / bf16, `D` of 32, 64, 128 or 256, `Dv = D`) on the emulator.
pub fn attention_backward(
    spec: &AttentionSpec,
    max_len: usize,
    scale: f64,
    inputs: &BackwardInputs,
) -> Result<[HostTensor; 3], Error> {
    let mut named = vec![
        ("offsets", &inputs.offsets),
        ("q", &inputs.q),
        ("k", &inputs.k),
        ("v", &inputs.v),
    ];
    match (&inputs.out, &inputs.lse, spec.activation) {
        (Some(out), Some(lse), Activation::Softmax) => {
            named.extend([("out", out), ("dout", &inputs.dout), ("lse", lse)]);
        }
        (_, _, Activation::Silu) => named.push(("dout", &inputs.dout)),
        _ => {
            return Err(Error::Input(
                "the softmax attention backward needs `out` and `lse`".to_string(),
            ));
        }
    }
    let dense: Vec<(&str, DenseTensor)> = named
        .iter()
        .map(|(n, t)| Ok((*n, t.to_dense(n)?)))
        .collect::<Result<_, Error>>()?;
    let dense_named: Vec<(&str, &DenseTensor)> = dense.iter().map(|(n, t)| (*n, t)).collect();
    let attrs = backward_attrs(max_len, scale);
    let attrs: Vec<(&str, AttrValue)> = attrs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let arch = with_state(|s| Ok(s.runtime.preferred_arch()))?;
    let entry = backward_kernel(spec, max_len, arch)?;
    let (graph, kernel) = entry.as_ref();
    let outputs = with_state(|s| {
        Ok(s.runtime
            .run_compiled_host(graph, kernel, &dense_named, &attrs)?)
    })?;
    let get = |name: &str| {
        outputs
            .get(name)
            .map(HostTensor::from_dense)
            .ok_or_else(|| Error::Internal(format!("attention backward: no output `{name}`")))
    };
    Ok([get("dq")?, get("dk")?, get("dv")?])
}

/// The backward kernel's attributes: `max_len` and `scale`.
pub(crate) fn backward_attrs(max_len: usize, scale: f64) -> Vec<(String, AttrValue)> {
    vec![
        (MAX_LEN.to_string(), AttrValue::Index(max_len)),
        ("scale".to_string(), AttrValue::Float(scale)),
    ]
}
