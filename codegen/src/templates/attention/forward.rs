//! The forward kernel: the grid-stride loop over work items, the key loop
//! with its two-stage `cp.async` pipeline, masks, online softmax or SiLU,
//! and the epilogue that normalizes and writes `out` (and `lse`).

use crate::kernel::{
    Address, BinOp, Cmp, Guard, Inst, KernelBuilder, Operand, Reg, ShflMode, Space, TernOp, Type,
    UnOp,
};
use crate::launch::{GridRule, ParamBinding, SizeExpr};
use crate::spec::DType;
use crate::templates::{Entry, MAX_BLOCKS, Plan, store_f32};

use super::desc::{Activation, AttentionDesc, PairMask};
use super::hopper::{Tma, tile_map};
use super::hopper_ws::Pipes;
use super::mma::{AFrags, Acc};
use super::tiles::TILE_ROWS;
use super::writer::{FlashWriter, Lanes, TileLoader};

/// Parameter order of the kernel: inputs `q, k, v, offsets`, outputs
/// `out` (and `lse`), then `B`, `max_len` and the scale attribute. With
/// `wgmma`, q, k and v are passed as TMA tensor maps ([`tile_map`]: Q's
/// boxes are a query block, K's and V's a key block). Reached only through
/// [`super::lower_attention`], which bounds `H D` (32-bit row offsets).
pub(super) fn attention_kernel(desc: &AttentionDesc) -> Plan {
    let mut e = Entry::new(desc.name.clone());
    e.b = KernelBuilder::new(desc.name.clone(), desc.cta_threads());
    e.b.set_min_ctas_per_sm(1);
    let input = |e: &mut Entry, name: &str, i: usize, rows: u32| {
        if desc.wgmma {
            e.tensor_map(name, tile_map(desc, i, rows))
        } else {
            e.buffer(name, ParamBinding::Input(i))
        }
    };
    let bn = desc.tiles.block_n;
    let q_ptr = input(&mut e, "q", 0, desc.q_tile_rows());
    let k_ptr = input(&mut e, "k", 1, bn);
    let v_ptr = input(&mut e, "v", 2, bn);
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

/// The global buffers of the forward kernel (addresses; with `wgmma`, q, k
/// and v are the generic addresses of their tensor maps).
struct Pointers {
    q: Reg,
    k: Reg,
    v: Reg,
    offsets: Reg,
    out: Reg,
    lse: Option<Reg>,
}

impl<'a> FlashWriter<'a> {
    /// The whole body: lane constants, the activation's constants, then the
    /// grid-stride loop over the work items.
    fn write(mut self, p: &Pointers, batch: Reg, max_len: Reg, scale: Option<Reg>) {
        let d = self.d;
        let (bm, bn) = (d.tiles.block_m, d.tiles.block_n);
        // Shared layout: Q [BM rows], the K stages [BN rows each], the V stages.
        let (row_bytes, q_rows) = (d.smem_row_bytes(), d.smem_q_rows());
        let k_base = q_rows * row_bytes;
        let v_base = (q_rows + d.tiles.stages * bn) * row_bytes;
        // Warp-specialized: the producer warpgroup copies and returns here;
        // what follows is the consumers'.
        let pipes = d.warp_specialized().then(|| {
            let maps = [p.q, p.k, p.v];
            self.warp_specialize(maps, batch, max_len, p.offsets, k_base, v_base)
        });
        let lanes = self.lanes();
        let loader = self.tile_loader(lanes.tid, lanes.smem);
        let loader = if d.wgmma {
            self.swizzled_loader(&loader, &lanes)
        } else {
            loader
        };

        // Constants of the activation. Softmax works in the log2 domain
        // with `c = scale * log2 e` folded once: `p = 2^(s c - m)` is one
        // `fma` and one `ex2` per score, `m` the running max of `s c`. The
        // raw scores' max times `c` is that max only for `c >= 0`, so with a
        // run-time scale the kernel takes `|c|` and, where `c < 0`, negates
        // Q once per item (exact), which makes the products `-s` and
        // `(-s) |c| = s c`. Where `c = 0` it multiplies Q by 0 instead (NaN
        // and infinities still give NaN) and takes the factor 1: every score
        // is 0 as `0 * s` is, and a masked one stays `-inf` (not `(-inf) * 0`).
        let log2e = std::f32::consts::LOG2_E;
        let (score_factor, q_sign) = match (scale, d.activation) {
            (Some(s), Activation::Softmax) => {
                let c = self.b.binary(BinOp::Mul, Type::F32, s, Operand::F32(log2e));
                let negative = self.b.setp(Cmp::Lt, Type::F32, c, Operand::F32(0.0));
                let zero = self.b.setp(Cmp::Eq, Type::F32, c, Operand::F32(0.0));
                let c_abs = self.b.unary(UnOp::Abs, Type::F32, c);
                let factor = self.b.selp(Type::F32, Operand::F32(1.0), c_abs, zero);
                let apply = self.b.setp(Cmp::Le, Type::F32, c, Operand::F32(0.0));
                let sign = self
                    .b
                    .selp(Type::F32, Operand::F32(-1.0), Operand::F32(0.0), negative);
                (factor, Some(QSign { apply, sign }))
            }
            (None, Activation::Softmax) => (self.b.const_f32(log2e), None),
            (Some(s), Activation::Silu) => (s, None),
            (None, Activation::Silu) => (self.b.const_f32(1.0), None),
        };
        let inv_max_len = self.inv_max_len(max_len);
        let tma = (d.wgmma && pipes.is_none()).then(|| self.tma([p.q, p.k, p.v], &lanes));

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
                q_sign,
                inv_max_len,
                tma,
                pipes,
            };
            me.when(past, true, |f| {
                if let Some(tma) = &tma {
                    f.tma_item(tma, w);
                }
                f.item(p, &ctx)
            });
        });
        if let Some(pipes) = &pipes {
            self.end_turns(pipes);
        }
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

    /// Issues the copies of key block `block` (u32) of K or V (`source` from
    /// [`Self::tile_source`]) into the stage at `stage_off` bytes past the
    /// first (if the block is one of the `nkb` to visit), then commits a
    /// group (always, so that every thread counts the same groups).
    fn load_stage(
        &mut self,
        ctx: &ItemCtx,
        source: Reg,
        base: u32,
        block: Reg,
        nkb: Reg,
        stage_off: Reg,
    ) {
        let bn = self.d.tiles.block_n;
        let has = self.b.setp(Cmp::Lt, Type::U32, block, nkb);
        self.when(has, false, |g| {
            let first = g.u32_op(BinOp::Mul, block, Self::imm(bn));
            let loader = g.shifted_loader(&ctx.loader, stage_off);
            g.load_tile(&loader, ctx.n, source, first, bn, base);
        });
        self.b.push(Inst::CpAsyncCommit);
    }

    /// The `cp.async` pipeline's prologue (the `mma.sync` kernel): K and V
    /// of each key block are separate commit groups (K first), `stages - 1`
    /// blocks ahead. Q and K and V of block 0 go in the first groups;
    /// blocks 1 .. stages - 2 follow.
    fn cp_async_prologue(&mut self, p: &Pointers, ctx: &ItemCtx, nkb: Reg) -> CpAsyncPipe {
        let d = self.d;
        let (bm, bn, stages) = (d.tiles.block_m, d.tiles.block_n, d.tiles.stages);
        let stage_bytes = bn * d.smem_row_bytes();
        let zero_u = self.b.mov(Type::U32, Operand::Int(0));
        let q_src = self.tile_source(&ctx.loader, p.q, ctx.head_off);
        self.load_tile(&ctx.loader, ctx.n, q_src, ctx.q0, bm, 0);
        // K's and V's sources, once per item.
        let k_src = self.tile_source(&ctx.loader, p.k, ctx.head_off);
        let v_src = self.tile_source(&ctx.loader, p.v, ctx.head_off);
        self.load_stage(ctx, k_src, ctx.k_base, zero_u, nkb, zero_u);
        self.load_stage(ctx, v_src, ctx.v_base, zero_u, nkb, zero_u);
        for j in 1..stages - 1 {
            let block = self.b.mov(Type::U32, Self::imm(j));
            let off = self.b.mov(Type::U32, Self::imm(j * stage_bytes));
            self.load_stage(ctx, k_src, ctx.k_base, block, nkb, off);
            self.load_stage(ctx, v_src, ctx.v_base, block, nkb, off);
        }
        CpAsyncPipe {
            k_src,
            v_src,
            k_landed: 2 * stages - 3,
            v_landed: 2 * stages - 2,
        }
    }

    /// The key blocks the item of the query block from row `q0` (u32)
    /// of a sequence of `n` rows visits (u32): all of the sequence, or up
    /// to the end of the query block.
    pub(super) fn key_block_count(&mut self, q0: Reg, n: Reg) -> Reg {
        let d = self.d;
        let (bm, bn) = (d.tiles.block_m, d.tiles.block_n);
        let kv_end = if d.keys_end_at_block() {
            let q_end = self.u32_op(BinOp::Add, q0, Self::imm(bm));
            self.u32_op(BinOp::Min, q_end, n)
        } else {
            n
        };
        let kv_pad = self.u32_op(BinOp::Add, kv_end, Self::imm(bn - 1));
        self.u32_op(BinOp::Div, kv_pad, Self::imm(bn))
    }

    /// One work item: a query block of one sequence and head.
    fn item(&mut self, p: &Pointers, ctx: &ItemCtx) {
        let d = self.d;
        let (bm, bn, hd) = (d.tiles.block_m, d.tiles.block_n, d.head_dim);
        let nkb = self.key_block_count(ctx.q0, ctx.n);

        let loads = match (ctx.tma, ctx.pipes) {
            (Some(tma), _) => {
                self.tma_prologue(&tma, ctx);
                Loads::Tma(tma)
            }
            (None, Some(pipes)) => Loads::Pipes(pipes),
            (None, None) => Loads::CpAsync(self.cp_async_prologue(p, ctx, nkb)),
        };

        // Q times the sign of a non-positive scale, before the accumulators
        // are live.
        if let Some(q_sign) = &ctx.q_sign {
            self.when(q_sign.apply, false, |g| {
                match &loads {
                    Loads::CpAsync(pipe) => g.b.push(Inst::CpAsyncWait { n: pipe.k_landed }),
                    Loads::Tma(tma) => g.tma_wait(tma),
                    Loads::Pipes(pipes) => g.wait_q(pipes),
                }
                // Q's sub-tiles ([`AttentionDesc::q_tile_rows`]), a K stage apart.
                let rows = d.q_tile_rows();
                for t in 0..bm / rows {
                    let at = t * rows * d.smem_row_bytes();
                    g.scale_own_rows(&ctx.loader, rows, at, q_sign.sign);
                }
                if d.wgmma {
                    // wgmma reads Q through the async proxy.
                    g.b.push(Inst::FenceProxyAsyncShared);
                }
                if let Loads::Pipes(_) = &loads {
                    g.consumers_sync();
                }
            });
        }

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
        // One row tile and D <= 128: Q's A fragments (D / 4 registers) stay
        // in registers for the whole item instead of being re-read by
        // `ldmatrix` for every key block (8 of the 72 `ldmatrix.x4` per
        // block at D = 128). Two row tiles (D = 64, 229 registers) or
        // D = 256 (128 accumulator registers for O) have no room for them.
        // With wgmma, Q is read through its descriptor.
        let blocks = KeyBlocks {
            nkb,
            s: &s,
            o: &o,
            m: &m,
            l: &l,
            rows,
        };
        match &loads {
            Loads::Tma(tma) => {
                let descs = self.descriptors(ctx.lanes.smem, ctx.k_base, ctx.v_base);
                self.wgmma_key_loop(ctx, &blocks, &descs, tma);
            }
            Loads::Pipes(pipes) => {
                let descs = self.consumer_descriptors(ctx);
                self.wgmma_key_loop(ctx, &blocks, &descs, pipes);
            }
            Loads::CpAsync(pipe) => {
                let q_regs = (row_tiles == 1 && hd <= 128).then(|| {
                    self.b.push(Inst::CpAsyncWait { n: pipe.k_landed });
                    self.b.barrier();
                    self.load_a_frags(ctx.lanes.a, 0, 0, 1)
                });
                self.mma_key_loop(ctx, &blocks, q_regs.as_deref(), pipe);
            }
        }
        // The next item of this CTA overwrites Q and stage 0: all reads done
        // (the Hopper loop's last barrier follows every read of Q and K, and
        // the next item copies V only after its own first barrier).
        if !d.wgmma {
            self.b.push(Inst::CpAsyncWait { n: 0 });
            self.b.barrier();
        }
        for t in 0..row_tiles {
            let tile_rows = if t == 0 {
                rows
            } else {
                rows.map(|r| self.u32_op(BinOp::Add, r, Self::imm(t as u32 * tile_step)))
            };
            self.epilogue(p, ctx, &o[t], m[t], l[t], tile_rows);
        }
    }

    /// The key loop of the `mma.sync` kernel: `stages` `cp.async` stages
    /// (`pipe`), both products on `mma.sync` (Q's A fragments from `q_regs`
    /// or `ldmatrix`).
    fn mma_key_loop(
        &mut self,
        ctx: &ItemCtx,
        kb_state: &KeyBlocks,
        q_regs: Option<&[Vec<[Reg; 4]>]>,
        pipe: &CpAsyncPipe,
    ) {
        let d = self.d;
        let (bn, stages) = (d.tiles.block_n, d.tiles.stages);
        let stage_bytes = bn * d.smem_row_bytes();
        let stride = self.stride;
        let tile_step = TILE_ROWS * self.threads / 32;
        let s_tiles = (bn / 8) as usize;
        let KeyBlocks { nkb, s, o, .. } = *kb_state;
        let CpAsyncPipe {
            k_src,
            v_src,
            k_landed,
            v_landed,
        } = *pipe;
        let o_ref: Vec<&[Acc]> = o.iter().map(Vec::as_slice).collect();
        let s_ref: Vec<&[Acc]> = s.iter().map(Vec::as_slice).collect();

        let ab = d.mma_type();
        // Byte offsets (past the first stage) of the stage block kb is read
        // from and of the stage block kb + stages - 1 is copied into (the
        // stage of block kb - 1).
        let read_off = self.b.mov(Type::U32, Operand::Int(0));
        let load_off = self.b.mov(Type::U32, Self::imm((stages - 1) * stage_bytes));
        self.key_block_loops(ctx, 0, nkb, |f, kb, checks| {
            // K of block kb has landed (this thread's copies, then
            // everyone's), and every warp is done with block kb - 1, whose
            // stage then takes block kb + stages - 1.
            f.b.push(Inst::CpAsyncWait { n: k_landed });
            f.b.barrier();
            let ahead = f.u32_op(BinOp::Add, kb, Self::imm(stages - 1));
            f.load_stage(ctx, k_src, ctx.k_base, ahead, nkb, load_off);
            f.load_stage(ctx, v_src, ctx.v_base, ahead, nkb, load_off);
            // Where this block's K and V are read: the `ldmatrix` lane addresses.
            let k_lane = f.u32_op(BinOp::Add, ctx.lanes.b_rows, read_off);
            let v_lane = f.u32_op(BinOp::Add, ctx.lanes.b_trans, read_off);
            // The next block's stages.
            f.b.mov_to(Type::U32, load_off, read_off);
            let last = f.b.setp(
                Cmp::Eq,
                Type::U32,
                read_off,
                Self::imm((stages - 1) * stage_bytes),
            );
            let next = f.u32_op(BinOp::Add, read_off, Self::imm(stage_bytes));
            f.b.selp_to(Type::U32, read_off, Operand::Int(0), next, last);

            // S = Q K^T.
            let q_frags = match q_regs {
                Some(frags) => AFrags::Regs(frags),
                None => AFrags::Shared {
                    lane: ctx.lanes.a,
                    base: 0,
                    tile_step: tile_step * stride,
                },
            };
            f.product_rows(&s_ref, q_frags, k_lane, ctx.k_base, ab);
            f.probabilities(ctx, kb_state, kb, true, checks);

            // V of block kb has landed, for everyone.
            f.b.push(Inst::CpAsyncWait { n: v_landed });
            f.b.barrier();
            // O += P V, P rounded to the input dtype in registers one
            // k-step (16 keys) at a time.
            for kk in 0..s_tiles / 2 {
                let pa: Vec<Vec<[Reg; 4]>> = s
                    .iter()
                    .map(|st| f.pack_a(&st[2 * kk..2 * kk + 2]))
                    .collect();
                let pa_ref: Vec<&[[Reg; 4]]> = pa.iter().map(Vec::as_slice).collect();
                let v_base = ctx.v_base + kk as u32 * 16 * stride;
                f.accumulate_rows(&o_ref, &pa_ref, v_lane, v_base, ab);
            }
        });
    }

    /// Scores of key block `kb` (u32) to probabilities in place: the masks
    /// of a boundary block (as far as `checks` says one can be), then the
    /// online softmax (or SiLU) and the masks on probabilities. With
    /// `rescale` the softmax rescales the output accumulators at once; else
    /// it returns each row tile's factors for [`Self::rescale`] (empty for
    /// SiLU).
    pub(super) fn probabilities(
        &mut self,
        ctx: &ItemCtx,
        st: &KeyBlocks,
        kb: Reg,
        rescale: bool,
        checks: BlockChecks,
    ) -> Vec<[Reg; 2]> {
        let d = self.d;
        let bn = d.tiles.block_n;
        let softmax = d.activation == Activation::Softmax;
        let (s, rows) = (st.s, st.rows);
        let neg_inf = Operand::F32(f32::NEG_INFINITY);
        // Boundary blocks: does any pair of this block fall outside a mask?
        let key_first = self.u32_op(BinOp::Mul, kb, Self::imm(bn));
        let key_end = self.u32_op(BinOp::Add, key_first, Self::imm(bn));
        let boundary = self.boundary(ctx, key_first, key_end, checks);
        let length_then_score: Vec<Option<PairMask>> = if softmax {
            vec![None, d.score_mask]
        } else {
            Vec::new()
        };
        let mut alphas = Vec::new();
        if softmax {
            if let Some(boundary) = boundary {
                self.when(boundary, false, |g| {
                    g.mask_block(ctx, s, &length_then_score, key_first, rows, neg_inf);
                });
            }
            for (t, acc) in s.iter().enumerate() {
                let o = rescale.then_some(st.o[t].as_slice());
                let alpha = self.online_softmax(acc, o, st.m[t], st.l[t], ctx.score_factor);
                alphas.push(alpha);
            }
        } else {
            for acc in s {
                let scale = d.scale_attr.as_ref().map(|_| ctx.score_factor);
                self.silu(acc, scale, ctx.inv_max_len);
            }
        }
        let mut post: Vec<Option<PairMask>> = Vec::new();
        if !softmax {
            post.push(None);
        }
        if let Some(pm) = d.prob_mask {
            post.push(Some(pm));
        }
        if let (Some(boundary), false) = (boundary, post.is_empty()) {
            self.when(boundary, false, |g| {
                g.mask_block(ctx, s, &post, key_first, rows, Operand::F32(0.0));
            });
        }
        if rescale { Vec::new() } else { alphas }
    }

    /// A predicate: some pair of key block `[key_first, key_end)` is masked
    /// for some row of the query block, among the tests `checks` leaves;
    /// `None` when none is left (an interior block with no mask that cuts
    /// leading blocks: no mask code at all).
    fn boundary(
        &mut self,
        ctx: &ItemCtx,
        key_first: Reg,
        key_end: Reg,
        checks: BlockChecks,
    ) -> Option<Reg> {
        let d = self.d;
        let all = checks == BlockChecks::All;
        let masks: Vec<PairMask> = [d.score_mask, d.prob_mask]
            .into_iter()
            .flatten()
            .filter(|&mask| all || mask == PairMask::KeyNotBeforeQuery)
            .collect();
        if !all && masks.is_empty() {
            return None;
        }
        let flag = self.b.mov(Type::U32, Operand::Int(0));
        if all {
            let past_len = self.b.setp(Cmp::Gt, Type::U32, key_end, ctx.n);
            self.b
                .selp_to(Type::U32, flag, Operand::Int(1), flag, past_len);
        }
        for mask in masks {
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
            self.b.selp_to(Type::U32, flag, Operand::Int(1), flag, hit);
        }
        Some(self.b.setp(Cmp::Ne, Type::U32, flag, Operand::Int(0)))
    }

    /// The end of the item's interior key blocks (u32): every key of a
    /// block `kb < end` is below the sequence length `n` and, with a mask
    /// that keeps keys up to the query (causal), at most the block's first
    /// query row, so the length and causal masks keep all of its pairs.
    fn interior_end(&mut self, ctx: &ItemCtx) -> Reg {
        let bn = self.d.tiles.block_n;
        let full = self.u32_op(BinOp::Div, ctx.n, Self::imm(bn));
        if !self.d.keys_end_at_block() {
            return full;
        }
        let q1 = self.u32_op(BinOp::Add, ctx.q0, Operand::Int(1));
        let before = self.u32_op(BinOp::Div, q1, Self::imm(bn));
        self.u32_op(BinOp::Min, full, before)
    }

    /// `body(kb, checks)` for the key blocks `kb` in `[start, nkb)` (u32),
    /// as two loops: the interior blocks ([`Self::interior_end`]) with
    /// [`BlockChecks::Leading`], then the rest with [`BlockChecks::All`].
    /// The first is the steady state of long sequences, and it carries no
    /// code for the length and causal masks (Triton's causal loop is split
    /// the same way); only a sequence's last block and the diagonal blocks
    /// run the second.
    pub(super) fn key_block_loops(
        &mut self,
        ctx: &ItemCtx,
        start: u32,
        nkb: Reg,
        mut body: impl FnMut(&mut Self, Reg, BlockChecks),
    ) {
        let end = self.interior_end(ctx);
        let split = if start == 0 {
            end
        } else {
            self.u32_op(BinOp::Max, end, Self::imm(start))
        };
        self.range(
            Type::U32,
            Self::imm(start),
            split,
            Operand::Int(1),
            |f, kb| {
                body(f, kb, BlockChecks::Leading);
            },
        );
        self.range(Type::U32, split, nkb, Operand::Int(1), |f, kb| {
            body(f, kb, BlockChecks::All);
        });
    }

    /// [`Self::apply_masks`] for every row tile of `s` (tile `t` is
    /// `16 t` warps' rows past tile 0, whose rows of this thread are
    /// `rows`) in the key block starting at `key_first` (u32). Boundary
    /// blocks only: interior blocks compute none of this.
    fn mask_block(
        &mut self,
        ctx: &ItemCtx,
        s: &[Vec<Acc>],
        masks: &[Option<PairMask>],
        key_first: Reg,
        rows: [Reg; 2],
        fill: Operand,
    ) {
        let tile_step = TILE_ROWS * self.threads / 32;
        let key0 = self.mad_u32(ctx.lanes.quad, 2, key_first);
        let key_room = self.b.binary(BinOp::Sub, Type::S32, ctx.n, key0);
        let room0 = rows.map(|r| self.b.binary(BinOp::Sub, Type::S32, r, key0));
        for (t, st) in s.iter().enumerate() {
            let room = if t == 0 {
                room0
            } else {
                room0.map(|r| self.u32_op(BinOp::Add, r, Self::imm(t as u32 * tile_step)))
            };
            self.apply_masks(st, masks, key_room, room, fill);
        }
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
                    self.b.selp_to(Type::F32, r, r, fill, keep);
                }
            }
        }
    }

    /// Online softmax of one block: raw scores to probabilities in place,
    /// `p = 2^(s c - m)` with `m` the running max of `s c` (log2 domain;
    /// `c > 0`, so that `max(s) c = max(s c)`), the per-thread partial sums
    /// `l` updated and the output accumulator `o` (if given) rescaled.
    /// Returns the rescale factors of rows g and g + 8.
    fn online_softmax(
        &mut self,
        s: &[Acc],
        o: Option<&[Acc]>,
        m: [Reg; 2],
        l: [Reg; 2],
        c: Reg,
    ) -> [Reg; 2] {
        let mut alphas = [m[0]; 2];
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
            let block_max = self.b.binary(BinOp::Mul, Type::F32, mx, c);
            let m_new = self.b.binary(BinOp::Max, Type::F32, m[half], block_max);
            // A row with no allowed key yet keeps m = -inf; subtract 0 instead.
            let none = self
                .b
                .setp(Cmp::Eq, Type::F32, m_new, Operand::F32(f32::NEG_INFINITY));
            let m_use = self.b.selp(Type::F32, Operand::F32(0.0), m_new, none);
            let diff = self.b.binary(BinOp::Sub, Type::F32, m[half], m_use);
            let alpha = self.b.unary(UnOp::Ex2Approx, Type::F32, diff);
            self.b.mov_to(Type::F32, m[half], m_new);
            let neg_m = self.b.unary(UnOp::Neg, Type::F32, m_use);
            for acc in s {
                for &r in &acc[2 * half..2 * half + 2] {
                    self.b.ternary_to(TernOp::Fma, Type::F32, r, r, c, neg_m);
                    self.b.unary_to(UnOp::Ex2Approx, Type::F32, r, r);
                }
            }
            let sum = self.b.const_f32(0.0);
            for acc in s {
                for &r in &acc[2 * half..2 * half + 2] {
                    self.f32_to(BinOp::Add, sum, sum, r);
                }
            }
            self.b
                .ternary_to(TernOp::Fma, Type::F32, l[half], l[half], alpha, sum);
            if let Some(o) = o {
                self.rescale_half(o, half, alpha);
            }
            alphas[half] = alpha;
        }
        alphas
    }

    /// Rows `g` (`half` 0) or `g + 8` (1) of `o` times `alpha`.
    fn rescale_half(&mut self, o: &[Acc], half: usize, alpha: Reg) {
        for acc in o {
            for &r in &acc[2 * half..2 * half + 2] {
                self.f32_to(BinOp::Mul, r, r, alpha);
            }
        }
    }

    /// `o` times the factors `alpha` of [`Self::online_softmax`].
    pub(super) fn rescale(&mut self, o: &[Acc], alpha: [Reg; 2]) {
        for (half, a) in alpha.into_iter().enumerate() {
            self.rescale_half(o, half, a);
        }
    }

    /// `p = silu(s scale) [/ max_len]` in place: `x / (1 + 2^(-x log2 e))`.
    fn silu(&mut self, s: &[Acc], scale: Option<Reg>, inv_max_len: Option<Reg>) {
        for acc in s {
            for &r in acc {
                if let Some(k) = scale {
                    self.f32_to(BinOp::Mul, r, r, k);
                }
                let sig = self.sigmoid(r);
                self.f32_to(BinOp::Mul, r, r, sig);
                if let Some(k) = inv_max_len {
                    self.f32_to(BinOp::Mul, r, r, k);
                }
            }
        }
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
}

/// The key blocks of one work item and its per-row-tile state
/// (`[row tile]`): what the key loops read and update.
#[derive(Clone, Copy)]
pub(super) struct KeyBlocks<'r> {
    /// Key blocks to visit (u32).
    pub(super) nkb: Reg,
    /// Scores / probabilities and output accumulators.
    pub(super) s: &'r [Vec<Acc>],
    pub(super) o: &'r [Vec<Acc>],
    /// Running max and partial sums of rows g and g + 8.
    pub(super) m: &'r [[Reg; 2]],
    pub(super) l: &'r [[Reg; 2]],
    /// This thread's rows of row tile 0 within the sequence (u32).
    pub(super) rows: [Reg; 2],
}

/// How K and V (and Q) reach shared memory.
enum Loads {
    /// `cp.async` by every thread (the `mma.sync` kernel).
    CpAsync(CpAsyncPipe),
    /// TMA copies waited for on an mbarrier (the `wgmma` kernel).
    Tma(Tma),
    /// The producer warpgroup's TMA copies, in full / empty mbarrier
    /// pipes (the warp-specialized `wgmma` kernel).
    Pipes(Pipes),
}

/// The `cp.async` pipeline of one work item.
#[derive(Clone, Copy)]
struct CpAsyncPipe {
    /// K's and V's sources ([`FlashWriter::tile_source`]).
    k_src: Reg,
    v_src: Reg,
    /// The commit groups a thread may leave pending before reading K (and
    /// Q) and V of a block.
    k_landed: u32,
    v_landed: u32,
}

/// The boundary tests a key block still needs ([`FlashWriter::probabilities`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum BlockChecks {
    /// Every mask may cut the block.
    All,
    /// An interior block ([`FlashWriter::key_block_loops`]): only masks
    /// that cut leading blocks (keys from the query on) may.
    Leading,
}

/// Registers of one work item shared by its phases.
pub(super) struct ItemCtx {
    pub(super) lanes: Lanes,
    /// `n_b` (u32).
    pub(super) n: Reg,
    /// First query row of the block (u32).
    pub(super) q0: Reg,
    /// Byte offset of (row `offsets[b]`, head `h`) in q / k / v / out (u64).
    head_off: Reg,
    /// `offsets[b] * H + h` (u64): the lse index of row 0.
    row_head: Reg,
    loader: TileLoader,
    /// Shared byte offsets of the first K and V stages.
    pub(super) k_base: u32,
    pub(super) v_base: u32,
    /// Softmax: `|scale| log2 e` (`log2 e` without a scale); SiLU: the
    /// scale (1 without one, then unused).
    score_factor: Reg,
    /// Softmax with a run-time scale: what Q is multiplied by.
    q_sign: Option<QSign>,
    inv_max_len: Option<Reg>,
    /// The `wgmma` kernel's TMA copies (pointed at this item).
    tma: Option<Tma>,
    /// The warp-specialized kernel's pipes from the producer warpgroup.
    pipes: Option<Pipes>,
}

/// Softmax with a run-time scale `c` (times `log2 e`): Q is multiplied by
/// `sign` (-1 for `c < 0`, 0 for `c = 0`) where `apply` (`c <= 0`) holds.
struct QSign {
    apply: Reg,
    sign: Reg,
}
