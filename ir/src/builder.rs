//! [`GraphBuilder`]: typed methods that append nodes and return their handles.
//!
//! Methods only record nodes; [`GraphBuilder::finish`] runs the validator, which
//! infers every type and reports the first ill-typed node. This keeps the
//! builder trivially callable from generated code (the `#[jagged_kernel]` macro
//! emits one call per expression).

use crate::arena::{Arena, Handle};
use crate::dtype::DType;
use crate::graph::{
    AttrDecl, AttrKind, AttrValue, BinaryOp, CompareOp, Graph, IndexPredicate, Node, Origin,
    Origins, Output, Precision, RankOrder, ReduceOp, ScanMode, TensorType, TopKPart, UnaryOp,
};
use crate::validate::{ValidationError, validate};

/// Builds a [`Graph`] node by node.
#[derive(Clone, Debug, Default)]
pub struct GraphBuilder {
    name: String,
    attrs: Vec<AttrDecl>,
    nodes: Arena<Node>,
    outputs: Vec<Output>,
    origins: Origins,
}

impl GraphBuilder {
    /// An empty graph named `name` (the op it implements).
    pub fn new(name: impl Into<String>) -> Self {
        GraphBuilder {
            name: name.into(),
            ..Self::default()
        }
    }

    /// A builder holding `graph`'s attributes, nodes (same handles),
    /// outputs and origins, to extend it: more inputs, nodes and outputs
    /// on top of an op's graph (the feature columns `event_prune` compacts
    /// along with its selection).
    pub fn extending(graph: &Graph) -> Self {
        GraphBuilder {
            name: graph.name.clone(),
            attrs: graph.attrs.clone(),
            nodes: graph.nodes.clone(),
            outputs: graph.outputs.clone(),
            origins: graph.origins.clone(),
        }
    }

    /// Declares a graph attribute (`max_len`, `scale`, ...).
    pub fn declare_attr(
        &mut self,
        name: impl Into<String>,
        kind: AttrKind,
        default: Option<AttrValue>,
    ) {
        self.attrs.push(AttrDecl {
            name: name.into(),
            kind,
            default,
        });
    }

    /// Records where node `h` came from (quoted by errors about it).
    pub fn set_origin(&mut self, h: Handle<Node>, origin: Origin) {
        self.origins.set(h, origin);
    }

    /// Appends any node (the typed methods below are shorthands).
    pub fn push(&mut self, node: Node) -> Handle<Node> {
        self.nodes.append(node)
    }

    /// A graph input.
    pub fn input(&mut self, name: impl Into<String>, ty: TensorType) -> Handle<Node> {
        self.push(Node::Input {
            name: name.into(),
            ty,
        })
    }

    /// The value of a declared attribute as a scalar of `dtype`.
    pub fn attr(&mut self, name: impl Into<String>, dtype: DType) -> Handle<Node> {
        self.push(Node::Attr {
            name: name.into(),
            dtype,
        })
    }

    /// A scalar constant.
    pub fn constant(&mut self, value: f64, dtype: DType) -> Handle<Node> {
        self.push(Node::Const { value, dtype })
    }

    /// A sequence set from offsets `[B+1]`, truncated to `max_len` if `truncate`.
    pub fn seqs(&mut self, offsets: Handle<Node>, truncate: bool) -> Handle<Node> {
        self.push(Node::Seqs { offsets, truncate })
    }

    /// The sequence set of the set rows of a `bool[%s]` mask.
    pub fn seqs_where(&mut self, mask: Handle<Node>) -> Handle<Node> {
        self.push(Node::SeqsWhere { mask })
    }

    /// The set of the strict upper triangle of the pairs of `seqs`
    /// ([`Node::SeqsTriu`]): `n_b (n_b - 1) / 2` rows per sequence.
    pub fn seqs_triu(&mut self, seqs: Handle<Node>) -> Handle<Node> {
        self.push(Node::SeqsTriu { seqs })
    }

    /// The strict upper triangle of the pair value `x` (`[%s, %s, ...]`),
    /// packed row-major on `seqs`, the [`Self::seqs_triu`] of `%s`
    /// ([`Node::PackTriu`]).
    pub fn pack_triu(&mut self, x: Handle<Node>, seqs: Handle<Node>) -> Handle<Node> {
        self.push(Node::PackTriu { arg: x, seqs })
    }

    /// The offsets of a sequence set as `dtype[B+1]`.
    pub fn offsets(&mut self, seqs: Handle<Node>, dtype: DType) -> Handle<Node> {
        self.push(Node::Offsets { seqs, dtype })
    }

    /// An elementwise function of one operand.
    pub fn unary(&mut self, op: UnaryOp, arg: Handle<Node>) -> Handle<Node> {
        self.push(Node::Unary { op, arg })
    }

    /// `-x`.
    pub fn neg(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Neg, x)
    }

    /// `e^x`.
    pub fn exp(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Exp, x)
    }

    /// `ln x`.
    pub fn log(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Log, x)
    }

    /// `x / (1 + e^-x)`.
    pub fn silu(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Silu, x)
    }

    /// `sqrt(x)`.
    pub fn sqrt(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Sqrt, x)
    }

    /// `1 / sqrt(x)`.
    pub fn rsqrt(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Rsqrt, x)
    }

    /// `|x|`.
    pub fn abs(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Abs, x)
    }

    /// `max(x, 0)` (NaN stays NaN).
    pub fn relu(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Relu, x)
    }

    /// `1 / (1 + e^-x)`.
    pub fn sigmoid(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Sigmoid, x)
    }

    /// `tanh x`.
    pub fn tanh(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.unary(UnaryOp::Tanh, x)
    }

    /// Elementwise conversion to `dtype`.
    pub fn cast(&mut self, x: Handle<Node>, dtype: DType) -> Handle<Node> {
        self.push(Node::Cast { arg: x, dtype })
    }

    /// An elementwise function of two operands.
    pub fn binary(&mut self, op: BinaryOp, lhs: Handle<Node>, rhs: Handle<Node>) -> Handle<Node> {
        self.push(Node::Binary { op, lhs, rhs })
    }

    /// `a + b`.
    pub fn add(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Add, a, b)
    }

    /// `a - b`.
    pub fn sub(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Sub, a, b)
    }

    /// `a * b`.
    pub fn mul(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// `a / b`.
    pub fn div(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// `max(a, b)`.
    pub fn max(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Max, a, b)
    }

    /// `min(a, b)`.
    pub fn min(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Min, a, b)
    }

    /// `x^p` (IEEE `pow`); `p` must be a scalar (see [`BinaryOp::Pow`]).
    pub fn pow(&mut self, x: Handle<Node>, p: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Pow, x, p)
    }

    /// `cond ? on_true : on_false`.
    pub fn select(
        &mut self,
        cond: Handle<Node>,
        on_true: Handle<Node>,
        on_false: Handle<Node>,
    ) -> Handle<Node> {
        self.push(Node::Select {
            cond,
            on_true,
            on_false,
        })
    }

    /// `lhs op rhs` as a bool tensor.
    pub fn compare(&mut self, op: CompareOp, lhs: Handle<Node>, rhs: Handle<Node>) -> Handle<Node> {
        self.push(Node::Compare { op, lhs, rhs })
    }

    /// The index along `axis` of each element of a tensor of type `ty`.
    pub fn position(&mut self, axis: usize, ty: TensorType) -> Handle<Node> {
        self.push(Node::Position { axis, ty })
    }

    /// Rows of `table` picked by `index` (0 outside the table).
    pub fn gather(&mut self, table: Handle<Node>, index: Handle<Node>) -> Handle<Node> {
        self.push(Node::Gather { table, index })
    }

    /// The lengths `n_b` of a sequence set as `[B]` integers of `dtype`.
    pub fn lengths(&mut self, seqs: Handle<Node>, dtype: DType) -> Handle<Node> {
        self.push(Node::Lengths { seqs, dtype })
    }

    /// A bool tensor of type `ty` holding the index predicate `pred`.
    pub fn mask(&mut self, pred: IndexPredicate, ty: TensorType) -> Handle<Node> {
        self.push(Node::Mask { pred, ty })
    }

    /// Reduces `axis` of `x` away.
    pub fn reduce(&mut self, op: ReduceOp, x: Handle<Node>, axis: usize) -> Handle<Node> {
        self.push(Node::Reduce { op, arg: x, axis })
    }

    /// Softmax of `x` along `axis`.
    pub fn softmax(&mut self, x: Handle<Node>, axis: usize) -> Handle<Node> {
        self.push(Node::Softmax { arg: x, axis })
    }

    /// Each element's place in the stable sort of its line along `axis`.
    pub fn rank(&mut self, order: RankOrder, x: Handle<Node>, axis: usize) -> Handle<Node> {
        self.push(Node::Rank {
            order,
            arg: x,
            axis,
        })
    }

    /// The indices or values of the `k` best elements of each line along
    /// the static `axis` of `x`, best first.
    pub fn top_k(
        &mut self,
        order: RankOrder,
        part: TopKPart,
        x: Handle<Node>,
        axis: usize,
        k: usize,
    ) -> Handle<Node> {
        self.push(Node::TopK {
            order,
            part,
            arg: x,
            axis,
            k,
        })
    }

    /// Elements of `x` picked along its static `axis` by `index` within
    /// each row (`take_along_axis`).
    pub fn take(&mut self, x: Handle<Node>, index: Handle<Node>, axis: usize) -> Handle<Node> {
        self.push(Node::Take {
            arg: x,
            index,
            axis,
        })
    }

    /// `x` with its static inner dims read as `inner` (row-major).
    pub fn reshape(&mut self, x: Handle<Node>, inner: Vec<usize>) -> Handle<Node> {
        self.push(Node::Reshape { arg: x, inner })
    }

    /// `x` moved `by` rows along `axis` (0 past the line's ends).
    pub fn shift(&mut self, x: Handle<Node>, axis: usize, by: i64) -> Handle<Node> {
        self.push(Node::Shift { arg: x, axis, by })
    }

    /// Prefix sum of `x` along `axis`.
    pub fn scan(&mut self, mode: ScanMode, x: Handle<Node>, axis: usize) -> Handle<Node> {
        self.push(Node::Scan { mode, arg: x, axis })
    }

    /// Per-sequence contraction: `lhs[lhs_axes] . rhs[rhs_axes] -> out_axes`, in
    /// `dtype` (e.g. `("ihd", "jhd", "ijh")` for attention scores).
    pub fn contract(
        &mut self,
        lhs: Handle<Node>,
        lhs_axes: &str,
        rhs: Handle<Node>,
        rhs_axes: &str,
        out_axes: &str,
        dtype: DType,
    ) -> Handle<Node> {
        let axes = [lhs_axes, rhs_axes, out_axes];
        self.contract_at(lhs, rhs, axes, dtype, Precision::Full)
    }

    /// [`Self::contract`] of f32 operands rounded to tf32 first
    /// ([`Precision::Tf32`]: tf32 tensor cores may compute it).
    pub fn contract_tf32(
        &mut self,
        lhs: Handle<Node>,
        lhs_axes: &str,
        rhs: Handle<Node>,
        rhs_axes: &str,
        out_axes: &str,
        dtype: DType,
    ) -> Handle<Node> {
        let axes = [lhs_axes, rhs_axes, out_axes];
        self.contract_at(lhs, rhs, axes, dtype, Precision::Tf32)
    }

    fn contract_at(
        &mut self,
        lhs: Handle<Node>,
        rhs: Handle<Node>,
        [lhs_axes, rhs_axes, out_axes]: [&str; 3],
        dtype: DType,
        precision: Precision,
    ) -> Handle<Node> {
        self.push(Node::Contract {
            lhs,
            lhs_axes: lhs_axes.to_string(),
            rhs,
            rhs_axes: rhs_axes.to_string(),
            out_axes: out_axes.to_string(),
            dtype,
            precision,
        })
    }

    /// Jagged `[%s, ...]` to padded dense `[B, N, ...]` (zeros past `n_b`).
    pub fn to_padded(&mut self, x: Handle<Node>) -> Handle<Node> {
        self.push(Node::ToPadded { arg: x })
    }

    /// Padded dense `[B, N, ...]` to jagged `[%seqs, ...]`.
    pub fn from_padded(&mut self, dense: Handle<Node>, seqs: Handle<Node>) -> Handle<Node> {
        self.push(Node::FromPadded { arg: dense, seqs })
    }

    /// The rows of `x` kept by the mask behind `seqs` (a `seqs_where`).
    pub fn compact(&mut self, x: Handle<Node>, seqs: Handle<Node>) -> Handle<Node> {
        self.push(Node::Compact { arg: x, seqs })
    }

    /// Declares the output `name`.
    pub fn output(&mut self, name: impl Into<String>, value: Handle<Node>) {
        self.outputs.push(Output {
            name: name.into(),
            value,
        });
    }

    /// Validates the graph and returns it.
    pub fn finish(self) -> Result<Graph, ValidationError> {
        validate(
            self.name,
            self.attrs,
            self.nodes,
            self.outputs,
            self.origins,
        )
    }
}
