//! The Hopper (sm_90a) mainloop of the forward kernel: both products on
//! the warpgroup MMA, `wgmma.mma_async`.
//!
//! One warpgroup (4 warps, 128 threads) owns a 64-row query block; its
//! accumulators have the register layout of the `mma.sync` kernel's (warp
//! `w` holds rows `16 w ..`, `N / 8` tiles of `m16n8`), so the masks, the
//! online softmax or SiLU and the epilogue are the forward kernel's own.
//! What differs is here:
//!
//! - the shared tiles (Q, and every stage of K and V) are stored as
//!   64-column blocks of `BN` rows of 128 bytes (Q's 64 rows spaced like
//!   K's and V's `BN`), the 16-byte chunks of each row permuted by XOR
//!   with the row's index mod 8 (the 128-byte swizzle of the `wgmma`
//!   descriptors: an 8-row group of a column's chunks hits all 32 banks),
//!   at a base aligned to 1024 bytes. `cp.async` copies each 16-byte chunk
//!   to its swizzled place;
//! - `S = Q K^T` is `D / 16` `wgmma.m64nBNk16` with Q (A) and K (B) read
//!   through K-major descriptors;
//! - `O += P V` takes P from registers (the f32 scores rounded to the input
//!   dtype, 4 registers per 16 keys) as the A operand and V through an
//!   N-major (`imm-trans-b`) descriptor: `BN / 16` `wgmma.m64nDk16`.
//!
//! Both products are waited for at once (`wgmma.wait_group 0`); the copies
//! of the next key blocks overlap them as in the `mma.sync` kernel.

use crate::kernel::{BinOp, Inst, MatrixLayout, Operand, Reg, Swizzle, Type, WgmmaA, WgmmaMma};

use super::mma::Acc;
use super::tiles::Tiles;
use super::writer::{FlashWriter, Lanes, TileLoader};

/// Rows of a `wgmma` tile (a warpgroup's query rows) and of every shared
/// tile of the Hopper kernel.
const TILE_ROWS: u32 = 64;

/// Bytes of a swizzled shared row: 64 16-bit columns.
pub(super) const SWIZZLE_ROW: u32 = 128;

/// Alignment of the shared tiles: the 128-byte swizzle repeats every 8 rows.
pub(super) const SWIZZLE_ALIGN: u32 = 1024;

/// Q and K as K-major operands: rows of 128 bytes, 8-row groups 1024 bytes
/// apart (the leading-dimension offset is unused with a swizzle).
const K_MAJOR: MatrixLayout = MatrixLayout {
    lbo: 16,
    sbo: 8 * SWIZZLE_ROW,
    swizzle: Swizzle::B128,
};

/// V as the N-major B of `P V`: one 128-byte row of 64 columns per key,
/// 8-key groups 1024 bytes apart, 64-column blocks `column_block` apart.
fn n_major(column_block: u32) -> MatrixLayout {
    MatrixLayout {
        lbo: column_block,
        sbo: 8 * SWIZZLE_ROW,
        swizzle: Swizzle::B128,
    }
}

/// The tiles of the Hopper kernel for head dim `head_dim` and max-length
/// bucket `max_len_bucket`, or `None` where it has no variant (then the
/// `mma.sync` kernel, which also runs on sm_90a, takes the spec): one
/// warpgroup of 64 query rows and two `cp.async` stages. D = 64 and 128:
/// their rows are whole 128-byte swizzle rows (D = 32 would take the
/// 64-byte swizzle) and the output accumulator (D / 2 registers) leaves
/// room for S and P (D = 256 would hold 128 of them, and its copy passes
/// of 4 rows would need a swizzle shift per pass).
///
/// Keys per block: 64 (S is one `m64n64` accumulator, 32 registers per
/// thread), or 128 for buckets of at least 256 rows: half the per-block
/// barriers, waits and row reductions, and `m64n128` products for `Q K^T`,
/// on sequences long enough to fill the blocks.
pub(super) fn hopper_tiles(head_dim: u32, max_len_bucket: u32) -> Option<Tiles> {
    let block_n = if max_len_bucket >= 256 {
        2 * TILE_ROWS
    } else {
        TILE_ROWS
    };
    matches!(head_dim, 64 | 128).then_some(Tiles {
        block_m: TILE_ROWS,
        block_n,
        warp_rows: 16,
        stages: 2,
    })
}

/// The shared-memory descriptors of one work item: Q, and the first stage
/// of K and of V (a stage `off` bytes further adds `off >> 4`).
pub(super) struct Descriptors {
    q: Reg,
    k: Reg,
    v: Reg,
}

impl FlashWriter<'_> {
    /// Bytes between the 64-column blocks of every shared tile: `block_n`
    /// rows of 128 bytes (the Q tile, of `block_m <= block_n` rows, is
    /// spaced like K and V so that one loader serves them all).
    fn column_block(&self) -> u32 {
        self.d.tiles.block_n * SWIZZLE_ROW
    }

    /// The 1024-byte-aligned shared address of the tiles (u32).
    fn aligned_smem(&mut self, smem: Reg) -> Reg {
        let up = self.u32_op(BinOp::Add, smem, Self::imm(SWIZZLE_ALIGN - 1));
        self.u32_op(BinOp::And, up, Operand::Int(-i64::from(SWIZZLE_ALIGN)))
    }

    /// `t` (a [`FlashWriter::tile_loader`] with 128-byte rows) moved to the
    /// swizzled place of this thread's chunk, in the aligned tiles: chunk
    /// `c` of row `r` goes to column block `c / 8`, chunk `(c % 8) ^ (r % 8)`
    /// of its 128-byte row. Every row this thread copies is `r` plus a
    /// multiple of 8, so one shift serves all of them (column blocks are
    /// [`Self::column_block`] apart in every tile).
    pub(super) fn swizzled_loader(&mut self, t: &TileLoader, lanes: &Lanes) -> TileLoader {
        let cpr = self.chunks_per_row;
        let col = self.u32_op(BinOp::And, lanes.tid, Self::imm(cpr - 1));
        let row = self.u32_op(BinOp::Shr, lanes.tid, Self::imm(cpr.trailing_zeros()));
        let chunk = self.u32_op(BinOp::And, col, Operand::Int(7));
        let block = self.u32_op(BinOp::Shr, col, Operand::Int(3));
        let phase = self.u32_op(BinOp::And, row, Operand::Int(7));
        let moved = self.u32_op(BinOp::Xor, chunk, phase);
        // shift = block (column block - 128) + 16 (moved - chunk) + (aligned - smem), mod 2^32.
        let delta = self.u32_op(BinOp::Sub, moved, chunk);
        let aligned = self.aligned_smem(lanes.smem);
        let align_shift = self.u32_op(BinOp::Sub, aligned, lanes.smem);
        let shift = self.mad_u32(delta, 16, align_shift);
        let shift = self.mad_u32(block, self.column_block() - SWIZZLE_ROW, shift);
        self.shifted_loader(t, shift)
    }

    /// The descriptors of Q (at the aligned base) and of the first K and V
    /// stages (`k_base`, `v_base` bytes past it).
    pub(super) fn descriptors(&mut self, smem: Reg, k_base: u32, v_base: u32) -> Descriptors {
        let aligned = self.aligned_smem(smem);
        let k_addr = self.u32_op(BinOp::Add, aligned, Self::imm(k_base));
        let v_addr = self.u32_op(BinOp::Add, aligned, Self::imm(v_base));
        Descriptors {
            q: self.b.matrix_descriptor(aligned, K_MAJOR),
            k: self.b.matrix_descriptor(k_addr, K_MAJOR),
            v: self
                .b
                .matrix_descriptor(v_addr, n_major(self.column_block())),
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

    /// Closes the batch of `wgmma`s and waits for it.
    fn wgmma_retire(&mut self) {
        self.b.push(Inst::WgmmaCommit);
        self.b.push(Inst::WgmmaWait { n: 0 });
    }

    /// `s = Q K^T` for the warpgroup's 64 rows and the key block in the K
    /// stage `stage_off` bytes past the first: one `m64nBNk16` per 16
    /// columns of D (the first overwrites `s`).
    pub(super) fn wgmma_scores(&mut self, s: &[Acc], descs: &Descriptors, stage_off: Reg) {
        let k = self.advance_by(descs.k, stage_off);
        self.b.push(Inst::WgmmaFence);
        for kk in 0..self.d.head_dim / 16 {
            let off = (kk / 4) * self.column_block() + (kk % 4) * 32;
            let a = self.advance(descs.q, off);
            let b = self.advance(k, off);
            self.wgmma(s, WgmmaA::Desc(a), b, kk > 0, false);
        }
        self.wgmma_retire();
    }

    /// `o += P V` with P's A fragments `p` (16 keys each) and V the stage
    /// `stage_off` bytes past the first: one `m64nDk16` per 16 keys.
    pub(super) fn wgmma_accumulate(
        &mut self,
        o: &[Acc],
        p: &[[Reg; 4]],
        descs: &Descriptors,
        stage_off: Reg,
    ) {
        let v = self.advance_by(descs.v, stage_off);
        self.b.push(Inst::WgmmaFence);
        for (kk, &frag) in p.iter().enumerate() {
            let b = self.advance(v, kk as u32 * 16 * SWIZZLE_ROW);
            self.wgmma(o, WgmmaA::Regs(frag), b, true, true);
        }
        self.wgmma_retire();
    }
}
