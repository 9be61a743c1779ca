//! [`FlashWriter`], the kernel writer the forward and backward attention
//! kernels share: small instruction helpers, the lane constants of the
//! tensor-core fragment layouts, the grid-stride loop over work items and
//! the `cp.async` tile loads.

use crate::kernel::{
    Address, BinOp, Cmp, Inst, KernelBuilder, Operand, Reg, RegClass, Space, Special, TernOp, Type,
    UnOp,
};
use crate::spec::DType;
use crate::templates::{load_index, pack_f32, unpack_f32};

use super::desc::AttentionDesc;

/// Per-thread lane constants of the tensor-core kernels: the thread's place
/// in its warp and its `ldmatrix` lane addresses for the fragments of
/// `mma.m16n8k16` (each lane supplies the address of one 16-byte row of a
/// 16 x 16 tile; see the fragment layouts of the PTX ISA), as shared
/// addresses of row 0 of a tile at the start of the dynamic shared memory.
#[derive(Clone, Copy)]
pub(in crate::templates) struct Lanes {
    pub(in crate::templates) tid: Reg,
    pub(in crate::templates) warp: Reg,
    /// `lane / 4`: the accumulator row within an 8-row half.
    pub(in crate::templates) group: Reg,
    /// `lane % 4`: the accumulator column pair.
    pub(in crate::templates) quad: Reg,
    /// Shared address of the dynamic shared memory.
    pub(in crate::templates) smem: Reg,
    /// `(lane / 8) % 2`.
    pub(in crate::templates) hi8: Reg,
    /// `lane % 8 + 8 * (lane / 16)`: this lane's row of a B fragment read
    /// from the rows of an `[n][k]` tile.
    pub(in crate::templates) b_row: Reg,
    /// A operand, row-major (this warp's 16 rows of a `[rows][k]` tile):
    /// row `16 warp + lane % 8 + 8 hi8`, column half `lane / 16`.
    pub(in crate::templates) a: Reg,
    /// B operand from the rows of an `[n][k]` tile (plain `ldmatrix`): row
    /// `b_row`, column half `hi8`.
    pub(in crate::templates) b_rows: Reg,
    /// B operand of a `[k][n]` tile (`ldmatrix.trans`): row `lane % 8 + 8
    /// hi8`, column half `lane / 16`.
    pub(in crate::templates) b_trans: Reg,
}

/// One work item of [`FlashWriter::for_each_item`]: a block of rows of one
/// sequence and head.
pub(in crate::templates) struct WorkItem {
    /// The block's index within its sequence (u64).
    pub(in crate::templates) block: Reg,
    /// `L_b` (u64).
    pub(in crate::templates) len: Reg,
    /// `n_b = min(L_b, max_len)` (u64).
    pub(in crate::templates) n: Reg,
    /// `offsets[b] * H + h` (u64): the lse index of row 0.
    pub(in crate::templates) row_head: Reg,
    /// Byte offset of (row `offsets[b]`, head `h`) in q / k / v / out (u64).
    pub(in crate::templates) head_off: Reg,
    /// `offsets[b]` (u64): the TMA copies address rows of the whole values.
    pub(in crate::templates) start: Reg,
    /// `h` (u64).
    pub(in crate::templates) head: Reg,
}

/// Writes the body of the forward kernel.
pub(in crate::templates) struct FlashWriter<'a> {
    pub(in crate::templates) d: &'a AttentionDesc,
    pub(in crate::templates) b: &'a mut KernelBuilder,
    /// Padded shared row stride in bytes.
    pub(in crate::templates) stride: u32,
    /// 16-byte chunks per row.
    pub(in crate::templates) chunks_per_row: u32,
    /// Bytes between two rows of q / k / v / out (`H * D * 2`).
    pub(in crate::templates) row_bytes: u32,
    /// Threads per CTA (that run the writer's math; see `first_thread`).
    pub(in crate::templates) threads: u32,
    /// The CTA's thread that is this writer's thread 0 ([`Self::lanes`]):
    /// 0, or in the warp-specialized forward kernel the first consumer's,
    /// past the producer warpgroup.
    pub(in crate::templates) first_thread: u32,
}

impl<'a> FlashWriter<'a> {
    /// A writer of `d`'s kernels into `b`.
    pub(in crate::templates) fn new(d: &'a AttentionDesc, b: &'a mut KernelBuilder) -> Self {
        FlashWriter {
            d,
            b,
            stride: d.smem_stride(),
            chunks_per_row: d.head_dim / 8,
            row_bytes: d.heads * d.head_dim * 2,
            threads: d.tiles.threads(),
            first_thread: 0,
        }
    }

    /// The immediate `v`.
    pub(in crate::templates) fn imm(v: u32) -> Operand {
        Operand::Int(i64::from(v))
    }

    /// `a op b` (u32).
    pub(in crate::templates) fn u32_op(
        &mut self,
        op: BinOp,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Reg {
        self.b.binary(op, Type::U32, a, b)
    }

    /// `a op b` (u64).
    pub(in crate::templates) fn u64_op(
        &mut self,
        op: BinOp,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) -> Reg {
        self.b.binary(op, Type::U64, a, b)
    }

    /// Assigns `a op b` (f32) to the existing register `dst`.
    pub(in crate::templates) fn f32_to(
        &mut self,
        op: BinOp,
        dst: Reg,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
    ) {
        self.b.binary_to(op, Type::F32, dst, a, b);
    }

    /// Emits `f` under `if (pred != negate)`.
    pub(in crate::templates) fn when(
        &mut self,
        pred: Reg,
        negate: bool,
        f: impl FnOnce(&mut Self),
    ) {
        let skip = self.b.label();
        self.b.bra_if(pred, !negate, skip);
        f(self);
        self.b.place(skip);
    }

    /// `for (i = start; i < end; i += step) f(i)` over `ty`.
    pub(in crate::templates) fn range(
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
    pub(in crate::templates) fn mad_u32(&mut self, a: Reg, k: u32, c: Reg) -> Reg {
        self.b.ternary(TernOp::MadLo, Type::U32, a, Self::imm(k), c)
    }

    /// The lane constants (rows of the shared tiles `self.stride` bytes
    /// apart; threads counted from [`Self::first_thread`]).
    pub(in crate::templates) fn lanes(&mut self) -> Lanes {
        let stride = self.stride;
        let tid = self.b.special(Special::TidX);
        let tid = match self.first_thread {
            0 => tid,
            first => self.u32_op(BinOp::Sub, tid, Self::imm(first)),
        };
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
    pub(in crate::templates) fn thread_rows(&mut self, lanes: &Lanes, first: Reg) -> [Reg; 2] {
        let warp_row = self.mad_u32(lanes.warp, 16, lanes.group);
        let row0 = self.u32_op(BinOp::Add, first, warp_row);
        let row1 = self.u32_op(BinOp::Add, row0, Operand::Int(8));
        [row0, row1]
    }

    /// `1 / max_len` (f32) when the probabilities are divided by it.
    pub(in crate::templates) fn inv_max_len(&mut self, max_len: Reg) -> Option<Reg> {
        self.d.divide_by_max_len.then(|| {
            let ml = self.b.cvt(Type::F32, Type::U64, max_len);
            self.b.unary(UnOp::Rcp, Type::F32, ml)
        })
    }

    /// Grid-stride loop (one item per CTA at a time) over the
    /// `ceil(max_len / block_rows) * B * H` work items `(block of
    /// block_rows rows, sequence b, head h)`, blocks outermost; with
    /// `last_first` the last blocks of the sequences come first.
    pub(in crate::templates) fn for_each_item(
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
                start,
                head,
            };
            f(w, &item);
        });
    }

    /// `(offsets[b] + row) * H + h` (u64) for the u32 `row` of the
    /// sequence: the index of (row, head) in `lse` and `delta`.
    pub(in crate::templates) fn head_row_index(&mut self, row: Reg, row_head: Reg) -> Reg {
        let row64 = self.b.cvt(Type::U64, Type::U32, row);
        let heads = Operand::Int(i64::from(self.d.heads));
        self.b
            .ternary(TernOp::MadLo, Type::U64, row64, heads, row_head)
    }

    /// `(n_b, first row of the item's block, whether that row is at or past
    /// n_b)` as u32 registers and a predicate.
    pub(in crate::templates) fn block_start(
        &mut self,
        item: &WorkItem,
        block_rows: u32,
    ) -> (Reg, Reg, Reg) {
        let n = self.b.cvt(Type::U32, Type::U64, item.n);
        let block = self.b.cvt(Type::U32, Type::U64, item.block);
        let first = self.u32_op(BinOp::Mul, block, Self::imm(block_rows));
        let past = self.b.setp(Cmp::Ge, Type::U32, first, n);
        (n, first, past)
    }

    /// Per-thread constants of [`Self::load_tile`] for shared memory at `smem`.
    pub(in crate::templates) fn tile_loader(&mut self, tid: Reg, smem: Reg) -> TileLoader {
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
            odd_shift: None,
        }
    }

    /// `t` with the odd passes of its copies `by` (u32) bytes further than
    /// the even ones (see [`TileLoader`]).
    pub(in crate::templates) fn with_odd_shift(t: &TileLoader, by: Reg) -> TileLoader {
        TileLoader {
            odd_shift: Some(by),
            ..*t
        }
    }

    /// `t` with its shared destination `by` (u32) bytes further.
    pub(in crate::templates) fn shifted_loader(&mut self, t: &TileLoader, by: Reg) -> TileLoader {
        TileLoader {
            dst: self.u32_op(BinOp::Add, t.dst, by),
            ..*t
        }
    }

    /// This thread's source for [`Self::load_tile`] from the global tensor
    /// `src` (`head_off` bytes to this sequence's row 0 at this head): the
    /// address of its chunk of sequence row 0 (u64).
    pub(in crate::templates) fn tile_source(
        &mut self,
        t: &TileLoader,
        src: Reg,
        head_off: Reg,
    ) -> Reg {
        let head_src = self.u64_op(BinOp::Add, src, head_off);
        self.u64_op(BinOp::Add, head_src, t.col_bytes)
    }

    /// Issues the `cp.async` copies of `rows` rows starting at sequence row
    /// `first` (u32) of a tensor (`source` from [`Self::tile_source`]) into
    /// shared `dst_base` (bytes past the loader's shared base); rows at or
    /// past `n` are zero-filled (a source size of 0: nothing is read, the
    /// address is not dereferenced). One address per call: the passes are
    /// immediate offsets from it.
    pub(in crate::templates) fn load_tile(
        &mut self,
        t: &TileLoader,
        n: Reg,
        source: Reg,
        first: Reg,
        rows: u32,
        dst_base: u32,
    ) {
        let rows_per_pass = self.threads / self.chunks_per_row;
        let row0 = self.u32_op(BinOp::Add, first, t.row);
        let at = self.b.ternary(
            TernOp::MadWide,
            Type::U32,
            row0,
            Self::imm(self.row_bytes),
            source,
        );
        // Rows of the sequence left from this thread's first row: pass `k`
        // copies a row iff `k * rows_per_pass < room`.
        let room = self.b.binary(BinOp::Sub, Type::S32, n, row0);
        let odd_dst = t.odd_shift.map(|by| self.u32_op(BinOp::Add, t.dst, by));
        for pass in 0..rows / rows_per_pass {
            let skip = pass * rows_per_pass;
            let base = match odd_dst {
                Some(odd) if pass % 2 == 1 => odd,
                _ => t.dst,
            };
            let valid = self.b.setp(Cmp::Gt, Type::S32, room, Self::imm(skip));
            let bytes = self
                .b
                .selp(Type::U32, Operand::Int(16), Operand::Int(0), valid);
            self.b.push(Inst::CpAsync {
                dst: Address {
                    base,
                    offset: i64::from(dst_base + skip * self.stride),
                },
                src: Address {
                    base: at,
                    offset: i64::from(skip) * i64::from(self.row_bytes),
                },
                bytes: 16,
                src_bytes: Operand::Reg(bytes),
            });
        }
    }

    /// Multiplies the chunks this thread copied with [`Self::load_tile`]
    /// (`rows` rows at `dst_base`) in place by the f32 `factor` (through
    /// f32; exact for factors like -1 and 0), one chunk per iteration of a
    /// loop (unrolled, the passes of a D = 256 tile took ptxas to 255
    /// registers). Call it once this thread's copies have landed (after its
    /// `cp.async.wait_group`); the other threads see the result after a
    /// barrier.
    pub(in crate::templates) fn scale_own_rows(
        &mut self,
        t: &TileLoader,
        rows: u32,
        dst_base: u32,
        factor: Reg,
    ) {
        let rows_per_pass = self.threads / self.chunks_per_row;
        let dtype = self.d.dtype;
        let first = self.u32_op(BinOp::Add, t.dst, Self::imm(dst_base));
        let end = self.u32_op(BinOp::Add, first, Self::imm(rows * self.stride));
        // With an odd-pass shift, two passes (an even and an odd chunk)
        // per iteration.
        let passes = if t.odd_shift.is_some() { 2 } else { 1 };
        let step = Self::imm(passes * rows_per_pass * self.stride);
        let odd_shift = t.odd_shift;
        self.range(Type::U32, first, end, step, |w, chunk| {
            let mut chunks = vec![Address {
                base: chunk,
                offset: 0,
            }];
            if let Some(by) = odd_shift {
                chunks.push(Address {
                    base: w.u32_op(BinOp::Add, chunk, by),
                    offset: i64::from(rows_per_pass * w.stride),
                });
            }
            for at in chunks {
                let words = w.b.ld(Space::Shared, Type::B32, 4, at);
                let vals = unpack_f32(w.b, dtype, words);
                for &v in &vals {
                    w.f32_to(BinOp::Mul, v, v, factor);
                }
                let packed = pack_f32(w.b, dtype, &vals);
                w.b.st(Space::Shared, Type::B32, at, packed);
            }
        });
    }

    /// `1 / (1 + 2^(-x log2 e))` (f32).
    pub(in crate::templates) fn sigmoid(&mut self, x: Reg) -> Reg {
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
}

/// Sequence `b` of the grid-stride loop: `(start, len, n_b)` (u64).
pub(in crate::templates) fn sequence_bounds(
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
/// the 16-byte chunk `col_bytes` of rows `row + k * (128 / chunks per row)`
/// (pass `k`) to `dst` plus the row offset, or on odd passes with an
/// `odd_shift` to `dst + odd_shift` (the swizzled tiles of the Hopper
/// kernel at D = 256, whose passes of 4 rows alternate the swizzle phase).
#[derive(Clone, Copy)]
pub(in crate::templates) struct TileLoader {
    dst: Reg,
    row: Reg,
    col_bytes: Reg,
    odd_shift: Option<Reg>,
}
