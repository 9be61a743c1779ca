//! The Hopper (sm_90a) main kernel of the attention backward (every head
//! dim): every product on the warpgroup MMA, `wgmma.mma_async`
//! (FlashAttention-3's backward with one consumer warpgroup).
//!
//! A CTA is one warpgroup (4 warps, 128 threads) per item (key block of
//! [`BWD_KEYS`] = 64 keys, sequence, head): the `wgmma` M is the item's 64
//! keys, so every accumulator has the register layout of the `mma.sync`
//! kernel's (warp `w` holds key rows `16 w ..`, `N / 8` tiles of `m16n8`)
//! and the item loop with its K / V copies and passes, the accumulators,
//! P, dS, the masks, the `dq` atomics and the final stores are that
//! kernel's own code (`attention_bwd`). The `_pre` and `_post` kernels are
//! shared as well.
//!
//! Shared tiles are the forward's swizzled ones (`hopper`): K and V, read
//! once per item, and two stages of Q and dO (query blocks of
//! [`QUERY_BLOCK`] = 64 rows, copied with `cp.async` one block ahead), each
//! as column blocks of 64 rows of 128 bytes (64 bytes, all the columns, at
//! D = 32). The per-query lse and delta (softmax) travel with Q and dO, in
//! two stages of their own, and are scaled in place to `-lse log2 e` and
//! `-delta scale` by the threads that copied them (`attention_bwd`'s
//! `bwd_copy_query_block` / `bwd_scale_stats`, as in the `mma.sync` kernel).
//! Per query block:
//!
//! - `S^T = K Q^T` and `dP^T = V dO^T`: `D / 16` `m64n64k16` each, A and B
//!   through K-major descriptors, two commit groups (the second runs while
//!   P is computed from `S^T`);
//! - P (one FFMA and an EX2 per score from the staged lse, or SiLU) and
//!   `dS^T scale = P fma(dP, scale, -delta scale)` (or SiLU's, its factor
//!   carrying the scale) in registers, masked on boundary blocks;
//! - `dV += P^T dO` and `dK += dS^T Q`: `64 / 16` `m64nDk16` each, A from
//!   registers (the f32 accumulator rounded to the input dtype, as the
//!   forward's P), B (dO, Q) through N-major descriptors;
//! - `dQ = dS K`: `dS^T` goes to a shared tile of 128-byte rows (the
//!   128-byte swizzle at every D, so the tiles are aligned to 1024 bytes),
//!   which read through an M-major (`imm-trans-a`) descriptor is `dS` as A
//!   (M = the 64 queries); B is K through an N-major descriptor. In chunks
//!   of 64 columns (`m64n64k16`, 32 f32 registers: at D = 128 the dK and
//!   dV accumulators already take 128; one chunk of 32 at D = 32), each
//!   added to the f32 `dq` accumulator with atomics as in the `mma.sync`
//!   kernel.
//!
//! At D = 256 the item makes two passes over the query blocks, as the
//! `mma.sync` kernel does (`dk_passes`): each accumulates dK and dV (and
//! adds dQ) for 128 of the columns (64 registers each per thread), with S
//! and dP over all of D. Shared memory: 6 tiles of `128 D` bytes, the
//! `dS^T` tile, two stages of lse and delta (34,816 bytes at D = 32,
//! 59,392 at 64, 108,544 at 128, 206,848 at 256).
//!
//! Shared-memory writes (the `cp.async` copies, the `dS^T` stores) are
//! ordered before the `wgmma` reads of them by `fence.proxy.async` and a
//! barrier. Two barriers per query block: after the copies of the block
//! landed and its lse / delta were scaled (then every warp has retired
//! the previous block's products and read its lse / delta, so the next
//! block's copies are issued into the other stages and the `dS^T` tile
//! may be rewritten), and after the `dS^T` tile is written. One more
//! after the last block of a pass.

use crate::kernel::{Address, BinOp, Cmp, Inst, Operand, Reg, Space, Type, WgmmaA};
use crate::templates::attention_bwd::{
    BWD_KEYS, BwdItem, MainPtrs, PassAccs, QuerySources, dk_passes,
};

use super::desc::AttentionDesc;
use super::hopper::{k_major, n_major, swizzle_align};
use super::mma::Acc;
use super::writer::FlashWriter;

/// Query rows per block of the Hopper backward (the N of `S^T` and `dP^T`,
/// the M of `dQ`).
const QUERY_BLOCK: u32 = 64;

/// Columns of one `dQ` chunk (the N of its `wgmma`s: one swizzled column
/// block; all 32 columns at D = 32).
const DQ_CHUNK: u32 = 64;

/// Bytes of a row of the `dS^T` tile (64 queries): the 128-byte swizzle at
/// every head dim.
const DS_ROW: u32 = 2 * QUERY_BLOCK;

/// Alignment of the tiles: the 128-byte swizzle pattern of the `dS^T`
/// tile (8 rows), a multiple of every tile's ([`swizzle_align`]).
const BASE_ALIGN: u32 = 8 * DS_ROW;

/// Shared layout of the Hopper backward: byte offsets of the swizzled
/// tiles from the aligned base, and of the lse / delta arrays from the
/// (unaligned) dynamic shared base.
struct Layout {
    /// Bytes of one 64-row tile (`64 * 2 D`): K, V and each stage of Q and
    /// dO; the second stage of Q (dO) is one tile after the first.
    tile: u32,
    k: u32,
    v: u32,
    q: u32,
    dout: u32,
    /// The `dS^T` tile (64 keys x 64 queries, one column block).
    ds: u32,
    /// Per-query `-lse log2 e` and `-delta scale` (softmax) of the first
    /// stage; the second is [`STATS_STAGE`] bytes further.
    lse: u32,
    delta: u32,
    total: u32,
}

/// Bytes of one stage of the per-query lse and delta (f32 each).
const STATS_STAGE: u32 = 8 * QUERY_BLOCK;

impl Layout {
    /// `stage >> stats_shift` is the stats stage of the tile stage `stage`
    /// (0 or `tile` bytes: 0 or [`STATS_STAGE`]).
    fn stats_shift(&self) -> u32 {
        (self.tile / STATS_STAGE).trailing_zeros()
    }

    fn new(d: &AttentionDesc) -> Self {
        let tile = BWD_KEYS * 2 * d.head_dim;
        let (k, v, q, dout) = (0, tile, 2 * tile, 4 * tile);
        let ds = 6 * tile;
        // The slack that aligns the tiles comes first, so every tile ends
        // before `align + ds + ...` past the unaligned base.
        let lse = BASE_ALIGN + ds + DS_ROW * BWD_KEYS;
        let delta = lse + 4 * QUERY_BLOCK;
        Layout {
            tile,
            k,
            v,
            q,
            dout,
            ds,
            lse,
            delta,
            total: lse + 2 * STATS_STAGE,
        }
    }
}

/// Bytes of dynamic shared memory of the Hopper backward's main kernel.
pub(in crate::templates) fn wgmma_backward_shared_bytes(d: &AttentionDesc) -> u32 {
    Layout::new(d).total
}

/// The shared-memory descriptors of the Hopper backward (first stage of Q
/// and dO).
struct Descs {
    /// K and V as the K-major A of `S^T` and `dP^T`.
    k_a: Reg,
    v_a: Reg,
    /// Q and dO as the K-major B of `S^T` and `dP^T`.
    q_b: Reg,
    dout_b: Reg,
    /// Q, dO and K as the N-major B of `dK`, `dV` and `dQ`.
    q_n: Reg,
    dout_n: Reg,
    k_n: Reg,
    /// `dS` as the M-major A of `dQ` (the `dS^T` tile).
    ds_a: Reg,
}

impl FlashWriter<'_> {
    /// The body of the Hopper backward's main kernel (see the module doc).
    pub(in crate::templates) fn write_backward_wgmma(
        mut self,
        p: &MainPtrs,
        batch: Reg,
        max_len: Reg,
        scale: Option<Reg>,
    ) {
        let lay = Layout::new(self.d);
        let lanes = self.lanes();
        let plain = self.tile_loader(lanes.tid, lanes.smem);
        let loader = self.swizzled_loader(&plain, &lanes);
        let aligned = self.aligned_to(lanes.smem, BASE_ALIGN);
        // D = 32: the loader aligns to the 64-byte pattern (512 bytes);
        // move it to the common base.
        let loader = if swizzle_align(self.d.head_dim) < BASE_ALIGN {
            let own = self.aligned_smem(lanes.smem);
            let by = self.u32_op(BinOp::Sub, aligned, own);
            self.shifted_loader(&loader, by)
        } else {
            loader
        };
        let descs = self.backward_descriptors(aligned, &lay);
        // This thread's `dS^T` entries: key rows `16 w + g` (and `+ 8`),
        // query pairs `2 quad` of each 16-byte chunk, whose place in the row
        // is XORed with the row's phase `g` (the 128-byte swizzle).
        let row = self.mad_u32(lanes.warp, 16, lanes.group);
        let ds_row = self.mad_u32(row, DS_ROW, aligned);
        let ds_store = self.mad_u32(lanes.quad, 4, ds_row);
        let phase = self.u32_op(BinOp::Shl, lanes.group, Operand::Int(4));
        // Per item: K and V copied once, then the passes over the query
        // blocks that see its keys.
        self.for_each_key_block(p, batch, max_len, scale, lanes, loader, |w, it| {
            w.bwd_item_passes(p, it, [lay.k, lay.v], |w, first_col| {
                w.backward_pass_wgmma(p, &lay, &descs, it, (ds_store, phase), first_col)
            })
        });
    }

    /// The descriptors of [`Descs`] for the tiles at `lay` past the shared
    /// address `aligned` (aligned to [`BASE_ALIGN`]).
    fn backward_descriptors(&mut self, aligned: Reg, lay: &Layout) -> Descs {
        let span = self.span();
        let (k_maj, n_maj) = (k_major(span), n_major(self.column_block(), span));
        let desc = |w: &mut Self, off: u32, layout| {
            let addr = w.u32_op(BinOp::Add, aligned, Self::imm(off));
            w.b.matrix_descriptor(addr, layout)
        };
        Descs {
            k_a: desc(self, lay.k, k_maj),
            v_a: desc(self, lay.v, k_maj),
            q_b: desc(self, lay.q, k_maj),
            dout_b: desc(self, lay.dout, k_maj),
            q_n: desc(self, lay.q, n_maj),
            dout_n: desc(self, lay.dout, n_maj),
            k_n: desc(self, lay.k, n_maj),
            ds_a: desc(self, lay.ds, n_major(DS_ROW * BWD_KEYS, DS_ROW)),
        }
    }

    /// Copies the Q and dO rows of the query block at `i0` (if it starts
    /// before `n_b`) into the stage `stage` (u32 bytes past the first) and
    /// (softmax) its per-query lse and delta into the stats stage
    /// `stage >> stats_shift`, and commits them as one `cp.async` group
    /// (empty past `n_b`).
    fn copy_query_block(
        &mut self,
        p: &MainPtrs,
        lay: &Layout,
        it: &BwdItem,
        src: &QuerySources,
        i0: Reg,
        stage: Reg,
    ) {
        let has = self.b.setp(Cmp::Lt, Type::U32, i0, it.n);
        self.when(has, false, |w| {
            let stats_stage = w.u32_op(BinOp::Shr, stage, Self::imm(lay.stats_shift()));
            let tiles = ([lay.q, lay.dout], stage);
            let stats = ([lay.lse, lay.delta], stats_stage);
            w.bwd_copy_query_block(p, it, src, i0, QUERY_BLOCK, tiles, stats);
        });
        self.b.push(Inst::CpAsyncCommit);
    }

    /// One pass over the query blocks: dK and dV of the `D / dk_passes`
    /// columns from column `first_col` on (u32, a multiple of 64; all
    /// columns when `None`) and those columns of dQ, with S and dP over
    /// all of D. Two stages of Q and dO, the next block's copies issued
    /// after the block's first barrier; `ds` is this thread's `dS^T` store
    /// address and phase.
    fn backward_pass_wgmma(
        &mut self,
        p: &MainPtrs,
        lay: &Layout,
        descs: &Descs,
        it: &BwdItem,
        (ds_store, phase): (Reg, Reg),
        first_col: Option<Reg>,
    ) {
        let d = self.d;
        let cols = d.head_dim / dk_passes(d.head_dim);
        let causal = d.keys_end_at_block();
        // The pass's N-major descriptors: its first column block.
        let (q_n, dout_n, k_n) = match first_col {
            Some(c) => {
                let per_col = self.column_block() / (self.span() / 2);
                let off = self.u32_op(BinOp::Mul, c, Self::imm(per_col));
                (
                    self.advance_by(descs.q_n, off),
                    self.advance_by(descs.dout_n, off),
                    self.advance_by(descs.k_n, off),
                )
            }
            None => (descs.q_n, descs.dout_n, descs.k_n),
        };
        let PassAccs {
            dk,
            dv,
            s,
            dp,
            probs,
        } = self.bwd_pass_accs(QUERY_BLOCK);
        let dq: Vec<Acc> = (0..DQ_CHUNK.min(cols) / 8)
            .map(|_| self.new_acc())
            .collect();
        let keys = self.thread_rows(&it.lanes, it.k0);
        let i_first = self.bwd_first_query(it, QUERY_BLOCK);
        let factors = self.bwd_factors(it);
        let src = self.bwd_query_sources(p, it, QUERY_BLOCK);
        let stage = self.b.mov(Type::U32, Operand::Int(0));
        self.copy_query_block(p, lay, it, &src, i_first, stage);
        self.range(Type::U32, i_first, it.n, Self::imm(QUERY_BLOCK), |w, i0| {
            w.b.push(Inst::CpAsyncWait { n: 0 });
            // This block's lse and delta, scaled in place by the threads
            // that copied them (as in the mma.sync kernel).
            let stats_stage = w.u32_op(BinOp::Shr, stage, Self::imm(lay.stats_shift()));
            w.bwd_scale_stats(&src.stats, &factors, stats_stage, lay.lse, lay.delta);
            // The copies are generic-proxy writes; the wgmmas read them
            // through the async proxy.
            w.b.push(Inst::FenceProxyAsyncShared);
            w.b.barrier();
            // Every warp retired the previous block's products: the next
            // block's copies may take their stage.
            let other = w.u32_op(BinOp::Sub, Self::imm(lay.tile), stage);
            let next = w.u32_op(BinOp::Add, i0, Self::imm(QUERY_BLOCK));
            w.copy_query_block(p, lay, it, &src, next, other);
            // S^T = K Q^T and dP^T = V dO^T, two groups.
            let q_b = w.advance_by(descs.q_b, stage);
            let dout_b = w.advance_by(descs.dout_b, stage);
            w.b.push(Inst::WgmmaFence);
            w.wgmma_scores(&s, descs.k_a, q_b);
            w.b.push(Inst::WgmmaCommit);
            w.wgmma_scores(&dp, descs.v_a, dout_b);
            w.b.push(Inst::WgmmaCommit);
            w.b.push(Inst::WgmmaWait { n: 1 });
            let cols = w.u32_op(BinOp::Add, it.cols, stats_stage);
            w.bwd_probs(&s, &probs, it, cols, lay.lse, &factors);
            w.bwd_mask_probs(&s, &probs, it, i0, QUERY_BLOCK, keys, causal);
            w.b.push(Inst::WgmmaWait { n: 0 });
            w.bwd_ds(&dp, &s, &probs, it, cols, lay.delta);
            let pa = w.pack_a(&probs);
            let dsa = w.pack_a(&dp);
            // dS^T to its tile (before dK's wgmma holds the registers).
            w.store_ds_t(&dsa, lay, ds_store, phase);
            w.b.push(Inst::FenceProxyAsyncShared);
            // dV += P^T dO, dK += dS^T Q.
            let q_n = w.advance_by(q_n, stage);
            let dout_n = w.advance_by(dout_n, stage);
            w.b.push(Inst::WgmmaFence);
            w.wgmma_accumulate(&dv, &pa, dout_n);
            w.wgmma_accumulate(&dk, &dsa, q_n);
            w.b.push(Inst::WgmmaCommit);
            w.b.barrier();
            w.dq_chunks(p, descs.ds_a, k_n, it, &dq, i0, first_col);
            w.b.mov_to(Type::U32, stage, other);
        });
        // Every warp done with the tiles before the next pass or item
        // copies into them.
        self.b.barrier();
        self.bwd_store_dk_dv(p, it, [&dk[..], &dv[..]], keys, first_col);
    }

    /// Stores `dS^T` (A fragments of 16 query columns each: key rows `g`,
    /// `g + 8` of the warp, query pairs `2 quad` and `8 + 2 quad`) into the
    /// swizzled `dS^T` tile: chunk `c` of a row at `(c ^ g) 16` bytes.
    fn store_ds_t(&mut self, dsa: &[[Reg; 4]], lay: &Layout, ds_store: Reg, phase: Reg) {
        let row8 = 8 * i64::from(DS_ROW);
        for (kk, frag) in dsa.iter().enumerate() {
            for (half, pair) in [[frag[0], frag[1]], [frag[2], frag[3]]]
                .into_iter()
                .enumerate()
            {
                let chunk = 16 * (2 * kk + half) as i64;
                let moved = self.u32_op(BinOp::Xor, phase, Operand::Int(chunk));
                let base = self.u32_op(BinOp::Add, ds_store, moved);
                for (r, off) in pair.into_iter().zip([0, row8]) {
                    self.b.st(
                        Space::Shared,
                        Type::B32,
                        Address {
                            base,
                            offset: i64::from(lay.ds) + off,
                        },
                        vec![r],
                    );
                }
            }
        }
    }

    /// `dq_acc += dS K` for the query block at `i0` and the pass's columns
    /// (from `first_col` on, all when `None`), [`DQ_CHUNK`] columns at a
    /// time into the accumulator `dq`: A is `dS` through `ds_a`, the M-major
    /// descriptor of the `dS^T` tile, B the chunk's column block of K
    /// (`k_n`, N-major, at the pass's first column); one `m64n64k16` per 16
    /// keys, then the atomics.
    #[allow(clippy::too_many_arguments)]
    fn dq_chunks(
        &mut self,
        p: &MainPtrs,
        ds_a: Reg,
        k_n: Reg,
        it: &BwdItem,
        dq: &[Acc],
        i0: Reg,
        first_col: Option<Reg>,
    ) {
        let span = self.span();
        let rows = self.thread_rows(&it.lanes, i0);
        let quad2 = self.u32_op(BinOp::Shl, it.lanes.quad, Operand::Int(1));
        let lane_col = match first_col {
            Some(c) => self.u32_op(BinOp::Add, quad2, c),
            None => quad2,
        };
        // This thread's dq_acc rows, computed once: the chunks' columns are
        // immediate offsets.
        let dq_rows = self.bwd_dq_rows(p, it, rows[0], lane_col);
        let cols = self.d.head_dim / dk_passes(self.d.head_dim);
        let chunk_cols = DQ_CHUNK.min(cols);
        for chunk in 0..cols / chunk_cols {
            // The first chunk's fence is the one before dV and dK.
            if chunk > 0 {
                self.b.push(Inst::WgmmaFence);
            }
            for kk in 0..BWD_KEYS / 16 {
                let a = self.advance(ds_a, kk * 16 * DS_ROW);
                let b = self.advance(k_n, chunk * self.column_block() + kk * 16 * span);
                self.wgmma(dq, WgmmaA::Desc(a), b, kk > 0, (true, true));
            }
            self.b.push(Inst::WgmmaCommit);
            self.b.push(Inst::WgmmaWait { n: 0 });
            self.bwd_add_dq(&dq_rows, dq, 0, i64::from(4 * chunk * chunk_cols));
        }
    }
}
