//! The Hopper (sm_90a) mainloop of the forward kernel: both products on
//! the warpgroup MMA, `wgmma.mma_async`.
//!
//! One warpgroup (4 warps, 128 threads) owns a 64-row query block; its
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
//!   the pattern (1024 or 512 bytes). `cp.async` copies each 16-byte chunk
//!   to its swizzled place;
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
//! copies of the next K and V blocks (two `cp.async` stages) go to stages
//! no product in flight reads.

use crate::kernel::{
    BinOp, Inst, MatrixLayout, Operand, Reg, RegClass, Swizzle, Type, WgmmaA, WgmmaMma,
};

use super::forward::{BlockChecks, ItemCtx, KeyBlocks};

use super::mma::Acc;
use super::tiles::Tiles;
use super::writer::{FlashWriter, Lanes, TileLoader};

/// Rows of a `wgmma` tile (a warpgroup's query rows) and of every shared
/// tile of the Hopper kernel.
const TILE_ROWS: u32 = 64;

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
fn k_major(span: u32) -> MatrixLayout {
    MatrixLayout {
        lbo: 16,
        sbo: 8 * span,
        swizzle: swizzle_mode(span),
    }
}

/// V as the N-major B of `P V`: one `span`-byte row of `span / 2` columns
/// per key, 8-key groups `8 span` bytes apart, column blocks
/// `column_block` apart.
fn n_major(column_block: u32, span: u32) -> MatrixLayout {
    MatrixLayout {
        lbo: column_block,
        sbo: 8 * span,
        swizzle: swizzle_mode(span),
    }
}

/// The tiles of the Hopper kernel for head dim `head_dim` (32, 64, 128
/// or 256) and max-length bucket `max_len_bucket`: one warpgroup of 64
/// query rows and two `cp.async` stages. A copy pass of 128 threads covers
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
pub(super) fn hopper_tiles(head_dim: u32, max_len_bucket: u32) -> Tiles {
    let block_n = if max_len_bucket >= 256 && head_dim <= 128 {
        2 * TILE_ROWS
    } else {
        TILE_ROWS
    };
    Tiles {
        block_m: TILE_ROWS,
        block_n,
        warp_rows: 16,
        stages: 2,
    }
}

/// The shared-memory descriptors of one work item: Q, and the first stage
/// of K and of V (a stage `off` bytes further adds `off >> 4`).
pub(super) struct Descriptors {
    q: Reg,
    k: Reg,
    v: Reg,
}

impl FlashWriter<'_> {
    /// Bytes of a swizzled shared row ([`swizzle_span`]).
    fn span(&self) -> u32 {
        swizzle_span(self.d.head_dim)
    }

    /// Bytes between the column blocks (of `span / 2` columns) of every
    /// shared tile: `block_n` rows of [`Self::span`] bytes (the Q tile, of
    /// `block_m <= block_n` rows, is spaced like K and V so that one loader
    /// serves them all).
    fn column_block(&self) -> u32 {
        self.d.tiles.block_n * self.span()
    }

    /// The shared address of the tiles (u32), aligned to the swizzle
    /// pattern ([`swizzle_align`]).
    fn aligned_smem(&mut self, smem: Reg) -> Reg {
        let align = swizzle_align(self.d.head_dim);
        let up = self.u32_op(BinOp::Add, smem, Self::imm(align - 1));
        self.u32_op(BinOp::And, up, Operand::Int(-i64::from(align)))
    }

    /// `t` (a [`FlashWriter::tile_loader`] with rows of [`Self::span`]
    /// bytes) moved to the swizzled place of this thread's chunk, in the
    /// aligned tiles. With `n = span / 16` chunks per swizzled row, chunk
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
    fn advance(&mut self, desc: Reg, bytes: u32) -> Reg {
        if bytes == 0 {
            desc
        } else {
            self.u64_op(BinOp::Add, desc, Self::imm(bytes >> 4))
        }
    }

    /// `desc` advanced by the u32 register `bytes` (a multiple of 16).
    fn advance_by(&mut self, desc: Reg, bytes: Reg) -> Reg {
        let units = self.u32_op(BinOp::Shr, bytes, Operand::Int(4));
        let units = self.b.cvt(Type::U64, Type::U32, units);
        self.u64_op(BinOp::Add, desc, units)
    }

    /// One `wgmma.mma_async` into `acc` (N = 8 per tile).
    fn wgmma(&mut self, acc: &[Acc], a: WgmmaA, b: Reg, accumulate: bool, trans_b: bool) {
        self.b.push(Inst::WgmmaMmaAsync(Box::new(WgmmaMma {
            ab: self.d.mma_type(),
            d: acc.iter().flatten().copied().collect(),
            a,
            b,
            accumulate,
            negate_a: false,
            trans_b,
        })));
    }

    /// `s = Q K^T` for the warpgroup's 64 rows and the key block of the K
    /// stage whose descriptor is `k` ([`Self::advance_by`]): one
    /// `m64nBNk16` per 16 columns of D (the first overwrites `s`), after a
    /// `wgmma.fence`.
    fn wgmma_scores(&mut self, s: &[Acc], descs: &Descriptors, k: Reg) {
        // k16 steps (32 bytes) per swizzled row.
        let steps = self.span() / 32;
        for kk in 0..self.d.head_dim / 16 {
            let off = (kk / steps) * self.column_block() + (kk % steps) * 32;
            let a = self.advance(descs.q, off);
            let b = self.advance(k, off);
            self.wgmma(s, WgmmaA::Desc(a), b, kk > 0, false);
        }
    }

    /// `o += P V` with P's A fragments `p` (16 keys each) and V the stage
    /// whose descriptor is `v`: one `m64nDk16` per 16 keys, after a
    /// `wgmma.fence`.
    fn wgmma_accumulate(&mut self, o: &[Acc], p: &[[Reg; 4]], v: Reg) {
        for (kk, &frag) in p.iter().enumerate() {
            let b = self.advance(v, kk as u32 * 16 * self.span());
            self.wgmma(o, WgmmaA::Regs(frag), b, true, true);
        }
    }

    /// The key loop of the Hopper kernel, software-pipelined over the two
    /// `wgmma` products as in FlashAttention-3's intra-warpgroup overlap.
    /// Block `kb` reads K and V from stage `kb % 2`; the item's prologue
    /// copied Q and K of block 0. Block 0 is peeled: `S_0`, its softmax
    /// and `P_0`. Then iteration `kb >= 1`:
    ///
    /// 1. `cp.async.wait_group 0` and a barrier: K of block `kb` and V of
    ///    block `kb - 1` landed for everyone, every warp's products retired;
    /// 2. `S_kb = Q K_kb^T` and then `P_{kb-1} V_{kb-1}` issued, two commit
    ///    groups;
    /// 3. [`Self::copy_ahead`] of K of block `kb + 1` and V of block `kb`;
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
    /// `P_{nkb-1} V_{nkb-1}`. Each product is issued and waited for in one
    /// iteration: `ptxas` serializes the `wgmma`s when a group stays in
    /// flight across the back edge (C7514), and a product under a branch
    /// costs a dummy `wgmma` group at the join (which `wait_group 1` would
    /// then count), hence the peeled block 0. One fp32 S accumulator; a
    /// second, to overlap `S_{kb+1}` with the softmax of block `kb`, takes
    /// `BN / 2` registers more (past 255 at D = 128 with 128 keys per block).
    pub(super) fn wgmma_key_loop(&mut self, ctx: &ItemCtx, st: &KeyBlocks, descs: &Descriptors) {
        let d = self.d;
        let stage_bytes = d.tiles.block_n * d.smem_row_bytes();
        let (s, o) = (&st.s[0], &st.o[0]);
        // P of the block before, as `wgmma` A fragments (16 keys each).
        let p: Vec<[Reg; 4]> = (0..d.tiles.block_n / 16)
            .map(|_| [(); 4].map(|()| self.b.reg(RegClass::B32)))
            .collect();
        // Block 0 (every item has one): O is still zero, no rescale.
        self.b.push(Inst::CpAsyncWait { n: 0 });
        self.b.barrier();
        let zero = self.b.mov(Type::U32, Operand::Int(0));
        let stage = self.b.mov(Type::U32, Self::imm(stage_bytes));
        self.b.push(Inst::WgmmaFence);
        self.wgmma_scores(s, descs, descs.k);
        self.b.push(Inst::WgmmaCommit);
        self.copy_ahead(ctx, st, zero, stage, zero);
        self.b.push(Inst::WgmmaWait { n: 0 });
        self.probabilities(ctx, st, zero, false, BlockChecks::All);
        self.pack_p(s, &p);
        self.key_block_loops(ctx, 1, st.nkb, |f, kb, checks| {
            f.b.push(Inst::CpAsyncWait { n: 0 });
            f.b.barrier();
            let other = f.u32_op(BinOp::Sub, Self::imm(stage_bytes), stage);
            // Every operand register is written before the fence.
            let k = f.advance_by(descs.k, stage);
            let v = f.advance_by(descs.v, other);
            f.b.push(Inst::WgmmaFence);
            f.wgmma_scores(s, descs, k);
            f.b.push(Inst::WgmmaCommit);
            f.wgmma_accumulate(o, &p, v);
            f.b.push(Inst::WgmmaCommit);
            f.copy_ahead(ctx, st, kb, other, stage);
            f.b.push(Inst::WgmmaWait { n: 1 });
            let alphas = f.probabilities(ctx, st, kb, false, checks);
            f.b.push(Inst::WgmmaWait { n: 0 });
            for (acc, &alpha) in st.o.iter().zip(&alphas) {
                f.rescale(acc, alpha);
            }
            f.pack_p(s, &p);
            f.b.mov_to(Type::U32, stage, other);
        });
        // P V of the last block (its V in the stage before `stage`).
        self.b.push(Inst::CpAsyncWait { n: 0 });
        self.b.barrier();
        let last = self.u32_op(BinOp::Sub, Self::imm(stage_bytes), stage);
        let v = self.advance_by(descs.v, last);
        self.b.push(Inst::WgmmaFence);
        self.wgmma_accumulate(o, &p, v);
        self.b.push(Inst::WgmmaCommit);
        self.b.push(Inst::WgmmaWait { n: 0 });
    }

    /// Issued with the products of block `kb` (u32): the copies of K of
    /// block `kb + 1` into the stage at `next_off` (last read by `S_{kb-1}`,
    /// retired) and of V of block `kb` into the stage at `off` (last read
    /// by `P_{kb-2} V_{kb-2}`, retired): no product in flight reads either.
    fn copy_ahead(&mut self, ctx: &ItemCtx, st: &KeyBlocks, kb: Reg, next_off: Reg, off: Reg) {
        let next = self.u32_op(BinOp::Add, kb, Operand::Int(1));
        self.load_stage(ctx, st.k_src, ctx.k_base, next, st.nkb, next_off);
        self.load_stage(ctx, st.v_src, ctx.v_base, kb, st.nkb, off);
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
