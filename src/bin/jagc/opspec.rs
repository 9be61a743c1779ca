//! The ops `jagc emit`, `stats` and `run` know (OPS.md's names), their
//! `--attr K=V` options, and how a graph is built from them.
//!
//! An op's attributes are of two kinds. Run-time attributes are graph
//! attributes (`max_len`, `padding_value`, `scale`). Static attributes shape
//! the graph: flags (`reduce`, `causal`, `activation`, `use_mask`, `dtype`)
//! and, for `emit` / `stats` only, the sizes `run` reads from its input files
//! (`inner`, `heads`, `head_dim`, `value_dim`, `index`, `mask`).

use std::collections::BTreeMap;
use std::path::Path;

use jagged_codegen::Arch;
use jagged_ir::ops::{self, Activation, AttentionSpec, FbgemmAttentionSpec, JaggedSpec};
use jagged_ir::{AttrKind, AttrValue, DType, Graph, ReduceOp, ValidationError};

/// An error of the command line, naming the bad argument.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No op of that name.
    #[error("unknown op `{0}` (ops: {ops})", ops = Op::ALL.map(Op::name).join(", "))]
    UnknownOp(String),
    /// An attribute the op (or graph) does not take.
    #[error("{subject} has no attribute `{name}` (attributes: {known})")]
    UnknownAttr {
        /// The op or graph, as `Op::subject` writes it.
        subject: String,
        /// The attribute given.
        name: String,
        /// What the op accepts here.
        known: String,
    },
    /// An attribute value that does not parse.
    #[error("--attr {name}={value}: {reason}")]
    BadAttr {
        /// The attribute.
        name: String,
        /// The value given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A `K=V` argument without `=`.
    #[error("{flag} {arg}: expected NAME=VALUE")]
    NotKeyValue {
        /// `--attr`, `--in` or `--out`.
        flag: &'static str,
        /// The argument.
        arg: String,
    },
    /// A repeatable `K=V` flag given twice for the same name (an error,
    /// not "last one wins").
    #[error("{flag} {name}=...: given more than once")]
    Repeated {
        /// `--attr`, `--in` or `--out`.
        flag: &'static str,
        /// The name given twice.
        name: String,
    },
    /// An `--out` target that cannot be written (checked before running).
    #[error("--out {name}={path}: {reason}")]
    BadOutput {
        /// The output.
        name: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A named input the op does not take, or one it needs and was not given.
    #[error("{subject}: {problem} input `{name}` (inputs: {known})")]
    Input {
        /// The op or graph, as `Op::subject` writes it.
        subject: String,
        /// `unknown` or `missing`.
        problem: &'static str,
        /// The input.
        name: String,
        /// The op's inputs.
        known: String,
    },
    /// An `--out` name the op (or graph) does not produce.
    #[error("{subject} has no output `{name}` (outputs: {known})")]
    UnknownOutput {
        /// The op or graph, as `Op::subject` writes it.
        subject: String,
        /// The name given.
        name: String,
        /// The op's outputs.
        known: String,
    },
    /// An input file that cannot be used.
    #[error("input `{name}` ({path}): {reason}")]
    BadInput {
        /// The input.
        name: String,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A `--graph` file that cannot be read.
    #[error("--graph {path}: {reason}")]
    GraphRead {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A `--graph` file whose text does not parse (or validate), at the
    /// parser's line and column.
    #[error("{path}:{line}:{column}: {message}")]
    GraphParse {
        /// The file.
        path: String,
        /// The line (1-based).
        line: usize,
        /// The column (1-based, in characters).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// Neither an op nor `--graph` was given (clap normally catches this).
    #[error("give an op name or --graph FILE.jir")]
    NoOp,
    /// The op's graph could not be built (an internal error).
    #[error("building the graph of `{op}`: {source}")]
    Graph {
        /// The op.
        op: &'static str,
        /// The validator's error.
        source: ValidationError,
    },
    /// The graph of a `#[jagged_kernel]` op could not be built (dims or
    /// dtypes it does not take).
    #[error("building the graph of `{op}`: {source}")]
    Kernel {
        /// The op.
        op: &'static str,
        /// The kernel's error.
        source: jagged::KernelError,
    },
}

/// The ops of OPS.md that jagc runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `complete_cumsum`.
    CompleteCumsum,
    /// `jagged_to_padded_dense`.
    JaggedToPaddedDense,
    /// `dense_to_jagged`.
    DenseToJagged,
    /// `jagged_dense_elementwise_mul`.
    JaggedDenseElementwiseMul,
    /// `jagged_softmax`.
    JaggedSoftmax,
    /// `jagged_reduce`.
    JaggedReduce,
    /// `masked_select_jagged`.
    MaskedSelectJagged,
    /// `jagged_flash_attention` (forward).
    JaggedFlashAttention,
    /// `fbgemm_jagged_flash_attention_basic`.
    FbgemmJaggedFlashAttentionBasic,
    /// `jagged_dense_bmm`.
    JaggedDenseBmm,
    /// `jagged_jagged_bmm`.
    JaggedJaggedBmm,
    /// `jagged_pairwise_dot`.
    JaggedPairwiseDot,
    /// `jagged_dense_dot`.
    JaggedDenseDot,
    /// `jagged_dense_bmm_backward`.
    JaggedDenseBmmBackward,
    /// `jagged_jagged_bmm_backward`.
    JaggedJaggedBmmBackward,
    /// `product_quantize`.
    ProductQuantize,
    /// `residual_quantize` (greedy).
    ResidualQuantize,
    /// `sid_embed`.
    SidEmbed,
    /// `session_pool` (event streams).
    SessionPool,
    /// `user_pool` (event streams).
    UserPool,
    /// `event_boost` (event streams).
    EventBoost,
    /// `jagged_topk` (event streams).
    JaggedTopk,
}

/// Help text of the attributes, shown by `--help`.
pub const ATTR_HELP: &str = "\
Attributes (--attr K=V), by op; defaults in brackets:
  all but complete_cumsum, masked_select_jagged, dense_to_jagged:
                                max_len=N (run: required; emit/stats: [128])
  jagged_to_padded_dense:       padding_value=X [0]
  jagged_reduce:                reduce=sum|mean|max [sum]
  jagged_flash_attention:       scale=X [1/sqrt(D)], causal=BOOL [false],
                                activation=softmax|silu [softmax], dtype=f32|f16|bf16 [bf16]
  fbgemm_jagged_flash_attention_basic:
                                use_mask=BOOL [false], dtype=f32|f16|bf16 [bf16]
  interactions (jagged_dense_bmm, jagged_jagged_bmm, jagged_pairwise_dot,
  jagged_dense_dot, jagged_dense_bmm_backward, jagged_jagged_bmm_backward):
                                dtype=f32|f16|bf16 [f32], tf32=BOOL [false]
                                (f32 operands rounded to tf32: tf32 tensor cores)
  session_pool, user_pool:      reduce=sum|mean|max [sum] (no max_len: every row counts)
  event_boost:                  none (the table's [G, C] comes from its file)
  jagged_topk:                  k=N (required)
  product_quantize, residual_quantize, sid_embed:
                                dtype=f32|f16|bf16 [f32] (no max_len: every row counts;
                                a dense [N, D] input takes offsets [0, N]);
                                residual_quantize: beam=1 [1] (jagc encodes greedily;
                                beam search is in the Rust API), emit/stats show one
                                level's kernel
Sizes, for emit and stats only (run reads them from the input files):
  primitives:                   inner=DxD.. [64] (inner dims of the values),
                                index=i32|i64 [i32] (offsets / lengths dtype)
  masked_select_jagged:         mask=u8|bool [u8]
  jagged_flash_attention:       heads=H [2], head_dim=D [64], value_dim=Dv [head_dim]
  fbgemm_jagged_flash_attention_basic:
                                head_dim=D [64]
  interactions:                 inner=KxM (jagged_dense_bmm and its backward),
                                MxP (jagged_jagged_bmm and its backward),
                                DxF (jagged_dense_dot), D (jagged_pairwise_dot)
                                [64x64; 64], index=i32|i64 [i32]
  session_pool, user_pool:      inner=DxD.. [64], index=i32|i64 [i32]
  event_boost:                  inner=DxGxC [64x4x8] (D columns, a [G, C] table),
                                index=i32|i64 [i32] (offsets, segment, cond),
                                mask=u8|bool [u8] (columns)
  jagged_topk:                  index=i32|i64 [i32]
  product_quantize:             inner=MxKxS [8x256x8] (centroids [M, K, S], x [T, M * S])
  residual_quantize, sid_embed: inner=LxKxD [4x256x64] (codebooks [L, K, D])
--dtype sets the float dtype (attention ops: the same as --attr dtype).
With --graph FILE.jir: the attributes the file declares (index ones as
integers, float ones as numbers; defaults from the file); max_len also sets
the spec's bucket (emit/stats: [the file's default, else 128]).";

impl Op {
    /// Every op, primitives first.
    pub const ALL: [Op; 22] = [
        Op::CompleteCumsum,
        Op::JaggedToPaddedDense,
        Op::DenseToJagged,
        Op::JaggedDenseElementwiseMul,
        Op::JaggedSoftmax,
        Op::JaggedReduce,
        Op::MaskedSelectJagged,
        Op::JaggedFlashAttention,
        Op::FbgemmJaggedFlashAttentionBasic,
        Op::JaggedDenseBmm,
        Op::JaggedJaggedBmm,
        Op::JaggedPairwiseDot,
        Op::JaggedDenseDot,
        Op::JaggedDenseBmmBackward,
        Op::JaggedJaggedBmmBackward,
        Op::SessionPool,
        Op::UserPool,
        Op::EventBoost,
        Op::ProductQuantize,
        Op::ResidualQuantize,
        Op::SidEmbed,
        Op::JaggedTopk,
    ];

    /// OPS.md's name.
    pub fn name(self) -> &'static str {
        match self {
            Op::CompleteCumsum => "complete_cumsum",
            Op::JaggedToPaddedDense => "jagged_to_padded_dense",
            Op::DenseToJagged => "dense_to_jagged",
            Op::JaggedDenseElementwiseMul => "jagged_dense_elementwise_mul",
            Op::JaggedSoftmax => "jagged_softmax",
            Op::JaggedReduce => "jagged_reduce",
            Op::MaskedSelectJagged => "masked_select_jagged",
            Op::JaggedFlashAttention => "jagged_flash_attention",
            Op::FbgemmJaggedFlashAttentionBasic => "fbgemm_jagged_flash_attention_basic",
            Op::JaggedDenseBmm => "jagged_dense_bmm",
            Op::JaggedJaggedBmm => "jagged_jagged_bmm",
            Op::JaggedPairwiseDot => "jagged_pairwise_dot",
            Op::JaggedDenseDot => "jagged_dense_dot",
            Op::JaggedDenseBmmBackward => "jagged_dense_bmm_backward",
            Op::JaggedJaggedBmmBackward => "jagged_jagged_bmm_backward",
            Op::SessionPool => "session_pool",
            Op::UserPool => "user_pool",
            Op::EventBoost => "event_boost",
            Op::ProductQuantize => "product_quantize",
            Op::ResidualQuantize => "residual_quantize",
            Op::SidEmbed => "sid_embed",
            Op::JaggedTopk => "jagged_topk",
        }
    }

    /// How errors name it: ``op `jagged_softmax` ``.
    pub fn subject(self) -> String {
        format!("op `{}`", self.name())
    }

    /// The op named `name`.
    pub fn from_name(name: &str) -> Result<Op, CliError> {
        Op::ALL
            .into_iter()
            .find(|op| op.name() == name)
            .ok_or_else(|| CliError::UnknownOp(name.to_string()))
    }

    /// The attention ops compute in bf16 by default (OPS.md).
    fn is_attention(self) -> bool {
        matches!(
            self,
            Op::JaggedFlashAttention | Op::FbgemmJaggedFlashAttentionBasic
        )
    }

    /// The interaction ops (`#[jagged_kernel]`s of `jagged::ops::interactions`).
    pub fn is_interaction(self) -> bool {
        matches!(
            self,
            Op::JaggedDenseBmm
                | Op::JaggedJaggedBmm
                | Op::JaggedPairwiseDot
                | Op::JaggedDenseDot
                | Op::JaggedDenseBmmBackward
                | Op::JaggedJaggedBmmBackward
        )
    }

    /// OPS.md's input names.
    pub fn inputs(self) -> &'static [&'static str] {
        match self {
            Op::CompleteCumsum => &["lengths"],
            Op::JaggedToPaddedDense | Op::JaggedSoftmax | Op::JaggedReduce => {
                &["values", "offsets"]
            }
            Op::DenseToJagged => &["dense", "offsets"],
            Op::JaggedDenseElementwiseMul => &["values", "offsets", "dense"],
            Op::MaskedSelectJagged => &["values", "offsets", "mask"],
            Op::JaggedFlashAttention | Op::FbgemmJaggedFlashAttentionBasic => {
                &["q", "k", "v", "offsets"]
            }
            Op::JaggedDenseBmm | Op::JaggedDenseDot => &["x", "offsets", "y"],
            Op::JaggedJaggedBmm => &["x", "y", "offsets"],
            Op::JaggedPairwiseDot => &["x", "offsets"],
            Op::JaggedDenseBmmBackward => &["x", "offsets", "y", "dout"],
            Op::JaggedJaggedBmmBackward => &["x", "y", "offsets", "dout"],
            Op::SessionPool => &["values", "session_offsets"],
            Op::UserPool => &["pooled", "user_offsets"],
            Op::EventBoost => &["values", "offsets", "segment", "cond", "table", "columns"],
            Op::ProductQuantize => &["x", "offsets", "centroids"],
            Op::ResidualQuantize => &["x", "offsets", "codebooks"],
            Op::SidEmbed => &["codes", "offsets", "codebooks"],
            Op::JaggedTopk => &["scores", "offsets"],
        }
    }

    /// Graph attributes (run time).
    fn runtime_attrs(self) -> &'static [&'static str] {
        match self {
            Op::CompleteCumsum
            | Op::DenseToJagged
            | Op::MaskedSelectJagged
            | Op::SessionPool
            | Op::UserPool
            | Op::EventBoost
            | Op::ProductQuantize
            | Op::ResidualQuantize
            | Op::SidEmbed => &[],
            Op::JaggedToPaddedDense => &["max_len", "padding_value"],
            Op::JaggedDenseElementwiseMul
            | Op::JaggedSoftmax
            | Op::JaggedReduce
            | Op::FbgemmJaggedFlashAttentionBasic
            | Op::JaggedDenseBmm
            | Op::JaggedJaggedBmm
            | Op::JaggedPairwiseDot
            | Op::JaggedDenseDot
            | Op::JaggedDenseBmmBackward
            | Op::JaggedJaggedBmmBackward => &["max_len"],
            Op::JaggedFlashAttention => &["max_len", "scale"],
            Op::JaggedTopk => &["k"],
        }
    }

    /// Attributes that shape the graph, in every subcommand.
    fn flag_attrs(self) -> &'static [&'static str] {
        match self {
            Op::JaggedReduce | Op::SessionPool | Op::UserPool => &["reduce"],
            Op::JaggedFlashAttention => &["causal", "activation", "dtype"],
            Op::FbgemmJaggedFlashAttentionBasic => &["use_mask", "dtype"],
            op if op.is_interaction() => &["dtype", "tf32"],
            Op::ProductQuantize | Op::SidEmbed => &["dtype"],
            Op::ResidualQuantize => &["dtype", "beam"],
            _ => &[],
        }
    }

    /// Sizes `emit` / `stats` take as attributes (`run` reads the files).
    fn size_attrs(self) -> &'static [&'static str] {
        match self {
            Op::CompleteCumsum => &["index"],
            Op::DenseToJagged => &["inner", "index", "max_len"],
            Op::MaskedSelectJagged => &["inner", "index", "mask"],
            Op::JaggedFlashAttention => &["heads", "head_dim", "value_dim", "index"],
            Op::FbgemmJaggedFlashAttentionBasic => &["head_dim", "index"],
            Op::EventBoost => &["inner", "index", "mask"],
            Op::JaggedTopk => &["index"],
            _ => &["inner", "index"],
        }
    }
}

/// `--attr K=V` options, checked against an op.
#[derive(Clone, Debug, Default)]
pub struct Attrs(BTreeMap<String, String>);

/// Splits `K=V`.
pub fn key_value(flag: &'static str, arg: &str) -> Result<(String, String), CliError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(CliError::NotKeyValue {
            flag,
            arg: arg.to_string(),
        }),
    }
}

/// Splits every `K=V` of a repeatable flag, in order; a name given twice is
/// [`CliError::Repeated`].
pub fn key_values(flag: &'static str, args: &[String]) -> Result<Vec<(String, String)>, CliError> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(args.len());
    for arg in args {
        let (k, v) = key_value(flag, arg)?;
        if out.iter().any(|(n, _)| *n == k) {
            return Err(CliError::Repeated { flag, name: k });
        }
        out.push((k, v));
    }
    Ok(out)
}

impl Attrs {
    /// Parses `K=V` strings; `with_sizes` allows the size attributes
    /// (`emit`, `stats`), else only run-time and flag attributes (`run`).
    pub fn parse(op: Op, args: &[String], with_sizes: bool) -> Result<Attrs, CliError> {
        let mut known: Vec<&str> = op.runtime_attrs().to_vec();
        known.extend(op.flag_attrs());
        if with_sizes {
            for size in op.size_attrs() {
                if !known.contains(size) {
                    known.push(size);
                }
            }
        }
        let mut map = BTreeMap::new();
        for (k, v) in key_values("--attr", args)? {
            if !known.contains(&k.as_str()) {
                return Err(CliError::UnknownAttr {
                    subject: op.subject(),
                    name: k,
                    known: if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    },
                });
            }
            map.insert(k, v);
        }
        Ok(Attrs(map))
    }

    fn bad(&self, name: &str, reason: &str) -> CliError {
        CliError::BadAttr {
            name: name.to_string(),
            value: self.0.get(name).cloned().unwrap_or_default(),
            reason: reason.to_string(),
        }
    }

    fn usize(&self, name: &str) -> Result<Option<usize>, CliError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| self.bad(name, "expected a non-negative integer"))
            })
            .transpose()
    }

    fn f64(&self, name: &str) -> Result<Option<f64>, CliError> {
        self.0
            .get(name)
            .map(|v| v.parse().map_err(|_| self.bad(name, "expected a number")))
            .transpose()
    }

    fn bool(&self, name: &str) -> Result<bool, CliError> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(_) => Err(self.bad(name, "expected true or false")),
        }
    }

    fn dtype(&self, name: &str, allowed: &[DType]) -> Result<Option<DType>, CliError> {
        let Some(v) = self.0.get(name) else {
            return Ok(None);
        };
        match DType::from_name(v) {
            Some(d) if allowed.contains(&d) => Ok(Some(d)),
            _ => {
                let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
                Err(self.bad(name, &format!("expected one of {}", names.join(", "))))
            }
        }
    }

    /// `inner=8x64`.
    fn dims(&self, name: &str) -> Result<Option<Vec<usize>>, CliError> {
        self.0
            .get(name)
            .map(|v| {
                v.split('x')
                    .map(|d| d.parse::<usize>().ok().filter(|&d| d > 0))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| self.bad(name, "expected positive dims like 64 or 8x64"))
            })
            .transpose()
    }

    /// The `max_len` given, if any.
    pub fn max_len(&self) -> Result<Option<usize>, CliError> {
        self.usize("max_len")
    }

    /// The graph attributes given (`max_len`, `padding_value`, `scale`).
    pub fn graph_attrs(&self, op: Op) -> Result<Vec<(&'static str, AttrValue)>, CliError> {
        let mut out = Vec::new();
        for &name in op.runtime_attrs() {
            let value = match name {
                "max_len" | "k" => self.usize(name)?.map(AttrValue::Index),
                _ => self.f64(name)?.map(AttrValue::Float),
            };
            out.extend(value.map(|v| (name, v)));
        }
        Ok(out)
    }
}

/// The float dtypes kernels compute in.
const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// What a graph is specialized on besides its flags: dtypes and sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// The float dtype of the values.
    pub dtype: DType,
    /// Offsets / lengths dtype.
    pub index: DType,
    /// The mask dtype (`masked_select_jagged`).
    pub mask: DType,
    /// Inner dims of the values (primitives), or `[H, D]` / `[D]` of `q` (attention).
    pub inner: Vec<usize>,
    /// `Dv` of attention's `v`.
    pub value_dim: usize,
}

impl Facts {
    /// The float dtype: `--dtype` (parsed by [`parse_dtype`]), else the
    /// `dtype` attribute, else the op's default.
    pub fn dtype(op: Op, cli_dtype: Option<DType>, attrs: &Attrs) -> Result<DType, CliError> {
        let from_attr = attrs.dtype("dtype", &FLOATS)?;
        let default = if op.is_attention() {
            DType::BF16
        } else {
            DType::F32
        };
        Ok(cli_dtype.or(from_attr).unwrap_or(default))
    }

    /// The facts `emit` / `stats` use: the size attributes or their defaults.
    pub fn from_attrs(op: Op, dtype: DType, attrs: &Attrs) -> Result<Facts, CliError> {
        let index = attrs
            .dtype("index", &[DType::I32, DType::I64])?
            .unwrap_or(DType::I32);
        let mask = attrs
            .dtype("mask", &[DType::U8, DType::Bool])?
            .unwrap_or(DType::U8);
        let head_dim = attrs.usize("head_dim")?.unwrap_or(64);
        let inner = match op {
            Op::JaggedFlashAttention => vec![attrs.usize("heads")?.unwrap_or(2), head_dim],
            Op::FbgemmJaggedFlashAttentionBasic => vec![head_dim],
            Op::JaggedPairwiseDot => attrs.dims("inner")?.unwrap_or_else(|| vec![64]),
            Op::EventBoost => attrs.dims("inner")?.unwrap_or_else(|| vec![64, 4, 8]),
            Op::ProductQuantize => attrs.dims("inner")?.unwrap_or_else(|| vec![8, 256, 8]),
            Op::ResidualQuantize | Op::SidEmbed => {
                attrs.dims("inner")?.unwrap_or_else(|| vec![4, 256, 64])
            }
            op if op.is_interaction() => attrs.dims("inner")?.unwrap_or_else(|| vec![64, 64]),
            _ => attrs.dims("inner")?.unwrap_or_else(|| vec![64]),
        };
        Ok(Facts {
            dtype,
            index,
            mask,
            inner,
            value_dim: attrs.usize("value_dim")?.unwrap_or(head_dim),
        })
    }
}

/// The graph of an interaction op (`jagged::ops::interactions`) for
/// `facts`: the `*_tf32` kernel with `tf32=true`.
fn interaction_graph(op: Op, facts: &Facts, attrs: &Attrs) -> Result<Graph, CliError> {
    use jagged::ops::interactions as i;
    let tf32 = attrs.bool("tf32")?;
    let (t, x) = (facts.dtype, facts.index);
    let two = |what: &str| -> Result<(usize, usize), CliError> {
        match facts.inner[..] {
            [a, b] => Ok((a, b)),
            _ => Err(attrs.bad("inner", &format!("expected two dims, {what}"))),
        }
    };
    let built = match op {
        Op::JaggedDenseBmm | Op::JaggedDenseBmmBackward => {
            let (k, m) = two("KxM")?;
            match (op, tf32) {
                (Op::JaggedDenseBmm, false) => i::jagged_dense_bmm_full::graph(t, k, m, x),
                (Op::JaggedDenseBmm, true) => i::jagged_dense_bmm_tf32::graph(t, k, m, x),
                (_, false) => i::jagged_dense_bmm_backward_full::graph(t, k, m, x),
                (_, true) => i::jagged_dense_bmm_backward_tf32::graph(t, k, m, x),
            }
        }
        Op::JaggedJaggedBmm | Op::JaggedJaggedBmmBackward => {
            let (m, p) = two("MxP")?;
            match (op, tf32) {
                (Op::JaggedJaggedBmm, false) => i::jagged_jagged_bmm_full::graph(t, m, p, x),
                (Op::JaggedJaggedBmm, true) => i::jagged_jagged_bmm_tf32::graph(t, m, p, x),
                (_, false) => i::jagged_jagged_bmm_backward_full::graph(t, m, p, x),
                (_, true) => i::jagged_jagged_bmm_backward_tf32::graph(t, m, p, x),
            }
        }
        Op::JaggedDenseDot => {
            let (d, f) = two("DxF")?;
            if tf32 {
                i::jagged_dense_dot_tf32::graph(t, d, f, x)
            } else {
                i::jagged_dense_dot_full::graph(t, d, f, x)
            }
        }
        _ => {
            let [d] = facts.inner[..] else {
                return Err(attrs.bad("inner", "expected one dim, D"));
            };
            if tf32 {
                i::jagged_pairwise_dot_tf32::graph(t, d, x)
            } else {
                i::jagged_pairwise_dot_full::graph(t, d, x)
            }
        }
    };
    built.map_err(|source| CliError::Kernel {
        op: op.name(),
        source,
    })
}

/// The graph of an event-stream op (`jagged::ops::events`) for `facts`;
/// `event_boost`'s `inner` is `[D, G, C]` (its table flattened to `G * C`).
fn event_graph(op: Op, facts: &Facts, attrs: &Attrs) -> Result<Graph, CliError> {
    use jagged::ops::events as e;
    let (t, x) = (facts.dtype, facts.index);
    let built = if op == Op::JaggedTopk {
        // `starts`, the offsets' first B entries, is derived by `jagc run`.
        e::jagged_topk_kernel::graph(t, x, x)
    } else if op == Op::EventBoost {
        let [d, g, c] = facts.inner[..] else {
            return Err(attrs.bad(
                "inner",
                "expected DxGxC (columns, table rows, table columns)",
            ));
        };
        e::event_boost_graph(t, d, g * c, x, facts.mask, x)
    } else {
        let reduce = match attrs.0.get("reduce").map(String::as_str) {
            None => e::Reduce::Sum,
            Some(name) => e::Reduce::from_name(name)
                .ok_or_else(|| attrs.bad("reduce", "expected sum, mean or max"))?,
        };
        if op == Op::SessionPool {
            e::session_pool_graph(reduce, t, &facts.inner, x)
        } else {
            e::user_pool_graph(reduce, t, &facts.inner, x)
        }
    };
    built.map_err(|source| CliError::Kernel {
        op: op.name(),
        source,
    })
}

/// The graph of a semantic-ID op (`jagged::ops::quantize`) for `facts`
/// (`inner` is the centroids' `[M, K, S]` or the codebooks' `[L, K, D]`):
/// `product_quantize_kernel`, `sid_embed_kernel` (the codebooks as a table
/// `[L * K, D]`), or one level of `residual_quantize` whose residual input
/// is in `residual` (the values' dtype at the first level, f32 after it).
pub fn quantize_graph(
    op: Op,
    facts: &Facts,
    attrs: &Attrs,
    residual: DType,
) -> Result<Graph, CliError> {
    use jagged::ops::quantize as q;
    let (t, x) = (facts.dtype, facts.index);
    let [a, k, d] = facts.inner[..] else {
        return Err(attrs.bad("inner", "expected three dims (MxKxS or LxKxD)"));
    };
    if op == Op::ResidualQuantize {
        match attrs.usize("beam")? {
            None | Some(1) => {}
            Some(0) => return Err(attrs.bad("beam", "the beam keeps at least one code (beam=1)")),
            Some(_) => {
                return Err(attrs.bad(
                    "beam",
                    "jagc runs greedy encoding only (beam=1); beam search (beam > 1) runs \
                     through jagged::ops::quantize::residual_quantize",
                ));
            }
        }
    }
    let built = match op {
        Op::ProductQuantize => q::product_quantize_kernel::graph(t, a, k, d, x),
        Op::ResidualQuantize => q::residual_quantize_level::graph(residual, t, k, d, a, x),
        _ => q::sid_embed_kernel::graph(t, a, a * k, d, x),
    };
    built.map_err(|source| CliError::Kernel {
        op: op.name(),
        source,
    })
}

/// The graph of `op` for `facts` and the flag attributes.
pub fn build_graph(op: Op, facts: &Facts, attrs: &Attrs) -> Result<Graph, CliError> {
    let jagged = JaggedSpec {
        dtype: facts.dtype,
        offsets: facts.index,
        inner: facts.inner.clone(),
    };
    let built = match op {
        Op::CompleteCumsum => ops::complete_cumsum(facts.index),
        Op::JaggedToPaddedDense => ops::jagged_to_padded_dense(&jagged),
        Op::DenseToJagged => ops::dense_to_jagged(&jagged),
        Op::JaggedDenseElementwiseMul => ops::jagged_dense_elementwise_mul(&jagged),
        Op::JaggedSoftmax => ops::jagged_softmax(&jagged),
        Op::SessionPool | Op::UserPool | Op::EventBoost | Op::JaggedTopk => {
            return event_graph(op, facts, attrs);
        }
        Op::ProductQuantize | Op::ResidualQuantize | Op::SidEmbed => {
            return quantize_graph(op, facts, attrs, facts.dtype);
        }
        Op::JaggedReduce => {
            let reduce = match attrs.0.get("reduce").map(String::as_str) {
                None | Some("sum") => ReduceOp::Sum,
                Some("mean") => ReduceOp::Mean,
                Some("max") => ReduceOp::Max,
                Some(_) => return Err(attrs.bad("reduce", "expected sum, mean or max")),
            };
            ops::jagged_reduce(&jagged, reduce)
        }
        Op::MaskedSelectJagged => ops::masked_select_jagged(&jagged, facts.mask),
        Op::JaggedFlashAttention => {
            let [heads, head_dim] = facts.inner[..] else {
                return Err(attrs.bad("heads", "q must be [T, H, D]"));
            };
            let activation = match attrs.0.get("activation").map(String::as_str) {
                None | Some("softmax") => Activation::Softmax,
                Some("silu") => Activation::Silu,
                Some(_) => return Err(attrs.bad("activation", "expected softmax or silu")),
            };
            ops::jagged_flash_attention(&AttentionSpec {
                input_dtype: facts.dtype,
                dtype: facts.dtype,
                offsets: facts.index,
                heads,
                head_dim,
                value_dim: facts.value_dim,
                causal: attrs.bool("causal")?,
                activation,
            })
        }
        Op::FbgemmJaggedFlashAttentionBasic => {
            let [head_dim] = facts.inner[..] else {
                return Err(attrs.bad("head_dim", "q must be [T, D]"));
            };
            ops::fbgemm_jagged_flash_attention_basic(&FbgemmAttentionSpec {
                input_dtype: facts.dtype,
                dtype: facts.dtype,
                offsets: facts.index,
                head_dim,
                use_mask: attrs.bool("use_mask")?,
            })
        }
        // The interaction ops are `#[jagged_kernel]`s.
        _ => return interaction_graph(op, facts, attrs),
    };
    built.map_err(|source| CliError::Graph {
        op: op.name(),
        source,
    })
}

/// Parses `--arch`.
pub fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::from_name(s).ok_or_else(|| format!("unknown arch `{s}` (expected sm_80 or sm_90a)"))
}

/// Parses `--dtype`.
pub fn parse_dtype(s: &str) -> Result<DType, String> {
    DType::from_name(s)
        .filter(|d| FLOATS.contains(d))
        .ok_or_else(|| format!("unknown dtype `{s}` (expected f32, f16 or bf16)"))
}

/// How errors name a `--graph` file's graph: ``graph `rms_norm` (FILE)``.
pub fn graph_subject(graph: &Graph, path: &Path) -> String {
    format!("graph `{}` ({})", graph.name(), path.display())
}

/// Reads and parses a `--graph` file in the canonical text form; a parse
/// error names the file and the parser's line and column.
pub fn load_graph(path: &Path) -> Result<Graph, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::GraphRead {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Graph::parse(&text).map_err(|e| CliError::GraphParse {
        path: path.display().to_string(),
        line: e.line,
        column: e.column,
        message: e.message,
    })
}

/// `--attr K=V` for a `--graph` file: each names an attribute the graph
/// declares and is parsed by its kind (index: a non-negative integer; float:
/// a number). Attributes not given keep the file's defaults.
pub fn graph_file_attrs(
    graph: &Graph,
    path: &Path,
    args: &[String],
) -> Result<Vec<(String, AttrValue)>, CliError> {
    let mut out: Vec<(String, AttrValue)> = Vec::new();
    for (name, value) in key_values("--attr", args)? {
        let Some(decl) = graph.attr(&name) else {
            let known: Vec<&str> = graph.attrs().iter().map(|a| a.name.as_str()).collect();
            return Err(CliError::UnknownAttr {
                subject: graph_subject(graph, path),
                name,
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            });
        };
        let bad = |reason: &str| CliError::BadAttr {
            name: name.clone(),
            value: value.clone(),
            reason: reason.to_string(),
        };
        let parsed = match decl.kind {
            AttrKind::Index => value
                .parse()
                .map(AttrValue::Index)
                .map_err(|_| bad("expected a non-negative integer"))?,
            AttrKind::Float => value
                .parse()
                .map(AttrValue::Float)
                .map_err(|_| bad("expected a number"))?,
        };
        out.push((name, parsed));
    }
    Ok(out)
}

/// The value of the attribute `name` of a graph run: given, else the
/// graph's default.
pub fn graph_attr_value(
    graph: &Graph,
    given: &[(String, AttrValue)],
    name: &str,
) -> Option<AttrValue> {
    given
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .or_else(|| graph.attr(name).and_then(|a| a.default))
}
