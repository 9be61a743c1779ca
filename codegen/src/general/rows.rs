//! Sequence-resident kernels: a warp owns a sequence, loads the rows its
//! fused tree reads into shared memory once, and computes every element of
//! the sequence from there, with the statistics the elements share (a row's
//! mean, a column's softmax max and sum, a query row's softmax over its keys)
//! computed once, ahead of the loops that read them.
//!
//! The partitioner keeps such statistics out of scratch memory
//! ([`resident`]): instead of a kernel that stores them and a second one that
//! reads `x` again, one kernel reads `x` once. This applies to a step whose
//! value has a sequence per element (`[%s, inner...]` or `[B, inner...]`,
//! static inner dims of at most [`MAX_WIDTH`] elements) and whose fused tree
//! reduces something. The staged leaves are the stored jagged values the tree
//! reads; a sequence whose rows do not fit the warp's share of shared memory
//! ([`WARP_SHARED_BYTES`]) takes the same code reading global memory, so no
//! bound on the sequence length is needed for correctness (the spec's
//! `max_len` bucket is not assumed).
//!
//! Hoisting ([`Emitter::hoist`]) walks the fused tree from an element with
//! some index registers marked as varying (the row, in the loop over a
//! sequence's rows; the column, in the loop over a row's elements; a
//! reduction's counter inside it) and computes each subtree whose index does
//! not involve them ahead of the loop, keyed by its index registers; reading
//! the value at the same registers later finds it. Where the index is the same
//! on every lane, reductions and softmax statistics are split over the lanes
//! and combined by shuffles.

use jagged_ir::{Dim, Graph, Handle, Node, ReduceOp, TensorType, Type as IrType};

use super::super::{
    Fusion, Partition, Step, Stored, fused, fused_operands, reduced_type, static_product,
    tensor_type, unsupported,
};
use super::{At, Emitter, Result, Val, cooperative, is_int};
use crate::kernel::{
    Address, BinOp, Cmp, Guard, Operand, Reg, RegClass, ShflMode, Space, Special, TernOp, Type,
};
use crate::launch::SizeExpr;
use crate::spec::{DType, elem_bytes};
use crate::templates::{BLOCK_THREADS, Plan, unpack_f32};

/// Threads per CTA of a resident kernel (4 warps, each with its own share of
/// shared memory).
const THREADS: u32 = 128;

/// The CTAs per SM ptxas is told to fit (`.minnctapersm`): up to 128
/// registers a thread. Without it ptxas holds some of these kernels to 40
/// registers when their shared memory is small, and spills (seen with ptxas
/// 12.9 on sm_90a).
const MIN_CTAS_PER_SM: u32 = 4;

/// Shared memory per warp for staged rows: 4 warps use the 48 KiB a CTA may
/// declare statically.
const WARP_SHARED_BYTES: u64 = 12 * 1024;

/// Shared memory for staged rows in all the kernels of a module together
/// (the emulator gives every kernel all of a module's shared arrays; the
/// rest of its 227 KiB leaves room for a template's dynamic shared memory).
const MODULE_SHARED_BYTES: u64 = 64 * 1024;

/// The widest row (elements of the static inner dims) a resident kernel
/// takes: a lane then covers at most 8 columns of it.
const MAX_WIDTH: u64 = 256;

/// Fewest staged rows worth a shared-memory layout; wider rows read global.
const MIN_STAGED_ROWS: u64 = 16;

/// The state of a sequence-resident kernel while it emits one sequence's code.
pub(super) struct Resident {
    /// The sequence register of the warp.
    seq: Reg,
    /// This thread's lane (u64).
    lane: Reg,
    /// The staged leaves.
    staged: Vec<StagedLeaf>,
    /// Values and softmax statistics computed ahead of the loops reading them.
    hoisted: Vec<(Key, Hoisted)>,
    /// Registers that hold the same value on every lane of the warp.
    uniform: Vec<Reg>,
}

/// A leaf in shared memory: its rows `0..n_b` back to back, where the
/// sequence fits.
#[derive(Clone, Copy)]
struct StagedLeaf {
    node: Handle<Node>,
    elem: DType,
    /// Shared address (u32) of row 0.
    base: Reg,
    /// Whether the sequence's rows are staged (the same on every lane).
    fits: Reg,
}

/// What a hoisted entry is for: a value, or a softmax's statistics along its
/// axis, at index registers (the axis left out for statistics).
#[derive(Clone, Debug, PartialEq)]
struct Key {
    stats: bool,
    node: Handle<Node>,
    b: Reg,
    idx: Vec<Reg>,
}

#[derive(Clone, Copy)]
enum Hoisted {
    Value(Val),
    Stats(Reg, Reg),
}

/// How the lanes of a warp share a sequence's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One row at a time; lane `l` takes columns `l, l + 32, ...`.
    Lanes,
    /// `32 / width` rows at a time, a lane per element (rows narrower than
    /// a warp, no statistics along a row).
    Packed,
    /// One element at a time, the lanes splitting its reduction.
    Coop,
}

/// The static facts of a resident kernel.
struct Shape {
    /// `[%s, ...]` (else `[B, ...]`).
    jagged: bool,
    /// The static inner dims.
    inner: Vec<u64>,
    /// Their product.
    width: u64,
    mode: Mode,
    /// The leaves staged in shared memory, with their byte offset in a
    /// warp's share, and the rows staged per sequence (0: none).
    leaves: Vec<(Handle<Node>, u64)>,
    rows: u64,
    warp_bytes: u64,
}

/// The static inner dims after the first dim of `ty`, if all are static and
/// their product is 1 to [`MAX_WIDTH`] (rows of no element take the
/// element loops of the `emit` module).
fn static_inner(ty: &TensorType) -> Option<Vec<u64>> {
    let inner: Option<Vec<u64>> = ty.dims[1..]
        .iter()
        .map(|d| match d {
            Dim::Static(n) => Some(*n as u64),
            _ => None,
        })
        .collect();
    inner.filter(|v| (1..=MAX_WIDTH).contains(&v.iter().product::<u64>()))
}

/// Whether a resident kernel can compute a value of type `ty`: a sequence per
/// element, narrow static rows.
fn resident_type(ty: &TensorType) -> bool {
    let per_sequence = match ty.dims.first() {
        Some(Dim::Ragged(_)) => ty.ragged_rank() == 1,
        Some(Dim::Batch) => ty.ragged_rank() == 0,
        _ => false,
    };
    per_sequence && static_inner(ty).is_some()
}

fn is_output(graph: &Graph, h: Handle<Node>) -> bool {
    graph.outputs().iter().any(|o| o.value == h)
}

/// Where statistics are read: per sequence (`[B, ...]`, invariant along the
/// rows) or per row (`[%s]`, invariant along a row's elements and a pair's
/// keys).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sequence,
    Row,
}

/// Whether the statistics of `h` (a float reduction, or a softmax's max and
/// sum) are left to the kernels that read them rather than stored: true when
/// every such kernel is a resident one that computes them once per sequence
/// or row ahead of its loops (so no kernel recomputes them per element).
pub(in crate::general) fn resident(graph: &Graph, h: Handle<Node>) -> bool {
    let (arg, axis) = match graph.node(h) {
        Node::Reduce { op, arg, axis } if splits(*op) && !is_output(graph, h) => (*arg, *axis),
        Node::Softmax { arg, axis } => (*arg, *axis),
        _ => return false,
    };
    let Ok(x) = tensor_type(graph, arg) else {
        return false;
    };
    if is_int(x.dtype) {
        return false;
    }
    let stats = reduced_type(x, axis);
    let kind = if stats.dims.first() == Some(&Dim::Batch) && static_inner(&stats).is_some() {
        Kind::Sequence
    } else if stats.ragged_rank() == 1 && stats.dims.len() == 1 {
        Kind::Row
    } else {
        return false;
    };
    match graph.node(h) {
        Node::Softmax { .. } => evaluated_ok(graph, h, kind),
        _ => graph.users(h).iter().all(|&u| reader_ok(graph, u, kind)),
    }
}

/// Whether every kernel that evaluates `n` (fused, its tree holding the
/// statistics) is resident and hoists statistics of `kind`.
fn evaluated_ok(graph: &Graph, n: Handle<Node>, kind: Kind) -> bool {
    if is_output(graph, n) && !root_ok(graph, n) {
        return false;
    }
    graph.users(n).iter().all(|&u| reader_ok(graph, u, kind))
}

/// Whether `u`, which reads a value holding statistics of `kind`, keeps them
/// hoistable (see [`resident`]).
fn reader_ok(graph: &Graph, u: Handle<Node>, kind: Kind) -> bool {
    let stored = !fused(graph, u, Fusion::Fused);
    match graph.node(u) {
        Node::Unary { .. }
        | Node::Binary { .. }
        | Node::Cast { .. }
        | Node::Select { .. }
        | Node::Compare { .. } => {
            if stored || is_output(graph, u) {
                root_ok(graph, u)
            } else {
                evaluated_ok(graph, u, kind)
            }
        }
        // Read inside the softmax's statistics, which must be hoisted too.
        Node::Softmax { .. } => kind == Kind::Sequence && resident(graph, u),
        Node::Reduce { axis, .. } => {
            (kind == Kind::Sequence || *axis >= 1)
                && if stored {
                    root_ok(graph, u)
                } else {
                    evaluated_ok(graph, u, kind)
                }
        }
        _ => false,
    }
}

/// Whether the kernel that stores `u` is a resident one.
fn root_ok(graph: &Graph, u: Handle<Node>) -> bool {
    let elements = !matches!(
        graph.node(u),
        Node::Input { .. } | Node::Scan { .. } | Node::Compact { .. }
    );
    elements && matches!(graph.type_of(u), IrType::Tensor(t) if resident_type(t))
}

impl Shape {
    /// The resident kernel of `node`, if it takes it, before shared memory
    /// is shared out: `leaves` holds each candidate leaf's bytes per row.
    fn candidate(graph: &Graph, part: &Partition, node: Handle<Node>) -> Result<Option<Shape>> {
        let ty = tensor_type(graph, node)?;
        if !resident_type(ty) {
            return Ok(None);
        }
        let inner = static_inner(ty).unwrap_or_default();
        let width = inner.iter().product::<u64>();
        let jagged = ty.ragged_rank() == 1;
        let mut tree = fused_operands(graph, part, node);
        tree.push(node);
        // A line op (rank, topk) loops over its line for every element:
        // staged, the line is read from global memory once.
        let loops = tree.iter().any(|&h| {
            matches!(
                graph.node(h),
                Node::Reduce { .. } | Node::Softmax { .. } | Node::Rank { .. } | Node::TopK { .. }
            )
        });
        // A contraction of rows fused into a reduction (not one of pairs,
        // which are always fused) made ptxas unroll its loop into spills in
        // a resident kernel (the nearest of 256 codewords of 64 features:
        // 124 bytes at 128 registers, sm_80, ptxas 12.9).
        let contracts = tree.iter().any(|&h| {
            matches!(graph.node(h), Node::Contract { .. })
                && matches!(graph.type_of(h), IrType::Tensor(t) if t.ragged_rank() < 2)
        });
        if !loops || contracts {
            return Ok(None);
        }
        // Statistics along a row need the warp on one row at a time.
        let along_rows = tree.iter().any(|&h| {
            matches!(
                graph.node(h),
                Node::Reduce { axis, .. } | Node::Softmax { axis, .. } if *axis >= 1
            )
        });
        let mode = if cooperative(graph, node) && matches!(graph.node(node), Node::Reduce { .. }) {
            Mode::Coop
        } else if jagged && width < 32 && 32 % width == 0 && !along_rows {
            Mode::Packed
        } else {
            Mode::Lanes
        };
        // The stored jagged values the tree reads, over input sequence sets.
        let mut leaves: Vec<(Handle<Node>, u64)> = Vec::new();
        for &h in &tree {
            for arg in graph.node(h).operands() {
                if arg == node || leaves.iter().any(|(l, _)| *l == arg) {
                    continue;
                }
                let (Some(st), IrType::Tensor(t)) = (part.stored.get(&arg), graph.type_of(arg))
                else {
                    continue;
                };
                let over_input_set = matches!(
                    t.dims.first(),
                    Some(Dim::Ragged(s)) if matches!(graph.node(*s), Node::Seqs { .. })
                );
                if over_input_set && t.ragged_rank() == 1 && static_inner(t).is_some() {
                    let row = static_product(&t.dims[1..]) * u64::from(elem_bytes(st.elem));
                    leaves.push((arg, row));
                }
            }
        }
        leaves.sort_by_key(|(h, _)| h.index());
        Ok(Some(Shape {
            jagged,
            inner,
            width,
            mode,
            leaves,
            rows: 0,
            warp_bytes: 0,
        }))
    }

    /// The resident kernel of `node`, if it takes it. Its leaves are staged
    /// when [`MIN_STAGED_ROWS`] rows fit its share of [`MODULE_SHARED_BYTES`]
    /// (split between the module's staging kernels) and of
    /// [`WARP_SHARED_BYTES`]; with `max_len_bucket`, sequence sets that are
    /// all truncated stage no more rows than it.
    fn of(
        graph: &Graph,
        part: &Partition,
        node: Handle<Node>,
        max_len_bucket: Option<u32>,
    ) -> Result<Option<Shape>> {
        let Some(mut shape) = Shape::candidate(graph, part, node)? else {
            return Ok(None);
        };
        let mut staging = 0;
        for step in &part.steps {
            if let Step::Elements { node, .. } = step
                && Shape::candidate(graph, part, *node)?.is_some_and(|s| !s.leaves.is_empty())
            {
                staging += 1;
            }
        }
        let warps = u64::from(THREADS / 32);
        let budget = WARP_SHARED_BYTES.min(MODULE_SHARED_BYTES / (warps * staging.max(1)));
        let row_bytes: u64 = shape.leaves.iter().map(|(_, r)| r).sum();
        let slack = 8 * shape.leaves.len() as u64;
        let mut rows = budget
            .saturating_sub(slack)
            .checked_div(row_bytes)
            .unwrap_or(0);
        let truncated = shape.leaves.iter().all(|&(leaf, _)| {
            matches!(graph.type_of(leaf), IrType::Tensor(t) if matches!(
                t.dims.first(),
                Some(Dim::Ragged(s)) if matches!(graph.node(*s), Node::Seqs { truncate: true, .. })
            ))
        });
        if let (true, Some(bucket)) = (truncated, max_len_bucket) {
            rows = rows.min(u64::from(bucket).max(MIN_STAGED_ROWS));
        }
        if rows < MIN_STAGED_ROWS {
            shape.leaves.clear();
            return Ok(Some(shape));
        }
        for (_, row) in &mut shape.leaves {
            let bytes = (rows * *row).div_ceil(8) * 8;
            *row = shape.warp_bytes;
            shape.warp_bytes += bytes;
        }
        shape.rows = rows;
        Ok(Some(shape))
    }
}

/// The resident kernel of an elements step, if it takes the step.
///
/// The kernel also counts the kept rows of each `seqs_where` set of
/// `counts` into its offsets (see [`counts_kept_rows`]).
pub(super) fn lower(
    graph: &Graph,
    part: &Partition,
    node: Handle<Node>,
    into: Stored,
    counts: &[Handle<Node>],
    name: &str,
    max_len_bucket: u32,
) -> Result<Option<Plan>> {
    let mut em = Emitter::new(graph, part, name, THREADS);
    match Shape::of(graph, part, node, Some(max_len_bucket))? {
        Some(shape) => em.resident_kernel(node, into, &shape, counts)?,
        None if per_sequence_block(graph, node) && counts.is_empty() => {
            em.sequence_blocks(node, into)?
        }
        None => return Ok(None),
    }
    Ok(Some(em.finish()))
}

/// Whether the resident kernel of `node` goes over every row of its
/// sequences with the warp converged, a lane per row (a value of one
/// element per row that ranks along the sequence), so that the same loop
/// can count a `seqs_where` set's kept rows: the count kernel's work, done
/// where the rows' values are already in registers.
pub(in crate::general) fn counts_kept_rows(
    graph: &Graph,
    part: &Partition,
    node: Handle<Node>,
) -> Result<bool> {
    Ok(Shape::candidate(graph, part, node)?.is_some_and(|s| {
        s.jagged && s.mode == Mode::Packed && s.width == 1 && ranks(graph, part, node)
    }))
}

/// Whether `node` is a dense value with a block of at least 32 elements per
/// sequence (`[B, N, ...]` padded rows, or `[B, ...]` with 32 static
/// elements or more) and no reduction, which a warp per sequence computes
/// reading the sequence's offsets once (a thread per element reads them for
/// each).
fn per_sequence_block(graph: &Graph, node: Handle<Node>) -> bool {
    let IrType::Tensor(ty) = graph.type_of(node) else {
        return false;
    };
    let rest = &ty.dims[1.min(ty.dims.len())..];
    let padded = rest.contains(&Dim::MaxLen);
    ty.dims.first() == Some(&Dim::Batch)
        && rest
            .iter()
            .all(|d| matches!(d, Dim::MaxLen | Dim::Static(_)))
        && (padded || static_product(rest) >= 32)
        && static_product(rest) > 0
}

/// How the step that computes `node` into `into` is resident, for the plan
/// text (`None` when it is not).
pub(in crate::general) fn note(
    graph: &Graph,
    part: &Partition,
    node: Handle<Node>,
    into: Stored,
) -> Option<String> {
    if part.stored.get(&node).is_some_and(|s| *s != into) {
        return None;
    }
    let Some(shape) = Shape::of(graph, part, node, None).ok()? else {
        return per_sequence_block(graph, node).then(|| "a warp per sequence".to_string());
    };
    let mut note = "resident: a warp per sequence".to_string();
    if !shape.leaves.is_empty() {
        let leaves: Vec<String> = shape.leaves.iter().map(|(h, _)| h.to_string()).collect();
        note.push_str(&format!(", rows of {} in shared memory", leaves.join(" ")));
    }
    Some(note)
}

/// The columns one lane covers: column `c` (clamped into the row, so that
/// every lane computes something readable), its digits over the inner dims,
/// and whether it is a column of the row.
struct Column {
    c: Reg,
    digits: Vec<Reg>,
    valid: Reg,
}

fn mentions(b: Reg, idx: &[Reg], varying: &[Reg]) -> bool {
    varying.contains(&b) || idx.iter().any(|r| varying.contains(r))
}

impl Emitter<'_> {
    /// A hoisted value, or a staged leaf's element read from shared memory.
    pub(super) fn resident_value(&mut self, h: Handle<Node>, at: &At) -> Result<Option<Val>> {
        let Some(res) = &self.resident else {
            return Ok(None);
        };
        let key = Key {
            stats: false,
            node: h,
            b: at.b,
            idx: at.idx.clone(),
        };
        if let Some((_, Hoisted::Value(v))) = res.hoisted.iter().find(|(k, _)| *k == key) {
            return Ok(Some(*v));
        }
        if at.b != res.seq {
            return Ok(None);
        }
        let Some(leaf) = res.staged.iter().find(|s| s.node == h).copied() else {
            return Ok(None);
        };
        let ty = &tensor_type(self.graph, h)?.clone();
        let mut lin = at.idx[0];
        for (k, d) in ty.dims.iter().enumerate().skip(1) {
            let n = match d {
                Dim::Static(n) => *n as i64,
                _ => 1,
            };
            lin = self
                .b
                .ternary(TernOp::MadLo, Type::U64, lin, Operand::Int(n), at.idx[k]);
        }
        let global = self.linear(ty, at)?;
        Ok(Some(self.load_staged(leaf, lin, global)))
    }

    /// The hoisted statistics of softmax `h` (along `axis`) for the line
    /// through `at`.
    pub(super) fn hoisted_stats(
        &self,
        h: Handle<Node>,
        axis: usize,
        at: &At,
    ) -> Option<(Reg, Reg)> {
        let res = self.resident.as_ref()?;
        let key = stats_key(h, axis, at);
        res.hoisted.iter().find_map(|(k, v)| match v {
            Hoisted::Stats(m, s) if *k == key => Some((*m, *s)),
            _ => None,
        })
    }

    /// Element `lin` of a staged leaf's rows, read from shared memory where
    /// the sequence is staged, else element `global` of its buffer.
    fn load_staged(&mut self, leaf: StagedLeaf, lin: Reg, global: Reg) -> Val {
        let st = self.part.stored[&leaf.node];
        let shared = self.staged_addr(leaf.base, lin, leaf.elem);
        let base = self.ptr(st.buffer);
        let global = Address {
            base: self.b.element_addr(base, global, elem_bytes(leaf.elem)),
            offset: 0,
        };
        let ty = raw_type(leaf.elem);
        let (pred, staged) = (
            leaf.fits,
            Guard {
                pred: leaf.fits,
                negate: false,
            },
        );
        let from_shared = self
            .b
            .guarded(staged, |b| b.ld(Space::Shared, ty, 1, shared))[0];
        let unstaged = Guard { pred, negate: true };
        let from_global = self
            .b
            .guarded(unstaged, |b| b.ld(Space::Global, ty, 1, global))[0];
        let bits = match ty {
            Type::U8 => Type::B32,
            ty => ty,
        };
        let raw = self.b.selp(bits, from_shared, from_global, pred);
        match leaf.elem {
            DType::F32 => Val::F(raw),
            DType::F16 | DType::BF16 => Val::F(unpack_f32(&mut self.b, leaf.elem, vec![raw])[0]),
            DType::F64 => {
                let d = self.b.bitcast(RegClass::F64, Type::B64, raw);
                Val::F(self.b.cvt(Type::F32, Type::F64, d))
            }
            DType::I32 => Val::I(self.b.cvt(Type::S64, Type::S32, raw)),
            DType::I64 => Val::I(raw),
            DType::U8 | DType::Bool => Val::I(self.b.cvt(Type::U64, Type::U32, raw)),
        }
    }

    /// The shared address of element `lin` (u64) of rows at `base`.
    fn staged_addr(&mut self, base: Reg, lin: Reg, elem: DType) -> Address {
        let lin = self.b.cvt(Type::U32, Type::U64, lin);
        let addr = self.b.ternary(
            TernOp::MadLo,
            Type::U32,
            lin,
            Operand::Int(i64::from(elem_bytes(elem))),
            base,
        );
        Address {
            base: addr,
            offset: 0,
        }
    }

    fn find_hoisted(&self, key: &Key) -> bool {
        self.resident
            .as_ref()
            .is_some_and(|r| r.hoisted.iter().any(|(k, _)| k == key))
    }

    fn push_hoisted(&mut self, key: Key, v: Hoisted) {
        if let Some(res) = &mut self.resident {
            res.hoisted.push((key, v));
        }
    }

    fn is_uniform(&self, b: Reg, idx: &[Reg]) -> bool {
        self.resident
            .as_ref()
            .is_some_and(|r| r.uniform.contains(&b) && idx.iter().all(|x| r.uniform.contains(x)))
    }

    fn lane(&self) -> Option<Reg> {
        self.resident.as_ref().map(|r| r.lane)
    }

    /// Computes ahead of the current point every subtree of `h`'s tree (read
    /// at `at`) whose index involves none of `varying`; with `descend`, `h`
    /// itself is not (it is what the loop computes).
    fn hoist(&mut self, h: Handle<Node>, at: &At, varying: &[Reg], descend: bool) -> Result<()> {
        let graph = self.graph;
        if matches!(graph.type_of(h), IrType::Seqs) {
            return Ok(());
        }
        if !descend {
            if !mentions(at.b, &at.idx, varying) {
                let key = Key {
                    stats: false,
                    node: h,
                    b: at.b,
                    idx: at.idx.clone(),
                };
                if !self.find_hoisted(&key) {
                    self.preload(h, at, key)?;
                }
                return Ok(());
            }
            if self.part.stored.contains_key(&h) {
                return Ok(());
            }
        }
        match graph.node(h) {
            Node::Unary { .. }
            | Node::Binary { .. }
            | Node::Cast { .. }
            | Node::Select { .. }
            | Node::Compare { .. } => {
                let r = tensor_type(graph, h)?;
                for arg in graph.node(h).operands() {
                    let x = tensor_type(graph, arg)?;
                    let a = self.project(r, x, at);
                    self.hoist(arg, &a, varying, false)?;
                }
            }
            Node::Softmax { arg, axis } => {
                let (arg, axis) = (*arg, *axis);
                if !self.part.softmax_stats.contains_key(&h) {
                    let key = stats_key(h, axis, at);
                    if !mentions(key.b, &key.idx, varying) && !self.find_hoisted(&key) {
                        self.preload_stats(arg, axis, at, key)?;
                    }
                }
                self.hoist(arg, at, varying, false)?;
            }
            Node::Reduce { arg, axis, .. } => {
                let (arg, axis) = (*arg, *axis);
                let x = tensor_type(graph, arg)?.clone();
                let r = tensor_type(graph, h)?.clone();
                let p = self.b.reg(RegClass::B64);
                let line = line_through(&x, &r, axis, at, p);
                let mut inner = varying.to_vec();
                inner.push(p);
                self.hoist(arg, &line, &inner, false)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Computes `h` at `at` (invariant in the loops about to run) now.
    fn preload(&mut self, h: Handle<Node>, at: &At, key: Key) -> Result<()> {
        let graph = self.graph;
        let v = if self.part.stored.contains_key(&h) {
            self.value(h, at)?
        } else {
            // What its own loops read that does not change along them first.
            self.hoist(h, at, &[], true)?;
            let split = match graph.node(h) {
                Node::Reduce { op, arg, .. } => {
                    let x = tensor_type(graph, *arg)?;
                    splits(*op) && !is_int(x.dtype) && self.is_uniform(at.b, &at.idx)
                }
                _ => false,
            };
            let saved = self.lanes.take();
            if split {
                self.lanes = self.lane();
            }
            let v = self.define(h, at);
            self.lanes = saved;
            v?
        };
        self.push_hoisted(key, Hoisted::Value(v));
        Ok(())
    }

    /// Computes softmax `h`'s statistics for the line through `at` now.
    fn preload_stats(&mut self, arg: Handle<Node>, axis: usize, at: &At, key: Key) -> Result<()> {
        let x = tensor_type(self.graph, arg)?.clone();
        let p = self.b.reg(RegClass::B64);
        let mut line = at.clone();
        line.idx[axis] = p;
        self.hoist(arg, &line, &[p], false)?;
        let split = self.is_uniform(key.b, &key.idx);
        let saved = self.lanes.take();
        if split {
            self.lanes = self.lane();
        }
        let stats = self.softmax_stats(arg, &x, axis, at);
        self.lanes = saved;
        let (m, s) = stats?;
        self.push_hoisted(key, Hoisted::Stats(m, s));
        Ok(())
    }

    /// Stores `v` at `lin` of `into` where `valid` holds.
    fn store_where(&mut self, into: Stored, lin: Reg, v: Val, valid: Reg) {
        let skip = self.b.label();
        self.b.bra_if(valid, true, skip);
        self.store_always(into, lin, v);
        self.b.place(skip);
    }

    /// The whole kernel: a warp per sequence, the sequence's rows staged when
    /// they fit, then its elements.
    fn resident_kernel(
        &mut self,
        node: Handle<Node>,
        into: Stored,
        shape: &Shape,
        counts: &[Handle<Node>],
    ) -> Result<()> {
        self.items = SizeExpr::Batch * SizeExpr::Const(32);
        self.b.set_min_ctas_per_sm(MIN_CTAS_PER_SM);
        let (thread, threads) = self.b.global_thread_index();
        let lane = self
            .b
            .binary(BinOp::And, Type::U64, thread, Operand::Int(31));
        let warp = self
            .b
            .binary(BinOp::Shr, Type::U64, thread, Operand::Int(5));
        let warps = self
            .b
            .binary(BinOp::Shr, Type::U64, threads, Operand::Int(5));
        // This warp's share of shared memory.
        let slice = if shape.leaves.is_empty() {
            None
        } else {
            let per_block = shape.warp_bytes * u64::from(THREADS / 32);
            let array = self.b.shared(Type::B64, (per_block / 8) as u32);
            let tid = self.b.special(Special::TidX);
            let warp_in_block = self.b.binary(BinOp::Shr, Type::U32, tid, Operand::Int(5));
            let base = self.b.shared_addr(array);
            Some(self.b.ternary(
                TernOp::MadLo,
                Type::U32,
                warp_in_block,
                Operand::Int(shape.warp_bytes as i64),
                base,
            ))
        };
        let columns = self.columns(shape, lane);
        let batch = self.size(SizeExpr::Batch);
        let seqs = self.b.begin_range(Type::U64, warp, batch, warps);
        let b = seqs.counter;
        self.enter_sequence(b)?;
        let fresh = |staged| Resident {
            seq: b,
            lane,
            staged,
            hoisted: Vec::new(),
            uniform: vec![b],
        };
        match slice {
            Some(slice) => {
                // One body: a staged leaf's read takes shared memory where the
                // sequence fits, global memory where it does not (the same on
                // every lane), so the code is not emitted twice.
                let fits = self.fits(shape, b)?;
                let mut staged = Vec::new();
                for &(leaf, offset) in &shape.leaves {
                    let base =
                        self.b
                            .binary(BinOp::Add, Type::U32, slice, Operand::Int(offset as i64));
                    let elem = self.part.stored[&leaf].elem;
                    staged.push(StagedLeaf {
                        node: leaf,
                        elem,
                        base,
                        fits,
                    });
                }
                let skip = self.b.label();
                self.b.bra_if(fits, true, skip);
                for leaf in &staged {
                    self.stage(leaf, b, lane)?;
                }
                self.b.place(skip);
                self.b.warp_sync();
                self.resident = Some(fresh(staged));
                self.sequence(node, into, shape, &columns, (b, lane), counts)?;
                // Every lane is done with the rows before the next sequence's.
                self.b.warp_sync();
            }
            None => {
                self.resident = Some(fresh(Vec::new()));
                self.sequence(node, into, shape, &columns, (b, lane), counts)?;
            }
        }
        self.resident = None;
        self.memo = None;
        self.b.end_range(seqs);
        Ok(())
    }

    /// A dense `[B, ...]` value a warp per sequence: lanes over the
    /// sequence's block of elements (see [`per_sequence_block`]).
    fn sequence_blocks(&mut self, node: Handle<Node>, into: Stored) -> Result<()> {
        let ty = tensor_type(self.graph, node)?.clone();
        self.items = SizeExpr::Batch * SizeExpr::Const(32);
        let (thread, threads) = self.b.global_thread_index();
        let lane = self
            .b
            .binary(BinOp::And, Type::U64, thread, Operand::Int(31));
        let warp = self
            .b
            .binary(BinOp::Shr, Type::U64, thread, Operand::Int(5));
        let warps = self
            .b
            .binary(BinOp::Shr, Type::U64, threads, Operand::Int(5));
        let zero = self.b.mov(Type::U64, Operand::Int(0));
        let mut extents = Vec::new();
        for &d in &ty.dims[1..] {
            extents.push(self.extent(d, zero)?);
        }
        let mut block = self.b.mov(Type::U64, Operand::Int(1));
        for &e in &extents {
            block = self.b.binary(BinOp::Mul, Type::U64, block, e);
        }
        let batch = self.size(SizeExpr::Batch);
        let seqs = self.b.begin_range(Type::U64, warp, batch, warps);
        let b = seqs.counter;
        self.enter_sequence(b)?;
        let first = self.b.binary(BinOp::Mul, Type::U64, b, block);
        let elems = self.b.begin_range(Type::U64, lane, block, Operand::Int(32));
        let e = elems.counter;
        let mut idx = vec![b];
        idx.extend(self.digits(e, &extents));
        let v = self.define(node, &At { b, idx })?;
        let lin = self.b.binary(BinOp::Add, Type::U64, first, e);
        self.store_always(into, lin, v);
        self.b.end_range(elems);
        self.memo = None;
        self.b.end_range(seqs);
        Ok(())
    }

    /// The columns of each lane (per kernel, so the same registers index
    /// every row).
    fn columns(&mut self, shape: &Shape, lane: Reg) -> Vec<Column> {
        let inner: Vec<Operand> = shape
            .inner
            .iter()
            .map(|&n| Operand::Int(n as i64))
            .collect();
        let width = shape.width as i64;
        let mut out = Vec::new();
        let column = |em: &mut Self, raw: Reg| {
            let valid = em.b.setp(Cmp::Lt, Type::U64, raw, Operand::Int(width));
            let c =
                em.b.binary(BinOp::Min, Type::U64, raw, Operand::Int(width - 1));
            let digits = if inner.is_empty() {
                Vec::new()
            } else {
                em.digits(c, &inner)
            };
            Column { c, digits, valid }
        };
        match shape.mode {
            Mode::Lanes => {
                for k in 0..shape.width.div_ceil(32) {
                    let raw =
                        self.b
                            .binary(BinOp::Add, Type::U64, lane, Operand::Int(32 * k as i64));
                    out.push(column(self, raw));
                }
            }
            Mode::Packed => {
                let raw = self
                    .b
                    .binary(BinOp::Rem, Type::U64, lane, Operand::Int(width));
                out.push(column(self, raw));
            }
            Mode::Coop => {}
        }
        out
    }

    /// Whether every staged set's sequence `b` fits the staged rows.
    fn fits(&mut self, shape: &Shape, b: Reg) -> Result<Reg> {
        let mut longest = self.b.mov(Type::U64, Operand::Int(0));
        let mut sets: Vec<Handle<Node>> = Vec::new();
        for &(leaf, _) in &shape.leaves {
            let ty = tensor_type(self.graph, leaf)?;
            if let Some(s) = ty.seqs()
                && !sets.contains(&s)
            {
                sets.push(s);
                let n = self.seq_len(s, b)?;
                longest = self.b.binary(BinOp::Max, Type::U64, longest, n);
            }
        }
        Ok(self
            .b
            .setp(Cmp::Le, Type::U64, longest, Operand::Int(shape.rows as i64)))
    }

    /// Copies rows `0..n_b` of `leaf` to its shared memory.
    fn stage(&mut self, leaf: &StagedLeaf, b: Reg, lane: Reg) -> Result<()> {
        let (base, leaf) = (leaf.base, leaf.node);
        let ty = tensor_type(self.graph, leaf)?.clone();
        let st = self.part.stored[&leaf];
        let s = ty
            .seqs()
            .ok_or_else(|| unsupported(self.graph, leaf, "staging a dense value"))?;
        let width = static_product(&ty.dims[1..]) as i64;
        let start = self.seq_start(s, b)?;
        let n = self.seq_len(s, b)?;
        let count = self.b.binary(BinOp::Mul, Type::U64, n, Operand::Int(width));
        let first = self
            .b
            .binary(BinOp::Mul, Type::U64, start, Operand::Int(width));
        let src = self.ptr(st.buffer);
        let range = self.b.begin_range(Type::U64, lane, count, Operand::Int(32));
        let e = range.counter;
        let g = self.b.binary(BinOp::Add, Type::U64, first, e);
        let addr = self.b.element_addr(src, g, elem_bytes(st.elem));
        let raw = raw_type(st.elem);
        let v = self.b.ld(
            Space::Global,
            raw,
            1,
            Address {
                base: addr,
                offset: 0,
            },
        );
        let to = self.staged_addr(base, e, st.elem);
        self.b.st(Space::Shared, raw, to, v);
        self.b.end_range(range);
        Ok(())
    }

    /// One sequence's elements (the sequence's state is in `self.resident`).
    fn sequence(
        &mut self,
        node: Handle<Node>,
        into: Stored,
        shape: &Shape,
        columns: &[Column],
        (b, lane): (Reg, Reg),
        counts: &[Handle<Node>],
    ) -> Result<()> {
        let ty = tensor_type(self.graph, node)?.clone();
        let width = shape.width as i64;
        let converged =
            shape.mode == Mode::Packed && width == 1 && ranks(self.graph, self.part, node);
        let counts_here = shape.jagged && converged;
        if !counts_here && !counts.is_empty() {
            return Err(unsupported(
                self.graph,
                node,
                "a count of kept rows in a resident kernel that is not converged on its rows",
            ));
        }
        if !shape.jagged {
            // `[B, inner...]`: the sequence's one row of results.
            let row = self.b.binary(BinOp::Mul, Type::U64, b, Operand::Int(width));
            if shape.mode == Mode::Coop {
                let range = self.b.begin_range(
                    Type::U64,
                    Operand::Int(0),
                    Operand::Int(width),
                    Operand::Int(1),
                );
                let c = range.counter;
                let mut idx = vec![b];
                idx.extend(self.column_digits(shape, c));
                let mark = self.enter_row(c);
                let v = self.warp_element(node, &At { b, idx }, lane)?;
                self.leave_row(mark);
                let lin = self.b.binary(BinOp::Add, Type::U64, row, c);
                let first_lane = self.b.setp(Cmp::Eq, Type::U64, lane, Operand::Int(0));
                self.store_where(into, lin, v, first_lane);
                self.b.end_range(range);
                return Ok(());
            }
            for col in columns {
                let mut idx = vec![b];
                idx.extend_from_slice(&col.digits);
                let at = At { b, idx };
                self.hoist(node, &at, &[], true)?;
                let v = self.define(node, &at)?;
                let lin = self.b.binary(BinOp::Add, Type::U64, row, col.c);
                self.store_where(into, lin, v, col.valid);
            }
            return Ok(());
        }
        let s = ty
            .seqs()
            .ok_or_else(|| unsupported(self.graph, node, "a resident kernel of a dense value"))?;
        let start = self.seq_start(s, b)?;
        let next = self.b.binary(BinOp::Add, Type::U64, b, Operand::Int(1));
        let end = self.seq_start(s, next)?;
        let stored_rows = self.b.binary(BinOp::Sub, Type::U64, end, start);
        let len = self.seq_len(s, b)?;
        // Per sequence: what does not change along the rows.
        let row = self.b.reg(RegClass::B64);
        match shape.mode {
            Mode::Coop => {
                let mut idx = vec![row];
                let mut varying = vec![row];
                for _ in &shape.inner {
                    let d = self.b.reg(RegClass::B64);
                    idx.push(d);
                    varying.push(d);
                }
                self.hoist(node, &At { b, idx }, &varying, true)?;
            }
            _ => {
                for col in columns {
                    let mut idx = vec![row];
                    idx.extend_from_slice(&col.digits);
                    self.hoist(node, &At { b, idx }, &[row], true)?;
                }
            }
        }
        match shape.mode {
            Mode::Lanes => {
                let rows =
                    self.b
                        .begin_range(Type::U64, Operand::Int(0), stored_rows, Operand::Int(1));
                let i = rows.counter;
                let first = self.b.binary(BinOp::Add, Type::U64, start, i);
                let base = self
                    .b
                    .binary(BinOp::Mul, Type::U64, first, Operand::Int(width));
                let next_row = self.b.label();
                let valid = self.b.setp(Cmp::Lt, Type::U64, i, len);
                let compute = self.b.label();
                self.b.bra_if(valid, false, compute);
                for col in columns {
                    let lin = self.b.binary(BinOp::Add, Type::U64, base, col.c);
                    let z = self.zero(into.elem);
                    self.store_where(into, lin, z, col.valid);
                }
                self.b.bra(next_row);
                self.b.place(compute);
                // Per row: what does not change along the row's elements.
                let mark = self.enter_row(i);
                let varying: Vec<Reg> = columns
                    .iter()
                    .flat_map(|c| std::iter::once(c.c).chain(c.digits.iter().copied()))
                    .collect();
                let ats: Vec<At> = columns
                    .iter()
                    .map(|col| {
                        let mut idx = vec![i];
                        idx.extend_from_slice(&col.digits);
                        At { b, idx }
                    })
                    .collect();
                for at in &ats {
                    self.hoist(node, at, &varying, true)?;
                }
                for (col, at) in columns.iter().zip(&ats) {
                    let v = self.define(node, at)?;
                    let lin = self.b.binary(BinOp::Add, Type::U64, base, col.c);
                    self.store_where(into, lin, v, col.valid);
                }
                self.leave_row(mark);
                self.b.place(next_row);
                self.b.end_range(rows);
            }
            Mode::Packed => {
                let per = 32 / width;
                let col = &columns[0];
                // The kept rows of each set counted here, per lane.
                let counters: Vec<(Handle<Node>, Reg)> = counts
                    .iter()
                    .map(|&seqs| (seqs, self.b.mov(Type::U32, Operand::Int(0))))
                    .collect();
                let offset = self
                    .b
                    .binary(BinOp::Div, Type::U64, lane, Operand::Int(width));
                let rows =
                    self.b
                        .begin_range(Type::U64, Operand::Int(0), stored_rows, Operand::Int(per));
                let i = self.b.binary(BinOp::Add, Type::U64, rows.counter, offset);
                let next_row = self.b.label();
                let past = self.b.setp(Cmp::Ge, Type::U64, i, stored_rows);
                let valid = self.b.setp(Cmp::Lt, Type::U64, i, len);
                if converged {
                    // Every lane computes (a lane past the rows or the
                    // truncation computes row 0 and stores no value or a
                    // zero), so that the rank reads its line a group of
                    // 32 rows at a time with shuffles.
                    let row = self.b.selp(Type::U64, i, Operand::Int(0), valid);
                    self.converged = Some(lane);
                    let at = At { b, idx: vec![row] };
                    let v = self.define(node, &at);
                    self.converged = None;
                    let v = v?;
                    for &(seqs, count) in &counters {
                        let flag = self.counted_flag(seqs, (node, v), &at, valid)?;
                        self.b.binary_to(BinOp::Add, Type::U32, count, count, flag);
                    }
                    let (ty, zero) = if is_int(into.elem) {
                        (Type::S64, Operand::Int(0))
                    } else {
                        (Type::F32, Operand::F32(0.0))
                    };
                    let v = match v {
                        Val::F(r) if is_int(into.elem) => self.b.cvt(Type::S64, Type::F32, r),
                        Val::I(r) if !is_int(into.elem) => self.b.cvt(Type::F32, Type::S64, r),
                        Val::F(r) | Val::I(r) => r,
                    };
                    let v = self.b.selp(ty, v, zero, valid);
                    self.b.bra_if(past, false, next_row);
                    let first = self.b.binary(BinOp::Add, Type::U64, start, i);
                    let lin = self.b.binary(BinOp::Add, Type::U64, first, col.c);
                    let v = if is_int(into.elem) {
                        Val::I(v)
                    } else {
                        Val::F(v)
                    };
                    self.store_always(into, lin, v);
                    self.b.place(next_row);
                    self.b.end_range(rows);
                    for (seqs, count) in counters {
                        self.store_count(seqs, count, b, lane)?;
                    }
                    return Ok(());
                }
                self.b.bra_if(past, false, next_row);
                let first = self.b.binary(BinOp::Add, Type::U64, start, i);
                let lin =
                    self.b
                        .ternary(TernOp::MadLo, Type::U64, first, Operand::Int(width), col.c);
                let compute = self.b.label();
                self.b.bra_if(valid, false, compute);
                let z = self.zero(into.elem);
                self.store_always(into, lin, z);
                self.b.bra(next_row);
                self.b.place(compute);
                let mut idx = vec![i];
                idx.extend_from_slice(&col.digits);
                let v = self.define(node, &At { b, idx })?;
                self.store_always(into, lin, v);
                self.b.place(next_row);
                self.b.end_range(rows);
            }
            Mode::Coop => {
                let count = self
                    .b
                    .binary(BinOp::Mul, Type::U64, stored_rows, Operand::Int(width));
                let base = self
                    .b
                    .binary(BinOp::Mul, Type::U64, start, Operand::Int(width));
                // 32 elements at a time, one after the other; lane `j` keeps
                // the `j`-th, and the lanes store the 32 together.
                let chunks =
                    self.b
                        .begin_range(Type::U64, Operand::Int(0), count, Operand::Int(32));
                let e0 = chunks.counter;
                let rest = self.b.binary(BinOp::Sub, Type::U64, count, e0);
                let n = self.b.binary(BinOp::Min, Type::U64, rest, Operand::Int(32));
                let int = is_int(into.elem);
                let mine = match self.zero(into.elem) {
                    Val::F(r) | Val::I(r) => r,
                };
                let elems = self
                    .b
                    .begin_range(Type::U64, Operand::Int(0), n, Operand::Int(1));
                let j = elems.counter;
                let e = self.b.binary(BinOp::Add, Type::U64, e0, j);
                let i = self.b.binary(BinOp::Div, Type::U64, e, Operand::Int(width));
                let c = self.b.binary(BinOp::Rem, Type::U64, e, Operand::Int(width));
                let next = self.b.label();
                // Rows n_b <= i < L_b keep their zero.
                let valid = self.b.setp(Cmp::Lt, Type::U64, i, len);
                self.b.bra_if(valid, true, next);
                let mut idx = vec![i];
                idx.extend(self.column_digits(shape, c));
                let mark = self.enter_row(i);
                let v = self.warp_element(node, &At { b, idx }, lane)?;
                self.leave_row(mark);
                let keep = self.b.setp(Cmp::Eq, Type::U64, lane, j);
                let (ty, v) = if int {
                    (Type::S64, self.i64(v))
                } else {
                    (Type::F32, self.f32(v))
                };
                let kept = self.b.selp(ty, v, mine, keep);
                self.b.mov_to(ty, mine, kept);
                self.b.place(next);
                self.b.end_range(elems);
                let offset = self.b.binary(BinOp::Add, Type::U64, e0, lane);
                let lin = self.b.binary(BinOp::Add, Type::U64, base, offset);
                let inside = self.b.setp(Cmp::Lt, Type::U64, offset, count);
                let v = if int { Val::I(mine) } else { Val::F(mine) };
                self.store_where(into, lin, v, inside);
                self.b.end_range(chunks);
            }
        }
        Ok(())
    }

    /// The digits of column `c` over the inner dims.
    fn column_digits(&mut self, shape: &Shape, c: Reg) -> Vec<Reg> {
        if shape.inner.is_empty() {
            return Vec::new();
        }
        let inner: Vec<Operand> = shape
            .inner
            .iter()
            .map(|&n| Operand::Int(n as i64))
            .collect();
        self.digits(c, &inner)
    }

    /// One element computed by the whole warp (its reduction split over the
    /// lanes); every lane gets it.
    fn warp_element(&mut self, node: Handle<Node>, at: &At, lane: Reg) -> Result<Val> {
        if let Some(res) = &mut self.resident {
            res.uniform.extend(at.idx.iter().copied());
        }
        self.hoist(node, at, &[], true)?;
        let saved = self.lanes.replace(lane);
        let v = self.define(node, at);
        self.lanes = saved;
        v
    }

    /// Opens a row's scope: `i` is the same on every lane; returns what
    /// [`Self::leave_row`] restores.
    fn enter_row(&mut self, i: Reg) -> (usize, usize) {
        match &mut self.resident {
            Some(res) => {
                let mark = (res.hoisted.len(), res.uniform.len());
                res.uniform.push(i);
                mark
            }
            None => (0, 0),
        }
    }

    /// Drops what was hoisted inside the row's scope.
    fn leave_row(&mut self, (hoisted, uniform): (usize, usize)) {
        if let Some(res) = &mut self.resident {
            res.hoisted.truncate(hoisted);
            res.uniform.truncate(uniform);
        }
    }
}

/// Whether the fused tree of `node` ranks along the sequence (a `rank` of
/// a `[%s]` value), which a converged warp computes a group of rows at a
/// time ([`Emitter::rank`]).
fn ranks(graph: &Graph, part: &Partition, node: Handle<Node>) -> bool {
    let mut tree = fused_operands(graph, part, node);
    tree.push(node);
    tree.iter().any(|&h| match graph.node(h) {
        Node::Rank { arg, axis: 0, .. } => {
            matches!(graph.type_of(*arg), IrType::Tensor(t) if t.dims.len() == 1)
        }
        _ => false,
    })
}

/// Whether a float reduction `op` can be split over the lanes (the warp's
/// partial results are combined by `Emitter::combine`).
fn splits(op: ReduceOp) -> bool {
    matches!(
        op,
        ReduceOp::Sum | ReduceOp::Mean | ReduceOp::Max | ReduceOp::LogSumExp
    )
}

/// The key of softmax `h`'s statistics along `axis` for the line through `at`.
fn stats_key(h: Handle<Node>, axis: usize, at: &At) -> Key {
    let mut idx = at.idx.clone();
    idx.remove(axis);
    Key {
        stats: true,
        node: h,
        b: at.b,
        idx,
    }
}

/// The index of `x` along its reduced `axis` (at `p`) for an element `at` of
/// the reduction's result `r`.
fn line_through(x: &TensorType, r: &TensorType, axis: usize, at: &At, p: Reg) -> At {
    let skip = usize::from(r.dims.len() == x.dims.len());
    let mut idx = at.idx[skip..].to_vec();
    idx.insert(axis, p);
    At { b: at.b, idx }
}

/// The type a staged element moves as (its bits).
fn raw_type(elem: DType) -> Type {
    match elem {
        DType::F32 => Type::F32,
        DType::U8 | DType::Bool => Type::U8,
        _ => match elem_bytes(elem) {
            2 => Type::B16,
            4 => Type::B32,
            _ => Type::B64,
        },
    }
}

/// The kept rows of each sequence of a `seqs_where` set into `offsets[b +
/// 1]` (a warp per sequence, lanes over its rows), then their prefix sum;
/// only the prefix sum where an earlier resident kernel `counted` them.
///
/// The count kernel also stores the sibling values `also` (one element per
/// row of the set's parent), each computed at the row whose flag it tests.
pub(super) fn kept_offsets(
    graph: &Graph,
    part: &Partition,
    seqs: Handle<Node>,
    also: &[(Handle<Node>, Stored)],
    counted: bool,
    name: &str,
) -> Result<Vec<Plan>> {
    let mut plans = Vec::with_capacity(2);
    if !counted {
        let mut em = Emitter::new(graph, part, name, THREADS);
        em.count_kept_rows(seqs, also)?;
        plans.push(em.finish());
    }
    let mut em = Emitter::new(graph, part, &format!("{name}_prefix"), BLOCK_THREADS);
    em.prefix_kept(seqs)?;
    plans.push(em.finish());
    Ok(plans)
}

/// The kept rows of compactions over one kept set, a warp per sequence:
/// the lanes test 32 rows at a time and scan their flags with shuffles,
/// then copy each kept row of every compacted value together, a lane per
/// element.
pub(super) fn compact(
    graph: &Graph,
    part: &Partition,
    nodes: &[(Handle<Node>, Stored)],
    name: &str,
) -> Result<Plan> {
    let mut em = Emitter::new(graph, part, name, THREADS);
    // As for resident kernels: without it ptxas held a compaction whose
    // mask compares against a stored rank to 40 registers and spilled
    // (sm_90a, ptxas 12.9).
    em.b.set_min_ctas_per_sm(MIN_CTAS_PER_SM);
    em.compact_rows(nodes)?;
    Ok(em.finish())
}

impl Emitter<'_> {
    /// `(lane, b)`: a grid-stride loop over the sequences, a warp each; the
    /// loop is closed by [`Self::end_sequences`].
    fn begin_sequences(&mut self) -> Result<(Reg, crate::kernel::RangeLoop)> {
        self.items = SizeExpr::Batch * SizeExpr::Const(32);
        let (thread, threads) = self.b.global_thread_index();
        let lane = self
            .b
            .binary(BinOp::And, Type::U64, thread, Operand::Int(31));
        let warp = self
            .b
            .binary(BinOp::Shr, Type::U64, thread, Operand::Int(5));
        let warps = self
            .b
            .binary(BinOp::Shr, Type::U64, threads, Operand::Int(5));
        let batch = self.size(SizeExpr::Batch);
        let seqs = self.b.begin_range(Type::U64, warp, batch, warps);
        self.enter_sequence(seqs.counter)?;
        Ok((lane, seqs))
    }

    fn end_sequences(&mut self, seqs: crate::kernel::RangeLoop) {
        self.memo = None;
        self.b.end_range(seqs);
    }

    /// 1 (u32) where the mask of a `seqs_where` keeps row `i` of sequence
    /// `b`, else 0: row `i` of the whole warp's group of 32 rows (lane
    /// `lane`, `i < n`: `inside`), 0 outside. The row shifts of the mask
    /// and of the siblings `also` come from the neighbouring lanes
    /// ([`Emitter::shift_rows`]); each sibling is computed and stored at
    /// row `i` first, and the mask reads it there from its register.
    fn kept_flag(
        &mut self,
        mask: Handle<Node>,
        also: &[(Handle<Node>, Stored)],
        (b, i, lane): (Reg, Reg, Reg),
        inside: Reg,
    ) -> Result<Reg> {
        let at = At { b, idx: vec![i] };
        let mut shifted = super::row_shifts(self.graph, self.part, mask);
        for &(h, _) in also {
            for s in super::row_shifts(self.graph, self.part, h) {
                if !shifted.contains(&s) {
                    shifted.push(s);
                }
            }
        }
        self.shifted = shifted;
        let values = self.shift_rows(&at, lane, inside)?;
        let flag = self.b.mov(Type::U32, Operand::Int(0));
        let skip = self.b.label();
        self.b.bra_if(inside, true, skip);
        self.cse = Some(super::Cse {
            values,
            branching: 0,
        });
        let m = self.siblings_then(mask, also, &at);
        self.cse = None;
        let z = self.is_zero(m?);
        let f = self.b.selp(Type::U32, Operand::Int(0), Operand::Int(1), z);
        self.b.mov_to(Type::U32, flag, f);
        self.b.place(skip);
        Ok(flag)
    }

    /// The siblings `also` at `at`, each computed, stored and remembered
    /// for the rest of the row's code, then the value of `mask` there.
    fn siblings_then(
        &mut self,
        mask: Handle<Node>,
        also: &[(Handle<Node>, Stored)],
        at: &At,
    ) -> Result<Val> {
        for &(h, into) in also {
            let v = self.computed(h, at)?;
            let ty = tensor_type(self.graph, h)?.clone();
            let lin = self.linear(&ty, at)?;
            self.store(into, lin, v);
            if let Some(cse) = &mut self.cse {
                cse.values.push((h, at.clone(), v));
            }
        }
        self.value(mask, at)
    }

    /// Kept rows per sequence into `offsets[b + 1]`, and the siblings
    /// `also` of every row.
    fn count_kept_rows(
        &mut self,
        seqs: Handle<Node>,
        also: &[(Handle<Node>, Stored)],
    ) -> Result<()> {
        let (mask, parent) = self.kept_mask(seqs)?;
        let (lane, range) = self.begin_sequences()?;
        let b = range.counter;
        let n = self.seq_len(parent, b)?;
        let count = self.b.mov(Type::U32, Operand::Int(0));
        // The whole warp on each group of 32 rows (lane l on row i0 + l).
        let rows = self
            .b
            .begin_range(Type::U64, Operand::Int(0), n, Operand::Int(32));
        let i = self.b.binary(BinOp::Add, Type::U64, rows.counter, lane);
        let inside = self.b.setp(Cmp::Lt, Type::U64, i, n);
        let one = self.kept_flag(mask, also, (b, i, lane), inside)?;
        self.b.binary_to(BinOp::Add, Type::U32, count, count, one);
        self.b.end_range(rows);
        self.store_count(seqs, count, b, lane)?;
        self.end_sequences(range);
        Ok(())
    }

    /// The lanes' counts `count` of sequence `b`'s kept rows of `seqs`,
    /// summed by shuffles, into `offsets[b + 1]` (lane 0 stores).
    fn store_count(&mut self, seqs: Handle<Node>, count: Reg, b: Reg, lane: Reg) -> Result<()> {
        let into = self.set_offsets(seqs)?;
        let mut total = count;
        for offset in [16, 8, 4, 2, 1] {
            let other = self.b.shfl(ShflMode::Bfly, total, Operand::Int(offset), 31);
            total = self.b.binary(BinOp::Add, Type::U32, total, other);
        }
        let total = self.b.cvt(Type::U64, Type::U32, total);
        let slot = self.b.binary(BinOp::Add, Type::U64, b, Operand::Int(1));
        let first_lane = self.b.setp(Cmp::Eq, Type::U64, lane, Operand::Int(0));
        self.store_where(into, slot, Val::I(total), first_lane);
        Ok(())
    }

    /// 1 (u32) where the mask of `seqs` keeps row `at` and `valid` (a row
    /// of the sequence), else 0; the mask reads the value `(node, v)` of
    /// the kernel's own element at that row from its register.
    fn counted_flag(
        &mut self,
        seqs: Handle<Node>,
        (node, v): (Handle<Node>, Val),
        at: &At,
        valid: Reg,
    ) -> Result<Reg> {
        let (mask, _) = self.kept_mask(seqs)?;
        self.cse = Some(super::Cse {
            values: vec![(node, at.clone(), v)],
            branching: 0,
        });
        let m = self.value(mask, at);
        self.cse = None;
        let z = self.is_zero(m?);
        let keep = self.b.selp(Type::U32, Operand::Int(0), Operand::Int(1), z);
        Ok(self.b.selp(Type::U32, keep, Operand::Int(0), valid))
    }

    /// The kept rows of compaction `h` into `into`.
    fn compact_rows(&mut self, nodes: &[(Handle<Node>, Stored)]) -> Result<()> {
        let graph = self.graph;
        // Each compacted value: what it reads, its row width and inner dims.
        let mut copies = Vec::with_capacity(nodes.len());
        let mut kept_set = None;
        for &(h, into) in nodes {
            let Node::Compact { arg, seqs } = graph.node(h) else {
                return Err(unsupported(graph, h, "not a compaction"));
            };
            if kept_set.is_some_and(|s| s != *seqs) {
                return Err(unsupported(
                    graph,
                    h,
                    "compactions over different kept sets",
                ));
            }
            kept_set = Some(*seqs);
            let x = tensor_type(graph, *arg)?;
            let inner: Vec<Operand> = x.dims[1..]
                .iter()
                .map(|d| match d {
                    Dim::Static(n) => Operand::Int(*n as i64),
                    _ => Operand::Int(1),
                })
                .collect();
            copies.push((*arg, into, static_product(&x.dims[1..]) as i64, inner));
        }
        let Some(seqs) = kept_set else {
            return Ok(());
        };
        let (mask, parent) = self.kept_mask(seqs)?;
        let (lane, range) = self.begin_sequences()?;
        let b = range.counter;
        let n = self.seq_len(parent, b)?;
        let first = self.seq_start(seqs, b)?;
        let lane32 = self.b.cvt(Type::U32, Type::U64, lane);
        let kept = self.b.mov(Type::U64, Operand::Int(0));
        let chunks = self
            .b
            .begin_range(Type::U64, Operand::Int(0), n, Operand::Int(32));
        let i0 = chunks.counter;
        // Lane l tests row i0 + l.
        let i = self.b.binary(BinOp::Add, Type::U64, i0, lane);
        let inside = self.b.setp(Cmp::Lt, Type::U64, i, n);
        let flag = self.kept_flag(mask, &[], (b, i, lane), inside)?;
        // Inclusive scan of the flags over the lanes.
        let mut incl = flag;
        for offset in [1, 2, 4, 8, 16] {
            let below = self.b.shfl(ShflMode::Up, incl, Operand::Int(offset), 0);
            let has = self
                .b
                .setp(Cmp::Ge, Type::U32, lane32, Operand::Int(offset));
            let add = self.b.selp(Type::U32, below, Operand::Int(0), has);
            incl = self.b.binary(BinOp::Add, Type::U32, incl, add);
        }
        let before = self.b.binary(BinOp::Sub, Type::U32, incl, flag);
        let total = self.b.shfl(ShflMode::Idx, incl, Operand::Int(31), 31);
        // A value of one element per row: each lane copies its own kept
        // row's, so the warp's stores (and reads) are coalesced.
        let (narrow, wide): (Vec<_>, Vec<_>) = copies.into_iter().partition(|c| c.2 == 1);
        if !narrow.is_empty() {
            let skip = self.b.label();
            let dropped = self.b.setp(Cmp::Eq, Type::U32, flag, Operand::Int(0));
            self.b.bra_if(dropped, false, skip);
            let slot = self.b.cvt(Type::U64, Type::U32, before);
            let dest = self.b.binary(BinOp::Add, Type::U64, first, kept);
            let dest = self.b.binary(BinOp::Add, Type::U64, dest, slot);
            let zero = self.b.mov(Type::U64, Operand::Int(0));
            for (arg, into, _, inner) in &narrow {
                let mut idx = vec![i];
                idx.extend(inner.iter().map(|_| zero));
                let v = self.value(*arg, &At { b, idx })?;
                self.store_always(*into, dest, v);
            }
            self.b.place(skip);
        }
        // Each row of the chunk in turn, copied by the whole warp if kept.
        if !wide.is_empty() {
            let rest = self.b.binary(BinOp::Sub, Type::U64, n, i0);
            let rows = self.b.binary(BinOp::Min, Type::U64, rest, Operand::Int(32));
            let row = self
                .b
                .begin_range(Type::U64, Operand::Int(0), rows, Operand::Int(1));
            let j = self.b.cvt(Type::U32, Type::U64, row.counter);
            let keep = self.b.shfl(ShflMode::Idx, flag, j, 31);
            let slot = self.b.shfl(ShflMode::Idx, before, j, 31);
            let next = self.b.label();
            let dropped = self.b.setp(Cmp::Eq, Type::U32, keep, Operand::Int(0));
            self.b.bra_if(dropped, false, next);
            let source = self.b.binary(BinOp::Add, Type::U64, i0, row.counter);
            let slot = self.b.cvt(Type::U64, Type::U32, slot);
            let dest = self.b.binary(BinOp::Add, Type::U64, first, kept);
            let dest = self.b.binary(BinOp::Add, Type::U64, dest, slot);
            for (arg, into, width, inner) in &wide {
                let cols =
                    self.b
                        .begin_range(Type::U64, lane, Operand::Int(*width), Operand::Int(32));
                let k = cols.counter;
                let mut idx = vec![source];
                if !inner.is_empty() {
                    idx.extend(self.digits(k, inner));
                }
                let v = self.value(*arg, &At { b, idx })?;
                let lin = self
                    .b
                    .ternary(TernOp::MadLo, Type::U64, dest, Operand::Int(*width), k);
                self.store_always(*into, lin, v);
                self.b.end_range(cols);
            }
            self.b.place(next);
            self.b.end_range(row);
        }
        let total = self.b.cvt(Type::U64, Type::U32, total);
        self.b.binary_to(BinOp::Add, Type::U64, kept, kept, total);
        self.b.end_range(chunks);
        self.end_sequences(range);
        Ok(())
    }
}
