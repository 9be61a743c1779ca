//! The reference evaluator: runs a graph on host tensors in f64.
//!
//! This is the semantics of the IR. Inputs are converted exactly to f64
//! (f16/bf16 included); every node computes in f64 without rounding, except
//! `cast`, `const` and `attr`, which round to their dtype; outputs are rounded to
//! their dtype at the end. Only rows `i < n_b` are computed: everything else is
//! zero, so empty sequences, `B = 0` and `T = 0` give zeros, never NaN or an error.
//!
//! NaN propagates the way IEEE arithmetic and the kernels propagate it: every
//! elementwise function of a NaN is NaN (`max` and `min` included, unlike
//! `f64::max`), a reduction over a line holding a NaN is NaN (`max` and
//! `logsumexp` included), and softmax over such a line is NaN in every
//! position. Infinities follow the formulas: softmax over `[inf, 1]` is
//! `exp(inf - inf) / ...`, NaN; a line of only `-inf` (fully masked) is
//! the documented exception and gives zeros.

use std::collections::BTreeMap;

use crate::arena::Handle;
use crate::bind::{BindError, InputDesc, bind, find_input};
use crate::dtype::DType;
use crate::graph::{
    AttrValue, BinaryOp, CompareOp, Dim, Graph, IndexPredicate, Node, Precision, RankOrder,
    ReduceOp, ScanMode, TensorType, TopKPart, Type, UnaryOp,
};
use crate::tensor::{DenseTensor, TensorData, TensorError, check_offsets};
use crate::validate::Structure;

/// Why a graph could not be evaluated on the given inputs: the evaluator
/// fails only where the inputs or attributes do not fit the graph, or where
/// its values would exceed its memory budget ([`EvalOptions`]).
pub type EvalError = BindError;

/// The environment variable that sets the reference's memory budget, in
/// bytes (`8589934592`) or with a binary suffix (`512M`, `8G`, `1T`).
pub const MEMORY_BUDGET_ENV: &str = "JAGGED_REF_MEMORY_BUDGET";

/// The default memory budget: 8 GiB of f64 values.
pub const DEFAULT_MEMORY_BUDGET: u64 = 8 << 30;

/// Options of the reference evaluator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// The most bytes of f64 values the evaluator holds at once (every node's
    /// value is kept until the end). Sizes are checked against it, with
    /// checked arithmetic, before anything is allocated: absurd offsets or
    /// `max_len` are a typed error ([`BindError::MemoryBudget`]), never an
    /// overflow panic or an allocation abort.
    pub memory_budget: u64,
}

impl Default for EvalOptions {
    /// [`DEFAULT_MEMORY_BUDGET`], whatever the environment says.
    fn default() -> Self {
        EvalOptions {
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

impl EvalOptions {
    /// The default options, with the budget taken from
    /// [`MEMORY_BUDGET_ENV`] when it is set.
    pub fn from_env() -> Result<Self, EvalError> {
        match std::env::var(MEMORY_BUDGET_ENV) {
            Ok(value) => Ok(EvalOptions {
                memory_budget: parse_size(&value).ok_or(BindError::BadMemoryBudget { value })?,
            }),
            Err(_) => Ok(EvalOptions::default()),
        }
    }
}

/// `1234`, `64K`, `512M`, `8G`, `1T` (binary multiples; `KiB`-style and
/// lowercase suffixes too) as bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, suffix) = t.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Runs `graph` on named inputs and attributes; returns the outputs by name.
///
/// Jagged inputs are passed as their values `[T, inner...]` and offsets
/// `[B+1]` under the names the graph declares; jagged outputs come back as
/// values `[T', inner...]` (with their offsets as a separate output when the
/// graph returns them). Attributes not given take their declared defaults.
/// The memory budget is [`EvalOptions::from_env`]'s.
pub fn evaluate(
    graph: &Graph,
    inputs: &[(&str, &DenseTensor)],
    attrs: &[(&str, AttrValue)],
) -> Result<BTreeMap<String, DenseTensor>, EvalError> {
    evaluate_with(graph, inputs, attrs, &EvalOptions::from_env()?)
}

/// [`evaluate`] with explicit options.
pub fn evaluate_with(
    graph: &Graph,
    inputs: &[(&str, &DenseTensor)],
    attrs: &[(&str, AttrValue)],
    options: &EvalOptions,
) -> Result<BTreeMap<String, DenseTensor>, EvalError> {
    let described: Vec<InputDesc<'_>> = inputs
        .iter()
        .map(|(name, t)| InputDesc {
            name,
            dtype: t.dtype(),
            shape: t.shape(),
        })
        .collect();
    let binding = bind(graph, &described, attrs)?;
    let mut ev = Evaluator {
        graph,
        batch: binding.batch,
        max_len: binding.max_len,
        values: Vec::with_capacity(graph.nodes().len()),
        budget: options.memory_budget,
        used: 0,
    };
    for (h, node) in graph.nodes().iter() {
        ev.reserve(h, node, inputs)?;
        let value = ev.node(h, node, inputs, &binding.attrs)?;
        ev.values.push(value);
    }
    let mut outputs = BTreeMap::new();
    for out in graph.outputs() {
        let ty = ev.tensor_type(out.value);
        let shape = ev.shape(ty);
        let data = TensorData::from_f64(ty.dtype, ev.data(out.value));
        outputs.insert(out.name.clone(), DenseTensor::new(shape, data)?);
    }
    Ok(outputs)
}

/// A sequence set at run time.
struct SeqsValue {
    /// `offsets[b]`: the first row of sequence `b` (`B + 1` entries).
    offsets: Vec<usize>,
    /// `n_b`: the rows of sequence `b` that ops see.
    lens: Vec<usize>,
    /// Prefix sums of `n_b^2`: where sequence `b`'s block of a `[%s, %s, ...]` starts.
    pairs: Vec<usize>,
}

impl SeqsValue {
    fn new(offsets: Vec<usize>, max_len: Option<usize>) -> Self {
        let lens: Vec<usize> = offsets
            .windows(2)
            .map(|w| max_len.map_or(w[1] - w[0], |n| (w[1] - w[0]).min(n)))
            .collect();
        let mut pairs = vec![0usize];
        for &n in &lens {
            // Saturating: absurd lengths must not overflow before the values
            // input's shape check rejects them.
            pairs.push(pairs[pairs.len() - 1].saturating_add(n.saturating_mul(n)));
        }
        SeqsValue {
            offsets,
            lens,
            pairs,
        }
    }
}

enum Value {
    Seqs(SeqsValue),
    Tensor(Vec<f64>),
}

/// Where each dim of an operand's index comes from when it is read at a
/// result index: the sequence number, or a position of the result index.
#[derive(Clone, Copy)]
enum Src {
    Seq,
    At(usize),
}

/// Where the elements of a value live in one sequence: element `idx` (one
/// index per dim) is at `base + sum(idx[k] * strides[k])`. Every layout is
/// affine: jagged rows start at `offsets[b]`, `[%s, %s]` blocks at the prefix
/// sums of `n_b^2`, dense tensors are row-major.
struct Layout {
    base: usize,
    strides: Vec<usize>,
}

impl Layout {
    fn at(&self, idx: &[usize]) -> usize {
        self.base
            + idx
                .iter()
                .zip(&self.strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()
    }
}

/// The layout of one type, recomputed only when the sequence changes.
struct Cached<'t> {
    ty: &'t TensorType,
    b: Option<usize>,
    layout: Layout,
}

impl<'t> Cached<'t> {
    fn new(ty: &'t TensorType) -> Self {
        Cached {
            ty,
            b: None,
            layout: Layout {
                base: 0,
                strides: Vec::new(),
            },
        }
    }

    fn at(&mut self, ev: &Evaluator<'_>, b: usize, idx: &[usize]) -> usize {
        if self.b != Some(b) {
            self.layout = ev.layout(self.ty, b);
            self.b = Some(b);
        }
        self.layout.at(idx)
    }
}

struct Evaluator<'g> {
    graph: &'g Graph,
    batch: usize,
    max_len: usize,
    values: Vec<Value>,
    /// The memory budget in bytes, and the bytes of the values so far.
    budget: u64,
    used: u64,
}

impl<'g> Evaluator<'g> {
    /// The f64 slots of a value of type `ty`, with checked arithmetic
    /// ([`Evaluator::size`] once this has succeeded).
    fn checked_size(&self, ty: &TensorType) -> Option<usize> {
        let rank = ty.ragged_rank();
        let inner = ty.dims[rank..]
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(self.extent(d, 0)))?;
        match ty.seqs() {
            Some(s) if rank == 2 => self.seqs(s).pairs[self.batch].checked_mul(inner),
            Some(s) => self.seqs(s).offsets[self.batch].checked_mul(inner),
            None => Some(inner),
        }
    }

    /// Counts the value node `h` is about to allocate against the budget;
    /// a typed error (before any allocation) when it does not fit.
    fn reserve(
        &mut self,
        h: Handle<Node>,
        node: &Node,
        inputs: &[(&str, &DenseTensor)],
    ) -> Result<(), EvalError> {
        let elems = match (node, self.graph.type_of(h)) {
            (_, Type::Seqs) => return Ok(()),
            (Node::Input { name, .. }, _) => Some(find_input(inputs, name)?.data().len()),
            (_, Type::Tensor(ty)) => self.checked_size(ty),
        };
        let total = elems
            .and_then(|n| u64::try_from(n).ok())
            .and_then(|n| n.checked_mul(8))
            .and_then(|b| b.checked_add(self.used));
        match total {
            Some(t) if t <= self.budget => {
                self.used = t;
                Ok(())
            }
            _ => Err(BindError::MemoryBudget {
                value: crate::text::node_text(h, node),
                bytes: total,
                budget: self.budget,
            }),
        }
    }

    fn tensor_type(&self, h: Handle<Node>) -> &'g TensorType {
        match self.graph.type_of(h) {
            Type::Tensor(t) => t,
            // The validator guarantees tensor operands where tensors are read.
            Type::Seqs => unreachable!("{h} is a sequence set"),
        }
    }

    fn data(&self, h: Handle<Node>) -> &[f64] {
        match &self.values[h.index()] {
            Value::Tensor(d) => d,
            Value::Seqs(_) => unreachable!("{h} is a sequence set"),
        }
    }

    fn seqs(&self, h: Handle<Node>) -> &SeqsValue {
        match &self.values[h.index()] {
            Value::Seqs(s) => s,
            Value::Tensor(_) => unreachable!("{h} is not a sequence set"),
        }
    }

    /// The sequence set of the jagged value `h`.
    fn seqs_of(&self, h: Handle<Node>) -> &SeqsValue {
        match self.tensor_type(h).seqs() {
            Some(s) => self.seqs(s),
            None => unreachable!("{h} is not jagged"),
        }
    }

    /// The extent of `dim` in sequence `b`.
    fn extent(&self, dim: Dim, b: usize) -> usize {
        match dim {
            Dim::Ragged(s) => self.seqs(s).lens.get(b).copied().unwrap_or(0),
            Dim::Batch => self.batch,
            Dim::BatchPlusOne => self.batch + 1,
            Dim::MaxLen => self.max_len,
            Dim::Static(n) => n,
        }
    }

    /// The host shape of a value of type `ty`: `[T, inner...]` for jagged.
    fn shape(&self, ty: &TensorType) -> Vec<usize> {
        match ty.seqs() {
            Some(s) => {
                let rows = self.seqs(s).offsets[self.batch];
                let mut shape = vec![rows];
                shape.extend(ty.dims[1..].iter().map(|&d| self.extent(d, 0)));
                shape
            }
            None => ty.dims.iter().map(|&d| self.extent(d, 0)).collect(),
        }
    }

    /// The number of f64 slots a value of type `ty` occupies.
    fn size(&self, ty: &TensorType) -> usize {
        let rank = ty.ragged_rank();
        let inner: usize = ty.dims[rank..].iter().map(|&d| self.extent(d, 0)).product();
        match ty.seqs() {
            Some(s) if rank == 2 => self.seqs(s).pairs[self.batch] * inner,
            Some(s) => self.seqs(s).offsets[self.batch] * inner,
            None => inner,
        }
    }

    /// The layout of a value of type `ty` in sequence `b`.
    fn layout(&self, ty: &TensorType, b: usize) -> Layout {
        let rank = ty.ragged_rank();
        let mut strides = vec![0; ty.dims.len()];
        let mut inner = 1;
        for k in (rank..ty.dims.len()).rev() {
            strides[k] = inner;
            inner *= self.extent(ty.dims[k], b);
        }
        let base = match ty.seqs() {
            Some(s) if rank == 2 => {
                let seqs = self.seqs(s);
                strides[0] = seqs.lens[b] * inner;
                strides[1] = inner;
                seqs.pairs[b] * inner
            }
            Some(s) => {
                strides[0] = inner;
                self.seqs(s).offsets[b] * inner
            }
            None => 0,
        };
        Layout { base, strides }
    }

    /// Calls `f(b, idx)` for every element of a value of type `ty`.
    fn for_each(&self, ty: &TensorType, mut f: impl FnMut(usize, &[usize])) {
        let batched = ty.ragged_rank() > 0 || ty.dims.contains(&Dim::Batch);
        let sequences = if batched { self.batch } else { 1 };
        let mut idx = vec![0; ty.dims.len()];
        for b in 0..sequences {
            let ranges: Vec<(usize, usize)> = ty
                .dims
                .iter()
                .map(|&d| match d {
                    Dim::Batch => (b, b + 1),
                    d => (0, self.extent(d, b)),
                })
                .collect();
            if ranges.iter().any(|(lo, hi)| lo >= hi) {
                continue;
            }
            for (i, r) in idx.iter_mut().zip(&ranges) {
                *i = r.0;
            }
            'odometer: loop {
                f(b, &idx);
                for k in (0..idx.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < ranges[k].1 {
                        continue 'odometer;
                    }
                    idx[k] = ranges[k].0;
                }
                break;
            }
        }
    }

    /// How an elementwise operand of type `x` is indexed from a result of type `r`.
    fn projection(r: &TensorType, x: &TensorType) -> Vec<Src> {
        if x.dims == r.dims {
            // Same dims (the only case for unary ops and casts, whatever the dims).
            return (0..r.dims.len()).map(Src::At).collect();
        }
        // Broadcast operands have structures (checked by the validator).
        let (sr, sx) = match (Structure::of(r), Structure::of(x)) {
            (Some(sr), Some(sx)) => (sr, sx),
            _ => unreachable!("elementwise operands have structures"),
        };
        let r_rows_at = usize::from(r.dims.first() == Some(&Dim::Batch));
        let r_inner_at = r_rows_at + sr.rows.len();
        let mut plan = Vec::new();
        if x.dims.first() == Some(&Dim::Batch) {
            plan.push(Src::Seq);
        }
        plan.extend((0..sx.rows.len()).map(|k| Src::At(r_rows_at + k)));
        if !sx.inner.is_empty() {
            plan.extend((0..sx.inner.len()).map(|k| Src::At(r_inner_at + k)));
        }
        plan
    }

    /// Evaluates an elementwise node whose operands are `args`.
    fn elementwise(
        &self,
        h: Handle<Node>,
        args: &[Handle<Node>],
        f: impl Fn(&[f64]) -> f64,
    ) -> Vec<f64> {
        let r = self.tensor_type(h);
        let mut plans: Vec<(Cached, Vec<Src>, &[f64])> = args
            .iter()
            .map(|&a| {
                let x = self.tensor_type(a);
                (Cached::new(x), Self::projection(r, x), self.data(a))
            })
            .collect();
        let mut out = vec![0.0; self.size(r)];
        let mut at_r = Cached::new(r);
        let mut xs = vec![0.0; args.len()];
        let mut xi = Vec::new();
        self.for_each(r, |b, idx| {
            for (k, (at_x, plan, data)) in plans.iter_mut().enumerate() {
                xi.clear();
                xi.extend(plan.iter().map(|s| match s {
                    Src::Seq => b,
                    Src::At(p) => idx[*p],
                }));
                xs[k] = data[at_x.at(self, b, &xi)];
            }
            out[at_r.at(self, b, idx)] = f(&xs);
        });
        out
    }

    fn node(
        &self,
        h: Handle<Node>,
        node: &Node,
        inputs: &[(&str, &DenseTensor)],
        attrs: &BTreeMap<String, AttrValue>,
    ) -> Result<Value, EvalError> {
        let tensor = |v: Vec<f64>| Ok(Value::Tensor(v));
        match node {
            Node::Input { name, ty } => {
                let given = find_input(inputs, name)?;
                let mut data = given.to_f64();
                if let Some(s) = ty.seqs() {
                    let seqs = self.seqs(s);
                    let rows = seqs.offsets[self.batch];
                    if given.shape().first() != Some(&rows) {
                        return Err(EvalError::InputShape {
                            name: name.clone(),
                            expected: format!(
                                "{} with T = {rows} (from the offsets)",
                                crate::bind::user_type(ty)
                            ),
                            found: given.shape().to_vec(),
                        });
                    }
                    // Rows past n_b are not part of the sequence.
                    let row: usize = given.shape()[1..].iter().product();
                    for b in 0..self.batch {
                        let (start, end) = (seqs.offsets[b] + seqs.lens[b], seqs.offsets[b + 1]);
                        data[start * row..end * row].fill(0.0);
                    }
                }
                tensor(data)
            }
            Node::Attr { name, dtype } => {
                let value = attrs.get(name).map_or(0.0, |v| v.as_f64());
                tensor(vec![dtype.round(value)])
            }
            Node::Const { value, dtype } => tensor(vec![dtype.round(*value)]),
            Node::Seqs { offsets, truncate } => {
                let arg = match self.graph.node(*offsets) {
                    Node::Input { name, .. } => name.clone(),
                    _ => offsets.to_string(),
                };
                let raw: Vec<i64> = self.data(*offsets).iter().map(|&o| o as i64).collect();
                check_offsets(&arg, &raw, None)?;
                // Checked non-negative above.
                let offsets = raw.iter().map(|&o| o as usize).collect();
                Ok(Value::Seqs(SeqsValue::new(
                    offsets,
                    truncate.then_some(self.max_len),
                )))
            }
            Node::SeqsWhere { mask } => {
                let s = self.seqs_of(*mask);
                let data = self.data(*mask);
                let mut offsets = vec![0];
                for b in 0..self.batch {
                    let start = s.offsets[b];
                    let kept = data[start..start + s.lens[b]]
                        .iter()
                        .filter(|&&m| m != 0.0)
                        .count();
                    offsets.push(offsets[b] + kept);
                }
                Ok(Value::Seqs(SeqsValue::new(offsets, None)))
            }
            Node::SeqsTriu { seqs } => {
                let s = self.seqs(*seqs);
                let mut offsets = vec![0usize];
                for b in 0..self.batch {
                    let n = s.lens[b];
                    let pairs = n.saturating_mul(n.saturating_sub(1)) / 2;
                    offsets.push(offsets[b].saturating_add(pairs));
                }
                Ok(Value::Seqs(SeqsValue::new(offsets, None)))
            }
            Node::Offsets { seqs, .. } => {
                tensor(self.seqs(*seqs).offsets.iter().map(|&o| o as f64).collect())
            }
            Node::Unary { op, arg } => {
                let f: fn(f64) -> f64 = match op {
                    UnaryOp::Neg => |x| -x,
                    UnaryOp::Exp => f64::exp,
                    UnaryOp::Log => f64::ln,
                    UnaryOp::Silu => |x| x / (1.0 + (-x).exp()),
                    UnaryOp::Sqrt => f64::sqrt,
                    UnaryOp::Rsqrt => |x| 1.0 / x.sqrt(),
                    UnaryOp::Abs => f64::abs,
                    UnaryOp::Relu => relu,
                    UnaryOp::Sigmoid => |x| 1.0 / (1.0 + (-x).exp()),
                    UnaryOp::Tanh => f64::tanh,
                };
                tensor(self.elementwise(h, &[*arg], |x| f(x[0])))
            }
            Node::Cast { arg, dtype } => {
                tensor(self.elementwise(h, &[*arg], |x| dtype.round(x[0])))
            }
            Node::Binary { op, lhs, rhs } => {
                let f: fn(f64, f64) -> f64 = match op {
                    BinaryOp::Add => |a, b| a + b,
                    BinaryOp::Sub => |a, b| a - b,
                    BinaryOp::Mul => |a, b| a * b,
                    BinaryOp::Div => |a, b| a / b,
                    BinaryOp::Max => max_nan,
                    BinaryOp::Min => min_nan,
                    BinaryOp::Pow => f64::powf,
                };
                let int_div = *op == BinaryOp::Div && !self.tensor_type(h).dtype.is_float();
                tensor(self.elementwise(h, &[*lhs, *rhs], |x| match int_div {
                    true if x[1] == 0.0 => 0.0,
                    true => (x[0] / x[1]).trunc(),
                    false => f(x[0], x[1]),
                }))
            }
            Node::Select {
                cond,
                on_true,
                on_false,
            } => tensor(self.elementwise(h, &[*cond, *on_true, *on_false], |x| {
                if x[0] != 0.0 { x[1] } else { x[2] }
            })),
            Node::Mask { pred, ty } => {
                let mut out = vec![0.0; self.size(ty)];
                let mut at = Cached::new(ty);
                self.for_each(ty, |b, idx| {
                    let holds = match pred {
                        IndexPredicate::KeyNotAfterQuery => idx[1] <= idx[0],
                        IndexPredicate::KeyNotBeforeQuery => idx[1] >= idx[0],
                        IndexPredicate::RowInSequence(s) => idx[1] < self.seqs(*s).lens[b],
                    };
                    out[at.at(self, b, idx)] = f64::from(u8::from(holds));
                });
                tensor(out)
            }
            Node::Compare { op, lhs, rhs } => {
                let f: fn(f64, f64) -> bool = match op {
                    CompareOp::Lt => |a, b| a < b,
                    CompareOp::Le => |a, b| a <= b,
                    CompareOp::Gt => |a, b| a > b,
                    CompareOp::Ge => |a, b| a >= b,
                    CompareOp::Eq => |a, b| a == b,
                    CompareOp::Ne => |a, b| a != b,
                };
                tensor(self.elementwise(h, &[*lhs, *rhs], |x| f64::from(u8::from(f(x[0], x[1])))))
            }
            Node::Position { axis, ty } => {
                let mut out = vec![0.0; self.size(ty)];
                let mut at = Cached::new(ty);
                self.for_each(ty, |b, idx| {
                    out[at.at(self, b, idx)] = ty.dtype.round(idx[*axis] as f64);
                });
                tensor(out)
            }
            Node::Gather { table, index } => {
                let (tab, r) = (self.tensor_type(*table), self.tensor_type(h));
                let idx_ty = self.tensor_type(*index);
                let n = match tab.dims.first() {
                    Some(Dim::Static(n)) => *n,
                    _ => 0,
                };
                let rest: usize = tab.dims[1..].iter().map(|&d| self.extent(d, 0)).product();
                let (tdata, idata) = (self.data(*table), self.data(*index));
                let mut out = vec![0.0; self.size(r)];
                let (mut at_r, mut at_i) = (Cached::new(r), Cached::new(idx_ty));
                let k = idx_ty.dims.len();
                self.for_each(r, |b, ri| {
                    let row = idata[at_i.at(self, b, &ri[..k])];
                    if row >= 0.0 && (row as usize) < n {
                        let inner: usize = ri[k..]
                            .iter()
                            .zip(&tab.dims[1..])
                            .fold(0, |acc, (&i, &d)| acc * self.extent(d, 0) + i);
                        out[at_r.at(self, b, ri)] = tdata[row as usize * rest + inner];
                    }
                });
                tensor(out)
            }
            Node::Lengths { seqs, .. } => {
                tensor(self.seqs(*seqs).lens.iter().map(|&n| n as f64).collect())
            }
            Node::Reduce { op, arg, axis } => tensor(self.reduce(h, *op, *arg, *axis)),
            Node::Softmax { arg, axis } => tensor(self.softmax(*arg, *axis)),
            Node::Rank { order, arg, axis } => tensor(self.rank(*order, *arg, *axis)),
            Node::Shift { arg, axis, by } => tensor(self.shift(*arg, *axis, *by)),
            Node::Take { arg, index, axis } => tensor(self.take(h, *arg, *index, *axis)),
            // Row-major: the same elements in the same order.
            Node::Reshape { arg, .. } => tensor(self.data(*arg).to_vec()),
            Node::TopK {
                order,
                part,
                arg,
                axis,
                k,
            } => tensor(self.top_k(h, (*order, *part), *arg, *axis, *k)),
            Node::Scan { mode, arg, axis } => tensor(self.scan(h, *mode, *arg, *axis)?),
            Node::Contract {
                lhs,
                lhs_axes,
                rhs,
                rhs_axes,
                out_axes,
                precision,
                ..
            } => tensor(self.contract(
                h,
                [(*lhs, lhs_axes), (*rhs, rhs_axes)],
                out_axes,
                *precision,
            )),
            Node::ToPadded { arg } => {
                let x = self.tensor_type(*arg);
                let s = self.seqs_of(*arg);
                let row: usize = x.dims[1..].iter().map(|&d| self.extent(d, 0)).product();
                let n = self.max_len;
                let src = self.data(*arg);
                let mut out = vec![0.0; self.batch * n * row];
                for b in 0..self.batch {
                    let rows = s.lens[b].min(n);
                    out[b * n * row..(b * n + rows) * row]
                        .copy_from_slice(&src[s.offsets[b] * row..(s.offsets[b] + rows) * row]);
                }
                tensor(out)
            }
            Node::FromPadded { arg, seqs } => {
                let x = self.tensor_type(*arg);
                let s = self.seqs(*seqs);
                let row: usize = x.dims[2..].iter().map(|&d| self.extent(d, 0)).product();
                let n = self.max_len;
                let src = self.data(*arg);
                let mut out = vec![0.0; s.offsets[self.batch] * row];
                for b in 0..self.batch {
                    let rows = s.lens[b].min(n);
                    out[s.offsets[b] * row..(s.offsets[b] + rows) * row]
                        .copy_from_slice(&src[b * n * row..(b * n + rows) * row]);
                }
                tensor(out)
            }
            Node::PackTriu { arg, seqs } => {
                let x = self.tensor_type(*arg);
                let s = self.seqs_of(*arg);
                let packed = self.seqs(*seqs);
                let row: usize = x.dims[2..].iter().map(|&d| self.extent(d, 0)).product();
                let src = self.data(*arg);
                let mut out = vec![0.0; packed.offsets[self.batch] * row];
                for b in 0..self.batch {
                    let n = s.lens[b];
                    let mut to = packed.offsets[b];
                    for i in 0..n {
                        for j in i + 1..n {
                            let from = s.pairs[b] + i * n + j;
                            out[to * row..(to + 1) * row]
                                .copy_from_slice(&src[from * row..(from + 1) * row]);
                            to += 1;
                        }
                    }
                }
                tensor(out)
            }
            Node::Compact { arg, seqs } => {
                let x = self.tensor_type(*arg);
                let s = self.seqs_of(*arg);
                let kept = self.seqs(*seqs);
                let Node::SeqsWhere { mask } = self.graph.node(*seqs) else {
                    unreachable!("validated: compact's set is a seqs_where");
                };
                let mask = self.data(*mask);
                let row: usize = x.dims[1..].iter().map(|&d| self.extent(d, 0)).product();
                let src = self.data(*arg);
                let mut out = vec![0.0; kept.offsets[self.batch] * row];
                for b in 0..self.batch {
                    let mut to = kept.offsets[b];
                    for i in s.offsets[b]..s.offsets[b] + s.lens[b] {
                        if mask[i] != 0.0 {
                            out[to * row..(to + 1) * row]
                                .copy_from_slice(&src[i * row..(i + 1) * row]);
                            to += 1;
                        }
                    }
                }
                tensor(out)
            }
        }
    }

    fn reduce(&self, h: Handle<Node>, op: ReduceOp, arg: Handle<Node>, axis: usize) -> Vec<f64> {
        let (x, r) = (self.tensor_type(arg), self.tensor_type(h));
        let data = self.data(arg);
        // The result gained a leading B when its source lost its only ragged dim.
        let skip = usize::from(r.dims.len() == x.dims.len());
        let mut out = vec![0.0; self.size(r)];
        let mut xi = vec![0; x.dims.len()];
        let mut line = Vec::new();
        let (mut at_x, mut at_r) = (Cached::new(x), Cached::new(r));
        self.for_each(r, |b, idx| {
            let rest = &idx[skip..];
            xi[..axis].copy_from_slice(&rest[..axis]);
            xi[axis + 1..].copy_from_slice(&rest[axis..]);
            line.clear();
            for t in 0..self.extent(x.dims[axis], b) {
                xi[axis] = t;
                line.push(data[at_x.at(self, b, &xi)]);
            }
            out[at_r.at(self, b, idx)] = reduce_line(op, &line);
        });
        out
    }

    /// Each element's place in the stable sort of its line (NaN first,
    /// then by `order`, ties by index).
    fn rank(&self, order: RankOrder, arg: Handle<Node>, axis: usize) -> Vec<f64> {
        let x = self.tensor_type(arg);
        let data = self.data(arg);
        let mut out = vec![0.0; data.len()];
        let mut xi = Vec::new();
        let mut at = Cached::new(x);
        self.for_each(x, |b, idx| {
            let here = at.at(self, b, idx);
            let v = data[here];
            xi.clear();
            xi.extend_from_slice(idx);
            let mut before = 0usize;
            for t in 0..self.extent(x.dims[axis], b) {
                xi[axis] = t;
                let w = data[at.at(self, b, &xi)];
                let better = match (w.is_nan(), v.is_nan()) {
                    (true, false) => true,
                    (false, true) => false,
                    (true, true) => false,
                    (false, false) => match order {
                        RankOrder::Ascending => w < v,
                        RankOrder::Descending => w > v,
                    },
                };
                let tie = (w == v || (w.is_nan() && v.is_nan())) && t < idx[axis];
                before += usize::from(better || tie);
            }
            out[here] = before as f64;
        });
        out
    }

    /// The `k` first elements of each line in the stable sort `order`
    /// (NaN first, ties by index), as indices or values.
    fn top_k(
        &self,
        h: Handle<Node>,
        (order, part): (RankOrder, TopKPart),
        arg: Handle<Node>,
        axis: usize,
        k: usize,
    ) -> Vec<f64> {
        let (x, r) = (self.tensor_type(arg), self.tensor_type(h));
        let data = self.data(arg);
        let mut out = vec![0.0; self.size(r)];
        let (mut at_x, mut at_r) = (Cached::new(x), Cached::new(r));
        let mut xi = Vec::new();
        let mut line: Vec<(usize, f64)> = Vec::new();
        self.for_each(r, |b, idx| {
            if idx[axis] != 0 {
                return;
            }
            xi.clear();
            xi.extend_from_slice(idx);
            line.clear();
            for t in 0..self.extent(x.dims[axis], b) {
                xi[axis] = t;
                line.push((t, data[at_x.at(self, b, &xi)]));
            }
            // A stable sort: NaN first, then by value in `order`.
            line.sort_by(|&(_, a), &(_, c)| match (a.is_nan(), c.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                // Neither is NaN; -0 and +0 tie, as the kernels compare.
                (false, false) => {
                    let ord = a.partial_cmp(&c).unwrap_or(std::cmp::Ordering::Equal);
                    match order {
                        RankOrder::Ascending => ord,
                        RankOrder::Descending => ord.reverse(),
                    }
                }
            });
            for (slot, &(t, v)) in line.iter().take(k).enumerate() {
                xi[axis] = slot;
                out[at_r.at(self, b, &xi)] = match part {
                    TopKPart::Indices => t as f64,
                    TopKPart::Values => v,
                };
            }
        });
        out
    }

    /// Elements of `arg` picked along `axis` by `index` within each row.
    fn take(
        &self,
        h: Handle<Node>,
        arg: Handle<Node>,
        index: Handle<Node>,
        axis: usize,
    ) -> Vec<f64> {
        let (x, r, it) = (
            self.tensor_type(arg),
            self.tensor_type(h),
            self.tensor_type(index),
        );
        let n = self.extent(x.dims[axis], 0);
        let (data, idata) = (self.data(arg), self.data(index));
        let mut out = vec![0.0; self.size(r)];
        let (mut at_r, mut at_i, mut at_x) = (Cached::new(r), Cached::new(it), Cached::new(x));
        // The result's dims: the index's, after the operand's dims it
        // leaves out, then the operand's after `axis`.
        let skip = x.take_index_skip(it, axis).unwrap_or(0);
        let end = skip + it.dims.len();
        let mut xi = Vec::new();
        self.for_each(r, |b, ri| {
            let pick = idata[at_i.at(self, b, &ri[skip..end])];
            if pick >= 0.0 && (pick as usize) < n {
                xi.clear();
                xi.extend_from_slice(&ri[..axis]);
                xi.push(pick as usize);
                xi.extend_from_slice(&ri[end..]);
                out[at_r.at(self, b, ri)] = data[at_x.at(self, b, &xi)];
            }
        });
        out
    }

    /// The operand moved by `by` rows along `axis`, 0 past the line's ends.
    fn shift(&self, arg: Handle<Node>, axis: usize, by: i64) -> Vec<f64> {
        let x = self.tensor_type(arg);
        let data = self.data(arg);
        let mut out = vec![0.0; data.len()];
        let mut xi = Vec::new();
        let mut at = Cached::new(x);
        self.for_each(x, |b, idx| {
            let from = idx[axis] as i64 + by;
            let n = self.extent(x.dims[axis], b) as i64;
            if (0..n).contains(&from) {
                xi.clear();
                xi.extend_from_slice(idx);
                xi[axis] = from as usize;
                let src = at.at(self, b, &xi);
                out[at.at(self, b, idx)] = data[src];
            }
        });
        out
    }

    fn softmax(&self, arg: Handle<Node>, axis: usize) -> Vec<f64> {
        let x = self.tensor_type(arg);
        let data = self.data(arg);
        let mut out = vec![0.0; data.len()];
        let mut xi = Vec::new();
        let mut slots = Vec::new();
        let mut at = Cached::new(x);
        self.for_each(x, |b, idx| {
            if idx[axis] != 0 {
                return;
            }
            xi.clear();
            xi.extend_from_slice(idx);
            slots.clear();
            for t in 0..self.extent(x.dims[axis], b) {
                xi[axis] = t;
                slots.push(at.at(self, b, &xi));
            }
            if slots.iter().any(|&s| data[s].is_nan()) {
                // NaN anywhere makes the whole line NaN, as the sum does.
                for &s in &slots {
                    out[s] = f64::NAN;
                }
                return;
            }
            let m = slots
                .iter()
                .map(|&s| data[s])
                .fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                return;
            }
            let sum: f64 = slots.iter().map(|&s| (data[s] - m).exp()).sum();
            for &s in &slots {
                out[s] = (data[s] - m).exp() / sum;
            }
        });
        out
    }

    /// A prefix sum. Integer scans must stay in their dtype's range (a
    /// kernel would wrap around), and the lengths of a `complete` scan over
    /// i32/i64 (lengths to offsets) must not be negative: either is a typed
    /// error naming the operand.
    fn scan(
        &self,
        h: Handle<Node>,
        mode: ScanMode,
        arg: Handle<Node>,
        axis: usize,
    ) -> Result<Vec<f64>, EvalError> {
        let (x, r) = (self.tensor_type(arg), self.tensor_type(h));
        let data = self.data(arg);
        let what = || match self.graph.node(arg) {
            Node::Input { name, .. } => name.clone(),
            node => crate::text::node_text(arg, node),
        };
        let range = integer_range(r.dtype);
        // Lengths that become offsets (`complete_cumsum`'s input, as the
        // runtime checks them): a complete integer scan of a graph input. A
        // scan of computed values may go negative; any integer scan must
        // stay within its dtype.
        let lengths = mode == ScanMode::Complete
            && r.dtype.is_index()
            && matches!(self.graph.node(arg), Node::Input { .. });
        let mut failure: Option<TensorError> = None;
        let mut out = vec![0.0; self.size(r)];
        let mut xi = Vec::new();
        let lines = |f: &mut dyn FnMut(usize, &[usize])| {
            if self.extent(x.dims[axis], 0) == 0 {
                // A scan along an empty axis still writes the leading 0 of `complete`;
                // the output is zero-initialized, so there is nothing to do.
                return;
            }
            self.for_each(x, |b, idx| {
                if idx[axis] == 0 {
                    f(b, idx);
                }
            });
        };
        let (mut at_x, mut at_r) = (Cached::new(x), Cached::new(r));
        let mut line = |b: usize, idx: &[usize]| {
            xi.clear();
            xi.extend_from_slice(idx);
            let mut acc = 0.0;
            let n = self.extent(x.dims[axis], b);
            for t in 0..n {
                xi[axis] = t;
                let v = data[at_x.at(self, b, &xi)];
                if failure.is_none() {
                    if lengths && v < 0.0 {
                        failure = Some(TensorError::NegativeLength {
                            arg: what(),
                            index: t,
                            value: v as i64,
                        });
                    } else if range.is_some_and(|(lo, hi)| !(lo..hi).contains(&(acc + v))) {
                        failure = Some(TensorError::OffsetsOverflow {
                            arg: what(),
                            index: t,
                            dtype: r.dtype,
                        });
                    }
                }
                let (slot, value) = match mode {
                    ScanMode::Inclusive => (t, acc + v),
                    ScanMode::Exclusive | ScanMode::Complete => (t, acc),
                };
                acc += v;
                xi[axis] = slot;
                out[at_r.at(self, b, &xi)] = value;
            }
            if mode == ScanMode::Complete {
                xi[axis] = n;
                out[at_r.at(self, b, &xi)] = acc;
            }
        };
        lines(&mut line);
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    fn contract(
        &self,
        h: Handle<Node>,
        operands: [(Handle<Node>, &String); 2],
        out_axes: &str,
        precision: Precision,
    ) -> Vec<f64> {
        let r = self.tensor_type(h);
        // tf32: each operand element rounded, as `cvt.rna.tf32.f32` does.
        let rounded: Vec<Vec<f64>> = match precision {
            Precision::Full => Vec::new(),
            Precision::Tf32 => operands
                .iter()
                .map(|(arg, _)| self.data(*arg).iter().map(|&v| round_tf32(v)).collect())
                .collect(),
        };
        // Letters: the output's first, then the summed ones.
        let mut letters: Vec<char> = out_axes.chars().collect();
        let n_out = letters.len();
        let mut dims_of: Vec<Dim> = Vec::new();
        let mut plans = Vec::new();
        for (arg, axes) in operands {
            let x = self.tensor_type(arg);
            let mut plan = Vec::new();
            let named = if x.dims.first() == Some(&Dim::Batch) {
                plan.push(Src::Seq);
                &x.dims[1..]
            } else {
                &x.dims[..]
            };
            for (c, &d) in axes.chars().zip(named) {
                let k = letters.iter().position(|&l| l == c).unwrap_or_else(|| {
                    letters.push(c);
                    letters.len() - 1
                });
                plan.push(Src::At(k));
                if dims_of.len() <= k {
                    dims_of.resize(k + 1, Dim::Static(0));
                }
                dims_of[k] = d;
            }
            let data = match rounded.get(plans.len()) {
                Some(r) => &r[..],
                None => self.data(arg),
            };
            plans.push((x, plan, data));
        }
        let lead = usize::from(r.dims.first() == Some(&Dim::Batch));
        let batched = r.ragged_rank() > 0 || lead == 1;
        let mut out = vec![0.0; self.size(r)];
        let mut vals = vec![0; letters.len()];
        let mut ri = vec![0; r.dims.len()];
        for b in 0..if batched { self.batch } else { 1 } {
            let ext: Vec<usize> = dims_of.iter().map(|&d| self.extent(d, b)).collect();
            if ext[..n_out].contains(&0) {
                continue;
            }
            // Each operand's element at letter values `vals` is at
            // `base + sum(vals[l] * stride[l])`.
            let affine: Vec<(usize, Vec<usize>, &[f64])> = plans
                .iter()
                .map(|(x, plan, data)| {
                    let layout = self.layout(x, b);
                    let mut base = layout.base;
                    let mut stride = vec![0; letters.len()];
                    for (src, s) in plan.iter().zip(&layout.strides) {
                        match src {
                            Src::Seq => base += b * s,
                            Src::At(l) => stride[*l] += s,
                        }
                    }
                    (base, stride, *data)
                })
                .collect();
            let at_r = self.layout(r, b);
            vals.fill(0);
            'out: loop {
                let mut acc = 0.0;
                if !ext[n_out..].contains(&0) {
                    vals[n_out..].fill(0);
                    'sum: loop {
                        let mut prod = 1.0;
                        for (base, stride, data) in &affine {
                            let at: usize = vals.iter().zip(stride).map(|(v, s)| v * s).sum();
                            prod *= data[base + at];
                        }
                        acc += prod;
                        if !advance(&mut vals[n_out..], &ext[n_out..]) {
                            break 'sum;
                        }
                    }
                }
                if lead == 1 {
                    ri[0] = b;
                }
                ri[lead..].copy_from_slice(&vals[..n_out]);
                out[at_r.at(&ri)] = acc;
                if !advance(&mut vals[..n_out], &ext[..n_out]) {
                    break 'out;
                }
            }
        }
        out
    }
}

/// The larger of `a` and `b`, NaN if either is (IEEE 754-2019 `maximum`;
/// `f64::max` would return the other operand).
fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The smaller of `a` and `b`, NaN if either is.
fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// `max(x, 0)` with NaN propagated (`f64::max` would drop it).
fn relu(x: f64) -> f64 {
    if x > 0.0 || x.is_nan() { x } else { 0.0 }
}

/// `[lo, hi)` of an integer dtype as f64 (exact bounds: powers of two), or
/// `None` for floats.
fn integer_range(dtype: DType) -> Option<(f64, f64)> {
    match dtype {
        DType::I32 => Some((-2f64.powi(31), 2f64.powi(31))),
        DType::I64 => Some((-2f64.powi(63), 2f64.powi(63))),
        DType::U8 => Some((0.0, 256.0)),
        _ => None,
    }
}

/// Steps an odometer; false when it wraps around.
fn advance(vals: &mut [usize], ext: &[usize]) -> bool {
    for k in (0..vals.len()).rev() {
        vals[k] += 1;
        if vals[k] < ext[k] {
            return true;
        }
        vals[k] = 0;
    }
    false
}

/// A reduction over one line of values (empty lines give 0, a NaN anywhere
/// gives NaN: `f64::max` alone would skip it).
fn reduce_line(op: ReduceOp, line: &[f64]) -> f64 {
    let sum = || line.iter().sum::<f64>();
    let max = || line.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match op {
        ReduceOp::ArgMin | ReduceOp::ArgMax => arg_extreme(op == ReduceOp::ArgMax, line),
        _ if line.is_empty() => 0.0,
        _ if line.iter().any(|x| x.is_nan()) => f64::NAN,
        ReduceOp::Sum => sum(),
        ReduceOp::Max => max(),
        ReduceOp::Mean => sum() / line.len() as f64,
        ReduceOp::LogSumExp => {
            let m = max();
            if m == f64::NEG_INFINITY {
                0.0
            } else {
                m + line.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
            }
        }
    }
}

/// `x` as f32, rounded to TensorFloat-32: 10 mantissa bits, to the nearest
/// with ties away from zero (PTX's `cvt.rna.tf32.f32`); infinities and NaN
/// unchanged.
pub fn round_tf32(x: f64) -> f64 {
    let f = x as f32;
    if !f.is_finite() {
        return f64::from(f);
    }
    f64::from(f32::from_bits(
        f.to_bits().wrapping_add(0x1000) & 0xffff_e000,
    ))
}

/// The index of the smallest (`max`: largest) entry of `line`, the lowest on
/// ties, the first NaN if any (numpy's rule), -1 for an empty line.
fn arg_extreme(max: bool, line: &[f64]) -> f64 {
    if let Some(k) = line.iter().position(|x| x.is_nan()) {
        return k as f64;
    }
    let mut best: Option<(usize, f64)> = None;
    for (k, &x) in line.iter().enumerate() {
        let better = match best {
            None => true,
            Some((_, b)) => (max && x > b) || (!max && x < b),
        };
        if better {
            best = Some((k, x));
        }
    }
    best.map_or(-1.0, |(k, _)| k as f64)
}
