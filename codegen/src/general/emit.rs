//! Lowers the steps of a [`Partition`] to kernels: a grid-stride loop over
//! the elements of a value, and at each element the fused expression tree
//! evaluated in registers (operands at broadcast indices, reductions and
//! contractions as loops).

use jagged_ir::{
    BinaryOp, CompareOp, Dim, Graph, Handle, IndexPredicate, Node, Precision, RankOrder, ReduceOp,
    ScanMode, TensorType, TopKPart,
};

mod mma;
#[path = "rows.rs"]
mod rows;
#[path = "triu.rs"]
mod triu;
pub(super) use mma::tensor_core_operands;
pub(super) use rows::{counts_kept_rows, note as resident_note, resident};

use super::{Buffer, Partition, Step, Stored, elements, reduced_type, tensor_type, unsupported};
use crate::error::CodegenError;
use crate::kernel::{
    BinOp, Cmp, KernelBuilder, Label, Operand, ParamId, ParamType, Reg, RegClass, ShflMode, TernOp,
    Type,
};
use crate::launch::{ParamBinding, SizeExpr};
use crate::spec::{DType, elem_bytes};
use crate::templates::map::{emit_binary, emit_unary};
use crate::templates::{
    BLOCK_THREADS, Plan, exp_f32, grid, load_f32, load_index, max_nan, pack_f32, store_f32,
    store_index, unpack_f32,
};

/// A value in registers: f32 for float dtypes, s64 for integers and bools.
#[derive(Clone, Copy, Debug)]
enum Val {
    F(Reg),
    I(Reg),
}

/// An element index: the sequence `b` (u64; 0 for values with no batch) and
/// one u64 index per dim of the value's type (a `B` dim's index is `b`).
#[derive(Clone, Debug, PartialEq)]
struct At {
    b: Reg,
    idx: Vec<Reg>,
}

/// What a kernel parameter stands for (parameters are declared once).
#[derive(Clone, Debug, PartialEq)]
enum ParamKey {
    Buffer(Buffer),
    Size(SizeExpr),
    Attr(String),
}

type Result<T> = std::result::Result<T, CodegenError>;

fn is_int(dtype: DType) -> bool {
    !dtype.is_float()
}

/// How the elements of a line compare in the stable sort of
/// [`Node::Rank`] and [`Node::TopK`].
#[derive(Clone, Copy)]
struct SortOrder {
    /// f32 for floats (with NaN flags), s64 for integers.
    ty: Type,
    /// `lt` smallest first, `gt` largest first.
    cmp: Cmp,
    /// Whether the values are floats (a NaN sorts first).
    nan: bool,
}

impl SortOrder {
    fn new(order: RankOrder, dtype: DType) -> SortOrder {
        let nan = !is_int(dtype);
        SortOrder {
            ty: if nan { Type::F32 } else { Type::S64 },
            cmp: match order {
                RankOrder::Ascending => Cmp::Lt,
                RankOrder::Descending => Cmp::Gt,
            },
            nan,
        }
    }
}

/// An element in a sort: its value, index (s64) and, for floats, NaN flag
/// (u32, 1 for NaN).
#[derive(Clone, Copy)]
struct SortKey {
    v: Reg,
    i: Reg,
    nan: Option<Reg>,
}

/// Whether the kernel of `node` (a float reduction, or a softmax's
/// statistics) is better computed a warp per element, lanes splitting the
/// reduced axis: when that axis is the contiguous last one, or when the
/// result has fewer than 8 elements per row, so that lanes of a thread per
/// element would read rows far apart.
/// Whether [`Emitter::define`] computes `node` without a branch or a loop
/// around the reads of its operands (elementwise math, casts, selects,
/// masks, positions, lengths, offsets, a reshape's re-indexing): what it
/// reads dominates the rest of the element's code.
fn straight_line(node: &Node) -> bool {
    matches!(
        node,
        Node::Attr { .. }
            | Node::Const { .. }
            | Node::Offsets { .. }
            | Node::Unary { .. }
            | Node::Cast { .. }
            | Node::Binary { .. }
            | Node::Select { .. }
            | Node::Mask { .. }
            | Node::Compare { .. }
            | Node::Position { .. }
            | Node::Lengths { .. }
            | Node::Reshape { .. }
    )
}

/// The row shifts by one (`shift x, axis 0, by ±1`) of a stored `[%s]`
/// value `x` in the fused tree of `root`, itself `[%s]` over the same
/// sequences, that [`Emitter::shift_rows`] takes from a neighbouring lane.
fn row_shifts(graph: &Graph, part: &Partition, root: Handle<Node>) -> Vec<Handle<Node>> {
    let Ok(ty) = tensor_type(graph, root) else {
        return Vec::new();
    };
    let (Some(s), 1) = (ty.seqs(), ty.dims.len()) else {
        return Vec::new();
    };
    let mut tree = super::fused_operands(graph, part, root);
    tree.retain(|&h| match graph.node(h) {
        Node::Shift { arg, axis: 0, by } => {
            by.abs() == 1
                && part.stored.contains_key(arg)
                && tensor_type(graph, *arg).is_ok_and(|x| x.dims == [Dim::Ragged(s)])
        }
        _ => false,
    });
    tree
}

/// Whether the step computing `node` into `into` can join, as a sibling,
/// a kernel that goes a warp per sequence over every row of `parent` (the
/// count of a `seqs_where` over it, see [`super::Partition`]'s sibling
/// fusion): it computes its value (not a copy), of one element per row of
/// `parent`, an untruncated set (every stored row is one of its `n_b`), and
/// its tree is straight-line code per row and shifts (no loop, reduction,
/// rank, gather or contraction, which take kernels of their own shape).
pub(super) fn per_row_sibling(
    graph: &Graph,
    part: &Partition,
    node: Handle<Node>,
    into: Stored,
    parent: Handle<Node>,
) -> Result<bool> {
    let computes = part.stored.get(&node).is_none_or(|s| *s == into);
    Ok(computes && per_row_of(graph, node, parent)? && per_row_tree(graph, part, node))
}

/// Whether `node` has one element per row of `parent`, an untruncated set
/// (every stored row is one of its `n_b`).
pub(super) fn per_row_of(graph: &Graph, node: Handle<Node>, parent: Handle<Node>) -> Result<bool> {
    let untruncated = matches!(
        graph.node(parent),
        Node::Seqs {
            truncate: false,
            ..
        }
    );
    Ok(untruncated && tensor_type(graph, node)?.dims == [Dim::Ragged(parent)])
}

/// Whether the fused tree of `root` (and `root`) is straight-line code and
/// shifts: what each element computes, with no loop along a line.
pub(super) fn per_row_tree(graph: &Graph, part: &Partition, root: Handle<Node>) -> bool {
    let mut tree = super::fused_operands(graph, part, root);
    tree.push(root);
    tree.iter().all(|&h| {
        let n = graph.node(h);
        straight_line(n) || matches!(n, Node::Shift { .. })
    })
}

/// Whether the fused tree of `root` reads the stored value `x` only
/// elementwise over `x`'s own elements (so at the row being computed, never
/// a neighbour's through a shift or a gather, nor along a loop).
pub(super) fn reads_only_at_its_row(
    graph: &Graph,
    part: &Partition,
    root: Handle<Node>,
    x: Handle<Node>,
) -> bool {
    let Ok(dims) = tensor_type(graph, x).map(|t| t.dims.clone()) else {
        return false;
    };
    let mut tree = super::fused_operands(graph, part, root);
    tree.push(root);
    tree.iter().all(|&u| {
        let elementwise = matches!(
            graph.node(u),
            Node::Unary { .. }
                | Node::Binary { .. }
                | Node::Select { .. }
                | Node::Compare { .. }
                | Node::Cast { .. }
        );
        !graph.node(u).operands().contains(&x)
            || elementwise && tensor_type(graph, u).is_ok_and(|t| t.dims == dims)
    })
}

/// The values of type `dims` that the kernel of `root` reads: the stored
/// ones, and the nodes of its fused tree computed from them (and scalars)
/// in straight-line code, in graph order. With `dims` `[B]`, the values of
/// one element per sequence (`segment[b]` of every event of user `b`);
/// with the static inner dims of the kernel's jagged rows, those of one
/// column (`columns[d]` of every row). Computed once before the loop over
/// a sequence's elements, each is read by the elements without being
/// loaded again (see [`Emitter::for_each_element`]).
fn invariant(
    graph: &Graph,
    part: &Partition,
    root: Handle<Node>,
    dims: &[Dim],
) -> Vec<Handle<Node>> {
    let mut tree = super::fused_operands(graph, part, root);
    let leaves: Vec<Handle<Node>> = tree
        .iter()
        .chain(std::iter::once(&root))
        .flat_map(|&h| graph.node(h).operands())
        .filter(|h| part.stored.contains_key(h))
        .collect();
    tree.extend(leaves);
    tree.sort_by_key(|h| h.index());
    tree.dedup();
    let typed = |h: Handle<Node>, scalars: bool| {
        matches!(graph.type_of(h), jagged_ir::Type::Tensor(t)
            if t.dims == dims || scalars && t.dims.is_empty())
    };
    // In graph order, so that a node's operands are decided before it.
    let mut hoisted: Vec<Handle<Node>> = Vec::new();
    for &h in &tree {
        let ok = typed(h, true)
            && (part.stored.contains_key(&h)
                || straight_line(graph.node(h))
                    && graph.node(h).operands().iter().all(|a| {
                        hoisted.contains(a) || matches!(graph.type_of(*a), jagged_ir::Type::Seqs)
                    }));
        if ok {
            hoisted.push(h);
        }
    }
    hoisted.retain(|&h| typed(h, false));
    hoisted
}

fn cooperative(graph: &Graph, node: Handle<Node>) -> bool {
    let (arg, axis) = match graph.node(node) {
        Node::Reduce { arg, axis, .. } | Node::Softmax { arg, axis } => (*arg, *axis),
        _ => return false,
    };
    let Ok(x) = tensor_type(graph, arg) else {
        return false;
    };
    if is_int(x.dtype) {
        return false;
    }
    let result = reduced_type(x, axis);
    let width = super::static_product(&result.dims[result.ragged_rank()..]);
    axis + 1 == x.dims.len() || width < 8
}

/// The tensor-core schedule of the step that computes `node` into `into`,
/// if its contraction takes one (not for a copy of a value stored elsewhere).
fn tensor_core_plan(
    graph: &Graph,
    part: &Partition,
    node: Handle<Node>,
    into: Stored,
) -> Option<mma::MmaPlan> {
    let computes = part.stored.get(&node).is_none_or(|s| *s == into);
    mma::plan(graph, part, node).filter(|_| computes)
}

/// How the step that computes `node` into `into` uses tensor cores, for the
/// plan text.
pub(super) fn tensor_core_note(
    graph: &Graph,
    part: &Partition,
    node: Handle<Node>,
    into: Stored,
) -> Option<String> {
    tensor_core_plan(graph, part, node, into).map(|p| p.to_string())
}

/// Generates the kernels of one step (two for [`Step::KeptOffsets`]);
/// `max_len_bucket` is the spec's (the tensor-core schedule sizes its row
/// tiles by it).
pub(super) fn lower_step(
    graph: &Graph,
    part: &Partition,
    step: &Step,
    name: &str,
    max_len_bucket: u32,
) -> Result<Vec<Plan>> {
    if let Step::Elements { node, into } = step
        && let Some(plan) = tensor_core_plan(graph, part, *node, *into)
    {
        let mut em = Emitter::new(graph, part, name, mma::BLOCK_THREADS);
        em.mma_elements(&plan, *node, *into, max_len_bucket)?;
        return Ok(vec![em.finish()]);
    }
    let mut em = Emitter::new(graph, part, name, BLOCK_THREADS);
    match step {
        Step::Elements { node, into } => {
            let ty = tensor_type(graph, *node)?.clone();
            let (node, into) = (*node, *into);
            // The value's own kernel computes it; a copy (an input or a
            // node named by two outputs) reads where it is stored.
            let own = part.stored.get(&node) == Some(&into);
            // The value's kernel (also for an f16 / bf16 output nothing reads).
            let computes = part.stored.get(&node).is_none_or(|s| *s == into);
            // The kept rows its loop counts for a later compaction.
            let counts: Vec<Handle<Node>> = part
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::KeptOffsets {
                        seqs,
                        counted_by: Some(n),
                        ..
                    } if *n == node => Some(*seqs),
                    _ => None,
                })
                .collect();
            if computes
                && let Some(plan) =
                    rows::lower(graph, part, node, into, &counts, name, max_len_bucket)?
            {
                return Ok(vec![plan]);
            }
            if !counts.is_empty() {
                return Err(unsupported(
                    graph,
                    node,
                    "a count of kept rows planned in a kernel that is not resident",
                ));
            }
            let coop = own && cooperative(graph, node);
            em.per_sequence = invariant(graph, part, node, &[Dim::Batch]);
            if ty.seqs().is_some() && ty.dims[1..].iter().all(|d| matches!(d, Dim::Static(_))) {
                em.per_column = invariant(graph, part, node, &ty.dims[1..]);
                if super::static_product(&ty.dims[1..]) == 32 {
                    em.per_row = invariant(graph, part, node, &ty.dims[..1]);
                    em.per_row.retain(|h| part.stored.contains_key(h));
                }
            }
            if !coop {
                em.shifted = row_shifts(graph, part, node);
            }
            em.for_each_element(&ty, &[into], coop, |em, at, lin| {
                let mut values = em.sequence_values.clone();
                values.extend(em.row_values.iter().cloned());
                em.cse = Some(Cse {
                    values,
                    branching: 0,
                });
                let v = if own {
                    em.computed(node, at)
                } else {
                    em.value(node, at)
                };
                em.cse = None;
                em.store(into, lin, v?);
                Ok(())
            })?;
        }
        Step::SoftmaxStats { node } => {
            let (max, sum) = part.softmax_stats[node];
            let Node::Softmax { arg, axis } = graph.node(*node) else {
                return Err(unsupported(
                    graph,
                    *node,
                    "softmax statistics of a non-softmax",
                ));
            };
            let (arg, axis) = (*arg, *axis);
            let x = tensor_type(graph, arg)?.clone();
            let stats = reduced_type(&x, axis);
            let coop = cooperative(graph, *node);
            em.for_each_element(&stats, &[max, sum], coop, |em, at, lin| {
                let line = em.line_of(&x, &stats, axis, at);
                let (m, s) = em.softmax_stats(arg, &x, axis, &line)?;
                em.store(max, lin, Val::F(m));
                em.store(sum, lin, Val::F(s));
                Ok(())
            })?;
        }
        Step::Template { node, .. } => {
            return Err(unsupported(
                graph,
                *node,
                "a fast path's step has no general lowering",
            ));
        }
        Step::Scan { node, into } => em.scan(*node, *into)?,
        Step::Compact { nodes } => {
            return Ok(vec![rows::compact(graph, part, nodes, name)?]);
        }
        Step::KeptOffsets {
            seqs,
            also,
            counted_by,
        } => {
            return rows::kept_offsets(graph, part, *seqs, also, counted_by.is_some(), name);
        }
        Step::TriuOffsets { seqs } => return triu::triu_offsets(graph, part, *seqs, name),
        Step::PackTriu { node, into } => {
            return Ok(vec![triu::pack(graph, part, *node, *into, name)?]);
        }
    }
    Ok(vec![em.finish()])
}

/// The start and `n_b` of each input sequence set for the sequence `b` an
/// element loop is in (loaded once per sequence or element).
struct SeqMemo {
    b: Reg,
    sets: Vec<(Handle<Node>, Reg, Reg)>,
}

struct Emitter<'g> {
    graph: &'g Graph,
    part: &'g Partition,
    b: KernelBuilder,
    params: Vec<(ParamKey, ParamId)>,
    bindings: Vec<ParamBinding>,
    items: SizeExpr,
    memo: Option<SeqMemo>,
    /// In a cooperative element loop: this thread's lane (u64). The root's
    /// reduction loops start there and step by 32, and their partial
    /// results are combined across the warp by shuffles.
    lanes: Option<Reg>,
    /// In a cooperative element loop: a predicate that holds on lanes other
    /// than 0, which do not store (every lane holds the same result).
    not_writer: Option<Reg>,
    /// Values already in registers for the element being computed (a
    /// tensor-core contraction's accumulator in its epilogue).
    known: Vec<(Handle<Node>, Val)>,
    /// In a sequence-resident kernel: the staged leaves and the values
    /// hoisted out of loops (see the `rows` module).
    resident: Option<rows::Resident>,
    /// In an element loop's body: the values computed so far for the
    /// element, by node and index registers, so that a node read twice (a
    /// leaf under two branches of the tree, `t.shift_rows(1) - t` in two
    /// comparisons) is loaded and computed once. See [`Self::value`].
    cse: Option<Cse>,
    /// The per-sequence values (`[B]`, straight-line or stored) the value
    /// an element loop computes reads: computed once per sequence, before
    /// the loop over its elements, which reads them from
    /// [`Self::sequence_values`] (see [`Self::for_each_element`]).
    per_sequence: Vec<Handle<Node>>,
    /// The per-column values (of the static inner dims of the jagged rows
    /// an element loop computes) its value reads: where a lane keeps its
    /// column (rows of a width that divides 32), computed once per
    /// sequence before the loop, with [`Self::per_sequence`]'s.
    per_column: Vec<Handle<Node>>,
    /// The stored values of one element per row (`[%s]`, `cond[i]` of an
    /// event) that an element loop over rows of 32 columns reads: the warp
    /// is on one row at a time there, so every 32 rows each lane loads the
    /// value of one of the next 32 and each row takes its own by a shuffle
    /// (one coalesced load, not a sector per row).
    per_row: Vec<Handle<Node>>,
    /// The [`Self::per_sequence`] values of the sequence being computed,
    /// each with its index.
    sequence_values: Vec<(Handle<Node>, At, Val)>,
    /// The row shifts (`shift x, axis 0, by ±1` of a stored `[%s]` value
    /// `x`) the value an element loop computes reads: the loop goes over a
    /// sequence's rows 32 at a time on the whole warp, each lane loads its
    /// row of `x` and takes its neighbour's from the next or previous lane
    /// (a shuffle), so `x` is read once, not once per shift.
    shifted: Vec<Handle<Node>>,
    /// The values of the element being computed that the loop computed
    /// before its body (the [`Self::shifted`] reads, with their operands).
    row_values: Vec<(Handle<Node>, At, Val)>,
    /// This thread's lane (u64) where every lane of the warp runs the code
    /// being emitted, each on a row of the same sequence (a resident
    /// kernel's rows of 32 at a time): a rank along the sequence there
    /// reads its line 32 rows at a time, a row per lane, and takes each
    /// from its lane by a shuffle (see [`Self::rank`]).
    converged: Option<Reg>,
}

/// The common subexpressions of one element's tree ([`Emitter::cse`]).
#[derive(Default)]
struct Cse {
    /// The values computed in the body's straight-line code, which
    /// dominates the rest of the body.
    values: Vec<(Handle<Node>, At, Val)>,
    /// How many nodes whose code branches or loops (a shift's guarded read,
    /// a gather, a reduction's loop) are being computed: their operands'
    /// registers are not defined after the branch or hold another
    /// iteration's value after the loop, so nothing computed inside is
    /// remembered (what was remembered before is still read).
    branching: u32,
}

impl<'g> Emitter<'g> {
    fn new(graph: &'g Graph, part: &'g Partition, name: &str, block_threads: u32) -> Self {
        Emitter {
            graph,
            part,
            b: KernelBuilder::new(name, block_threads),
            params: Vec::new(),
            bindings: Vec::new(),
            items: SizeExpr::Const(1),
            memo: None,
            lanes: None,
            not_writer: None,
            known: Vec::new(),
            resident: None,
            cse: None,
            per_sequence: Vec::new(),
            per_column: Vec::new(),
            per_row: Vec::new(),
            sequence_values: Vec::new(),
            shifted: Vec::new(),
            row_values: Vec::new(),
            converged: None,
        }
    }

    fn finish(self) -> Plan {
        Plan {
            grid: grid(self.items, u64::from(self.b.block_threads())),
            kernel: self.b.finish(),
            bindings: self.bindings,
        }
    }

    // ---- parameters -------------------------------------------------------

    fn param(
        &mut self,
        key: ParamKey,
        name: &str,
        ty: ParamType,
        binding: ParamBinding,
    ) -> ParamId {
        if let Some((_, id)) = self.params.iter().find(|(k, _)| *k == key) {
            return *id;
        }
        let ident: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let id = self.b.param(&ident, ty);
        self.params.push((key, id));
        self.bindings.push(binding);
        id
    }

    /// The global address of a buffer.
    fn ptr(&mut self, buffer: Buffer) -> Reg {
        let (name, binding) = match buffer {
            Buffer::Input(i) => {
                let name = self
                    .graph
                    .inputs()
                    .nth(i)
                    .map_or_else(|| format!("input{i}"), |(_, n, _)| n.to_string());
                (name, ParamBinding::Input(i))
            }
            Buffer::Output(i) => {
                let name = self
                    .graph
                    .outputs()
                    .get(i)
                    .map_or_else(|| format!("output{i}"), |o| format!("out_{}", o.name));
                (name, ParamBinding::Output(i))
            }
            Buffer::Scratch(i) => (format!("scratch{i}"), ParamBinding::Scratch(i)),
        };
        let p = self.param(
            ParamKey::Buffer(buffer),
            &name,
            ParamType::Ptr { align: 16 },
            binding,
        );
        self.b.ld_global_ptr(p)
    }

    /// A run-time size as a u64 register.
    fn size(&mut self, e: SizeExpr) -> Reg {
        let name = match &e {
            SizeExpr::Batch => "batch".to_string(),
            SizeExpr::MaxLen => "max_len".to_string(),
            SizeExpr::TotalRows => "total_rows".to_string(),
            _ => format!("size{}", self.params.len()),
        };
        let p = self.param(
            ParamKey::Size(e.clone()),
            &name,
            ParamType::U64,
            ParamBinding::Size(e),
        );
        self.b.ld_param(p)
    }

    /// A float attribute as an f32 register.
    fn attr(&mut self, name: &str) -> Reg {
        let p = self.param(
            ParamKey::Attr(name.to_string()),
            &format!("attr_{name}"),
            ParamType::F32,
            ParamBinding::FloatAttr(name.to_string()),
        );
        self.b.ld_param(p)
    }

    // ---- sequence sets ----------------------------------------------------

    /// The offsets buffer of a sequence set.
    fn set_offsets(&self, s: Handle<Node>) -> Result<Stored> {
        let found = match self.graph.node(s) {
            Node::Seqs { offsets, .. } => self.part.stored.get(offsets).copied(),
            Node::SeqsWhere { .. } | Node::SeqsTriu { .. } => {
                self.part.kept_offsets.get(&s).copied()
            }
            _ => None,
        };
        found.ok_or_else(|| unsupported(self.graph, s, "a sequence set without an offsets buffer"))
    }

    /// `offsets[k]` of set `s` (u64).
    fn seq_start(&mut self, s: Handle<Node>, k: Reg) -> Result<Reg> {
        if let Some(&(_, start, _)) = self.memoized(s, k) {
            return Ok(start);
        }
        let st = self.set_offsets(s)?;
        let base = self.ptr(st.buffer);
        Ok(load_index(&mut self.b, base, k, st.elem))
    }

    /// `n_b` of set `s` (u64): the length, capped at `max_len` if truncated.
    fn seq_len(&mut self, s: Handle<Node>, b: Reg) -> Result<Reg> {
        if let Some(&(_, _, len)) = self.memoized(s, b) {
            return Ok(len);
        }
        let start = self.seq_start(s, b)?;
        let next = self.b.binary(BinOp::Add, Type::U64, b, Operand::Int(1));
        let end = self.seq_start(s, next)?;
        let len = self.b.binary(BinOp::Sub, Type::U64, end, start);
        if matches!(self.graph.node(s), Node::Seqs { truncate: true, .. }) {
            let n = self.size(SizeExpr::MaxLen);
            return Ok(self.b.binary(BinOp::Min, Type::U64, len, n));
        }
        Ok(len)
    }

    /// The memoized start and length of set `s` for sequence register `b`.
    fn memoized(&self, s: Handle<Node>, b: Reg) -> Option<&(Handle<Node>, Reg, Reg)> {
        let memo = self.memo.as_ref().filter(|m| m.b == b)?;
        memo.sets.iter().find(|(set, _, _)| *set == s)
    }

    /// The extent of `dim` in sequence `b`.
    fn extent(&mut self, dim: Dim, b: Reg) -> Result<Operand> {
        Ok(match dim {
            Dim::Static(n) => Operand::Int(n as i64),
            Dim::Batch => self.size(SizeExpr::Batch).into(),
            Dim::BatchPlusOne => {
                let batch = self.size(SizeExpr::Batch);
                self.b
                    .binary(BinOp::Add, Type::U64, batch, Operand::Int(1))
                    .into()
            }
            Dim::MaxLen => self.size(SizeExpr::MaxLen).into(),
            Dim::Ragged(s) => self.seq_len(s, b)?.into(),
        })
    }

    // ---- element loops ----------------------------------------------------

    /// Splits `w` into digits of the given extents (last one fastest).
    fn digits(&mut self, w: Reg, extents: &[Operand]) -> Vec<Reg> {
        let mut rest = w;
        let mut digits = vec![rest; extents.len()];
        for (k, e) in extents.iter().enumerate().rev() {
            if k == 0 {
                digits[0] = rest;
                break;
            }
            digits[k] = self.b.binary(BinOp::Rem, Type::U64, rest, *e);
            rest = self.b.binary(BinOp::Div, Type::U64, rest, *e);
        }
        digits
    }

    /// A loop over the elements of a value of type `ty`, calling `body` with
    /// each element's index and linear position. Jagged values go a warp per
    /// sequence (grid-stride over sequences, lanes over the sequence's rows x
    /// inner elements, coalesced), so no thread searches for its sequence;
    /// rows at `n_b <= i < L_b` get zeros in `zero_into` instead. Dense
    /// values go a thread per element.
    ///
    /// With `coop`, a whole warp computes each element (the root's reduction
    /// split over the lanes, see [`Self::combine`]) and lane 0 stores it: a
    /// warp per element of a dense value, a warp per sequence going through
    /// its elements one after the other for a jagged one.
    fn for_each_element(
        &mut self,
        ty: &TensorType,
        zero_into: &[Stored],
        coop: bool,
        mut body: impl FnMut(&mut Self, &At, Reg) -> Result<()>,
    ) -> Result<()> {
        let graph = self.graph;
        let (thread, threads) = self.b.global_thread_index();
        let lane = self
            .b
            .binary(BinOp::And, Type::U64, thread, Operand::Int(31));
        if coop {
            let not_writer = self.b.setp(Cmp::Ne, Type::U64, lane, Operand::Int(0));
            self.not_writer = Some(not_writer);
        }
        let Some(s) = ty.seqs() else {
            let items = elements(ty).unwrap_or(SizeExpr::Const(0));
            let (start, step) = if coop {
                self.items = items.clone() * SizeExpr::Const(32);
                let warp = self
                    .b
                    .binary(BinOp::Shr, Type::U64, thread, Operand::Int(5));
                let warps = self
                    .b
                    .binary(BinOp::Shr, Type::U64, threads, Operand::Int(5));
                (warp, warps)
            } else {
                self.items = items.clone();
                (thread, threads)
            };
            let work = self.size(items);
            let range = self.b.begin_range(Type::U64, start, work, step);
            let zero = self.b.mov(Type::U64, Operand::Int(0));
            let mut extents = Vec::with_capacity(ty.dims.len());
            for &d in &ty.dims {
                extents.push(self.extent(d, zero)?);
            }
            let idx = self.digits(range.counter, &extents);
            // Only a `B` dim gives a sequence (`b < B`, so `offsets[b + 1]`
            // exists); other dense values read no per-sequence state here.
            let b = match ty.dims.first() {
                Some(Dim::Batch) => {
                    self.enter_sequence(idx[0])?;
                    idx[0]
                }
                _ => zero,
            };
            if coop {
                self.lanes = Some(lane);
            }
            body(self, &At { b, idx }, range.counter)?;
            self.lanes = None;
            self.memo = None;
            self.b.end_range(range);
            self.not_writer = None;
            return Ok(());
        };
        if ty.ragged_rank() != 1 {
            return Err(CodegenError::Unsupported(format!(
                "graph `{}`: a loop over the elements of {ty}",
                graph.name()
            )));
        }
        let inner: Vec<Operand> = ty.dims[1..]
            .iter()
            .map(|d| match d {
                Dim::Static(n) => Operand::Int(*n as i64),
                _ => Operand::Int(1),
            })
            .collect();
        let width = super::static_product(&ty.dims[1..]);
        self.items = SizeExpr::Batch * SizeExpr::Const(32);
        let warp = self
            .b
            .binary(BinOp::Shr, Type::U64, thread, Operand::Int(5));
        let warps = self
            .b
            .binary(BinOp::Shr, Type::U64, threads, Operand::Int(5));
        let batch = self.size(SizeExpr::Batch);
        let seqs = self.b.begin_range(Type::U64, warp, batch, warps);
        let b = seqs.counter;
        self.enter_sequence(b)?;
        self.sequence_values = Vec::new();
        for h in self.per_sequence.clone() {
            let at = At { b, idx: vec![b] };
            let v = self.value(h, &at)?;
            self.sequence_values.push((h, at, v));
        }
        let first = self.seq_start(s, b)?;
        let next = self.b.binary(BinOp::Add, Type::U64, b, Operand::Int(1));
        let end = self.seq_start(s, next)?;
        let stored_rows = self.b.binary(BinOp::Sub, Type::U64, end, first);
        let len = self.seq_len(s, b)?;
        let count = self.b.binary(
            BinOp::Mul,
            Type::U64,
            stored_rows,
            Operand::Int(width as i64),
        );
        let base = self
            .b
            .binary(BinOp::Mul, Type::U64, first, Operand::Int(width as i64));
        // Where the width divides 32, a lane keeps its column: its digits
        // and the values of that column are computed once.
        let columns = if !coop && !inner.is_empty() && width > 0 && 32 % width == 0 {
            let within = self
                .b
                .binary(BinOp::Rem, Type::U64, lane, Operand::Int(width as i64));
            let digits = self.digits(within, &inner);
            for h in self.per_column.clone() {
                let at = At {
                    b,
                    idx: digits.clone(),
                };
                let v = self.value(h, &at)?;
                self.sequence_values.push((h, at, v));
            }
            Some(digits)
        } else {
            None
        };
        // Lanes over the elements, or (cooperative) all lanes on each one;
        // with row shifts to share, the whole warp on 32 rows at a time.
        let shuffles = !self.shifted.is_empty() && width == 1 && !coop;
        // Rows of 32 columns: the per-row values 32 rows at a time, each
        // lane's share of the next 32 kept in a register.
        let row_chunks = if !coop && width == 32 && !self.per_row.is_empty() {
            // The chunks live across the loop: ptxas spilled them at the 32
            // registers it aims at otherwise (8 bytes on sm_90a, ptxas 12.9).
            self.room_for_a_line_loop();
            let mut chunks = Vec::new();
            for h in self.per_row.clone() {
                let int = is_int(tensor_type(self.graph, h)?.dtype);
                let reg = match self.zero(if int { DType::I64 } else { DType::F32 }) {
                    Val::F(r) | Val::I(r) => r,
                };
                chunks.push((h, reg, int));
            }
            Some(chunks)
        } else {
            None
        };
        let elems = if coop {
            self.b
                .begin_range(Type::U64, Operand::Int(0), count, Operand::Int(1))
        } else if shuffles {
            self.b
                .begin_range(Type::U64, Operand::Int(0), count, Operand::Int(32))
        } else {
            self.b.begin_range(Type::U64, lane, count, Operand::Int(32))
        };
        let e = if shuffles {
            self.b.binary(BinOp::Add, Type::U64, elems.counter, lane)
        } else {
            elems.counter
        };
        let lin = self.b.binary(BinOp::Add, Type::U64, base, e);
        let i = self
            .b
            .binary(BinOp::Div, Type::U64, e, Operand::Int(width as i64));
        let done = self.b.label();
        if shuffles {
            let active = self.b.setp(Cmp::Lt, Type::U64, e, count);
            self.row_values = self.shift_rows(&At { b, idx: vec![i] }, lane, active)?;
            self.b.bra_if(active, true, done);
        }
        if let Some(chunks) = &row_chunks {
            // Rows of 32 columns: `i` is the same on every lane.
            let slot = self.b.binary(BinOp::Rem, Type::U64, i, Operand::Int(32));
            let fresh = self.b.setp(Cmp::Eq, Type::U64, slot, Operand::Int(0));
            let loaded = self.b.label();
            self.b.bra_if(fresh, true, loaded);
            let row = self.b.binary(BinOp::Add, Type::U64, i, lane);
            let has = self.b.setp(Cmp::Lt, Type::U64, row, stored_rows);
            for &(h, reg, int) in chunks {
                let at = At { b, idx: vec![row] };
                let (Val::F(v) | Val::I(v)) = self.guarded(h, &at, has, int)?;
                self.b
                    .mov_to(if int { Type::S64 } else { Type::F32 }, reg, v);
            }
            self.b.place(loaded);
            let j = self.b.cvt(Type::U32, Type::U64, slot);
            for &(h, reg, int) in chunks {
                let v = if int {
                    Val::I(self.shfl_s64(ShflMode::Idx, reg, j, 31))
                } else {
                    Val::F(self.b.shfl(ShflMode::Idx, reg, j, 31))
                };
                self.row_values.push((h, At { b, idx: vec![i] }, v));
            }
        }
        let valid = self.b.setp(Cmp::Lt, Type::U64, i, len);
        let write = self.b.label();
        self.b.bra_if(valid, false, write);
        for &st in zero_into {
            let z = self.zero(st.elem);
            self.store(st, lin, z);
        }
        self.b.bra(done);
        self.b.place(write);
        let mut idx = vec![i];
        if let Some(digits) = &columns {
            idx.extend(digits.iter().copied());
        } else if !inner.is_empty() {
            let within = self
                .b
                .binary(BinOp::Rem, Type::U64, e, Operand::Int(width as i64));
            idx.extend(self.digits(within, &inner));
        }
        if coop {
            self.lanes = Some(lane);
        }
        body(self, &At { b, idx }, lin)?;
        self.lanes = None;
        self.b.place(done);
        self.b.end_range(elems);
        self.memo = None;
        self.sequence_values.clear();
        self.row_values.clear();
        self.b.end_range(seqs);
        self.not_writer = None;
        Ok(())
    }

    /// The [`Self::shifted`] values at row `at` (every lane of the warp
    /// here, `active` on those with a row): each lane loads its row of the
    /// shifted value (0 on an inactive lane) and takes the neighbour's from
    /// the lane next to it; the first or last lane of the 32, whose
    /// neighbour is another group's, loads it. Returns the values and the
    /// rows loaded, for the element's [`Cse`].
    fn shift_rows(
        &mut self,
        at: &At,
        lane: Reg,
        active: Reg,
    ) -> Result<Vec<(Handle<Node>, At, Val)>> {
        let mut values = Vec::new();
        for h in self.shifted.clone() {
            let Node::Shift { arg, by, .. } = *self.graph.node(h) else {
                continue;
            };
            let int = is_int(tensor_type(self.graph, arg)?.dtype);
            let own = match values
                .iter()
                .find(|(k, a, _): &&(Handle<Node>, At, Val)| *k == arg && a == at)
            {
                Some(&(_, _, v)) => v,
                None => {
                    let v = self.guarded(arg, at, active, int)?;
                    values.push((arg, at.clone(), v));
                    v
                }
            };
            // The lane whose neighbour is in another group of 32 rows.
            let (mode, edge, clamp) = if by > 0 {
                (ShflMode::Down, 31, 31)
            } else {
                (ShflMode::Up, 0, 0)
            };
            // `guarded` gives an s64 for an integer `x`, else an f32.
            let (Val::F(own) | Val::I(own)) = own;
            let next = if int {
                self.shfl_s64(mode, own, Operand::Int(1), clamp)
            } else {
                self.b.shfl(mode, own, Operand::Int(1), clamp)
            };
            let x = tensor_type(self.graph, arg)?;
            let n = self.extent(x.dims[0], at.b)?;
            let from = self
                .b
                .binary(BinOp::Add, Type::S64, at.idx[0], Operand::Int(by));
            // Unsigned: a row before the line's start is past its end.
            let inside = self.b.setp(Cmp::Lt, Type::U64, from, n);
            let edge = self.b.setp(Cmp::Eq, Type::U64, lane, Operand::Int(edge));
            let load = self.b.binary(BinOp::And, Type::Pred, inside, edge);
            let there = At {
                b: at.b,
                idx: vec![from],
            };
            let (Val::F(loaded) | Val::I(loaded)) = self.guarded(arg, &there, load, int)?;
            let (ty, zero) = if int {
                (Type::S64, Operand::Int(0))
            } else {
                (Type::F32, Operand::F32(0.0))
            };
            let v = self.b.selp(ty, loaded, next, edge);
            let v = self.b.selp(ty, v, zero, inside);
            values.push((h, at.clone(), if int { Val::I(v) } else { Val::F(v) }));
        }
        Ok(values)
    }

    /// Loads the start and `n_b` of every input sequence set for sequence
    /// `b` once, for the reads of the element being computed (valid until
    /// `self.memo` is reset at the end of the element's scope).
    fn enter_sequence(&mut self, b: Reg) -> Result<()> {
        self.memo = None;
        let mut sets = Vec::new();
        for (s, node) in self.graph.nodes().iter() {
            if matches!(node, Node::Seqs { .. }) {
                let start = self.seq_start(s, b)?;
                let len = self.seq_len(s, b)?;
                sets.push((s, start, len));
            }
        }
        self.memo = Some(SeqMemo { b, sets });
        Ok(())
    }

    // ---- memory -----------------------------------------------------------

    fn zero(&mut self, dtype: DType) -> Val {
        if is_int(dtype) {
            Val::I(self.b.mov(Type::S64, Operand::Int(0)))
        } else {
            Val::F(self.b.const_f32(0.0))
        }
    }

    /// The linear element position of `at` in a stored value of type `ty`.
    fn linear(&mut self, ty: &TensorType, at: &At) -> Result<Reg> {
        let (mut lin, first) = match ty.seqs() {
            Some(s) => {
                let start = self.seq_start(s, at.b)?;
                (self.b.binary(BinOp::Add, Type::U64, start, at.idx[0]), 1)
            }
            None => (self.b.mov(Type::U64, Operand::Int(0)), 0),
        };
        for k in first..ty.dims.len() {
            let e = self.extent(ty.dims[k], at.b)?;
            lin = self.b.ternary(TernOp::MadLo, Type::U64, lin, e, at.idx[k]);
        }
        Ok(lin)
    }

    fn load(&mut self, st: Stored, lin: Reg) -> Val {
        let base = self.ptr(st.buffer);
        match st.elem {
            DType::F32 | DType::F16 | DType::BF16 => {
                Val::F(load_f32(&mut self.b, base, lin, st.elem, 1)[0])
            }
            DType::F64 => {
                let addr = self.b.element_addr(base, lin, 8);
                let addr = crate::kernel::Address {
                    base: addr,
                    offset: 0,
                };
                let d = self.b.ld(crate::kernel::Space::Global, Type::F64, 1, addr)[0];
                Val::F(self.b.cvt(Type::F32, Type::F64, d))
            }
            elem => Val::I(load_index(&mut self.b, base, lin, elem)),
        }
    }

    fn store(&mut self, st: Stored, lin: Reg, v: Val) {
        let skip = self.not_writer.map(|pred| {
            let skip = self.b.label();
            self.b.bra_if(pred, false, skip);
            skip
        });
        self.store_always(st, lin, v);
        if let Some(skip) = skip {
            self.b.place(skip);
        }
    }

    fn store_always(&mut self, st: Stored, lin: Reg, v: Val) {
        let base = self.ptr(st.buffer);
        match st.elem {
            DType::F32 | DType::F16 | DType::BF16 => {
                let f = self.f32(v);
                store_f32(&mut self.b, base, lin, st.elem, &[f]);
            }
            DType::F64 => {
                let f = self.f32(v);
                let d = self.b.cvt(Type::F64, Type::F32, f);
                let addr = self.b.element_addr(base, lin, 8);
                let addr = crate::kernel::Address {
                    base: addr,
                    offset: 0,
                };
                self.b
                    .st(crate::kernel::Space::Global, Type::F64, addr, vec![d]);
            }
            DType::I32 | DType::I64 => {
                let i = self.i64(v);
                store_index(&mut self.b, base, lin, st.elem, i);
            }
            DType::U8 | DType::Bool => {
                let i = self.i64(v);
                let i = if st.elem == DType::Bool {
                    self.nonzero01(i)
                } else {
                    i
                };
                let narrow = self.b.cvt(Type::U32, Type::U64, i);
                let addr = self.b.element_addr(base, lin, elem_bytes(st.elem));
                let addr = crate::kernel::Address {
                    base: addr,
                    offset: 0,
                };
                self.b
                    .st(crate::kernel::Space::Global, Type::U8, addr, vec![narrow]);
            }
        }
    }

    // ---- conversions ------------------------------------------------------

    fn f32(&mut self, v: Val) -> Reg {
        match v {
            Val::F(r) => r,
            Val::I(r) => self.b.cvt(Type::F32, Type::S64, r),
        }
    }

    fn i64(&mut self, v: Val) -> Reg {
        match v {
            Val::I(r) => r,
            Val::F(r) => self.b.cvt(Type::S64, Type::F32, r),
        }
    }

    /// 1 where an s64 is nonzero, else 0.
    fn nonzero01(&mut self, i: Reg) -> Reg {
        let z = self.b.setp(Cmp::Eq, Type::S64, i, Operand::Int(0));
        self.b.selp(Type::S64, Operand::Int(0), Operand::Int(1), z)
    }

    /// A predicate that holds where `v` is zero; its negation is "nonzero"
    /// with NaN counted as nonzero (`setp.eq` is false for NaN), the truth
    /// value of masks and conditions.
    fn is_zero(&mut self, v: Val) -> Reg {
        let (ty, r) = match v {
            Val::F(r) => (Type::F32, r),
            Val::I(r) => (Type::S64, r),
        };
        let zero = if ty == Type::F32 {
            Operand::F32(0.0)
        } else {
            Operand::Int(0)
        };
        self.b.setp(Cmp::Eq, ty, r, zero)
    }

    /// Rounds to `dtype` (what `cast`, `const` and `attr` do).
    fn round(&mut self, v: Val, dtype: DType) -> Val {
        match dtype {
            DType::F32 | DType::F64 => Val::F(self.f32(v)),
            DType::F16 | DType::BF16 => {
                let f = self.f32(v);
                let packed = pack_f32(&mut self.b, dtype, &[f]);
                Val::F(unpack_f32(&mut self.b, dtype, packed)[0])
            }
            DType::I64 => Val::I(self.i64(v)),
            DType::I32 => {
                let narrow = match v {
                    Val::F(r) => self.b.cvt(Type::S32, Type::F32, r),
                    Val::I(r) => {
                        let lo = self.b.binary(
                            BinOp::Max,
                            Type::S64,
                            r,
                            Operand::Int(i64::from(i32::MIN)),
                        );
                        let hi = self.b.binary(
                            BinOp::Min,
                            Type::S64,
                            lo,
                            Operand::Int(i64::from(i32::MAX)),
                        );
                        self.b.cvt(Type::S32, Type::S64, hi)
                    }
                };
                Val::I(self.b.cvt(Type::S64, Type::S32, narrow))
            }
            DType::U8 => {
                let i = match v {
                    Val::F(r) => {
                        let c = self.b.cvt(Type::U8, Type::F32, r);
                        self.b.cvt(Type::S64, Type::U8, c)
                    }
                    Val::I(r) => {
                        let lo = self.b.binary(BinOp::Max, Type::S64, r, Operand::Int(0));
                        self.b.binary(BinOp::Min, Type::S64, lo, Operand::Int(255))
                    }
                };
                Val::I(i)
            }
            DType::Bool => {
                let z = self.is_zero(v);
                Val::I(self.b.selp(Type::S64, Operand::Int(0), Operand::Int(1), z))
            }
        }
    }

    // ---- values -----------------------------------------------------------

    /// The value of `h` at `at`: loaded if stored, else computed in place.
    fn value(&mut self, h: Handle<Node>, at: &At) -> Result<Val> {
        if let Some(&(_, v)) = self.known.iter().find(|(k, _)| *k == h) {
            return Ok(v);
        }
        if let Some(v) = self.resident_value(h, at)? {
            return Ok(v);
        }
        if let Some(cse) = &self.cse
            && let Some((_, _, v)) = cse.values.iter().find(|(k, a, _)| *k == h && a == at)
        {
            return Ok(*v);
        }
        let v = if let Some(&st) = self.part.stored.get(&h) {
            let ty = tensor_type(self.graph, h)?.clone();
            let lin = self.linear(&ty, at)?;
            self.load(st, lin)
        } else {
            self.computed(h, at)?
        };
        if let Some(cse) = &mut self.cse
            && cse.branching == 0
        {
            cse.values.push((h, at.clone(), v));
        }
        Ok(v)
    }

    /// [`Self::define`], remembering nothing computed inside a node whose
    /// code branches or loops.
    fn computed(&mut self, h: Handle<Node>, at: &At) -> Result<Val> {
        if straight_line(self.graph.node(h)) {
            self.define(h, at)
        } else {
            self.branching(|em| em.define(h, at))
        }
    }

    /// `f` with nothing it computes remembered for the element's other
    /// reads (its code branches or loops; see [`Cse::branching`]).
    fn branching<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if let Some(cse) = &mut self.cse {
            cse.branching += 1;
        }
        let r = f(self);
        if let Some(cse) = &mut self.cse {
            cse.branching -= 1;
        }
        r
    }

    /// The index of an elementwise operand `x` read at `at` of a result `r`
    /// (broadcast by structure, as the reference evaluator does).
    fn project(&self, r: &TensorType, x: &TensorType, at: &At) -> At {
        if x.dims == r.dims {
            return at.clone();
        }
        let rows = |t: &TensorType| -> (usize, usize) {
            match t.dims.first() {
                Some(Dim::Batch) => (
                    1,
                    t.dims[1..]
                        .iter()
                        .take_while(|d| **d == Dim::MaxLen)
                        .count(),
                ),
                Some(Dim::Ragged(_)) => (0, t.ragged_rank()),
                _ => (0, 0),
            }
        };
        let (r_lead, r_rows) = rows(r);
        let (x_lead, x_rows) = rows(x);
        let x_inner = x.dims.len() - x_lead - x_rows;
        let mut idx = Vec::with_capacity(x.dims.len());
        if x_lead == 1 {
            idx.push(at.b);
        }
        idx.extend((0..x_rows).map(|k| at.idx[r_lead + k]));
        idx.extend((0..x_inner).map(|k| at.idx[r_lead + r_rows + k]));
        At { b: at.b, idx }
    }

    fn operand(&mut self, h: Handle<Node>, arg: Handle<Node>, at: &At) -> Result<Val> {
        let r = tensor_type(self.graph, h)?;
        let x = tensor_type(self.graph, arg)?;
        let at = self.project(r, x, at);
        self.value(arg, &at)
    }

    /// Computes the value of node `h` at `at` from its definition.
    fn define(&mut self, h: Handle<Node>, at: &At) -> Result<Val> {
        let graph = self.graph;
        let ty = tensor_type(graph, h)?;
        let int = is_int(ty.dtype);
        match graph.node(h) {
            Node::Attr { name, dtype } => {
                let r = self.attr(name);
                Ok(self.round(Val::F(r), *dtype))
            }
            Node::Const { value, dtype } => Ok(if is_int(*dtype) {
                Val::I(
                    self.b
                        .mov(Type::S64, Operand::Int(dtype.round(*value) as i64)),
                )
            } else {
                Val::F(self.b.const_f32(dtype.round(*value) as f32))
            }),
            Node::Offsets { seqs, .. } => Ok(Val::I(self.seq_start(*seqs, at.idx[0])?)),
            Node::Unary { op, arg } => {
                let x = self.operand(h, *arg, at)?;
                let x = self.f32(x);
                Ok(Val::F(emit_unary(&mut self.b, *op, x)))
            }
            Node::Cast { arg, dtype } => {
                let x = self.operand(h, *arg, at)?;
                Ok(self.round(x, *dtype))
            }
            Node::Binary { op, lhs, rhs } => {
                let l = self.operand(h, *lhs, at)?;
                // `x * x` reads `x` once.
                let r = if rhs == lhs {
                    l
                } else {
                    self.operand(h, *rhs, at)?
                };
                let int_op = match op {
                    BinaryOp::Add => Some(BinOp::Add),
                    BinaryOp::Sub => Some(BinOp::Sub),
                    BinaryOp::Mul => Some(BinOp::Mul),
                    BinaryOp::Div => Some(BinOp::Div),
                    BinaryOp::Max => Some(BinOp::Max),
                    BinaryOp::Min => Some(BinOp::Min),
                    _ => None,
                };
                if let (true, Some(int_op)) = (int, int_op) {
                    let (l, r) = (self.i64(l), self.i64(r));
                    let v = self.b.binary(int_op, Type::S64, l, r);
                    if int_op == BinOp::Div {
                        // PTX leaves `x / 0` undefined; the IR says 0.
                        let zero = self.b.setp(Cmp::Eq, Type::S64, r, Operand::Int(0));
                        return Ok(Val::I(self.b.selp(Type::S64, Operand::Int(0), v, zero)));
                    }
                    return Ok(Val::I(v));
                }
                // Float math (pow of integers included); `emit_binary`'s
                // max and min propagate NaN, as the reference does.
                let (l, r) = (self.f32(l), self.f32(r));
                let v = Val::F(emit_binary(&mut self.b, *op, l, r));
                Ok(if int { Val::I(self.i64(v)) } else { v })
            }
            Node::Select {
                cond,
                on_true,
                on_false,
            } => {
                let c = self.operand(h, *cond, at)?;
                let z = self.is_zero(c);
                let t = self.operand(h, *on_true, at)?;
                let f = self.operand(h, *on_false, at)?;
                Ok(if int {
                    let (t, f) = (self.i64(t), self.i64(f));
                    Val::I(self.b.selp(Type::S64, f, t, z))
                } else {
                    let (t, f) = (self.f32(t), self.f32(f));
                    Val::F(self.b.selp(Type::F32, f, t, z))
                })
            }
            Node::Mask { pred, .. } => {
                let p = match pred {
                    IndexPredicate::KeyNotAfterQuery => {
                        self.b.setp(Cmp::Le, Type::U64, at.idx[1], at.idx[0])
                    }
                    IndexPredicate::KeyNotBeforeQuery => {
                        self.b.setp(Cmp::Ge, Type::U64, at.idx[1], at.idx[0])
                    }
                    IndexPredicate::RowInSequence(s) => {
                        let len = self.seq_len(*s, at.b)?;
                        self.b.setp(Cmp::Lt, Type::U64, at.idx[1], len)
                    }
                };
                Ok(Val::I(self.b.selp(
                    Type::S64,
                    Operand::Int(1),
                    Operand::Int(0),
                    p,
                )))
            }
            Node::Compare { op, lhs, rhs } => {
                let x = tensor_type(graph, *lhs)?;
                let l = self.operand(h, *lhs, at)?;
                let r = self.operand(h, *rhs, at)?;
                let (ty, l, r) = if is_int(x.dtype) {
                    (Type::S64, self.i64(l), self.i64(r))
                } else {
                    (Type::F32, self.f32(l), self.f32(r))
                };
                // `ne` is `!eq`, so that a NaN operand makes it true (IEEE).
                let (cmp, negate) = match op {
                    CompareOp::Lt => (Cmp::Lt, false),
                    CompareOp::Le => (Cmp::Le, false),
                    CompareOp::Gt => (Cmp::Gt, false),
                    CompareOp::Ge => (Cmp::Ge, false),
                    CompareOp::Eq => (Cmp::Eq, false),
                    CompareOp::Ne => (Cmp::Eq, true),
                };
                let p = self.b.setp(cmp, ty, l, r);
                let (yes, no) = if negate { (0, 1) } else { (1, 0) };
                Ok(Val::I(self.b.selp(
                    Type::S64,
                    Operand::Int(yes),
                    Operand::Int(no),
                    p,
                )))
            }
            Node::Position { axis, .. } => {
                // Rounded to the dtype, as the reference does (bf16 counts
                // exactly only to 256).
                let i = self.b.mov(Type::S64, at.idx[*axis]);
                Ok(self.round(Val::I(i), ty.dtype))
            }
            Node::Lengths { seqs, .. } => Ok(Val::I(self.seq_len(*seqs, at.idx[0])?)),
            Node::Gather { table, index } => {
                let k = tensor_type(graph, *index)?.dims.len();
                self.pick(*table, 0, *index, (0, k), at, int)
            }
            Node::Reduce { op, arg, axis } => self.reduce(h, *op, *arg, *axis, at),
            Node::Rank { order, arg, axis } => self.rank(*order, *arg, *axis, at),
            Node::Take { arg, index, axis } => {
                let (x, it) = (tensor_type(graph, *arg)?, tensor_type(graph, *index)?);
                let skip = x.take_index_skip(it, *axis).unwrap_or(0);
                self.pick(*arg, *axis, *index, (skip, skip + it.dims.len()), at, int)
            }
            Node::Reshape { arg, inner } => {
                // The element's linear place among the static inner dims,
                // then its digits in the operand's.
                let x = tensor_type(graph, *arg)?;
                let rows = x.row_dims();
                let mut lin = self.b.mov(Type::U64, Operand::Int(0));
                for (k, &d) in inner.iter().enumerate() {
                    lin = self.b.ternary(
                        TernOp::MadLo,
                        Type::U64,
                        lin,
                        Operand::Int(d as i64),
                        at.idx[rows + k],
                    );
                }
                let extents: Vec<Operand> = x.dims[rows..]
                    .iter()
                    .map(|d| match d {
                        Dim::Static(n) => Operand::Int(*n as i64),
                        _ => Operand::Int(1),
                    })
                    .collect();
                let mut idx = at.idx[..rows].to_vec();
                idx.extend(self.digits(lin, &extents));
                self.value(*arg, &At { b: at.b, idx })
            }
            Node::TopK {
                order,
                part,
                arg,
                axis,
                ..
            } => self.top_k((*order, *part), *arg, *axis, at),
            Node::Shift { arg, axis, by } => {
                let x = tensor_type(graph, *arg)?;
                let n = self.extent(x.dims[*axis], at.b)?;
                let from = self
                    .b
                    .binary(BinOp::Add, Type::S64, at.idx[*axis], Operand::Int(*by));
                // Unsigned: a row before the line's start is past its end.
                let inside = self.b.setp(Cmp::Lt, Type::U64, from, n);
                let mut idx = at.idx.clone();
                idx[*axis] = from;
                self.guarded(*arg, &At { b: at.b, idx }, inside, int)
            }
            Node::Softmax { arg, axis } => {
                let x = tensor_type(graph, *arg)?.clone();
                let stats = reduced_type(&x, *axis);
                let hoisted = self.hoisted_stats(h, *axis, at);
                let (m, s) = match (hoisted, self.part.softmax_stats.get(&h).copied()) {
                    (Some(stats), _) => stats,
                    (None, Some((max, sum))) => {
                        let mut sat = at.idx.clone();
                        sat.remove(*axis);
                        if stats.dims.len() == x.dims.len() {
                            sat.insert(0, at.b);
                        }
                        let sat = At { b: at.b, idx: sat };
                        let lin = self.linear(&stats, &sat)?;
                        let m = self.load(max, lin);
                        let s = self.load(sum, lin);
                        (self.f32(m), self.f32(s))
                    }
                    (None, None) => self.softmax_stats(*arg, &x, *axis, at)?,
                };
                let v = self.value(*arg, at)?;
                let v = self.f32(v);
                let d = self.b.binary(BinOp::Sub, Type::F32, v, m);
                let e = exp_f32(&mut self.b, d);
                let p = self.b.binary(BinOp::Div, Type::F32, e, s);
                let empty = self
                    .b
                    .setp(Cmp::Eq, Type::F32, m, Operand::F32(f32::NEG_INFINITY));
                Ok(Val::F(self.b.selp(Type::F32, Operand::F32(0.0), p, empty)))
            }
            Node::Contract {
                lhs,
                lhs_axes,
                rhs,
                rhs_axes,
                out_axes,
                precision,
                ..
            } => self.contract(
                h,
                [(*lhs, lhs_axes.as_str()), (*rhs, rhs_axes.as_str())],
                (out_axes, *precision),
                at,
            ),
            Node::ToPadded { arg } => {
                let x = tensor_type(graph, *arg)?;
                let s = x
                    .seqs()
                    .ok_or_else(|| unsupported(graph, h, "to_padded of a dense value"))?;
                let len = self.seq_len(s, at.b)?;
                let inside = self.b.setp(Cmp::Lt, Type::U64, at.idx[1], len);
                let mut idx = vec![at.idx[1]];
                idx.extend_from_slice(&at.idx[2..]);
                let inner = At { b: at.b, idx };
                self.guarded(*arg, &inner, inside, is_int(x.dtype))
            }
            Node::FromPadded { arg, .. } => {
                let x = tensor_type(graph, *arg)?;
                let n = self.size(SizeExpr::MaxLen);
                let inside = self.b.setp(Cmp::Lt, Type::U64, at.idx[0], n);
                let mut idx = vec![at.b];
                idx.extend_from_slice(&at.idx);
                let outer = At { b: at.b, idx };
                self.guarded(*arg, &outer, inside, is_int(x.dtype))
            }
            Node::Input { .. }
            | Node::Scan { .. }
            | Node::Compact { .. }
            | Node::PackTriu { .. }
            | Node::Seqs { .. }
            | Node::SeqsTriu { .. }
            | Node::SeqsWhere { .. } => Err(unsupported(
                graph,
                h,
                "read before the kernel that stores it (a partitioning bug)",
            )),
        }
    }

    /// `pred ? value(h, at) : 0`, reading `h` only where `pred` holds.
    fn guarded(&mut self, h: Handle<Node>, at: &At, pred: Reg, int: bool) -> Result<Val> {
        let (ty, zero) = if int {
            (Type::S64, Operand::Int(0))
        } else {
            (Type::F32, Operand::F32(0.0))
        };
        let dst = self.b.mov(ty, zero);
        let skip: Label = self.b.label();
        self.b.bra_if(pred, true, skip);
        // Only some lanes run the read.
        let converged = self.converged.take();
        let v = self.value(h, at);
        self.converged = converged;
        let v = v?;
        let v = match v {
            Val::F(r) if int => self.b.cvt(Type::S64, Type::F32, r),
            Val::I(r) if !int => self.b.cvt(Type::F32, Type::S64, r),
            Val::F(r) | Val::I(r) => r,
        };
        self.b.mov_to(ty, dst, v);
        self.b.place(skip);
        Ok(if int { Val::I(dst) } else { Val::F(dst) })
    }

    /// The index of `x` (with the reduced axis at 0) for an element `at` of
    /// its reduced type `stats`.
    fn line_of(&mut self, x: &TensorType, stats: &TensorType, axis: usize, at: &At) -> At {
        let skip = usize::from(stats.dims.len() == x.dims.len());
        let mut idx = at.idx[skip..].to_vec();
        let zero = self.b.mov(Type::U64, Operand::Int(0));
        idx.insert(axis, zero);
        At { b: at.b, idx }
    }

    /// Runs `body` for `t` in `0..extent` with `at.idx[axis] = t`.
    fn over_axis(
        &mut self,
        extent: Operand,
        at: &At,
        axis: usize,
        mut body: impl FnMut(&mut Self, &At) -> Result<()>,
    ) -> Result<()> {
        // A root reduction of a cooperative loop splits over the lanes;
        // the reductions nested in its body do not.
        let split = self.lanes.take();
        let (start, step) = match split {
            Some(lane) => (Operand::Reg(lane), Operand::Int(32)),
            None => (Operand::Int(0), Operand::Int(1)),
        };
        let range = self.b.begin_range(Type::U64, start, extent, step);
        let mut line = at.clone();
        line.idx[axis] = range.counter;
        body(self, &line)?;
        self.b.end_range(range);
        self.lanes = split;
        Ok(())
    }

    /// Combines a lane-split partial result across the warp (butterfly
    /// shuffles; every lane gets the result); the identity outside a
    /// cooperative loop.
    fn combine(&mut self, partial: Reg, max: bool) -> Reg {
        if self.lanes.is_none() {
            return partial;
        }
        let mut acc = partial;
        for offset in [16, 8, 4, 2, 1] {
            let other = self.b.shfl(ShflMode::Bfly, acc, Operand::Int(offset), 31);
            acc = if max {
                max_nan(&mut self.b, acc, other)
            } else {
                self.b.binary(BinOp::Add, Type::F32, acc, other)
            };
        }
        acc
    }

    /// `(max, sum of exp(x - max))` along `axis` of the line through `at`.
    fn softmax_stats(
        &mut self,
        arg: Handle<Node>,
        x: &TensorType,
        axis: usize,
        at: &At,
    ) -> Result<(Reg, Reg)> {
        let n = self.extent(x.dims[axis], at.b)?;
        let m = self.b.const_f32(f32::NEG_INFINITY);
        self.over_axis(n, at, axis, |em, line| {
            let v = em.value(arg, line)?;
            let v = em.f32(v);
            let next = max_nan(&mut em.b, m, v);
            em.b.mov_to(Type::F32, m, next);
            Ok(())
        })?;
        let m = self.combine(m, true);
        let s = self.b.const_f32(0.0);
        self.over_axis(n, at, axis, |em, line| {
            let v = em.value(arg, line)?;
            let v = em.f32(v);
            let d = em.b.binary(BinOp::Sub, Type::F32, v, m);
            let e = exp_f32(&mut em.b, d);
            em.b.binary_to(BinOp::Add, Type::F32, s, s, e);
            Ok(())
        })?;
        let s = self.combine(s, false);
        Ok((m, s))
    }

    fn reduce(
        &mut self,
        h: Handle<Node>,
        op: ReduceOp,
        arg: Handle<Node>,
        axis: usize,
        at: &At,
    ) -> Result<Val> {
        let x = tensor_type(self.graph, arg)?.clone();
        let r = tensor_type(self.graph, h)?.clone();
        let line = self.line_of(&x, &r, axis, at);
        let n = self.extent(x.dims[axis], at.b)?;
        let int = is_int(x.dtype) && matches!(op, ReduceOp::Sum | ReduceOp::Max);
        match op {
            ReduceOp::Sum if int => {
                let acc = self.b.mov(Type::S64, Operand::Int(0));
                self.over_axis(n, &line, axis, |em, l| {
                    let v = em.value(arg, l)?;
                    let v = em.i64(v);
                    em.b.binary_to(BinOp::Add, Type::S64, acc, acc, v);
                    Ok(())
                })?;
                Ok(Val::I(acc))
            }
            ReduceOp::Sum | ReduceOp::Mean => {
                let acc = self.b.const_f32(0.0);
                self.over_axis(n, &line, axis, |em, l| {
                    let v = em.value(arg, l)?;
                    let v = em.f32(v);
                    em.b.binary_to(BinOp::Add, Type::F32, acc, acc, v);
                    Ok(())
                })?;
                let acc = self.combine(acc, false);
                if op == ReduceOp::Mean {
                    let count = self.b.mov(Type::U64, n);
                    let count = self.b.binary(BinOp::Max, Type::U64, count, Operand::Int(1));
                    let count = self.b.cvt(Type::F32, Type::U64, count);
                    return Ok(Val::F(self.b.binary(BinOp::Div, Type::F32, acc, count)));
                }
                Ok(Val::F(acc))
            }
            ReduceOp::Max if int => {
                let acc = self.b.mov(Type::S64, Operand::Int(i64::MIN));
                self.over_axis(n, &line, axis, |em, l| {
                    let v = em.value(arg, l)?;
                    let v = em.i64(v);
                    em.b.binary_to(BinOp::Max, Type::S64, acc, acc, v);
                    Ok(())
                })?;
                let empty = self.b.setp(Cmp::Eq, Type::U64, n, Operand::Int(0));
                Ok(Val::I(self.b.selp(Type::S64, Operand::Int(0), acc, empty)))
            }
            ReduceOp::Max => {
                let acc = self.b.const_f32(f32::NEG_INFINITY);
                self.over_axis(n, &line, axis, |em, l| {
                    let v = em.value(arg, l)?;
                    let v = em.f32(v);
                    let next = max_nan(&mut em.b, acc, v);
                    em.b.mov_to(Type::F32, acc, next);
                    Ok(())
                })?;
                let acc = self.combine(acc, true);
                let empty = self.b.setp(Cmp::Eq, Type::U64, n, Operand::Int(0));
                Ok(Val::F(self.b.selp(
                    Type::F32,
                    Operand::F32(0.0),
                    acc,
                    empty,
                )))
            }
            ReduceOp::ArgMin | ReduceOp::ArgMax => {
                self.arg_reduce(op == ReduceOp::ArgMax, arg, &x, axis, n, &line)
            }
            ReduceOp::LogSumExp => {
                let (m, s) = self.softmax_stats(arg, &x, axis, &line)?;
                let l2 = self.b.unary(crate::kernel::UnOp::Lg2Approx, Type::F32, s);
                let lse = self.b.ternary(
                    TernOp::Fma,
                    Type::F32,
                    l2,
                    Operand::F32(std::f32::consts::LN_2),
                    m,
                );
                let empty = self
                    .b
                    .setp(Cmp::Eq, Type::F32, m, Operand::F32(f32::NEG_INFINITY));
                Ok(Val::F(self.b.selp(
                    Type::F32,
                    Operand::F32(0.0),
                    lse,
                    empty,
                )))
            }
        }
    }

    /// An argmin (`max`: argmax) along `axis` of the line through `line`:
    /// the first NaN's index if any, else the lowest index of the extreme,
    /// -1 for an empty line. In a cooperative loop each lane keeps its own
    /// candidate (indices as u32, `u32::MAX` for none) and shuffles combine
    /// them, lower index first on ties.
    fn arg_reduce(
        &mut self,
        max: bool,
        arg: Handle<Node>,
        x: &TensorType,
        axis: usize,
        n: Operand,
        line: &At,
    ) -> Result<Val> {
        let int = is_int(x.dtype);
        let (ty, start) = match (int, max) {
            (true, true) => (Type::S64, Operand::Int(i64::MIN)),
            (true, false) => (Type::S64, Operand::Int(i64::MAX)),
            (false, true) => (Type::F32, Operand::F32(f32::NEG_INFINITY)),
            (false, false) => (Type::F32, Operand::F32(f32::INFINITY)),
        };
        let none = Operand::Int(i64::from(u32::MAX));
        let best = self.b.mov(ty, start);
        let idx = self.b.mov(Type::U32, none);
        let nan = self.b.mov(Type::U32, none);
        let cmp = if max { Cmp::Gt } else { Cmp::Lt };
        self.over_axis(n, line, axis, |em, l| {
            let t = em.b.cvt(Type::U32, Type::U64, l.idx[axis]);
            let v = em.value(arg, l)?;
            let v = if int { em.i64(v) } else { em.f32(v) };
            let better = em.b.setp(cmp, ty, v, best);
            let first = em.b.setp(Cmp::Eq, Type::U32, idx, none);
            let take = em.b.binary(BinOp::Or, Type::Pred, better, first);
            em.b.selp_to(ty, best, v, best, take);
            em.b.selp_to(Type::U32, idx, t, idx, take);
            if !int {
                // `x == x` fails only for NaN (PTX's `ne` is ordered, false
                // for NaN too); the first NaN seen is kept.
                let number = em.b.setp(Cmp::Eq, Type::F32, v, v);
                let set = em.b.setp(Cmp::Ne, Type::U32, nan, none);
                let skip = em.b.binary(BinOp::Or, Type::Pred, number, set);
                em.b.selp_to(Type::U32, nan, nan, t, skip);
            }
            Ok(())
        })?;
        if self.lanes.is_some() {
            for offset in [16, 8, 4, 2, 1] {
                let other_best = self.shfl_any(ty, best, offset);
                let other_idx = self.b.shfl(ShflMode::Bfly, idx, Operand::Int(offset), 31);
                let other_nan = self.b.shfl(ShflMode::Bfly, nan, Operand::Int(offset), 31);
                // Take the other lane's candidate if it has one and ours
                // does not, or it is better, or equal at a lower index.
                let has = self.b.setp(Cmp::Ne, Type::U32, other_idx, none);
                let mine_none = self.b.setp(Cmp::Eq, Type::U32, idx, none);
                let better = self.b.setp(cmp, ty, other_best, best);
                let equal = self.b.setp(Cmp::Eq, ty, other_best, best);
                let lower = self.b.setp(Cmp::Lt, Type::U32, other_idx, idx);
                let tie = self.b.binary(BinOp::And, Type::Pred, equal, lower);
                let wins = self.b.binary(BinOp::Or, Type::Pred, better, tie);
                let wins = self.b.binary(BinOp::Or, Type::Pred, wins, mine_none);
                let take = self.b.binary(BinOp::And, Type::Pred, has, wins);
                self.b.selp_to(ty, best, other_best, best, take);
                self.b.selp_to(Type::U32, idx, other_idx, idx, take);
                self.b.binary_to(BinOp::Min, Type::U32, nan, nan, other_nan);
            }
        }
        // NaN first, then the extreme, else -1.
        let has_nan = self.b.setp(Cmp::Ne, Type::U32, nan, none);
        let pick = self.b.selp(Type::U32, nan, idx, has_nan);
        let found = self.b.setp(Cmp::Ne, Type::U32, pick, none);
        let wide = self.b.cvt(Type::S64, Type::U32, pick);
        Ok(Val::I(self.b.selp(
            Type::S64,
            wide,
            Operand::Int(-1),
            found,
        )))
    }

    /// `source` at `at` with its index along `axis` replaced by the integer
    /// `index` read at `at.idx[from..to]` (which those dims of the result
    /// hold): a gather (`axis` 0) or a take. 0 where the picked index falls
    /// outside the axis.
    fn pick(
        &mut self,
        source: Handle<Node>,
        axis: usize,
        index: Handle<Node>,
        (from, to): (usize, usize),
        at: &At,
        int: bool,
    ) -> Result<Val> {
        let n = match tensor_type(self.graph, source)?.dims[axis] {
            Dim::Static(n) => n as i64,
            _ => 0,
        };
        let row = self.value(
            index,
            &At {
                b: at.b,
                idx: at.idx[from..to].to_vec(),
            },
        )?;
        let row = self.i64(row);
        // Unsigned: a negative index is past the end too (0 there).
        let inside = self.b.setp(Cmp::Lt, Type::U64, row, Operand::Int(n));
        let mut idx = at.idx[..axis].to_vec();
        idx.push(row);
        idx.extend_from_slice(&at.idx[to..]);
        self.guarded(source, &At { b: at.b, idx }, inside, int)
    }

    /// Lets ptxas give the kernel at least 64 registers a thread: a line
    /// op's nested loop (its element, the best so far, their indices and
    /// NaN flags, in 64 bits) does not fit the 32 that ptxas aims at for
    /// full occupancy when nothing says otherwise, and spilled there (a lone
    /// `rank descending` over f32: 12 bytes on sm_90a, ptxas 12.9).
    fn room_for_a_line_loop(&mut self) {
        let threads = self.b.block_threads();
        let ctas = (1024 / threads).max(1);
        if self.b.min_ctas_per_sm().is_none_or(|c| c > ctas) {
            self.b.set_min_ctas_per_sm(ctas);
        }
    }

    /// The rank of the element `at` along `axis` ([`Node::Rank`]): a count
    /// over its line of the elements that sort before it.
    fn rank(&mut self, order: RankOrder, arg: Handle<Node>, axis: usize, at: &At) -> Result<Val> {
        self.room_for_a_line_loop();
        let x = tensor_type(self.graph, arg)?.clone();
        let sort = SortOrder::new(order, x.dtype);
        let v = self.sort_value(sort, arg, at)?;
        let here = self.sort_key(sort, v, at.idx[axis]);
        let n = self.extent(x.dims[axis], at.b)?;
        let count = self.b.mov(Type::S64, Operand::Int(0));
        if let (Some(lane), [_]) = (self.converged, &x.dims[..]) {
            // The whole warp on rows of one line: lane l reads element
            // c + l of each group of 32, the others take it by a shuffle.
            let chunks = self
                .b
                .begin_range(Type::U64, Operand::Int(0), n, Operand::Int(32));
            let c = chunks.counter;
            let k = self.b.binary(BinOp::Add, Type::U64, c, lane);
            let inside = self.b.setp(Cmp::Lt, Type::U64, k, n);
            let mut line = at.clone();
            line.idx[axis] = k;
            let mine = self.guarded(arg, &line, inside, !sort.nan)?;
            let (Val::F(mine) | Val::I(mine)) = mine;
            let rest = self.b.binary(BinOp::Sub, Type::U64, n, c);
            let m = self.b.binary(BinOp::Min, Type::U64, rest, Operand::Int(32));
            let each = self
                .b
                .begin_range(Type::U64, Operand::Int(0), m, Operand::Int(1));
            let j = self.b.cvt(Type::U32, Type::U64, each.counter);
            let w = if sort.nan {
                self.b.shfl(ShflMode::Idx, mine, j, 31)
            } else {
                self.shfl_s64(ShflMode::Idx, mine, j, 31)
            };
            let i = self.b.binary(BinOp::Add, Type::U64, c, each.counter);
            let other = self.sort_key(sort, w, i);
            let before = self.sorts_before(sort, other, here);
            let one = self
                .b
                .selp(Type::S64, Operand::Int(1), Operand::Int(0), before);
            self.b.binary_to(BinOp::Add, Type::S64, count, count, one);
            self.b.end_range(each);
            self.b.end_range(chunks);
            return Ok(Val::I(count));
        }
        let saved = self.lanes.take();
        self.over_axis(n, at, axis, |em, line| {
            let w = em.sort_value(sort, arg, line)?;
            let other = em.sort_key(sort, w, line.idx[axis]);
            let before = em.sorts_before(sort, other, here);
            let one =
                em.b.selp(Type::S64, Operand::Int(1), Operand::Int(0), before);
            em.b.binary_to(BinOp::Add, Type::S64, count, count, one);
            Ok(())
        })?;
        self.lanes = saved;
        Ok(Val::I(count))
    }

    /// Slot `at.idx[axis]` of a [`Node::TopK`]: the element of that rank,
    /// found by `slot + 1` passes over the line, each taking the first
    /// element that sorts after the previous pass's choice (`O(k n)` per
    /// line for small `k`, no per-thread buffer).
    fn top_k(
        &mut self,
        (order, part): (RankOrder, TopKPart),
        arg: Handle<Node>,
        axis: usize,
        at: &At,
    ) -> Result<Val> {
        self.room_for_a_line_loop();
        let x = tensor_type(self.graph, arg)?.clone();
        let sort = SortOrder::new(order, x.dtype);
        let n = self.extent(x.dims[axis], at.b)?;
        let none = Operand::Int(-1);
        let key = |em: &mut Self| SortKey {
            v: if sort.nan {
                em.b.const_f32(0.0)
            } else {
                em.b.mov(Type::S64, Operand::Int(0))
            },
            i: em.b.mov(Type::S64, none),
            nan: sort.nan.then(|| em.b.mov(Type::U32, Operand::Int(0))),
        };
        let prev = key(self);
        let saved = self.lanes.take();
        let passes_end = self
            .b
            .binary(BinOp::Add, Type::U64, at.idx[axis], Operand::Int(1));
        let passes = self
            .b
            .begin_range(Type::U64, Operand::Int(0), passes_end, Operand::Int(1));
        let best = key(self);
        self.over_axis(n, at, axis, |em, line| {
            let w = em.sort_value(sort, arg, line)?;
            let cand = em.sort_key(sort, w, line.idx[axis]);
            // Not taken by an earlier pass: after `prev` (or no pass yet).
            let after_prev = em.sorts_before(sort, prev, cand);
            let first_pass = em.b.setp(Cmp::Eq, Type::S64, prev.i, none);
            let fresh = em.b.binary(BinOp::Or, Type::Pred, after_prev, first_pass);
            let beats = em.sorts_before(sort, cand, best);
            let no_best = em.b.setp(Cmp::Eq, Type::S64, best.i, none);
            let better = em.b.binary(BinOp::Or, Type::Pred, beats, no_best);
            let take = em.b.binary(BinOp::And, Type::Pred, fresh, better);
            em.take_key(sort, best, cand, take);
            Ok(())
        })?;
        self.b.mov_to(sort.ty, prev.v, best.v);
        self.b.mov_to(Type::S64, prev.i, best.i);
        if let (Some(p), Some(b)) = (prev.nan, best.nan) {
            self.b.mov_to(Type::U32, p, b);
        }
        self.b.end_range(passes);
        self.lanes = saved;
        Ok(match (part, sort.nan) {
            (TopKPart::Indices, _) => Val::I(prev.i),
            (TopKPart::Values, true) => Val::F(prev.v),
            (TopKPart::Values, false) => Val::I(prev.v),
        })
    }

    /// The value of `arg` at `at` as the sort compares it (f32 or s64).
    fn sort_value(&mut self, sort: SortOrder, arg: Handle<Node>, at: &At) -> Result<Reg> {
        let v = self.value(arg, at)?;
        Ok(if sort.nan { self.f32(v) } else { self.i64(v) })
    }

    /// The key of the element `v` at index `i` (its NaN flag computed:
    /// `v == v` fails only for NaN).
    fn sort_key(&mut self, sort: SortOrder, v: Reg, i: Reg) -> SortKey {
        let nan = sort.nan.then(|| {
            let number = self.b.setp(Cmp::Eq, sort.ty, v, v);
            self.b
                .selp(Type::U32, Operand::Int(0), Operand::Int(1), number)
        });
        SortKey { v, i, nan }
    }

    /// `dst = take ? src : dst`, field by field.
    fn take_key(&mut self, sort: SortOrder, dst: SortKey, src: SortKey, take: Reg) {
        self.b.selp_to(sort.ty, dst.v, src.v, dst.v, take);
        self.b.selp_to(Type::S64, dst.i, src.i, dst.i, take);
        if let (Some(d), Some(s)) = (dst.nan, src.nan) {
            self.b.selp_to(Type::U32, d, s, d, take);
        }
    }

    /// A predicate: `a` sorts before `b` (a NaN before a number, NaNs
    /// tied, then by value in the order, ties by index).
    fn sorts_before(&mut self, sort: SortOrder, a: SortKey, b: SortKey) -> Reg {
        let better = self.b.setp(sort.cmp, sort.ty, a.v, b.v);
        let equal = self.b.setp(Cmp::Eq, sort.ty, a.v, b.v);
        let (better, equal) = match (a.nan, b.nan) {
            (Some(an), Some(bn)) => {
                // With the flags as 0/1: `an > bn` and `an & bn`.
                let nan_first = self.b.setp(Cmp::Gt, Type::U32, an, bn);
                let both = self.b.binary(BinOp::And, Type::U32, an, bn);
                let both = self.b.setp(Cmp::Ne, Type::U32, both, Operand::Int(0));
                (
                    self.b.binary(BinOp::Or, Type::Pred, better, nan_first),
                    self.b.binary(BinOp::Or, Type::Pred, equal, both),
                )
            }
            _ => (better, equal),
        };
        let earlier = self.b.setp(Cmp::Lt, Type::S64, a.i, b.i);
        let tie = self.b.binary(BinOp::And, Type::Pred, equal, earlier);
        self.b.binary(BinOp::Or, Type::Pred, better, tie)
    }

    /// `shfl.bfly` of an f32 or s64 register (an s64 in two halves).
    fn shfl_any(&mut self, ty: Type, v: Reg, offset: i64) -> Reg {
        if ty == Type::F32 {
            return self.b.shfl(ShflMode::Bfly, v, Operand::Int(offset), 31);
        }
        self.shfl_s64(ShflMode::Bfly, v, Operand::Int(offset), 31)
    }

    /// `shfl.mode` of an s64 register, in two 32-bit halves.
    fn shfl_s64(&mut self, mode: ShflMode, v: Reg, lane: impl Into<Operand>, clamp: u32) -> Reg {
        let lane = lane.into();
        let lo = self.b.cvt(Type::U32, Type::U64, v);
        let hi = self.b.binary(BinOp::Shr, Type::U64, v, Operand::Int(32));
        let hi = self.b.cvt(Type::U32, Type::U64, hi);
        let lo = self.b.shfl(mode, lo, lane, clamp);
        let hi = self.b.shfl(mode, hi, lane, clamp);
        let lo = self.b.cvt(Type::U64, Type::U32, lo);
        let hi = self.b.cvt(Type::U64, Type::U32, hi);
        let hi = self.b.binary(BinOp::Shl, Type::U64, hi, Operand::Int(32));
        self.b.binary(BinOp::Or, Type::S64, hi, lo)
    }

    /// A contraction at `at`: nested loops over the summed letters (the
    /// operands rounded to tf32 first for [`Precision::Tf32`]).
    fn contract(
        &mut self,
        h: Handle<Node>,
        operands: [(Handle<Node>, &str); 2],
        (out_axes, precision): (&str, Precision),
        at: &At,
    ) -> Result<Val> {
        let graph = self.graph;
        let r = tensor_type(graph, h)?;
        let mut letters: Vec<char> = out_axes.chars().collect();
        let n_out = letters.len();
        let mut dims_of: Vec<Dim> = vec![Dim::Static(1); n_out];
        for (arg, axes) in operands {
            let x = tensor_type(graph, arg)?;
            let named = if x.dims.first() == Some(&Dim::Batch) {
                &x.dims[1..]
            } else {
                &x.dims[..]
            };
            for (c, &d) in axes.chars().zip(named) {
                match letters.iter().position(|&l| l == c) {
                    Some(k) => dims_of[k] = d,
                    None => {
                        letters.push(c);
                        dims_of.push(d);
                    }
                }
            }
        }
        let lead = usize::from(r.dims.first() == Some(&Dim::Batch));
        let mut vals: Vec<Reg> = at.idx[lead..lead + n_out].to_vec();
        let acc = self.b.const_f32(0.0);
        let mut loops = Vec::new();
        for &d in &dims_of[n_out..] {
            let e = self.extent(d, at.b)?;
            let range = self
                .b
                .begin_range(Type::U64, Operand::Int(0), e, Operand::Int(1));
            vals.push(range.counter);
            loops.push(range);
        }
        let mut prod: Option<Reg> = None;
        for (arg, axes) in operands {
            let x = tensor_type(graph, arg)?;
            let mut idx = Vec::new();
            if x.dims.first() == Some(&Dim::Batch) {
                idx.push(at.b);
            }
            for c in axes.chars() {
                let k = letters.iter().position(|&l| l == c).unwrap_or(0);
                idx.push(vals[k]);
            }
            let v = self.value(arg, &At { b: at.b, idx })?;
            let mut v = self.f32(v);
            if precision == Precision::Tf32 {
                let t = self.b.cvt(Type::Tf32, Type::F32, v);
                v = self.b.bitcast(RegClass::F32, Type::B32, t);
            }
            prod = Some(match prod {
                None => v,
                Some(p) => self.b.binary(BinOp::Mul, Type::F32, p, v),
            });
        }
        if let Some(p) = prod {
            self.b.binary_to(BinOp::Add, Type::F32, acc, acc, p);
        }
        for range in loops.into_iter().rev() {
            self.b.end_range(range);
        }
        Ok(Val::F(acc))
    }

    // ---- whole-line steps -------------------------------------------------

    /// A scan: one thread per line along the axis.
    fn scan(&mut self, h: Handle<Node>, into: Stored) -> Result<()> {
        let graph = self.graph;
        let Node::Scan { mode, arg, axis } = graph.node(h) else {
            return Err(unsupported(graph, h, "not a scan"));
        };
        let (mode, arg, axis) = (*mode, *arg, *axis);
        let x = tensor_type(graph, arg)?.clone();
        let r = tensor_type(graph, h)?.clone();
        if x.ragged_rank() != 0 {
            return Err(unsupported(graph, h, "a scan along a jagged value"));
        }
        let mut line_dims = x.dims.clone();
        line_dims.remove(axis);
        // One thread per line: the elements of `x` without the scanned axis.
        let items =
            elements(&TensorType::new(x.dtype, line_dims.clone())).unwrap_or(SizeExpr::Const(0));
        self.items = items.clone();
        let work = self.size(items);
        let (start, step) = self.b.global_thread_index();
        let range = self.b.begin_range(Type::U64, start, work, step);
        let zero = self.b.mov(Type::U64, Operand::Int(0));
        let mut extents = Vec::new();
        for &d in &line_dims {
            extents.push(self.extent(d, zero)?);
        }
        let mut idx = self.digits(range.counter, &extents);
        idx.insert(axis, zero);
        let n = self.extent(x.dims[axis], zero)?;
        let int = is_int(x.dtype);
        let acc = if int {
            self.b.mov(Type::S64, Operand::Int(0))
        } else {
            self.b.const_f32(0.0)
        };
        let wrap = |r: Reg| if int { Val::I(r) } else { Val::F(r) };
        let batch_at = |idx: &[Reg]| match x.dims.first() {
            Some(Dim::Batch) => idx[0],
            _ => zero,
        };
        let line = At {
            b: batch_at(&idx),
            idx,
        };
        let t_range = self
            .b
            .begin_range(Type::U64, Operand::Int(0), n, Operand::Int(1));
        let mut xi = line.idx.clone();
        xi[axis] = t_range.counter;
        let xat = At {
            b: batch_at(&xi),
            idx: xi.clone(),
        };
        let v = self.value(arg, &xat)?;
        let rat = At { b: xat.b, idx: xi };
        let lin = self.linear(&r, &rat)?;
        let add = |em: &mut Self, v: Val| {
            if int {
                let v = em.i64(v);
                em.b.binary_to(BinOp::Add, Type::S64, acc, acc, v);
            } else {
                let v = em.f32(v);
                em.b.binary_to(BinOp::Add, Type::F32, acc, acc, v);
            }
        };
        match mode {
            ScanMode::Inclusive => {
                add(self, v);
                self.store(into, lin, wrap(acc));
            }
            ScanMode::Exclusive | ScanMode::Complete => {
                self.store(into, lin, wrap(acc));
                add(self, v);
            }
        }
        self.b.end_range(t_range);
        if mode == ScanMode::Complete {
            let mut ri = line.idx.clone();
            ri[axis] = self.b.mov(Type::U64, n);
            let rat = At {
                b: batch_at(&ri),
                idx: ri,
            };
            let lin = self.linear(&r, &rat)?;
            self.store(into, lin, wrap(acc));
        }
        self.b.end_range(range);
        Ok(())
    }

    /// The mask of a `seqs_where` set and the set it selects from.
    fn kept_mask(&self, seqs: Handle<Node>) -> Result<(Handle<Node>, Handle<Node>)> {
        let graph = self.graph;
        let Node::SeqsWhere { mask } = graph.node(seqs) else {
            return Err(unsupported(graph, seqs, "not a seqs_where"));
        };
        let parent = tensor_type(graph, *mask)?
            .seqs()
            .ok_or_else(|| unsupported(graph, seqs, "a seqs_where of a dense mask"))?;
        Ok((*mask, parent))
    }

    /// `offsets[0] = 0` and the running sum of the counts, one warp scanning
    /// 32 counts a step with shuffles.
    fn prefix_kept(&mut self, seqs: Handle<Node>) -> Result<()> {
        let into = self.set_offsets(seqs)?;
        // One warp: 32 counts a step, scanned with shuffles, plus the
        // running total of the steps before.
        self.items = SizeExpr::Const(32);
        let (thread, _) = self.b.global_thread_index();
        let skip = self.b.label();
        let other = self.b.setp(Cmp::Ge, Type::U64, thread, Operand::Int(32));
        self.b.bra_if(other, false, skip);
        let lane32 = self.b.cvt(Type::U32, Type::U64, thread);
        let first = self.b.label();
        let not_first = self.b.setp(Cmp::Ne, Type::U64, thread, Operand::Int(0));
        self.b.bra_if(not_first, false, first);
        // The offsets outputs of the set get the same values.
        let outputs: Vec<Stored> = self
            .part
            .offsets_outputs
            .get(&seqs)
            .cloned()
            .unwrap_or_default();
        let zero = self.b.mov(Type::U64, Operand::Int(0));
        let nothing = self.b.mov(Type::S64, Operand::Int(0));
        for &into in std::iter::once(&into).chain(&outputs) {
            self.store_always(into, zero, Val::I(nothing));
        }
        self.b.place(first);
        let carry = self.b.mov(Type::S64, Operand::Int(0));
        let batch = self.size(SizeExpr::Batch);
        let steps = self
            .b
            .begin_range(Type::U64, Operand::Int(0), batch, Operand::Int(32));
        // Lane l holds count `steps + l` (at offsets position + 1).
        let i = self.b.binary(BinOp::Add, Type::U64, steps.counter, thread);
        let at = self.b.binary(BinOp::Add, Type::U64, i, Operand::Int(1));
        let inside = self.b.setp(Cmp::Lt, Type::U64, i, batch);
        let count = self.b.mov(Type::S64, Operand::Int(0));
        let absent = self.b.label();
        self.b.bra_if(inside, true, absent);
        let v = self.load(into, at);
        let v = self.i64(v);
        self.b.mov_to(Type::S64, count, v);
        self.b.place(absent);
        let mut incl = count;
        for offset in [1, 2, 4, 8, 16] {
            let below = self.shfl_s64(ShflMode::Up, incl, Operand::Int(offset), 0);
            let has = self
                .b
                .setp(Cmp::Ge, Type::U32, lane32, Operand::Int(offset));
            let add = self.b.selp(Type::S64, below, Operand::Int(0), has);
            incl = self.b.binary(BinOp::Add, Type::S64, incl, add);
        }
        let out = self.b.binary(BinOp::Add, Type::S64, incl, carry);
        let done = self.b.label();
        self.b.bra_if(inside, true, done);
        for &into in std::iter::once(&into).chain(&outputs) {
            self.store_always(into, at, Val::I(out));
        }
        self.b.place(done);
        let total = self.shfl_s64(ShflMode::Idx, incl, Operand::Int(31), 31);
        self.b.binary_to(BinOp::Add, Type::S64, carry, carry, total);
        self.b.end_range(steps);
        self.b.place(skip);
        Ok(())
    }
}
