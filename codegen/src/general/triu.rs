//! Packed strict upper triangles ([`Node::PackTriu`]) and the offsets of
//! their sequence sets ([`Node::SeqsTriu`]).
//!
//! The offsets: a thread per sequence writes `n_b (n_b - 1) / 2` into
//! `offsets[b + 1]`, then one thread sums them (the prefix of compaction's
//! kept offsets). The packing: a warp per sequence walks the query rows `i`
//! in order, keeping the packed row of `(i, i + 1)` as a running sum (so
//! no `(i, j)` is ever recovered from a packed index by a search or a
//! division), and its lanes cover the `(n_b - i - 1) x width` elements of
//! row `i`'s pairs `j > i`, each computed from the pair value's definition
//! (a contraction's dot product, fused) and stored once: the `[n_b, n_b]`
//! block is never materialized.

use jagged_ir::{Dim, Graph, Handle, Node};

use super::super::{Partition, Stored, static_product, tensor_type, unsupported};
use super::{At, Emitter, Result, Val};
use crate::kernel::{BinOp, Operand, TernOp, Type};
use crate::launch::SizeExpr;
use crate::templates::{BLOCK_THREADS, Plan};

/// The kernels of the offsets of a `seqs_triu` set: the pair counts, then
/// their prefix sum.
pub(super) fn triu_offsets(
    graph: &Graph,
    part: &Partition,
    seqs: Handle<Node>,
    name: &str,
) -> Result<Vec<Plan>> {
    let mut em = Emitter::new(graph, part, name, BLOCK_THREADS);
    em.count_triu_rows(seqs)?;
    let count = em.finish();
    let mut em = Emitter::new(graph, part, &format!("{name}_prefix"), BLOCK_THREADS);
    em.prefix_kept(seqs)?;
    Ok(vec![count, em.finish()])
}

/// The kernel of a `pack_triu` node into `into`.
pub(super) fn pack(
    graph: &Graph,
    part: &Partition,
    node: Handle<Node>,
    into: Stored,
    name: &str,
) -> Result<Plan> {
    let mut em = Emitter::new(graph, part, name, BLOCK_THREADS);
    em.pack_triu(node, into)?;
    Ok(em.finish())
}

impl Emitter<'_> {
    /// The set whose pairs a `seqs_triu` set packs.
    fn triu_parent(&self, seqs: Handle<Node>) -> Result<Handle<Node>> {
        match self.graph.node(seqs) {
            Node::SeqsTriu { seqs } => Ok(*seqs),
            _ => Err(unsupported(self.graph, seqs, "not a seqs_triu")),
        }
    }

    /// `n_b (n_b - 1) / 2` of the parent set into `offsets[b + 1]`, a thread
    /// per sequence.
    fn count_triu_rows(&mut self, seqs: Handle<Node>) -> Result<()> {
        let parent = self.triu_parent(seqs)?;
        let into = self.set_offsets(seqs)?;
        self.items = SizeExpr::Batch;
        let (thread, threads) = self.b.global_thread_index();
        let batch = self.size(SizeExpr::Batch);
        let range = self.b.begin_range(Type::U64, thread, batch, threads);
        let b = range.counter;
        let n = self.seq_len(parent, b)?;
        // n (n - 1) wraps to 0 for n = 0, as it should.
        let less = self.b.binary(BinOp::Sub, Type::U64, n, Operand::Int(1));
        let prod = self.b.binary(BinOp::Mul, Type::U64, n, less);
        let pairs = self.b.binary(BinOp::Shr, Type::U64, prod, Operand::Int(1));
        let slot = self.b.binary(BinOp::Add, Type::U64, b, Operand::Int(1));
        self.store_always(into, slot, Val::I(pairs));
        self.b.end_range(range);
        Ok(())
    }

    /// The strict upper triangle of the pair value of `h` (a `pack_triu`)
    /// into `into`, a warp per sequence.
    fn pack_triu(&mut self, h: Handle<Node>, into: Stored) -> Result<()> {
        let graph = self.graph;
        let Node::PackTriu { arg, seqs } = graph.node(h) else {
            return Err(unsupported(graph, h, "not a pack_triu"));
        };
        let (arg, seqs) = (*arg, *seqs);
        let parent = self.triu_parent(seqs)?;
        let x = tensor_type(graph, arg)?.clone();
        let width = static_product(&x.dims[2..]) as i64;
        let inner: Vec<Operand> = x.dims[2..]
            .iter()
            .map(|d| match d {
                Dim::Static(n) => Operand::Int(*n as i64),
                _ => Operand::Int(1),
            })
            .collect();
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
        let sequences = self.b.begin_range(Type::U64, warp, batch, warps);
        let b = sequences.counter;
        self.enter_sequence(b)?;
        let n = self.seq_len(parent, b)?;
        let first = self.seq_start(seqs, b)?;
        // The packed row of the pair (i, i + 1), relative to the sequence.
        let row = self.b.mov(Type::U64, Operand::Int(0));
        let rows = self
            .b
            .begin_range(Type::U64, Operand::Int(0), n, Operand::Int(1));
        let i = rows.counter;
        let next = self.b.binary(BinOp::Add, Type::U64, i, Operand::Int(1));
        let pairs = self.b.binary(BinOp::Sub, Type::U64, n, next);
        let count = self
            .b
            .binary(BinOp::Mul, Type::U64, pairs, Operand::Int(width));
        let start = self.b.binary(BinOp::Add, Type::U64, first, row);
        let base = self
            .b
            .binary(BinOp::Mul, Type::U64, start, Operand::Int(width));
        let elems = self.b.begin_range(Type::U64, lane, count, Operand::Int(32));
        let e = elems.counter;
        let jj = self.b.binary(BinOp::Div, Type::U64, e, Operand::Int(width));
        let j = self.b.binary(BinOp::Add, Type::U64, next, jj);
        let mut idx = vec![i, j];
        if !inner.is_empty() {
            let k = self
                .b
                .ternary(TernOp::MadLo, Type::U64, jj, Operand::Int(-width), e);
            idx.extend(self.digits(k, &inner));
        }
        let v = self.value(arg, &At { b, idx })?;
        let lin = self.b.binary(BinOp::Add, Type::U64, base, e);
        self.store_always(into, lin, v);
        self.b.end_range(elems);
        self.b.binary_to(BinOp::Add, Type::U64, row, row, pairs);
        self.b.end_range(rows);
        self.memo = None;
        self.b.end_range(sequences);
        Ok(())
    }
}
