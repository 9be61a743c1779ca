//! The Hopper (sm_90a) mainloop of the forward kernel: both products on
//! the warpgroup MMA, `wgmma.mma_async`.
//!
//! One warpgroup (4 warps, 128 threads) owns a 64-row query block (in the
//! warp-specialized kernel, `hopper_ws`, each of two consumer warpgroups
//! owns half of a 128-row block, and a producer warpgroup copies); its
//! accumulators have the register layout of the `mma.sync` kernel's (warp
//! `w` holds rows `16 w ..`, `N / 8` tiles of `m16n8`), so the masks, the
//! online softmax or SiLU and the epilogue are the forward kernel's own.
//! What differs is here:
//!
//! - the shared tiles (Q, and every stage of K and V) are stored as column
//!   blocks of `BN` swizzled rows (Q's 64 rows spaced like K's and V's
//!   `BN`). The swizzle span is the row: 128 bytes (64 columns) for
//!   D = 64, 128 and 256, 64 bytes (all 32 columns) for D = 32. The 16-byte
//!   chunks of a row are permuted by XOR with bits 7.. of its address (the
//!   row mod 8 with 128-byte rows, half the row mod 4 with 64-byte rows:
//!   the 128- and 64-byte swizzles of the `wgmma` descriptors; an 8-row
//!   group of a column's chunks hits all 32 banks), at a base aligned to
//!   the pattern (1024 or 512 bytes). TMA (`cp.async.bulk.tensor`) copies
//!   Q, K and V there: one box of a column block by a block of rows per
//!   copy, through tensor maps over the whole `[T, H D]` values with the
//!   same swizzle ([`tile_map`]), issued by one elected thread and waited
//!   for on an mbarrier ([`Tma`]). A box starts at the block's first row of
//!   the sequence and runs on into the next sequences' rows (zeros past
//!   `T`): K's are masked like any key past `n_b`, Q's give rows that are
//!   not stored, and V's are zeroed before the last `P V`
//!   ([`FlashWriter::zero_rows_past_end`]);
//! - `S = Q K^T` is `D / 16` `wgmma.m64nBNk16` with Q (A) and K (B) read
//!   through K-major descriptors;
//! - `O += P V` takes P from registers (the f32 scores rounded to the input
//!   dtype, 4 registers per 16 keys) as the A operand and V through an
//!   N-major (`imm-trans-b`) descriptor: `BN / 16` `wgmma.m64nDk16`.
//!
//! The key loop is pipelined over the products ([`FlashWriter::wgmma_key_loop`]):
//! `Q K^T` of a block and `P V` of the block before are issued together and
//! each waited for only before its result is used, so the softmax of a
//! block runs while the tensor cores compute the `P V` before it; the
//! copies of the next K and V blocks (two stages) go to stages no product
//! in flight reads.

use crate::kernel::{
    Address, BinOp, Cmp, Inst, MatrixLayout, Operand, Reg, RegClass, Space, Swizzle, Type, WgmmaA,
    WgmmaMma,
};
use crate::launch::{SizeExpr, TensorMapBinding};

use super::desc::AttentionDesc;
use super::forward::{BlockChecks, ItemCtx, KeyBlocks};

use super::mma::Acc;
use super::tiles::Tiles;
use super::writer::{FlashWriter, Lanes, TileLoader, WorkItem};

/// Rows of a `wgmma` tile (a warpgroup's query rows) and of every shared
/// tile of the Hopper kernel.
pub(super) const TILE_ROWS: u32 = 64;

/// K and V stages of every Hopper kernel (the warp-specialized one's
/// mbarrier layout counts on two).
pub(super) const STAGES: u32 = 2;

/// Bytes of a swizzled shared row (the swizzle span) at head dim
/// `head_dim`: 64 16-bit columns (the 128-byte swizzle) for D >= 64, the
/// 32 columns of D = 32 in a 64-byte row (the 64-byte swizzle).
pub(super) fn swizzle_span(head_dim: u32) -> u32 {
    (2 * head_dim).min(128)
}

/// Alignment of the shared tiles at head dim `head_dim`: the swizzle
/// pattern repeats every 8 rows (1024 bytes, or 512 with 64-byte rows).
pub(super) fn swizzle_align(head_dim: u32) -> u32 {
    8 * swizzle_span(head_dim)
}

/// The descriptor's swizzle mode of rows of `span` bytes (64 or 128).
fn swizzle_mode(span: u32) -> Swizzle {
    if span == 64 {
        Swizzle::B64
    } else {
        Swizzle::B128
    }
}

/// Q and K as K-major operands: rows of `span` bytes, 8-row groups
/// `8 span` bytes apart (the leading-dimension offset is unused with a
/// swizzle).
pub(super) fn k_major(span: u32) -> MatrixLayout {
    MatrixLayout {
        lbo: 16,
        sbo: 8 * span,
        swizzle: swizzle_mode(span),
    }
}

/// V as the N-major B of `P V`: one `span`-byte row of `span / 2` columns
/// per key, 8-key groups `8 span` bytes apart, column blocks
/// `column_block` apart. (The backward's M-major A, `dS` from its `dS^T`
/// tile, has the same layout.)
pub(super) fn n_major(column_block: u32, span: u32) -> MatrixLayout {
    MatrixLayout {
        lbo: column_block,
        sbo: 8 * span,
        swizzle: swizzle_mode(span),
    }
}

/// The tiles of the Hopper kernel for head dim `head_dim` (32, 64, 128
/// or 256) and max-length bucket `max_len_bucket`: 64 query rows per
/// warpgroup and two stages of K and V (TMA copies). A pass of 128
/// threads over a tile's 16-byte chunks (the Q-sign scaling) covers
/// `1024 / D` rows: a multiple of 8 (the swizzle's period;
/// [`swizzle_span`] gives the row) up to D = 128, 4 at D = 256, whose odd
/// passes take a second shift ([`FlashWriter::swizzled_loader`]).
///
/// Keys per block: 64 (S is one `m64n64` accumulator, 32 registers per
/// thread), or 128 for buckets of at least 256 rows up to D = 128: half the
/// per-block barriers, waits and row reductions, and `m64n128` products
/// for `Q K^T`, on sequences long enough to fill the blocks. D = 256 keeps
/// 64: its output accumulator alone is 128 registers per thread (ptxas:
/// 230 to 238 registers with 64 keys; S and P of 128 keys would add 48).
///
/// Query rows: 64, or 128 for buckets of at least 256 rows: the
/// warp-specialized kernel (`hopper_ws`: a producer warpgroup and two
/// consumer warpgroups of 64 rows each, sharing every K / V stage).
pub(super) fn hopper_tiles(head_dim: u32, max_len_bucket: u32) -> Tiles {
    let (block_m, block_n) = match (max_len_bucket >= 256, head_dim <= 128) {
        (true, true) => (2 * TILE_ROWS, 2 * TILE_ROWS),
        (true, false) => (2 * TILE_ROWS, TILE_ROWS),
        (false, _) => (TILE_ROWS, TILE_ROWS),
    };
    Tiles {
        block_m,
        block_n,
        warp_rows: 16,
        stages: STAGES,
    }
}

/// The tensor maps of q, k or v (graph input `input`) for the Hopper
/// kernel: the values `[T, H D]` viewed as the 2D array `{H D, T}`
/// (innermost first), boxes of one column block (`span / 2` columns) by
/// `rows` rows with the swizzle of the shared tiles, so that a box lands
/// as one column block of a tile ([`swizzle_span`]: TMA swizzles the 16-byte
/// chunks of each `span`-byte row by the shared address bits 7.., as the
/// `wgmma` descriptors read them). Rows past `T` read as zeros.
pub(super) fn tile_map(desc: &AttentionDesc, input: usize, rows: u32) -> TensorMapBinding {
    let span = swizzle_span(desc.head_dim);
    TensorMapBinding {
        input,
        dtype: desc.dtype,
        dims: vec![
            SizeExpr::Const(u64::from(desc.heads * desc.head_dim)),
            SizeExpr::TotalRows,
        ],
        box_dim: vec![span / 2, rows],
        swizzle: swizzle_mode(span),
    }
}

/// The TMA copies of the Hopper kernel: q, k and v come by
/// `cp.async.bulk.tensor`, issued by one thread, in groups that complete
/// on one mbarrier. Every thread waits for each group (and a `bar.sync`
/// follows before any product reads it); a group is issued only after
/// every thread has waited for the one before (the barrier at the top of
/// each key block), so one mbarrier serves them all, its phases
/// alternating.
#[derive(Clone, Copy)]
pub(super) struct Tma {
    /// Generic addresses of the tensor maps of q, k and v ([`tile_map`]).
    maps: [Reg; 3],
    /// The mbarrier (u32 shared address).
    mbar: Reg,
    /// True in the one thread (of warp 0) that issues the copies.
    leader: Reg,
    /// The aligned base of the shared tiles (u32).
    tiles: Reg,
    /// Parity of the mbarrier phase the last group issued completes (u32;
    /// 1 before the first).
    parity: Reg,
    /// The work item's `offsets[b]` and first column `h D` in the values
    /// (u32; [`FlashWriter::tma_item`] sets them).
    seq_row: Reg,
    head_col: Reg,
}

/// One tile of a [`Tma`] group: the box rows of `map` ([`tile_map`]) of
/// the values from row `row` (u32, of the whole `[T, H D]` array) at the
/// item's head into the shared tile `dst` (u32, past the aligned base), if
/// `when` holds.
pub(super) struct TmaTile {
    pub(super) map: Reg,
    pub(super) row: Reg,
    pub(super) dst: Reg,
    pub(super) when: Option<Reg>,
}

/// The shared-memory descriptors of one work item: Q, and the first stage
/// of K and of V (a stage `off` bytes further adds `off >> 4`).
pub(super) struct Descriptors {
    pub(super) q: Reg,
    pub(super) k: Reg,
    pub(super) v: Reg,
}

impl FlashWriter<'_> {
    /// Bytes of a swizzled shared row ([`swizzle_span`]).
    pub(super) fn span(&self) -> u32 {
        swizzle_span(self.d.head_dim)
    }

    /// Bytes between the column blocks (of `span / 2` columns) of every
    /// shared tile: `block_n` rows of [`Self::span`] bytes (the Q tile, of
    /// `block_m <= block_n` rows, is spaced like K and V so that one loader
    /// serves them all).
    pub(super) fn column_block(&self) -> u32 {
        self.d.tiles.block_n * self.span()
    }

    /// The shared address of the tiles (u32), aligned to the swizzle
    /// pattern ([`swizzle_align`]).
    pub(super) fn aligned_smem(&mut self, smem: Reg) -> Reg {
        self.aligned_to(smem, swizzle_align(self.d.head_dim))
    }

    /// The shared address `smem` (u32) rounded up to a multiple of `align`
    /// (a power of two).
    pub(super) fn aligned_to(&mut self, smem: Reg, align: u32) -> Reg {
        let up = self.u32_op(BinOp::Add, smem, Self::imm(align - 1));
        self.u32_op(BinOp::And, up, Operand::Int(-i64::from(align)))
    }

    /// `t` (a [`FlashWriter::tile_loader`] with rows of [`Self::span`]
    /// bytes) moved to the swizzled place of this thread's chunk, in the
    /// aligned tiles (the chunks the Q-sign scaling rewrites). With `n = span / 16` chunks per swizzled row, chunk
    /// `c` of row `r` goes to column block `c / n`, chunk
    /// `(c % n) ^ ((r span / 128) % n)` of its row (the address bits 4..
    /// XORed with bits 7..). That phase repeats every 8 rows and every row
    /// this thread copies is `r` plus a multiple of 8 (`128 / (D / 8)`
    /// rows per copy pass), so one shift serves all of them (column blocks
    /// are [`Self::column_block`] apart in every tile).
    pub(super) fn swizzled_loader(&mut self, t: &TileLoader, lanes: &Lanes) -> TileLoader {
        let (cpr, span) = (self.chunks_per_row, self.span());
        let per_row = span / 16;
        let col = self.u32_op(BinOp::And, lanes.tid, Self::imm(cpr - 1));
        let row = self.u32_op(BinOp::Shr, lanes.tid, Self::imm(cpr.trailing_zeros()));
        let chunk = self.u32_op(BinOp::And, col, Self::imm(per_row - 1));
        let block = self.u32_op(BinOp::Shr, col, Self::imm(per_row.trailing_zeros()));
        // Rows of `span` bytes per 128 bytes: 1, or 2 with 64-byte rows.
        let rows_per_line = 128 / span;
        let line = if rows_per_line > 1 {
            self.u32_op(BinOp::Shr, row, Self::imm(rows_per_line.trailing_zeros()))
        } else {
            row
        };
        let phase = self.u32_op(BinOp::And, line, Self::imm(per_row - 1));
        let moved = self.u32_op(BinOp::Xor, chunk, phase);
        // shift = block (column block - span) + 16 (moved - chunk) + (aligned - smem), mod 2^32.
        let delta = self.u32_op(BinOp::Sub, moved, chunk);
        let aligned = self.aligned_smem(lanes.smem);
        let align_shift = self.u32_op(BinOp::Sub, aligned, lanes.smem);
        let shift = self.mad_u32(delta, 16, align_shift);
        let shift = self.mad_u32(block, self.column_block() - span, shift);
        let loader = self.shifted_loader(t, shift);
        let rows_per_pass = self.threads / cpr;
        if rows_per_pass >= 8 {
            return loader;
        }
        // D = 256: passes of 4 rows, so the rows of odd passes are `r + 4`
        // mod 8 (those of even passes `r`): their chunks move by
        // `16 (moved' - moved)` bytes more.
        let odd_row = self.u32_op(BinOp::Add, row, Self::imm(rows_per_pass));
        let odd_phase = self.u32_op(BinOp::And, odd_row, Self::imm(per_row - 1));
        let odd_moved = self.u32_op(BinOp::Xor, chunk, odd_phase);
        let odd_delta = self.u32_op(BinOp::Sub, odd_moved, moved);
        let odd_shift = self.u32_op(BinOp::Shl, odd_delta, Operand::Int(4));
        Self::with_odd_shift(&loader, odd_shift)
    }

    /// The kernel's TMA state ([`Tma`]) over the tensor maps `maps` (of
    /// q, k, v): the elected leader, the mbarrier initialized by it (count
    /// 1: the leader's `arrive.expect_tx`; then a `bar.sync`), and the
    /// aligned tiles.
    pub(super) fn tma(&mut self, maps: [Reg; 3], lanes: &Lanes) -> Tma {
        let elected = self.b.reg(RegClass::Pred);
        self.b.push(Inst::ElectSync { leader: elected });
        let warp0 = self.b.setp(Cmp::Eq, Type::U32, lanes.warp, Operand::Int(0));
        let leader = self.b.binary(BinOp::And, Type::Pred, elected, warp0);
        let array = self.b.shared(Type::B64, 1);
        let mbar = self.b.shared_addr(array);
        self.when(leader, false, |f| {
            f.b.push(Inst::MbarrierInit {
                addr: Self::at(mbar),
                count: 1,
            });
            f.b.push(Inst::FenceMbarrierInit);
        });
        self.b.barrier();
        let tiles = self.aligned_smem(lanes.smem);
        let parity = self.b.mov(Type::U32, Operand::Int(1));
        Tma {
            maps,
            mbar,
            leader,
            tiles,
            parity,
            seq_row: self.b.reg(RegClass::B32),
            head_col: self.b.reg(RegClass::B32),
        }
    }

    /// Points `tma` at work item `w`: its sequence's first row and head's
    /// first column in the values.
    pub(super) fn tma_item(&mut self, tma: &Tma, w: &WorkItem) {
        let row = self.b.cvt(Type::U32, Type::U64, w.start);
        self.b.mov_to(Type::U32, tma.seq_row, row);
        let head = self.b.cvt(Type::U32, Type::U64, w.head);
        let col = self.u32_op(BinOp::Mul, head, Self::imm(self.d.head_dim));
        self.b.mov_to(Type::U32, tma.head_col, col);
    }

    /// `[r]`.
    pub(super) fn at(r: Reg) -> Address {
        Address { base: r, offset: 0 }
    }

    /// Issues one [`Tma`] group of `bytes` (u32) transaction bytes: the
    /// leader's `arrive.expect_tx`, then one box per column block of each
    /// tile (every thread flips the parity). Boxes past `T` still count
    /// all their bytes (zero-filled).
    fn tma_issue(&mut self, tma: &Tma, tiles: &[TmaTile], bytes: Operand) {
        self.b.binary_to(
            BinOp::Xor,
            Type::B32,
            tma.parity,
            tma.parity,
            Operand::Int(1),
        );
        self.when(tma.leader, false, |f| {
            f.tma_boxes(tma.mbar, tma.tiles, tma.head_col, bytes, tiles)
        });
    }

    /// This thread's `arrive.expect_tx` of `bytes` (u32) on `mbar`, then
    /// the copies of `tiles` into the shared tiles at `base` (u32), one
    /// box per column block from the column `head_col` (u32) on. Boxes
    /// past `T` still count all their bytes (zero-filled).
    pub(super) fn tma_boxes(
        &mut self,
        mbar: Reg,
        base: Reg,
        head_col: Reg,
        bytes: Operand,
        tiles: &[TmaTile],
    ) {
        let (span, column_block) = (self.span(), self.column_block());
        let blocks = self.d.head_dim * 2 / span;
        self.b.push(Inst::MbarrierArriveExpectTx {
            addr: Self::at(mbar),
            bytes,
        });
        for tile in tiles {
            let dst = self.u32_op(BinOp::Add, base, tile.dst);
            let issue = |f: &mut Self| {
                for cb in 0..blocks {
                    let col = if cb == 0 {
                        head_col
                    } else {
                        f.u32_op(BinOp::Add, head_col, Self::imm(cb * span / 2))
                    };
                    f.b.push(Inst::TmaLoad {
                        dst: Address {
                            base: dst,
                            offset: i64::from(cb * column_block),
                        },
                        map: tile.map,
                        coords: vec![Operand::Reg(col), Operand::Reg(tile.row)],
                        mbar: Self::at(mbar),
                    });
                }
            };
            match tile.when {
                Some(pred) => self.when(pred, false, issue),
                None => issue(self),
            }
        }
    }

    /// Every thread waits until the last [`Tma`] group issued has landed.
    pub(super) fn tma_wait(&mut self, tma: &Tma) {
        self.b.mbarrier_wait(Self::at(tma.mbar), tma.parity);
    }

    /// The item's first [`Tma`] group: its query block of Q (`block_m`
    /// rows from `q0`) at the aligned base and K of key block 0 in the
    /// first K stage (every item has a key block 0). Q rows at or past
    /// `n_b` hold the next sequence's rows: their scores and outputs stay
    /// in their own rows, which are not stored.
    pub(super) fn tma_prologue(&mut self, tma: &Tma, ctx: &ItemCtx) {
        let d = self.d;
        let q_row = self.u32_op(BinOp::Add, tma.seq_row, ctx.q0);
        let q_dst = self.b.mov(Type::U32, Operand::Int(0));
        let k_dst = self.b.mov(Type::U32, Self::imm(ctx.k_base));
        let tiles = [
            TmaTile {
                map: tma.maps[0],
                row: q_row,
                dst: q_dst,
                when: None,
            },
            TmaTile {
                map: tma.maps[1],
                row: tma.seq_row,
                dst: k_dst,
                when: None,
            },
        ];
        let bytes = (d.tiles.block_m + d.tiles.block_n) * d.smem_row_bytes();
        self.tma_issue(tma, &tiles, Self::imm(bytes));
    }

    /// The descriptors of Q (at the aligned base) and of the first K and V
    /// stages (`k_base`, `v_base` bytes past it).
    pub(super) fn descriptors(&mut self, smem: Reg, k_base: u32, v_base: u32) -> Descriptors {
        let span = self.span();
        let aligned = self.aligned_smem(smem);
        let k_addr = self.u32_op(BinOp::Add, aligned, Self::imm(k_base));
        let v_addr = self.u32_op(BinOp::Add, aligned, Self::imm(v_base));
        Descriptors {
            q: self.b.matrix_descriptor(aligned, k_major(span)),
            k: self.b.matrix_descriptor(k_addr, k_major(span)),
            v: self
                .b
                .matrix_descriptor(v_addr, n_major(self.column_block(), span)),
        }
    }

    /// `desc` advanced by `bytes` (a multiple of 16; u64).
    pub(super) fn advance(&mut self, desc: Reg, bytes: u32) -> Reg {
        if bytes == 0 {
            desc
        } else {
            self.u64_op(BinOp::Add, desc, Self::imm(bytes >> 4))
        }
    }

    /// `desc` advanced by the u32 register `bytes` (a multiple of 16).
    pub(super) fn advance_by(&mut self, desc: Reg, bytes: Reg) -> Reg {
        let units = self.u32_op(BinOp::Shr, bytes, Operand::Int(4));
        let units = self.b.cvt(Type::U64, Type::U32, units);
        self.u64_op(BinOp::Add, desc, units)
    }

    /// One `wgmma.mma_async` into `acc` (N = 8 per tile); `trans` is
    /// `(imm-trans-a, imm-trans-b)`.
    pub(super) fn wgmma(
        &mut self,
        acc: &[Acc],
        a: WgmmaA,
        b: Reg,
        accumulate: bool,
        trans: (bool, bool),
    ) {
        self.b.push(Inst::WgmmaMmaAsync(Box::new(WgmmaMma {
            ab: self.d.mma_type(),
            d: acc.iter().flatten().copied().collect(),
            a,
            b,
            accumulate,
            negate_a: false,
            trans_a: trans.0,
            trans_b: trans.1,
        })));
    }

    /// `s = A B^T` over the D columns of two swizzled tiles read through
    /// the K-major descriptors `a` (64 rows) and `b` (`2 s.len()` rows):
    /// `S = Q K^T` of the forward (`b` a K stage, [`Self::advance_by`]),
    /// `S^T = K Q^T` and `dP^T = V dO^T` of the backward. One `m64nNk16`
    /// per 16 columns of D (the first overwrites `s`), after a
    /// `wgmma.fence`.
    pub(super) fn wgmma_scores(&mut self, s: &[Acc], a: Reg, b: Reg) {
        // k16 steps (32 bytes) per swizzled row.
        let steps = self.span() / 32;
        for kk in 0..self.d.head_dim / 16 {
            let off = (kk / steps) * self.column_block() + (kk % steps) * 32;
            let a = self.advance(a, off);
            let b = self.advance(b, off);
            self.wgmma(s, WgmmaA::Desc(a), b, kk > 0, (false, false));
        }
    }

    /// `o += P V` with P's A fragments `p` (16 keys each) and V the stage
    /// whose N-major descriptor is `v`: one `m64nDk16` per 16 keys, after
    /// a `wgmma.fence` (the backward's `dV += P^T dO` and `dK += dS^T Q`
    /// alike).
    pub(super) fn wgmma_accumulate(&mut self, o: &[Acc], p: &[[Reg; 4]], v: Reg) {
        for (kk, &frag) in p.iter().enumerate() {
            let b = self.advance(v, kk as u32 * 16 * self.span());
            self.wgmma(o, WgmmaA::Regs(frag), b, true, (false, true));
        }
    }

    /// The key loop of the Hopper kernel, software-pipelined over the two
    /// `wgmma` products as in FlashAttention-3's intra-warpgroup overlap.
    /// Block `kb` reads K and V from stage `kb % 2`; the item's prologue
    /// ([`Self::tma_prologue`]) copied Q and K of block 0. Block 0 is
    /// peeled: `S_0`, its softmax and `P_0`. Then iteration `kb >= 1`:
    ///
    /// 1. the [`StageFeed`]'s wait (the [`Tma`] wait and a barrier): K of
    ///    block `kb` and V of block `kb - 1` landed for everyone, every
    ///    warp's products retired;
    /// 2. `S_kb = Q K_kb^T` and then `P_{kb-1} V_{kb-1}` issued, two commit
    ///    groups;
    /// 3. [`Self::copy_ahead`] of K of block `kb + 1` and V of block `kb`
    ///    (the one-warpgroup kernel; in the warp-specialized one the
    ///    producer warpgroup copies, and the feed hands K of block `kb`
    ///    back once `S_kb` retired, V of block `kb - 1` once its `P V` did);
    /// 4. `wgmma.wait_group 1`: `S_kb` done while `P_{kb-1} V_{kb-1}` may
    ///    still run; masks and the online softmax (or SiLU) of block `kb`,
    ///    which leave O alone;
    /// 5. `wgmma.wait_group 0`: O rescaled, `P_kb` packed into the P
    ///    registers (which `P_{kb-1} V_{kb-1}` read).
    ///
    /// So the softmax of block `kb` overlaps `P V` of the block before, and
    /// the copies of the next blocks overlap both. The iterations run as two
    /// loops ([`Self::key_block_loops`]): the interior blocks, with no code
    /// for the length and causal masks, then the boundary ones. After them,
    /// `P_{nkb-1} V_{nkb-1}`, once V's rows at or past `n_b` are zeroed
    /// ([`Self::zero_rows_past_end`]). Each product is issued and waited
    /// for in one iteration: `ptxas` serializes the `wgmma`s when a group
    /// stays in flight across the back edge (C7514), and a product under a
    /// branch costs a dummy `wgmma` group at the join (which `wait_group 1`
    /// would then count), hence the peeled block 0. One fp32 S accumulator;
    /// a second, to overlap `S_{kb+1}` with the softmax of block `kb`, takes
    /// `BN / 2` registers more (past 255 at D = 128 with 128 keys per block).
    pub(super) fn wgmma_key_loop(
        &mut self,
        ctx: &ItemCtx,
        st: &KeyBlocks,
        descs: &Descriptors,
        feed: &impl StageFeed,
    ) {
        let d = self.d;
        let stage_bytes = d.tiles.block_n * d.smem_row_bytes();
        let (s, o) = (&st.s[0], &st.o[0]);
        // P of the block before, as `wgmma` A fragments (16 keys each).
        let p: Vec<[Reg; 4]> = (0..d.tiles.block_n / 16)
            .map(|_| [(); 4].map(|()| self.b.reg(RegClass::B32)))
            .collect();
        // Block 0 (every item has one): O is still zero, no rescale.
        let first = feed.first_stage(self);
        let zero = self.b.mov(Type::U32, Operand::Int(0));
        feed.wait_block(self, zero, true);
        let (stage, k0) = match first {
            Some(first) => (
                self.u32_op(BinOp::Sub, Self::imm(stage_bytes), first),
                self.advance_by(descs.k, first),
            ),
            None => (self.b.mov(Type::U32, Self::imm(stage_bytes)), descs.k),
        };
        self.b.push(Inst::WgmmaFence);
        self.wgmma_scores(s, descs.q, k0);
        self.b.push(Inst::WgmmaCommit);
        feed.issued(self, ctx, st, zero, stage, first.unwrap_or(zero));
        self.b.push(Inst::WgmmaWait { n: 0 });
        feed.scores_read(self, zero);
        self.probabilities(ctx, st, zero, false, BlockChecks::All);
        self.pack_p(s, &p);
        self.key_block_loops(ctx, 1, st.nkb, |f, kb, checks| {
            feed.wait_block(f, kb, false);
            let other = f.u32_op(BinOp::Sub, Self::imm(stage_bytes), stage);
            // Every operand register is written before the fence.
            let k = f.advance_by(descs.k, stage);
            let v = f.advance_by(descs.v, other);
            f.b.push(Inst::WgmmaFence);
            f.wgmma_scores(s, descs.q, k);
            f.b.push(Inst::WgmmaCommit);
            f.wgmma_accumulate(o, &p, v);
            f.b.push(Inst::WgmmaCommit);
            feed.issued(f, ctx, st, kb, other, stage);
            f.b.push(Inst::WgmmaWait { n: 1 });
            feed.scores_read(f, kb);
            let alphas = f.probabilities(ctx, st, kb, false, checks);
            f.b.push(Inst::WgmmaWait { n: 0 });
            feed.values_read(f, kb);
            for (acc, &alpha) in st.o.iter().zip(&alphas) {
                f.rescale(acc, alpha);
            }
            f.pack_p(s, &p);
            f.b.mov_to(Type::U32, stage, other);
        });
        // P V of the last block (its V in the stage before `stage`).
        let last = feed.wait_last(self, ctx, st, stage);
        let v = self.advance_by(descs.v, last);
        self.b.push(Inst::WgmmaFence);
        self.wgmma_accumulate(o, &p, v);
        self.b.push(Inst::WgmmaCommit);
        feed.last_issued(self);
        self.b.push(Inst::WgmmaWait { n: 0 });
        feed.item_done(self, st);
    }

    /// The stage of the last key block's V (u32 bytes past the first) when
    /// block `nkb` would go to `stage`: the other one.
    pub(super) fn last_stage(&mut self, stage: Reg) -> Reg {
        let stage_bytes = self.d.tiles.block_n * self.d.smem_row_bytes();
        self.u32_op(BinOp::Sub, Self::imm(stage_bytes), stage)
    }

    /// Zeroes the rows of the last key block's V (in the V stage at `off`
    /// bytes past the first, u32) at or past `n_b`, then
    /// `fence.proxy.async` (the zeros are generic-proxy stores that the
    /// next `wgmma`, and the next copy into the stage, must follow). TMA
    /// copied the next sequence's rows there (or zeros past `T`): P is 0
    /// for them, but `0 * inf` and `0 * NaN` are NaN, so they would leak
    /// into `P V`. Only the last block can hold such rows: every key of the
    /// blocks before it is below `kv_end <= n_b`. Each thread zeroes whole
    /// 16-byte chunks of whole rows (the swizzle only permutes a row's
    /// chunks), `threads` chunks apart.
    pub(super) fn zero_rows_past_end(&mut self, ctx: &ItemCtx, nkb: Reg, tiles: Reg, off: Reg) {
        let (bn, cpr) = (self.d.tiles.block_n, self.chunks_per_row);
        let (span, column_block) = (self.span(), self.column_block());
        let per_row = span / 16;
        let last = self.u32_op(BinOp::Sub, nkb, Operand::Int(1));
        let first = self.u32_op(BinOp::Mul, last, Self::imm(bn));
        let valid = self.u32_op(BinOp::Sub, ctx.n, first);
        let valid = self.u32_op(BinOp::Min, valid, Self::imm(bn));
        let stage = self.u32_op(BinOp::Add, tiles, off);
        let stage = self.u32_op(BinOp::Add, stage, Self::imm(ctx.v_base));
        let start = self.mad_u32(valid, cpr, ctx.lanes.tid);
        let zero = self.b.mov(Type::B32, Operand::Int(0));
        self.range(
            Type::U32,
            start,
            Self::imm(bn * cpr),
            Self::imm(self.threads),
            |f, c| {
                // Chunk `j` of row `r`: column block `j / per_row`, chunk
                // `j % per_row` of its `span`-byte row.
                let row = f.u32_op(BinOp::Shr, c, Self::imm(cpr.trailing_zeros()));
                let j = f.u32_op(BinOp::And, c, Self::imm(cpr - 1));
                let block = f.u32_op(BinOp::Shr, j, Self::imm(per_row.trailing_zeros()));
                let chunk = f.u32_op(BinOp::And, j, Self::imm(per_row - 1));
                let at = f.mad_u32(row, span, stage);
                let at = f.mad_u32(block, column_block, at);
                let at = f.mad_u32(chunk, 16, at);
                f.b.st(Space::Shared, Type::B32, FlashWriter::at(at), vec![zero; 4]);
            },
        );
        self.b.push(Inst::FenceProxyAsyncShared);
    }

    /// Issued with the products of block `kb` (u32): the [`Tma`] group of
    /// K of block `kb + 1` (if there is one) into the stage at `next_off`
    /// (last read by `S_{kb-1}`, retired) and of V of block `kb` into the
    /// stage at `off` (last read by `P_{kb-2} V_{kb-2}`, retired): no
    /// product in flight reads either, and every thread has waited for the
    /// group before (the barrier at the top of the block).
    fn copy_ahead(
        &mut self,
        ctx: &ItemCtx,
        st: &KeyBlocks,
        tma: &Tma,
        kb: Reg,
        next_off: Reg,
        off: Reg,
    ) {
        let bn = self.d.tiles.block_n;
        let stage_bytes = bn * self.d.smem_row_bytes();
        let next = self.u32_op(BinOp::Add, kb, Operand::Int(1));
        let has_next = self.b.setp(Cmp::Lt, Type::U32, next, st.nkb);
        let v_row = self.mad_u32(kb, bn, tma.seq_row);
        let k_row = self.u32_op(BinOp::Add, v_row, Self::imm(bn));
        let v_dst = self.u32_op(BinOp::Add, off, Self::imm(ctx.v_base));
        let k_dst = self.u32_op(BinOp::Add, next_off, Self::imm(ctx.k_base));
        let bytes = self.b.selp(
            Type::U32,
            Self::imm(2 * stage_bytes),
            Self::imm(stage_bytes),
            has_next,
        );
        let tiles = [
            TmaTile {
                map: tma.maps[2],
                row: v_row,
                dst: v_dst,
                when: None,
            },
            TmaTile {
                map: tma.maps[1],
                row: k_row,
                dst: k_dst,
                when: Some(has_next),
            },
        ];
        self.tma_issue(tma, &tiles, Operand::Reg(bytes));
    }

    /// The probabilities `s` rounded to the input dtype into the P
    /// registers `p` (the A fragments of `P V`).
    fn pack_p(&mut self, s: &[Acc], p: &[[Reg; 4]]) {
        for (dst, src) in p.iter().zip(self.pack_a(s)) {
            for (&r, x) in dst.iter().zip(src) {
                self.b.mov_to(Type::B32, r, x);
            }
        }
    }
}

/// Where the stages of [`FlashWriter::wgmma_key_loop`] come from, and how
/// they are handed back: the one-warpgroup kernel's own TMA copies
/// ([`Tma`]: a CTA barrier per block, copies issued ahead with the
/// products) or the producer warpgroup's of the warp-specialized kernel
/// (`hopper_ws::Pipes`: full and empty mbarriers per stage).
pub(super) trait StageFeed {
    /// The stage of key block 0 (u32 bytes past the first K / V stage);
    /// `None`: the first stage.
    fn first_stage(&self, f: &mut FlashWriter) -> Option<Reg>;
    /// Before the products of key block `kb` (u32; `first` at block 0):
    /// K of `kb` (and Q, at block 0; V of `kb - 1` after it) may be read
    /// by every `wgmma` of the block.
    fn wait_block(&self, f: &mut FlashWriter, kb: Reg, first: bool);
    /// The products of block `kb` are issued: K of `kb` is read from the
    /// stage at `stage`, V of `kb - 1` from the one at `other`.
    fn issued(
        &self,
        f: &mut FlashWriter,
        ctx: &ItemCtx,
        st: &KeyBlocks,
        kb: Reg,
        other: Reg,
        stage: Reg,
    );
    /// `S_kb` retired: K of block `kb` is read.
    fn scores_read(&self, f: &mut FlashWriter, kb: Reg);
    /// `P V` of block `kb - 1` retired: its V is read.
    fn values_read(&self, f: &mut FlashWriter, kb: Reg);
    /// Before the last `P V` (block `nkb` would go to `stage`): V of the
    /// last block landed, its rows past `n_b` zeroed, for every `wgmma`.
    /// Returns that V's stage.
    fn wait_last(&self, f: &mut FlashWriter, ctx: &ItemCtx, st: &KeyBlocks, stage: Reg) -> Reg;
    /// The last `P V` is issued (the consumers' ping-pong passes the turn
    /// on; nothing for the one-warpgroup kernel).
    fn last_issued(&self, _: &mut FlashWriter) {}
    /// The item's last `P V` retired: Q and the last V are read.
    fn item_done(&self, f: &mut FlashWriter, st: &KeyBlocks);
}

impl StageFeed for Tma {
    fn first_stage(&self, _: &mut FlashWriter) -> Option<Reg> {
        None
    }

    fn wait_block(&self, f: &mut FlashWriter, _: Reg, _: bool) {
        f.tma_wait(self);
        f.b.barrier();
    }

    fn issued(
        &self,
        f: &mut FlashWriter,
        ctx: &ItemCtx,
        st: &KeyBlocks,
        kb: Reg,
        other: Reg,
        stage: Reg,
    ) {
        f.copy_ahead(ctx, st, self, kb, other, stage);
    }

    fn scores_read(&self, _: &mut FlashWriter, _: Reg) {}

    fn values_read(&self, _: &mut FlashWriter, _: Reg) {}

    fn wait_last(&self, f: &mut FlashWriter, ctx: &ItemCtx, st: &KeyBlocks, stage: Reg) -> Reg {
        f.tma_wait(self);
        let last = f.last_stage(stage);
        f.zero_rows_past_end(ctx, st.nkb, self.tiles, last);
        f.b.barrier();
        last
    }

    fn item_done(&self, _: &mut FlashWriter, _: &KeyBlocks) {}
}
