//! The validator: infers the type of every node and rejects ill-typed graphs.
//!
//! It runs in [`GraphBuilder::finish`](crate::builder::GraphBuilder::finish) and
//! after parsing; a [`Graph`] value is always valid. Errors name the offending
//! node in text form (`%3 = add %1, %2`) and the reason.

use std::collections::HashSet;

use crate::arena::{Arena, Handle};
use crate::dtype::DType;
use crate::graph::{
    AttrDecl, AttrKind, Dim, Graph, IndexPredicate, MAX_LEN, Node, Origins, Output, Precision,
    ScanMode, TensorType, TopKPart, Type,
};
use crate::typing::{self, DtypeRule};

/// Why a graph is invalid, with the node (or graph-level item) it concerns.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{context}: {kind}")]
pub struct ValidationError {
    /// The offending node, if the error concerns one.
    pub node: Option<Handle<Node>>,
    /// The node in text form (`%3 = add %1, %2`), or the graph-level item.
    pub context: String,
    /// What is wrong.
    pub kind: ValidationErrorKind,
}

/// The reasons a graph can be invalid.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValidationErrorKind {
    /// An operand is not an earlier node.
    #[error("operand {operand} is not defined before this node")]
    ForwardReference {
        /// The operand.
        operand: Handle<Node>,
    },
    /// An operand is a sequence set where a tensor is needed.
    #[error("operand {operand} is a sequence set, not a tensor")]
    NotATensor {
        /// The operand.
        operand: Handle<Node>,
    },
    /// An operand is a tensor where a sequence set is needed.
    #[error("operand {operand} is not a sequence set")]
    NotASequenceSet {
        /// The operand.
        operand: Handle<Node>,
    },
    /// Two dtypes that must agree do not.
    #[error("dtype mismatch: {expected} vs {found}")]
    DtypeMismatch {
        /// The dtype required (of the first operand, or by the op).
        expected: DType,
        /// The dtype found.
        found: DType,
    },
    /// A dtype the op does not accept.
    #[error("dtype {found} not allowed here: {reason}")]
    BadDtype {
        /// The dtype found.
        found: DType,
        /// What is required.
        reason: &'static str,
    },
    /// Shapes that must agree (or broadcast) do not.
    #[error("dim mismatch: {lhs} vs {rhs}")]
    DimMismatch {
        /// One type, in text form.
        lhs: String,
        /// The other.
        rhs: String,
    },
    /// Two jagged operands over different sequence sets.
    #[error("jagged operands over different sequence sets {lhs} and {rhs}")]
    DifferentSequenceSets {
        /// One sequence set.
        lhs: Handle<Node>,
        /// The other.
        rhs: Handle<Node>,
    },
    /// A padded (`N`) row axis meets a ragged one whose set is not truncated to `max_len`.
    #[error("padded rows meet sequence set {seqs}, which is not truncated to max_len")]
    UntruncatedSequenceSet {
        /// The sequence set.
        seqs: Handle<Node>,
    },
    /// A tensor type that is not well formed.
    #[error("bad type {ty}: {reason}")]
    BadType {
        /// The type, in text form.
        ty: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An axis number past the operand's rank.
    #[error("axis {axis} out of range for rank {rank}")]
    AxisOutOfRange {
        /// The axis.
        axis: usize,
        /// The operand's rank.
        rank: usize,
    },
    /// An axis the op cannot work along.
    #[error("cannot {op} along axis {axis} ({dim})")]
    BadAxis {
        /// The op.
        op: &'static str,
        /// The axis.
        axis: usize,
        /// The dim there, in text form.
        dim: String,
    },
    /// A contraction's output names an axis no operand has.
    #[error("contraction over unknown axis '{letter}'")]
    UnknownContractionAxis {
        /// The letter.
        letter: char,
    },
    /// A contraction's axis letters are malformed.
    #[error("bad contraction axes: {reason}")]
    BadContraction {
        /// What is wrong.
        reason: String,
    },
    /// A contraction letter names dims of different extents.
    #[error("contraction axis '{letter}' is {lhs} in one place and {rhs} in another")]
    ContractionExtent {
        /// The letter.
        letter: char,
        /// One extent.
        lhs: String,
        /// The other.
        rhs: String,
    },
    /// An attribute that is not declared, or declared wrongly.
    #[error("attribute '{name}': {reason}")]
    BadAttribute {
        /// The attribute.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two inputs, outputs or attributes with one name.
    #[error("duplicate name '{name}'")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A graph output that cannot be returned to the host.
    #[error("output '{name}': {reason}")]
    BadOutput {
        /// The output.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `N` is used but nothing binds it (no `max_len` attribute, no input with `N`).
    #[error("dim N (max_len) is used but neither an attribute nor an input binds it")]
    UnboundMaxLen,
    /// The exponent of `pow` is not a scalar.
    #[error(
        "the exponent of pow must be a scalar (a const, an attr or scalar arithmetic), found {found}"
    )]
    NonScalarExponent {
        /// The exponent's type, in text form.
        found: String,
    },
    /// A compaction whose sequence set is not the `seqs_where` of a mask over the operand's set.
    #[error("compact needs the seqs_where of a mask over the operand's sequence set")]
    BadCompaction,
    /// A triangle packing whose operand is not a pair value `[%s, %s, ...]`
    /// or whose sequence set is not the `seqs_triu` of `%s`.
    #[error("pack_triu packs a pair value [%s, %s, ...] onto the seqs_triu of %s")]
    BadPacking,
}

/// Row axes of a tensor type: ragged over a sequence set, or padded (`N`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Row {
    Ragged(Handle<Node>),
    Padded,
}

/// How an elementwise operand is laid out: batch, row axes, inner static dims.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Structure {
    /// Whether values differ per sequence (a `B` dim or ragged rows).
    pub batched: bool,
    pub rows: Vec<Row>,
    pub inner: Vec<usize>,
}

impl Structure {
    /// The structure of `ty`, if it is one elementwise ops accept:
    /// `[%s{1,2}, static*]`, `[B, N{0,2}, static*]` or `[static*]`.
    pub(crate) fn of(ty: &TensorType) -> Option<Structure> {
        let mut dims = ty.dims.as_slice();
        let mut rows = Vec::new();
        let batched = match dims.first() {
            Some(Dim::Ragged(_)) => {
                while let Some((Dim::Ragged(s), rest)) = dims.split_first() {
                    rows.push(Row::Ragged(*s));
                    dims = rest;
                }
                true
            }
            Some(Dim::Batch) => {
                dims = &dims[1..];
                while let Some((Dim::MaxLen, rest)) = dims.split_first() {
                    rows.push(Row::Padded);
                    dims = rest;
                }
                true
            }
            _ => false,
        };
        let inner = dims
            .iter()
            .map(|d| match d {
                Dim::Static(n) => Some(*n),
                _ => None,
            })
            .collect::<Option<Vec<usize>>>()?;
        (rows.len() <= 2).then_some(Structure {
            batched,
            rows,
            inner,
        })
    }

    /// The tensor type of this structure.
    pub(crate) fn to_type(&self, dtype: DType) -> TensorType {
        let mut dims = Vec::new();
        let ragged = self.rows.iter().any(|r| matches!(r, Row::Ragged(_)));
        if !ragged && self.batched {
            dims.push(Dim::Batch);
        }
        dims.extend(self.rows.iter().map(|r| match r {
            Row::Ragged(s) => Dim::Ragged(*s),
            Row::Padded => Dim::MaxLen,
        }));
        dims.extend(self.inner.iter().map(|&n| Dim::Static(n)));
        TensorType { dtype, dims }
    }
}

/// Infers and checks the types of a graph's parts; returns the graph.
pub(crate) fn validate(
    name: String,
    attrs: Vec<AttrDecl>,
    nodes: Arena<Node>,
    outputs: Vec<Output>,
    origins: Origins,
) -> Result<Graph, ValidationError> {
    let mut v = Validator {
        attrs: &attrs,
        nodes: &nodes,
        types: Vec::with_capacity(nodes.len()),
    };
    v.check_attrs()?;
    let mut input_names = HashSet::new();
    for (h, node) in nodes.iter() {
        let at = |kind| ValidationError {
            node: Some(h),
            context: match origins.get(h) {
                Some(origin) => format!("{} ({origin})", crate::text::node_text(h, node)),
                None => crate::text::node_text(h, node),
            },
            kind,
        };
        if let Node::Input { name, .. } = node
            && !input_names.insert(name.as_str())
        {
            return Err(at(ValidationErrorKind::DuplicateName {
                name: name.clone(),
            }));
        }
        let ty = v.infer(h, node).map_err(at)?;
        v.types.push(ty);
    }
    v.check_max_len_bound()?;
    let mut output_names = HashSet::new();
    for out in &outputs {
        let at = |kind| ValidationError {
            node: Some(out.value),
            context: format!("output {} = {}", out.name, out.value),
            kind,
        };
        let bad = |reason| {
            at(ValidationErrorKind::BadOutput {
                name: out.name.clone(),
                reason,
            })
        };
        if !output_names.insert(out.name.as_str()) {
            return Err(at(ValidationErrorKind::DuplicateName {
                name: out.name.clone(),
            }));
        }
        match v.types.get(out.value.index()) {
            None => return Err(bad("no such node")),
            Some(Type::Seqs) => return Err(bad("a sequence set is not a tensor")),
            Some(Type::Tensor(t)) if t.ragged_rank() > 1 => {
                return Err(bad("two ragged dims cannot be returned"));
            }
            Some(Type::Tensor(_)) => {}
        }
    }
    let types = v.types;
    Ok(Graph {
        name,
        attrs,
        nodes,
        outputs,
        types,
        origins,
    })
}

struct Validator<'a> {
    attrs: &'a [AttrDecl],
    nodes: &'a Arena<Node>,
    types: Vec<Type>,
}

type Kind = ValidationErrorKind;

impl Validator<'_> {
    fn check_attrs(&self) -> Result<(), ValidationError> {
        let mut names = HashSet::new();
        for a in self.attrs {
            let at = |kind| ValidationError {
                node: None,
                context: format!("attr {}", a.name),
                kind,
            };
            if !names.insert(a.name.as_str()) {
                return Err(at(Kind::DuplicateName {
                    name: a.name.clone(),
                }));
            }
            let bad = |reason| {
                at(Kind::BadAttribute {
                    name: a.name.clone(),
                    reason,
                })
            };
            if a.name == MAX_LEN && a.kind != AttrKind::Index {
                return Err(bad("max_len must be an index"));
            }
            if a.default.is_some_and(|d| d.kind() != a.kind) {
                return Err(bad("default of the wrong kind"));
            }
        }
        Ok(())
    }

    /// `N` must be bound by the `max_len` attribute or by an input's shape.
    fn check_max_len_bound(&self) -> Result<(), ValidationError> {
        if self.attrs.iter().any(|a| a.name == MAX_LEN) {
            return Ok(());
        }
        let uses_n = |t: &Type| t.as_tensor().is_some_and(|t| t.dims.contains(&Dim::MaxLen));
        let bound = self
            .nodes
            .iter()
            .any(|(h, n)| matches!(n, Node::Input { .. }) && uses_n(&self.types[h.index()]));
        let used = self.nodes.iter().find(|(h, n)| {
            uses_n(&self.types[h.index()]) || matches!(n, Node::Seqs { truncate: true, .. })
        });
        match used {
            Some((h, node)) if !bound => Err(ValidationError {
                node: Some(h),
                context: crate::text::node_text(h, node),
                kind: Kind::UnboundMaxLen,
            }),
            _ => Ok(()),
        }
    }

    fn ty(&self, at: Handle<Node>, operand: Handle<Node>) -> Result<&Type, Kind> {
        if operand >= at {
            return Err(Kind::ForwardReference { operand });
        }
        Ok(&self.types[operand.index()])
    }

    fn tensor(&self, at: Handle<Node>, operand: Handle<Node>) -> Result<&TensorType, Kind> {
        self.ty(at, operand)?
            .as_tensor()
            .ok_or(Kind::NotATensor { operand })
    }

    fn seqs(&self, at: Handle<Node>, operand: Handle<Node>) -> Result<(), Kind> {
        match self.ty(at, operand)? {
            Type::Seqs => Ok(()),
            Type::Tensor(_) => Err(Kind::NotASequenceSet { operand }),
        }
    }

    /// Whether the sequence set `s` has its lengths truncated to `max_len`.
    fn truncated(&self, s: Handle<Node>) -> bool {
        matches!(self.nodes[s], Node::Seqs { truncate: true, .. })
    }

    /// Checks that a declared type is well formed: ragged dims lead, at most two,
    /// over one earlier sequence set.
    fn check_type(&self, at: Handle<Node>, ty: &TensorType) -> Result<(), Kind> {
        let bad = |reason| Kind::BadType {
            ty: ty.to_string(),
            reason,
        };
        let rank = ty.ragged_rank();
        if rank > 2 {
            return Err(bad("more than two ragged dims"));
        }
        if ty.dims[rank..].iter().any(|d| matches!(d, Dim::Ragged(_))) {
            return Err(bad("ragged dims must come first"));
        }
        if let Some(s) = ty.seqs() {
            self.seqs(at, s)?;
            if ty.dims[..rank].iter().any(|d| *d != Dim::Ragged(s)) {
                return Err(bad("ragged dims over different sequence sets"));
            }
            if ty
                .dims
                .iter()
                .any(|d| matches!(d, Dim::Batch | Dim::BatchPlusOne | Dim::MaxLen))
            {
                return Err(bad("a jagged type has only static inner dims"));
            }
        }
        Ok(())
    }

    fn structure(&self, ty: &TensorType) -> Result<Structure, Kind> {
        Structure::of(ty).ok_or_else(|| Kind::BadType {
            ty: ty.to_string(),
            reason: "elementwise operands are [%s, ...], [B, N.., ...] or [...] with static inner dims",
        })
    }

    /// The structure both `a` and `b` broadcast to.
    fn broadcast(&self, a: &TensorType, b: &TensorType) -> Result<Structure, Kind> {
        let (sa, sb) = (self.structure(a)?, self.structure(b)?);
        let mismatch = || Kind::DimMismatch {
            lhs: a.to_string(),
            rhs: b.to_string(),
        };
        let (long, short) = if sa.rows.len() >= sb.rows.len() {
            (&sa.rows, &sb.rows)
        } else {
            (&sb.rows, &sa.rows)
        };
        let mut rows = long.clone();
        for (k, (x, y)) in long.iter().zip(short).enumerate() {
            rows[k] = match (*x, *y) {
                (Row::Ragged(s), Row::Ragged(t)) if s != t => {
                    return Err(Kind::DifferentSequenceSets { lhs: s, rhs: t });
                }
                (Row::Ragged(s), Row::Padded) | (Row::Padded, Row::Ragged(s)) => {
                    if !self.truncated(s) {
                        return Err(Kind::UntruncatedSequenceSet { seqs: s });
                    }
                    Row::Ragged(s)
                }
                (x, _) => x,
            };
        }
        let ragged = rows.iter().filter(|r| matches!(r, Row::Ragged(_))).count();
        if ragged != 0 && ragged != rows.len() {
            return Err(mismatch());
        }
        let inner = match (sa.inner.is_empty(), sb.inner.is_empty()) {
            (_, true) => sa.inner.clone(),
            (true, false) => sb.inner.clone(),
            (false, false) if sa.inner == sb.inner => sa.inner.clone(),
            (false, false) => return Err(mismatch()),
        };
        Ok(Structure {
            batched: sa.batched || sb.batched,
            rows,
            inner,
        })
    }

    fn same_dtype(expected: DType, found: DType) -> Result<(), Kind> {
        if expected == found {
            Ok(())
        } else {
            Err(Kind::DtypeMismatch { expected, found })
        }
    }

    /// `BadDtype` with `reason` unless `ok`.
    fn require(ok: bool, dtype: DType, reason: &'static str) -> Result<(), Kind> {
        if ok {
            Ok(())
        } else {
            Err(Kind::BadDtype {
                found: dtype,
                reason,
            })
        }
    }

    /// `BadDtype` unless `rule` (of [`typing`]) admits `dtype`.
    fn rule(rule: DtypeRule, dtype: DType) -> Result<(), Kind> {
        Self::require(rule.admits(dtype), dtype, rule.requirement())
    }

    fn float(dtype: DType) -> Result<(), Kind> {
        Self::rule(DtypeRule::Float, dtype)
    }

    fn index(dtype: DType) -> Result<(), Kind> {
        Self::rule(DtypeRule::Index, dtype)
    }

    fn numeric(dtype: DType) -> Result<(), Kind> {
        Self::rule(DtypeRule::Numeric, dtype)
    }

    /// Checks that `axis` of `a` is one a line op (rank, shift) runs
    /// along: a ragged, `N` or static axis, not `B`.
    fn line_axis(op: &'static str, a: &TensorType, axis: usize) -> Result<(), Kind> {
        let dim = Self::axis_dim(a, axis)?;
        if matches!(dim, Dim::Batch | Dim::BatchPlusOne) {
            return Err(Kind::BadAxis {
                op,
                axis,
                dim: dim.to_string(),
            });
        }
        Ok(())
    }

    fn axis_dim(ty: &TensorType, axis: usize) -> Result<Dim, Kind> {
        ty.dims.get(axis).copied().ok_or(Kind::AxisOutOfRange {
            axis,
            rank: ty.dims.len(),
        })
    }

    fn infer(&self, h: Handle<Node>, node: &Node) -> Result<Type, Kind> {
        let t = |ty: TensorType| Ok(Type::Tensor(ty));
        match node {
            Node::Input { ty, .. } => {
                self.check_type(h, ty)?;
                if ty.ragged_rank() > 1 {
                    return Err(Kind::BadType {
                        ty: ty.to_string(),
                        reason: "inputs have at most one ragged dim",
                    });
                }
                t(ty.clone())
            }
            Node::Attr { name, dtype } => {
                let decl = self.attrs.iter().find(|a| &a.name == name).ok_or_else(|| {
                    Kind::BadAttribute {
                        name: name.clone(),
                        reason: "not declared",
                    }
                })?;
                if decl.kind == AttrKind::Float {
                    Self::float(*dtype)?;
                } else {
                    Self::numeric(*dtype)?;
                }
                t(TensorType::scalar(*dtype))
            }
            Node::Const { dtype, .. } => t(TensorType::scalar(*dtype)),
            Node::Seqs { offsets, .. } => {
                let o = self.tensor(h, *offsets)?;
                Self::index(o.dtype)?;
                if o.dims != [Dim::BatchPlusOne] {
                    return Err(Kind::DimMismatch {
                        lhs: o.to_string(),
                        rhs: format!("{}[B+1]", o.dtype),
                    });
                }
                Ok(Type::Seqs)
            }
            Node::SeqsWhere { mask } => {
                let m = self.tensor(h, *mask)?;
                Self::same_dtype(DType::Bool, m.dtype)?;
                if m.dims.len() != 1 || m.seqs().is_none() {
                    return Err(Kind::BadType {
                        ty: m.to_string(),
                        reason: "a compaction mask is bool[%s]",
                    });
                }
                Ok(Type::Seqs)
            }
            Node::SeqsTriu { seqs } => {
                self.seqs(h, *seqs)?;
                Ok(Type::Seqs)
            }
            Node::Offsets { seqs, dtype } => {
                self.seqs(h, *seqs)?;
                Self::index(*dtype)?;
                t(TensorType::new(*dtype, vec![Dim::BatchPlusOne]))
            }
            Node::Unary { op, arg } => {
                let a = self.tensor(h, *arg)?;
                Self::rule(typing::unary_rule(*op), a.dtype)?;
                t(a.clone())
            }
            Node::Cast { arg, dtype } => {
                let a = self.tensor(h, *arg)?;
                t(TensorType::new(*dtype, a.dims.clone()))
            }
            Node::Binary { op, lhs, rhs } => {
                let (a, b) = (self.tensor(h, *lhs)?, self.tensor(h, *rhs)?);
                Self::same_dtype(a.dtype, b.dtype)?;
                Self::rule(typing::binary_rule(*op), a.dtype)?;
                if *op == crate::graph::BinaryOp::Pow && !b.dims.is_empty() {
                    return Err(Kind::NonScalarExponent {
                        found: b.to_string(),
                    });
                }
                t(self.broadcast(a, b)?.to_type(a.dtype))
            }
            Node::Select {
                cond,
                on_true,
                on_false,
            } => {
                let c = self.tensor(h, *cond)?;
                let (a, b) = (self.tensor(h, *on_true)?, self.tensor(h, *on_false)?);
                Self::rule(typing::SELECT_CONDITION_RULE, c.dtype)?;
                Self::same_dtype(a.dtype, b.dtype)?;
                let ab = self.broadcast(a, b)?.to_type(a.dtype);
                t(self.broadcast(&ab, c)?.to_type(a.dtype))
            }
            Node::Mask { pred, ty } => {
                self.check_type(h, ty)?;
                Self::same_dtype(DType::Bool, ty.dtype)?;
                let ok = match pred {
                    IndexPredicate::KeyNotAfterQuery | IndexPredicate::KeyNotBeforeQuery => {
                        ty.dims.len() == 2 && ty.ragged_rank() == 2
                    }
                    IndexPredicate::RowInSequence(s) => {
                        self.seqs(h, *s)?;
                        ty.dims == [Dim::Batch, Dim::MaxLen]
                    }
                };
                if !ok {
                    return Err(Kind::BadType {
                        ty: ty.to_string(),
                        reason: "j <= i and j >= i are over bool[%s, %s], i < len(%s) over bool[B, N]",
                    });
                }
                t(ty.clone())
            }
            Node::Compare { op, lhs, rhs } => {
                let (a, b) = (self.tensor(h, *lhs)?, self.tensor(h, *rhs)?);
                Self::same_dtype(a.dtype, b.dtype)?;
                Self::rule(typing::compare_rule(*op), a.dtype)?;
                t(self.broadcast(a, b)?.to_type(DType::Bool))
            }
            Node::Position { axis, ty } => {
                self.check_type(h, ty)?;
                Self::rule(typing::POSITION_RULE, ty.dtype)?;
                self.structure(ty)?;
                Self::axis_dim(ty, *axis)?;
                t(ty.clone())
            }
            Node::Lengths { seqs, dtype } => {
                self.seqs(h, *seqs)?;
                Self::index(*dtype)?;
                t(TensorType::new(*dtype, vec![Dim::Batch]))
            }
            Node::Gather { table, index } => {
                let (tab, idx) = (self.tensor(h, *table)?, self.tensor(h, *index)?);
                Self::require(
                    typing::GATHER_INDEX_RULE.admits(idx.dtype),
                    idx.dtype,
                    "a gather's index is i32 or i64",
                )?;
                if !matches!(tab.dims.first(), Some(Dim::Static(_)))
                    || tab.dims.iter().any(|d| !matches!(d, Dim::Static(_)))
                {
                    return Err(Kind::BadType {
                        ty: tab.to_string(),
                        reason: "a gather's table is dense with static dims [n, ...]",
                    });
                }
                let mut dims = idx.dims.clone();
                dims.extend_from_slice(&tab.dims[1..]);
                let ty = TensorType::new(tab.dtype, dims);
                self.structure(&ty)?;
                t(ty)
            }
            Node::Reduce { op, arg, axis } => {
                let a = self.tensor(h, *arg)?;
                Self::rule(typing::reduce_rule(*op), a.dtype)?;
                let dim = Self::axis_dim(a, *axis)?;
                if matches!(dim, Dim::Batch | Dim::BatchPlusOne) {
                    return Err(Kind::BadAxis {
                        op: "reduce",
                        axis: *axis,
                        dim: dim.to_string(),
                    });
                }
                let mut dims = a.dims.clone();
                dims.remove(*axis);
                if a.ragged_rank() == 1 && matches!(dim, Dim::Ragged(_)) {
                    dims.insert(0, Dim::Batch);
                }
                let dtype = if op.is_arg() { DType::I32 } else { a.dtype };
                t(TensorType::new(dtype, dims))
            }
            Node::Softmax { arg, axis } => {
                let a = self.tensor(h, *arg)?;
                Self::rule(typing::SOFTMAX_RULE, a.dtype)?;
                let dim = Self::axis_dim(a, *axis)?;
                if matches!(dim, Dim::Batch | Dim::BatchPlusOne) {
                    return Err(Kind::BadAxis {
                        op: "softmax",
                        axis: *axis,
                        dim: dim.to_string(),
                    });
                }
                t(a.clone())
            }
            Node::Rank { arg, axis, .. } => {
                let a = self.tensor(h, *arg)?;
                Self::rule(typing::RANK_RULE, a.dtype)?;
                Self::line_axis("rank", a, *axis)?;
                t(TensorType::new(DType::I32, a.dims.clone()))
            }
            Node::TopK {
                part, arg, axis, k, ..
            } => {
                let a = self.tensor(h, *arg)?;
                Self::rule(typing::RANK_RULE, a.dtype)?;
                let n = match Self::axis_dim(a, *axis)? {
                    Dim::Static(n) => n,
                    dim => {
                        return Err(Kind::BadAxis {
                            op: "topk (a static axis; along a sequence, keep `rank < k`)",
                            axis: *axis,
                            dim: dim.to_string(),
                        });
                    }
                };
                if *k == 0 || *k > n {
                    return Err(Kind::BadType {
                        ty: a.to_string(),
                        reason: "topk's k is between 1 and the axis' length",
                    });
                }
                let mut dims = a.dims.clone();
                dims[*axis] = Dim::Static(*k);
                let dtype = match part {
                    TopKPart::Indices => DType::I32,
                    TopKPart::Values => a.dtype,
                };
                t(TensorType::new(dtype, dims))
            }
            Node::Take { arg, index, axis } => {
                let (a, idx) = (self.tensor(h, *arg)?, self.tensor(h, *index)?);
                Self::require(
                    typing::GATHER_INDEX_RULE.admits(idx.dtype),
                    idx.dtype,
                    "a take's index is i32 or i64",
                )?;
                if !matches!(Self::axis_dim(a, *axis)?, Dim::Static(_)) {
                    return Err(Kind::BadAxis {
                        op: "take (a static axis)",
                        axis: *axis,
                        dim: a.dims[*axis].to_string(),
                    });
                }
                let Some(skip) = a.take_index_skip(idx, *axis) else {
                    return Err(Kind::DimMismatch {
                        lhs: a.to_string(),
                        rhs: idx.to_string(),
                    });
                };
                let mut dims = a.dims[..skip].to_vec();
                dims.extend_from_slice(&idx.dims);
                dims.extend_from_slice(&a.dims[*axis + 1..]);
                let ty = TensorType::new(a.dtype, dims);
                self.structure(&ty)?;
                t(ty)
            }
            Node::Reshape { arg, inner } => {
                let a = self.tensor(h, *arg)?;
                let rows = a.row_dims();
                let old: Option<usize> = a.dims[rows..]
                    .iter()
                    .map(|d| match d {
                        Dim::Static(n) => Some(*n),
                        _ => None,
                    })
                    .product();
                if old != Some(inner.iter().product()) {
                    return Err(Kind::BadType {
                        ty: a.to_string(),
                        reason: "a reshape keeps the row dims and the number of elements of \
                                 the static inner dims",
                    });
                }
                let mut dims = a.dims[..rows].to_vec();
                dims.extend(inner.iter().map(|&n| Dim::Static(n)));
                let ty = TensorType::new(a.dtype, dims);
                self.structure(&ty)?;
                t(ty)
            }
            Node::Shift { arg, axis, .. } => {
                let a = self.tensor(h, *arg)?;
                Self::line_axis("shift", a, *axis)?;
                t(a.clone())
            }
            Node::Scan { mode, arg, axis } => {
                let a = self.tensor(h, *arg)?;
                Self::rule(typing::SCAN_RULE, a.dtype)?;
                let dim = Self::axis_dim(a, *axis)?;
                let bad = || Kind::BadAxis {
                    op: "scan",
                    axis: *axis,
                    dim: dim.to_string(),
                };
                if a.ragged_rank() > 0 {
                    return Err(bad());
                }
                let out = match (mode, dim) {
                    (_, Dim::Ragged(_) | Dim::BatchPlusOne) => return Err(bad()),
                    (ScanMode::Complete, Dim::Batch) => Dim::BatchPlusOne,
                    (ScanMode::Complete, Dim::Static(n)) => {
                        Dim::Static(n.checked_add(1).ok_or_else(bad)?)
                    }
                    (ScanMode::Complete, Dim::MaxLen) => return Err(bad()),
                    (_, d) => d,
                };
                let mut dims = a.dims.clone();
                dims[*axis] = out;
                t(TensorType::new(a.dtype, dims))
            }
            Node::Contract {
                lhs,
                lhs_axes,
                rhs,
                rhs_axes,
                out_axes,
                dtype,
                precision,
            } => {
                let (a, b) = (self.tensor(h, *lhs)?, self.tensor(h, *rhs)?);
                Self::same_dtype(a.dtype, b.dtype)?;
                if *precision == Precision::Tf32 {
                    Self::require(
                        a.dtype == DType::F32,
                        a.dtype,
                        "a tf32 contraction takes f32 operands",
                    )?;
                }
                Self::rule(typing::CONTRACT_RULE, a.dtype)?;
                typing::contract_result_rule(a.dtype, *dtype)
                    .or_else(|reason| Self::require(false, *dtype, reason))?;
                t(contraction_type(
                    [(a, lhs_axes), (b, rhs_axes)],
                    out_axes,
                    *dtype,
                )?)
            }
            Node::ToPadded { arg } => {
                let a = self.tensor(h, *arg)?;
                if a.ragged_rank() != 1 {
                    return Err(Kind::BadType {
                        ty: a.to_string(),
                        reason: "to_padded takes a jagged [%s, ...]",
                    });
                }
                let mut dims = vec![Dim::Batch, Dim::MaxLen];
                dims.extend_from_slice(&a.dims[1..]);
                t(TensorType::new(a.dtype, dims))
            }
            Node::FromPadded { arg, seqs } => {
                let a = self.tensor(h, *arg)?;
                self.seqs(h, *seqs)?;
                let ok = a.dims.len() >= 2
                    && a.dims[..2] == [Dim::Batch, Dim::MaxLen]
                    && a.dims[2..].iter().all(|d| matches!(d, Dim::Static(_)));
                if !ok {
                    return Err(Kind::BadType {
                        ty: a.to_string(),
                        reason: "from_padded takes a dense [B, N, ...] with static inner dims",
                    });
                }
                let mut dims = vec![Dim::Ragged(*seqs)];
                dims.extend_from_slice(&a.dims[2..]);
                t(TensorType::new(a.dtype, dims))
            }
            Node::Compact { arg, seqs } => {
                let a = self.tensor(h, *arg)?;
                self.seqs(h, *seqs)?;
                let Node::SeqsWhere { mask } = self.nodes[*seqs] else {
                    return Err(Kind::BadCompaction);
                };
                let mask_seqs = self.types[mask.index()].as_tensor().and_then(|m| m.seqs());
                if a.ragged_rank() != 1 || mask_seqs != a.seqs() {
                    return Err(Kind::BadCompaction);
                }
                let mut dims = vec![Dim::Ragged(*seqs)];
                dims.extend_from_slice(&a.dims[1..]);
                t(TensorType::new(a.dtype, dims))
            }
            Node::PackTriu { arg, seqs } => {
                let a = self.tensor(h, *arg)?;
                self.seqs(h, *seqs)?;
                let Node::SeqsTriu { seqs: pairs } = self.nodes[*seqs] else {
                    return Err(Kind::BadPacking);
                };
                if a.ragged_rank() != 2 || a.seqs() != Some(pairs) {
                    return Err(Kind::BadPacking);
                }
                let mut dims = vec![Dim::Ragged(*seqs)];
                dims.extend_from_slice(&a.dims[2..]);
                t(TensorType::new(a.dtype, dims))
            }
        }
    }
}

/// The result type of a contraction of two operands named by axis letters.
fn contraction_type(
    operands: [(&TensorType, &String); 2],
    out_axes: &str,
    dtype: DType,
) -> Result<TensorType, Kind> {
    let bad = |reason: String| Kind::BadContraction { reason };
    let mut extents: Vec<(char, Dim)> = Vec::new();
    let mut batched = false;
    let mut seqs: Option<Handle<Node>> = None;
    for (ty, axes) in operands {
        let dims = match ty.dims.first() {
            Some(Dim::Batch) => {
                batched = true;
                &ty.dims[1..]
            }
            Some(Dim::Ragged(s)) => {
                batched = true;
                match seqs {
                    Some(t) if t != *s => {
                        return Err(Kind::DifferentSequenceSets { lhs: t, rhs: *s });
                    }
                    _ => seqs = Some(*s),
                }
                &ty.dims[..]
            }
            _ => &ty.dims[..],
        };
        let letters: Vec<char> = axes.chars().collect();
        if letters.len() != dims.len() {
            return Err(bad(format!(
                "'{axes}' names {} axes of {ty}, which has {}",
                letters.len(),
                dims.len()
            )));
        }
        check_letters(axes).map_err(bad)?;
        for (&letter, &dim) in letters.iter().zip(dims) {
            if !matches!(dim, Dim::Ragged(_) | Dim::Static(_)) {
                return Err(bad(format!(
                    "axis '{letter}' of {ty} is {dim}, not ragged or static"
                )));
            }
            match extents.iter().find(|(l, _)| *l == letter) {
                Some((_, d)) if *d != dim => {
                    return Err(Kind::ContractionExtent {
                        letter,
                        lhs: d.to_string(),
                        rhs: dim.to_string(),
                    });
                }
                Some(_) => {}
                None => extents.push((letter, dim)),
            }
        }
    }
    check_letters(out_axes).map_err(bad)?;
    let mut dims = Vec::new();
    for letter in out_axes.chars() {
        let (_, dim) = extents
            .iter()
            .find(|(l, _)| *l == letter)
            .ok_or(Kind::UnknownContractionAxis { letter })?;
        dims.push(*dim);
    }
    let ragged = dims.iter().filter(|d| matches!(d, Dim::Ragged(_))).count();
    let out = TensorType::new(dtype, dims);
    if out.ragged_rank() != ragged || ragged > 2 {
        return Err(bad(format!(
            "ragged axes of '{out_axes}' must come first, at most two"
        )));
    }
    Ok(if ragged == 0 && batched {
        let mut dims = vec![Dim::Batch];
        dims.extend(out.dims);
        TensorType::new(dtype, dims)
    } else {
        out
    })
}

/// Axis letters are distinct lowercase ASCII letters.
fn check_letters(axes: &str) -> Result<(), String> {
    let mut seen = HashSet::new();
    for c in axes.chars() {
        if !c.is_ascii_lowercase() {
            return Err(format!("'{c}' in '{axes}' is not a lowercase letter"));
        }
        if !seen.insert(c) {
            return Err(format!("'{c}' appears twice in '{axes}'"));
        }
    }
    Ok(())
}
