//! The builtin ops of OPS.md ("Primitives" and "Attention" forward), each as a
//! graph built from the IR's small op set.
//!
//! Static facts (dtypes, inner dims, flags like `causal`) are parameters of the
//! builder functions, so each call gives one specialization; run-time facts
//! (`max_len`, `scale`, `padding_value`) are graph attributes. Input, attribute
//! and output names are those of OPS.md.

use crate::arena::Handle;
use crate::builder::GraphBuilder;
use crate::dtype::DType;
use crate::graph::{
    AttrKind, AttrValue, Dim, Graph, IndexPredicate, MAX_LEN, Node, ReduceOp, ScanMode, TensorType,
};
use crate::validate::ValidationError;

/// The specialization of a jagged primitive: dtypes and inner dims.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JaggedSpec {
    /// The dtype of the values.
    pub dtype: DType,
    /// The dtype of the offsets (i32 or i64).
    pub offsets: DType,
    /// The inner dims of the values (`[D]`, `[H]`, ...).
    pub inner: Vec<usize>,
}

/// The `offsets` input and its sequence set (truncated to `max_len` if `truncate`).
fn sequences(b: &mut GraphBuilder, offsets: DType, truncate: bool) -> (Handle<Node>, Handle<Node>) {
    let o = b.input("offsets", TensorType::new(offsets, vec![Dim::BatchPlusOne]));
    let s = b.seqs(o, truncate);
    (o, s)
}

fn declare_max_len(b: &mut GraphBuilder) {
    b.declare_attr(MAX_LEN, AttrKind::Index, None);
}

/// `complete_cumsum`: `lengths [B]` to `offsets [B+1]` (`lengths` is i32 or i64).
pub fn complete_cumsum(lengths: DType) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("complete_cumsum");
    let l = b.input("lengths", TensorType::new(lengths, vec![Dim::Batch]));
    let o = b.scan(ScanMode::Complete, l, 0);
    b.output("offsets", o);
    b.finish()
}

/// `jagged_to_padded_dense`: `values [T, *inner]` to `dense [B, max_len, *inner]`,
/// `padding_value` (default 0) past each sequence.
pub fn jagged_to_padded_dense(spec: &JaggedSpec) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("jagged_to_padded_dense");
    declare_max_len(&mut b);
    b.declare_attr(
        "padding_value",
        AttrKind::Float,
        Some(AttrValue::Float(0.0)),
    );
    let (_, s) = sequences(&mut b, spec.offsets, true);
    let x = b.input("values", TensorType::jagged(spec.dtype, s, &spec.inner));
    let padded = b.to_padded(x);
    let valid = b.mask(
        IndexPredicate::RowInSequence(s),
        TensorType::new(DType::Bool, vec![Dim::Batch, Dim::MaxLen]),
    );
    let pad = b.attr("padding_value", spec.dtype);
    let dense = b.select(valid, padded, pad);
    b.output("dense", dense);
    b.finish()
}

/// `dense_to_jagged`: `dense [B, N, *inner]` to `values [T, *inner]` on `offsets`
/// (`N` is taken from the dense input's shape).
pub fn dense_to_jagged(spec: &JaggedSpec) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("dense_to_jagged");
    let dense_ty = TensorType::dense(spec.dtype, &[Dim::Batch, Dim::MaxLen], &spec.inner);
    let d = b.input("dense", dense_ty);
    let (_, s) = sequences(&mut b, spec.offsets, false);
    let x = b.from_padded(d, s);
    b.output("values", x);
    b.finish()
}

/// `jagged_dense_elementwise_mul`: `values [T, *inner] * dense [B, max_len, *inner]`.
pub fn jagged_dense_elementwise_mul(spec: &JaggedSpec) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("jagged_dense_elementwise_mul");
    declare_max_len(&mut b);
    let (_, s) = sequences(&mut b, spec.offsets, true);
    let x = b.input("values", TensorType::jagged(spec.dtype, s, &spec.inner));
    let dense_ty = TensorType::dense(spec.dtype, &[Dim::Batch, Dim::MaxLen], &spec.inner);
    let y = b.input("dense", dense_ty);
    let z = b.mul(x, y);
    b.output("values", z);
    b.finish()
}

/// `jagged_softmax`: softmax over the rows of each sequence, per column.
pub fn jagged_softmax(spec: &JaggedSpec) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("jagged_softmax");
    declare_max_len(&mut b);
    let (_, s) = sequences(&mut b, spec.offsets, true);
    let x = b.input("values", TensorType::jagged(spec.dtype, s, &spec.inner));
    let y = b.softmax(x, 0);
    b.output("values", y);
    b.finish()
}

/// `jagged_reduce`: `values [T, *inner]` to `out [B, *inner]` by `reduce`
/// (`Sum`, `Mean` or `Max` per OPS.md; `LogSumExp` works too).
pub fn jagged_reduce(spec: &JaggedSpec, reduce: ReduceOp) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("jagged_reduce");
    declare_max_len(&mut b);
    let (_, s) = sequences(&mut b, spec.offsets, true);
    let x = b.input("values", TensorType::jagged(spec.dtype, s, &spec.inner));
    let y = b.reduce(reduce, x, 0);
    b.output("out", y);
    b.finish()
}

/// `masked_select_jagged`: keeps the rows whose `mask [T]` (u8 or bool) is set;
/// outputs the compacted `values` and their `offsets` (of the input offsets' dtype).
pub fn masked_select_jagged(spec: &JaggedSpec, mask: DType) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("masked_select_jagged");
    let (_, s) = sequences(&mut b, spec.offsets, false);
    let x = b.input("values", TensorType::jagged(spec.dtype, s, &spec.inner));
    let m = b.input("mask", TensorType::jagged(mask, s, &[]));
    let m = if mask == DType::Bool {
        m
    } else {
        b.cast(m, DType::Bool)
    };
    let kept = b.seqs_where(m);
    let y = b.compact(x, kept);
    let o = b.offsets(kept, spec.offsets);
    b.output("values", y);
    b.output("offsets", o);
    b.finish()
}

/// The attention probability function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Softmax over the allowed keys (and an `lse` output).
    Softmax,
    /// HSTU: `silu(s) / max_len`, pointwise.
    Silu,
}

/// The specialization of `jagged_flash_attention`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttentionSpec {
    /// The dtype of `q`, `k`, `v` and `out`.
    pub input_dtype: DType,
    /// The `dtype` attribute: inputs are rounded to it before computing.
    pub dtype: DType,
    /// The dtype of the offsets.
    pub offsets: DType,
    /// `H`.
    pub heads: usize,
    /// `D` (of `q` and `k`).
    pub head_dim: usize,
    /// `Dv` (of `v` and `out`).
    pub value_dim: usize,
    /// Causal: query `i` sees keys `j <= i` only.
    pub causal: bool,
    /// Softmax or SiLU.
    pub activation: Activation,
}

use crate::typing::accumulator;

/// An input rounded to the compute `dtype`.
fn rounded(b: &mut GraphBuilder, x: Handle<Node>, from: DType, to: DType) -> Handle<Node> {
    if from == to { x } else { b.cast(x, to) }
}

/// `jagged_flash_attention` forward: `out [T, H, Dv]`, and `lse [T, H]` with softmax.
pub fn jagged_flash_attention(spec: &AttentionSpec) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("jagged_flash_attention");
    declare_max_len(&mut b);
    let scale = 1.0 / (spec.head_dim as f64).sqrt();
    b.declare_attr("scale", AttrKind::Float, Some(AttrValue::Float(scale)));
    let (_, s) = sequences(&mut b, spec.offsets, true);
    let (h, d, dv) = (spec.heads, spec.head_dim, spec.value_dim);
    let q = b.input("q", TensorType::jagged(spec.input_dtype, s, &[h, d]));
    let k = b.input("k", TensorType::jagged(spec.input_dtype, s, &[h, d]));
    let v = b.input("v", TensorType::jagged(spec.input_dtype, s, &[h, dv]));
    let q = rounded(&mut b, q, spec.input_dtype, spec.dtype);
    let k = rounded(&mut b, k, spec.input_dtype, spec.dtype);
    let v = rounded(&mut b, v, spec.input_dtype, spec.dtype);
    let acc = accumulator(spec.dtype);
    let qk = b.contract(q, "ihd", k, "jhd", "ijh", acc);
    let scale = b.attr("scale", acc);
    let scores = b.mul(qk, scale);
    let pair = TensorType::new(DType::Bool, vec![Dim::Ragged(s), Dim::Ragged(s)]);
    let (p, lse) = match spec.activation {
        Activation::Softmax => {
            let scores = if spec.causal {
                let allowed = b.mask(IndexPredicate::KeyNotAfterQuery, pair);
                let minus_inf = b.constant(f64::NEG_INFINITY, acc);
                b.select(allowed, scores, minus_inf)
            } else {
                scores
            };
            let p = b.softmax(scores, 1);
            let lse = b.reduce(ReduceOp::LogSumExp, scores, 1);
            (p, Some(rounded(&mut b, lse, acc, DType::F32)))
        }
        Activation::Silu => {
            let a = b.silu(scores);
            let max_len = b.attr(MAX_LEN, acc);
            let p = b.div(a, max_len);
            let p = if spec.causal {
                let allowed = b.mask(IndexPredicate::KeyNotAfterQuery, pair);
                let zero = b.constant(0.0, acc);
                b.select(allowed, p, zero)
            } else {
                p
            };
            (p, None)
        }
    };
    let v = rounded(&mut b, v, spec.dtype, acc);
    let o = b.contract(p, "ijh", v, "jhe", "ihe", acc);
    let out = rounded(&mut b, o, acc, spec.input_dtype);
    b.output("out", out);
    if let Some(lse) = lse {
        b.output("lse", lse);
    }
    b.finish()
}

/// The specialization of `fbgemm_jagged_flash_attention_basic`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FbgemmAttentionSpec {
    /// The dtype of `q`, `k`, `v` and `out`.
    pub input_dtype: DType,
    /// The `dtype` attribute: inputs are rounded to it before computing.
    pub dtype: DType,
    /// The dtype of the offsets.
    pub offsets: DType,
    /// `D`.
    pub head_dim: usize,
    /// Zero `p_ij` for `j < i` after normalization.
    pub use_mask: bool,
}

/// `fbgemm_jagged_flash_attention_basic`: `out [T, D]`, with
/// `p = softmax_j(q_i . k_j) / max_len` (masked to `j >= i` if `use_mask`).
pub fn fbgemm_jagged_flash_attention_basic(
    spec: &FbgemmAttentionSpec,
) -> Result<Graph, ValidationError> {
    let mut b = GraphBuilder::new("fbgemm_jagged_flash_attention_basic");
    declare_max_len(&mut b);
    let (_, s) = sequences(&mut b, spec.offsets, true);
    let d = spec.head_dim;
    let q = b.input("q", TensorType::jagged(spec.input_dtype, s, &[d]));
    let k = b.input("k", TensorType::jagged(spec.input_dtype, s, &[d]));
    let v = b.input("v", TensorType::jagged(spec.input_dtype, s, &[d]));
    let q = rounded(&mut b, q, spec.input_dtype, spec.dtype);
    let k = rounded(&mut b, k, spec.input_dtype, spec.dtype);
    let v = rounded(&mut b, v, spec.input_dtype, spec.dtype);
    let acc = accumulator(spec.dtype);
    let scores = b.contract(q, "id", k, "jd", "ij", acc);
    let p = b.softmax(scores, 1);
    let max_len = b.attr(MAX_LEN, acc);
    let p = b.div(p, max_len);
    let p = if spec.use_mask {
        let pair = TensorType::new(DType::Bool, vec![Dim::Ragged(s), Dim::Ragged(s)]);
        let kept = b.mask(IndexPredicate::KeyNotBeforeQuery, pair);
        let zero = b.constant(0.0, acc);
        b.select(kept, p, zero)
    } else {
        p
    };
    let v = rounded(&mut b, v, spec.dtype, acc);
    let o = b.contract(p, "ij", v, "jd", "id", acc);
    let out = rounded(&mut b, o, acc, spec.input_dtype);
    b.output("out", out);
    b.finish()
}
