//! The graph fuzzer: random valid graphs over the whole op set (elementwise
//! functions, broadcasts between jagged, per-sequence, padded and dense
//! values, selects on masks, reductions and softmax over any axis, scans,
//! contractions, padding, compaction, packed pair triangles), compiled for
//! sm_80 and sm_90a, run in the emulator with the memory checker on and
//! outputs poisoned, on adversarial lengths, against the f64 reference.
//!
//! A graph is built from a list of op choices (proptest shrinks the list, so
//! a failure comes back as a short graph); its text is printed on failure.
//! `JAGGED_FUZZ_CASES` sets the number of graphs (500 by default, from a
//! fixed seed; the longer run on new random graphs is
//! `scripts/fuzz-graphs.sh`). A failure found here becomes a named
//! regression test at the end of this file.

use std::sync::Arc;

use jagged::codegen::{Arch, Spec};
use jagged::ir::{
    AttrKind, AttrValue, BinaryOp, CompareOp, DType, Dim, Graph, GraphBuilder, Handle,
    IndexPredicate, Node, RankOrder, ReduceOp, ScanMode, TensorType, TopKPart, UnaryOp,
};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference};
use proptest::prelude::*;

mod common;
use proptest::strategy::ValueTree;

/// Row axes of a value: none, one or two ragged (over the one sequence set)
/// or padded (`N` after `B`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Row {
    Ragged,
    Padded,
}

/// The structure of a value, as the validator's broadcasting sees it.
#[derive(Clone, Debug, PartialEq)]
struct Shape {
    batched: bool,
    rows: Vec<Row>,
    inner: Vec<usize>,
}

impl Shape {
    fn jagged(inner: &[usize]) -> Shape {
        Shape {
            batched: true,
            rows: vec![Row::Ragged],
            inner: inner.to_vec(),
        }
    }

    fn pair(&self) -> bool {
        self.rows == [Row::Ragged, Row::Ragged]
    }

    fn ty(&self, dtype: DType, seqs: Handle<Node>) -> TensorType {
        let mut dims = Vec::new();
        let ragged = self.rows.contains(&Row::Ragged);
        if !ragged && self.batched {
            dims.push(Dim::Batch);
        }
        dims.extend(self.rows.iter().map(|r| match r {
            Row::Ragged => Dim::Ragged(seqs),
            Row::Padded => Dim::MaxLen,
        }));
        dims.extend(self.inner.iter().map(|&n| Dim::Static(n)));
        TensorType::new(dtype, dims)
    }

    /// The structure `a op b` broadcasts to, if any.
    fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
        let (long, short) = if a.rows.len() >= b.rows.len() {
            (&a.rows, &b.rows)
        } else {
            (&b.rows, &a.rows)
        };
        let mut rows = long.clone();
        for (k, s) in short.iter().enumerate() {
            if *s == Row::Ragged {
                rows[k] = Row::Ragged;
            }
        }
        let ragged = rows.iter().filter(|r| **r == Row::Ragged).count();
        if ragged != 0 && ragged != rows.len() {
            return None;
        }
        let inner = match (a.inner.is_empty(), b.inner.is_empty()) {
            (_, true) => a.inner.clone(),
            (true, false) => b.inner.clone(),
            (false, false) if a.inner == b.inner => a.inner.clone(),
            _ => return None,
        };
        Some(Shape {
            batched: a.batched || b.batched,
            rows,
            inner,
        })
    }

    /// The dims in type order: batch (if no ragged rows), rows, inner.
    fn rank(&self) -> usize {
        let lead = usize::from(self.batched && !self.rows.contains(&Row::Ragged));
        lead + self.rows.len() + self.inner.len()
    }

    /// The structure after reducing `axis` away (as the validator types it).
    fn reduced(&self, axis: usize) -> Option<Shape> {
        let lead = usize::from(self.batched && !self.rows.contains(&Row::Ragged));
        if axis < lead || axis >= self.rank() {
            return None;
        }
        let k = axis - lead;
        let mut s = self.clone();
        if k < s.rows.len() {
            s.rows.remove(k);
        } else {
            s.inner.remove(k - s.rows.len());
        }
        Some(s)
    }
}

/// A value of the pool: its node, structure and dtype.
#[derive(Clone, Debug)]
struct Value {
    node: Handle<Node>,
    shape: Shape,
    dtype: DType,
}

/// Builds a graph from op choices; keeps every value it made in a pool.
struct Builder {
    g: GraphBuilder,
    seqs: Handle<Node>,
    /// Whether the sequences are truncated to `max_len`.
    truncated: bool,
    pool: Vec<Value>,
    weight: Option<Value>,
    /// A `[5]` table for `gather`.
    table: Option<Value>,
    /// The graph's inputs and attributes: values both the kernels and the
    /// reference read exactly (an arg reduction of a computed value would
    /// flip between near-ties that differ by less than the tolerance).
    exact: Vec<Handle<Node>>,
    outputs: usize,
    nodes: usize,
}

impl Builder {
    /// [`Shape::broadcast`], refusing ragged rows against padded ones when
    /// the sequences are not truncated to `max_len` (as the validator does).
    fn bcast(&self, a: &Shape, b: &Shape) -> Option<Shape> {
        let mixes =
            |x: &Shape, y: &Shape| x.rows.contains(&Row::Ragged) && y.rows.contains(&Row::Padded);
        if !self.truncated && (mixes(a, b) || mixes(b, a)) {
            return None;
        }
        Shape::broadcast(a, b)
    }

    /// A value of the pool: one of the three newest three times in four
    /// (so that chains grow deep), else any.
    fn pick(&self, r: u32) -> Value {
        let n = self.pool.len();
        let k = if !r.is_multiple_of(4) {
            n - 1 - (r as usize / 4) % n.min(3)
        } else {
            (r as usize / 4) % n
        };
        self.pool[k].clone()
    }

    fn push(&mut self, node: Handle<Node>, shape: Shape, dtype: DType) -> Value {
        self.nodes += 1;
        let v = Value { node, shape, dtype };
        self.pool.push(v.clone());
        v
    }

    fn scalar(&mut self, value: f64, dtype: DType) -> Value {
        let c = self.g.constant(value, dtype);
        Value {
            node: c,
            shape: Shape {
                batched: false,
                rows: vec![],
                inner: vec![],
            },
            dtype,
        }
    }

    fn cast_to(&mut self, v: &Value, dtype: DType) -> Value {
        if v.dtype == dtype {
            return v.clone();
        }
        let c = self.g.cast(v.node, dtype);
        Value {
            node: c,
            shape: v.shape.clone(),
            dtype,
        }
    }

    fn unary(&mut self, op: UnaryOp, v: &Value) -> Value {
        let n = self.g.unary(op, v.node);
        self.push(n, v.shape.clone(), v.dtype)
    }

    /// `a op b`, casting `b` to `a`'s dtype; None if they do not broadcast.
    fn binary(&mut self, op: BinaryOp, a: &Value, b: &Value) -> Option<Value> {
        let shape = self.bcast(&a.shape, &b.shape)?;
        let b = self.cast_to(b, a.dtype);
        let n = self.g.binary(op, a.node, b.node);
        Some(self.push(n, shape, a.dtype))
    }

    /// `1 + |x|`: a positive operand for log, rsqrt and division.
    fn one_plus_abs(&mut self, v: &Value) -> Value {
        let a = self.unary(UnaryOp::Abs, v);
        let one = self.scalar(1.0, v.dtype);
        self.binary(BinaryOp::Add, &a, &one)
            .unwrap_or_else(|| unreachable!("a scalar broadcasts to anything"))
    }

    /// One op from a choice word `c` (its low bits pick the op, the rest
    /// the operands and parameters).
    fn step(&mut self, c: u32, d: u32) {
        let a = self.pick(d);
        let arg = c >> 5;
        match c % 20 {
            0 => {
                let ops = [
                    UnaryOp::Neg,
                    UnaryOp::Silu,
                    UnaryOp::Abs,
                    UnaryOp::Relu,
                    UnaryOp::Sigmoid,
                    UnaryOp::Tanh,
                ];
                self.unary(ops[arg as usize % ops.len()], &a);
            }
            1 => {
                let t = self.unary(UnaryOp::Tanh, &a);
                self.unary(UnaryOp::Exp, &t);
            }
            2 => {
                let p = self.one_plus_abs(&a);
                let op = [UnaryOp::Log, UnaryOp::Rsqrt, UnaryOp::Sqrt][arg as usize % 3];
                self.unary(op, &p);
            }
            3..=5 => {
                let ops = [
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Mul,
                    BinaryOp::Max,
                    BinaryOp::Min,
                ];
                let b = self.pick(arg);
                let op = ops[(arg >> 8) as usize % ops.len()];
                if self.binary(op, &a, &b).is_none() {
                    let s = self.scalar(0.5, a.dtype);
                    self.binary(op, &a, &s);
                }
            }
            6 => {
                let b = self.pick(arg);
                if self.bcast(&a.shape, &b.shape).is_some() {
                    let p = self.one_plus_abs(&b);
                    self.binary(BinaryOp::Div, &a, &p);
                }
            }
            7 => self.select(&a, arg),
            8 | 9 => {
                let ops = [
                    ReduceOp::Sum,
                    ReduceOp::Mean,
                    ReduceOp::Max,
                    ReduceOp::LogSumExp,
                    ReduceOp::ArgMin,
                    ReduceOp::ArgMax,
                ];
                let axis = arg as usize % a.shape.rank().max(1);
                if let Some(shape) = a.shape.reduced(axis) {
                    let mut op = ops[(arg >> 4) as usize % ops.len()];
                    if op.is_arg() && !self.exact.contains(&a.node) {
                        op = ReduceOp::Max;
                    }
                    let n = self.g.reduce(op, a.node, axis);
                    // An index (i32) goes back to the pool as a float
                    // feature, so float-only ops may read it.
                    let (n, dtype) = if op.is_arg() {
                        let float = if a.dtype.is_float() {
                            a.dtype
                        } else {
                            DType::F32
                        };
                        (self.g.cast(n, float), float)
                    } else {
                        (n, a.dtype)
                    };
                    self.push(n, shape, dtype);
                }
            }
            10 => {
                let axis = arg as usize % a.shape.rank().max(1);
                if a.shape.reduced(axis).is_some() {
                    let n = self.g.softmax(a.node, axis);
                    self.push(n, a.shape.clone(), a.dtype);
                }
            }
            11 | 12 => self.contract(&a, arg),
            13 => {
                if a.shape == Shape::jagged(&a.shape.inner) {
                    let n = self.g.to_padded(a.node);
                    let shape = Shape {
                        batched: true,
                        rows: vec![Row::Padded],
                        inner: a.shape.inner.clone(),
                    };
                    self.push(n, shape, a.dtype);
                } else if a.shape.batched && a.shape.rows == [Row::Padded] {
                    let n = self.g.from_padded(a.node, self.seqs);
                    self.push(n, Shape::jagged(&a.shape.inner), a.dtype);
                }
            }
            14 => {
                // A scan along a dense axis (B, N or static) of a dense value.
                if !a.shape.rows.contains(&Row::Ragged) && a.shape.rank() > 0 {
                    let axis = arg as usize % a.shape.rank();
                    let mode = [ScanMode::Inclusive, ScanMode::Exclusive][(arg >> 4) as usize % 2];
                    let n = self.g.scan(mode, a.node, axis);
                    self.push(n, a.shape.clone(), a.dtype);
                }
            }
            15 if a.shape.pair() => self.pack(&a),
            15 => self.compact(&a, arg),
            16 => self.positions(&a, arg),
            18 | 19 => self.line_op(&a, arg),
            _ => {
                // `select(a op b, a, b)` with a comparison of two values.
                let b = self.pick(arg);
                if let Some(shape) = self.bcast(&a.shape, &b.shape) {
                    let ops = [
                        CompareOp::Lt,
                        CompareOp::Le,
                        CompareOp::Gt,
                        CompareOp::Ge,
                        CompareOp::Eq,
                        CompareOp::Ne,
                    ];
                    let b = self.cast_to(&b, a.dtype);
                    let c = self.g.compare(ops[(arg >> 8) as usize % 6], a.node, b.node);
                    let n = self.g.select(c, a.node, b.node);
                    self.push(n, shape, a.dtype);
                }
            }
        }
    }

    /// A rank or topk (of an exact value, as a float feature; topk's
    /// values sometimes by `take`), a reshape of the inner dims, or a
    /// shift along one of the value's axes other than `B`.
    fn line_op(&mut self, a: &Value, arg: u32) {
        let axis = arg as usize % a.shape.rank().max(1);
        if a.shape.reduced(axis).is_none() {
            return;
        }
        let order = [RankOrder::Ascending, RankOrder::Descending][(arg >> 5) as usize % 2];
        let lead = usize::from(a.shape.batched && !a.shape.rows.contains(&Row::Ragged));
        let inner = (axis - lead).checked_sub(a.shape.rows.len());
        if let (Some(k), true) = (inner, self.exact.contains(&a.node) && arg & 64 != 0) {
            // The best `min(n, 2)` along a static axis, as indices (a float
            // feature) or values.
            let n = a.shape.inner[k];
            let keep = n.min(2);
            let mut shape = a.shape.clone();
            shape.inner[k] = keep;
            let (part, dtype) = if arg & 128 != 0 {
                (TopKPart::Values, a.dtype)
            } else {
                (TopKPart::Indices, DType::I32)
            };
            let t = self.g.top_k(order, part, a.node, axis, keep);
            if part == TopKPart::Indices && arg & 256 != 0 {
                // The values by `take`: the index's dims, then the ones
                // after the axis again.
                let v = self.g.take(a.node, t, axis);
                let mut taken = shape.clone();
                taken.inner.extend_from_slice(&a.shape.inner[k + 1..]);
                self.push(v, taken, a.dtype);
                return;
            }
            let float = if dtype.is_float() { dtype } else { DType::F32 };
            let t = if dtype == float {
                t
            } else {
                self.g.cast(t, float)
            };
            self.push(t, shape, float);
        } else if arg & 512 != 0 && !a.shape.inner.is_empty() {
            // Static inner dims merged into one, or one even dim split in two.
            let total: usize = a.shape.inner.iter().product();
            let inner = match a.shape.inner.as_slice() {
                [n] if n % 2 == 0 => vec![2, n / 2],
                _ => vec![total],
            };
            let r = self.g.reshape(a.node, inner.clone());
            let mut shape = a.shape.clone();
            shape.inner = inner;
            self.push(r, shape, a.dtype);
        } else if arg & 16 != 0 && self.exact.contains(&a.node) {
            let r = self.g.rank(order, a.node, axis);
            let float = if a.dtype.is_float() {
                a.dtype
            } else {
                DType::F32
            };
            let n = self.g.cast(r, float);
            self.push(n, a.shape.clone(), float);
        } else {
            let by = [1, -1, 2, -3][(arg >> 5) as usize % 4];
            let n = self.g.shift(a.node, axis, by);
            self.push(n, a.shape.clone(), a.dtype);
        }
    }

    /// A value offset by its position along one of its axes, or by its
    /// sequence's length: `a + 0.25 * position` / `a - 0.125 * n_b`.
    fn positions(&mut self, a: &Value, arg: u32) {
        if arg % 3 == 1
            && !a.shape.rows.is_empty()
            && let Some(table) = self.table.clone()
        {
            // `a + table[position]`: rows past the table's 5 read 0.
            let rows = Shape {
                batched: true,
                rows: a.shape.rows.clone(),
                inner: vec![],
            };
            let axis = usize::from(!a.shape.rows.contains(&Row::Ragged));
            let p = self.g.position(axis, rows.ty(DType::I64, self.seqs));
            let n = self.g.gather(table.node, p);
            let picked = self.push(n, rows, table.dtype);
            self.binary(BinaryOp::Add, a, &picked);
            return;
        }
        if arg.is_multiple_of(3) && a.shape.batched {
            let n = self.g.lengths(self.seqs, DType::I64);
            let nf = self.g.cast(n, a.dtype);
            let len = Value {
                node: nf,
                shape: Shape {
                    batched: true,
                    rows: vec![],
                    inner: vec![],
                },
                dtype: a.dtype,
            };
            let k = self.scalar(0.125, a.dtype);
            if let Some(scaled) = self.binary(BinaryOp::Mul, &len, &k) {
                self.binary(BinaryOp::Sub, a, &scaled);
            }
            return;
        }
        if a.shape.rank() == 0 {
            return;
        }
        let axis = arg as usize % a.shape.rank();
        let p = self.g.position(axis, a.shape.ty(a.dtype, self.seqs));
        let pos = Value {
            node: p,
            shape: a.shape.clone(),
            dtype: a.dtype,
        };
        let k = self.scalar(0.25, a.dtype);
        if let Some(scaled) = self.binary(BinaryOp::Mul, &pos, &k) {
            self.binary(BinaryOp::Add, a, &scaled);
        }
    }

    /// `select(mask, a, b)` with a causal mask on pairs, else a mask from
    /// the sign of a value.
    fn select(&mut self, a: &Value, arg: u32) {
        let zero = self.scalar(0.0, a.dtype);
        if a.shape.pair() {
            let ty = Shape {
                batched: true,
                rows: vec![Row::Ragged, Row::Ragged],
                inner: vec![],
            }
            .ty(DType::Bool, self.seqs);
            let pred = if arg.is_multiple_of(2) {
                IndexPredicate::KeyNotAfterQuery
            } else {
                IndexPredicate::KeyNotBeforeQuery
            };
            let m = self.g.mask(pred, ty);
            let n = self.g.select(m, a.node, zero.node);
            self.push(n, a.shape.clone(), a.dtype);
            return;
        }
        let c = self.pick(arg);
        if self.bcast(&a.shape, &c.shape).is_none() {
            return;
        }
        let r = self.unary(UnaryOp::Relu, &c);
        let m = self.g.cast(r.node, DType::Bool);
        let shape = self
            .bcast(&a.shape, &c.shape)
            .unwrap_or_else(|| a.shape.clone());
        let b = self.pick(arg >> 8);
        if self.bcast(&shape, &b.shape).as_ref() != Some(&shape) {
            let n = self.g.select(m, a.node, zero.node);
            self.push(n, shape, a.dtype);
            return;
        }
        let b = self.cast_to(&b, a.dtype);
        let n = self.g.select(m, a.node, b.node);
        self.push(n, shape, a.dtype);
    }

    /// Contractions of the kinds the ops use: scores `i.j` over a shared
    /// inner dim, `p . v` over the keys, jagged x dense weight, and jagged x
    /// jagged reduced over the sequence.
    fn contract(&mut self, a: &Value, arg: u32) {
        // Operands in f32 (SIMT), or cast to f16 / bf16 (tensor cores where
        // the result is stored: the general path's mma schedule). Only
        // exact values are cast to a half type: rounding a computed value
        // can land on the other side of a rounding boundary than the
        // reference's, an error far above an f32 output's tolerance.
        let half = [DType::F32, DType::F16, DType::BF16][(arg >> 8) as usize % 3];
        let jag = |s: &Shape| s.rows == [Row::Ragged] && s.inner.len() == 1;
        let candidates: Vec<Value> = self
            .pool
            .iter()
            .filter(|v| jag(&v.shape))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let b = candidates[arg as usize % candidates.len()].clone();
        // A half type prefers exact operands: the jagged input `x` for the
        // first, when it has the first operand's shape.
        let x_input = self.pool[0].clone();
        let a = if half != DType::F32
            && !self.exact.contains(&a.node)
            && x_input.shape == a.shape
            && x_input.dtype.is_float()
        {
            x_input
        } else {
            a.clone()
        };
        let a = &a;
        let b = if half != DType::F32 && self.exact.contains(&a.node) && jag(&a.shape) {
            self.pool[0].clone()
        } else {
            b
        };
        let exact = self.exact.contains(&a.node) && self.exact.contains(&b.node);
        let ab = if exact { half } else { DType::F32 };
        let operand = |g: &mut Builder, v: &Value| g.cast_to(v, ab);
        let (x, y) = (operand(self, a), operand(self, &b));
        match (arg >> 6) % 4 {
            0 if jag(&a.shape) && a.shape.inner == b.shape.inner => {
                let n = self
                    .g
                    .contract(x.node, "iw", y.node, "jw", "ij", DType::F32);
                let shape = Shape {
                    batched: true,
                    rows: vec![Row::Ragged, Row::Ragged],
                    inner: vec![],
                };
                self.push(n, shape, DType::F32);
            }
            1 if a.shape.pair() && a.shape.inner.is_empty() => {
                let n = self
                    .g
                    .contract(x.node, "ij", y.node, "jw", "iw", DType::F32);
                self.push(n, b.shape.clone(), DType::F32);
            }
            2 if jag(&a.shape) => match self.weight.clone() {
                Some(w) if w.shape.inner[0] == a.shape.inner[0] => {
                    let wf = operand(self, &w);
                    let n = self
                        .g
                        .contract(x.node, "iw", wf.node, "wv", "iv", DType::F32);
                    self.push(n, Shape::jagged(&w.shape.inner[1..]), DType::F32);
                }
                _ => {}
            },
            3 if jag(&a.shape) => {
                let n = self
                    .g
                    .contract(x.node, "iw", y.node, "iv", "wv", DType::F32);
                let shape = Shape {
                    batched: true,
                    rows: vec![],
                    inner: vec![a.shape.inner[0], b.shape.inner[0]],
                };
                self.push(n, shape, DType::F32);
            }
            _ => {}
        }
    }

    /// Packs the strict upper triangle of a pair value; outputs the packed
    /// rows and their offsets (the packed set is used by nothing else).
    fn pack(&mut self, a: &Value) {
        let triu = self.g.seqs_triu(self.seqs);
        let values = self.g.pack_triu(a.node, triu);
        let offsets = self.g.offsets(triu, DType::I32);
        self.nodes += 3;
        self.g.output(format!("packed{}", self.outputs), values);
        self.g
            .output(format!("packed_offsets{}", self.outputs), offsets);
        self.outputs += 1;
    }

    /// Compacts a jagged value by the sign of another; outputs the kept
    /// rows and their offsets (the compacted set is used by nothing else).
    fn compact(&mut self, a: &Value, arg: u32) {
        if a.shape.rows != [Row::Ragged] {
            return;
        }
        let masks: Vec<Value> = self
            .pool
            .iter()
            .filter(|v| v.shape == Shape::jagged(&[]))
            .cloned()
            .collect();
        let Some(m) = masks.get(arg as usize % masks.len().max(1)).cloned() else {
            return;
        };
        let r = self.unary(UnaryOp::Relu, &m);
        let mask = self.g.cast(r.node, DType::Bool);
        let kept = self.g.seqs_where(mask);
        let values = self.g.compact(a.node, kept);
        let offsets = self.g.offsets(kept, DType::I64);
        self.nodes += 4;
        self.g.output(format!("kept{}", self.outputs), values);
        self.g
            .output(format!("kept_offsets{}", self.outputs), offsets);
        self.outputs += 1;
    }
}

/// A recipe: the graph-wide choices, then the op choices.
#[derive(Clone, Debug)]
struct Recipe {
    dtype: u8,
    offsets_i64: bool,
    width: u8,
    max_len: u8,
    extras: u8,
    ops: Vec<(u32, u32)>,
}

fn recipe() -> impl Strategy<Value = Recipe> {
    (
        0u8..3,
        any::<bool>(),
        1u8..6,
        1u8..10,
        any::<u8>(),
        prop::collection::vec((any::<u32>(), any::<u32>()), 1..10),
    )
        .prop_map(|(dtype, offsets_i64, width, max_len, extras, ops)| Recipe {
            dtype,
            offsets_i64,
            width,
            max_len,
            extras,
            ops,
        })
}

/// The graph of a recipe (None if the validator rejects it: a generator
/// bug the fuzzer reports by its rejection count).
fn build(r: &Recipe) -> Option<Graph> {
    let dtype = [DType::F32, DType::F16, DType::BF16][r.dtype as usize];
    let index = if r.offsets_i64 {
        DType::I64
    } else {
        DType::I32
    };
    let w = r.width as usize;
    let mut g = GraphBuilder::new("fuzz");
    g.declare_attr("max_len", AttrKind::Index, None);
    g.declare_attr("alpha", AttrKind::Float, Some(AttrValue::Float(0.75)));
    let o = g.input("offsets", TensorType::new(index, vec![Dim::BatchPlusOne]));
    // Sequences truncated to max_len, or (one graph in eight) not.
    let truncated = r.extras & 128 == 0 || r.width.is_multiple_of(2);
    let s = g.seqs(o, truncated);
    let mut b = Builder {
        g,
        seqs: s,
        truncated,
        pool: Vec::new(),
        weight: None,
        table: None,
        exact: Vec::new(),
        outputs: 0,
        nodes: 0,
    };
    let x = b.g.input("x", Shape::jagged(&[w]).ty(dtype, s));
    b.pool.push(Value {
        node: x,
        shape: Shape::jagged(&[w]),
        dtype,
    });
    let extra_inputs: [(&str, Shape); 4] = [
        ("w", Shape::jagged(&[])),
        (
            "per_seq",
            Shape {
                batched: true,
                rows: vec![],
                inner: vec![w],
            },
        ),
        (
            "padded",
            Shape {
                batched: true,
                rows: vec![Row::Padded],
                inner: vec![w],
            },
        ),
        (
            "gamma",
            Shape {
                batched: false,
                rows: vec![],
                inner: vec![w],
            },
        ),
    ];
    for (k, (name, shape)) in extra_inputs.into_iter().enumerate() {
        if r.extras & (1 << k) != 0 {
            let node = b.g.input(name, shape.ty(dtype, s));
            b.pool.push(Value { node, shape, dtype });
        }
    }
    if r.extras & 16 != 0 {
        let shape = Shape {
            batched: false,
            rows: vec![],
            inner: vec![w, 3],
        };
        let node = b.g.input("weight", shape.ty(dtype, s));
        b.weight = Some(Value { node, shape, dtype });
        let shape = Shape {
            batched: false,
            rows: vec![],
            inner: vec![5],
        };
        let node = b.g.input("table", shape.ty(dtype, s));
        b.table = Some(Value { node, shape, dtype });
    }
    if r.extras & 32 != 0 {
        let node = b.g.attr("alpha", dtype);
        b.pool.push(Value {
            node,
            shape: Shape {
                batched: false,
                rows: vec![],
                inner: vec![],
            },
            dtype,
        });
    }
    b.exact = b.pool.iter().map(|v| v.node).collect();
    for &(c, d) in &r.ops {
        if b.nodes >= 12 {
            break;
        }
        b.step(c, d);
    }
    // The last value that can be stored is an output, and maybe another.
    let storable: Vec<Value> = b.pool.iter().filter(|v| !v.shape.pair()).cloned().collect();
    if let Some(last) = storable.last() {
        b.g.output("out", last.node);
    }
    if r.extras & 64 != 0 && storable.len() > 2 {
        b.g.output("other", storable[storable.len() / 2].node);
    }
    b.g.finish().ok()
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("the emulator backend");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

/// Checks one graph on both archs; a failure message carries its text.
fn check_graph(graph: &Graph, max_len: usize, seed: u64) -> Result<(), String> {
    let mut rt = runtime();
    let mut rng = Rng::new(seed);
    for arch in [Arch::Sm80, Arch::Sm90a] {
        let spec = Spec::for_graph(graph, max_len as u64, arch).map_err(|e| e.to_string())?;
        check_spec_against_reference(
            graph,
            &spec,
            &mut rt,
            max_len,
            &[],
            &mut rng,
            Tolerance::composed,
        )
        .map_err(|e| format!("{arch}: {e}\n{graph}"))?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("JAGGED_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// The generator's seed: fixed for the test suite, so that CI is not red by
/// chance (new graphs are the long run's job: `scripts/fuzz-graphs.sh` sets
/// `JAGGED_FUZZ_SEED=random`, or a number to replay a run).
fn seed() -> proptest::test_runner::RngSeed {
    use proptest::test_runner::RngSeed;
    match std::env::var("JAGGED_FUZZ_SEED").as_deref() {
        Ok("random") => RngSeed::Random,
        Ok(n) => n.parse().unwrap_or(RngSeed::Fixed(20_261_205)),
        Err(_) => RngSeed::Fixed(20_261_205),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: seed(),
        max_global_rejects: 100_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_graphs_match_the_reference(r in recipe(), seed in any::<u64>()) {
        let graph = build(&r);
        prop_assume!(graph.is_some(), "generator made an invalid graph");
        let graph = graph.unwrap_or_else(|| unreachable!());
        if let Err(e) = check_graph(&graph, r.max_len as usize, seed) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The generator reaches the tensor-core schedule: some of its contractions
/// have f16 / bf16 operands and a stored result, so the fuzzer checks the
/// general path's `mma` kernels too, not only its SIMT loops.
#[test]
fn the_generator_reaches_tensor_cores() {
    use jagged::codegen::general::compile_general;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut mma = 0;
    for _ in 0..500 {
        let r = recipe()
            .new_tree(&mut runner)
            .map(|t| t.current())
            .unwrap_or_else(|e| panic!("{e}"));
        let Some(graph) = build(&r) else { continue };
        let spec = Spec::for_graph(&graph, u64::from(r.max_len), Arch::Sm80).expect("spec");
        let general = compile_general(&graph, &spec).unwrap_or_else(|e| panic!("{e}\n{graph}"));
        if general.kernel.ptx.contains("mma.sync") {
            mma += 1;
        }
    }
    assert!(mma >= 5, "{mma} of 500 graphs use tensor cores");
}

/// The generator makes valid graphs: at most 2% are rejected by the validator
/// (a generator that drifted from the typing rules would test nothing).
#[test]
fn the_generator_makes_valid_graphs() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut valid, mut total) = (0, 0);
    let mut ops_seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let r = recipe()
            .new_tree(&mut runner)
            .map(|t| t.current())
            .unwrap_or_else(|e| panic!("{e}"));
        total += 1;
        if let Some(g) = build(&r) {
            valid += 1;
            for (h, n) in g.nodes().iter() {
                let text = jagged::ir::text::node_text(h, n);
                let op = text.split_whitespace().nth(2).unwrap_or("").to_string();
                ops_seen.insert(op);
            }
        }
    }
    assert!(valid * 50 >= total * 49, "{valid} of {total} valid");
    for op in [
        "neg",
        "exp",
        "log",
        "silu",
        "sqrt",
        "rsqrt",
        "abs",
        "relu",
        "sigmoid",
        "tanh",
        "cast",
        "add",
        "sub",
        "mul",
        "div",
        "max",
        "min",
        "select",
        "mask",
        "reduce",
        "softmax",
        "scan",
        "contract",
        "to_padded",
        "from_padded",
        "compact",
        "seqs_where",
        "pack_triu",
        "seqs_triu",
        "offsets",
        "attr",
        "const",
        "position",
        "lengths",
        "lt",
        "le",
        "gt",
        "ge",
        "eq",
        "ne",
        "gather",
    ] {
        assert!(
            ops_seen.contains(op),
            "the generator never makes `{op}`: {ops_seen:?}"
        );
    }
}

/// A sample of the generated modules assembles with ptxas for sm_80 and
/// sm_90a with no spill and no stack frame. ptxas is required under the test
/// command (`JAGGED_PTXAS` set by `scripts/test.sh`, or `CI`).
#[test]
fn a_sample_of_generated_modules_assembles_without_spills() {
    use jagged::codegen::{compile, ptxas};
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "a_sample_of_generated_modules_assembles_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut assembled = 0;
    while assembled < 24 {
        let r = recipe()
            .new_tree(&mut runner)
            .map(|t| t.current())
            .unwrap_or_else(|e| panic!("{e}"));
        let Some(graph) = build(&r) else { continue };
        for arch in [Arch::Sm80, Arch::Sm90a] {
            let spec = Spec::for_graph(&graph, u64::from(r.max_len), arch).expect("spec");
            let kernel = compile(&graph, &spec).unwrap_or_else(|e| panic!("{e}\n{graph}"));
            let report =
                ptxas::assemble(&kernel.ptx, arch).unwrap_or_else(|e| panic!("{e}\n{graph}"));
            assert!(
                report.offenders().is_empty(),
                "{arch}: {:?}\n{graph}",
                report.offenders()
            );
        }
        assembled += 1;
    }
}

/// Regression (fuzzer): an output that is a graph input is copied, not
/// computed by a kernel of its own.
#[test]
fn regression_output_that_is_an_input() {
    let graph = Graph::parse(
        "graph fuzz {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 1]
  %3 = contract %2[iw], %2[jw] -> [ij] : f32[%1, %1]
  output out = %2
}",
    )
    .expect("graph");
    check_graph(&graph, 1, 8655829).unwrap_or_else(|e| panic!("{e}"));
}

/// Regression (fuzzer): a bf16 output read by a later node is read unrounded
/// (kept in f32 scratch), as the reference reads it: here `out` is exactly 0
/// in the reference, and the rounding of `other` would show in it.
#[test]
fn regression_half_output_read_by_another_node() {
    let graph = Graph::parse(
        "graph fuzz {
  attr max_len: index
  attr alpha: float = 0.7
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : bf16[%1, 2]
  %3 = attr alpha : bf16[]
  %4 = mul %2, %3 : bf16[%1, 2]
  %5 = mul %2, %3 : bf16[%1, 2]
  %6 = sub %4, %5 : bf16[%1, 2]
  output out = %6
  output other = %4
}",
    )
    .expect("graph");
    check_graph(&graph, 3, 1).unwrap_or_else(|e| panic!("{e}"));
}
