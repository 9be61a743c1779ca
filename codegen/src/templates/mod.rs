//! Kernel templates: small parameterized generators of [`Kernel`]s, one per
//! family (map, padding, per-sequence reductions, scans), plus the pieces
//! they share (parameter binding, vectorized value access, offset lookup,
//! warp and block reductions).

pub mod attention;
pub mod attention_bwd;
pub mod attention_graph;
pub mod map;
pub mod pad;
pub mod scan;
pub mod segment;

use crate::kernel::{
    Address, BinOp, Cmp, Inst, Kernel, KernelBuilder, Operand, ParamType, Reg, RegClass, Space,
    Special, TernOp, Type, UnOp,
};
use crate::launch::{GridRule, ParamBinding, SizeExpr, TensorMapBinding};
use crate::spec::{DType, elem_bytes};

/// Threads per CTA of every template.
pub const BLOCK_THREADS: u32 = 256;

/// Upper bound of a grid-stride grid: plenty of CTAs to fill any GPU, far
/// below the launch limit.
pub const MAX_BLOCKS: u32 = 65535 * 8;

/// A generated kernel with its launch rule and parameter bindings.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The kernel.
    pub kernel: Kernel,
    /// Its grid rule.
    pub grid: GridRule,
    /// One binding per kernel parameter, in order.
    pub bindings: Vec<ParamBinding>,
}

/// A [`KernelBuilder`] that records how each parameter is bound.
#[derive(Debug)]
pub struct Entry {
    /// The kernel being written.
    pub b: KernelBuilder,
    bindings: Vec<ParamBinding>,
}

impl Entry {
    /// Starts an entry named `name` with [`BLOCK_THREADS`] threads per CTA.
    pub fn new(name: impl Into<String>) -> Self {
        Entry {
            b: KernelBuilder::new(name, BLOCK_THREADS),
            bindings: Vec::new(),
        }
    }

    /// A global buffer parameter (16-byte aligned); returns its global address.
    pub fn buffer(&mut self, name: &str, binding: ParamBinding) -> Reg {
        let p = self.b.param(name, ParamType::Ptr { align: 16 });
        self.bindings.push(binding);
        self.b.ld_global_ptr(p)
    }

    /// A by-value TMA tensor-map parameter bound to `map`; returns the
    /// generic address `cp.async.bulk.tensor` reads it at.
    pub fn tensor_map(&mut self, name: &str, map: TensorMapBinding) -> Reg {
        let p = self.b.param(name, ParamType::TensorMap);
        self.bindings.push(ParamBinding::TensorMap(map));
        self.b.param_addr(p)
    }

    /// A u64 size parameter; returns its register.
    pub fn size(&mut self, name: &str, value: SizeExpr) -> Reg {
        let p = self.b.param(name, ParamType::U64);
        self.bindings.push(ParamBinding::Size(value));
        self.b.ld_param(p)
    }

    /// An f32 parameter bound to a graph attribute; returns its register.
    pub fn float_attr(&mut self, name: &str) -> Reg {
        // PTX identifiers: letters, digits, `_` (attribute names are Rust identifiers anyway).
        let ident: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let p = self.b.param(&format!("attr_{ident}"), ParamType::F32);
        self.bindings
            .push(ParamBinding::FloatAttr(name.to_string()));
        self.b.ld_param(p)
    }

    /// Finishes the kernel with a grid rule.
    pub fn finish(self, grid: GridRule) -> Plan {
        Plan {
            kernel: self.b.finish(),
            grid,
            bindings: self.bindings,
        }
    }
}

/// A grid rule over `items` work units, `per_block` per CTA.
pub fn grid(items: SizeExpr, per_block: u64) -> GridRule {
    GridRule {
        items,
        items_per_block: per_block,
        max_blocks: MAX_BLOCKS,
    }
}

/// CTAs of a grid whose threads loop many times (one resident wave on the
/// largest targets: 132 SMs x 8 CTAs of 256 threads).
pub const LOOPING_BLOCKS: u32 = 1024;

/// How a row of `width` elements is split into vector chunks: the widest of
/// 16, 8, 4 bytes (or one element) that divides the row, so every chunk of
/// every row stays aligned when the buffer is 16-byte aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunking {
    /// Elements per chunk.
    pub vec: u32,
    /// Chunks per row.
    pub chunks: u64,
}

/// The [`Chunking`] of rows of `width` elements of `dtype`.
pub fn chunking(width: u64, dtype: DType) -> Chunking {
    let esize = elem_bytes(dtype);
    let vec = [16u32, 8, 4]
        .into_iter()
        .map(|bytes| (bytes / esize).max(1))
        .find(|&v| width.is_multiple_of(u64::from(v)))
        .unwrap_or(1);
    Chunking {
        vec,
        chunks: width / u64::from(vec),
    }
}

/// Loads `vec` raw elements of `dtype` at element `index` (64-bit) of `base`:
/// f32 data in `%f` registers, 16-bit data packed in pairs in `%r` registers
/// (or one `%h` register when `vec == 1`).
pub fn load_raw(b: &mut KernelBuilder, base: Reg, index: Reg, dtype: DType, vec: u32) -> Vec<Reg> {
    let addr = b.element_addr(base, index, elem_bytes(dtype));
    let addr = Address {
        base: addr,
        offset: 0,
    };
    let (ty, width) = raw_layout(dtype, vec);
    b.ld(Space::Global, ty, width, addr)
}

/// Stores registers produced by [`load_raw`] (or [`pack_f32`]).
pub fn store_raw(b: &mut KernelBuilder, base: Reg, index: Reg, dtype: DType, regs: Vec<Reg>) {
    let addr = b.element_addr(base, index, elem_bytes(dtype));
    let addr = Address {
        base: addr,
        offset: 0,
    };
    let vec = match dtype {
        DType::F16 | DType::BF16 if regs[0].class == RegClass::B32 => regs.len() as u32 * 2,
        _ => regs.len() as u32,
    };
    let (ty, _) = raw_layout(dtype, vec);
    b.st(Space::Global, ty, addr, regs);
}

fn raw_layout(dtype: DType, vec: u32) -> (Type, usize) {
    if dtype == DType::F32 {
        return (Type::F32, vec as usize);
    }
    // Everything else moves as bits: 16-bit floats in pairs when possible.
    match elem_bytes(dtype) {
        2 if vec >= 2 => (Type::B32, (vec / 2) as usize),
        2 => (Type::B16, 1),
        1 => (Type::U8, vec as usize),
        4 => (Type::B32, vec as usize),
        _ => (Type::B64, vec as usize),
    }
}

/// Loads `vec` float elements and converts them to f32.
pub fn load_f32(b: &mut KernelBuilder, base: Reg, index: Reg, dtype: DType, vec: u32) -> Vec<Reg> {
    let raw = load_raw(b, base, index, dtype, vec);
    unpack_f32(b, dtype, raw)
}

/// Converts raw registers of [`load_raw`] to f32 registers.
pub fn unpack_f32(b: &mut KernelBuilder, dtype: DType, raw: Vec<Reg>) -> Vec<Reg> {
    match dtype {
        DType::F16 | DType::BF16 => {
            let mut out = Vec::new();
            for r in raw {
                if r.class == RegClass::B16 {
                    out.push(half_to_f32(b, dtype, r));
                    continue;
                }
                if dtype == DType::F16 {
                    let lo = b.reg(RegClass::B16);
                    let hi = b.reg(RegClass::B16);
                    b.push(Inst::Unpack { lo, hi, src: r });
                    out.push(b.cvt(Type::F32, Type::F16, lo));
                    out.push(b.cvt(Type::F32, Type::F16, hi));
                } else {
                    // bf16 is the high half of an f32: shift / mask the bits into place.
                    let lo = b.binary(BinOp::Shl, Type::B32, r, Operand::Int(16));
                    let hi = b.binary(BinOp::And, Type::B32, r, Operand::Int(-65536));
                    out.push(b.bitcast(RegClass::F32, Type::B32, lo));
                    out.push(b.bitcast(RegClass::F32, Type::B32, hi));
                }
            }
            out
        }
        _ => raw,
    }
}

/// One 16-bit float register to f32.
fn half_to_f32(b: &mut KernelBuilder, dtype: DType, h: Reg) -> Reg {
    if dtype == DType::F16 {
        return b.cvt(Type::F32, Type::F16, h);
    }
    let wide = b.cvt(Type::U32, Type::U16, h);
    let bits = b.binary(BinOp::Shl, Type::B32, wide, Operand::Int(16));
    b.bitcast(RegClass::F32, Type::B32, bits)
}

/// Converts f32 registers to the raw layout of `dtype` (round to nearest even).
pub fn pack_f32(b: &mut KernelBuilder, dtype: DType, vals: &[Reg]) -> Vec<Reg> {
    let half_ty = match dtype {
        DType::F16 => Type::F16,
        DType::BF16 => Type::Bf16,
        _ => return vals.to_vec(),
    };
    let halves: Vec<Reg> = vals.iter().map(|&v| b.cvt(half_ty, Type::F32, v)).collect();
    if halves.len() == 1 {
        return halves;
    }
    halves
        .chunks(2)
        .map(|pair| {
            let dst = b.reg(RegClass::B32);
            b.push(Inst::Pack {
                dst,
                lo: pair[0],
                hi: pair[1],
            });
            dst
        })
        .collect()
}

/// Converts f32 registers to `dtype` and stores them at element `index`.
pub fn store_f32(b: &mut KernelBuilder, base: Reg, index: Reg, dtype: DType, vals: &[Reg]) {
    let raw = pack_f32(b, dtype, vals);
    store_raw(b, base, index, dtype, raw);
}

/// Loads element `index` of an offsets / lengths array as a 64-bit integer.
pub fn load_index(b: &mut KernelBuilder, base: Reg, index: Reg, elem: DType) -> Reg {
    let addr = b.element_addr(base, index, elem_bytes(elem));
    let addr = Address {
        base: addr,
        offset: 0,
    };
    match elem {
        DType::I32 => {
            let v = b.ld(Space::Global, Type::S32, 1, addr)[0];
            b.cvt(Type::S64, Type::S32, v)
        }
        DType::U8 | DType::Bool => {
            let v = b.ld(Space::Global, Type::U8, 1, addr)[0];
            b.cvt(Type::U64, Type::U32, v)
        }
        _ => b.ld(Space::Global, Type::S64, 1, addr)[0],
    }
}

/// Stores a 64-bit integer as element `index` of an offsets array of `elem`.
pub fn store_index(b: &mut KernelBuilder, base: Reg, index: Reg, elem: DType, value: Reg) {
    let addr = b.element_addr(base, index, elem_bytes(elem));
    let addr = Address {
        base: addr,
        offset: 0,
    };
    if elem == DType::I32 {
        let v = b.cvt(Type::U32, Type::U64, value);
        b.st(Space::Global, Type::S32, addr, vec![v]);
    } else {
        b.st(Space::Global, Type::S64, addr, vec![value]);
    }
}

/// The threads of each CTA split into groups that own one sequence at a time.
#[derive(Clone, Copy, Debug)]
pub struct SequenceGroups {
    /// `%tid.x` (u32).
    pub tid: Reg,
    /// This thread's index within its group (u32).
    pub local: Reg,
    /// The first sequence of this thread's group (u64).
    pub first: Reg,
    /// Sequences between two turns of the grid-stride loop (u64).
    pub step: Reg,
}

/// Splits the CTA into groups of `group_threads` (dividing [`BLOCK_THREADS`]);
/// group `g` of CTA `c` starts at sequence `c * groups_per_block + g` and
/// strides by `nctaid * groups_per_block`.
pub fn sequence_groups(b: &mut KernelBuilder, group_threads: u32) -> SequenceGroups {
    let per_block = i64::from(BLOCK_THREADS / group_threads);
    let tid = b.special(Special::TidX);
    let ctaid = b.special(Special::CtaidX);
    let nctaid = b.special(Special::NctaidX);
    let local = b.binary(
        BinOp::Rem,
        Type::U32,
        tid,
        Operand::Int(i64::from(group_threads)),
    );
    let group = b.binary(
        BinOp::Div,
        Type::U32,
        tid,
        Operand::Int(i64::from(group_threads)),
    );
    let group64 = b.cvt(Type::U64, Type::U32, group);
    let first = b.ternary(
        TernOp::MadWide,
        Type::U32,
        ctaid,
        Operand::Int(per_block),
        group64,
    );
    let step = b.binary(BinOp::MulWide, Type::U32, nctaid, Operand::Int(per_block));
    SequenceGroups {
        tid,
        local,
        first,
        step,
    }
}

/// A radix of [`for_each_mixed_radix`]: a constant or a run-time register.
#[derive(Clone, Copy, Debug)]
pub enum Radix {
    /// Known when the kernel is generated.
    Const(u64),
    /// A u64 register (must be nonzero whenever there is work).
    Reg(Reg),
}

impl Radix {
    fn operand(self) -> Operand {
        match self {
            Radix::Const(v) => Operand::Int(v as i64),
            Radix::Reg(r) => Operand::Reg(r),
        }
    }
}

/// Splits `x` into mixed-radix digits, least significant first, plus the
/// unbounded top digit.
fn mixed_radix_digits(b: &mut KernelBuilder, x: Reg, radices: &[Radix]) -> (Vec<Reg>, Reg) {
    let mut rest = x;
    let mut digits = Vec::new();
    for r in radices {
        digits.push(b.binary(BinOp::Rem, Type::U64, rest, r.operand()));
        rest = b.binary(BinOp::Div, Type::U64, rest, r.operand());
    }
    (digits, rest)
}

/// A grid-stride loop over `0..work` that hands the body each index as
/// mixed-radix digits (least significant first, then the unbounded top one)
/// without dividing per iteration: the digits of the start and of the stride
/// are computed once and added with carries.
pub fn for_each_mixed_radix(
    b: &mut KernelBuilder,
    work: Reg,
    radices: &[Radix],
    body: impl FnOnce(&mut KernelBuilder, Reg, &[Reg], Reg),
) {
    let (start, step) = b.global_thread_index();
    let any = b.setp(Cmp::Lt, Type::U64, start, work);
    b.if_then(any, false, |b| {
        let (digits, top) = mixed_radix_digits(b, start, radices);
        let (step_digits, step_top) = mixed_radix_digits(b, step, radices);
        let w = b.mov(Type::U64, start);
        let head = b.label();
        let exit = b.label();
        b.place(head);
        let done = b.setp(Cmp::Ge, Type::U64, w, work);
        b.bra_if(done, false, exit);
        body(b, w, &digits, top);
        b.binary_to(BinOp::Add, Type::U64, w, w, step);
        let mut carry: Option<Reg> = None;
        for ((&d, &sd), r) in digits.iter().zip(&step_digits).zip(radices) {
            b.binary_to(BinOp::Add, Type::U64, d, d, sd);
            if let Some(c) = carry {
                b.binary_to(BinOp::Add, Type::U64, d, d, c);
            }
            let wrapped = b.setp(Cmp::Ge, Type::U64, d, r.operand());
            let minus = b.binary(BinOp::Sub, Type::U64, d, r.operand());
            b.push(Inst::Selp {
                ty: Type::U64,
                dst: d,
                a: minus.into(),
                b: d.into(),
                pred: wrapped,
            });
            carry = Some(b.selp(Type::U64, Operand::Int(1), Operand::Int(0), wrapped));
        }
        b.binary_to(BinOp::Add, Type::U64, top, top, step_top);
        if let Some(c) = carry {
            b.binary_to(BinOp::Add, Type::U64, top, top, c);
        }
        b.bra(head);
        b.place(exit);
    });
}

/// Splits a grid-stride work index into `(row, chunk)` for `chunks` per row.
pub fn split_row_chunk(b: &mut KernelBuilder, work: Reg, chunks: u64) -> (Reg, Reg) {
    if chunks == 1 {
        let zero = b.mov(Type::U64, Operand::Int(0));
        return (work, zero);
    }
    let c = Operand::Int(chunks as i64);
    let row = b.binary(BinOp::Div, Type::U64, work, c);
    let chunk = b.binary(BinOp::Rem, Type::U64, work, c);
    (row, chunk)
}

/// `max(a, v)` that is NaN when either is (PTX `max.f32` returns the other
/// operand): the reference's semantics, for every max-reduction.
pub fn max_nan(b: &mut KernelBuilder, a: Reg, v: Reg) -> Reg {
    min_max_nan(b, BinOp::Max, a, v)
}

/// `op(a, v)` for `op` `Max` or `Min`, NaN when either operand is.
pub fn min_max_nan(b: &mut KernelBuilder, op: BinOp, a: Reg, v: Reg) -> Reg {
    let m = b.binary(op, Type::F32, a, v);
    let v_ok = b.setp(Cmp::Eq, Type::F32, v, v);
    let m = b.selp(Type::F32, m, v, v_ok);
    let a_ok = b.setp(Cmp::Eq, Type::F32, a, a);
    b.selp(Type::F32, m, a, a_ok)
}

/// `2^(x * log2(e))` = `exp(x)` through `ex2.approx`.
pub fn exp_f32(b: &mut KernelBuilder, x: impl Into<Operand>) -> Reg {
    let scaled = b.binary(
        BinOp::Mul,
        Type::F32,
        x,
        Operand::F32(std::f32::consts::LOG2_E),
    );
    b.unary(UnOp::Ex2Approx, Type::F32, scaled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_the_widest_aligned_vectors() {
        let c = |w, d| chunking(w, d);
        assert_eq!(c(64, DType::F32), Chunking { vec: 4, chunks: 16 });
        assert_eq!(c(6, DType::F32), Chunking { vec: 2, chunks: 3 });
        assert_eq!(c(15, DType::F32), Chunking { vec: 1, chunks: 15 });
        assert_eq!(c(24, DType::BF16), Chunking { vec: 8, chunks: 3 });
        assert_eq!(c(12, DType::F16), Chunking { vec: 4, chunks: 3 });
        assert_eq!(c(6, DType::F16), Chunking { vec: 2, chunks: 3 });
        assert_eq!(c(15, DType::BF16), Chunking { vec: 1, chunks: 15 });
    }
}
