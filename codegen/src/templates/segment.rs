//! Per-sequence column reductions: `jagged_reduce` (sum / mean / max into
//! `[B, W]`) and `jagged_softmax` (softmax over the rows of each sequence,
//! per column, into `[T, W]`).
//!
//! A *group* of threads owns one sequence at a time (grid-stride over
//! sequences): a warp when the max-length bucket is short, a whole CTA with a
//! shared-memory block reduction when it is long. Inside a group, thread `t`
//! has column lane `t % CL` and row lane `t / CL`: consecutive lanes read
//! consecutive columns (coalesced), row lanes split the rows, and the partial
//! results are combined with xor-shuffles (then shared memory across warps).
//! Accumulation is in f32.

use crate::kernel::{
    Address, BinOp, Cmp, KernelBuilder, Operand, Reg, SharedId, Space, Special, Type,
};
use crate::launch::{ParamBinding, SizeExpr};
use crate::spec::DType;

use super::{
    BLOCK_THREADS, Combine, Entry, Plan, exp_f32, grid, load_f32, load_index, store_f32,
    warp_reduce_f32,
};

/// Reductions of `jagged_reduce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Sum over rows `i < n_b`.
    Sum,
    /// Sum / max(n_b, 1).
    Mean,
    /// Max over rows (0 for an empty sequence).
    Max,
}

/// What the template computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SegmentOp {
    /// `jagged_reduce`: output `[B, W]`.
    Reduce(ReduceKind),
    /// `jagged_softmax`: output `[T, W]`.
    Softmax,
}

/// Threads cooperating on one sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupSize {
    /// One warp per sequence (8 sequences per CTA).
    Warp,
    /// One CTA per sequence.
    Block,
}

impl GroupSize {
    /// The group for a max-length bucket: warps up to 256 rows.
    pub fn for_bucket(max_len_bucket: u32) -> GroupSize {
        if max_len_bucket <= 256 {
            GroupSize::Warp
        } else {
            GroupSize::Block
        }
    }

    fn threads(self) -> u32 {
        match self {
            GroupSize::Warp => 32,
            GroupSize::Block => BLOCK_THREADS,
        }
    }
}

/// Everything the template is specialized on.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentDesc {
    /// Entry name.
    pub name: String,
    /// What to compute.
    pub op: SegmentOp,
    /// Row width `W`.
    pub width: u64,
    /// Threads per sequence.
    pub group: GroupSize,
    /// Float element type.
    pub dtype: DType,
    /// Offsets element type.
    pub index: DType,
}

/// Column lanes: the next power of two >= W, at most 32.
fn column_lanes(width: u64) -> u32 {
    width.clamp(1, 32).next_power_of_two() as u32
}

/// Generates the kernel. Inputs: 0 = values, 1 = offsets; output 0.
pub fn segment_kernel(desc: &SegmentDesc) -> Plan {
    let group_threads = desc.group.threads();
    let groups_per_block = BLOCK_THREADS / group_threads;
    let cl = column_lanes(desc.width);
    let row_lanes = group_threads / cl;
    let passes = desc.width.div_ceil(u64::from(cl));

    let mut e = Entry::new(desc.name.clone());
    let out = e.buffer("out", ParamBinding::Output(0));
    let values = e.buffer("values", ParamBinding::Input(0));
    let offsets = e.buffer("offsets", ParamBinding::Input(1));
    let batch = e.size("batch", SizeExpr::Batch);
    let max_len = e.size("max_len", SizeExpr::MaxLen);
    let b = &mut e.b;
    let smem = match desc.group {
        GroupSize::Block => Some(b.shared(Type::F32, (BLOCK_THREADS / 32) * cl)),
        GroupSize::Warp => None,
    };

    let tid = b.special(Special::TidX);
    let ctaid = b.special(Special::CtaidX);
    let nctaid = b.special(Special::NctaidX);
    let local = b.binary(
        BinOp::Rem,
        Type::U32,
        tid,
        Operand::Int(i64::from(group_threads)),
    );
    let group_in_block = b.binary(
        BinOp::Div,
        Type::U32,
        tid,
        Operand::Int(i64::from(group_threads)),
    );
    let col_lane = b.binary(BinOp::Rem, Type::U32, local, Operand::Int(i64::from(cl)));
    let row_lane = b.binary(BinOp::Div, Type::U32, local, Operand::Int(i64::from(cl)));
    let col_lane64 = b.cvt(Type::U64, Type::U32, col_lane);
    let row_lane64 = b.cvt(Type::U64, Type::U32, row_lane);
    let group_in_block64 = b.cvt(Type::U64, Type::U32, group_in_block);
    let first_seq = b.ternary(
        crate::kernel::TernOp::MadWide,
        Type::U32,
        ctaid,
        Operand::Int(i64::from(groups_per_block)),
        group_in_block64,
    );
    let seq_step = b.binary(
        BinOp::MulWide,
        Type::U32,
        nctaid,
        Operand::Int(i64::from(groups_per_block)),
    );
    let ctx = Ctx {
        desc,
        values,
        out,
        smem,
        cl,
        row_lanes: u64::from(row_lanes),
        row_lane: row_lane64,
        col_lane,
        tid,
    };
    b.for_range_u64(first_seq, batch, seq_step, |b, seq| {
        let seq_end = b.binary(BinOp::Add, Type::U64, seq, Operand::Int(1));
        let o0 = load_index(b, offsets, seq, desc.index);
        let o1 = load_index(b, offsets, seq_end, desc.index);
        let len = b.binary(BinOp::Sub, Type::U64, o1, o0);
        let n = b.binary(BinOp::Min, Type::U64, len, max_len);
        let padded_width = passes * u64::from(cl);
        b.for_range_u64(
            col_lane64,
            Operand::Int(padded_width as i64),
            Operand::Int(i64::from(cl)),
            |b, col| {
                ctx.column(b, seq, o0, len, n, col);
            },
        );
    });
    let items = SizeExpr::Batch;
    e.finish(grid(items, u64::from(groups_per_block)))
}

/// Registers shared by the per-column code.
struct Ctx<'a> {
    desc: &'a SegmentDesc,
    values: Reg,
    out: Reg,
    smem: Option<SharedId>,
    cl: u32,
    row_lanes: u64,
    row_lane: Reg,
    col_lane: Reg,
    tid: Reg,
}

impl Ctx<'_> {
    /// Element index of row `o0 + i`, column `col`.
    fn elem(&self, b: &mut KernelBuilder, o0: Reg, i: Reg, col: Reg) -> Reg {
        let row = b.binary(BinOp::Add, Type::U64, o0, i);
        b.ternary(
            crate::kernel::TernOp::MadLo,
            Type::U64,
            row,
            Operand::Int(self.desc.width as i64),
            col,
        )
    }

    /// Rows this thread visits: `i = row_lane; i < end; i += row_lanes`, for
    /// columns that exist (`col < W`); padding columns visit none.
    fn rows(
        &self,
        b: &mut KernelBuilder,
        col: Reg,
        end: Reg,
        body: impl FnOnce(&mut KernelBuilder, Reg),
    ) {
        let col_ok = b.setp(
            Cmp::Lt,
            Type::U64,
            col,
            Operand::Int(self.desc.width as i64),
        );
        let end = b.selp(Type::U64, end, Operand::Int(0), col_ok);
        b.for_range_u64(
            self.row_lane,
            end,
            Operand::Int(self.row_lanes as i64),
            body,
        );
    }

    /// `acc` combined over the whole group (every thread gets the result).
    fn group_reduce(&self, b: &mut KernelBuilder, acc: Reg, op: Combine) {
        warp_reduce_f32(b, acc, op, self.cl);
        let Some(smem) = self.smem else {
            return;
        };
        let warps = BLOCK_THREADS / 32;
        let base = b.shared_addr(smem);
        let warp = b.binary(BinOp::Shr, Type::U32, self.tid, Operand::Int(5));
        // Lanes of the first row lane of each warp publish the warp result.
        let lane = b.binary(BinOp::And, Type::U32, self.tid, Operand::Int(31));
        let slot = b.ternary(
            crate::kernel::TernOp::MadLo,
            Type::U32,
            warp,
            Operand::Int(i64::from(self.cl)),
            self.col_lane,
        );
        let addr = b.ternary(
            crate::kernel::TernOp::MadLo,
            Type::U32,
            slot,
            Operand::Int(4),
            base,
        );
        let first = b.setp(Cmp::Lt, Type::U32, lane, Operand::Int(i64::from(self.cl)));
        b.guarded(
            crate::kernel::Guard {
                pred: first,
                negate: false,
            },
            |b| {
                b.st(
                    Space::Shared,
                    Type::F32,
                    Address {
                        base: addr,
                        offset: 0,
                    },
                    vec![acc],
                )
            },
        );
        b.barrier();
        let col_addr = b.ternary(
            crate::kernel::TernOp::MadLo,
            Type::U32,
            self.col_lane,
            Operand::Int(4),
            base,
        );
        b.mov_to(Type::F32, acc, Operand::F32(op.identity()));
        for w in 0..warps {
            let addr = Address {
                base: col_addr,
                offset: i64::from(w * self.cl * 4),
            };
            let v = b.ld(Space::Shared, Type::F32, 1, addr)[0];
            op.emit(b, acc, v);
        }
        b.barrier();
    }

    /// All the work of one column of one sequence.
    fn column(&self, b: &mut KernelBuilder, seq: Reg, o0: Reg, len: Reg, n: Reg, col: Reg) {
        let d = self.desc;
        match d.op {
            SegmentOp::Reduce(kind) => {
                let op = if kind == ReduceKind::Max {
                    Combine::Max
                } else {
                    Combine::Sum
                };
                let acc = b.const_f32(op.identity());
                self.rows(b, col, n, |b, i| {
                    let idx = self.elem(b, o0, i, col);
                    let x = load_f32(b, self.values, idx, d.dtype, 1)[0];
                    op.emit(b, acc, x);
                });
                self.group_reduce(b, acc, op);
                let result = match kind {
                    ReduceKind::Sum => acc,
                    ReduceKind::Mean => {
                        let count = b.binary(BinOp::Max, Type::U64, n, Operand::Int(1));
                        let count = b.cvt(Type::F32, Type::U64, count);
                        b.binary(BinOp::Div, Type::F32, acc, count)
                    }
                    ReduceKind::Max => {
                        let empty = b.setp(Cmp::Eq, Type::U64, n, Operand::Int(0));
                        b.selp(Type::F32, Operand::F32(0.0), acc, empty)
                    }
                };
                // One writer per column: row lane 0.
                let writer = b.setp(Cmp::Eq, Type::U64, self.row_lane, Operand::Int(0));
                let col_ok = b.setp(Cmp::Lt, Type::U64, col, Operand::Int(d.width as i64));
                let skip = b.label();
                b.bra_if(writer, true, skip);
                b.bra_if(col_ok, true, skip);
                let idx = b.ternary(
                    crate::kernel::TernOp::MadLo,
                    Type::U64,
                    seq,
                    Operand::Int(d.width as i64),
                    col,
                );
                store_f32(b, self.out, idx, d.dtype, &[result]);
                b.place(skip);
            }
            SegmentOp::Softmax => {
                let m = b.const_f32(f32::NEG_INFINITY);
                self.rows(b, col, n, |b, i| {
                    let idx = self.elem(b, o0, i, col);
                    let x = load_f32(b, self.values, idx, d.dtype, 1)[0];
                    Combine::Max.emit(b, m, x);
                });
                self.group_reduce(b, m, Combine::Max);
                let s = b.const_f32(0.0);
                self.rows(b, col, n, |b, i| {
                    let idx = self.elem(b, o0, i, col);
                    let x = load_f32(b, self.values, idx, d.dtype, 1)[0];
                    let shifted = b.binary(BinOp::Sub, Type::F32, x, m);
                    let p = exp_f32(b, shifted);
                    Combine::Sum.emit(b, s, p);
                });
                self.group_reduce(b, s, Combine::Sum);
                // Every row of the sequence is written: rows i >= n_b get 0.
                self.rows(b, col, len, |b, i| {
                    let idx = self.elem(b, o0, i, col);
                    let inside = b.setp(Cmp::Lt, Type::U64, i, n);
                    let result = b.const_f32(0.0);
                    b.guarded(
                        crate::kernel::Guard {
                            pred: inside,
                            negate: false,
                        },
                        |b| {
                            let x = load_f32(b, self.values, idx, d.dtype, 1)[0];
                            let shifted = b.binary(BinOp::Sub, Type::F32, x, m);
                            let p = exp_f32(b, shifted);
                            b.binary_to(BinOp::Div, Type::F32, result, p, s);
                        },
                    );
                    store_f32(b, self.out, idx, d.dtype, &[result]);
                });
            }
        }
    }
}
