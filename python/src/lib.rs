//! `jagged._native`: the Rust side of the Python package `jagged`.
//!
//! It runs a builtin op of docs/ops.md, or any graph in the canonical text
//! form, on host (CPU) buffers through the PTX emulator backend of
//! [`jagged_runtime::Runtime`] and its kernel cache, and gives the op
//! reference. The Python layer (`python/jagged/`) turns torch tensors into
//! `(name, dtype, shape, bytes)` tuples and back, and registers the ops with
//! `torch.library`.
//!
//! Every entry point catches panics: a bug surfaces as `jagged.JaggedError`
//! ("internal error"), never as a `PanicException`. Bad arguments are
//! `jagged.JaggedInputError` (a `ValueError`) naming the argument.

mod cuda;
mod engine;
mod error;
mod front;
mod ops;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyString};

use jagged_ir::ops::{Activation, AttentionSpec};
use jagged_ir::{AttrKind, AttrValue, DType, Graph, Node};

use engine::HostTensor;
use error::Error;
use ops::{AttrArg, AttrType, Facts};

pyo3::create_exception!(
    _native,
    JaggedError,
    PyRuntimeError,
    "Compiling or running a jagged kernel failed."
);
pyo3::create_exception!(
    _native,
    JaggedInputError,
    PyValueError,
    "A bad argument to a jagged op (the message names it)."
);

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        match err {
            Error::Input(msg) => JaggedInputError::new_err(msg),
            Error::NotOnCuda(msg) => PyNotImplementedError::new_err(msg),
            other => JaggedError::new_err(other.to_string()),
        }
    }
}

/// Runs `f` without the GIL, turning a panic into [`Error::Internal`].
pub(crate) fn detached<T: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<T> {
    let result = py.detach(|| match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(Error::Internal(engine::panic_message(panic.as_ref()))),
    });
    Ok(result?)
}

/// A tensor as the Python layer passes it: `(name, dtype, shape, data)`,
/// `data` the elements as `bytes` (little-endian, row-major). (The buffer
/// protocol is not in the stable ABI of Python 3.10.)
type PyTensor<'py> = (String, String, Vec<usize>, Bound<'py, PyBytes>);

/// A tensor as returned: `(name, dtype, shape, bytearray)`.
type PyOut<'py> = (String, &'static str, Vec<usize>, Bound<'py, PyByteArray>);

fn host_tensor(
    name: &str,
    dtype: &str,
    shape: Vec<usize>,
    data: &Bound<'_, PyBytes>,
) -> PyResult<HostTensor> {
    let dtype = DType::from_name(dtype)
        .ok_or_else(|| Error::Input(format!("input `{name}`: unknown dtype `{dtype}`")))?;
    Ok(HostTensor {
        dtype,
        shape,
        bytes: data.as_bytes().to_vec(),
    })
}

fn host_inputs(inputs: Vec<PyTensor<'_>>) -> PyResult<Vec<(String, HostTensor)>> {
    inputs
        .into_iter()
        .map(|(name, dtype, shape, data)| {
            let t = host_tensor(&name, &dtype, shape, &data)?;
            Ok((name, t))
        })
        .collect()
}

fn py_outputs(py: Python<'_>, outputs: Vec<(String, HostTensor)>) -> Vec<PyOut<'_>> {
    outputs
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                t.dtype.name(),
                t.shape,
                PyByteArray::new(py, &t.bytes),
            )
        })
        .collect()
}

fn attr_arg(name: &str, value: &Bound<'_, PyAny>) -> PyResult<AttrArg> {
    if value.is_none() {
        Ok(AttrArg::None)
    } else if value.is_instance_of::<PyBool>() {
        Ok(AttrArg::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        let n: i64 = value
            .extract()
            .map_err(|_| Error::Input(format!("attribute `{name}`: int out of range")))?;
        Ok(AttrArg::Int(n))
    } else if value.is_instance_of::<PyFloat>() {
        Ok(AttrArg::Float(value.extract()?))
    } else if value.is_instance_of::<PyString>() {
        Ok(AttrArg::Str(value.extract()?))
    } else {
        Err(Error::Input(format!(
            "attribute `{name}`: expected None, a bool, an int, a float or a str, got {}",
            value.get_type().name()?
        ))
        .into())
    }
}

fn attr_args(attrs: &Bound<'_, PyDict>) -> PyResult<BTreeMap<String, AttrArg>> {
    let mut out = BTreeMap::new();
    for (k, v) in attrs.iter() {
        let name: String = k.extract()?;
        let arg = attr_arg(&name, &v)?;
        out.insert(name, arg);
    }
    Ok(out)
}

/// `run_op(op, inputs, attrs)`: runs the builtin op `op` on `inputs`
/// (`[(name, dtype, shape, data)]`) with `attrs` (`{name: value}`; absent or
/// `None` is the default); returns `[(name, dtype, shape, bytearray)]` in
/// the op's output order.
#[pyfunction]
fn run_op<'py>(
    py: Python<'py>,
    op: &str,
    inputs: Vec<PyTensor<'py>>,
    attrs: &Bound<'py, PyDict>,
) -> PyResult<Vec<PyOut<'py>>> {
    let def = ops::find(op)?;
    let inputs = host_inputs(inputs)?;
    let given = attr_args(attrs)?;
    if front::runs(op) {
        let outputs = detached(py, || front::run(def, inputs, &given))?;
        return Ok(py_outputs(py, outputs));
    }
    let outputs = detached(py, || {
        let facts = inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype, t.shape.clone()));
        let built = op_graph(def, facts, &given)?;
        engine::run_graph(
            &built.graph,
            built.spec_max_len,
            &inputs,
            &built.attr_values(),
        )
    })?;
    Ok(py_outputs(py, outputs))
}

/// The graph of the builtin op `def` for inputs of these `(name, dtype,
/// shape)`, with the `max_len` its spec is bucketed by and its run-time
/// attributes.
fn op_graph(
    def: &'static ops::OpDef,
    inputs: impl Iterator<Item = (String, DType, Vec<usize>)>,
    given: &BTreeMap<String, AttrArg>,
) -> Result<ops::Built, Error> {
    let facts: BTreeMap<String, Facts> = inputs
        .map(|(name, dtype, shape)| (name, Facts { dtype, shape }))
        .collect();
    ops::build(def, &facts, given)
}

/// A tensor on a CUDA device as the Python layer passes it: `(name, dtype,
/// shape, data_ptr)` (contiguous, on the call's device).
type PyDeviceTensor = (String, String, Vec<usize>, u64);

fn device_inputs(inputs: Vec<PyDeviceTensor>) -> Result<Vec<cuda::DeviceInput>, Error> {
    inputs
        .into_iter()
        .map(|(name, dtype, shape, ptr)| {
            let dtype = DType::from_name(&dtype)
                .ok_or_else(|| Error::Input(format!("input `{name}`: unknown dtype `{dtype}`")))?;
            Ok(cuda::DeviceInput {
                name,
                dtype,
                shape,
                ptr,
            })
        })
        .collect()
}

/// `run_op_cuda(op, inputs, attrs, device, stream, host, total_rows)`: runs
/// the builtin op `op` in place on CUDA tensors (`[(name, dtype, shape,
/// data_ptr)]`, all on device `device`) on the raw stream `stream`,
/// allocating through `host` (see the `cuda` module); returns `[(name,
/// flat tensor, shape)]` in the op's output order. `total_rows`: `T` when
/// the caller knows it (`dense_to_jagged`'s `total_L`). The ops of the Rust
/// front functions raise `NotImplementedError`.
#[pyfunction]
#[pyo3(signature = (op, inputs, attrs, device, stream, host, total_rows=None))]
#[allow(clippy::too_many_arguments)]
fn run_op_cuda<'py>(
    py: Python<'py>,
    op: &str,
    inputs: Vec<PyDeviceTensor>,
    attrs: &Bound<'py, PyDict>,
    device: usize,
    stream: u64,
    host: &Bound<'py, PyAny>,
    total_rows: Option<usize>,
) -> PyResult<Vec<cuda::DeviceOutput<'py>>> {
    let def = ops::find(op)?;
    if front::runs(op) {
        return Err(Error::NotOnCuda(format!(
            "jagged.{op}: CUDA tensors are not supported by this op yet (it runs through a Rust \
             front function, on the emulator only): pass CPU tensors"
        ))
        .into());
    }
    let inputs = device_inputs(inputs)?;
    let given = attr_args(attrs)?;
    let facts = inputs
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone()));
    let built = op_graph(def, facts, &given)?;
    let place = cuda::Place {
        ordinal: device,
        stream,
        host,
    };
    cuda::run_graph(
        py,
        &built.graph,
        built.spec_max_len,
        &inputs,
        &built.attr_values(),
        total_rows,
        &place,
    )
}

/// `op_graph_text(op, inputs, attrs)`: the canonical text of the graph
/// `run_op` would run for inputs of these dtypes and shapes
/// (`[(name, dtype, shape)]`).
#[pyfunction]
fn op_graph_text(
    op: &str,
    inputs: Vec<(String, String, Vec<usize>)>,
    attrs: &Bound<'_, PyDict>,
) -> PyResult<String> {
    let def = ops::find(op)?;
    let given = attr_args(attrs)?;
    let mut facts = BTreeMap::new();
    for (name, dtype, shape) in inputs {
        let dtype = DType::from_name(&dtype)
            .ok_or_else(|| Error::Input(format!("input `{name}`: unknown dtype `{dtype}`")))?;
        facts.insert(name, Facts { dtype, shape });
    }
    Ok(ops::build(def, &facts, &given)?.graph.to_string())
}

/// `op_reference()`: every builtin op as `{name, inputs, attrs, outputs}`,
/// each attribute as `{name, type, default, choices, doc}` (`type` is the
/// Python annotation; `default` Python source, `None` if required).
#[pyfunction]
fn op_reference(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let mut out = Vec::new();
    for op in ops::OPS {
        let d = PyDict::new(py);
        d.set_item("name", op.name)?;
        d.set_item("inputs", op.inputs.to_vec())?;
        d.set_item("outputs", op.outputs.to_vec())?;
        let mut attrs = Vec::new();
        for a in op.attrs {
            let ad = PyDict::new(py);
            let (ty, choices): (&str, &[&str]) = match a.ty {
                AttrType::Int => ("int", &[]),
                AttrType::OptionalInt => ("Optional[int]", &[]),
                AttrType::Float => ("float", &[]),
                AttrType::OptionalFloat => ("Optional[float]", &[]),
                AttrType::Bool => ("bool", &[]),
                AttrType::Choice(c) => ("str", c),
                AttrType::OptionalChoice(c) => ("Optional[str]", c),
            };
            ad.set_item("name", a.name)?;
            ad.set_item("type", ty)?;
            ad.set_item("default", a.default)?;
            ad.set_item("choices", choices.to_vec())?;
            ad.set_item("doc", a.doc)?;
            attrs.push(ad);
        }
        d.set_item("attrs", attrs)?;
        out.push(d);
    }
    Ok(out)
}

/// A graph parsed from its canonical text, ready to run
/// (`jagged.op(text)` wraps one).
#[pyclass(frozen, module = "jagged._native")]
struct CompiledGraph {
    graph: Graph,
}

#[pymethods]
impl CompiledGraph {
    /// Parses `text` (errors carry the line and column).
    #[new]
    fn new(text: &str) -> PyResult<CompiledGraph> {
        Ok(CompiledGraph {
            graph: engine::parse_graph(text)?,
        })
    }

    /// The graph's name.
    #[getter]
    fn name(&self) -> String {
        self.graph.name().to_string()
    }

    /// The canonical text.
    fn text(&self) -> String {
        self.graph.to_string()
    }

    /// The inputs as `[(name, dtype, dims)]`, dims as the text spells them
    /// (`%1`, `B`, `B+1`, `N`, or a number).
    fn inputs(&self) -> Vec<(String, &'static str, Vec<String>)> {
        self.graph
            .inputs()
            .map(|(_, name, ty)| {
                let dims = ty.dims.iter().map(|d| format!("{d}")).collect();
                (name.to_string(), ty.dtype.name(), dims)
            })
            .collect()
    }

    /// The declared attributes as `[(name, kind, default)]`, kind `index`
    /// or `float`, default a number or `None`.
    fn attrs(&self) -> Vec<(String, &'static str, Option<f64>)> {
        self.graph
            .attrs()
            .iter()
            .map(|a| {
                let kind = match a.kind {
                    AttrKind::Index => "index",
                    AttrKind::Float => "float",
                };
                (a.name.clone(), kind, a.default.map(|v| v.as_f64()))
            })
            .collect()
    }

    /// The sequence sets as `[(value, offsets)]`: `value` as dims spell it
    /// (`%1`), `offsets` the name of the offsets input the set is built
    /// from (truncated or not; its rows are that input's `T`), `None` for a
    /// set of compaction (`seqs_where`) or of packed pair triangles
    /// (`seqs_triu`): a data-dependent row count.
    fn seqs(&self) -> Vec<(String, Option<String>)> {
        self.graph
            .nodes()
            .iter()
            .filter_map(|(h, node)| match node {
                Node::Seqs { offsets, .. } => {
                    let root = match self.graph.node(*offsets) {
                        Node::Input { name, .. } => Some(name.clone()),
                        _ => None,
                    };
                    Some((format!("{h}"), root))
                }
                Node::SeqsWhere { .. } | Node::SeqsTriu { .. } => Some((format!("{h}"), None)),
                _ => None,
            })
            .collect()
    }

    /// The text of this graph's backward graph for the float inputs `wrt`
    /// (reverse-mode autodiff over the IR, `jagged_ir::autodiff`): its
    /// inputs are this graph's, then one cotangent `grad_<output>` per float
    /// output in output order; its outputs are `grad_<input>` for each name
    /// of `wrt`, in that order. A node with no adjoint in the IR (a gather's
    /// table, a compaction) is an error naming it.
    fn backward(&self, wrt: Vec<String>) -> PyResult<String> {
        let names: Vec<&str> = wrt.iter().map(String::as_str).collect();
        let back = jagged_ir::autodiff::backward(&self.graph, &names)
            .map_err(|e| Error::Input(format!("graph `{}`: {e}", self.graph.name())))?;
        Ok(back.to_string())
    }

    /// The outputs as `[(name, dtype, dims)]`.
    fn outputs(&self) -> Vec<(String, String, Vec<String>)> {
        self.graph
            .outputs()
            .iter()
            .map(|o| match self.graph.type_of(o.value).as_tensor() {
                Some(ty) => (
                    o.name.clone(),
                    ty.dtype.name().to_string(),
                    ty.dims.iter().map(|d| format!("{d}")).collect(),
                ),
                None => (o.name.clone(), "seqs".to_string(), Vec::new()),
            })
            .collect()
    }

    /// Runs the graph on `inputs` (`[(name, dtype, shape, data)]`) with
    /// `attrs` (`{name: number}`, declared defaults for the others);
    /// returns `[(name, dtype, shape, bytearray)]` in output order.
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyTensor<'py>>,
        attrs: &Bound<'py, PyDict>,
    ) -> PyResult<Vec<PyOut<'py>>> {
        let inputs = host_inputs(inputs)?;
        let values = self.attr_values(attrs)?;
        let graph = &self.graph;
        let outputs = detached(py, || {
            let max_len = engine::graph_spec_max_len(graph, &values);
            engine::run_graph(graph, max_len, &inputs, &values)
        })?;
        Ok(py_outputs(py, outputs))
    }

    /// [`CompiledGraph::run`] in place on CUDA tensors (`[(name, dtype,
    /// shape, data_ptr)]` on device `device`) on the raw stream `stream`,
    /// allocating through `host`; returns `[(name, flat tensor, shape)]`.
    fn run_cuda<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<PyDeviceTensor>,
        attrs: &Bound<'py, PyDict>,
        device: usize,
        stream: u64,
        host: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<cuda::DeviceOutput<'py>>> {
        let inputs = device_inputs(inputs)?;
        let values = self.attr_values(attrs)?;
        let max_len = engine::graph_spec_max_len(&self.graph, &values);
        let place = cuda::Place {
            ordinal: device,
            stream,
            host,
        };
        cuda::run_graph(py, &self.graph, max_len, &inputs, &values, None, &place)
    }
}

impl CompiledGraph {
    /// The attributes given (`{name: number}`) as the graph's values; `None`
    /// is the declared default.
    fn attr_values(&self, attrs: &Bound<'_, PyDict>) -> PyResult<Vec<(String, AttrValue)>> {
        let mut values = Vec::new();
        for (name, arg) in attr_args(attrs)? {
            let value = match (engine::graph_attr_kind(&self.graph, &name), arg) {
                (None, _) => {
                    return Err(Error::Input(format!(
                        "graph `{}` declares no attribute `{name}`",
                        self.graph.name()
                    ))
                    .into());
                }
                (Some(_), AttrArg::None) => continue,
                (Some(AttrKind::Index), AttrArg::Int(n)) if n >= 0 => AttrValue::Index(n as usize),
                (Some(AttrKind::Float), AttrArg::Int(n)) => AttrValue::Float(n as f64),
                (Some(AttrKind::Float), AttrArg::Float(x)) => AttrValue::Float(x),
                (Some(kind), arg) => {
                    return Err(Error::Input(format!(
                        "attribute `{name}`: expected {}, got {arg:?}",
                        match kind {
                            AttrKind::Index => "an int >= 0",
                            AttrKind::Float => "a float",
                        }
                    ))
                    .into());
                }
            };
            values.push((name, value));
        }
        Ok(values)
    }
}

/// `attention_backward_supported(dtype, head_dim, value_dim)`: whether the
/// backward template takes `jagged_flash_attention` of these facts.
#[pyfunction]
fn attention_backward_supported(dtype: &str, head_dim: usize, value_dim: usize) -> bool {
    DType::from_name(dtype)
        .is_some_and(|d| engine::attention_backward_supported(d, head_dim, value_dim))
}

/// The attention spec of a backward call from its inputs' facts (`q [T,
/// H, D]`, `v [T, H, Dv]`, `offsets`), `causal` and `activation`.
fn backward_spec(
    facts: &BTreeMap<String, Facts>,
    causal: bool,
    activation: &str,
) -> Result<AttentionSpec, Error> {
    let activation = match activation {
        "softmax" => Activation::Softmax,
        "silu" => Activation::Silu,
        other => {
            return Err(Error::Input(format!(
                "attention_backward: activation `{other}` (expected softmax or silu)"
            )));
        }
    };
    let get = |name: &str| {
        facts
            .get(name)
            .ok_or_else(|| Error::Input(format!("attention_backward: missing input `{name}`")))
    };
    let dims = |name: &str| -> Result<(DType, usize, usize), Error> {
        let t = get(name)?;
        match t.shape.as_slice() {
            &[_, h, d] => Ok((t.dtype, h, d)),
            other => Err(Error::Input(format!(
                "attention_backward: input `{name}` must be [T, H, D], got shape {other:?}"
            ))),
        }
    };
    let (dtype, heads, head_dim) = dims("q")?;
    let (_, _, value_dim) = dims("v")?;
    Ok(AttentionSpec {
        input_dtype: dtype,
        dtype,
        offsets: get("offsets")?.dtype,
        heads,
        head_dim,
        value_dim,
        causal,
        activation,
    })
}

/// `attention_backward(inputs, max_len, scale, causal, activation)`:
/// `[dq, dk, dv]` of `jagged_flash_attention` by the backward template.
/// `inputs`: `offsets, q, k, v, dout`, and `out, lse` for softmax.
#[pyfunction]
fn attention_backward<'py>(
    py: Python<'py>,
    inputs: Vec<PyTensor<'py>>,
    max_len: usize,
    scale: f64,
    causal: bool,
    activation: &str,
) -> PyResult<Vec<PyOut<'py>>> {
    let mut by_name: BTreeMap<String, HostTensor> = host_inputs(inputs)?.into_iter().collect();
    let facts = by_name
        .iter()
        .map(|(n, t)| {
            let f = Facts {
                dtype: t.dtype,
                shape: t.shape.clone(),
            };
            (n.clone(), f)
        })
        .collect();
    let spec = backward_spec(&facts, causal, activation)?;
    let mut take = |name: &str| {
        by_name
            .remove(name)
            .ok_or_else(|| Error::Input(format!("attention_backward: missing input `{name}`")))
    };
    let (out, lse) = if spec.activation == Activation::Softmax {
        (Some(take("out")?), Some(take("lse")?))
    } else {
        (None, None)
    };
    let inputs = engine::BackwardInputs {
        offsets: take("offsets")?,
        q: take("q")?,
        k: take("k")?,
        v: take("v")?,
        out,
        dout: take("dout")?,
        lse,
    };
    let grads = detached(py, || {
        let [dq, dk, dv] = engine::attention_backward(&spec, max_len, scale, &inputs)?;
        Ok(vec![
            ("dq".to_string(), dq),
            ("dk".to_string(), dk),
            ("dv".to_string(), dv),
        ])
    })?;
    Ok(py_outputs(py, grads))
}

/// `attention_backward_cuda(inputs, max_len, scale, causal, activation,
/// device, stream, host)`: [`attention_backward`] in place on CUDA tensors
/// (`[(name, dtype, shape, data_ptr)]` on device `device`) on the raw
/// stream `stream`, allocating through `host`; returns `[(name, flat
/// tensor, shape)]` for `dq, dk, dv`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn attention_backward_cuda<'py>(
    py: Python<'py>,
    inputs: Vec<PyDeviceTensor>,
    max_len: usize,
    scale: f64,
    causal: bool,
    activation: &str,
    device: usize,
    stream: u64,
    host: &Bound<'py, PyAny>,
) -> PyResult<Vec<cuda::DeviceOutput<'py>>> {
    let inputs = device_inputs(inputs)?;
    let facts = inputs
        .iter()
        .map(|t| {
            let f = Facts {
                dtype: t.dtype,
                shape: t.shape.clone(),
            };
            (t.name.clone(), f)
        })
        .collect();
    let spec = backward_spec(&facts, causal, activation)?;
    let place = cuda::Place {
        ordinal: device,
        stream,
        host,
    };
    cuda::attention_backward(py, &spec, max_len, scale, &inputs, &place)
}

/// `runs_on_cuda(op)`: whether the builtin `op` takes CUDA tensors (the
/// ops of one graph do; those of the Rust front functions not yet).
#[pyfunction]
fn runs_on_cuda(op: &str) -> PyResult<bool> {
    ops::find(op)?;
    Ok(!front::runs(op))
}

/// `check_offsets(name, offsets, rows=None)`: the runtime's offsets check
/// (`[B+1]`, starting at 0, non-decreasing, ending at `rows` when given) on
/// values read by the caller; `JaggedInputError` naming `name`.
#[pyfunction]
#[pyo3(signature = (name, offsets, rows=None))]
fn check_offsets(name: &str, offsets: Vec<i64>, rows: Option<usize>) -> PyResult<()> {
    jagged_ir::tensor::check_offsets(name, &offsets, rows)
        .map_err(|e| Error::Input(e.to_string()))?;
    Ok(())
}

/// `check_lengths(name, lengths, dtype)`: the runtime's check of lengths a
/// scan makes offsets of (non-negative, the sum within `dtype`, `i32` or
/// `i64`); `JaggedInputError` naming `name`.
#[pyfunction]
fn check_lengths(name: &str, lengths: Vec<i64>, dtype: &str) -> PyResult<()> {
    let dtype = DType::from_name(dtype)
        .filter(|d| d.is_index())
        .ok_or_else(|| Error::Input(format!("check_lengths: dtype `{dtype}` is not i32 or i64")))?;
    jagged_ir::tensor::check_lengths(name, &lengths, dtype)
        .map_err(|e| Error::Input(e.to_string()))?;
    Ok(())
}

/// `device_name()`: where the kernels run (the emulator).
#[pyfunction]
fn device_name(py: Python<'_>) -> PyResult<String> {
    detached(py, engine::device_name)
}

/// `set_arch(arch=None)`: the arch the kernels are compiled for from the
/// next call on, on the CPU and every CUDA device (`"sm_80"`, `"sm_90a"`;
/// `None`: `JAGGED_ARCH`, else the device's); `JaggedInputError` for a
/// name that is no arch.
#[pyfunction]
#[pyo3(signature = (arch=None))]
fn set_arch(arch: Option<&str>) -> PyResult<()> {
    Ok(engine::set_arch(arch)?)
}

/// `stats()`: `{name: count}` of the runtime (runs, code-generator runs and
/// time, kernel-cache hits, module loads, backward kernels compiled).
#[pyfunction]
fn stats(py: Python<'_>) -> PyResult<Vec<(&'static str, u64)>> {
    detached(py, engine::stats)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("JaggedError", m.py().get_type::<JaggedError>())?;
    m.add("JaggedInputError", m.py().get_type::<JaggedInputError>())?;
    m.add_class::<CompiledGraph>()?;
    m.add_function(wrap_pyfunction!(run_op, m)?)?;
    m.add_function(wrap_pyfunction!(run_op_cuda, m)?)?;
    m.add_function(wrap_pyfunction!(runs_on_cuda, m)?)?;
    m.add_function(wrap_pyfunction!(check_offsets, m)?)?;
    m.add_function(wrap_pyfunction!(check_lengths, m)?)?;
    m.add_function(wrap_pyfunction!(op_graph_text, m)?)?;
    m.add_function(wrap_pyfunction!(op_reference, m)?)?;
    m.add_function(wrap_pyfunction!(attention_backward_supported, m)?)?;
    m.add_function(wrap_pyfunction!(attention_backward, m)?)?;
    m.add_function(wrap_pyfunction!(attention_backward_cuda, m)?)?;
    m.add_function(wrap_pyfunction!(device_name, m)?)?;
    m.add_function(wrap_pyfunction!(set_arch, m)?)?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    Ok(())
}
