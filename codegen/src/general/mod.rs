//! The general path: any validated graph to a chain of kernels.
//!
//! The templates of [`crate::templates`] are fast paths for the shapes they
//! match; this module compiles every other graph, so that what the validator
//! accepts always compiles. It works in two steps:
//!
//! 1. **Partition** ([`Partition::of`]): decide which values get a buffer.
//!    Graph inputs and outputs have theirs. Reductions and contractions whose
//!    result has at most one ragged dim, scans and compactions are
//!    *materialized* into scratch buffers by a kernel of their own; the
//!    statistics of a softmax (the max and the sum of exponentials along its
//!    axis) likewise. Everything else (elementwise trees, casts, masks,
//!    selects, padding and unpadding, and any value over `[%s, %s, ...]`
//!    pairs) is *fused*: recomputed inline wherever it is read, so no
//!    `L x L` intermediate ever reaches memory.
//! 2. **Lower** (the private `emit` module): each step becomes one kernel that loops
//!    grid-stride over the elements of its value and evaluates the fused
//!    expression tree at each (reductions and contractions as loops in
//!    registers, accumulating in f32 or s64).
//!
//! Scratch buffers hold f32 (floats) or s64 (integers) whatever the value's
//! dtype: like the reference evaluator, intermediates are not rounded.

mod emit;

use std::collections::HashMap;
use std::fmt;

use jagged_ir::{Dim, Graph, Handle, Node, ReduceOp, TensorType, Type};

use crate::error::CodegenError;
use crate::launch::{CompiledKernel, Launch, OutputBuffer, ParamBinding, ScratchBuffer, SizeExpr};
use crate::spec::{DType, Spec};
use crate::{kernel::KernelModule, ptx};

/// A buffer a kernel reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    /// Graph input `i` (in the graph's input order).
    Input(usize),
    /// Graph output `i`.
    Output(usize),
    /// Scratch buffer `i` of the plan.
    Scratch(usize),
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Buffer::Input(i) => write!(f, "input{i}"),
            Buffer::Output(i) => write!(f, "output{i}"),
            Buffer::Scratch(i) => write!(f, "scratch{i}"),
        }
    }
}

/// A materialized value: its buffer and the dtype of the buffer's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Where it lives.
    pub buffer: Buffer,
    /// Element type in memory (the node's dtype for inputs and outputs; f32
    /// or i64 for scratch).
    pub elem: DType,
}

/// One kernel of the plan (several for a template).
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A fast path's kernels computing `node` (a part of the graph that a
    /// template matches, such as flash attention), stored to its buffer.
    Template {
        /// The value computed.
        node: Handle<Node>,
        /// The template's name.
        name: &'static str,
    },
    /// Every element of `node`'s value, evaluated by its definition with its
    /// operands fused, stored to `into`.
    Elements {
        /// The value computed.
        node: Handle<Node>,
        /// Where it goes.
        into: Stored,
    },
    /// The max and the sum of `exp(x - max)` along a softmax's axis.
    SoftmaxStats {
        /// The softmax node.
        node: Handle<Node>,
    },
    /// A prefix sum along a dense axis: one thread per line.
    Scan {
        /// The scan node.
        node: Handle<Node>,
        /// Where it goes.
        into: Stored,
    },
    /// The offsets of a `seqs_where` set: kept rows per sequence, then their
    /// prefix sum.
    KeptOffsets {
        /// The `seqs_where` node.
        seqs: Handle<Node>,
        /// Sibling values the count kernel also stores (the partitioner's
        /// sibling fusion): values of one element per row of the set's
        /// parent, each computed row by row in the count's loop, and where
        /// each goes.
        also: Vec<(Handle<Node>, Stored)>,
        /// The value whose resident kernel, the step before, counts the
        /// kept rows in its own loop over the rows (this step then
        /// launches only their prefix sum).
        counted_by: Option<Handle<Node>>,
    },
    /// The kept rows of one or more compactions over the same kept set (the
    /// aligned feature tensors of an event stream), one kernel: a warp per
    /// sequence tests its rows once and copies each kept row of every one.
    Compact {
        /// The compact nodes and where each goes.
        nodes: Vec<(Handle<Node>, Stored)>,
    },
    /// The offsets of a `seqs_triu` set: `n_b (n_b - 1) / 2` per sequence,
    /// then their prefix sum.
    TriuOffsets {
        /// The `seqs_triu` node.
        seqs: Handle<Node>,
    },
    /// The packed strict upper triangle of a pair value, a warp per sequence.
    PackTriu {
        /// The `pack_triu` node.
        node: Handle<Node>,
        /// Where it goes.
        into: Stored,
    },
}

/// Which values of a graph live in memory, and the kernels that fill them.
#[derive(Clone, Debug)]
pub struct Partition {
    /// The buffer of each materialized tensor value.
    pub stored: HashMap<Handle<Node>, Stored>,
    /// `(max, sum)` buffers of each softmax whose statistics are materialized.
    pub softmax_stats: HashMap<Handle<Node>, (Stored, Stored)>,
    /// The offsets buffer (`[B + 1]`, i64) of each `seqs_where` and
    /// `seqs_triu` set.
    pub kept_offsets: HashMap<Handle<Node>, Stored>,
    /// The graph outputs that are those offsets (`offsets %s`), which the
    /// kernel computing them writes as well (no copy kernel).
    pub offsets_outputs: HashMap<Handle<Node>, Vec<Stored>>,
    /// The kernels, in launch order.
    pub steps: Vec<Step>,
    /// Scratch buffers.
    pub scratch: Vec<ScratchBuffer>,
    /// Output buffers, in graph output order.
    pub outputs: Vec<OutputBuffer>,
}

fn unsupported(graph: &Graph, h: Handle<Node>, why: &str) -> CodegenError {
    CodegenError::Node {
        graph: graph.name().to_string(),
        index: h.index(),
        node: graph.describe(h),
        reason: why.to_string(),
    }
}

/// The tensor type of `h` (the validator gives every tensor value one).
fn tensor_type(graph: &Graph, h: Handle<Node>) -> Result<&TensorType, CodegenError> {
    match graph.type_of(h) {
        Type::Tensor(t) => Ok(t),
        Type::Seqs => Err(unsupported(graph, h, "a sequence set read as a tensor")),
    }
}

/// The dtype scratch buffers store for the value of `h`, of `dtype`: f32
/// for floats; i32 for an index into a line (a rank, topk's indices, an
/// argmin / argmax), which always fits; i64 for other integers, which the
/// reference does not wrap.
fn scratch_elem(graph: &Graph, h: Handle<Node>, dtype: DType) -> DType {
    let line_index = match graph.node(h) {
        Node::Rank { .. } => true,
        Node::TopK { part, .. } => *part == jagged_ir::TopKPart::Indices,
        Node::Reduce { op, .. } => op.is_arg(),
        _ => false,
    };
    if dtype.is_float() {
        DType::F32
    } else if line_index {
        DType::I32
    } else {
        DType::I64
    }
}

/// The product of the static dims of `dims`.
fn static_product(dims: &[Dim]) -> u64 {
    dims.iter()
        .map(|d| match d {
            Dim::Static(n) => *n as u64,
            _ => 1,
        })
        .product()
}

/// The number of elements of a value of type `ty` (an upper bound for a
/// compacted set: the rows of the set it was compacted from); `None` for
/// `[%s, %s, ...]` values, which are never stored.
fn elements(ty: &TensorType) -> Option<SizeExpr> {
    match ty.ragged_rank() {
        0 => Some(ty.dims.iter().fold(SizeExpr::Const(1), |acc, d| {
            let e = match d {
                Dim::Batch => SizeExpr::Batch,
                Dim::BatchPlusOne => SizeExpr::Batch + SizeExpr::Const(1),
                Dim::MaxLen => SizeExpr::MaxLen,
                Dim::Static(n) => SizeExpr::Const(*n as u64),
                Dim::Ragged(_) => SizeExpr::Const(0),
            };
            match acc {
                SizeExpr::Const(1) => e,
                acc => acc * e,
            }
        })),
        1 => Some(SizeExpr::TotalRows * SizeExpr::Const(static_product(&ty.dims[1..]))),
        _ => None,
    }
}

/// [`elements`], or why the value of `h` cannot be stored.
fn element_count(
    graph: &Graph,
    h: Handle<Node>,
    ty: &TensorType,
) -> Result<SizeExpr, CodegenError> {
    // A packed triangle has more rows than its set's values: at most
    // `n_b (n_b - 1) / 2 <= L_b (N - 1) / 2` per sequence, so `T N / 2` over
    // a truncated set, `T^2 / 2` over an untruncated one.
    if let (1, Some(s)) = (ty.ragged_rank(), ty.seqs())
        && let Node::SeqsTriu { seqs: parent } = graph.node(s)
    {
        let partners = match graph.node(*parent) {
            Node::Seqs { truncate: true, .. } => SizeExpr::MaxLen,
            _ => SizeExpr::TotalRows,
        };
        let rows = SizeExpr::ceil_div(SizeExpr::TotalRows * partners, 2);
        return Ok(rows * SizeExpr::Const(static_product(&ty.dims[1..])));
    }
    elements(ty).ok_or_else(|| {
        unsupported(
            graph,
            h,
            "a [%s, %s, ...] value cannot be stored (it is fused into its users; \
             as a graph output it has no layout the runtime allocates)",
        )
    })
}

/// Whether a buffer of `elem` gives back exactly the value computed (f32
/// registers and s64 integers); f16 / bf16 buffers round it.
fn exact(elem: DType) -> bool {
    !matches!(elem, DType::F16 | DType::BF16)
}

impl Step {
    /// The nodes whose values this step stores (sequence sets for offsets).
    fn stores(&self) -> Vec<Handle<Node>> {
        match self {
            Step::Template { node, .. }
            | Step::Elements { node, .. }
            | Step::SoftmaxStats { node }
            | Step::Scan { node, .. }
            | Step::PackTriu { node, .. } => vec![*node],
            Step::KeptOffsets { seqs, also, .. } => std::iter::once(*seqs)
                .chain(also.iter().map(|&(n, _)| n))
                .collect(),
            Step::TriuOffsets { seqs } => vec![*seqs],
            Step::Compact { nodes } => nodes.iter().map(|&(n, _)| n).collect(),
        }
    }
}

/// Whether `h` is read by no node and named by one output only.
fn sole_use(graph: &Graph, h: Handle<Node>) -> bool {
    graph.users(h).is_empty() && graph.outputs().iter().filter(|o| o.value == h).count() == 1
}

/// The kernel that computes the value of `h` into `into`.
fn step_for(graph: &Graph, h: Handle<Node>, into: Stored) -> Step {
    match graph.node(h) {
        Node::Scan { .. } => Step::Scan { node: h, into },
        Node::Compact { .. } => Step::Compact {
            nodes: vec![(h, into)],
        },
        Node::PackTriu { .. } => Step::PackTriu { node: h, into },
        _ => Step::Elements { node: h, into },
    }
}

/// How much the general path fuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// Elementwise trees, masks, padding and `[%s, %s]` values are
    /// recomputed where they are read (the default).
    Fused,
    /// Every value is stored by a kernel of its own, except scalars and
    /// `[%s, %s]` values (which cannot be): the baseline the cost model
    /// compares fused plans with, one kernel per op like an eager framework.
    Unfused,
}

/// Whether the value of `h` is recomputed where it is read rather than stored.
fn fused(graph: &Graph, h: Handle<Node>, fusion: Fusion) -> bool {
    let pair = matches!(graph.type_of(h), Type::Tensor(t) if t.ragged_rank() == 2);
    match graph.node(h) {
        Node::Input { .. } | Node::Scan { .. } | Node::Compact { .. } => false,
        Node::PackTriu { .. } => false,
        Node::Seqs { .. } | Node::SeqsWhere { .. } | Node::SeqsTriu { .. } => false,
        Node::Attr { .. } | Node::Const { .. } => true,
        // A rank or top-k reads its whole line per element: stored once
        // rather than recomputed by every reader.
        Node::Reduce { .. } | Node::Contract { .. } | Node::Rank { .. } | Node::TopK { .. } => {
            pair || (fusion == Fusion::Fused
                && (feeds_an_output_elementwise(graph, h)
                    || emit::resident(graph, h)
                    || simt_contraction_into_one_pass_reduce(graph, h)))
        }
        _ => pair || fusion == Fusion::Fused,
    }
}

/// Whether `h` is a contraction for the SIMT loop (not tensor cores) whose
/// only reader, through a chain of single-use elementwise nodes, is a
/// one-pass reduction (sum, mean, max, argmin, argmax): each of its
/// elements is then computed once, inside the reduction's loop, and never
/// stored (the nearest codeword of a row: `argmin_k |c_k|^2 - 2 x . c_k`
/// with no `[T, K]` scratch).
fn simt_contraction_into_one_pass_reduce(graph: &Graph, h: Handle<Node>) -> bool {
    if !matches!(graph.node(h), Node::Contract { .. })
        || emit::tensor_core_operands(graph, h)
        || graph.outputs().iter().any(|o| o.value == h)
    {
        return false;
    }
    let mut cur = h;
    loop {
        let users = graph.users(cur);
        let [user] = users.as_slice() else {
            return false;
        };
        // A stored intermediate (an output) would be computed apart.
        let output = graph.outputs().iter().any(|o| o.value == *user);
        match graph.node(*user) {
            Node::Cast { .. }
            | Node::Unary { .. }
            | Node::Binary { .. }
            | Node::Select { .. }
            | Node::Compare { .. }
                if !output =>
            {
                cur = *user
            }
            Node::Reduce { op, .. } => {
                return matches!(
                    op,
                    ReduceOp::Sum
                        | ReduceOp::Mean
                        | ReduceOp::Max
                        | ReduceOp::ArgMin
                        | ReduceOp::ArgMax
                );
            }
            _ => return false,
        }
    }
}

/// Whether `h` reaches a graph output through elementwise nodes over the
/// same elements that only that output reads: a chain (`relu(contract(..) +
/// bias)` into a bf16 output) or a small DAG that reads a value several
/// times (`gelu(h)` with `h = contract(..) + bias`, then `+ residual`). The
/// output's kernel then computes `h` in place, once per element, and no
/// scratch round trip or second kernel is needed. `h` itself must not be
/// an output.
fn feeds_an_output_elementwise(graph: &Graph, h: Handle<Node>) -> bool {
    output_through_elementwise_chain(graph, h).is_some()
}

/// The output node that `h`'s elementwise readers end in (see
/// [`feeds_an_output_elementwise`]), if there is one: every node reading
/// `h`, or reading a node that does, is elementwise over `h`'s elements,
/// and exactly one of them is read by nothing and is a graph output (the
/// others are no output and are read).
fn output_through_elementwise_chain(graph: &Graph, h: Handle<Node>) -> Option<Handle<Node>> {
    let is_output = |x: Handle<Node>| graph.outputs().iter().any(|o| o.value == x);
    if is_output(h) {
        return None;
    }
    let dims = match graph.type_of(h) {
        Type::Tensor(t) => &t.dims,
        Type::Seqs => return None,
    };
    let mut region: Vec<Handle<Node>> = Vec::new();
    let mut frontier = vec![h];
    let mut sink = None;
    while let Some(cur) = frontier.pop() {
        let users = graph.users(cur);
        if users.is_empty() {
            // Only the output may end the region (`h` itself is read).
            if cur == h || !is_output(cur) || sink.is_some_and(|s| s != cur) {
                return None;
            }
            sink = Some(cur);
            continue;
        }
        if cur != h && is_output(cur) {
            return None;
        }
        for user in users {
            if region.contains(&user) {
                continue;
            }
            let elementwise = matches!(
                graph.node(user),
                Node::Cast { .. }
                    | Node::Unary { .. }
                    | Node::Binary { .. }
                    | Node::Select { .. }
                    | Node::Compare { .. }
            );
            let same_elements = matches!(graph.type_of(user), Type::Tensor(t) if &t.dims == dims);
            if !elementwise || !same_elements || region.len() >= 64 {
                return None;
            }
            region.push(user);
            frontier.push(user);
        }
    }
    sink
}

/// The type of a softmax's statistics: its operand's type without the axis
/// (with a leading `B` when the axis was the only ragged dim), as for `reduce`.
pub(crate) fn reduced_type(x: &TensorType, axis: usize) -> TensorType {
    let mut dims = x.dims.clone();
    let dim = dims.remove(axis);
    if x.ragged_rank() == 1 && matches!(dim, Dim::Ragged(_)) {
        dims.insert(0, Dim::Batch);
    }
    TensorType::new(x.dtype, dims)
}

impl Partition {
    /// Partitions `graph` into kernels.
    pub fn of(graph: &Graph, fusion: Fusion) -> Result<Partition, CodegenError> {
        Partition::with_templates(graph, fusion, &[])
    }

    /// [`Partition::of`], with the values a fast path computes (`(node,
    /// template name)`): each gets a buffer in its own dtype and a
    /// [`Step::Template`], and what only it reads is not computed.
    pub fn with_templates(
        graph: &Graph,
        fusion: Fusion,
        templated: &[(Handle<Node>, &'static str)],
    ) -> Result<Partition, CodegenError> {
        let live = live_nodes(graph, templated);
        let mut part = Partition {
            stored: HashMap::new(),
            softmax_stats: HashMap::new(),
            kept_offsets: HashMap::new(),
            offsets_outputs: HashMap::new(),
            steps: Vec::new(),
            scratch: Vec::new(),
            outputs: Vec::new(),
        };
        for (i, (h, _, ty)) in graph.inputs().enumerate() {
            part.stored.insert(
                h,
                Stored {
                    buffer: Buffer::Input(i),
                    elem: ty.dtype,
                },
            );
        }
        // Output buffers first, so that a value that is an output is computed
        // straight into it.
        let mut output_of: HashMap<Handle<Node>, Stored> = HashMap::new();
        for (k, out) in graph.outputs().iter().enumerate() {
            let ty = tensor_type(graph, out.value)?;
            let elems = element_count(graph, out.value, ty)?;
            let used_rows_from = match ty.seqs().map(|s| graph.node(s)) {
                Some(Node::SeqsWhere { .. } | Node::SeqsTriu { .. }) => {
                    let s = ty.seqs();
                    let offsets = graph.outputs().iter().position(|o| {
                        matches!(graph.node(o.value), Node::Offsets { seqs, .. } if Some(*seqs) == s)
                    });
                    Some(offsets.ok_or_else(|| {
                        unsupported(
                            graph,
                            out.value,
                            "a compacted (or packed) output needs the offsets of its sequence \
                             set among the outputs (they give its row count)",
                        )
                    })?)
                }
                _ => None,
            };
            part.outputs.push(OutputBuffer {
                elem: ty.dtype,
                elems,
                used_rows_from,
            });
            let stored = Stored {
                buffer: Buffer::Output(k),
                elem: ty.dtype,
            };
            output_of.entry(out.value).or_insert(stored);
        }
        // Output indices written by the kernel that computes their value.
        let mut written: Vec<usize> = Vec::new();
        for (h, node) in graph.nodes().iter() {
            if !live.contains(&h) {
                continue;
            }
            if let Some(&(_, name)) = templated.iter().find(|(t, _)| *t == h) {
                let into = match output_of.get(&h).copied() {
                    Some(out) => out,
                    None => {
                        let ty = tensor_type(graph, h)?;
                        let elems = element_count(graph, h, ty)?;
                        part.add_scratch(ty.dtype, elems)
                    }
                };
                if let Buffer::Output(k) = into.buffer {
                    written.push(k);
                }
                part.stored.insert(h, into);
                part.steps.push(Step::Template { node: h, name });
                continue;
            }
            match node {
                Node::Seqs { offsets, .. } => {
                    if !matches!(graph.node(*offsets), Node::Input { .. }) {
                        return Err(unsupported(
                            graph,
                            h,
                            "a sequence set over computed offsets (offsets must be a graph input)",
                        ));
                    }
                    continue;
                }
                Node::SeqsWhere { .. } => {
                    let into = part.add_scratch(DType::I64, SizeExpr::Batch + SizeExpr::Const(1));
                    part.kept_offsets.insert(h, into);
                    part.steps.push(Step::KeptOffsets {
                        seqs: h,
                        also: Vec::new(),
                        counted_by: None,
                    });
                    continue;
                }
                Node::SeqsTriu { .. } => {
                    let into = part.add_scratch(DType::I64, SizeExpr::Batch + SizeExpr::Const(1));
                    part.kept_offsets.insert(h, into);
                    part.steps.push(Step::TriuOffsets { seqs: h });
                    continue;
                }
                Node::Input { .. } => continue,
                Node::Softmax { arg, axis } => {
                    let x = tensor_type(graph, *arg)?;
                    let stats = reduced_type(x, *axis);
                    // Resident statistics are computed by the kernels that read them.
                    let resident = fusion == Fusion::Fused && emit::resident(graph, h);
                    if stats.ragged_rank() < 2 && !resident {
                        let elems = element_count(graph, h, &stats)?;
                        let max = part.add_scratch(DType::F32, elems.clone());
                        let sum = part.add_scratch(DType::F32, elems);
                        part.softmax_stats.insert(h, (max, sum));
                        part.steps.push(Step::SoftmaxStats { node: h });
                    }
                }
                _ => {}
            }
            let output = output_of.get(&h).copied();
            // The offsets of a compacted or packed set, as an output: the
            // kernel of its prefix sum writes them there too.
            if let (Some(out), Node::Offsets { seqs, .. }) = (output, node)
                && part.kept_offsets.contains_key(seqs)
                && let Buffer::Output(k) = out.buffer
            {
                part.offsets_outputs.entry(*seqs).or_default().push(out);
                written.push(k);
                continue;
            }
            match output {
                // Readers may load an output only where loading gives back
                // exactly what was computed (not from f16 / bf16 buffers); a
                // value nothing else reads goes straight to its output.
                Some(out) if exact(out.elem) || fused(graph, h, fusion) || sole_use(graph, h) => {
                    if exact(out.elem) {
                        part.stored.insert(h, out);
                    }
                    part.push_step(graph, step_for(graph, h, out));
                    if let Buffer::Output(k) = out.buffer {
                        written.push(k);
                    }
                }
                _ if !fused(graph, h, fusion) => {
                    let ty = tensor_type(graph, h)?;
                    let elems = element_count(graph, h, ty)?;
                    let into = part.add_scratch(scratch_elem(graph, h, ty.dtype), elems);
                    part.stored.insert(h, into);
                    part.push_step(graph, step_for(graph, h, into));
                }
                _ => {}
            }
        }
        if fusion == Fusion::Fused {
            part.fuse_siblings(graph)?;
        }
        // Every other output copies its value: an input, a node named by
        // several outputs, a value kept in f32 scratch for its readers.
        for (k, out) in graph.outputs().iter().enumerate() {
            if !written.contains(&k) {
                part.steps.push(Step::Elements {
                    node: out.value,
                    into: Stored {
                        buffer: Buffer::Output(k),
                        elem: part.outputs[k].elem,
                    },
                });
            }
        }
        Ok(part)
    }

    /// `, output3` for the outputs that also get the offsets of `seqs`.
    fn also_written(&self, seqs: Handle<Node>) -> String {
        self.offsets_outputs
            .get(&seqs)
            .into_iter()
            .flatten()
            .map(|o| format!(", {}", o.buffer))
            .collect()
    }

    /// Appends `step`; a compaction joins the kernel of an earlier one over
    /// the same kept set when no step since then stores a value it reads
    /// (its operand is ready there, and it is written earlier than its
    /// readers either way).
    fn push_step(&mut self, graph: &Graph, step: Step) {
        let kept_set = |h: Handle<Node>| match graph.node(h) {
            Node::Compact { seqs, .. } => Some(*seqs),
            _ => None,
        };
        if let Step::Compact { nodes: new } = &step
            && let [(h, _)] = new.as_slice()
            && let Some(set) = kept_set(*h)
        {
            let reads = self.stored_reads(graph, *h);
            let joins = self.steps.iter().rposition(|s| {
                matches!(s, Step::Compact { nodes } if nodes.first().and_then(|&(n, _)| kept_set(n)) == Some(set))
            });
            if let Some(at) = joins
                && self.steps[at + 1..]
                    .iter()
                    .all(|s| s.stores().iter().all(|n| !reads.contains(n)))
                && let Step::Compact { nodes } = &mut self.steps[at]
            {
                nodes.extend(new.iter().copied());
                return;
            }
        }
        self.steps.push(step);
    }

    /// Sibling fusion: an [`Step::Elements`] step joins the kernel of a later
    /// [`Step::KeptOffsets`] over the same rows, which then stores it too.
    /// The count kernel goes a warp per sequence over every row of the
    /// set's parent, 32 rows at a time; a value of one element per row of
    /// that parent (an untruncated set, so no row is past `n_b`) computed
    /// per row in straight-line code from values stored before it (see
    /// `emit::per_row_sibling`) is computed there instead, in the same
    /// loop and with the same loads. Its step moves later, so no step in
    /// between may read it; the count's mask may read it only at the row
    /// being tested (elementwise), where it takes the register just
    /// computed, never the memory being written.
    fn fuse_siblings(&mut self, graph: &Graph) -> Result<(), CodegenError> {
        let mut at = 0;
        while at < self.steps.len() {
            let Step::KeptOffsets { seqs, .. } = self.steps[at] else {
                at += 1;
                continue;
            };
            let Node::SeqsWhere { mask } = *graph.node(seqs) else {
                return Err(unsupported(graph, seqs, "kept offsets of a non-seqs_where"));
            };
            let parent = tensor_type(graph, mask)?
                .seqs()
                .ok_or_else(|| unsupported(graph, seqs, "a seqs_where of a dense mask"))?;
            let mut guests = Vec::new();
            for j in (0..at).rev() {
                let Step::Elements { node, into } = self.steps[j] else {
                    continue;
                };
                // Moved past them: no step in between (another sibling
                // included) may read it.
                let read_between = self.steps[j + 1..at]
                    .iter()
                    .flat_map(Step::stores)
                    .any(|n| self.stored_reads(graph, n).contains(&node));
                if !read_between
                    && emit::per_row_sibling(graph, self, node, into, parent)?
                    && emit::reads_only_at_its_row(graph, self, mask, node)
                {
                    guests.push(self.steps[j].clone());
                }
            }
            if guests.is_empty() {
                // Else the count may ride in the loop of an earlier
                // resident kernel over the same rows.
                if let Some(j) = self.count_host(graph, at, seqs, mask, parent)? {
                    let mut step = self.steps.remove(at);
                    if let (Step::KeptOffsets { counted_by, .. }, Step::Elements { node, .. }) =
                        (&mut step, &self.steps[j])
                    {
                        *counted_by = Some(*node);
                    }
                    self.steps.insert(j + 1, step);
                }
                at += 1;
                continue;
            }
            self.steps.retain(|s| !guests.contains(s));
            let at_now = self
                .steps
                .iter()
                .position(|s| matches!(s, Step::KeptOffsets { seqs: k, .. } if *k == seqs))
                .ok_or_else(|| unsupported(graph, seqs, "kept offsets step lost"))?;
            if let Step::KeptOffsets { also, .. } = &mut self.steps[at_now] {
                // In launch order.
                also.extend(guests.iter().rev().filter_map(|s| match s {
                    Step::Elements { node, into } => Some((*node, *into)),
                    _ => None,
                }));
            }
            at = at_now + 1;
        }
        Ok(())
    }

    /// The step before `at` whose kernel can count the kept rows of `seqs`
    /// (mask `mask` over the rows of `parent`) in its own loop: a value of
    /// one element per row of `parent` (untruncated) whose resident kernel
    /// goes over every row with the converged warp, a lane per row (see
    /// `emit::counts_kept_rows`), where every stored value the mask reads
    /// is ready (that value itself only at the row being tested) and the
    /// mask is straight-line code per row. The count's step moves
    /// earlier, right after that kernel; no step in between can read the
    /// set's offsets (its readers come after it in the graph).
    fn count_host(
        &self,
        graph: &Graph,
        at: usize,
        seqs: Handle<Node>,
        mask: Handle<Node>,
        parent: Handle<Node>,
    ) -> Result<Option<usize>, CodegenError> {
        if !emit::per_row_tree(graph, self, mask) {
            return Ok(None);
        }
        let reads = self.stored_reads(graph, seqs);
        for j in (0..at).rev() {
            let Step::Elements { node, into } = self.steps[j] else {
                continue;
            };
            let ready = self.steps[j..at]
                .iter()
                .flat_map(Step::stores)
                .all(|n| n == node || !reads.contains(&n));
            if ready
                && self.stored.get(&node) == Some(&into)
                && emit::per_row_of(graph, node, parent)?
                && emit::counts_kept_rows(graph, self, node)?
                && emit::reads_only_at_its_row(graph, self, mask, node)
            {
                return Ok(Some(j));
            }
        }
        Ok(None)
    }

    /// The stored values that computing `h` reads: its operands, and theirs
    /// through every value that is recomputed where it is read.
    fn stored_reads(&self, graph: &Graph, h: Handle<Node>) -> Vec<Handle<Node>> {
        let mut reads = Vec::new();
        let mut todo = graph.node(h).operands();
        while let Some(x) = todo.pop() {
            if reads.contains(&x) {
                continue;
            }
            reads.push(x);
            if !self.stored.contains_key(&x) {
                todo.extend(graph.node(x).operands());
            }
        }
        reads
    }

    fn add_scratch(&mut self, elem: DType, elems: SizeExpr) -> Stored {
        let bytes = elems * SizeExpr::Const(u64::from(crate::spec::elem_bytes(elem)));
        self.scratch.push(ScratchBuffer { bytes });
        Stored {
            buffer: Buffer::Scratch(self.scratch.len() - 1),
            elem,
        }
    }

    /// The plan as text: one line per kernel, then the buffers.
    pub fn describe(&self, graph: &Graph) -> String {
        let mut out = String::new();
        let text = |h: Handle<Node>| jagged_ir::text::node_text(h, graph.node(h));
        for (k, step) in self.steps.iter().enumerate() {
            let line = match step {
                Step::Template { node, name } => {
                    format!(
                        "fast path {name}: {} -> {}",
                        text(*node),
                        self.stored[node].buffer
                    )
                }
                Step::Elements { node, into } => {
                    let fused: Vec<String> = fused_operands(graph, self, *node)
                        .iter()
                        .map(|h| h.to_string())
                        .collect();
                    let fused = if fused.is_empty() {
                        String::new()
                    } else {
                        format!(" (fused: {})", fused.join(" "))
                    };
                    let cores = emit::tensor_core_note(graph, self, *node, *into)
                        .or_else(|| emit::resident_note(graph, self, *node, *into))
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default();
                    format!("elements {} -> {}{fused}{cores}", text(*node), into.buffer)
                }
                Step::SoftmaxStats { node } => {
                    let (m, s) = self.softmax_stats[node];
                    format!(
                        "softmax stats of {} -> max {}, sum {}",
                        node, m.buffer, s.buffer
                    )
                }
                Step::Scan { node, into } => format!("scan {} -> {}", text(*node), into.buffer),
                Step::KeptOffsets {
                    seqs,
                    also,
                    counted_by,
                } => {
                    let siblings: String = also
                        .iter()
                        .map(|(node, into)| format!("; also {} -> {}", text(*node), into.buffer))
                        .collect();
                    let counted = counted_by
                        .map(|n| format!(" (counted in the loop of {n}'s kernel: a prefix sum)"))
                        .unwrap_or_default();
                    format!(
                        "kept offsets {} -> {}{}{siblings}{counted}",
                        text(*seqs),
                        self.kept_offsets[seqs].buffer,
                        self.also_written(*seqs)
                    )
                }
                Step::Compact { nodes } => {
                    let each: Vec<String> = nodes
                        .iter()
                        .map(|(node, into)| format!("{} -> {}", text(*node), into.buffer))
                        .collect();
                    format!("compact {}", each.join(", "))
                }
                Step::TriuOffsets { seqs } => {
                    format!(
                        "triangle offsets {} -> {}{}",
                        text(*seqs),
                        self.kept_offsets[seqs].buffer,
                        self.also_written(*seqs)
                    )
                }
                Step::PackTriu { node, into } => {
                    format!("pack triangle {} -> {}", text(*node), into.buffer)
                }
            };
            out.push_str(&format!("  kernel {k}: {line}\n"));
        }
        for (i, s) in self.scratch.iter().enumerate() {
            out.push_str(&format!("  scratch{i}: {} bytes\n", s.bytes));
        }
        out
    }
}

/// The nodes the outputs are computed from, through operands and the
/// sequence sets of types; not past a templated node (its fast path reads
/// the inputs itself).
fn live_nodes(
    graph: &Graph,
    templated: &[(Handle<Node>, &'static str)],
) -> std::collections::HashSet<Handle<Node>> {
    let mut live = std::collections::HashSet::new();
    let mut stack: Vec<Handle<Node>> = graph.outputs().iter().map(|o| o.value).collect();
    while let Some(h) = stack.pop() {
        if !live.insert(h) {
            continue;
        }
        if let Type::Tensor(t) = graph.type_of(h) {
            stack.extend(t.dims.iter().filter_map(|d| match d {
                Dim::Ragged(s) => Some(*s),
                _ => None,
            }));
        }
        if templated.iter().all(|(t, _)| *t != h) {
            stack.extend(graph.node(h).operands());
        }
    }
    live
}

/// The values recomputed inside the kernel of `root` (its fused operand tree).
fn fused_operands(graph: &Graph, part: &Partition, root: Handle<Node>) -> Vec<Handle<Node>> {
    let mut seen = Vec::new();
    let mut stack = graph.node(root).operands();
    while let Some(h) = stack.pop() {
        if seen.contains(&h) || part.stored.contains_key(&h) {
            continue;
        }
        if matches!(graph.type_of(h), Type::Seqs) {
            continue;
        }
        seen.push(h);
        stack.extend(graph.node(h).operands());
    }
    seen.sort_by_key(|h| h.index());
    seen
}

/// The general path's result: the compiled module and its plan as text.
pub struct General {
    /// The module and launch metadata.
    pub kernel: CompiledKernel,
    /// One line per kernel (what it computes, what it fuses), then scratch.
    pub plan: String,
}

/// Compiles any validated graph for `spec` (only `spec.arch` matters: the
/// general path reads dtypes and inner dims from the graph itself).
pub fn compile_general(graph: &Graph, spec: &Spec) -> Result<General, CodegenError> {
    compile_general_with(graph, spec, Fusion::Fused)
}

/// [`compile_general`] with a choice of [`Fusion`].
pub fn compile_general_with(
    graph: &Graph,
    spec: &Spec,
    fusion: Fusion,
) -> Result<General, CodegenError> {
    let groups = match fusion {
        Fusion::Fused => crate::compile::template_groups(graph, spec),
        Fusion::Unfused => Vec::new(),
    };
    let templated: Vec<(Handle<Node>, &'static str)> =
        groups.iter().map(|g| (g.root, g.name)).collect();
    let mut part = Partition::with_templates(graph, fusion, &templated)?;
    let prefix = entry_prefix(graph);
    let mut module = KernelModule::default();
    let mut launches = Vec::new();
    let mut template_scratch = Vec::new();
    for (k, step) in part.steps.iter().enumerate() {
        if let Step::Template { node, .. } = step {
            let Some(group) = groups.iter().find(|g| g.root == *node) else {
                continue;
            };
            let into = match part.stored[node].buffer {
                Buffer::Output(i) => ParamBinding::Output(i),
                Buffer::Scratch(i) => ParamBinding::Scratch(i),
                Buffer::Input(_) => {
                    return Err(unsupported(graph, *node, "a template computing an input"));
                }
            };
            let base = part.scratch.len() + template_scratch.len();
            for launch in &group.lowered.launches {
                let mut launch = launch.clone();
                for param in &mut launch.params {
                    *param = match &*param {
                        ParamBinding::Output(0) => into.clone(),
                        ParamBinding::Scratch(j) => ParamBinding::Scratch(base + j),
                        other => other.clone(),
                    };
                }
                launches.push(launch);
            }
            template_scratch.extend(group.lowered.scratch.iter().cloned());
            // Two parts with one template and spec share its kernels.
            for kernel in &group.lowered.module.kernels {
                if module.kernels.iter().all(|k| k.name != kernel.name) {
                    module.kernels.push(kernel.clone());
                }
            }
            continue;
        }
        for plan in emit::lower_step(
            graph,
            &part,
            step,
            &format!("{prefix}_k{k}"),
            spec.max_len_bucket,
        )? {
            launches.push(Launch {
                entry: plan.kernel.name.clone(),
                block: plan.kernel.block_threads,
                dynamic_shared_bytes: 0,
                grid: plan.grid,
                params: plan.bindings,
            });
            module.kernels.push(plan.kernel);
        }
    }
    let plan = part.describe(graph);
    part.scratch.extend(template_scratch);
    let ptx = ptx::write_string(&module, &ptx::Options { arch: spec.arch })?;
    Ok(General {
        kernel: CompiledKernel {
            ptx,
            arch: spec.arch,
            launches,
            scratch: part.scratch,
            outputs: part.outputs,
        },
        plan,
    })
}

/// `jg_<op name>`, the name made a PTX identifier.
fn entry_prefix(graph: &Graph) -> String {
    let name: String = graph
        .name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("jg_{name}")
}
