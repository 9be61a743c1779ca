//! The builtin ops that run through the Rust crate's front functions
//! (`jagged::ops::quantize`, `jagged::ops::quantize_train`,
//! `jagged::ops::interactions`, `jagged::ops::events`) rather than as one
//! graph (the interactions: one kernel each, their `tf32` variants chosen by
//! the front function):
//! several kernels in a row (`residual_quantize`'s levels, `session_segment`
//! then `complete_cumsum`, `event_prune`'s selection then one compaction per
//! feature) or host steps around them (a dense input's row split, the
//! `D = 0` cases, k-means' init and update sums for `rq_train` / `pq_train`).
//!
//! [`run`] checks every input on the host first (dtype, rank, the offsets'
//! rules against the rows they index), so that an error names the argument
//! as the Python signature spells it; then it uploads the inputs to the
//! process's emulator runtime, calls the front function, downloads the
//! outputs and frees every buffer it made.

use std::collections::{BTreeMap, HashSet};

use jagged::KernelError;
use jagged::ops::events::{self, DeviceNested, EventsError, PruneOptions, Reduce};
use jagged::ops::interactions::{self, InteractionOptions};
use jagged::ops::quantize::{self, QuantizeError, ResidualQuantizeOptions};
use jagged::ops::quantize_train::{self, KMeansInit, KMeansOptions};
use jagged_ir::DType;
use jagged_runtime::{DeviceTensor, GraphRunError, Runtime};

use crate::engine::{HostTensor, with_state};
use crate::error::Error;
use crate::ops::{AttrArg, Attrs, OpDef};

/// The ops [`run`] takes.
pub const NAMES: &[&str] = &[
    "product_quantize",
    "residual_quantize",
    "sid_embed",
    "rq_train",
    "pq_train",
    "jagged_dense_bmm",
    "jagged_jagged_bmm",
    "jagged_pairwise_dot",
    "jagged_dense_dot",
    "jagged_dense_bmm_backward",
    "jagged_jagged_bmm_backward",
    "session_pool",
    "user_pool",
    "event_boost",
    "event_boost_sessions",
    "session_segment",
    "jagged_topk",
    "event_prune",
];

/// Whether `op` runs through a front function.
pub fn runs(op: &str) -> bool {
    NAMES.contains(&op)
}

/// The inputs of one call by name (`features[i]` for `event_prune`'s list).
struct Inputs<'a> {
    op: &'static OpDef,
    by_name: BTreeMap<&'a str, &'a HostTensor>,
}

impl<'a> Inputs<'a> {
    fn new(op: &'static OpDef, inputs: &'a [(String, HostTensor)]) -> Result<Inputs<'a>, Error> {
        let mut by_name = BTreeMap::new();
        for (name, t) in inputs {
            let base = name.split('[').next().unwrap_or(name);
            if !op.inputs.contains(&base) {
                return Err(Error::Input(format!(
                    "{}: unknown input `{name}` (inputs: {})",
                    op.name,
                    op.inputs.join(", ")
                )));
            }
            if by_name.insert(name.as_str(), t).is_some() {
                return Err(Error::Input(format!(
                    "{}: input `{name}` given twice",
                    op.name
                )));
            }
        }
        Ok(Inputs { op, by_name })
    }

    fn bad(&self, name: &str, what: String) -> Error {
        Error::Input(format!("{}: input `{name}` {what}", self.op.name))
    }

    fn optional(&self, name: &str) -> Option<&'a HostTensor> {
        self.by_name.get(name).copied()
    }

    fn get(&self, name: &str) -> Result<&'a HostTensor, Error> {
        self.optional(name)
            .ok_or_else(|| Error::Input(format!("{}: missing input `{name}`", self.op.name)))
    }

    /// Input `name` of `rank` dims (`what` spells the expected shape).
    fn ranked(&self, name: &str, rank: usize, what: &str) -> Result<&'a HostTensor, Error> {
        let t = self.get(name)?;
        if t.shape.len() != rank {
            return Err(self.bad(name, format!("must be {what}, got shape {:?}", t.shape)));
        }
        Ok(t)
    }

    /// Input `name` is of one of `dtypes` (`what` names them).
    fn dtype_in(
        &self,
        name: &str,
        t: &HostTensor,
        dtypes: &[DType],
        what: &str,
    ) -> Result<(), Error> {
        if dtypes.contains(&t.dtype) {
            Ok(())
        } else {
            Err(self.bad(name, format!("must be {what}, got {}", t.dtype)))
        }
    }

    /// Offsets input `name`: i32 or i64, `[B + 1]`, `offsets[0] = 0`,
    /// non-decreasing, `offsets[B] = rows` (the rows of `of`).
    fn offsets(&self, name: &str, rows: usize, of: &str) -> Result<&'a HostTensor, Error> {
        let t = self.get(name)?;
        check_offsets(self.op, name, t, rows, of)?;
        Ok(t)
    }
}

fn check_offsets(
    op: &OpDef,
    name: &str,
    t: &HostTensor,
    rows: usize,
    of: &str,
) -> Result<(), Error> {
    let bad = |what: String| Error::Input(format!("{}: input `{name}` {what}", op.name));
    if !t.dtype.is_index() {
        return Err(bad(format!("must be int32 or int64, got {}", t.dtype)));
    }
    if t.shape.len() != 1 {
        return Err(bad(format!("must be [B + 1], got shape {:?}", t.shape)));
    }
    let entries = jagged_ir::TensorData::from_le_bytes(t.dtype, &t.bytes)
        .and_then(|d| d.to_i64())
        .ok_or_else(|| bad("holds a partial element".to_string()))?;
    jagged_ir::tensor::check_offsets(name, &entries, None)
        .map_err(|e| Error::Input(format!("{}: input `{name}`: {e}", op.name)))?;
    let last = entries.last().copied().unwrap_or(0);
    if usize::try_from(last) != Ok(rows) {
        return Err(bad(format!(
            "must end at the {rows} rows of `{of}`, but {name}[{}] = {last}",
            entries.len() - 1
        )));
    }
    Ok(())
}

const FLOATS: &[DType] = &[DType::F32, DType::F16, DType::BF16, DType::F64];
const QUANTIZE_FLOATS: &[DType] = &[DType::F32, DType::F16, DType::BF16];
const INDEX: &[DType] = &[DType::I32, DType::I64];

/// A float input of `rank >= 1` (`values [T, *inner]`).
fn float_rows<'a>(inputs: &Inputs<'a>, name: &str) -> Result<&'a HostTensor, Error> {
    let t = inputs.get(name)?;
    inputs.dtype_in(
        name,
        t,
        FLOATS,
        "a float tensor (float32, float16, bfloat16 or float64)",
    )?;
    if t.shape.is_empty() {
        return Err(inputs.bad(name, "must be [T, *inner], got a 0-dim tensor".to_string()));
    }
    Ok(t)
}

fn kernel_error(op: &str, e: KernelError) -> Error {
    match e {
        KernelError::Dtype { .. } | KernelError::Shape { .. } | KernelError::Validation(_) => {
            Error::Input(format!("{op}: {e}"))
        }
        KernelError::Run(run) => match Error::from(run) {
            Error::Input(msg) => Error::Input(format!("{op}: {msg}")),
            Error::Run(msg) => Error::Run(format!("{op}: {msg}")),
            other => other,
        },
        KernelError::MissingOutput { .. } => Error::Internal(format!("{op}: {e}")),
        // The code generator, or a variant the crate adds later.
        _ => Error::Run(format!("{op}: {e}")),
    }
}

fn quantize_error(op: &str, e: QuantizeError) -> Error {
    match e {
        QuantizeError::Kernel(k) => kernel_error(op, k),
        // ZeroBeam, Input: a bad argument, named in the message.
        _ => Error::Input(e.to_string()),
    }
}

fn events_error(op: &str, e: EventsError) -> Error {
    match e {
        EventsError::Kernel(k) => kernel_error(op, k),
        // Nested (the level named), Input (the input named).
        _ => Error::Input(format!("{op}: {e}")),
    }
}

fn runtime_error(e: jagged_runtime::RuntimeError) -> Error {
    Error::from(GraphRunError::from(e))
}

/// The device buffers of one call: the inputs uploaded and the outputs
/// returned, freed (once each) when the call ends, whatever happened.
struct Device<'r> {
    rt: &'r mut Runtime,
    made: Vec<DeviceTensor>,
}

impl Device<'_> {
    fn upload(&mut self, t: &HostTensor) -> Result<DeviceTensor, Error> {
        let buffer = self
            .rt
            .upload_bytes(t.dtype, &t.bytes)
            .map_err(runtime_error)?;
        let d = DeviceTensor {
            buffer,
            shape: t.shape.clone(),
        };
        self.made.push(d.clone());
        Ok(d)
    }

    /// Downloads `d` (an output), which this call then frees.
    fn download(&mut self, name: &str, d: DeviceTensor) -> Result<(String, HostTensor), Error> {
        self.made.push(d.clone());
        let elems: usize = d.shape.iter().product();
        let mut bytes = self.rt.download_bytes(&d.buffer).map_err(runtime_error)?;
        let want = elems * d.dtype().size();
        if bytes.len() < want {
            return Err(Error::Internal(format!(
                "output `{name}`: {} bytes for shape {:?}",
                bytes.len(),
                d.shape
            )));
        }
        bytes.truncate(want);
        Ok((
            name.to_string(),
            HostTensor {
                dtype: d.dtype(),
                shape: d.shape,
                bytes,
            },
        ))
    }
}

impl Drop for Device<'_> {
    fn drop(&mut self) {
        let mut freed = HashSet::new();
        for d in self.made.drain(..) {
            if freed.insert(d.buffer.id()) {
                // Best effort: a free that fails leaves a buffer behind,
                // nothing worse.
                let _ = self.rt.free(d.buffer);
            }
        }
    }
}

/// Runs `op` (one of [`NAMES`]) on host tensors; returns its outputs in
/// the op's order (`event_prune`: `features[0]`, ..., `indices`,
/// `offsets`).
pub fn run(
    op: &'static OpDef,
    inputs: Vec<(String, HostTensor)>,
    given: &BTreeMap<String, AttrArg>,
) -> Result<Vec<(String, HostTensor)>, Error> {
    let attrs = Attrs::new(op, given)?;
    let ins = Inputs::new(op, &inputs)?;
    let name = op.name;
    match name {
        "product_quantize" | "residual_quantize" | "sid_embed" => {
            let (first, table) = match name {
                "product_quantize" => ("x", "centroids"),
                "residual_quantize" => ("x", "codebooks"),
                _ => ("codes", "codebooks"),
            };
            let x = ins.ranked(
                first,
                2,
                if first == "x" {
                    "[N, D] or [T, D]"
                } else {
                    "[N, levels] or [T, levels]"
                },
            )?;
            let c = ins.ranked(
                table,
                3,
                if table == "centroids" {
                    "[M, K, D / M]"
                } else {
                    "[levels, K, D]"
                },
            )?;
            if first == "x" {
                ins.dtype_in(table, c, QUANTIZE_FLOATS, "float32, float16 or bfloat16")?;
                ins.dtype_in("x", x, QUANTIZE_FLOATS, "float32, float16 or bfloat16")?;
                if x.dtype != c.dtype {
                    return Err(ins.bad(
                        table,
                        format!(
                            "is {} but `x` is {}: pass both in the dtype to compute in",
                            c.dtype, x.dtype
                        ),
                    ));
                }
            } else {
                // sid_embed gathers and sums: f64 codebooks too (summed in f32).
                ins.dtype_in(
                    table,
                    c,
                    FLOATS,
                    "a float tensor (float32, float16, bfloat16 or float64)",
                )?;
                ins.dtype_in("codes", x, &[DType::I32], "int32")?;
            }
            let offsets = match ins.optional("offsets") {
                Some(_) => Some(ins.offsets("offsets", x.shape[0], first)?),
                None => None,
            };
            let beam = attrs.int("beam", Some(1))?.unwrap_or(1);
            with_state(|s| {
                let mut dev = Device {
                    rt: &mut s.runtime,
                    made: Vec::new(),
                };
                let xd = dev.upload(x)?;
                let cd = dev.upload(c)?;
                let od = match offsets {
                    Some(o) => Some(dev.upload(o)?),
                    None => None,
                };
                let rt = &mut *dev.rt;
                let out = match name {
                    "product_quantize" => quantize::product_quantize(rt, &xd, od.as_ref(), &cd),
                    "residual_quantize" => {
                        let options = ResidualQuantizeOptions { beam };
                        quantize::residual_quantize(rt, &xd, od.as_ref(), &cd, &options)
                    }
                    _ => quantize::sid_embed(rt, &xd, od.as_ref(), &cd),
                }
                .map_err(|e| quantize_error(name, e))?;
                Ok(vec![dev.download(op.outputs[0], out)?])
            })
        }
        "rq_train" | "pq_train" => {
            let x = ins.ranked("x", 2, "[N, D]")?;
            ins.dtype_in("x", x, &[DType::F32], "float32 (training is in f32)")?;
            let required = |attr: &str| {
                attrs
                    .int(attr, None)?
                    .ok_or_else(|| Error::Input(format!("{name}: attribute `{attr}` is required")))
            };
            let size = required(if name == "rq_train" { "levels" } else { "m" })?;
            let k = required("k")?;
            let options = KMeansOptions {
                iterations: attrs.int("iterations", Some(25))?.unwrap_or(25),
                seed: attrs.int("seed", Some(1234))?.unwrap_or(1234) as u64,
                init: match attrs.choice("init", "k-means++")?.as_str() {
                    "random" => KMeansInit::Random,
                    _ => KMeansInit::PlusPlus,
                },
            };
            with_state(|s| {
                let mut dev = Device {
                    rt: &mut s.runtime,
                    made: Vec::new(),
                };
                let xd = dev.upload(x)?;
                let rt = &mut *dev.rt;
                let out = if name == "rq_train" {
                    quantize_train::rq_train(rt, &xd, size, k, &options)
                } else {
                    quantize_train::pq_train(rt, &xd, size, k, &options)
                }
                .map_err(|e| quantize_error(name, e))?;
                Ok(vec![dev.download(op.outputs[0], out)?])
            })
        }
        "jagged_dense_bmm"
        | "jagged_jagged_bmm"
        | "jagged_pairwise_dot"
        | "jagged_dense_dot"
        | "jagged_dense_bmm_backward"
        | "jagged_jagged_bmm_backward" => {
            // Ranks and dtypes here (the inputs in one dtype, the op's);
            // the kernels check the dims against each other, naming the input.
            let x = ins.ranked("x", 2, "[T, K]")?;
            ins.dtype_in("x", x, QUANTIZE_FLOATS, "float32, float16 or bfloat16")?;
            let o = ins.offsets("offsets", x.shape[0], "x")?;
            let mut others = Vec::new();
            for (input, rank, what) in [
                ("y", 2usize, "[T, P]"),
                ("y", 3, "[B, K, M]"),
                ("dout", 2, "[T, M]"),
                ("dout", 3, "[B, M, P]"),
            ] {
                let jagged_y = matches!(name, "jagged_jagged_bmm" | "jagged_jagged_bmm_backward");
                let wanted = match input {
                    "y" => name != "jagged_pairwise_dot" && (rank == 2) == jagged_y,
                    _ => {
                        name.ends_with("_backward")
                            && (rank == 2) == (name == "jagged_dense_bmm_backward")
                    }
                };
                if !wanted {
                    continue;
                }
                let t = ins.ranked(input, rank, what)?;
                if t.dtype != x.dtype {
                    return Err(ins.bad(
                        input,
                        format!(
                            "must be {} (`x`'s dtype, the op's), got {}",
                            x.dtype, t.dtype
                        ),
                    ));
                }
                others.push(t);
            }
            let options = InteractionOptions {
                max_len: attrs.int("max_len", None)?.ok_or_else(|| {
                    Error::Input(format!("{name}: attribute `max_len` is required"))
                })?,
                tf32: attrs.bool("tf32")?,
            };
            with_state(|s| {
                let mut dev = Device {
                    rt: &mut s.runtime,
                    made: Vec::new(),
                };
                let xd = dev.upload(x)?;
                let od = dev.upload(o)?;
                let rest = others
                    .iter()
                    .map(|t| dev.upload(t))
                    .collect::<Result<Vec<_>, _>>()?;
                let rt = &mut *dev.rt;
                let err = |e| kernel_error(name, e);
                let outs: Vec<(&str, DeviceTensor)> = match (name, rest.as_slice()) {
                    ("jagged_dense_bmm", [y]) => {
                        vec![(
                            "out",
                            interactions::jagged_dense_bmm(rt, &od, &xd, y, &options)
                                .map_err(err)?,
                        )]
                    }
                    ("jagged_jagged_bmm", [y]) => {
                        vec![(
                            "out",
                            interactions::jagged_jagged_bmm(rt, &od, &xd, y, &options)
                                .map_err(err)?,
                        )]
                    }
                    ("jagged_dense_dot", [y]) => {
                        vec![(
                            "out",
                            interactions::jagged_dense_dot(rt, &od, &xd, y, &options)
                                .map_err(err)?,
                        )]
                    }
                    ("jagged_pairwise_dot", []) => {
                        let (v, off) = interactions::jagged_pairwise_dot(rt, &od, &xd, &options)
                            .map_err(err)?;
                        vec![("values", v), ("offsets", off)]
                    }
                    ("jagged_dense_bmm_backward", [y, dout]) => {
                        let (dx, dy) = interactions::jagged_dense_bmm_backward(
                            rt, &od, &xd, y, dout, &options,
                        )
                        .map_err(err)?;
                        vec![("dx", dx), ("dy", dy)]
                    }
                    ("jagged_jagged_bmm_backward", [y, dout]) => {
                        let (dx, dy) = interactions::jagged_jagged_bmm_backward(
                            rt, &od, &xd, y, dout, &options,
                        )
                        .map_err(err)?;
                        vec![("dx", dx), ("dy", dy)]
                    }
                    _ => return Err(Error::Internal(format!("{name}: inputs {}", rest.len()))),
                };
                outs.into_iter().map(|(n, t)| dev.download(n, t)).collect()
            })
        }
        "session_pool" | "user_pool" => {
            let (values, offsets) = (op.inputs[0], op.inputs[1]);
            let v = float_rows(&ins, values)?;
            let o = ins.offsets(offsets, v.shape[0], values)?;
            let reduce = Reduce::from_name(&attrs.choice("reduce", "sum")?)
                .ok_or_else(|| attrs.bad("reduce", "one of sum, mean, max"))?;
            with_state(|s| {
                let mut dev = Device {
                    rt: &mut s.runtime,
                    made: Vec::new(),
                };
                let vd = dev.upload(v)?;
                let od = dev.upload(o)?;
                let rt = &mut *dev.rt;
                let out = if name == "session_pool" {
                    events::session_pool(rt, &vd, &od, reduce)
                } else {
                    events::user_pool(rt, &vd, &od, reduce)
                }
                .map_err(|e| kernel_error(name, e))?;
                Ok(vec![dev.download("out", out)?])
            })
        }
        "event_boost" | "event_boost_sessions" => {
            let v = ins.ranked("values", 2, "[T, D]")?;
            ins.dtype_in(
                "values",
                v,
                FLOATS,
                "a float tensor (float32, float16, bfloat16 or float64)",
            )?;
            let (t, d) = (v.shape[0], v.shape[1]);
            // event_boost: users' events on `offsets`, a condition per event;
            // event_boost_sessions: sessions of events and users of
            // sessions, a condition per session.
            let (o, users, conds, per) = if name == "event_boost" {
                let o = ins.offsets("offsets", t, "values")?;
                (o, None, t, "one per row of `values`")
            } else {
                let so = ins.offsets("session_offsets", t, "values")?;
                let sessions = so.shape[0] - 1;
                let uo = ins.offsets("user_offsets", sessions, "session_offsets")?;
                (
                    so,
                    Some(uo),
                    sessions,
                    "one per session of `session_offsets`",
                )
            };
            let b = users.unwrap_or(o).shape[0] - 1;
            let segment = ins.ranked("segment", 1, "[B]")?;
            ins.dtype_in("segment", segment, INDEX, "int32 or int64")?;
            if segment.shape[0] != b {
                return Err(ins.bad(
                    "segment",
                    format!(
                        "must be [B] = [{b}] (one per user), got shape {:?}",
                        segment.shape
                    ),
                ));
            }
            let cond = ins.ranked("cond", 1, "[T] ([S] per session)")?;
            if cond.dtype != segment.dtype {
                return Err(ins.bad(
                    "cond",
                    format!(
                        "must be {} (`segment`'s dtype), got {}",
                        segment.dtype, cond.dtype
                    ),
                ));
            }
            if cond.shape[0] != conds {
                return Err(ins.bad(
                    "cond",
                    format!("must be [{conds}] ({per}), got shape {:?}", cond.shape),
                ));
            }
            let table = ins.ranked("table", 2, "[G, C]")?;
            if table.dtype != v.dtype {
                return Err(ins.bad(
                    "table",
                    format!("must be {} (`values`' dtype), got {}", v.dtype, table.dtype),
                ));
            }
            let columns = ins.ranked("columns", 1, "[D]")?;
            ins.dtype_in(
                "columns",
                columns,
                &[DType::U8, DType::Bool],
                "uint8 or bool",
            )?;
            if columns.shape[0] != d {
                return Err(ins.bad(
                    "columns",
                    format!(
                        "must be [D] = [{d}] (the columns of `values`), got shape {:?}",
                        columns.shape
                    ),
                ));
            }
            with_state(|s| {
                let mut dev = Device {
                    rt: &mut s.runtime,
                    made: Vec::new(),
                };
                let [vd, od, sd, cd, td, md] =
                    [v, o, segment, cond, table, columns].map(|t| dev.upload(t));
                let (vd, od, sd, cd, td, md) = (vd?, od?, sd?, cd?, td?, md?);
                let out = match users {
                    None => events::event_boost(dev.rt, &vd, &od, &sd, &cd, &td, &md),
                    Some(uo) => {
                        let nested = DeviceNested {
                            values: vd,
                            session_offsets: od,
                            user_offsets: dev.upload(uo)?,
                        };
                        events::event_boost_sessions(dev.rt, &nested, &sd, &cd, &td, &md)
                    }
                }
                .map_err(|e| events_error(name, e))?;
                Ok(vec![dev.download("values", out)?])
            })
        }
        "session_segment" => {
            let ts = ins.ranked("timestamps", 1, "[T]")?;
            ins.dtype_in(
                "timestamps",
                ts,
                &[DType::F32, DType::F64, DType::I64],
                "float32, float64 or int64",
            )?;
            let o = ins.offsets("offsets", ts.shape[0], "timestamps")?;
            let gap = attrs
                .float("gap", None)?
                .ok_or_else(|| Error::Input(format!("{name}: attribute `gap` is required")))?;
            if ts.dtype == DType::I64 && (gap.is_nan() || gap < 0.0) {
                return Err(attrs.bad("gap", "a number >= 0 (the timestamps are int64)"));
            }
            // Optional: a new session also where the surface changes.
            let surface = match ins.optional("surface") {
                Some(_) => {
                    let sf = ins.ranked("surface", 1, "[T]")?;
                    if sf.shape[0] != ts.shape[0] {
                        return Err(ins.bad(
                            "surface",
                            format!(
                                "must be [{}] like `timestamps`, got {:?}",
                                ts.shape[0], sf.shape
                            ),
                        ));
                    }
                    Some(sf)
                }
                None => None,
            };
            with_state(|s| {
                let mut dev = Device {
                    rt: &mut s.runtime,
                    made: Vec::new(),
                };
                let td = dev.upload(ts)?;
                let od = dev.upload(o)?;
                let sd = surface.map(|sf| dev.upload(sf)).transpose()?;
                let out = events::session_segment(dev.rt, &td, &od, gap, sd.as_ref())
                    .map_err(|e| events_error(name, e))?;
                Ok(vec![
                    dev.download("session_offsets", out.session_offsets)?,
                    dev.download("user_offsets", out.user_offsets)?,
                    dev.download("dwell", out.dwell)?,
                ])
            })
        }
        "jagged_topk" | "event_prune" => {
            let scores = ins.ranked("scores", 1, "[T]")?;
            let t = scores.shape[0];
            if name == "event_prune" {
                ins.dtype_in(
                    "scores",
                    scores,
                    FLOATS,
                    "a float tensor (float32, float16, bfloat16 or float64)",
                )?;
            } else if scores.dtype == DType::Bool {
                return Err(ins.bad(
                    "scores",
                    "must be a float or integer tensor, got bool".to_string(),
                ));
            }
            let o = ins.offsets("offsets", t, "scores")?;
            let mut features = Vec::new();
            if name == "event_prune" {
                for i in 0.. {
                    let key = format!("features[{i}]");
                    let Some(f) = ins.optional(&key) else { break };
                    if f.shape.first() != Some(&t) {
                        return Err(ins.bad(&key, format!("must be [T, ...] with T = {t} (the rows of `scores`), got shape {:?}", f.shape)));
                    }
                    features.push(f);
                }
                let listed = ins
                    .by_name
                    .keys()
                    .filter(|k| k.starts_with("features"))
                    .count();
                if listed != features.len() {
                    return Err(Error::Input(format!(
                        "{name}: `features` must be numbered features[0], features[1], ..."
                    )));
                }
            }
            let k = attrs.int("k", None)?;
            let threshold = if name == "event_prune" {
                attrs.float("threshold", None)?
            } else {
                None
            };
            if name == "jagged_topk" && k.is_none() {
                return Err(Error::Input(format!("{name}: attribute `k` is required")));
            }
            with_state(|s| {
                let mut dev = Device {
                    rt: &mut s.runtime,
                    made: Vec::new(),
                };
                let sd = dev.upload(scores)?;
                let od = dev.upload(o)?;
                if name == "jagged_topk" {
                    let (indices, offsets) = events::jagged_topk(dev.rt, &sd, &od, k.unwrap_or(0))
                        .map_err(|e| events_error(name, e))?;
                    return Ok(vec![
                        dev.download("indices", indices)?,
                        dev.download("offsets", offsets)?,
                    ]);
                }
                let fd = features
                    .iter()
                    .map(|f| dev.upload(f))
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&DeviceTensor> = fd.iter().collect();
                let options = PruneOptions {
                    threshold: threshold.map(|x| x as f32),
                    k,
                };
                let pruned = events::event_prune(dev.rt, &sd, &od, &refs, &options)
                    .map_err(|e| events_error(name, e))?;
                let mut out = Vec::with_capacity(pruned.features.len() + 2);
                for (i, f) in pruned.features.into_iter().enumerate() {
                    out.push(dev.download(&format!("features[{i}]"), f)?);
                }
                out.push(dev.download("indices", pruned.indices)?);
                out.push(dev.download("offsets", pruned.offsets)?);
                Ok(out)
            })
        }
        other => Err(Error::Input(format!("unknown op `{other}`"))),
    }
}
