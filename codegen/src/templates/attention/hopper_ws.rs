//! The warp-specialized Hopper (sm_90a) forward kernel, after
//! FlashAttention-3: a producer warpgroup that only copies, and two
//! consumer warpgroups that only compute.
//!
//! A CTA of 384 threads owns a 128-row query block
//! ([`super::hopper::hopper_tiles`] picks this kernel for max-length
//! buckets of at least 256 rows, with 128 keys per block, 64 at D = 256;
//! shorter buckets keep the one-warpgroup kernel of 64 query rows):
//!
//! - warpgroup 0, the producer, gives registers back (`setmaxnreg.dec`)
//!   and one thread of it issues every TMA copy of the CTA's work items,
//!   in the order the consumers read them: Q, then K and V of each key
//!   block, into two K and two V stages;
//! - warpgroups 1 and 2, the consumers (`setmaxnreg.inc`), each own 64
//!   query rows and run the key loop of the one-warpgroup kernel
//!   ([`FlashWriter::wgmma_key_loop`]) on the same K and V stages.
//!
//! Every buffer (Q, each K stage, each V stage) has a "full" mbarrier
//! (the producer's `arrive.expect_tx`, completed by the copies' bytes;
//! the consumers wait on its parity) and an "empty" one (each of the 256
//! consumer threads arrives once the `wgmma` that read the buffer has
//! retired; the producer waits on it before copying into the buffer
//! again). No CTA-wide barrier follows the split: the consumers meet on a
//! named barrier only where they write shared memory another warpgroup
//! reads (the Q-sign scaling, the zeroed V tail). Both sides walk the same
//! work items ([`FlashWriter::for_each_item`]) and count the items and
//! key blocks they have passed, so the stage and phase of every use agree
//! across grid-stride items: use `i` of a K or V stage buffer is key block
//! `i` of the CTA (over all its items), in stage `i % 2`, phase parity
//! `(i / 2) % 2`; the producer's wait for a free stage is on the parity
//! before (a fresh mbarrier counts the phase before its first as
//! complete).
//!
//! The two consumers take turns issuing their products (FlashAttention-3's
//! ping-pong): each has a named barrier of both warpgroups (256 threads),
//! waits on its own before issuing a block's `wgmma`s and arrives on the
//! other's once they are issued, so one warpgroup's softmax runs while the
//! other's products occupy the tensor cores. The second consumer arrives
//! once at the start (the first goes first), and the first waits once
//! after its last item for the second's last arrival, so that no barrier
//! is left half-arrived; both issue at the same points (the same items,
//! `nkb + 1` issues per item).

use crate::kernel::{Address, BinOp, Cmp, Inst, Operand, Reg, RegClass, Special, Type};

use super::desc::AttentionDesc;
use super::forward::{ItemCtx, KeyBlocks};
use super::hopper::{Descriptors, STAGES, StageFeed, TILE_ROWS as CONSUMER_ROWS, TmaTile};
use super::writer::FlashWriter;

/// Threads of the producer warpgroup (warpgroup 0).
const PRODUCER_THREADS: u32 = 128;

/// Registers per thread of the producer warpgroup after `setmaxnreg.dec`
/// (FlashAttention-3's with two consumer warpgroups). The three
/// warpgroups' registers, `24 * 128 + 240 * 256 = 64,512`, fit an SM's
/// 65,536.
const PRODUCER_REGS: u32 = 24;

/// Registers per thread of a consumer warpgroup after `setmaxnreg.inc`.
const CONSUMER_REGS: u32 = 240;

/// The named barrier of the consumer warpgroups (0 is the CTA's).
const CONSUMER_BARRIER: u32 = 1;

/// The named barrier of consumer warpgroup 0's turn to issue its products;
/// consumer 1's is the next one.
const TURN_BARRIER: u32 = 2;

impl AttentionDesc {
    /// The warp-specialized kernel: `wgmma` with more than one warpgroup
    /// of query rows (one consumer warpgroup per 64 rows).
    pub(super) fn warp_specialized(&self) -> bool {
        self.wgmma && self.tiles.block_m > CONSUMER_ROWS
    }

    /// Rows of each shared sub-tile of Q (one TMA box per column block):
    /// with `wgmma` every tile's column blocks are `block_n` rows apart, so
    /// a query block of more rows (128 rows and 64-key blocks, D = 256) is
    /// sub-tiles of `block_n` rows, a K stage apart; the whole block
    /// otherwise.
    pub(super) fn q_tile_rows(&self) -> u32 {
        if self.wgmma {
            self.tiles.block_m.min(self.tiles.block_n)
        } else {
            self.tiles.block_m
        }
    }

    /// Threads per CTA: the tiles' warps, and the producer warpgroup of
    /// the warp-specialized kernel.
    pub(super) fn cta_threads(&self) -> u32 {
        let producer = if self.warp_specialized() {
            PRODUCER_THREADS
        } else {
            0
        };
        self.tiles.threads() + producer
    }
}

/// The mbarriers of the pipes, in one shared array of 8-byte objects: the
/// first of each kind (a K or V kind has one per stage, [`STAGES`]).
#[derive(Clone, Copy)]
enum Bar {
    QFull = 0,
    QEmpty = 1,
    KFull = 2,
    VFull = 4,
    KEmpty = 6,
    VEmpty = 8,
}

/// mbarriers in the array ([`Bar`]: Q's two, and two per K / V stage).
const BARRIERS: u32 = 10;

/// The consumers' side of the pipes from the producer warpgroup: the
/// mbarriers and the counters that name the phase of each use.
#[derive(Clone, Copy)]
pub(in crate::templates) struct Pipes {
    /// The mbarrier array ([`Bar`], u32 shared address).
    bars: Reg,
    /// The aligned base of the shared tiles (u32).
    tiles: Reg,
    /// Work items this CTA has finished (u32): Q's phase.
    items: Reg,
    /// Key blocks of those items (u32): the K / V stage buffers' uses.
    blocks: Reg,
    /// The named barrier of this consumer's turn ([`TURN_BARRIER`] or the
    /// next, u32) and of the other's.
    turn: Reg,
    other_turn: Reg,
}

impl FlashWriter<'_> {
    /// Splits the CTA: initializes the pipes' mbarriers, then the producer
    /// warpgroup runs [`Self::produce`] and exits, and the consumers
    /// return with their side of the pipes, their threads counted from 0
    /// ([`FlashWriter::first_thread`]). `maps` are q's, k's and v's tensor
    /// maps, `k_base` and `v_base` the first K and V stages' offsets.
    pub(super) fn warp_specialize(
        &mut self,
        maps: [Reg; 3],
        batch: Reg,
        max_len: Reg,
        offsets: Reg,
        k_base: u32,
        v_base: u32,
    ) -> Pipes {
        assert_eq!(self.d.tiles.stages, STAGES, "the pipes' stages");
        let consumers = self.threads;
        let tid = self.b.special(Special::TidX);
        let smem = self.b.reg(RegClass::B32);
        self.b.push(Inst::DynSharedAddr { dst: smem });
        let tiles = self.aligned_smem(smem);
        let array = self.b.shared(Type::B64, BARRIERS);
        let bars = self.b.shared_addr(array);
        let first = self.b.setp(Cmp::Eq, Type::U32, tid, Operand::Int(0));
        self.when(first, false, |f| {
            for (bar, count) in [
                (Bar::QFull, 1),
                (Bar::QEmpty, consumers),
                (Bar::KFull, 1),
                (Bar::VFull, 1),
                (Bar::KEmpty, consumers),
                (Bar::VEmpty, consumers),
            ] {
                let stages = if matches!(bar, Bar::QFull | Bar::QEmpty) {
                    1
                } else {
                    STAGES
                };
                for s in 0..stages {
                    f.b.push(Inst::MbarrierInit {
                        addr: Address {
                            base: bars,
                            offset: i64::from(8 * (bar as u32 + s)),
                        },
                        count,
                    });
                }
            }
            f.b.push(Inst::FenceMbarrierInit);
        });
        self.b.barrier();
        let producer = self
            .b
            .setp(Cmp::Lt, Type::U32, tid, Self::imm(PRODUCER_THREADS));
        self.when(producer, false, |f| {
            f.b.push(Inst::Setmaxnreg {
                inc: false,
                count: PRODUCER_REGS,
            });
            f.when(first, false, |g| {
                g.produce(
                    maps,
                    batch,
                    max_len,
                    offsets,
                    (tiles, bars),
                    (k_base, v_base),
                )
            });
            f.b.push(Inst::Ret);
        });
        self.b.push(Inst::Setmaxnreg {
            inc: true,
            count: CONSUMER_REGS,
        });
        self.first_thread = PRODUCER_THREADS;
        // Consumer warpgroup w = tid / 128 - 1 takes turns on TURN_BARRIER + w.
        let group = self.u32_op(BinOp::Shr, tid, Operand::Int(7));
        let turn = self.u32_op(BinOp::Add, group, Self::imm(TURN_BARRIER - 1));
        let other_turn = self.u32_op(BinOp::Sub, Self::imm(2 * TURN_BARRIER + 1), turn);
        let second = self
            .b
            .setp(Cmp::Ne, Type::U32, turn, Self::imm(TURN_BARRIER));
        self.when(second, false, |f| {
            f.b.push(Inst::BarArrive {
                id: Self::imm(TURN_BARRIER),
                threads: consumers,
            })
        });
        Pipes {
            bars,
            tiles,
            items: self.b.mov(Type::U32, Operand::Int(0)),
            blocks: self.b.mov(Type::U32, Operand::Int(0)),
            turn,
            other_turn,
        }
    }

    /// After the consumers' last item: the first consumer takes the turn
    /// the second gave it last, so that no turn barrier is left with
    /// arrivals ([`Pipes`]: the second arrives once more than the first
    /// waits).
    pub(super) fn end_turns(&mut self, pipes: &Pipes) {
        let first = self
            .b
            .setp(Cmp::Eq, Type::U32, pipes.turn, Self::imm(TURN_BARRIER));
        let consumers = self.threads;
        self.when(first, false, |f| f.b.named_barrier(pipes.turn, consumers));
    }

    /// This consumer waits for its turn to issue products.
    fn take_turn(&mut self, pipes: &Pipes) {
        self.b.named_barrier(pipes.turn, self.threads);
    }

    /// This consumer has issued its products: the other's turn.
    fn pass_turn(&mut self, pipes: &Pipes) {
        self.b.push(Inst::BarArrive {
            id: Operand::Reg(pipes.other_turn),
            threads: self.threads,
        });
    }

    /// The producer (one thread): for each work item of the CTA (the
    /// consumers' sequence), Q once its buffer is free, then K and V of
    /// each key block into the stage of that use ([`Self::pipe_slot`]) once
    /// free, each as one group on the buffer's full mbarrier. `at` is the
    /// aligned tiles and the mbarrier array, `bases` the first K and V
    /// stages' offsets.
    fn produce(
        &mut self,
        maps: [Reg; 3],
        batch: Reg,
        max_len: Reg,
        offsets: Reg,
        at: (Reg, Reg),
        bases: (u32, u32),
    ) {
        let d = self.d;
        let (tiles, bars) = at;
        let (bm, bn, hd) = (d.tiles.block_m, d.tiles.block_n, d.head_dim);
        let stage_bytes = bn * d.smem_row_bytes();
        let items = self.b.mov(Type::U32, Operand::Int(0));
        let blocks = self.b.mov(Type::U32, Operand::Int(0));
        self.for_each_item(batch, max_len, offsets, bm, true, |f, w| {
            let (n, q0, past) = f.block_start(w, bm);
            f.when(past, true, |f| {
                let nkb = f.key_block_count(q0, n);
                let seq_row = f.b.cvt(Type::U32, Type::U64, w.start);
                let head = f.b.cvt(Type::U32, Type::U64, w.head);
                let head_col = f.u32_op(BinOp::Mul, head, Self::imm(hd));
                let q_parity = f.u32_op(BinOp::And, items, Operand::Int(1));
                let free = f.u32_op(BinOp::Xor, q_parity, Operand::Int(1));
                let q_empty = f.pipe_bar(bars, Bar::QEmpty, None);
                f.b.mbarrier_wait(Self::at(q_empty), free);
                let q_row = f.u32_op(BinOp::Add, seq_row, q0);
                let sub = d.q_tile_rows();
                let q_tiles: Vec<TmaTile> = (0..bm / sub)
                    .map(|t| TmaTile {
                        map: maps[0],
                        row: match t {
                            0 => q_row,
                            _ => f.u32_op(BinOp::Add, q_row, Self::imm(t * sub)),
                        },
                        dst: f.b.mov(Type::U32, Self::imm(t * sub * d.smem_row_bytes())),
                        when: None,
                    })
                    .collect();
                let q_full = f.pipe_bar(bars, Bar::QFull, None);
                f.tma_boxes(
                    q_full,
                    tiles,
                    head_col,
                    Self::imm(bm * d.smem_row_bytes()),
                    &q_tiles,
                );
                f.b.binary_to(BinOp::Add, Type::U32, items, items, Operand::Int(1));
                f.range(Type::U32, Operand::Int(0), nkb, Operand::Int(1), |f, kb| {
                    let (stage, parity) = f.pipe_slot(blocks, kb);
                    let free = f.u32_op(BinOp::Xor, parity, Operand::Int(1));
                    let row = f.mad_u32(kb, bn, seq_row);
                    let off = f.u32_op(BinOp::Mul, stage, Self::imm(stage_bytes));
                    let (k_base, v_base) = bases;
                    for (map, full, empty, base) in [
                        (maps[1], Bar::KFull, Bar::KEmpty, k_base),
                        (maps[2], Bar::VFull, Bar::VEmpty, v_base),
                    ] {
                        let empty = f.pipe_bar(bars, empty, Some(stage));
                        f.b.mbarrier_wait(Self::at(empty), free);
                        let dst = f.u32_op(BinOp::Add, off, Self::imm(base));
                        let full = f.pipe_bar(bars, full, Some(stage));
                        let tile = TmaTile {
                            map,
                            row,
                            dst,
                            when: None,
                        };
                        f.tma_boxes(full, tiles, head_col, Self::imm(stage_bytes), &[tile]);
                    }
                });
                f.b.binary_to(BinOp::Add, Type::U32, blocks, blocks, nkb);
            });
        });
    }

    /// The shared address (u32) of mbarrier `bar` of the array at `bars`,
    /// of stage `stage` (u32, 0 or 1) for the K and V kinds.
    fn pipe_bar(&mut self, bars: Reg, bar: Bar, stage: Option<Reg>) -> Reg {
        let first = self.u32_op(BinOp::Add, bars, Self::imm(8 * bar as u32));
        match stage {
            Some(s) => self.mad_u32(s, 8, first),
            None => first,
        }
    }

    /// The stage buffer (u32, 0 or 1) and phase parity (u32) of key block
    /// `kb` (u32) of an item after `blocks` key blocks of the CTA's items
    /// before it: use `i = blocks + kb` is in stage `i % 2`, in phase
    /// `i / 2` of that stage's mbarriers ([`STAGES`]).
    fn pipe_slot(&mut self, blocks: Reg, kb: Reg) -> (Reg, Reg) {
        let use_ = self.u32_op(BinOp::Add, blocks, kb);
        let stage = self.u32_op(BinOp::And, use_, Self::imm(STAGES - 1));
        let phase = self.u32_op(BinOp::Shr, use_, Self::imm(STAGES.trailing_zeros()));
        let parity = self.u32_op(BinOp::And, phase, Operand::Int(1));
        (stage, parity)
    }

    /// The consumer waits for its item's Q.
    pub(super) fn wait_q(&mut self, pipes: &Pipes) {
        let parity = self.u32_op(BinOp::And, pipes.items, Operand::Int(1));
        let full = self.pipe_bar(pipes.bars, Bar::QFull, None);
        self.b.mbarrier_wait(Self::at(full), parity);
    }

    /// The consumer warpgroups meet (their named barrier): shared writes of
    /// one are seen by the other's reads after it.
    pub(super) fn consumers_sync(&mut self) {
        self.b
            .named_barrier(Self::imm(CONSUMER_BARRIER), self.threads);
    }

    /// Waits for key block `kb`'s K or V (`full`: [`Bar::KFull`] or
    /// [`Bar::VFull`]) in its stage.
    fn wait_full(&mut self, pipes: &Pipes, full: Bar, kb: Reg) {
        let (stage, parity) = self.pipe_slot(pipes.blocks, kb);
        let bar = self.pipe_bar(pipes.bars, full, Some(stage));
        self.b.mbarrier_wait(Self::at(bar), parity);
    }

    /// This thread is done with key block `kb`'s K or V (`empty`:
    /// [`Bar::KEmpty`] or [`Bar::VEmpty`]).
    fn release(&mut self, pipes: &Pipes, empty: Bar, kb: Reg) {
        let (stage, _) = self.pipe_slot(pipes.blocks, kb);
        let bar = self.pipe_bar(pipes.bars, empty, Some(stage));
        self.b.push(Inst::MbarrierArrive {
            addr: Self::at(bar),
        });
    }

    /// The descriptors of a consumer warpgroup: the shared K and V stages,
    /// and its own 64 rows of the Q tile (rows `64 w`, `w` the consumer
    /// warpgroup: in every column block of a 128-row Q tile, or its own
    /// sub-tile of 64 rows, [`AttentionDesc::q_tile_rows`]).
    pub(super) fn consumer_descriptors(&mut self, ctx: &ItemCtx) -> Descriptors {
        let descs = self.descriptors(ctx.lanes.smem, ctx.k_base, ctx.v_base);
        let group = self.u32_op(BinOp::Shr, ctx.lanes.warp, Operand::Int(2));
        let row_bytes = if self.d.q_tile_rows() == CONSUMER_ROWS {
            self.d.smem_row_bytes()
        } else {
            self.span()
        };
        let rows = self.u32_op(BinOp::Mul, group, Self::imm(CONSUMER_ROWS * row_bytes));
        Descriptors {
            q: self.advance_by(descs.q, rows),
            ..descs
        }
    }
}

impl StageFeed for Pipes {
    fn first_stage(&self, f: &mut FlashWriter) -> Option<Reg> {
        let stage_bytes = f.d.tiles.block_n * f.d.smem_row_bytes();
        let stage = f.u32_op(BinOp::And, self.blocks, FlashWriter::imm(STAGES - 1));
        Some(f.u32_op(BinOp::Mul, stage, FlashWriter::imm(stage_bytes)))
    }

    fn wait_block(&self, f: &mut FlashWriter, kb: Reg, first: bool) {
        if first {
            f.wait_q(self);
        } else {
            let before = f.u32_op(BinOp::Sub, kb, Operand::Int(1));
            f.wait_full(self, Bar::VFull, before);
        }
        f.wait_full(self, Bar::KFull, kb);
        f.take_turn(self);
    }

    fn issued(&self, f: &mut FlashWriter, _: &ItemCtx, _: &KeyBlocks, _: Reg, _: Reg, _: Reg) {
        f.pass_turn(self);
    }

    fn scores_read(&self, f: &mut FlashWriter, kb: Reg) {
        f.release(self, Bar::KEmpty, kb);
    }

    fn values_read(&self, f: &mut FlashWriter, kb: Reg) {
        let before = f.u32_op(BinOp::Sub, kb, Operand::Int(1));
        f.release(self, Bar::VEmpty, before);
    }

    fn wait_last(&self, f: &mut FlashWriter, ctx: &ItemCtx, st: &KeyBlocks, stage: Reg) -> Reg {
        let last_kb = f.u32_op(BinOp::Sub, st.nkb, Operand::Int(1));
        f.wait_full(self, Bar::VFull, last_kb);
        let last = f.last_stage(stage);
        f.zero_rows_past_end(ctx, st.nkb, self.tiles, last);
        f.consumers_sync();
        f.take_turn(self);
        last
    }

    fn last_issued(&self, f: &mut FlashWriter) {
        f.pass_turn(self);
    }

    fn item_done(&self, f: &mut FlashWriter, st: &KeyBlocks) {
        let last_kb = f.u32_op(BinOp::Sub, st.nkb, Operand::Int(1));
        f.release(self, Bar::VEmpty, last_kb);
        let q_empty = f.pipe_bar(self.bars, Bar::QEmpty, None);
        f.b.push(Inst::MbarrierArrive {
            addr: FlashWriter::at(q_empty),
        });
        f.b.binary_to(
            BinOp::Add,
            Type::U32,
            self.items,
            self.items,
            Operand::Int(1),
        );
        f.b.binary_to(BinOp::Add, Type::U32, self.blocks, self.blocks, st.nkb);
    }
}
