//! Per-sequence column reductions: `jagged_reduce` (sum / mean / max into
//! `[B, W]`) and `jagged_softmax` (softmax over the rows of each sequence,
//! per column, into `[T, W]`).
//!
//! A *group* of threads owns one sequence at a time (grid-stride over
//! sequences): a warp when the max-length bucket is short, a whole CTA with a
//! shared-memory block reduction when it is long. Inside a group, thread `t`
//! has column lane `t % CL` and row lane `t / CL`. Each column lane owns a
//! vector of `V` adjacent columns (16-byte loads where the row width allows),
//! consecutive lanes own consecutive vectors (coalesced), row lanes split the
//! rows, and partial results are combined with xor-shuffles (then shared
//! memory across warps). Softmax is online: one sweep keeps a running
//! maximum and a sum rescaled to it, a second sweep writes the output.
//! Accumulation is in f32.

use crate::kernel::{
    Address, BinOp, Cmp, Guard, KernelBuilder, Operand, Reg, SharedId, ShflMode, Space, TernOp,
    Type, UnOp,
};
use crate::launch::{ParamBinding, SizeExpr};
use crate::spec::DType;

use super::{
    BLOCK_THREADS, Entry, Plan, chunking, exp_f32, grid, load_f32, load_index, max_nan,
    sequence_groups, store_f32,
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

    /// The group for sequences of up to `items` work items (rows x chunks):
    /// a warp up to 8 items per lane.
    pub fn for_items(items: u64) -> GroupSize {
        if items <= 256 {
            GroupSize::Warp
        } else {
            GroupSize::Block
        }
    }

    /// Threads in a group.
    pub fn threads(self) -> u32 {
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

/// How partial results combine: the state is one register (sum, max) or two
/// (online softmax: running max `m`, sum `s` of `exp(x - m)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Combiner {
    Sum,
    Max,
    OnlineSoftmax,
}

impl Combiner {
    fn identity(self) -> &'static [f32] {
        match self {
            Combiner::Sum => &[0.0],
            Combiner::Max => &[f32::NEG_INFINITY],
            Combiner::OnlineSoftmax => &[f32::NEG_INFINITY, 0.0],
        }
    }

    /// `max` as the exponent base, 0 when it is -inf (so that `exp(-inf - base)`
    /// is 0, not NaN).
    fn safe_base(b: &mut KernelBuilder, m: Reg) -> Reg {
        let none = b.setp(Cmp::Eq, Type::F32, m, Operand::F32(f32::NEG_INFINITY));
        b.selp(Type::F32, Operand::F32(0.0), m, none)
    }

    /// Folds one value into the state.
    fn accumulate(self, b: &mut KernelBuilder, state: &[Reg], x: Reg) {
        match self {
            Combiner::Sum => b.binary_to(BinOp::Add, Type::F32, state[0], state[0], x),
            Combiner::Max => {
                let m = max_nan(b, state[0], x);
                b.mov_to(Type::F32, state[0], m);
            }
            Combiner::OnlineSoftmax => {
                let (m, s) = (state[0], state[1]);
                let m_new = max_nan(b, m, x);
                let base = Self::safe_base(b, m_new);
                let d_old = b.binary(BinOp::Sub, Type::F32, m, base);
                let scale = exp_f32(b, d_old);
                let d_x = b.binary(BinOp::Sub, Type::F32, x, base);
                let e = exp_f32(b, d_x);
                b.push(crate::kernel::Inst::Ternary {
                    op: TernOp::Fma,
                    ty: Type::F32,
                    dst: s,
                    a: s.into(),
                    b: scale.into(),
                    c: e.into(),
                });
                b.mov_to(Type::F32, m, m_new);
            }
        }
    }

    /// Merges another state into `state`.
    fn merge(self, b: &mut KernelBuilder, state: &[Reg], other: &[Reg]) {
        match self {
            Combiner::Sum | Combiner::Max => self.accumulate(b, state, other[0]),
            Combiner::OnlineSoftmax => {
                let (m, s) = (state[0], state[1]);
                let m_new = max_nan(b, m, other[0]);
                let base = Self::safe_base(b, m_new);
                let d_mine = b.binary(BinOp::Sub, Type::F32, m, base);
                let d_other = b.binary(BinOp::Sub, Type::F32, other[0], base);
                let scale_mine = exp_f32(b, d_mine);
                let scale_other = exp_f32(b, d_other);
                let theirs = b.binary(BinOp::Mul, Type::F32, other[1], scale_other);
                b.push(crate::kernel::Inst::Ternary {
                    op: TernOp::Fma,
                    ty: Type::F32,
                    dst: s,
                    a: s.into(),
                    b: scale_mine.into(),
                    c: theirs.into(),
                });
                b.mov_to(Type::F32, m, m_new);
            }
        }
    }
}

/// Generates the kernel. Inputs: 0 = values, 1 = offsets; output 0.
pub fn segment_kernel(desc: &SegmentDesc) -> Plan {
    let group_threads = desc.group.threads();
    let groups_per_block = BLOCK_THREADS / group_threads;
    let ch = chunking(desc.width, desc.dtype);
    // Column lanes: enough for every column vector (a power of two, <= 32).
    let cl = ch.chunks.clamp(1, 32).next_power_of_two() as u32;
    let row_lanes = group_threads / cl;
    let passes = ch.chunks.div_ceil(u64::from(cl));
    let combiner = match desc.op {
        SegmentOp::Reduce(ReduceKind::Max) => Combiner::Max,
        SegmentOp::Reduce(_) => Combiner::Sum,
        SegmentOp::Softmax => Combiner::OnlineSoftmax,
    };

    let mut e = Entry::new(desc.name.clone());
    let out = e.buffer("out", ParamBinding::Output(0));
    let values = e.buffer("values", ParamBinding::Input(0));
    let offsets = e.buffer("offsets", ParamBinding::Input(1));
    let batch = e.size("batch", SizeExpr::Batch);
    let max_len = e.size("max_len", SizeExpr::MaxLen);
    let b = &mut e.b;
    let comps = combiner.identity().len() as u32;
    let smem = match desc.group {
        GroupSize::Block => Some(b.shared(Type::F32, comps * (BLOCK_THREADS / 32) * cl * ch.vec)),
        GroupSize::Warp => None,
    };

    let groups = sequence_groups(b, group_threads);
    let tid = groups.tid;
    let col_lane = b.binary(
        BinOp::Rem,
        Type::U32,
        groups.local,
        Operand::Int(i64::from(cl)),
    );
    let row_lane = b.binary(
        BinOp::Div,
        Type::U32,
        groups.local,
        Operand::Int(i64::from(cl)),
    );
    let col_lane64 = b.cvt(Type::U64, Type::U32, col_lane);
    let row_lane64 = b.cvt(Type::U64, Type::U32, row_lane);
    let ctx = Ctx {
        desc,
        combiner,
        values,
        out,
        smem,
        cl,
        vec: ch.vec,
        chunks: ch.chunks,
        row_lanes: u64::from(row_lanes),
        row_lane: row_lane64,
        col_lane,
        tid,
    };
    b.for_range_u64(groups.first, batch, groups.step, |b, seq| {
        let seq_end = b.binary(BinOp::Add, Type::U64, seq, Operand::Int(1));
        let o0 = load_index(b, offsets, seq, desc.index);
        let o1 = load_index(b, offsets, seq_end, desc.index);
        let len = b.binary(BinOp::Sub, Type::U64, o1, o0);
        let n = b.binary(BinOp::Min, Type::U64, len, max_len);
        let padded = passes * u64::from(cl);
        b.for_range_u64(
            col_lane64,
            Operand::Int(padded as i64),
            Operand::Int(i64::from(cl)),
            |b, cv| {
                ctx.column_vector(b, seq, o0, len, n, cv);
            },
        );
    });
    e.finish(grid(SizeExpr::Batch, u64::from(groups_per_block)))
}

/// Registers shared by the per-column code.
struct Ctx<'a> {
    desc: &'a SegmentDesc,
    combiner: Combiner,
    values: Reg,
    out: Reg,
    smem: Option<SharedId>,
    cl: u32,
    vec: u32,
    chunks: u64,
    row_lanes: u64,
    row_lane: Reg,
    col_lane: Reg,
    tid: Reg,
}

impl Ctx<'_> {
    /// Element index of row `o0 + i`, first column of vector `cv`.
    fn elem(&self, b: &mut KernelBuilder, o0: Reg, i: Reg, cv: Reg) -> Reg {
        let row = b.binary(BinOp::Add, Type::U64, o0, i);
        let col = b.binary(BinOp::Mul, Type::U64, cv, Operand::Int(i64::from(self.vec)));
        b.ternary(
            TernOp::MadLo,
            Type::U64,
            row,
            Operand::Int(self.desc.width as i64),
            col,
        )
    }

    /// Rows this thread visits: `i = row_lane; i < end; i += row_lanes`, for
    /// column vectors that exist; padding lanes visit none.
    fn rows(
        &self,
        b: &mut KernelBuilder,
        cv: Reg,
        end: Reg,
        body: impl FnOnce(&mut KernelBuilder, Reg),
    ) {
        let exists = b.setp(Cmp::Lt, Type::U64, cv, Operand::Int(self.chunks as i64));
        let end = b.selp(Type::U64, end, Operand::Int(0), exists);
        b.for_range_u64(
            self.row_lane,
            end,
            Operand::Int(self.row_lanes as i64),
            body,
        );
    }

    /// Fresh state registers (one state per column of the vector) at the identity.
    fn init_states(&self, b: &mut KernelBuilder) -> Vec<Vec<Reg>> {
        (0..self.vec)
            .map(|_| {
                self.combiner
                    .identity()
                    .iter()
                    .map(|&v| b.const_f32(v))
                    .collect()
            })
            .collect()
    }

    /// Combines every state over the whole group (every thread gets the result).
    fn group_reduce(&self, b: &mut KernelBuilder, states: &[Vec<Reg>]) {
        let mut offset = 16;
        while offset >= self.cl {
            for state in states {
                let other: Vec<Reg> = state
                    .iter()
                    .map(|&r| b.shfl(ShflMode::Bfly, r, Operand::Int(i64::from(offset)), 31))
                    .collect();
                self.combiner.merge(b, state, &other);
            }
            offset /= 2;
        }
        let Some(smem) = self.smem else {
            return;
        };
        let warps = BLOCK_THREADS / 32;
        let comps = self.combiner.identity().len() as u32;
        // Layout: [component][warp][column lane][k] floats.
        let base = b.shared_addr(smem);
        let warp = b.binary(BinOp::Shr, Type::U32, self.tid, Operand::Int(5));
        let lane = b.binary(BinOp::And, Type::U32, self.tid, Operand::Int(31));
        let slot = b.ternary(
            TernOp::MadLo,
            Type::U32,
            warp,
            Operand::Int(i64::from(self.cl)),
            self.col_lane,
        );
        let slot_bytes = b.binary(
            BinOp::Mul,
            Type::U32,
            slot,
            Operand::Int(i64::from(self.vec * 4)),
        );
        let mine = b.binary(BinOp::Add, Type::U32, base, slot_bytes);
        let col_bytes = b.binary(
            BinOp::Mul,
            Type::U32,
            self.col_lane,
            Operand::Int(i64::from(self.vec * 4)),
        );
        let column = b.binary(BinOp::Add, Type::U32, base, col_bytes);
        let comp_stride = i64::from(warps * self.cl * self.vec * 4);
        let warp_stride = i64::from(self.cl * self.vec * 4);
        // The lanes of the first row lane of each warp publish the warp's states.
        let first = b.setp(Cmp::Lt, Type::U32, lane, Operand::Int(i64::from(self.cl)));
        b.guarded(
            Guard {
                pred: first,
                negate: false,
            },
            |b| {
                for (k, state) in states.iter().enumerate() {
                    for (c, &r) in state.iter().enumerate() {
                        let offset = c as i64 * comp_stride + k as i64 * 4;
                        b.st(
                            Space::Shared,
                            Type::F32,
                            Address { base: mine, offset },
                            vec![r],
                        );
                    }
                }
            },
        );
        b.barrier();
        for (k, state) in states.iter().enumerate() {
            for (c, &r) in state.iter().enumerate() {
                b.mov_to(Type::F32, r, Operand::F32(self.combiner.identity()[c]));
            }
            for w in 0..i64::from(warps) {
                let other: Vec<Reg> = (0..comps as i64)
                    .map(|c| {
                        let offset = c * comp_stride + w * warp_stride + k as i64 * 4;
                        b.ld(
                            Space::Shared,
                            Type::F32,
                            1,
                            Address {
                                base: column,
                                offset,
                            },
                        )[0]
                    })
                    .collect();
                self.combiner.merge(b, state, &other);
            }
        }
        b.barrier();
    }

    /// All the work of one column vector `cv` of one sequence.
    fn column_vector(&self, b: &mut KernelBuilder, seq: Reg, o0: Reg, len: Reg, n: Reg, cv: Reg) {
        let d = self.desc;
        let states = self.init_states(b);
        self.rows(b, cv, n, |b, i| {
            let idx = self.elem(b, o0, i, cv);
            let xs = load_f32(b, self.values, idx, d.dtype, self.vec);
            for (state, &x) in states.iter().zip(&xs) {
                self.combiner.accumulate(b, state, x);
            }
        });
        self.group_reduce(b, &states);
        match d.op {
            SegmentOp::Reduce(kind) => {
                let results: Vec<Reg> = states
                    .iter()
                    .map(|state| match kind {
                        ReduceKind::Sum => state[0],
                        ReduceKind::Mean => {
                            let count = b.binary(BinOp::Max, Type::U64, n, Operand::Int(1));
                            let count = b.cvt(Type::F32, Type::U64, count);
                            b.binary(BinOp::Div, Type::F32, state[0], count)
                        }
                        ReduceKind::Max => {
                            let empty = b.setp(Cmp::Eq, Type::U64, n, Operand::Int(0));
                            b.selp(Type::F32, Operand::F32(0.0), state[0], empty)
                        }
                    })
                    .collect();
                // One writer per column vector: row lane 0.
                let writer = b.setp(Cmp::Eq, Type::U64, self.row_lane, Operand::Int(0));
                let exists = b.setp(Cmp::Lt, Type::U64, cv, Operand::Int(self.chunks as i64));
                let skip = b.label();
                b.bra_if(writer, true, skip);
                b.bra_if(exists, true, skip);
                let row_start = b.binary(BinOp::Mul, Type::U64, seq, Operand::Int(d.width as i64));
                let col = b.binary(BinOp::Mul, Type::U64, cv, Operand::Int(i64::from(self.vec)));
                let idx = b.binary(BinOp::Add, Type::U64, row_start, col);
                store_f32(b, self.out, idx, d.dtype, &results);
                b.place(skip);
            }
            SegmentOp::Softmax => {
                // Per column: base = max (0 if none), inv = 1 / sum (0 if the
                // sum is 0; a NaN sum stays NaN, as in the reference).
                let params: Vec<(Reg, Reg)> = states
                    .iter()
                    .map(|state| {
                        let base = Combiner::safe_base(b, state[0]);
                        let rcp = b.unary(UnOp::Rcp, Type::F32, state[1]);
                        let empty = b.setp(Cmp::Eq, Type::F32, state[1], Operand::F32(0.0));
                        let inv = b.selp(Type::F32, Operand::F32(0.0), rcp, empty);
                        (base, inv)
                    })
                    .collect();
                // Every row of the sequence is written: rows i >= n_b get 0.
                self.rows(b, cv, len, |b, i| {
                    let idx = self.elem(b, o0, i, cv);
                    let inside = b.setp(Cmp::Lt, Type::U64, i, n);
                    let results: Vec<Reg> = (0..self.vec).map(|_| b.const_f32(0.0)).collect();
                    b.guarded(
                        Guard {
                            pred: inside,
                            negate: false,
                        },
                        |b| {
                            let xs = load_f32(b, self.values, idx, d.dtype, self.vec);
                            for ((&x, &(base, inv)), &r) in xs.iter().zip(&params).zip(&results) {
                                let shifted = b.binary(BinOp::Sub, Type::F32, x, base);
                                let p = exp_f32(b, shifted);
                                b.binary_to(BinOp::Mul, Type::F32, r, p, inv);
                            }
                        },
                    );
                    store_f32(b, self.out, idx, d.dtype, &results);
                });
            }
        }
    }
}
