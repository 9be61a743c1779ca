//! The IR: a typed SSA graph over jagged and dense tensors.
//!
//! A [`Graph`] is an arena of [`Node`]s (each node defines one value, named `%k`
//! by its handle), graph-level attribute declarations and named outputs. Nodes
//! only refer to earlier nodes. Every value has a [`Type`], inferred by the
//! validator ([`crate::validate`]); a `Graph` exists only once validated, so
//! [`Graph::type_of`] always answers.
//!
//! # Types
//!
//! A tensor type is a dtype and a list of [`Dim`]s:
//! - `%s` ([`Dim::Ragged`]): the row axis of a jagged tensor over the sequence
//!   set `%s`. In sequence `b` it ranges over `i < n_b`. A jagged tensor has one
//!   (rows `i`) or two (query rows `i`, key rows `j`, as in attention scores)
//!   leading ragged dims, all over the same sequence set, then static dims.
//!   `f32[%1, 4]` is `values [T, 4]`; `f32[%1, %1, 4]` is, per sequence, an
//!   `[n_b, n_b, 4]` block.
//! - `B` ([`Dim::Batch`]), `B+1` ([`Dim::BatchPlusOne`]): the number of sequences
//!   (and of offsets).
//! - `N` ([`Dim::MaxLen`]): the `max_len` attribute (or, without one, the bound
//!   taken from a dense input's shape).
//! - integers ([`Dim::Static`]): inner dims known at specialization time.
//!
//! A scalar is a tensor with no dims (`f32[]`). Sequence sets themselves are
//! values of type `seqs`, created from an offsets tensor ([`Node::Seqs`]) or by
//! compaction ([`Node::SeqsWhere`]); two jagged operands must share one.
//!
//! # Broadcasting
//!
//! Elementwise operands are matched by *structure*: a type splits into an
//! optional batch (a `B` dim or ragged dims), row axes (ragged dims, or `N`
//! after `B`) and inner static dims. An operand broadcasts to the result when its
//! row axes are a prefix of the result's (an `N` row matching a ragged row whose
//! set is truncated to `max_len`) and its inner dims are the result's or none.
//! So `f32[B, 4]` (one value per sequence) meets `f32[%1, 4]` (one per row), and
//! `f32[%1, 4]` (per query row) meets `f32[%1, %1, 4]` (per query-key pair).
//!
//! # Semantics
//!
//! The reference evaluator ([`crate::eval`]) defines them; each [`Node`] variant
//! documents its own. Values outside `i < n_b` are zero.

use std::fmt;

use crate::arena::{Arena, Handle};
use crate::dtype::DType;

/// One dimension of a tensor type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A ragged row axis over the sequence set defined by this node (`%s`).
    Ragged(Handle<Node>),
    /// The number of sequences `B`.
    Batch,
    /// `B + 1` (offsets).
    BatchPlusOne,
    /// The maximum length `N` (the `max_len` attribute).
    MaxLen,
    /// A static extent.
    Static(usize),
}

/// The type of a tensor value: element type and dims.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// The element type.
    pub dtype: DType,
    /// The dims, outermost first; empty for a scalar.
    pub dims: Vec<Dim>,
}

impl TensorType {
    /// The number of leading row dims (`B`, `B+1`, ragged, `N`): the dims
    /// before the static inner ones.
    pub fn row_dims(&self) -> usize {
        self.dims.len()
            - self
                .dims
                .iter()
                .rev()
                .take_while(|d| matches!(d, Dim::Static(_)))
                .count()
    }

    /// How an `index` of this type picks along `axis` in a [`Node::Take`]:
    /// the number of this type's leading dims the index leaves out (0, or
    /// the row dims when the index is one static index for every row), or
    /// `None` when its dims are neither `dims[..axis]` nor `dims[rows..axis]`
    /// followed by static dims.
    pub fn take_index_skip(&self, index: &TensorType, axis: usize) -> Option<usize> {
        let rows = self.row_dims();
        let statics = |d: &[Dim]| d.iter().all(|d| matches!(d, Dim::Static(_)));
        [0, rows].into_iter().find(|&skip| {
            skip <= axis
                && axis <= self.dims.len()
                && index.dims.len() >= axis - skip
                && index.dims[..axis - skip] == self.dims[skip..axis]
                && statics(&index.dims[axis - skip..])
        })
    }

    /// A tensor type from its dtype and dims.
    pub fn new(dtype: DType, dims: Vec<Dim>) -> Self {
        TensorType { dtype, dims }
    }

    /// A scalar of `dtype`.
    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            dims: Vec::new(),
        }
    }

    /// A jagged type `dtype[%seqs, inner...]`.
    pub fn jagged(dtype: DType, seqs: Handle<Node>, inner: &[usize]) -> Self {
        let mut dims = vec![Dim::Ragged(seqs)];
        dims.extend(inner.iter().map(|&n| Dim::Static(n)));
        TensorType { dtype, dims }
    }

    /// A dense type with leading symbolic dims followed by static inner dims.
    pub fn dense(dtype: DType, symbolic: &[Dim], inner: &[usize]) -> Self {
        let mut dims = symbolic.to_vec();
        dims.extend(inner.iter().map(|&n| Dim::Static(n)));
        TensorType { dtype, dims }
    }

    /// The sequence set of the ragged dims, if the type is jagged.
    pub fn seqs(&self) -> Option<Handle<Node>> {
        match self.dims.first() {
            Some(Dim::Ragged(s)) => Some(*s),
            _ => None,
        }
    }

    /// The number of leading ragged dims (0 for a dense type).
    pub fn ragged_rank(&self) -> usize {
        self.dims
            .iter()
            .take_while(|d| matches!(d, Dim::Ragged(_)))
            .count()
    }
}

/// The type of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// A sequence set (offsets and per-sequence lengths `n_b`).
    Seqs,
    /// A tensor.
    Tensor(TensorType),
}

impl Type {
    /// The tensor type, if this is a tensor.
    pub fn as_tensor(&self) -> Option<&TensorType> {
        match self {
            Type::Tensor(t) => Some(t),
            Type::Seqs => None,
        }
    }
}

/// Elementwise functions of one operand (float operands).
///
/// Each is the IEEE-754 function of the reference's f64 value: NaN in gives
/// NaN out, and the special values follow the C library (`sqrt(-1)` is NaN,
/// `log(0)` is `-inf`, `rsqrt(0)` is `inf`, `tanh(inf)` is 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// `x / (1 + e^-x)`.
    Silu,
    /// `sqrt(x)`; NaN for `x < 0`, `-0` for `-0`.
    Sqrt,
    /// `1 / sqrt(x)`; `inf` for `+-0`, NaN for `x < 0`.
    Rsqrt,
    /// `|x|`.
    Abs,
    /// `max(x, 0)`, with NaN propagated (`relu(NaN)` is NaN).
    Relu,
    /// `1 / (1 + e^-x)`; 0 at `-inf`, 1 at `inf`.
    Sigmoid,
    /// The hyperbolic tangent; `+-1` at `+-inf`.
    Tanh,
}

/// Elementwise functions of two operands of one dtype (broadcast by structure).
///
/// NaN propagates through every one of them, `max` and `min` included (IEEE
/// 754-2019 `maximum` / `minimum`, not `maxNum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`; for integers the quotient truncated toward zero, and 0
    /// where `b` is 0.
    Div,
    /// The larger of `a` and `b`; NaN if either is NaN.
    Max,
    /// The smaller of `a` and `b`; NaN if either is NaN.
    Min,
    /// `a` to the power `b`, where `b` (the exponent) must be a scalar (a
    /// `const`, an `attr` or scalar arithmetic on them; the validator rejects
    /// anything else) and both are floats. The values are C's / IEEE-754's
    /// `pow` (Rust's `f64::powf`): a negative base gives a real result only
    /// for an integer exponent (negative for an odd one: `(-2)^3 = -8`,
    /// `(-2)^2 = 4`) and NaN for a non-integer one (`(-8)^(1/3)` is NaN);
    /// `x^0 = 1` and `1^y = 1` for every `x` and `y`, NaN included;
    /// `(+-0)^y` is `+-inf` / `+inf` for `y < 0` and `+-0` / `+0` for `y > 0`
    /// (signed for odd integer `y`); `(-1)^(+-inf) = 1`; otherwise NaN in
    /// gives NaN out.
    Pow,
}

/// Reductions along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum; 0 over an empty range (NaN and infinities as IEEE addition gives them).
    Sum,
    /// Maximum; 0 over an empty range, NaN if any entry is NaN. `-inf` entries
    /// (masked out) are skipped by [`ReduceOp::LogSumExp`] and softmax, not by `max`.
    Max,
    /// `sum / max(n, 1)`.
    Mean,
    /// `m + ln(sum exp(x - m))` with `m` the maximum; 0 over an empty range or
    /// when every entry is `-inf`; NaN if any entry is NaN (and, by the
    /// formula, when the maximum is `+inf`).
    LogSumExp,
    /// The index (i32) of the smallest entry, the lowest such index on ties;
    /// a NaN entry counts as smaller than any number (the first NaN's index,
    /// as numpy gives it); -1 over an empty range.
    ArgMin,
    /// The index (i32) of the largest entry: as [`ReduceOp::ArgMin`] with a
    /// NaN counting as larger than any number.
    ArgMax,
}

impl ReduceOp {
    /// Whether the result is an index (i32) rather than a value.
    pub fn is_arg(self) -> bool {
        matches!(self, ReduceOp::ArgMin | ReduceOp::ArgMax)
    }
}

/// What a contraction does to its operands before the products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// The operands as they are.
    #[default]
    Full,
    /// f32 operands rounded to TensorFloat-32 (10 mantissa bits, to the
    /// nearest, ties away from zero: PTX's `cvt.rna.tf32.f32`), their
    /// products accumulated in f32: the author's opt-in to tf32 tensor cores.
    Tf32,
}

/// How a scan (prefix sum) aligns its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanMode {
    /// `y[k] = x[0] + ... + x[k]`.
    Inclusive,
    /// `y[k] = x[0] + ... + x[k-1]`, `y[0] = 0`.
    Exclusive,
    /// One longer than the input: `y[0] = 0`, `y[k+1] = y[k] + x[k]`
    /// (lengths to offsets); the axis `B` becomes `B+1`, `n` becomes `n+1`.
    Complete,
}

/// The order a [`Node::Rank`] counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RankOrder {
    /// Smallest first (the `k` nearest: `rank < k`).
    Ascending,
    /// Largest first (the `k` highest scores: `rank < k`).
    Descending,
}

/// What a [`Node::TopK`] gives for each of the `k` best elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopKPart {
    /// Its index along the axis (i32).
    Indices,
    /// Its value (the operand's dtype).
    Values,
}

/// A comparison of two operands of one dtype, broadcast by structure: the
/// `compare` ops, whose result is `bool` (IEEE: every comparison with a NaN
/// is false, except `ne`, which is true).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `a < b`.
    Lt,
    /// `a <= b`.
    Le,
    /// `a > b`.
    Gt,
    /// `a >= b`.
    Ge,
    /// `a == b`.
    Eq,
    /// `a != b`.
    Ne,
}

/// A predicate on element indices: the `mask` op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexPredicate {
    /// `j <= i` over `[%s, %s]` (query row `i`, key row `j`): causal attention.
    KeyNotAfterQuery,
    /// `j >= i` over `[%s, %s]`: FBGEMM's `use_mask`.
    KeyNotBeforeQuery,
    /// `i < n_b` of the given sequence set, over `[B, N]`: the valid part of a
    /// padded dense tensor.
    RowInSequence(Handle<Node>),
}

/// A node of the graph: one op with its operands; it defines the value `%k`.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A graph input named `name` (a jagged tensor's values, offsets, a dense
    /// tensor...). Jagged inputs have one ragged dim; their values are `[T, ...]`.
    Input {
        /// The input's name, unique in the graph.
        name: String,
        /// Its declared type.
        ty: TensorType,
    },
    /// The value of the graph attribute `name` as a scalar of `dtype`.
    Attr {
        /// A declared attribute.
        name: String,
        /// The scalar's dtype (the value is rounded to it).
        dtype: DType,
    },
    /// A scalar constant (rounded to `dtype`).
    Const {
        /// The value; `-inf` is allowed (masking before softmax).
        value: f64,
        /// The scalar's dtype.
        dtype: DType,
    },
    /// A sequence set from an offsets tensor `[B+1]` (i32/i64): `n_b = L_b`, or
    /// `min(L_b, N)` when `truncate` (rows past `max_len` are ignored).
    Seqs {
        /// The offsets.
        offsets: Handle<Node>,
        /// Whether lengths are truncated to `max_len`.
        truncate: bool,
    },
    /// The sequence set of the rows of a `bool[%s]` mask that are set: its
    /// lengths are the per-sequence counts of set rows (stream compaction).
    SeqsWhere {
        /// The mask.
        mask: Handle<Node>,
    },
    /// The set of the strict upper triangle of the `[n_b, n_b]` pair block
    /// of `%s`: sequence `b` has `n_b (n_b - 1) / 2` rows, the pairs
    /// `(i, j)` with `i < j < n_b`, row-major over `(i, j)` (the packed
    /// layout of pairwise interactions). Its lengths are not truncated.
    SeqsTriu {
        /// The sequence set of the pairs.
        seqs: Handle<Node>,
    },
    /// The offsets `[B+1]` of a sequence set, as integers of `dtype`.
    Offsets {
        /// The sequence set.
        seqs: Handle<Node>,
        /// i32 or i64.
        dtype: DType,
    },
    /// An elementwise function of one float operand.
    Unary {
        /// Which function.
        op: UnaryOp,
        /// The operand.
        arg: Handle<Node>,
    },
    /// Elementwise conversion to `dtype` (rounds; see [`DType::round`]).
    Cast {
        /// The operand.
        arg: Handle<Node>,
        /// The target dtype.
        dtype: DType,
    },
    /// An elementwise function of two operands, broadcast by structure.
    Binary {
        /// Which function.
        op: BinaryOp,
        /// Left operand.
        lhs: Handle<Node>,
        /// Right operand.
        rhs: Handle<Node>,
    },
    /// `cond ? on_true : on_false`, elementwise, all three broadcast.
    Select {
        /// A bool tensor.
        cond: Handle<Node>,
        /// Taken where `cond` holds.
        on_true: Handle<Node>,
        /// Taken elsewhere.
        on_false: Handle<Node>,
    },
    /// A bool tensor of type `ty` that holds where the index predicate does.
    Mask {
        /// The predicate.
        pred: IndexPredicate,
        /// Its domain: `bool[%s, %s]` for the key/query predicates,
        /// `bool[B, N]` for [`IndexPredicate::RowInSequence`].
        ty: TensorType,
    },
    /// `lhs op rhs`, elementwise, broadcast: a `bool` tensor.
    Compare {
        /// Which comparison.
        op: CompareOp,
        /// Left operand.
        lhs: Handle<Node>,
        /// Right operand (same dtype).
        rhs: Handle<Node>,
    },
    /// The index of each element along `axis` of a tensor of type `ty`, as a
    /// number of `ty`'s dtype: the query row `i` (axis 0) or the key row `j`
    /// (axis 1) of a `[%s, %s]` pair, the row within its sequence of a
    /// jagged value, `b` along `B`. `i - j`, windows `|i - j| <= w` and
    /// position biases are built from it.
    Position {
        /// Which dim.
        axis: usize,
        /// The domain (a type elementwise ops accept).
        ty: TensorType,
    },
    /// Rows of a table picked by an integer index tensor:
    /// `out[idx..., rest...] = table[index[idx...], rest...]`, and 0 where
    /// the index is outside `0..n` (`n` the table's first, static dim). The
    /// result has the index's dims then the table's other dims: a learned
    /// relative-position bias is `gather(bias [2W + 1], clamp(i - j) + W)`.
    Gather {
        /// A dense table `[n, rest...]` (static dims).
        table: Handle<Node>,
        /// Integer row numbers (any structure elementwise ops accept).
        index: Handle<Node>,
    },
    /// `n_b` of a sequence set (its lengths, truncated to `max_len` if the
    /// set is), as `[B]` integers of `dtype`.
    Lengths {
        /// The sequence set.
        seqs: Handle<Node>,
        /// i32 or i64.
        dtype: DType,
    },
    /// Reduces `axis` away (a ragged, `N` or static axis). Reducing the only
    /// ragged axis of a jagged tensor gives a dense `[B, ...]` tensor.
    Reduce {
        /// The reduction.
        op: ReduceOp,
        /// The operand.
        arg: Handle<Node>,
        /// The axis (index into the operand's dims).
        axis: usize,
    },
    /// Softmax along `axis` (over `i < n_b` for a ragged axis); `-inf` entries
    /// get 0, a line of only `-inf` gives zeros. A line holding a NaN is NaN
    /// everywhere, and so (by `exp(x - max)`) is a line holding `+inf`.
    Softmax {
        /// The operand (float).
        arg: Handle<Node>,
        /// The axis.
        axis: usize,
    },
    /// The position of each element in the stable sort of its line along
    /// `axis` (a ragged, `N` or static axis): the number of elements of the
    /// line that come before it, as i32. Before means better in `order`, or
    /// equal at a lower index; a NaN is better than any number (as in
    /// `argmin`/`argmax`) and NaNs tie. `rank < k` keeps the `k` best of
    /// each line: per-sequence top-k, pruning, beam selection.
    Rank {
        /// Which end comes first.
        order: RankOrder,
        /// The operand (numeric).
        arg: Handle<Node>,
        /// The axis.
        axis: usize,
    },
    /// The `k` best elements of each line along a static `axis` (of length
    /// `n >= k`), best first in `order`'s stable sort (the one of
    /// [`Node::Rank`]: a NaN first, ties to the lower index): the axis
    /// becomes `k` long, slot `s` holding the element of rank `s`, as its
    /// index (`part` indices, i32) or its value. Beam search keeps the
    /// `beam` best candidates of each vector with it.
    TopK {
        /// Which end comes first.
        order: RankOrder,
        /// Indices or values.
        part: TopKPart,
        /// The operand (numeric).
        arg: Handle<Node>,
        /// The axis (static).
        axis: usize,
        /// How many (`1 <= k <= n`).
        k: usize,
    },
    /// Elements picked along a static `axis` by an integer index, within
    /// each row (numpy's `take_along_axis`, torch's `gather`): the index's
    /// dims are the operand's dims before `axis`, then any static dims
    /// `e...`; `out[p..., e..., r...] = arg[p..., index[p..., e...], r...]`
    /// (`r` the operand's dims after `axis`), 0 where the index is outside
    /// `0..n`. The index may leave out the operand's row dims (`B`,
    /// ragged, `N`): one static index for every row (see
    /// [`TensorType::take_index_skip`]). A beam search takes its surviving
    /// partial codes with it.
    Take {
        /// The operand.
        arg: Handle<Node>,
        /// i32 or i64, dims `arg.dims[..axis]` then static dims.
        index: Handle<Node>,
        /// The (static) axis of `arg` picked along.
        axis: usize,
    },
    /// The static inner dims of the operand read as other static dims of
    /// the same total (row-major, so the elements keep their order); the
    /// row dims (`B`, ragged, `N`) stay. `[%s, 4, 16]` as `[%s, 64]`
    /// flattens a beam's candidates into one line.
    Reshape {
        /// The operand.
        arg: Handle<Node>,
        /// The new static inner dims.
        inner: Vec<usize>,
    },
    /// The operand moved along `axis` (a ragged, `N` or static axis) by
    /// `by` rows: `y[i] = x[i + by]` where `0 <= i + by < n` (the line's
    /// length: `n_b` for a ragged axis), 0 elsewhere. Neighbours within a
    /// sequence (`t[i] - t[i - 1]`) are `x - shift(x, -1)`; a shift never
    /// crosses into another sequence.
    Shift {
        /// The operand.
        arg: Handle<Node>,
        /// The axis.
        axis: usize,
        /// How many rows forward (`by > 0` reads later rows).
        by: i64,
    },
    /// Prefix sum along a dense axis (`B` or static) of a dense tensor.
    Scan {
        /// Alignment of the output.
        mode: ScanMode,
        /// The operand.
        arg: Handle<Node>,
        /// The axis.
        axis: usize,
    },
    /// Per-sequence contraction, einsum style: each operand's dims are named by
    /// one letter each (a leading `B` dim of a dense operand is implicit and
    /// unnamed); letters absent from `out_axes` are summed over. Ragged letters
    /// range over `i < n_b`. `q[ihd] . k[jhd] -> ijh` gives the attention scores
    /// `f32[%s, %s, H]`; `p[ijh] . v[jhe] -> ihe` contracts over the key axis.
    /// Output ragged letters come first; without any, the result is `[B, ...]`.
    Contract {
        /// Left operand.
        lhs: Handle<Node>,
        /// One letter per (non-batch) dim of `lhs`.
        lhs_axes: String,
        /// Right operand.
        rhs: Handle<Node>,
        /// One letter per (non-batch) dim of `rhs`.
        rhs_axes: String,
        /// The letters of the result's dims.
        out_axes: String,
        /// The result (accumulator) dtype.
        dtype: DType,
        /// Whether the operands are rounded to tf32 first (text form: a
        /// trailing `, tf32`).
        precision: Precision,
    },
    /// Gathers a jagged `[%s, ...]` into a padded dense `[B, N, ...]`:
    /// `dense[b, i] = x[b, i]` for `i < min(n_b, N)`, 0 elsewhere.
    ToPadded {
        /// The jagged operand (one ragged dim).
        arg: Handle<Node>,
    },
    /// Scatters a padded dense `[B, N, ...]` into a jagged `[%s, ...]`:
    /// `x[b, i] = dense[b, i]` for `i < min(n_b, N)`, 0 elsewhere.
    FromPadded {
        /// The dense operand.
        arg: Handle<Node>,
        /// The sequence set of the result.
        seqs: Handle<Node>,
    },
    /// Keeps the rows of a jagged `[%s, ...]` whose mask is set, in order; the
    /// result lives on `seqs`, which must be the [`Node::SeqsWhere`] of a mask
    /// over `%s`.
    Compact {
        /// The jagged operand.
        arg: Handle<Node>,
        /// The compacted sequence set.
        seqs: Handle<Node>,
    },
    /// Packs the strict upper triangle of a pair value `[%s, %s, ...]` into a
    /// jagged `[%t, ...]`: row `r` of sequence `b` is the pair `(i, j)`,
    /// `i < j < n_b`, with `r = i n_b - i (i + 1) / 2 + (j - i - 1)`
    /// (row-major over `(i, j)`). `seqs` (`%t`) must be the
    /// [`Node::SeqsTriu`] of `%s`.
    PackTriu {
        /// The pair operand.
        arg: Handle<Node>,
        /// The packed sequence set.
        seqs: Handle<Node>,
    },
}

impl Node {
    /// The operands of this node, in text order.
    pub fn operands(&self) -> Vec<Handle<Node>> {
        match self {
            Node::Input { .. } | Node::Attr { .. } | Node::Const { .. } | Node::Position { .. } => {
                Vec::new()
            }
            Node::Lengths { seqs, .. } => vec![*seqs],
            Node::Compare { lhs, rhs, .. } => vec![*lhs, *rhs],
            Node::Gather { table, index } => vec![*table, *index],
            Node::Take { arg, index, .. } => vec![*arg, *index],
            Node::Mask { pred, .. } => match pred {
                IndexPredicate::RowInSequence(s) => vec![*s],
                _ => Vec::new(),
            },
            Node::Seqs { offsets, .. } => vec![*offsets],
            Node::SeqsWhere { mask } => vec![*mask],
            Node::SeqsTriu { seqs } => vec![*seqs],
            Node::Offsets { seqs, .. } => vec![*seqs],
            Node::Unary { arg, .. }
            | Node::Cast { arg, .. }
            | Node::Reduce { arg, .. }
            | Node::Softmax { arg, .. }
            | Node::Rank { arg, .. }
            | Node::TopK { arg, .. }
            | Node::Shift { arg, .. }
            | Node::Reshape { arg, .. }
            | Node::Scan { arg, .. }
            | Node::ToPadded { arg } => vec![*arg],
            Node::Binary { lhs, rhs, .. } | Node::Contract { lhs, rhs, .. } => vec![*lhs, *rhs],
            Node::Select {
                cond,
                on_true,
                on_false,
            } => vec![*cond, *on_true, *on_false],
            Node::FromPadded { arg, seqs }
            | Node::Compact { arg, seqs }
            | Node::PackTriu { arg, seqs } => vec![*arg, *seqs],
        }
    }
}

/// The kind of value a graph attribute holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrKind {
    /// A non-negative integer (`max_len`).
    Index,
    /// A real number (`scale`, `padding_value`).
    Float,
}

/// The value of a graph attribute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttrValue {
    /// For [`AttrKind::Index`].
    Index(usize),
    /// For [`AttrKind::Float`].
    Float(f64),
}

impl AttrValue {
    /// The kind of this value.
    pub fn kind(self) -> AttrKind {
        match self {
            AttrValue::Index(_) => AttrKind::Index,
            AttrValue::Float(_) => AttrKind::Float,
        }
    }

    /// The value as a real number.
    pub fn as_f64(self) -> f64 {
        match self {
            AttrValue::Index(n) => n as f64,
            AttrValue::Float(x) => x,
        }
    }
}

/// A named scalar attribute of a graph, set when the graph is run or specialized.
/// `max_len` (kind index) is special: it is the `N` of the types.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrDecl {
    /// Its name, unique in the graph.
    pub name: String,
    /// What it holds.
    pub kind: AttrKind,
    /// The value used when the caller gives none.
    pub default: Option<AttrValue>,
}

/// A named output of a graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Its name, unique among outputs.
    pub name: String,
    /// The node whose value it is.
    pub value: Handle<Node>,
}

/// Where a node came from: the line of a graph file, or the expression of a
/// `#[jagged_kernel]` body. Errors about a node quote it, so that they point
/// at the user's code rather than at internal node numbers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Line `n` (1-based) of a graph in the text form.
    Line(usize),
    /// An expression of a kernel body, as written, and where it is.
    Expr {
        /// The expression's text (`q.dot(k) * alpha`).
        text: String,
        /// The source file.
        file: String,
        /// Its line (1-based).
        line: u32,
        /// Its column (1-based).
        column: u32,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Expr {
                text,
                file,
                line,
                column,
            } => write!(f, "`{text}` at {file}:{line}:{column}"),
        }
    }
}

/// The origins of a graph's nodes, by handle index. Provenance, not
/// identity: two graphs that differ only in where their nodes came from are
/// equal (so a graph printed and parsed back equals the one built in code).
#[derive(Clone, Debug, Default)]
pub struct Origins(pub(crate) Vec<Option<Origin>>);

impl PartialEq for Origins {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Origins {
    /// The origin of node `h`, if it was recorded.
    pub fn get(&self, h: Handle<Node>) -> Option<&Origin> {
        self.0.get(h.index()).and_then(Option::as_ref)
    }

    /// Records the origin of node `h`.
    pub fn set(&mut self, h: Handle<Node>, origin: Origin) {
        if self.0.len() <= h.index() {
            self.0.resize(h.index() + 1, None);
        }
        self.0[h.index()] = Some(origin);
    }
}

/// The name of the attribute that binds the dim `N`.
pub const MAX_LEN: &str = "max_len";

/// A validated graph. Build one with [`crate::builder::GraphBuilder`] or parse its
/// text with [`Graph::parse`].
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub(crate) name: String,
    pub(crate) attrs: Vec<AttrDecl>,
    pub(crate) nodes: Arena<Node>,
    pub(crate) outputs: Vec<Output>,
    pub(crate) types: Vec<Type>,
    pub(crate) origins: Origins,
}

impl Graph {
    /// The graph's name (the op it implements).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The attribute declarations, in declaration order.
    pub fn attrs(&self) -> &[AttrDecl] {
        &self.attrs
    }

    /// The attribute declaration named `name`.
    pub fn attr(&self, name: &str) -> Option<&AttrDecl> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// The nodes in definition order.
    pub fn nodes(&self) -> &Arena<Node> {
        &self.nodes
    }

    /// The node of `handle`.
    pub fn node(&self, handle: Handle<Node>) -> &Node {
        &self.nodes[handle]
    }

    /// Where node `handle` came from (a graph file's line, a kernel body's
    /// expression), if recorded.
    pub fn origin(&self, handle: Handle<Node>) -> Option<&Origin> {
        self.origins.get(handle)
    }

    /// Node `handle` in text form (`%3 = add %1, %2`), followed by its
    /// origin when one is recorded: how errors quote a node.
    pub fn describe(&self, handle: Handle<Node>) -> String {
        let text = crate::text::node_text(handle, self.node(handle));
        match self.origin(handle) {
            Some(origin) => format!("{text} ({origin})"),
            None => text,
        }
    }

    /// The type of the value `handle` defines.
    pub fn type_of(&self, handle: Handle<Node>) -> &Type {
        &self.types[handle.index()]
    }

    /// The outputs, in declaration order.
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// The inputs (name and type), in definition order.
    pub fn inputs(&self) -> impl Iterator<Item = (Handle<Node>, &str, &TensorType)> {
        self.nodes.iter().filter_map(|(h, n)| match n {
            Node::Input { name, ty } => Some((h, name.as_str(), ty)),
            _ => None,
        })
    }

    /// The nodes that use `handle` as an operand (for pattern matching in codegen).
    pub fn users(&self, handle: Handle<Node>) -> Vec<Handle<Node>> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.operands().contains(&handle))
            .map(|(h, _)| h)
            .collect()
    }

    /// This graph with `outputs` in place of its own: the same nodes (those
    /// the new outputs do not read stay, unused) and inputs in the same
    /// order. Code generation uses it to hand a part of a graph to a fast
    /// path that matches whole graphs. Each output must name a tensor value
    /// of this graph (the caller's duty; validation is not rerun).
    pub fn with_outputs(&self, outputs: Vec<Output>) -> Graph {
        Graph {
            outputs,
            ..self.clone()
        }
    }

    /// A stable 64-bit hash of the canonical text (FNV-1a): the graph part of
    /// kernel cache keys. Equal graphs have equal hashes on every platform.
    pub fn canonical_hash(&self) -> u64 {
        fnv1a64(self.to_string().as_bytes())
    }
}

/// FNV-1a, 64-bit: simple, stable, and good enough to key a cache by text.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Ragged(s) => write!(f, "{s}"),
            Dim::Batch => f.write_str("B"),
            Dim::BatchPlusOne => f.write_str("B+1"),
            Dim::MaxLen => f.write_str("N"),
            Dim::Static(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (k, d) in self.dims.iter().enumerate() {
            if k > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Seqs => f.write_str("seqs"),
            Type::Tensor(t) => write!(f, "{t}"),
        }
    }
}
