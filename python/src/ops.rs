//! The builtin ops of docs/ops.md (names, inputs, attributes, outputs), and
//! how each one's graph is built from the dtypes and shapes of its inputs and
//! its attributes, through the IR builders of `jagged_ir::ops`.

use std::collections::BTreeMap;

use jagged_ir::ops::{self, Activation, AttentionSpec, FbgemmAttentionSpec, JaggedSpec};
use jagged_ir::{AttrValue, DType, Graph, ReduceOp};

use crate::error::Error;

/// The type of an attribute, as the Python signatures spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    /// A non-negative integer.
    Int,
    /// A number.
    Float,
    /// A number or `None` (the op's default).
    OptionalFloat,
    /// `True` or `False`.
    Bool,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// One of the listed strings or `None` (the op's default).
    OptionalChoice(&'static [&'static str]),
    /// A non-negative integer or `None` (not given).
    OptionalInt,
}

/// One attribute of an op.
#[derive(Clone, Copy, Debug)]
pub struct AttrDef {
    /// docs/ops.md's name.
    pub name: &'static str,
    /// Its type.
    pub ty: AttrType,
    /// The default, as Python source (`None` when the attribute is required).
    pub default: Option<&'static str>,
    /// What it means.
    pub doc: &'static str,
}

/// One builtin op.
#[derive(Clone, Copy, Debug)]
pub struct OpDef {
    /// docs/ops.md's name.
    pub name: &'static str,
    /// The tensor inputs, in docs/ops.md's order.
    pub inputs: &'static [&'static str],
    /// The attributes.
    pub attrs: &'static [AttrDef],
    /// The outputs.
    pub outputs: &'static [&'static str],
}

const MAX_LEN: AttrDef = AttrDef {
    name: "max_len",
    ty: AttrType::Int,
    default: None,
    doc: "only the first max_len rows of each sequence take part",
};

const FLOATS: &[&str] = &["f32", "f16", "bf16", "f64"];

/// The interaction ops' attributes. `dtype` (the dtype to compute in) is
/// applied by the Python layer, which casts the inputs to it.
const INTERACTION_ATTRS: &[AttrDef] = &[
    MAX_LEN,
    AttrDef {
        name: "dtype",
        ty: AttrType::OptionalChoice(&["f32", "f16", "bf16"]),
        default: Some("None"),
        doc: "the dtype to compute in (the inputs are cast to it); None is the inputs' dtype",
    },
    AttrDef {
        name: "tf32",
        ty: AttrType::Bool,
        default: Some("False"),
        doc: "round f32 operands to tf32 (tf32 tensor cores); no effect on f16 / bf16",
    },
];

const KMEANS_K: AttrDef = AttrDef {
    name: "k",
    ty: AttrType::Int,
    default: None,
    doc: "the centroids per level or sub-space (K <= N)",
};

const KMEANS_ITERATIONS: AttrDef = AttrDef {
    name: "iterations",
    ty: AttrType::Int,
    default: Some("25"),
    doc: "k-means iterations (assign + update) per level or sub-space",
};

const KMEANS_SEED: AttrDef = AttrDef {
    name: "seed",
    ty: AttrType::Int,
    default: Some("1234"),
    doc: "the seed of the init and of the re-seeding of empty clusters",
};

const KMEANS_INIT: AttrDef = AttrDef {
    name: "init",
    ty: AttrType::Choice(&["k-means++", "random"]),
    default: Some("'k-means++'"),
    doc: "k-means++ or K distinct rows drawn at random",
};

const POOL_REDUCE: AttrDef = AttrDef {
    name: "reduce",
    ty: AttrType::Choice(&["sum", "mean", "max"]),
    default: Some("'sum'"),
    doc: "the reduction over every row of each sequence",
};

/// Every builtin op of docs/ops.md, primitives first.
pub const OPS: &[OpDef] = &[
    OpDef {
        name: "complete_cumsum",
        inputs: &["lengths"],
        attrs: &[],
        outputs: &["offsets"],
    },
    OpDef {
        name: "jagged_to_padded_dense",
        inputs: &["values", "offsets"],
        attrs: &[
            MAX_LEN,
            AttrDef {
                name: "padding_value",
                ty: AttrType::Float,
                default: Some("0.0"),
                doc: "the value of the rows past each sequence",
            },
        ],
        outputs: &["dense"],
    },
    OpDef {
        name: "dense_to_jagged",
        inputs: &["dense", "offsets"],
        attrs: &[],
        outputs: &["values"],
    },
    OpDef {
        name: "jagged_dense_elementwise_mul",
        inputs: &["values", "offsets", "dense"],
        attrs: &[MAX_LEN],
        outputs: &["values"],
    },
    OpDef {
        name: "jagged_softmax",
        inputs: &["values", "offsets"],
        attrs: &[MAX_LEN],
        outputs: &["values"],
    },
    OpDef {
        name: "jagged_reduce",
        inputs: &["values", "offsets"],
        attrs: &[
            MAX_LEN,
            AttrDef {
                name: "reduce",
                ty: AttrType::Choice(&["sum", "mean", "max"]),
                default: Some("'sum'"),
                doc: "the reduction over the rows of each sequence",
            },
        ],
        outputs: &["out"],
    },
    OpDef {
        name: "masked_select_jagged",
        inputs: &["values", "offsets", "mask"],
        attrs: &[],
        outputs: &["values", "offsets"],
    },
    OpDef {
        name: "jagged_flash_attention",
        inputs: &["q", "k", "v", "offsets"],
        attrs: &[
            MAX_LEN,
            AttrDef {
                name: "scale",
                ty: AttrType::OptionalFloat,
                default: Some("None"),
                doc: "the factor of the scores; None is 1/sqrt(D)",
            },
            AttrDef {
                name: "causal",
                ty: AttrType::Bool,
                default: Some("False"),
                doc: "query i sees keys j <= i only",
            },
            AttrDef {
                name: "activation",
                ty: AttrType::Choice(&["softmax", "silu"]),
                default: Some("'softmax'"),
                doc: "softmax (with an lse output) or silu (HSTU)",
            },
            AttrDef {
                name: "dtype",
                ty: AttrType::OptionalChoice(FLOATS),
                default: Some("None"),
                doc: "the dtype to compute in; None is the inputs' dtype",
            },
        ],
        outputs: &["out", "lse"],
    },
    OpDef {
        name: "fbgemm_jagged_flash_attention_basic",
        inputs: &["q", "k", "v", "offsets"],
        attrs: &[
            MAX_LEN,
            AttrDef {
                name: "use_mask",
                ty: AttrType::Bool,
                default: Some("False"),
                doc: "zero the probabilities of keys before the query",
            },
            AttrDef {
                name: "dtype",
                ty: AttrType::OptionalChoice(FLOATS),
                default: Some("None"),
                doc: "the dtype to compute in; None is the inputs' dtype",
            },
        ],
        outputs: &["out"],
    },
    // Interactions (`jagged::ops::interactions`), also through `crate::front`.
    OpDef {
        name: "jagged_dense_bmm",
        inputs: &["x", "offsets", "y"],
        attrs: INTERACTION_ATTRS,
        outputs: &["out"],
    },
    OpDef {
        name: "jagged_jagged_bmm",
        inputs: &["x", "y", "offsets"],
        attrs: INTERACTION_ATTRS,
        outputs: &["out"],
    },
    OpDef {
        name: "jagged_pairwise_dot",
        inputs: &["x", "offsets"],
        attrs: INTERACTION_ATTRS,
        outputs: &["values", "offsets"],
    },
    OpDef {
        name: "jagged_dense_dot",
        inputs: &["x", "offsets", "y"],
        attrs: INTERACTION_ATTRS,
        outputs: &["out"],
    },
    OpDef {
        name: "jagged_dense_bmm_backward",
        inputs: &["x", "offsets", "y", "dout"],
        attrs: INTERACTION_ATTRS,
        outputs: &["dx", "dy"],
    },
    OpDef {
        name: "jagged_jagged_bmm_backward",
        inputs: &["x", "y", "offsets", "dout"],
        attrs: INTERACTION_ATTRS,
        outputs: &["dx", "dy"],
    },
    // The ops of the Rust crate's front functions (`jagged::ops::quantize`,
    // `jagged::ops::events`), run by `crate::front`: several kernels, or
    // host steps around them, rather than one graph.
    OpDef {
        name: "product_quantize",
        inputs: &["x", "offsets", "centroids"],
        attrs: &[],
        outputs: &["codes"],
    },
    OpDef {
        name: "residual_quantize",
        inputs: &["x", "offsets", "codebooks"],
        attrs: &[AttrDef {
            name: "beam",
            ty: AttrType::Int,
            default: Some("1"),
            doc: "partial codes kept per level: 1 (greedy) is the only one implemented",
        }],
        outputs: &["codes"],
    },
    OpDef {
        name: "sid_embed",
        inputs: &["codes", "offsets", "codebooks"],
        attrs: &[],
        outputs: &["values"],
    },
    OpDef {
        name: "rq_train",
        inputs: &["x"],
        attrs: &[
            AttrDef {
                name: "levels",
                ty: AttrType::Int,
                default: None,
                doc: "the residual quantizer's levels",
            },
            KMEANS_K,
            KMEANS_ITERATIONS,
            KMEANS_SEED,
            KMEANS_INIT,
        ],
        outputs: &["codebooks"],
    },
    OpDef {
        name: "pq_train",
        inputs: &["x"],
        attrs: &[
            AttrDef {
                name: "m",
                ty: AttrType::Int,
                default: None,
                doc: "the product quantizer's sub-vectors (M divides D)",
            },
            KMEANS_K,
            KMEANS_ITERATIONS,
            KMEANS_SEED,
            KMEANS_INIT,
        ],
        outputs: &["centroids"],
    },
    OpDef {
        name: "session_pool",
        inputs: &["values", "session_offsets"],
        attrs: &[POOL_REDUCE],
        outputs: &["out"],
    },
    OpDef {
        name: "user_pool",
        inputs: &["pooled", "user_offsets"],
        attrs: &[POOL_REDUCE],
        outputs: &["out"],
    },
    OpDef {
        name: "event_boost",
        inputs: &["values", "offsets", "segment", "cond", "table", "columns"],
        attrs: &[],
        outputs: &["values"],
    },
    OpDef {
        name: "event_boost_sessions",
        inputs: &[
            "values",
            "session_offsets",
            "user_offsets",
            "segment",
            "cond",
            "table",
            "columns",
        ],
        attrs: &[],
        outputs: &["values"],
    },
    OpDef {
        name: "session_segment",
        inputs: &["timestamps", "offsets", "surface"],
        attrs: &[AttrDef {
            name: "gap",
            ty: AttrType::Float,
            default: None,
            doc: "a session starts where t_i - t_{i-1} > gap (i64 timestamps: gap >= 0, rounded down)",
        }],
        outputs: &["session_offsets", "user_offsets", "dwell"],
    },
    OpDef {
        name: "jagged_topk",
        inputs: &["scores", "offsets"],
        attrs: &[AttrDef {
            name: "k",
            ty: AttrType::Int,
            default: None,
            doc: "the rows of the k highest scores of each sequence are kept",
        }],
        outputs: &["indices", "offsets"],
    },
    OpDef {
        name: "event_prune",
        inputs: &["scores", "offsets", "features"],
        attrs: &[
            AttrDef {
                name: "threshold",
                ty: AttrType::OptionalFloat,
                default: Some("None"),
                doc: "keep only rows with scores >= threshold (None: no threshold)",
            },
            AttrDef {
                name: "k",
                ty: AttrType::OptionalInt,
                default: Some("None"),
                doc: "keep only each sequence's k highest scores (None: no rank rule)",
            },
        ],
        outputs: &["features", "indices", "offsets"],
    },
];

/// The op named `name`.
pub fn find(name: &str) -> Result<&'static OpDef, Error> {
    OPS.iter().find(|op| op.name == name).ok_or_else(|| {
        let names: Vec<&str> = OPS.iter().map(|op| op.name).collect();
        Error::Input(format!("unknown op `{name}` (ops: {})", names.join(", ")))
    })
}

/// An attribute value as Python gave it.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrArg {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int.
    Int(i64),
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
}

/// The dtype and shape of an input (what a graph is built from).
#[derive(Clone, Debug)]
pub struct Facts {
    /// The dtype.
    pub dtype: DType,
    /// The shape.
    pub shape: Vec<usize>,
}

/// An op's graph for one call: the graph, its run-time attributes, and the
/// `max_len` its spec is bucketed by.
pub struct Built {
    /// The graph.
    pub graph: Graph,
    /// Graph attributes.
    pub attrs: Vec<(&'static str, AttrValue)>,
    /// The spec's `max_len`.
    pub spec_max_len: u64,
}

impl Built {
    /// The graph attributes with owned names, as the runs take them.
    pub fn attr_values(&self) -> Vec<(String, AttrValue)> {
        self.attrs
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect()
    }
}

/// The checked attributes of one call.
pub(crate) struct Attrs<'a> {
    op: &'static OpDef,
    given: &'a BTreeMap<String, AttrArg>,
}

impl Attrs<'_> {
    pub(crate) fn new<'a>(
        op: &'static OpDef,
        given: &'a BTreeMap<String, AttrArg>,
    ) -> Result<Attrs<'a>, Error> {
        for name in given.keys() {
            if !op.attrs.iter().any(|a| a.name == name) {
                let known: Vec<&str> = op.attrs.iter().map(|a| a.name).collect();
                return Err(Error::Input(format!(
                    "{}: no attribute `{name}` (attributes: {})",
                    op.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        Ok(Attrs { op, given })
    }

    pub(crate) fn bad(&self, name: &str, what: &str) -> Error {
        Error::Input(format!(
            "{}: attribute `{name}`: expected {what}, got {:?}",
            self.op.name,
            self.given.get(name).unwrap_or(&AttrArg::None)
        ))
    }

    pub(crate) fn get(&self, name: &str) -> &AttrArg {
        self.given.get(name).unwrap_or(&AttrArg::None)
    }

    fn max_len(&self) -> Result<usize, Error> {
        match self.get("max_len") {
            AttrArg::Int(n) => usize::try_from(*n).map_err(|_| self.bad("max_len", "an int >= 0")),
            AttrArg::None => Err(Error::Input(format!(
                "{}: attribute `max_len` is required",
                self.op.name
            ))),
            _ => Err(self.bad("max_len", "an int >= 0")),
        }
    }

    pub(crate) fn float(&self, name: &str, default: Option<f64>) -> Result<Option<f64>, Error> {
        match self.get(name) {
            AttrArg::Int(n) => Ok(Some(*n as f64)),
            AttrArg::Float(x) => Ok(Some(*x)),
            AttrArg::None => Ok(default),
            _ => Err(self.bad(name, "a float")),
        }
    }

    pub(crate) fn bool(&self, name: &str) -> Result<bool, Error> {
        match self.get(name) {
            AttrArg::Bool(b) => Ok(*b),
            AttrArg::None => Ok(false),
            _ => Err(self.bad(name, "a bool")),
        }
    }

    pub(crate) fn choice(&self, name: &str, default: &'static str) -> Result<String, Error> {
        let allowed = self
            .op
            .attrs
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| match a.ty {
                AttrType::Choice(c) | AttrType::OptionalChoice(c) => Some(c),
                _ => None,
            })
            .unwrap_or(&[]);
        match self.get(name) {
            AttrArg::None => Ok(default.to_string()),
            AttrArg::Str(s) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            _ => Err(self.bad(name, &format!("one of {}", allowed.join(", ")))),
        }
    }

    /// An integer attribute (`>= 0`): `default` when not given (`None`:
    /// required).
    pub(crate) fn int(&self, name: &str, default: Option<usize>) -> Result<Option<usize>, Error> {
        match self.get(name) {
            AttrArg::Int(n) => usize::try_from(*n)
                .map(Some)
                .map_err(|_| self.bad(name, "an int >= 0")),
            AttrArg::None => Ok(default),
            _ => Err(self.bad(name, "an int >= 0")),
        }
    }

    /// The `dtype` attribute: the compute dtype, the inputs' by default.
    fn dtype(&self, input: DType) -> Result<DType, Error> {
        match self.get("dtype") {
            AttrArg::None => Ok(input),
            _ => {
                let name = self.choice("dtype", "")?;
                DType::from_name(&name).ok_or_else(|| self.bad("dtype", "a float dtype"))
            }
        }
    }
}

/// The facts of input `name` (the op checks it was given).
pub(crate) fn input<'a>(
    op: &OpDef,
    inputs: &'a BTreeMap<String, Facts>,
    name: &str,
) -> Result<&'a Facts, Error> {
    inputs
        .get(name)
        .ok_or_else(|| Error::Input(format!("{}: missing input `{name}`", op.name)))
}

/// The shape of `facts` past `lead` leading dims, or an error naming `name`.
fn inner(
    op: &OpDef,
    name: &str,
    facts: &Facts,
    lead: usize,
    what: &str,
) -> Result<Vec<usize>, Error> {
    facts
        .shape
        .get(lead..)
        .map(<[usize]>::to_vec)
        .ok_or_else(|| {
            Error::Input(format!(
                "{}: input `{name}` must be {what}, got shape {:?}",
                op.name, facts.shape
            ))
        })
}

/// The inner dims of `facts`, which must have exactly `rank` dims.
pub(crate) fn exact(
    op: &OpDef,
    name: &str,
    facts: &Facts,
    rank: usize,
    what: &str,
) -> Result<Vec<usize>, Error> {
    if facts.shape.len() != rank {
        return Err(Error::Input(format!(
            "{}: input `{name}` must be {what}, got shape {:?}",
            op.name, facts.shape
        )));
    }
    Ok(facts.shape.clone())
}

pub(crate) fn index_dtype(op: &OpDef, name: &str, facts: &Facts) -> Result<DType, Error> {
    if facts.dtype.is_index() {
        Ok(facts.dtype)
    } else {
        Err(Error::Input(format!(
            "{}: input `{name}` must be int32 or int64, got {}",
            op.name, facts.dtype
        )))
    }
}

pub(crate) fn float_dtype(op: &OpDef, name: &str, facts: &Facts) -> Result<DType, Error> {
    if facts.dtype.is_float() {
        Ok(facts.dtype)
    } else {
        Err(Error::Input(format!(
            "{}: input `{name}` must be a float tensor (float32, float16, bfloat16 or float64), got {}",
            op.name, facts.dtype
        )))
    }
}

/// Every input of `op` given, and only those.
fn check_names(op: &OpDef, inputs: &BTreeMap<String, Facts>) -> Result<(), Error> {
    for name in inputs.keys() {
        if !op.inputs.contains(&name.as_str()) {
            return Err(Error::Input(format!(
                "{}: unknown input `{name}` (inputs: {})",
                op.name,
                op.inputs.join(", ")
            )));
        }
    }
    for name in op.inputs {
        input(op, inputs, name)?;
    }
    Ok(())
}

/// Builds the graph of `op` for inputs of these dtypes and shapes.
pub fn build(
    op: &'static OpDef,
    inputs: &BTreeMap<String, Facts>,
    given: &BTreeMap<String, AttrArg>,
) -> Result<Built, Error> {
    check_names(op, inputs)?;
    let attrs = Attrs::new(op, given)?;
    let get = |name: &str| input(op, inputs, name);
    let jagged_spec = |values: &str, lead: usize, what: &str| -> Result<JaggedSpec, Error> {
        let v = get(values)?;
        let offsets = index_dtype(op, "offsets", get("offsets")?)?;
        Ok(JaggedSpec {
            dtype: v.dtype,
            offsets,
            inner: inner(op, values, v, lead, what)?,
        })
    };
    let rows = "[T, *inner]";
    let mut run_attrs: Vec<(&'static str, AttrValue)> = Vec::new();
    let mut spec_max_len = 0u64;
    let mut with_max_len = |attrs: &Attrs<'_>, run: &mut Vec<(&'static str, AttrValue)>| {
        let n = attrs.max_len()?;
        run.push(("max_len", AttrValue::Index(n)));
        spec_max_len = n as u64;
        Ok::<(), Error>(())
    };
    let graph = match op.name {
        "complete_cumsum" => {
            let l = get("lengths")?;
            let dtype = index_dtype(op, "lengths", l)?;
            exact(op, "lengths", l, 1, "[B]")?;
            ops::complete_cumsum(dtype)
        }
        "jagged_to_padded_dense" => {
            let spec = jagged_spec("values", 1, rows)?;
            with_max_len(&attrs, &mut run_attrs)?;
            let pad = attrs.float("padding_value", Some(0.0))?.unwrap_or(0.0);
            run_attrs.push(("padding_value", AttrValue::Float(pad)));
            ops::jagged_to_padded_dense(&spec)
        }
        "dense_to_jagged" => {
            let spec = jagged_spec("dense", 2, "[B, N, *inner]")?;
            spec_max_len = get("dense")?.shape.get(1).copied().unwrap_or(0) as u64;
            ops::dense_to_jagged(&spec)
        }
        "jagged_dense_elementwise_mul" => {
            let spec = jagged_spec("values", 1, rows)?;
            with_max_len(&attrs, &mut run_attrs)?;
            ops::jagged_dense_elementwise_mul(&spec)
        }
        "jagged_softmax" => {
            let spec = jagged_spec("values", 1, rows)?;
            float_dtype(op, "values", get("values")?)?;
            with_max_len(&attrs, &mut run_attrs)?;
            ops::jagged_softmax(&spec)
        }
        "jagged_reduce" => {
            let spec = jagged_spec("values", 1, rows)?;
            float_dtype(op, "values", get("values")?)?;
            with_max_len(&attrs, &mut run_attrs)?;
            let reduce = match attrs.choice("reduce", "sum")?.as_str() {
                "mean" => ReduceOp::Mean,
                "max" => ReduceOp::Max,
                _ => ReduceOp::Sum,
            };
            ops::jagged_reduce(&spec, reduce)
        }
        "masked_select_jagged" => {
            let spec = jagged_spec("values", 1, rows)?;
            let m = get("mask")?;
            if !matches!(m.dtype, DType::Bool | DType::U8) {
                return Err(Error::Input(format!(
                    "{}: input `mask` must be bool or uint8, got {}",
                    op.name, m.dtype
                )));
            }
            exact(op, "mask", m, 1, "[T]")?;
            ops::masked_select_jagged(&spec, m.dtype)
        }
        "jagged_flash_attention" => {
            let q = get("q")?;
            let input_dtype = float_dtype(op, "q", q)?;
            let qs = exact(op, "q", q, 3, "[T, H, D]")?;
            let vs = exact(op, "v", get("v")?, 3, "[T, H, Dv]")?;
            let spec = AttentionSpec {
                input_dtype,
                dtype: attrs.dtype(input_dtype)?,
                offsets: index_dtype(op, "offsets", get("offsets")?)?,
                heads: qs[1],
                head_dim: qs[2],
                value_dim: vs[2],
                causal: attrs.bool("causal")?,
                activation: match attrs.choice("activation", "softmax")?.as_str() {
                    "silu" => Activation::Silu,
                    _ => Activation::Softmax,
                },
            };
            with_max_len(&attrs, &mut run_attrs)?;
            let default_scale = 1.0 / (spec.head_dim.max(1) as f64).sqrt();
            let scale = attrs
                .float("scale", Some(default_scale))?
                .unwrap_or(default_scale);
            run_attrs.push(("scale", AttrValue::Float(scale)));
            ops::jagged_flash_attention(&spec)
        }
        "fbgemm_jagged_flash_attention_basic" => {
            let q = get("q")?;
            let input_dtype = float_dtype(op, "q", q)?;
            let qs = exact(op, "q", q, 2, "[T, D]")?;
            let spec = FbgemmAttentionSpec {
                input_dtype,
                dtype: attrs.dtype(input_dtype)?,
                offsets: index_dtype(op, "offsets", get("offsets")?)?,
                head_dim: qs[1],
                use_mask: attrs.bool("use_mask")?,
            };
            with_max_len(&attrs, &mut run_attrs)?;
            ops::fbgemm_jagged_flash_attention_basic(&spec)
        }
        other if crate::front::runs(other) => {
            return Err(Error::Input(format!(
                "{other} runs through its Rust front function (several kernels or host steps), \
                 not as one graph"
            )));
        }
        other => return Err(Error::Input(format!("unknown op `{other}`"))),
    };
    let graph = graph.map_err(|e| Error::Input(format!("{}: {e}", op.name)))?;
    Ok(Built {
        graph,
        attrs: run_attrs,
        spec_max_len,
    })
}
