//! The map template: a jagged output `[T, W]` computed elementwise from jagged
//! inputs `[T, W]` and dense inputs `[B, N, W]` broadcast by `(sequence, row)`.
//! Rows at `i >= max_len` of their sequence are zero. Each thread handles one
//! vector chunk of a row (16 bytes when the row width allows), grid-stride.

use std::fmt;

use jagged_ir::{BinaryOp, UnaryOp};

use crate::kernel::{BinOp, KernelBuilder, Operand, Reg, Type, UnOp};
use crate::launch::{ParamBinding, SizeExpr};
use crate::spec::DType;

use super::segment::GroupSize;
use super::{
    Entry, Plan, chunking, exp_f32, grid, load_f32, load_index, sequence_groups, split_row_chunk,
    store_f32,
};

/// Where a map operand comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapSource {
    /// Jagged values `[T, W]`: the element at the output's position.
    Jagged,
    /// Dense `[B, N, W]` (`N` = the `max_len` size parameter): element `[b, i]`.
    Dense,
    /// Dense `[B, W]`: one row per sequence, broadcast over its rows.
    PerSequence,
}

/// A pointwise expression over the operands, evaluated in f32.
#[derive(Clone, Debug, PartialEq)]
pub enum MapExpr {
    /// Operand `i` of [`MapDesc::operands`].
    Operand(usize),
    /// A constant.
    Const(f32),
    /// The run-time value of a float graph attribute (an f32 kernel parameter).
    Attr(String),
    /// `f(x)`
    Unary(UnaryOp, Box<MapExpr>),
    /// `f(a, b)`
    Binary(BinaryOp, Box<MapExpr>, Box<MapExpr>),
}

impl MapExpr {
    /// The attribute names the expression reads, in first-use order.
    pub fn attrs(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_attrs(&mut names);
        names
    }

    fn collect_attrs<'a>(&'a self, names: &mut Vec<&'a str>) {
        match self {
            MapExpr::Attr(name) if !names.contains(&name.as_str()) => names.push(name),
            MapExpr::Unary(_, x) => x.collect_attrs(names),
            MapExpr::Binary(_, a, b) => {
                a.collect_attrs(names);
                b.collect_attrs(names);
            }
            _ => {}
        }
    }
}

impl fmt::Display for MapExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapExpr::Operand(i) => write!(f, "x{i}"),
            MapExpr::Const(c) => write!(f, "{c:?}"),
            MapExpr::Attr(name) => write!(f, "{name}"),
            MapExpr::Unary(op, x) => write!(f, "{op:?}({x})"),
            MapExpr::Binary(op, a, b) => write!(f, "{op:?}({a}, {b})"),
        }
    }
}

/// One operand of a map: its source kind and the graph input bound to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapOperand {
    /// Jagged or dense.
    pub source: MapSource,
    /// Graph input index of its buffer.
    pub input: usize,
}

/// Everything the map template is specialized on.
#[derive(Clone, Debug, PartialEq)]
pub struct MapDesc {
    /// Entry name.
    pub name: String,
    /// Operands.
    pub operands: Vec<MapOperand>,
    /// Graph input index of the offsets.
    pub offsets_input: usize,
    /// The expression.
    pub expr: MapExpr,
    /// Row width `W` (product of the inner dims).
    pub width: u64,
    /// Float element type of operands and output.
    pub dtype: DType,
    /// Offsets element type.
    pub index: DType,
    /// Threads per sequence.
    pub group: GroupSize,
}

/// Generates the map kernel: groups of threads (a warp or a CTA) own one
/// sequence at a time, grid-stride over sequences, and sweep its rows x
/// chunks; no search for the sequence of a row, no division by run-time values.
pub fn map_kernel(desc: &MapDesc) -> Plan {
    let ch = chunking(desc.width, desc.dtype);
    let mut e = Entry::new(desc.name.clone());
    let out = e.buffer("out", ParamBinding::Output(0));
    let offsets = e.buffer("offsets", ParamBinding::Input(desc.offsets_input));
    let sources: Vec<Reg> = desc
        .operands
        .iter()
        .enumerate()
        .map(|(k, op)| e.buffer(&format!("in{k}"), ParamBinding::Input(op.input)))
        .collect();
    let batch = e.size("batch", SizeExpr::Batch);
    let max_len = e.size("max_len", SizeExpr::MaxLen);
    let attrs: Vec<(String, Reg)> = desc
        .expr
        .attrs()
        .into_iter()
        .map(|name| (name.to_string(), e.float_attr(name)))
        .collect();
    let b = &mut e.b;
    let group_threads = desc.group.threads();
    let groups = sequence_groups(b, group_threads);
    let local64 = b.cvt(Type::U64, Type::U32, groups.local);
    b.for_range_u64(groups.first, batch, groups.step, |b, seq| {
        let seq_end = b.binary(BinOp::Add, Type::U64, seq, Operand::Int(1));
        let seq_start = load_index(b, offsets, seq, desc.index);
        let o1 = load_index(b, offsets, seq_end, desc.index);
        let len = b.binary(BinOp::Sub, Type::U64, o1, seq_start);
        let items = b.binary(BinOp::Mul, Type::U64, len, Operand::Int(ch.chunks as i64));
        let step = Operand::Int(i64::from(group_threads));
        b.for_range_u64(local64, items, step, |b, k| {
            map_item(
                b,
                desc,
                &MapRegs {
                    out,
                    sources: &sources,
                    max_len,
                    attrs: &attrs,
                },
                seq,
                seq_start,
                k,
            );
        });
    });
    let per_block = u64::from(super::BLOCK_THREADS / group_threads);
    e.finish(grid(SizeExpr::Batch, per_block))
}

/// Registers the per-item code reads.
struct MapRegs<'a> {
    out: Reg,
    sources: &'a [Reg],
    max_len: Reg,
    attrs: &'a [(String, Reg)],
}

/// Item `k` (row `k / chunks`, chunk `k % chunks`) of sequence `seq`.
fn map_item(
    b: &mut KernelBuilder,
    desc: &MapDesc,
    regs: &MapRegs,
    seq: Reg,
    seq_start: Reg,
    k: Reg,
) {
    let ch = chunking(desc.width, desc.dtype);
    let (out, sources, max_len) = (regs.out, regs.sources, regs.max_len);
    let (i, chunk) = split_row_chunk(b, k, ch.chunks);
    let row = b.binary(BinOp::Add, Type::U64, seq_start, i);
    let elem = row_elem(b, row, chunk, desc.width, ch.vec);
    let valid = b.setp(crate::kernel::Cmp::Lt, Type::U64, i, max_len);
    let zero_path = b.label();
    let next = b.label();
    b.bra_if(valid, true, zero_path);
    let mut lanes: Vec<Vec<Reg>> = Vec::new();
    for (n, op) in desc.operands.iter().enumerate() {
        let index = match op.source {
            MapSource::Jagged => elem,
            MapSource::Dense => {
                let dense_row = b.ternary(crate::kernel::TernOp::MadLo, Type::U64, seq, max_len, i);
                row_elem(b, dense_row, chunk, desc.width, ch.vec)
            }
            MapSource::PerSequence => row_elem(b, seq, chunk, desc.width, ch.vec),
        };
        lanes.push(load_f32(b, sources[n], index, desc.dtype, ch.vec));
    }
    let results: Vec<Reg> = (0..ch.vec as usize)
        .map(|lane| {
            let inputs: Vec<Reg> = lanes.iter().map(|l| l[lane]).collect();
            emit_expr(b, &desc.expr, &inputs, regs.attrs)
        })
        .collect();
    store_f32(b, out, elem, desc.dtype, &results);
    b.bra(next);
    b.place(zero_path);
    let zero = b.const_f32(0.0);
    store_f32(b, out, elem, desc.dtype, &vec![zero; ch.vec as usize]);
    b.place(next);
}

/// Element index `row * width + chunk * vec`.
pub fn row_elem(b: &mut KernelBuilder, row: Reg, chunk: Reg, width: u64, vec: u32) -> Reg {
    let chunk_elem = b.binary(BinOp::Mul, Type::U64, chunk, Operand::Int(i64::from(vec)));
    b.ternary(
        crate::kernel::TernOp::MadLo,
        Type::U64,
        row,
        Operand::Int(width as i64),
        chunk_elem,
    )
}

/// Emits `expr` over f32 operand registers and attribute registers (by
/// name); returns the result register.
pub fn emit_expr(
    b: &mut KernelBuilder,
    expr: &MapExpr,
    operands: &[Reg],
    attrs: &[(String, Reg)],
) -> Reg {
    match expr {
        MapExpr::Operand(i) => operands[*i],
        MapExpr::Const(c) => b.const_f32(*c),
        MapExpr::Attr(name) => {
            attrs
                .iter()
                .find(|(n, _)| n == name)
                .expect("map_kernel loads every attribute MapExpr::attrs lists")
                .1
        }
        MapExpr::Unary(op, x) => {
            let x = emit_expr(b, x, operands, attrs);
            emit_unary(b, *op, x)
        }
        MapExpr::Binary(op, l, r) => {
            let l = emit_expr(b, l, operands, attrs);
            let r = emit_expr(b, r, operands, attrs);
            emit_binary(b, *op, l, r)
        }
    }
}

/// Emits the f32 form of an IR unary function: the one place that lowers
/// [`UnaryOp`] (the map template and the general lowering share it).
pub fn emit_unary(b: &mut KernelBuilder, op: UnaryOp, x: Reg) -> Reg {
    match op {
        UnaryOp::Neg => b.unary(UnOp::Neg, Type::F32, x),
        UnaryOp::Exp => exp_f32(b, x),
        UnaryOp::Log => {
            let l2 = b.unary(UnOp::Lg2Approx, Type::F32, x);
            b.binary(
                BinOp::Mul,
                Type::F32,
                l2,
                Operand::F32(std::f32::consts::LN_2),
            )
        }
        UnaryOp::Silu => {
            let neg = b.unary(UnOp::Neg, Type::F32, x);
            let e = exp_f32(b, neg);
            let denom = b.binary(BinOp::Add, Type::F32, e, Operand::F32(1.0));
            b.binary(BinOp::Div, Type::F32, x, denom)
        }
    }
}

/// Emits the f32 form of an IR binary function (see [`emit_unary`]).
pub fn emit_binary(b: &mut KernelBuilder, op: BinaryOp, l: Reg, r: Reg) -> Reg {
    let op = match op {
        BinaryOp::Add => BinOp::Add,
        BinaryOp::Sub => BinOp::Sub,
        BinaryOp::Mul => BinOp::Mul,
        BinaryOp::Div => BinOp::Div,
        BinaryOp::Max => BinOp::Max,
        BinaryOp::Min => BinOp::Min,
    };
    b.binary(op, Type::F32, l, r)
}
