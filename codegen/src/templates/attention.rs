//! Jagged flash attention forward on tensor cores (FlashAttention-2 style).
//!
//! One CTA of 4 or 8 warps ([`Tiles::for_spec`]) owns one work item
//! `(query block, sequence b, head h)` at a time (grid-stride over
//! `ceil(max_len / BM) * B * H` items, the last query blocks first: they
//! carry the most keys, so the heavy items start early; items whose query
//! block starts past `n_b` exit at once). Each warp owns 16 or 32 query
//! rows (one or two `m16` row tiles). Per key block of `BN` keys:
//!
//! - `S = Q K^T` with `mma.sync.m16n8k16` (f32 accumulation); Q and K come
//!   from shared memory through `ldmatrix` (Q is staged once per item);
//! - scale, masks (length, causal, ...) only on boundary blocks;
//! - the activation: online softmax (running max and sum per row, in the
//!   log2 domain, rescaling the output accumulator) or pointwise SiLU;
//! - `P` is rounded to the input dtype in registers and is the A operand of
//!   `O += P V` (`ldmatrix.trans` for V).
//!
//! K and V tiles are staged with `cp.async` two stages deep: the copy of the
//! next block overlaps the math of the current one; one barrier per key
//! block (after it, block `kb` has landed and every warp is done with the
//! stage that block `kb + 1` then goes into). Shared rows are padded
//! by 16 bytes so the 8 row addresses of an `ldmatrix` hit distinct banks.
//! S and P never leave registers. The item of query block 0 also writes the
//! zero rows `n_b <= i < L_b` of its head (sequences longer than `max_len`).

use crate::error::CodegenError;
use crate::kernel::KernelModule;
use crate::kernel::{
    Address, BinOp, Cmp, Guard, Inst, KernelBuilder, Operand, Reg, RegClass, ShflMode, Space,
    Special, TernOp, Type, UnOp,
};
use crate::launch::{CompiledKernel, GridRule, Launch, OutputBuffer, ParamBinding, SizeExpr};
use crate::spec::{DType, Spec};

use super::attention_graph::AttentionPattern;
use super::{Entry, MAX_BLOCKS, Plan, load_index, pack_f32, store_f32};

/// Threads per CTA of the backward kernels (4 warps) and of forward
/// kernels with 64-row query blocks.
pub const ATTENTION_THREADS: u32 = 128;

/// Rows of one `mma.m16n8k16` tile.
const TILE_ROWS: u32 = 16;

/// The probability function between the two products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Softmax over the allowed keys of each row.
    Softmax,
    /// `silu(s)` pointwise.
    Silu,
}

/// Which `(query i, key j)` pairs a mask keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PairMask {
    /// `j <= i` (causal).
    KeyNotAfterQuery,
    /// `j >= i` (FBGEMM's `use_mask`).
    KeyNotBeforeQuery,
}

/// Tile shape of the forward kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tiles {
    /// Query rows per CTA (16 per warp).
    pub block_m: u32,
    /// Keys per pipeline stage.
    pub block_n: u32,
    /// Query rows per warp: 16 (one `m16` tile) or 32 (two; every K / V
    /// fragment read from shared memory feeds two `mma`s).
    pub warp_rows: u32,
}

impl Tiles {
    /// The tiles for a head dim and max-length bucket.
    ///
    /// Keys per block: 64, or 32 for D = 256 (the f32 output accumulator
    /// already holds 128 registers per thread there) and for buckets of at
    /// most 32 rows with D <= 64 (no wasted keys; with D = 128 ptxas put that
    /// variant at 128 registers and spilled).
    ///
    /// Query rows per CTA: 128 for D = 64 / 128 and buckets of at least
    /// 1024 rows, where sequences are long enough that each K/V tile staged
    /// in shared memory serves twice the query rows; 64 otherwise (less work
    /// past `n_b` on short sequences).
    ///
    /// Query rows per warp: 32 with 128-row blocks at D = 64 (4 warps, as
    /// FlashAttention-2 on sm_80+). With 16 rows per warp an `ldmatrix.x4`
    /// (512 bytes of shared memory, about 4 cycles of an SM's 128 B/cycle)
    /// feeds two `m16n8k16` products (about 2 cycles each on the SM's
    /// tensor cores), so shared-memory bandwidth, not the tensor cores,
    /// bounds the loop; a second `m16` tile per warp reuses each K / V
    /// fragment for two more products. 16 rows per warp otherwise: at
    /// D = 128 two row tiles (128 f32 accumulator registers per thread)
    /// made ptxas spill (56 bytes inside the key loop with 64 keys per
    /// block, 12 bytes outside it with 32).
    pub fn for_spec(head_dim: u32, max_len_bucket: u32) -> Tiles {
        let (block_m, warp_rows) = match (head_dim, max_len_bucket >= 1024) {
            (64, true) => (128, 32),
            (128, true) => (128, 16),
            _ => (64, 16),
        };
        let block_n = if head_dim >= 256 || (max_len_bucket <= 32 && head_dim <= 64) {
            32
        } else {
            64
        };
        Tiles {
            block_m,
            block_n,
            warp_rows,
        }
    }

    /// Threads per CTA: one warp per `warp_rows` query rows.
    pub fn threads(&self) -> u32 {
        self.block_m / self.warp_rows * 32
    }

    /// `m16` row tiles per warp.
    pub fn row_tiles(&self) -> usize {
        (self.warp_rows / TILE_ROWS) as usize
    }
}

/// Everything the forward kernel is specialized on.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionDesc {
    /// Entry name.
    pub name: String,
    /// Heads `H` (rows of q / k / v are `[H, D]`).
    pub heads: u32,
    /// Head dim `D` (of q, k and v): 32, 64, 128 or 256.
    pub head_dim: u32,
    /// f16 or bf16.
    pub dtype: DType,
    /// Offsets dtype.
    pub index: DType,
    /// Softmax or SiLU.
    pub activation: Activation,
    /// Scores are `scale * q.k` with the f32 graph attribute of this name; 1 if `None`.
    pub scale_attr: Option<String>,
    /// Softmax: pairs outside this mask are excluded before normalizing
    /// (`-inf` scores).
    pub score_mask: Option<PairMask>,
    /// Pairs outside this mask get `p = 0` after the activation (for softmax:
    /// after normalization; rows are not renormalized).
    pub prob_mask: Option<PairMask>,
    /// Divide `p` by the run-time `max_len`.
    pub divide_by_max_len: bool,
    /// Write `lse [T, H]` (softmax only).
    pub lse: bool,
    /// Tile shape.
    pub tiles: Tiles,
}

impl AttentionDesc {
    /// Bytes of one padded shared row of `D` 16-bit elements.
    fn smem_stride(&self) -> u32 {
        self.head_dim * 2 + 16
    }

    /// Dynamic shared memory: the Q tile and two stages of K and V.
    pub fn dynamic_shared_bytes(&self) -> u32 {
        self.smem_stride() * (self.tiles.block_m + 4 * self.tiles.block_n)
    }

    /// True when keys past the query block never contribute (causal).
    pub(super) fn keys_end_at_block(&self) -> bool {
        self.score_mask == Some(PairMask::KeyNotAfterQuery)
            || self.prob_mask == Some(PairMask::KeyNotAfterQuery)
    }

    /// The `mma` operand type of the input dtype.
    pub(super) fn mma_type(&self) -> Type {
        match self.dtype {
            DType::F16 => Type::F16,
            _ => Type::Bf16,
        }
    }
}

/// Parameter order of the kernel: inputs `q, k, v, offsets`, outputs
/// `out` (and `lse`), then `B`, `max_len` and the scale attribute.
pub fn attention_kernel(desc: &AttentionDesc) -> Plan {
    let mut e = Entry::new(desc.name.clone());
    e.b = KernelBuilder::new(desc.name.clone(), desc.tiles.threads());
    e.b.set_min_ctas_per_sm(1);
    let q_ptr = e.buffer("q", ParamBinding::Input(0));
    let k_ptr = e.buffer("k", ParamBinding::Input(1));
    let v_ptr = e.buffer("v", ParamBinding::Input(2));
    let off_ptr = e.buffer("offsets", ParamBinding::Input(3));
    let out_ptr = e.buffer("out", ParamBinding::Output(0));
    let lse_ptr = desc.lse.then(|| e.buffer("lse", ParamBinding::Output(1)));
    let batch = e.size("batch", SizeExpr::Batch);
    let max_len = e.size("max_len", SizeExpr::MaxLen);
    let scale = desc.scale_attr.as_ref().map(|name| e.float_attr(name));
    let ptrs = Pointers {
        q: q_ptr,
        k: k_ptr,
        v: v_ptr,
        offsets: off_ptr,
        out: out_ptr,
        lse: lse_ptr,
    };
    FlashWriter::new(desc, &mut e.b).write(&ptrs, batch, max_len, scale);
    let items = SizeExpr::ceil_div(SizeExpr::MaxLen, u64::from(desc.tiles.block_m))
        * SizeExpr::Batch
        * SizeExpr::Const(u64::from(desc.heads));
    e.finish(GridRule {
        items,
        items_per_block: 1,
        max_blocks: MAX_BLOCKS,
    })
}

struct Pointers {
    q: Reg,
    k: Reg,
    v: Reg,
    offsets: Reg,
    out: Reg,
    lse: Option<Reg>,
}

/// Per-thread lane constants of the tensor-core kernels: the thread's place
/// in its warp and its `ldmatrix` lane addresses for the fragments of
/// `mma.m16n8k16` (each lane supplies the address of one 16-byte row of a
/// 16 x 16 tile; see the fragment layouts of the PTX ISA), as shared
/// addresses of row 0 of a tile at the start of the dynamic shared memory.
#[derive(Clone, Copy)]
pub(super) struct Lanes {
    pub(super) tid: Reg,
    pub(super) warp: Reg,
    /// `lane / 4`: the accumulator row within an 8-row half.
    pub(super) group: Reg,
    /// `lane % 4`: the accumulator column pair.
    pub(super) quad: Reg,
    /// Shared address of the dynamic shared memory.
    pub(super) smem: Reg,
    /// `(lane / 8) % 2`.
    pub(super) hi8: Reg,
    /// `lane % 8 + 8 * (lane / 16)`: this lane's row of a B fragment read
    /// from the rows of an `[n][k]` tile.
    pub(super) b_row: Reg,
    /// A operand, row-major (this warp's 16 rows of a `[rows][k]` tile):
    /// row `16 warp + lane % 8 + 8 hi8`, column half `lane / 16`.
    pub(super) a: Reg,
    /// B operand from the rows of an `[n][k]` tile (plain `ldmatrix`): row
    /// `b_row`, column half `hi8`.
    pub(super) b_rows: Reg,
    /// B operand of a `[k][n]` tile (`ldmatrix.trans`): row `lane % 8 + 8
    /// hi8`, column half `lane / 16`.
    pub(super) b_trans: Reg,
}

/// One work item of [`FlashWriter::for_each_item`]: a block of rows of one
/// sequence and head.
pub(super) struct WorkItem {
    /// The block's index within its sequence (u64).
    pub(super) block: Reg,
    /// `L_b` (u64).
    pub(super) len: Reg,
    /// `n_b = min(L_b, max_len)` (u64).
    pub(super) n: Reg,
    /// `offsets[b] * H + h` (u64): the lse index of row 0.
    pub(super) row_head: Reg,
    /// Byte offset of (row `offsets[b]`, head `h`) in q / k / v / out (u64).
    pub(super) head_off: Reg,
}

/// Writes the body of the forward kernel.
pub(super) struct FlashWriter<'a> {
    pub(super) d: &'a AttentionDesc,
    pub(super) b: &'a mut KernelBuilder,
    /// Padded shared row stride in bytes.
    pub(super) stride: u32,
    /// 16-byte chunks per row.
    pub(super) chunks_per_row: u32,
    /// Bytes between two rows of q / k / v / out (`H * D * 2`).
    pub(super) row_bytes: u32,
    /// Threads per CTA.
    pub(super) threads: u32,
}

/// The f32 registers of an `m16n8` accumulator tile: `[row g: c0, c1; row g+8: c2, c3]`.
pub(super) type Acc = [Reg; 4];

impl<'a> FlashWriter<'a> {
    pub(super) fn new(d: &'a AttentionDesc, b: &'a mut KernelBuilder) -> Self {
        FlashWriter {
            d,
            b,
            stride: d.smem_stride(),
            chunks_per_row: d.head_dim / 8,
            row_bytes: d.heads * d.head_dim * 2,
            threads: d.tiles.threads(),
        }
    }

    pub(super) fn imm(v: u32) -> Operand {
        Operand::Int(i64::from(v))
    }

    pub(super) fn u32_op(
        &mut self,
        op: BinOp,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Reg {
        self.b.binary(op, Type::U32, a, b)
    }

    pub(super) fn u64_op(
        &mut self,
        op: BinOp,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Reg {
        self.b.binary(op, Type::U64, a, b)
    }

    /// Assigns `pred ? a : b` to the existing register `dst`.
    pub(super) fn selp_to(
        &mut self,
        ty: Type,
        dst: Reg,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        pred: Reg,
    ) {
        self.b.push(Inst::Selp {
            ty,
            dst,
            a: a.into(),
            b: b.into(),
            pred,
        });
    }

    pub(super) fn f32_to(
        &mut self,
        op: BinOp,
        dst: Reg,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) {
        self.b.binary_to(op, Type::F32, dst, a, b);
    }

    /// Emits `f` under `if (pred != negate)`.
    pub(super) fn when(&mut self, pred: Reg, negate: bool, f: impl FnOnce(&mut Self)) {
        let skip = self.b.label();
        self.b.bra_if(pred, !negate, skip);
        f(self);
        self.b.place(skip);
    }

    /// `for (i = start; i < end; i += step) f(i)` over `ty`.
    pub(super) fn range(
        &mut self,
        ty: Type,
        start: impl Into<Operand>,
        end: impl Into<Operand>,
        step: impl Into<Operand>,
        f: impl FnOnce(&mut Self, Reg),
    ) {
        let range = self.b.begin_range(ty, start, end, step);
        f(self, range.counter);
        self.b.end_range(range);
    }

    /// `a * k + c` (u32).
    pub(super) fn mad_u32(&mut self, a: Reg, k: u32, c: Reg) -> Reg {
        self.b.ternary(TernOp::MadLo, Type::U32, a, Self::imm(k), c)
    }

    /// The lane constants (rows of the shared tiles `self.stride` bytes apart).
    pub(super) fn lanes(&mut self) -> Lanes {
        let stride = self.stride;
        let tid = self.b.special(Special::TidX);
        let lane = self.u32_op(BinOp::And, tid, Operand::Int(31));
        let warp = self.u32_op(BinOp::Shr, tid, Operand::Int(5));
        let group = self.u32_op(BinOp::Shr, lane, Operand::Int(2));
        let quad = self.u32_op(BinOp::And, lane, Operand::Int(3));
        let smem = self.b.reg(RegClass::B32);
        self.b.push(Inst::DynSharedAddr { dst: smem });
        let l8 = self.u32_op(BinOp::And, lane, Operand::Int(7));
        let l8_bit = self.u32_op(BinOp::Shr, lane, Operand::Int(3));
        let hi8 = self.u32_op(BinOp::And, l8_bit, Operand::Int(1));
        let hi16 = self.u32_op(BinOp::Shr, lane, Operand::Int(4));
        let a_row = self.mad_u32(hi8, 8, l8);
        let a_row = self.mad_u32(warp, 16, a_row);
        let a = self.mad_u32(a_row, stride, smem);
        let a = self.mad_u32(hi16, 16, a);
        let b_row = self.mad_u32(hi16, 8, l8);
        let b_rows = self.mad_u32(b_row, stride, smem);
        let b_rows = self.mad_u32(hi8, 16, b_rows);
        let t_row = self.mad_u32(hi8, 8, l8);
        let b_trans = self.mad_u32(t_row, stride, smem);
        let b_trans = self.mad_u32(hi16, 16, b_trans);
        Lanes {
            tid,
            warp,
            group,
            quad,
            smem,
            hi8,
            b_row,
            a,
            b_rows,
            b_trans,
        }
    }

    /// This thread's two accumulator rows (`g` and `g + 8` of its warp's
    /// 16) of the block whose first row is `first` (u32).
    pub(super) fn thread_rows(&mut self, lanes: &Lanes, first: Reg) -> [Reg; 2] {
        let warp_row = self.mad_u32(lanes.warp, 16, lanes.group);
        let row0 = self.u32_op(BinOp::Add, first, warp_row);
        let row1 = self.u32_op(BinOp::Add, row0, Operand::Int(8));
        [row0, row1]
    }

    /// `1 / max_len` (f32) when the probabilities are divided by it.
    pub(super) fn inv_max_len(&mut self, max_len: Reg) -> Option<Reg> {
        self.d.divide_by_max_len.then(|| {
            let ml = self.b.cvt(Type::F32, Type::U64, max_len);
            self.b.unary(UnOp::Rcp, Type::F32, ml)
        })
    }

    /// Grid-stride loop (one item per CTA at a time) over the
    /// `ceil(max_len / block_rows) * B * H` work items `(block of
    /// block_rows rows, sequence b, head h)`, blocks outermost; with
    /// `last_first` the last blocks of the sequences come first.
    pub(super) fn for_each_item(
        &mut self,
        batch: Reg,
        max_len: Reg,
        offsets: Reg,
        block_rows: u32,
        last_first: bool,
        f: impl FnOnce(&mut Self, &WorkItem),
    ) {
        let d = self.d;
        let heads = i64::from(d.heads);
        let bh = self.u64_op(BinOp::Mul, batch, Operand::Int(heads));
        let ml_pad = self.u64_op(BinOp::Add, max_len, Self::imm(block_rows - 1));
        let blocks = self.u64_op(BinOp::Div, ml_pad, Self::imm(block_rows));
        let items = self.u64_op(BinOp::Mul, blocks, bh);
        let (first, step) = self.b.global_block_index();
        self.range(Type::U64, first, items, step, |w, item| {
            let block = w.u64_op(BinOp::Div, item, bh);
            let used = w.u64_op(BinOp::Mul, block, bh);
            let rem = w.u64_op(BinOp::Sub, item, used);
            let seq = w.u64_op(BinOp::Div, rem, Operand::Int(heads));
            let head =
                w.b.ternary(TernOp::MadLo, Type::U64, seq, Operand::Int(-heads), rem);
            let block = if last_first {
                let last = w.u64_op(BinOp::Sub, blocks, Operand::Int(1));
                w.u64_op(BinOp::Sub, last, block)
            } else {
                block
            };
            let (start, len, n) = sequence_bounds(w.b, offsets, seq, d.index, max_len);
            // (row `start`, head `h`): its lse index and byte offset in q / k / v / out.
            let row_head =
                w.b.ternary(TernOp::MadLo, Type::U64, start, Operand::Int(heads), head);
            let head_off = w.u64_op(BinOp::Mul, row_head, Self::imm(d.head_dim * 2));
            let item = WorkItem {
                block,
                len,
                n,
                row_head,
                head_off,
            };
            f(w, &item);
        });
    }

    /// `(offsets[b] + row) * H + h` (u64) for the u32 `row` of the
    /// sequence: the index of (row, head) in `lse` and `delta`.
    pub(super) fn head_row_index(&mut self, row: Reg, row_head: Reg) -> Reg {
        let row64 = self.b.cvt(Type::U64, Type::U32, row);
        let heads = Operand::Int(i64::from(self.d.heads));
        self.b
            .ternary(TernOp::MadLo, Type::U64, row64, heads, row_head)
    }

    /// `(n_b, first row of the item's block, whether that row is at or past
    /// n_b)` as u32 registers and a predicate.
    pub(super) fn block_start(&mut self, item: &WorkItem, block_rows: u32) -> (Reg, Reg, Reg) {
        let n = self.b.cvt(Type::U32, Type::U64, item.n);
        let block = self.b.cvt(Type::U32, Type::U64, item.block);
        let first = self.u32_op(BinOp::Mul, block, Self::imm(block_rows));
        let past = self.b.setp(Cmp::Ge, Type::U32, first, n);
        (n, first, past)
    }

    fn write(mut self, p: &Pointers, batch: Reg, max_len: Reg, scale: Option<Reg>) {
        let d = self.d;
        let (bm, bn) = (d.tiles.block_m, d.tiles.block_n);
        let lanes = self.lanes();
        // Shared layout: Q [BM rows], K stage 0/1 [BN rows each], V stage 0/1.
        let stride = self.stride;
        let k_base = [bm * stride, (bm + bn) * stride];
        let v_base = [(bm + 2 * bn) * stride, (bm + 3 * bn) * stride];
        let loader = self.tile_loader(lanes.tid, lanes.smem);

        // Constants of the activation.
        let log2e = std::f32::consts::LOG2_E;
        let score_factor = match (scale, d.activation) {
            (Some(s), Activation::Softmax) => {
                self.b.binary(BinOp::Mul, Type::F32, s, Operand::F32(log2e))
            }
            (Some(s), Activation::Silu) => s,
            (None, Activation::Softmax) => self.b.const_f32(log2e),
            (None, Activation::Silu) => self.b.const_f32(1.0),
        };
        let inv_max_len = self.inv_max_len(max_len);

        // Work items: (query block from the last, sequence, head).
        self.for_each_item(batch, max_len, p.offsets, bm, true, |me, w| {
            let is_first = me.b.setp(Cmp::Eq, Type::U64, w.block, Operand::Int(0));
            me.when(is_first, false, |z| {
                z.zero_tail(p, &lanes, w.head_off, w.row_head, w.n, w.len)
            });
            let (n, q0, past) = me.block_start(w, bm);
            let ctx = ItemCtx {
                lanes,
                n,
                q0,
                head_off: w.head_off,
                row_head: w.row_head,
                loader,
                k_base,
                v_base,
                score_factor,
                inv_max_len,
            };
            me.when(past, true, |f| f.item(p, &ctx));
        });
    }

    /// Writes zeros to rows `n_b .. L_b` of this head in `out` (and `lse`).
    fn zero_tail(
        &mut self,
        p: &Pointers,
        lanes: &Lanes,
        head_off: Reg,
        row_head: Reg,
        n: Reg,
        len: Reg,
    ) {
        let rows = self.u64_op(BinOp::Sub, len, n);
        let cpr = u64::from(self.chunks_per_row);
        let chunks = self.u64_op(BinOp::Mul, rows, Operand::Int(cpr as i64));
        let tid64 = self.b.cvt(Type::U64, Type::U32, lanes.tid);
        let out_head = self.u64_op(BinOp::Add, p.out, head_off);
        let row_bytes = self.row_bytes;
        let zero = self.b.mov(Type::B32, Operand::Int(0));
        self.b
            .for_range_u64(tid64, chunks, Self::imm(self.threads), |b, c| {
                let row = b.binary(
                    BinOp::Shr,
                    Type::U64,
                    c,
                    Operand::Int(i64::from(cpr.trailing_zeros())),
                );
                let chunk = b.binary(BinOp::And, Type::U64, c, Operand::Int(cpr as i64 - 1));
                let r = b.binary(BinOp::Add, Type::U64, row, n);
                let base = b.ternary(
                    TernOp::MadLo,
                    Type::U64,
                    r,
                    Operand::Int(i64::from(row_bytes)),
                    out_head,
                );
                let addr = b.ternary(TernOp::MadLo, Type::U64, chunk, Operand::Int(16), base);
                b.st(
                    Space::Global,
                    Type::B32,
                    Address {
                        base: addr,
                        offset: 0,
                    },
                    vec![zero, zero, zero, zero],
                );
            });
        if let Some(lse) = p.lse {
            let heads = i64::from(self.d.heads);
            let zero_f = self.b.const_f32(0.0);
            self.b
                .for_range_u64(tid64, rows, Self::imm(self.threads), |b, i| {
                    let r = b.binary(BinOp::Add, Type::U64, i, n);
                    let idx = b.ternary(TernOp::MadLo, Type::U64, r, Operand::Int(heads), row_head);
                    store_f32(b, lse, idx, DType::F32, &[zero_f]);
                });
        }
    }

    /// Per-thread constants of [`Self::load_tile`] for shared memory at `smem`.
    pub(super) fn tile_loader(&mut self, tid: Reg, smem: Reg) -> TileLoader {
        let cpr = self.chunks_per_row;
        let col = self.u32_op(BinOp::And, tid, Self::imm(cpr - 1));
        let load_row = self.u32_op(BinOp::Shr, tid, Self::imm(cpr.trailing_zeros()));
        let col_bytes = self.u32_op(BinOp::Shl, col, Operand::Int(4));
        let dst = self.b.ternary(
            TernOp::MadLo,
            Type::U32,
            load_row,
            Self::imm(self.stride),
            col_bytes,
        );
        TileLoader {
            dst: self.u32_op(BinOp::Add, dst, smem),
            row: load_row,
            col_bytes: self.b.cvt(Type::U64, Type::U32, col_bytes),
        }
    }

    /// Issues the `cp.async` copies of `rows` rows starting at sequence row
    /// `first` (u32) of `src` (global; `head_off` bytes to this sequence's
    /// row 0 at this head) into shared `dst_base` (bytes past the loader's
    /// shared base); rows at or past `n` are zero-filled.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load_tile(
        &mut self,
        t: &TileLoader,
        n: Reg,
        head_off: Reg,
        src: Reg,
        first: Reg,
        rows: u32,
        dst_base: u32,
    ) {
        let rows_per_pass = self.threads / self.chunks_per_row;
        let head_src = self.u64_op(BinOp::Add, src, head_off);
        let src_col = self.u64_op(BinOp::Add, head_src, t.col_bytes);
        let row0 = self.u32_op(BinOp::Add, first, t.row);
        for pass in 0..rows / rows_per_pass {
            let r = self.u32_op(BinOp::Add, row0, Self::imm(pass * rows_per_pass));
            let valid = self.b.setp(Cmp::Lt, Type::U32, r, n);
            let at = self.b.ternary(
                TernOp::MadWide,
                Type::U32,
                r,
                Self::imm(self.row_bytes),
                src_col,
            );
            let addr = self.b.selp(Type::U64, at, head_src, valid);
            let bytes = self
                .b
                .selp(Type::U32, Operand::Int(16), Operand::Int(0), valid);
            self.b.push(Inst::CpAsync {
                dst: Address {
                    base: t.dst,
                    offset: i64::from(dst_base + pass * rows_per_pass * self.stride),
                },
                src: Address {
                    base: addr,
                    offset: 0,
                },
                src_bytes: Operand::Reg(bytes),
            });
        }
    }

    /// Issues the copies of the key block starting at key `first` (u32)
    /// of K and V into pipeline stage `stage`.
    fn load_kv(&mut self, p: &Pointers, ctx: &ItemCtx, first: Reg, stage: usize) {
        let bn = self.d.tiles.block_n;
        let (loader, n, head_off) = (&ctx.loader, ctx.n, ctx.head_off);
        self.load_tile(loader, n, head_off, p.k, first, bn, ctx.k_base[stage]);
        self.load_tile(loader, n, head_off, p.v, first, bn, ctx.v_base[stage]);
    }

    /// One work item: a query block of one sequence and head.
    fn item(&mut self, p: &Pointers, ctx: &ItemCtx) {
        let d = self.d;
        let (bm, bn, hd) = (d.tiles.block_m, d.tiles.block_n, d.head_dim);
        let stride = self.stride;
        let softmax = d.activation == Activation::Softmax;
        // Keys to visit: all of the sequence, or up to the end of the query block.
        let kv_end = if d.keys_end_at_block() {
            let q_end = self.u32_op(BinOp::Add, ctx.q0, Self::imm(bm));
            self.u32_op(BinOp::Min, q_end, ctx.n)
        } else {
            ctx.n
        };
        let kv_pad = self.u32_op(BinOp::Add, kv_end, Self::imm(bn - 1));
        let nkb = self.u32_op(BinOp::Div, kv_pad, Self::imm(bn));

        // Stage Q and key block 0 (one commit group).
        self.load_tile(&ctx.loader, ctx.n, ctx.head_off, p.q, ctx.q0, bm, 0);
        let zero_u = self.b.mov(Type::U32, Operand::Int(0));
        self.load_kv(p, ctx, zero_u, 0);
        self.b.push(Inst::CpAsyncCommit);

        // Per row tile of this warp (tile `t` is the warp's 16 rows at
        // `16 (warp + t * warps)` of the block): accumulators and row
        // statistics (rows g and g + 8 of the tile).
        let o_tiles = (hd / 8) as usize;
        let s_tiles = (bn / 8) as usize;
        let row_tiles = d.tiles.row_tiles();
        let tile_step = TILE_ROWS * self.threads / 32;
        let neg_inf = Operand::F32(f32::NEG_INFINITY);
        let mut o: Vec<Vec<Acc>> = Vec::new();
        let mut m: Vec<[Reg; 2]> = Vec::new();
        let mut l: Vec<[Reg; 2]> = Vec::new();
        let mut s: Vec<Vec<Acc>> = Vec::new();
        for _ in 0..row_tiles {
            o.push((0..o_tiles).map(|_| self.zero_acc()).collect());
            m.push([
                self.b.mov(Type::F32, neg_inf),
                self.b.mov(Type::F32, neg_inf),
            ]);
            l.push([self.b.const_f32(0.0), self.b.const_f32(0.0)]);
            s.push((0..s_tiles).map(|_| self.new_acc()).collect());
        }
        // Row indices of this thread within the sequence (u32) in row tile
        // 0; tile `t` adds `t * tile_step` where used (fewer live registers).
        let rows = self.thread_rows(&ctx.lanes, ctx.q0);
        let o_ref: Vec<&[Acc]> = o.iter().map(Vec::as_slice).collect();
        // One row tile and D <= 128: Q's A fragments (D / 4 registers) stay
        // in registers for the whole item instead of being re-read by
        // `ldmatrix` for every key block (8 of the 72 `ldmatrix.x4` per
        // block at D = 128). Two row tiles (D = 64, 229 registers) or
        // D = 256 (128 accumulator registers for O) have no room for them.
        let q_regs = (row_tiles == 1 && hd <= 128).then(|| {
            self.b.push(Inst::CpAsyncWait { n: 0 });
            self.b.barrier();
            self.load_a_frags(ctx.lanes.a, 0, 0, 1)
        });
        let s_ref: Vec<&[Acc]> = s.iter().map(Vec::as_slice).collect();

        let ab = d.mma_type();
        let stage_bytes = bn * stride;
        self.range(Type::U32, Operand::Int(0), nkb, Operand::Int(1), |f, kb| {
            // Block kb has landed (this thread's copies, then everyone's),
            // and every warp is done with block kb - 1: one barrier per
            // block. Then prefetch block kb + 1 into the stage of kb - 1.
            f.b.push(Inst::CpAsyncWait { n: 0 });
            f.b.barrier();
            let next = f.u32_op(BinOp::Add, kb, Operand::Int(1));
            let has_next = f.b.setp(Cmp::Lt, Type::U32, next, nkb);
            let odd = f.u32_op(BinOp::And, kb, Operand::Int(1));
            f.when(has_next, false, |g| {
                let first = g.u32_op(BinOp::Mul, next, Self::imm(bn));
                // The next stage is the other one: stage 0 when kb is odd.
                let is_odd = g.b.setp(Cmp::Ne, Type::U32, odd, Operand::Int(0));
                g.when(is_odd, true, |h| h.load_kv(p, ctx, first, 1));
                g.when(is_odd, false, |h| h.load_kv(p, ctx, first, 0));
            });
            f.b.push(Inst::CpAsyncCommit);
            let stage_off = f.u32_op(BinOp::Mul, odd, Self::imm(stage_bytes));
            let k_lane = f.u32_op(BinOp::Add, ctx.lanes.b_rows, stage_off);
            let v_lane = f.u32_op(BinOp::Add, ctx.lanes.b_trans, stage_off);

            // S = Q K^T.
            let q_frags = match &q_regs {
                Some(frags) => AFrags::Regs(frags),
                None => AFrags::Shared {
                    lane: ctx.lanes.a,
                    base: 0,
                    tile_step: tile_step * stride,
                },
            };
            f.product_rows(&s_ref, q_frags, k_lane, ctx.k_base[0], ab);
            for acc in s.iter().flatten() {
                for &r in acc {
                    f.f32_to(BinOp::Mul, r, r, ctx.score_factor);
                }
            }

            // Boundary blocks: does any pair of this block fall outside a mask?
            let key_first = f.u32_op(BinOp::Mul, kb, Self::imm(bn));
            let key_end = f.u32_op(BinOp::Add, key_first, Self::imm(bn));
            let boundary = f.boundary(ctx, key_first, key_end);
            let key0 = f.b.ternary(
                TernOp::MadLo,
                Type::U32,
                ctx.lanes.quad,
                Operand::Int(2),
                key_first,
            );
            let key_room = f.b.binary(BinOp::Sub, Type::S32, ctx.n, key0);
            let room0 = [
                f.b.binary(BinOp::Sub, Type::S32, rows[0], key0),
                f.b.binary(BinOp::Sub, Type::S32, rows[1], key0),
            ];
            let row_room: Vec<[Reg; 2]> = (0..row_tiles as u32)
                .map(|t| {
                    if t == 0 {
                        room0
                    } else {
                        room0.map(|r| f.u32_op(BinOp::Add, r, Self::imm(t * tile_step)))
                    }
                })
                .collect();
            let length_then_score: Vec<Option<PairMask>> = if softmax {
                vec![None, d.score_mask]
            } else {
                Vec::new()
            };
            if softmax {
                f.when(boundary, false, |g| {
                    for (st, &room) in s.iter().zip(&row_room) {
                        g.apply_masks(st, &length_then_score, key_room, room, neg_inf);
                    }
                });
                for t in 0..row_tiles {
                    f.online_softmax(&s[t], &o[t], m[t], l[t]);
                }
            } else {
                for st in &s {
                    f.silu(st, ctx.inv_max_len);
                }
            }
            let mut post: Vec<Option<PairMask>> = Vec::new();
            if !softmax {
                post.push(None);
            }
            if let Some(pm) = d.prob_mask {
                post.push(Some(pm));
            }
            if !post.is_empty() {
                f.when(boundary, false, |g| {
                    for (st, &room) in s.iter().zip(&row_room) {
                        g.apply_masks(st, &post, key_room, room, Operand::F32(0.0));
                    }
                });
            }

            // O += P V, P rounded to the input dtype in registers one
            // k-step (16 keys) at a time.
            for kk in 0..s_tiles / 2 {
                let pa: Vec<Vec<[Reg; 4]>> = s
                    .iter()
                    .map(|st| f.pack_a(&st[2 * kk..2 * kk + 2]))
                    .collect();
                let pa_ref: Vec<&[[Reg; 4]]> = pa.iter().map(Vec::as_slice).collect();
                let v_base = ctx.v_base[0] + kk as u32 * 16 * stride;
                f.accumulate_rows(&o_ref, &pa_ref, v_lane, v_base, ab);
            }
        });
        // The next item of this CTA overwrites Q and stage 0: all reads done.
        self.b.push(Inst::CpAsyncWait { n: 0 });
        self.b.barrier();
        for t in 0..row_tiles {
            let tile_rows = if t == 0 {
                rows
            } else {
                rows.map(|r| self.u32_op(BinOp::Add, r, Self::imm(t as u32 * tile_step)))
            };
            self.epilogue(p, ctx, &o[t], m[t], l[t], tile_rows);
        }
    }

    /// A predicate: some pair of key block `[key_first, key_end)` is masked
    /// for some row of the query block.
    fn boundary(&mut self, ctx: &ItemCtx, key_first: Reg, key_end: Reg) -> Reg {
        let d = self.d;
        let flag = self.b.mov(Type::U32, Operand::Int(0));
        let past_len = self.b.setp(Cmp::Gt, Type::U32, key_end, ctx.n);
        self.selp_to(Type::U32, flag, Operand::Int(1), flag, past_len);
        for mask in [d.score_mask, d.prob_mask].into_iter().flatten() {
            let hit = match mask {
                // Some key j > some row i >= q0: the last key passes q0.
                PairMask::KeyNotAfterQuery => {
                    let last = self.u32_op(BinOp::Sub, key_end, Operand::Int(1));
                    self.b.setp(Cmp::Gt, Type::U32, last, ctx.q0)
                }
                // Some key j < some row i < q0 + BM: the first key is before the last row.
                PairMask::KeyNotBeforeQuery => {
                    let last_row = self.u32_op(BinOp::Add, ctx.q0, Self::imm(d.tiles.block_m - 1));
                    self.b.setp(Cmp::Lt, Type::U32, key_first, last_row)
                }
            };
            self.selp_to(Type::U32, flag, Operand::Int(1), flag, hit);
        }
        self.b.setp(Cmp::Ne, Type::U32, flag, Operand::Int(0))
    }

    /// Sets the entries of `s` outside each mask to `fill`; `None` is the
    /// length mask (`j < n_b`). `key_room = n_b - key0`, `row_room[r] = row_r - key0`
    /// where `key0` is the key of this thread's column 0.
    fn apply_masks(
        &mut self,
        s: &[Acc],
        masks: &[Option<PairMask>],
        key_room: Reg,
        row_room: [Reg; 2],
        fill: Operand,
    ) {
        for (j, acc) in s.iter().enumerate() {
            for (k, &r) in acc.iter().enumerate() {
                let col = Operand::Int((8 * j + (k & 1)) as i64);
                let row = row_room[k / 2];
                for mask in masks {
                    let keep = match mask {
                        None => self.b.setp(Cmp::Gt, Type::S32, key_room, col),
                        Some(PairMask::KeyNotAfterQuery) => {
                            self.b.setp(Cmp::Ge, Type::S32, row, col)
                        }
                        Some(PairMask::KeyNotBeforeQuery) => {
                            self.b.setp(Cmp::Le, Type::S32, row, col)
                        }
                    };
                    self.selp_to(Type::F32, r, r, fill, keep);
                }
            }
        }
    }

    /// Online softmax of one block: scores (log2 domain) to probabilities in
    /// place, running max `m` and per-thread partial sums `l` updated, the
    /// output accumulator rescaled.
    fn online_softmax(&mut self, s: &[Acc], o: &[Acc], m: [Reg; 2], l: [Reg; 2]) {
        for half in 0..2 {
            let mx = self.b.mov(Type::F32, Operand::F32(f32::NEG_INFINITY));
            for acc in s {
                for &r in &acc[2 * half..2 * half + 2] {
                    self.f32_to(BinOp::Max, mx, mx, r);
                }
            }
            for lane_mask in [1, 2] {
                let other = self
                    .b
                    .shfl(ShflMode::Bfly, mx, Operand::Int(lane_mask), 0x1f);
                self.f32_to(BinOp::Max, mx, mx, other);
            }
            let m_new = self.b.binary(BinOp::Max, Type::F32, m[half], mx);
            // A row with no allowed key yet keeps m = -inf; subtract 0 instead.
            let none = self
                .b
                .setp(Cmp::Eq, Type::F32, m_new, Operand::F32(f32::NEG_INFINITY));
            let m_use = self.b.selp(Type::F32, Operand::F32(0.0), m_new, none);
            let diff = self.b.binary(BinOp::Sub, Type::F32, m[half], m_use);
            let alpha = self.b.unary(UnOp::Ex2Approx, Type::F32, diff);
            self.b.mov_to(Type::F32, m[half], m_new);
            let sum = self.b.const_f32(0.0);
            for acc in s {
                for &r in &acc[2 * half..2 * half + 2] {
                    self.f32_to(BinOp::Sub, r, r, m_use);
                    self.b.unary_to(UnOp::Ex2Approx, Type::F32, r, r);
                    self.f32_to(BinOp::Add, sum, sum, r);
                }
            }
            self.b
                .ternary_to(TernOp::Fma, Type::F32, l[half], l[half], alpha, sum);
            for acc in o {
                for &r in &acc[2 * half..2 * half + 2] {
                    self.f32_to(BinOp::Mul, r, r, alpha);
                }
            }
        }
    }

    /// `p = silu(s) [/ max_len]` in place: `s / (1 + 2^(-s log2 e))`.
    fn silu(&mut self, s: &[Acc], inv_max_len: Option<Reg>) {
        for acc in s {
            for &r in acc {
                let sig = self.sigmoid(r);
                self.f32_to(BinOp::Mul, r, r, sig);
                if let Some(k) = inv_max_len {
                    self.f32_to(BinOp::Mul, r, r, k);
                }
            }
        }
    }

    /// `1 / (1 + 2^(-x log2 e))` (f32).
    pub(super) fn sigmoid(&mut self, x: Reg) -> Reg {
        let neg = self.b.binary(
            BinOp::Mul,
            Type::F32,
            x,
            Operand::F32(-std::f32::consts::LOG2_E),
        );
        let e = self.b.unary(UnOp::Ex2Approx, Type::F32, neg);
        let den = self.b.binary(BinOp::Add, Type::F32, e, Operand::F32(1.0));
        self.b.unary(UnOp::Rcp, Type::F32, den)
    }

    /// Normalizes, writes the rows `< n_b` of `out` (and `lse`).
    fn epilogue(
        &mut self,
        p: &Pointers,
        ctx: &ItemCtx,
        o: &[Acc],
        m: [Reg; 2],
        l: [Reg; 2],
        rows: [Reg; 2],
    ) {
        let d = self.d;
        let softmax = d.activation == Activation::Softmax;
        let quad_bytes = self.u32_op(BinOp::Shl, ctx.lanes.quad, Operand::Int(2));
        let quad_bytes64 = self.b.cvt(Type::U64, Type::U32, quad_bytes);
        let out_head = self.u64_op(BinOp::Add, p.out, ctx.head_off);
        let out_lane = self.u64_op(BinOp::Add, out_head, quad_bytes64);
        let is_quad0 = self
            .b
            .setp(Cmp::Eq, Type::U32, ctx.lanes.quad, Operand::Int(0));
        for half in 0..2 {
            let scale = if softmax {
                let total = l[half];
                for lane_mask in [1, 2] {
                    let other = self
                        .b
                        .shfl(ShflMode::Bfly, total, Operand::Int(lane_mask), 0x1f);
                    self.f32_to(BinOp::Add, total, total, other);
                }
                let empty = self.b.setp(Cmp::Eq, Type::F32, total, Operand::F32(0.0));
                let inv = self.b.unary(UnOp::Rcp, Type::F32, total);
                let inv = self.b.selp(Type::F32, Operand::F32(0.0), inv, empty);
                if let Some(k) = ctx.inv_max_len {
                    self.f32_to(BinOp::Mul, inv, inv, k);
                }
                Some((inv, total))
            } else {
                None
            };
            let row = rows[half];
            let inv = scale.map(|(inv, _)| inv);
            self.store_rows(o, half, row, ctx.n, out_lane, inv);
            if let (Some(lse), Some((_, total))) = (p.lse, scale) {
                // lse = (m + log2 l) * ln 2 (m is in the log2 domain).
                let lg = self.b.unary(UnOp::Lg2Approx, Type::F32, total);
                let sum = self.b.binary(BinOp::Add, Type::F32, m[half], lg);
                let value = self.b.binary(
                    BinOp::Mul,
                    Type::F32,
                    sum,
                    Operand::F32(std::f32::consts::LN_2),
                );
                let idx = self.head_row_index(row, ctx.row_head);
                let at = self.b.element_addr(lse, idx, 4);
                let store = self.b.setp(Cmp::Lt, Type::U32, row, ctx.n);
                let both = self
                    .b
                    .selp(Type::U32, Operand::Int(1), Operand::Int(0), store);
                let both = self.b.selp(Type::U32, both, Operand::Int(0), is_quad0);
                let write = self.b.setp(Cmp::Ne, Type::U32, both, Operand::Int(0));
                self.b.guarded(
                    Guard {
                        pred: write,
                        negate: false,
                    },
                    |b| {
                        b.st(
                            Space::Global,
                            Type::F32,
                            Address {
                                base: at,
                                offset: 0,
                            },
                            vec![value],
                        )
                    },
                );
            }
        }
    }

    /// Stores half `half` (rows `g`, or `g + 8`) of the accumulator tiles
    /// `acc`, times `scale` if any, in the input dtype as the global row
    /// `row` (skipped unless `row < n`): tile `t` at `lane_base + row *
    /// row_bytes + 16 t`.
    pub(super) fn store_rows(
        &mut self,
        acc: &[Acc],
        half: usize,
        row: Reg,
        n: Reg,
        lane_base: Reg,
        scale: Option<Reg>,
    ) {
        let valid = self.b.setp(Cmp::Lt, Type::U32, row, n);
        let addr = self.b.ternary(
            TernOp::MadWide,
            Type::U32,
            row,
            Self::imm(self.row_bytes),
            lane_base,
        );
        let mut packed = Vec::new();
        for tile in acc {
            let (x, y) = (tile[2 * half], tile[2 * half + 1]);
            if let Some(k) = scale {
                self.f32_to(BinOp::Mul, x, x, k);
                self.f32_to(BinOp::Mul, y, y, k);
            }
            packed.push(pack_f32(self.b, self.d.dtype, &[x, y])[0]);
        }
        let guard = Guard {
            pred: valid,
            negate: false,
        };
        self.b.guarded(guard, |b| {
            for (t, &v) in packed.iter().enumerate() {
                b.st(
                    Space::Global,
                    Type::B32,
                    Address {
                        base: addr,
                        offset: 16 * t as i64,
                    },
                    vec![v],
                );
            }
        });
    }

    pub(super) fn zero_acc(&mut self) -> Acc {
        let z = Operand::F32(0.0);
        [
            self.b.mov(Type::F32, z),
            self.b.mov(Type::F32, z),
            self.b.mov(Type::F32, z),
            self.b.mov(Type::F32, z),
        ]
    }

    pub(super) fn new_acc(&mut self) -> Acc {
        [
            self.b.reg(RegClass::F32),
            self.b.reg(RegClass::F32),
            self.b.reg(RegClass::F32),
            self.b.reg(RegClass::F32),
        ]
    }

    pub(super) fn ldmatrix(&mut self, base: Reg, offset: i64, trans: bool) -> Vec<Reg> {
        let dst: Vec<Reg> = (0..4).map(|_| self.b.reg(RegClass::B32)).collect();
        self.b.push(Inst::Ldmatrix {
            dst: dst.clone(),
            trans,
            addr: Address { base, offset },
        });
        dst
    }

    /// `acc += a * b` on tensor cores.
    pub(super) fn mma(&mut self, ab: Type, acc: Acc, a: [Reg; 4], b: [Reg; 2]) {
        self.b.push(Inst::Mma {
            ab,
            d: acc,
            a,
            b,
            c: acc,
        });
    }

    /// `acc = A_w B^T` where A is this warp's 16 rows of the `[rows][D]` tile
    /// at `a_base` and B the `[n][D]` tile at `b_base` (n = 8 per acc tile).
    pub(super) fn product(
        &mut self,
        acc: &[Acc],
        a_lane: Reg,
        a_base: u32,
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        let a = AFrags::Shared {
            lane: a_lane,
            base: a_base,
            tile_step: 0,
        };
        self.product_rows(&[acc], a, b_lane, b_base, ab);
    }

    /// The A fragment (16 rows x 16 k) at shared byte `offset` past the lane address.
    fn a_frag(&mut self, lane: Reg, offset: u32) -> [Reg; 4] {
        let f = self.ldmatrix(lane, i64::from(offset), false);
        [f[0], f[1], f[2], f[3]]
    }

    /// All A fragments `[tile][k-step]` of `tiles` row tiles of a `[rows][D]`
    /// shared tile (see [`AFrags::Shared`]).
    fn load_a_frags(
        &mut self,
        lane: Reg,
        base: u32,
        tile_step: u32,
        tiles: u32,
    ) -> Vec<Vec<[Reg; 4]>> {
        (0..tiles)
            .map(|t| {
                (0..self.d.head_dim / 16)
                    .map(|kk| self.a_frag(lane, base + t * tile_step + kk * 32))
                    .collect()
            })
            .collect()
    }

    /// [`Self::product`] for several row tiles (`acc[t]` with the A rows of
    /// tile `t`); each B fragment is read once for all of them.
    pub(super) fn product_rows(
        &mut self,
        acc: &[&[Acc]],
        a_frags: AFrags,
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        let stride = self.stride;
        for &r in acc.iter().copied().flatten().flatten() {
            self.b.mov_to(Type::F32, r, Operand::F32(0.0));
        }
        let b_pairs = acc.first().map_or(0, |t| t.len() / 2);
        for kk in 0..self.d.head_dim / 16 {
            let a: Vec<[Reg; 4]> = (0..acc.len())
                .map(|t| match &a_frags {
                    AFrags::Shared {
                        lane,
                        base,
                        tile_step,
                    } => self.a_frag(*lane, base + t as u32 * tile_step + kk * 32),
                    AFrags::Regs(frags) => frags[t][kk as usize],
                })
                .collect();
            for jp in 0..b_pairs {
                let bf = self.ldmatrix(
                    b_lane,
                    i64::from(b_base + jp as u32 * 16 * stride + kk * 32),
                    false,
                );
                for (tile, &frag) in acc.iter().zip(&a) {
                    self.mma(ab, tile[2 * jp], frag, [bf[0], bf[1]]);
                    self.mma(ab, tile[2 * jp + 1], frag, [bf[2], bf[3]]);
                }
            }
        }
    }

    /// `acc += A B` with A fragments `a` (16 rows x 16 k each) and B the
    /// `[k][D]` tile at `b_base` (`.trans`).
    pub(super) fn accumulate(
        &mut self,
        acc: &[Acc],
        a: &[[Reg; 4]],
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        self.accumulate_rows(&[acc], &[a], b_lane, b_base, ab);
    }

    /// [`Self::accumulate`] for several row tiles: `acc[t] += a[t] B`; each B
    /// fragment is read once for all of them.
    pub(super) fn accumulate_rows(
        &mut self,
        acc: &[&[Acc]],
        a: &[&[[Reg; 4]]],
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        let stride = self.stride;
        let k_steps = a.first().map_or(0, |t| t.len());
        let b_pairs = acc.first().map_or(0, |t| t.len() / 2);
        for kk in 0..k_steps {
            for np in 0..b_pairs {
                let bf = self.ldmatrix(
                    b_lane,
                    i64::from(b_base + kk as u32 * 16 * stride + np as u32 * 32),
                    true,
                );
                for (tile, frags) in acc.iter().zip(a) {
                    self.mma(ab, tile[2 * np], frags[kk], [bf[0], bf[1]]);
                    self.mma(ab, tile[2 * np + 1], frags[kk], [bf[2], bf[3]]);
                }
            }
        }
    }

    /// Accumulator tiles (16 x 8 each, in pairs) as A fragments in the input dtype.
    pub(super) fn pack_a(&mut self, acc: &[Acc]) -> Vec<[Reg; 4]> {
        let dtype = self.d.dtype;
        acc.chunks(2)
            .map(|pair| {
                let (t0, t1) = (pair[0], pair[1]);
                [
                    pack_f32(self.b, dtype, &[t0[0], t0[1]])[0],
                    pack_f32(self.b, dtype, &[t0[2], t0[3]])[0],
                    pack_f32(self.b, dtype, &[t1[0], t1[1]])[0],
                    pack_f32(self.b, dtype, &[t1[2], t1[3]])[0],
                ]
            })
            .collect()
    }
}

/// Where [`FlashWriter::product_rows`] takes its A fragments from.
pub(super) enum AFrags<'r> {
    /// `ldmatrix` per k-step from a `[rows][D]` shared tile: row tile `t`
    /// at `base + t * tile_step` bytes past the lane address `lane`.
    Shared {
        lane: Reg,
        base: u32,
        tile_step: u32,
    },
    /// Loaded once ([`FlashWriter::load_a_frags`]): `[tile][k-step]`.
    Regs(&'r [Vec<[Reg; 4]>]),
}

/// Sequence `b` of the grid-stride loop: `(start, len, n_b)` (u64).
pub(super) fn sequence_bounds(
    b: &mut KernelBuilder,
    offsets: Reg,
    seq: Reg,
    index: DType,
    max_len: Reg,
) -> (Reg, Reg, Reg) {
    let start = load_index(b, offsets, seq, index);
    let next = b.binary(BinOp::Add, Type::U64, seq, Operand::Int(1));
    let end = load_index(b, offsets, next, index);
    let len = b.binary(BinOp::Sub, Type::U64, end, start);
    let n = b.binary(BinOp::Min, Type::U64, len, max_len);
    (start, len, n)
}

/// Per-thread constants of the `cp.async` tile loads: this thread copies
/// the 16-byte chunk `col_bytes` of rows `row + k * (128 / chunks per row)`.
#[derive(Clone, Copy)]
pub(super) struct TileLoader {
    dst: Reg,
    row: Reg,
    col_bytes: Reg,
}

/// Registers of one work item shared by its phases.
struct ItemCtx {
    lanes: Lanes,
    /// `n_b` (u32).
    n: Reg,
    /// First query row of the block (u32).
    q0: Reg,
    /// Byte offset of (row `offsets[b]`, head `h`) in q / k / v / out (u64).
    head_off: Reg,
    /// `offsets[b] * H + h` (u64): the lse index of row 0.
    row_head: Reg,
    loader: TileLoader,
    k_base: [u32; 2],
    v_base: [u32; 2],
    score_factor: Reg,
    inv_max_len: Option<Reg>,
}

/// Lowers a recognized attention pattern for `spec` (`inner` is `[H, D]` or
/// `[D]`, dtype f16 or bf16, D in {32, 64, 128, 256}): one flash kernel,
/// launched with the dynamic shared memory of its tiles.
pub fn lower_attention(
    pattern: &AttentionPattern,
    spec: &Spec,
) -> Result<CompiledKernel, CodegenError> {
    let unsupported = |what: String| CodegenError::Unsupported(format!("flash attention: {what}"));
    let (heads, head_dim) = match (pattern.has_heads, spec.inner.as_slice()) {
        (true, &[h, d]) => (h, d),
        (false, &[d]) => (1, d),
        (_, other) => return Err(unsupported(format!("inner dims {other:?}"))),
    };
    if !matches!(head_dim, 32 | 64 | 128 | 256) {
        return Err(unsupported(format!(
            "head dim {head_dim} (expected 32, 64, 128 or 256)"
        )));
    }
    if heads == 0 {
        return Err(unsupported("zero heads".to_string()));
    }
    if !matches!(spec.dtype, DType::F16 | DType::BF16) {
        return Err(unsupported(format!(
            "dtype {} (tensor cores take f16 or bf16)",
            spec.dtype
        )));
    }
    if !matches!(spec.index, DType::I32 | DType::I64) {
        return Err(unsupported(format!("offsets dtype {}", spec.index)));
    }
    let desc = AttentionDesc {
        name: entry_name(pattern, spec, heads, head_dim),
        heads,
        head_dim,
        dtype: spec.dtype,
        index: spec.index,
        activation: pattern.activation,
        scale_attr: pattern.scaled.then(|| "scale".to_string()),
        score_mask: pattern.score_mask,
        prob_mask: pattern.prob_mask,
        divide_by_max_len: pattern.divide_by_max_len,
        lse: pattern.lse,
        tiles: Tiles::for_spec(head_dim, spec.max_len_bucket),
    };
    let plan = attention_kernel(&desc);
    let launch = Launch {
        entry: plan.kernel.name.clone(),
        block: plan.kernel.block_threads,
        dynamic_shared_bytes: desc.dynamic_shared_bytes(),
        grid: plan.grid,
        params: plan.bindings,
    };
    let module = KernelModule {
        kernels: vec![plan.kernel],
    };
    let ptx = crate::ptx::write_string(&module, &crate::ptx::Options { arch: spec.arch })?;
    let rows = SizeExpr::TotalRows * SizeExpr::Const(u64::from(heads));
    let mut outputs = vec![OutputBuffer {
        elem: spec.dtype,
        elems: rows.clone() * SizeExpr::Const(u64::from(head_dim)),
        used_rows_from: None,
    }];
    if pattern.lse {
        outputs.push(OutputBuffer {
            elem: DType::F32,
            elems: rows,
            used_rows_from: None,
        });
    }
    Ok(CompiledKernel {
        ptx,
        arch: spec.arch,
        launches: vec![launch],
        scratch: Vec::new(),
        outputs,
    })
}

/// The descriptor of the backward kernels of `pattern` (entry names end in `_bwd`).
pub(super) fn backward_desc(
    pattern: &AttentionPattern,
    spec: &Spec,
    heads: u32,
    head_dim: u32,
) -> AttentionDesc {
    AttentionDesc {
        name: format!("{}_bwd", entry_name(pattern, spec, heads, head_dim)),
        heads,
        head_dim,
        dtype: spec.dtype,
        index: spec.index,
        activation: pattern.activation,
        scale_attr: pattern.scaled.then(|| "scale".to_string()),
        score_mask: pattern.score_mask,
        prob_mask: pattern.prob_mask,
        divide_by_max_len: pattern.divide_by_max_len,
        lse: pattern.lse,
        // The backward kernels run 4 warps (their own tiling, see attention_bwd).
        tiles: Tiles {
            block_m: 64,
            block_n: 64,
            warp_rows: 16,
        },
    }
}

/// `jg_attn_<dtype>_<index>_h<H>_d<D>_n<bucket>_<activation>[_scaled][_causal|_keys_after][...]`.
fn entry_name(pattern: &AttentionPattern, spec: &Spec, heads: u32, head_dim: u32) -> String {
    let mut name = format!(
        "jg_attn_{}_{}_h{heads}_d{head_dim}_n{}_{}",
        spec.dtype,
        spec.index,
        spec.max_len_bucket,
        match pattern.activation {
            Activation::Softmax => "softmax",
            Activation::Silu => "silu",
        }
    );
    let mask_name = |m: PairMask| match m {
        PairMask::KeyNotAfterQuery => "causal",
        PairMask::KeyNotBeforeQuery => "keys_from_query",
    };
    if pattern.scaled {
        name.push_str("_scaled");
    }
    if let Some(m) = pattern.score_mask {
        name.push_str("_score_");
        name.push_str(mask_name(m));
    }
    if let Some(m) = pattern.prob_mask {
        name.push_str("_prob_");
        name.push_str(mask_name(m));
    }
    if pattern.divide_by_max_len {
        name.push_str("_div_max_len");
    }
    name
}
