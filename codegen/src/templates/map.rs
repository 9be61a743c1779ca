//! The map template: a jagged output `[T, W]` computed elementwise from jagged
//! inputs `[T, W]` and dense inputs `[B, N, W]` broadcast by `(sequence, row)`.
//! Rows at `i >= max_len` of their sequence are zero. Each thread handles one
//! vector chunk of a row (16 bytes when the row width allows), grid-stride.

use std::fmt;

use jagged_ir::{BinaryOp, UnaryOp};

use crate::kernel::{BinOp, Cmp, KernelBuilder, Operand, Reg, RegClass, Type, UnOp};
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
///
/// NaN in gives NaN out for every function, as in the reference. Accuracy
/// (relative, on a GPU; the emulator computes the `.approx` instructions
/// exactly): `sqrt.rn` and `abs` are exact; `rsqrt.approx` is within 2^-22.9;
/// `exp`, `sigmoid` and `silu` within a few 2^-22 plus `|x| * 2^-24` (the
/// rounding of `x * log2(e)`); `tanh` within about 1e-6 (a polynomial for
/// `|x| < 0.3`, `1 - 2 / (e^2x + 1)` elsewhere, which saturates to `+-1`
/// without overflow trouble since `2 / inf = 0`).
pub fn emit_unary(b: &mut KernelBuilder, op: UnaryOp, x: Reg) -> Reg {
    match op {
        UnaryOp::Neg => b.unary(UnOp::Neg, Type::F32, x),
        UnaryOp::Exp => exp_f32(b, x),
        UnaryOp::Log => {
            let l2 = log2_f32(b, x);
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
        UnaryOp::Sqrt => b.unary(UnOp::Sqrt, Type::F32, x),
        UnaryOp::Rsqrt => b.unary(UnOp::RsqrtApprox, Type::F32, x),
        UnaryOp::Abs => b.unary(UnOp::Abs, Type::F32, x),
        UnaryOp::Relu => {
            // Not `max.f32 x, 0`: PTX `max` returns the non-NaN operand, so
            // relu(NaN) would be 0. `x <= 0` is false for NaN, which keeps x.
            let non_positive = b.setp(Cmp::Le, Type::F32, x, Operand::F32(0.0));
            b.selp(Type::F32, Operand::F32(0.0), x, non_positive)
        }
        UnaryOp::Sigmoid => {
            let neg = b.unary(UnOp::Neg, Type::F32, x);
            let e = exp_f32(b, neg);
            let denom = b.binary(BinOp::Add, Type::F32, e, Operand::F32(1.0));
            b.unary(UnOp::Rcp, Type::F32, denom)
        }
        UnaryOp::Tanh => emit_tanh(b, x),
    }
}

/// `tanh x` in f32 without `tanh.approx` (whose 2^-10.7 relative error is
/// far above the f32 tolerance): for `|x| < 0.3` the odd Taylor polynomial
/// `x (1 - s/3 + 2s^2/15 - 17s^3/315 + 62s^4/2835)`, `s = x^2` (truncation
/// error below 6e-8 relative), else `1 - 2 / (e^(2x) + 1)`, whose
/// cancellation costs at most a few ulps there. `e^(2x)` overflowing to
/// `inf` gives exactly 1, underflowing to 0 gives exactly -1, and NaN fails
/// the `|x| < 0.3` test and propagates through the second form.
fn emit_tanh(b: &mut KernelBuilder, x: Reg) -> Reg {
    use crate::kernel::TernOp;
    let s = b.binary(BinOp::Mul, Type::F32, x, x);
    let mut poly = b.mov(Type::F32, Operand::F32((62.0 / 2835.0) as f32));
    for c in [-17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0, 1.0] {
        poly = b.ternary(TernOp::Fma, Type::F32, poly, s, Operand::F32(c as f32));
    }
    let near_zero = b.binary(BinOp::Mul, Type::F32, x, poly);
    let two_x = b.binary(BinOp::Add, Type::F32, x, x);
    let e = exp_f32(b, two_x);
    let denom = b.binary(BinOp::Add, Type::F32, e, Operand::F32(1.0));
    let frac = b.binary(BinOp::Div, Type::F32, Operand::F32(2.0), denom);
    let far = b.binary(BinOp::Sub, Type::F32, Operand::F32(1.0), frac);
    let ax = b.unary(UnOp::Abs, Type::F32, x);
    let small = b.setp(Cmp::Lt, Type::F32, ax, Operand::F32(0.3));
    b.selp(Type::F32, near_zero, far, small)
}

/// Emits the f32 form of an IR binary function (see [`emit_unary`]).
///
/// `max` and `min` propagate NaN like the reference (PTX `max.f32` /
/// `min.f32` return the non-NaN operand, so a NaN operand is selected back
/// in); `pow` is IEEE `powf` (see [`BinaryOp::Pow`]) computed as
/// `2^(p * log2|x|)` with the sign, zero, infinity, NaN and subnormal cases
/// fixed up by selects.
pub fn emit_binary(b: &mut KernelBuilder, op: BinaryOp, l: Reg, r: Reg) -> Reg {
    let op = match op {
        BinaryOp::Add => BinOp::Add,
        BinaryOp::Sub => BinOp::Sub,
        BinaryOp::Mul => BinOp::Mul,
        BinaryOp::Div => BinOp::Div,
        BinaryOp::Max => return super::min_max_nan(b, BinOp::Max, l, r),
        BinaryOp::Min => return super::min_max_nan(b, BinOp::Min, l, r),
        BinaryOp::Pow => return emit_pow(b, l, r),
    };
    b.binary(op, Type::F32, l, r)
}

/// `log2(v)` with `lg2.approx.ftz`, which flushes subnormal inputs to zero
/// (giving `-inf`): `|v| < 2^-126` is scaled by 2^24 first and 24 taken off.
fn log2_f32(b: &mut KernelBuilder, v: Reg) -> Reg {
    let av = b.unary(UnOp::Abs, Type::F32, v);
    let tiny = b.setp(Cmp::Lt, Type::F32, av, Operand::F32(f32::MIN_POSITIVE));
    let scaled = b.binary(BinOp::Mul, Type::F32, v, Operand::F32(16_777_216.0));
    let arg = b.selp(Type::F32, scaled, v, tiny);
    let shift = b.selp(Type::F32, Operand::F32(-24.0), Operand::F32(0.0), tiny);
    let lg = b.unary(UnOp::Lg2Approx, Type::F32, arg);
    b.binary(BinOp::Add, Type::F32, lg, shift)
}

/// `trunc(v)` of an f32 through a 64-bit integer; values of magnitude
/// `>= 2^24` (integers already), infinities included, are kept as they are.
fn trunc_f32(b: &mut KernelBuilder, v: Reg) -> Reg {
    let as_int = b.cvt(Type::S64, Type::F32, v);
    let back = b.cvt(Type::F32, Type::S64, as_int);
    let av = b.unary(UnOp::Abs, Type::F32, v);
    let big = b.setp(Cmp::Ge, Type::F32, av, Operand::F32(16_777_216.0));
    b.selp(Type::F32, v, back, big)
}

/// IEEE `powf(x, p)` in f32 (see [`emit_binary`]); subnormal `x` are
/// handled by [`log2_f32`], results below 2^-126 are flushed to 0 by
/// `ex2.approx.ftz`. On a GPU the relative
/// error is about `|p log2 x| * 2^-23` plus the `approx` errors (2^-22).
fn emit_pow(b: &mut KernelBuilder, x: Reg, p: Reg) -> Reg {
    let ax = b.unary(UnOp::Abs, Type::F32, x);
    let l2 = log2_f32(b, ax);
    let t = b.binary(BinOp::Mul, Type::F32, p, l2);
    let mag = b.unary(UnOp::Ex2Approx, Type::F32, t);
    // An odd integer p carries x's sign bit (-0 and -inf included).
    let half = b.binary(BinOp::Mul, Type::F32, p, Operand::F32(0.5));
    let half_trunc = trunc_f32(b, half);
    let half_frac = b.binary(BinOp::Sub, Type::F32, half, half_trunc);
    let half_frac = b.unary(UnOp::Abs, Type::F32, half_frac);
    let odd = b.setp(Cmp::Eq, Type::F32, half_frac, Operand::F32(0.5));
    let x_bits = b.bitcast(RegClass::B32, Type::B32, x);
    let sign = b.binary(BinOp::And, Type::B32, x_bits, Operand::Int(0x8000_0000));
    let mag_bits = b.bitcast(RegClass::B32, Type::B32, mag);
    let signed_bits = b.binary(BinOp::Or, Type::B32, mag_bits, sign);
    let signed = b.bitcast(RegClass::F32, Type::B32, signed_bits);
    let value = b.selp(Type::F32, signed, mag, odd);
    // A finite negative x with a non-integer p: NaN.
    let p_trunc = trunc_f32(b, p);
    let non_integer = b.setp(Cmp::Ne, Type::F32, p, p_trunc);
    let nan_if_negative = b.selp(Type::F32, Operand::F32(f32::NAN), value, non_integer);
    let negative = b.setp(Cmp::Lt, Type::F32, x, Operand::F32(0.0));
    let value_neg = b.selp(Type::F32, nan_if_negative, value, negative);
    let finite_or_pos = b.setp(Cmp::Gt, Type::F32, x, Operand::F32(f32::NEG_INFINITY));
    let value = b.selp(Type::F32, value_neg, value, finite_or_pos);
    // (+-1)^(+-inf) = 1 (the product above is 0 * inf = NaN).
    let ap = b.unary(UnOp::Abs, Type::F32, p);
    let p_inf = b.setp(Cmp::Eq, Type::F32, ap, Operand::F32(f32::INFINITY));
    let one_if_inf = b.selp(Type::F32, Operand::F32(1.0), value, p_inf);
    let unit = b.setp(Cmp::Eq, Type::F32, ax, Operand::F32(1.0));
    let value = b.selp(Type::F32, one_if_inf, value, unit);
    // x^0 = 1 and 1^p = 1, NaN included.
    let p_zero = b.setp(Cmp::Eq, Type::F32, p, Operand::F32(0.0));
    let value = b.selp(Type::F32, Operand::F32(1.0), value, p_zero);
    let x_one = b.setp(Cmp::Eq, Type::F32, x, Operand::F32(1.0));
    b.selp(Type::F32, Operand::F32(1.0), value, x_one)
}
