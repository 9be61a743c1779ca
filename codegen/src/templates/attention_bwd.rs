//! Backward of the fused jagged flash attention (FlashAttention-2 style),
//! on tensor cores, as three kernels:
//!
//! 1. `<name>_pre` (a CTA per sequence): `delta_i = rowsum(dout_i * out_i)`
//!    (softmax), zeroes the f32 `dq` accumulator, writes the zero rows
//!    `n_b <= i < L_b` of `dk` and `dv`;
//! 2. `<name>` (a CTA per (key block of 64, sequence, head), 4 warps of 16
//!    keys): copies the block's K and V once, then loops over the query
//!    blocks that see its keys ([`bwd_query_block`] rows), pipelined over
//!    two shared stages: the `cp.async` copies of block i + 1 (its Q and
//!    dO rows and, softmax, per query its `lse` and `delta`) are in flight
//!    while block i computes. The thread that copied a query's `lse` and
//!    `delta` scales them in place to `-lse log2 e` and `-delta scale` once
//!    they landed, so P is one FFMA and an EX2 per score and dS one FFMA
//!    and an FMUL. Per block it recomputes `S^T` and P (softmax from `lse`,
//!    SiLU from the scores) in registers and accumulates `dv += P^T dout`
//!    and `dk += dS^T q` in registers; `dS^T` goes through shared memory to
//!    `dq += dS k`, added to the f32 accumulator with atomics (each warp a
//!    quarter of the columns; at D = 32 a quarter of the query rows). Two
//!    barriers per query block: once its copies landed and its `lse` /
//!    `delta` are scaled, and once `dS^T` is written; one more per item
//!    (the next item's K and V overwrite what the last `dq` update read);
//! 3. `<name>_post`: the accumulator to `dq` in the input dtype.
//!
//! For D = 256 the main kernel makes two passes over the query blocks per
//! key block, each owning half of the `dk`, `dv` and `dq` columns (see
//! `dk_passes`): S and dP are recomputed over all of D in both.
//!
//! On sm_90a the main kernel is `attention::hopper_bwd`'s instead (every
//! product on `wgmma.mma_async`, one warpgroup per 64 keys, query blocks of
//! 64, the same passes and the same staging of `lse` / `delta`); it shares
//! the `_pre` and `_post` kernels, the work items and their K / V copies,
//! the accumulators, P, dS, the masks, the `dq` atomics and the `dk` / `dv`
//! stores with this one.
//!
//! With `s = scale q.k`: softmax `dS = P (dP - delta)`, SiLU (`p = silu(s) /
//! max_len`) `dS = dP silu'(s) / max_len` with `silu'(s) = sig (1 + s (1 -
//! sig))`, where `dP = dout v^T`; then `dq = scale dS k`, `dk = scale dS^T q`.

use crate::kernel::{
    Address, AtomOp, BinOp, Cmp, Inst, KernelBuilder, Operand, Reg, RegClass, Space, Special,
    TernOp, Type, UnOp,
};
use crate::launch::{GridRule, ParamBinding, SizeExpr};
use crate::spec::DType;

use super::attention::{
    ATTENTION_THREADS, Acc, Activation, AttentionDesc, FlashWriter, Lanes, PairMask, TileLoader,
    sequence_bounds, wgmma_backward_shared_bytes,
};
use super::{Entry, MAX_BLOCKS, Plan, load_f32, pack_f32, store_f32};

/// Keys per CTA of the main backward kernel (4 warps x 16).
pub const BWD_KEYS: u32 = 64;

/// Passes of the main backward kernel over the query blocks of a key block:
/// 2 for D = 256 (each accumulates dk / dv for half of the columns, so the
/// two accumulators take 128 registers per thread as for D = 128), else 1.
/// Each pass recomputes S and dP over all of D.
pub(in crate::templates) fn dk_passes(head_dim: u32) -> u32 {
    if head_dim > 128 { 2 } else { 1 }
}

/// `.minnctapersm` of either main backward kernel: 3 at D = 32, where the
/// `mma.sync` loop needs about 170 registers (3 CTAs of 128 threads fit
/// 168 each, 2 would be left at 169 and above) and the sm_90a one about
/// 150 to 160, else 1 (the D >= 64 kernels use 182 to 255).
fn bwd_min_ctas(head_dim: u32) -> u32 {
    if head_dim <= 32 { 3 } else { 1 }
}

/// Query rows per step of the `mma.sync` main backward kernel: 64, or 32
/// for D >= 128 (the dk and dv accumulators of a pass take 128 registers
/// per thread). The sm_90a kernel (`hopper_bwd`) steps 64 at every D.
pub fn bwd_query_block(head_dim: u32) -> u32 {
    if head_dim >= 128 { 32 } else { 64 }
}

/// The three backward kernels. Inputs: softmax `q, k, v, out, dout, lse,
/// offsets`; SiLU `q, k, v, dout, offsets`. Outputs `dq, dk, dv`. Scratch 0:
/// the f32 dq accumulator `[T, H, D]`; scratch 1: f32 `delta [T, H]`.
pub fn backward_kernels(desc: &AttentionDesc) -> Vec<Plan> {
    let softmax = desc.activation == Activation::Softmax;
    let inputs = if softmax {
        BwdInputs {
            q: 0,
            k: 1,
            v: 2,
            out: Some(3),
            dout: 4,
            lse: Some(5),
            offsets: 6,
        }
    } else {
        BwdInputs {
            q: 0,
            k: 1,
            v: 2,
            out: None,
            dout: 3,
            lse: None,
            offsets: 4,
        }
    };
    vec![
        pre_kernel(desc, &inputs),
        main_kernel(desc, &inputs),
        post_kernel(desc),
    ]
}

/// Input positions of the backward operands.
struct BwdInputs {
    q: usize,
    k: usize,
    v: usize,
    out: Option<usize>,
    dout: usize,
    lse: Option<usize>,
    offsets: usize,
}

/// Bytes of the dynamic shared memory of the main kernel.
pub fn bwd_shared_bytes(desc: &AttentionDesc) -> u32 {
    if desc.wgmma {
        wgmma_backward_shared_bytes(desc)
    } else {
        BwdLayout::new(desc).total
    }
}

/// Shared layout of the main kernel (byte offsets): K and V of the key
/// block, two stages of a query block (the block being computed and the
/// next one in flight), then `dS^T`. The offsets of `q`, `dout`, `lse` and
/// `delta` are those of stage 0; stage 1 is `stage` bytes further.
struct BwdLayout {
    bmq: u32,
    k: u32,
    v: u32,
    q: u32,
    dout: u32,
    /// Per-query `lse` (softmax), scaled in place to `-lse log2 e`
    /// ([`FlashWriter::bwd_scale_stats`]).
    lse: u32,
    /// Per-query `delta` (softmax), scaled in place to `-delta scale`.
    delta: u32,
    /// Bytes of one query stage (Q, dO, lse, delta).
    stage: u32,
    ds: u32,
    ds_stride: u32,
    total: u32,
}

impl BwdLayout {
    fn new(desc: &AttentionDesc) -> Self {
        let stride = desc.head_dim * 2 + 16;
        let bmq = bwd_query_block(desc.head_dim);
        let k = 0;
        let v = BWD_KEYS * stride;
        let q = 2 * BWD_KEYS * stride;
        let dout = q + bmq * stride;
        let lse = dout + bmq * stride;
        let delta = lse + bmq * 4;
        let stage = delta + bmq * 4 - q;
        let ds = q + 2 * stage;
        let ds_stride = bmq * 2 + 16;
        BwdLayout {
            bmq,
            k,
            v,
            q,
            dout,
            lse,
            delta,
            stage,
            ds,
            ds_stride,
            total: ds + BWD_KEYS * ds_stride,
        }
    }
}

fn items_per_sequence(desc: &AttentionDesc) -> SizeExpr {
    SizeExpr::Batch * SizeExpr::Const(u64::from(desc.heads))
}

fn pre_kernel(desc: &AttentionDesc, inputs: &BwdInputs) -> Plan {
    let name = format!("{}_pre", desc.name);
    let mut e = Entry::new(name.clone());
    e.b = KernelBuilder::new(name, ATTENTION_THREADS);
    let out = inputs.out.map(|i| e.buffer("out", ParamBinding::Input(i)));
    let dout = inputs
        .out
        .map(|_| e.buffer("dout", ParamBinding::Input(inputs.dout)));
    let offsets = e.buffer("offsets", ParamBinding::Input(inputs.offsets));
    let dk = e.buffer("dk", ParamBinding::Output(1));
    let dv = e.buffer("dv", ParamBinding::Output(2));
    let dq_acc = e.buffer("dq_acc", ParamBinding::Scratch(0));
    let delta = e.buffer("delta", ParamBinding::Scratch(1));
    let batch = e.size("batch", SizeExpr::Batch);
    let max_len = e.size("max_len", SizeExpr::MaxLen);
    let (heads, hd) = (i64::from(desc.heads), u64::from(desc.head_dim));
    let dtype = desc.dtype;
    let index = desc.index;
    let b = &mut e.b;
    let tid = b.special(Special::TidX);
    let tid64 = b.cvt(Type::U64, Type::U32, tid);
    let (first, step) = b.global_block_index();
    let zero = b.mov(Type::B32, Operand::Int(0));
    let zero_f = b.const_f32(0.0);
    b.for_range_u64(first, batch, step, |b, seq| {
        let (start, len, n) = sequence_bounds(b, offsets, seq, index, max_len);
        let rows = b.binary(BinOp::Mul, Type::U64, len, Operand::Int(heads));
        b.for_range_u64(
            tid64,
            rows,
            Operand::Int(i64::from(ATTENTION_THREADS)),
            |b, idx| {
                let row = b.binary(BinOp::Div, Type::U64, idx, Operand::Int(heads));
                // (start + row) * H + h = start * H + idx.
                let g = b.ternary(TernOp::MadLo, Type::U64, start, Operand::Int(heads), idx);
                let elem = b.binary(BinOp::Mul, Type::U64, g, Operand::Int(hd as i64));
                let acc_at = b.element_addr(dq_acc, elem, 4);
                store_zero_chunks(b, Type::F32, zero_f, acc_at, hd / 4);
                let valid = b.setp(Cmp::Lt, Type::U64, row, n);
                let sum = b.const_f32(0.0);
                if let (Some(out), Some(dout)) = (out, dout) {
                    b.if_then(valid, false, |b| {
                        for c in 0..hd / 8 {
                            let at =
                                b.binary(BinOp::Add, Type::U64, elem, Operand::Int((c * 8) as i64));
                            let o = load_f32(b, out, at, dtype, 8);
                            let d = load_f32(b, dout, at, dtype, 8);
                            for (x, y) in o.into_iter().zip(d) {
                                b.ternary_to(TernOp::Fma, Type::F32, sum, x, y, sum);
                            }
                        }
                    });
                }
                store_f32(b, delta, g, DType::F32, &[sum]);
                b.if_then(valid, true, |b| {
                    let bytes = b.binary(BinOp::Mul, Type::U64, elem, Operand::Int(2));
                    for buf in [dk, dv] {
                        let at = b.binary(BinOp::Add, Type::U64, buf, bytes);
                        store_zero_chunks(b, Type::B32, zero, at, hd / 8);
                    }
                });
            },
        );
    });
    e.finish(GridRule {
        items: SizeExpr::Batch,
        items_per_block: 1,
        max_blocks: MAX_BLOCKS,
    })
}

/// Stores `chunks` 16-byte vectors of the 32-bit zero `zero` (of type `ty`)
/// to global memory from `base` on.
fn store_zero_chunks(b: &mut KernelBuilder, ty: Type, zero: Reg, base: Reg, chunks: u64) {
    for c in 0..chunks {
        b.st(
            Space::Global,
            ty,
            Address {
                base,
                offset: (c * 16) as i64,
            },
            vec![zero; 4],
        );
    }
}

fn post_kernel(desc: &AttentionDesc) -> Plan {
    let name = format!("{}_post", desc.name);
    let mut e = Entry::new(name.clone());
    e.b = KernelBuilder::new(name, ATTENTION_THREADS);
    let dq_acc = e.buffer("dq_acc", ParamBinding::Scratch(0));
    let dq = e.buffer("dq", ParamBinding::Output(0));
    let chunks = SizeExpr::TotalRows * SizeExpr::Const(u64::from(desc.heads * desc.head_dim / 8));
    let total = e.size("chunks", chunks.clone());
    let dtype = desc.dtype;
    let b = &mut e.b;
    let (start, step) = b.global_thread_index();
    b.for_range_u64(start, total, step, |b, c| {
        let src = b.ternary(TernOp::MadLo, Type::U64, c, Operand::Int(32), dq_acc);
        let lo = b.ld(
            Space::Global,
            Type::F32,
            4,
            Address {
                base: src,
                offset: 0,
            },
        );
        let hi = b.ld(
            Space::Global,
            Type::F32,
            4,
            Address {
                base: src,
                offset: 16,
            },
        );
        let vals: Vec<Reg> = lo.into_iter().chain(hi).collect();
        let packed = pack_f32(b, dtype, &vals);
        let dst = b.ternary(TernOp::MadLo, Type::U64, c, Operand::Int(16), dq);
        b.st(
            Space::Global,
            Type::B32,
            Address {
                base: dst,
                offset: 0,
            },
            packed,
        );
    });
    e.finish(GridRule {
        items: chunks,
        items_per_block: u64::from(ATTENTION_THREADS),
        max_blocks: MAX_BLOCKS,
    })
}

/// Global pointers of the main kernel (either: `mma.sync` or `hopper_bwd`).
pub(in crate::templates) struct MainPtrs {
    pub(in crate::templates) q: Reg,
    pub(in crate::templates) k: Reg,
    pub(in crate::templates) v: Reg,
    pub(in crate::templates) dout: Reg,
    pub(in crate::templates) lse: Option<Reg>,
    pub(in crate::templates) offsets: Reg,
    pub(in crate::templates) dk: Reg,
    pub(in crate::templates) dv: Reg,
    pub(in crate::templates) dq_acc: Reg,
    pub(in crate::templates) delta: Reg,
}

fn main_kernel(desc: &AttentionDesc, inputs: &BwdInputs) -> Plan {
    let mut e = Entry::new(desc.name.clone());
    e.b = KernelBuilder::new(desc.name.clone(), ATTENTION_THREADS);
    e.b.set_min_ctas_per_sm(bwd_min_ctas(desc.head_dim));
    let p = MainPtrs {
        q: e.buffer("q", ParamBinding::Input(inputs.q)),
        k: e.buffer("k", ParamBinding::Input(inputs.k)),
        v: e.buffer("v", ParamBinding::Input(inputs.v)),
        dout: e.buffer("dout", ParamBinding::Input(inputs.dout)),
        lse: inputs.lse.map(|i| e.buffer("lse", ParamBinding::Input(i))),
        offsets: e.buffer("offsets", ParamBinding::Input(inputs.offsets)),
        dk: e.buffer("dk", ParamBinding::Output(1)),
        dv: e.buffer("dv", ParamBinding::Output(2)),
        dq_acc: e.buffer("dq_acc", ParamBinding::Scratch(0)),
        delta: e.buffer("delta", ParamBinding::Scratch(1)),
    };
    let batch = e.size("batch", SizeExpr::Batch);
    let max_len = e.size("max_len", SizeExpr::MaxLen);
    let scale = desc.scale_attr.as_ref().map(|name| e.float_attr(name));
    let writer = FlashWriter::new(desc, &mut e.b);
    if desc.wgmma {
        writer.write_backward_wgmma(&p, batch, max_len, scale);
    } else {
        writer.write_backward(&p, batch, max_len, scale);
    }
    let items =
        SizeExpr::ceil_div(SizeExpr::MaxLen, u64::from(BWD_KEYS)) * items_per_sequence(desc);
    e.finish(GridRule {
        items,
        items_per_block: 1,
        max_blocks: MAX_BLOCKS,
    })
}

/// Lane addresses of the `mma.sync` kernel's `dS^T` tile.
#[derive(Clone, Copy)]
struct BwdLanes {
    /// A operand of `dS` from the `dS^T` tile (`.trans`).
    ds_a: Reg,
    /// This thread's `dS^T` store address.
    ds_store: Reg,
}

impl FlashWriter<'_> {
    fn write_backward(mut self, p: &MainPtrs, batch: Reg, max_len: Reg, scale: Option<Reg>) {
        let lay = BwdLayout::new(self.d);
        let lanes = self.lanes();
        // dS (queries x keys) from dS^T (keys x queries): key = b_row, query half hi8.
        let ds_a = self.mad_u32(lanes.b_row, lay.ds_stride, lanes.smem);
        let ds_a = self.mad_u32(lanes.hi8, 16, ds_a);
        let st_row = self.mad_u32(lanes.warp, 16, lanes.group);
        let ds_store = self.mad_u32(st_row, lay.ds_stride, lanes.smem);
        let ds_store = self.mad_u32(lanes.quad, 4, ds_store);
        let ds = BwdLanes { ds_a, ds_store };
        let loader = self.tile_loader(lanes.tid, lanes.smem);
        self.for_each_key_block(p, batch, max_len, scale, lanes, loader, |w, it| {
            w.backward_item(p, &lay, it, &ds)
        });
    }

    /// The grid-stride loop of the main backward kernels over the items
    /// (key block of [`BWD_KEYS`] keys, sequence, head), skipping blocks
    /// that start at or past `n_b`: `f` per item (`scale` is the f32
    /// attribute, 1 if `None`; `loader` copies the item's tiles).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::templates) fn for_each_key_block(
        &mut self,
        p: &MainPtrs,
        batch: Reg,
        max_len: Reg,
        scale: Option<Reg>,
        lanes: Lanes,
        loader: TileLoader,
        f: impl FnOnce(&mut Self, &BwdItem),
    ) {
        let cols = self.mad_u32(lanes.quad, 8, lanes.smem);
        let scale = match scale {
            Some(s) => s,
            None => self.b.const_f32(1.0),
        };
        let inv_max_len = self.inv_max_len(max_len);
        self.for_each_item(batch, max_len, p.offsets, BWD_KEYS, false, |w, item| {
            let (n, k0, past) = w.block_start(item, BWD_KEYS);
            let item = BwdItem {
                lanes,
                cols,
                loader,
                n,
                k0,
                row_head: item.row_head,
                head_off: item.head_off,
                scale,
                inv_max_len,
            };
            w.when(past, true, |w| f(w, &item));
        });
    }

    fn backward_item(&mut self, p: &MainPtrs, lay: &BwdLayout, it: &BwdItem, ds: &BwdLanes) {
        self.bwd_item_passes(p, it, [lay.k, lay.v], |w, first_col| {
            w.backward_pass(p, lay, it, ds, first_col)
        });
        // The next item's K and V overwrite what the last `dq_update` read.
        self.b.barrier();
    }

    /// The start of an item in both main kernels: copies its K and V tiles
    /// to `kv_dst` (bytes past the item loader's base) as one `cp.async`
    /// group, then runs `pass` once per [`dk_passes`] pass over the query
    /// blocks with the pass's first column (u32; `None`: one pass over all
    /// columns).
    pub(in crate::templates) fn bwd_item_passes(
        &mut self,
        p: &MainPtrs,
        it: &BwdItem,
        kv_dst: [u32; 2],
        mut pass: impl FnMut(&mut Self, Option<Reg>),
    ) {
        let hd = self.d.head_dim;
        for (src, dst) in [p.k, p.v].into_iter().zip(kv_dst) {
            let source = self.tile_source(&it.loader, src, it.head_off);
            self.load_tile(&it.loader, it.n, source, it.k0, BWD_KEYS, dst);
        }
        self.b.push(Inst::CpAsyncCommit);
        if dk_passes(hd) == 1 {
            pass(self, None);
        } else {
            let step = Self::imm(hd / dk_passes(hd));
            self.range(Type::U32, Operand::Int(0), Self::imm(hd), step, |w, c0| {
                pass(w, Some(c0))
            });
        }
    }

    /// Per pass, this thread's sources of the copies of the query blocks of
    /// `bmq` rows ([`QuerySources`]).
    pub(in crate::templates) fn bwd_query_sources(
        &mut self,
        p: &MainPtrs,
        it: &BwdItem,
        bmq: u32,
    ) -> QuerySources {
        QuerySources {
            q: self.tile_source(&it.loader, p.q, it.head_off),
            dout: self.tile_source(&it.loader, p.dout, it.head_off),
            stats: StatLanes {
                mine: self
                    .b
                    .setp(Cmp::Lt, Type::U32, it.lanes.tid, Self::imm(bmq)),
                row: self.mad_u32(it.lanes.tid, 4, it.lanes.smem),
            },
        }
    }

    /// Issues the copies of the query block at `first` (u32) of `rows`
    /// rows, in both main kernels: its Q and dO rows to `tiles.0` (bytes
    /// past the item loader's base) plus the stage offset `tiles.1` (u32)
    /// and, for softmax, per query its `lse` and `delta` to `stats.0`
    /// (bytes past the dynamic shared base) plus `stats.1` (4-byte copies
    /// by the first `rows` threads); rows at or past `n_b` zero-filled. No
    /// commit.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::templates) fn bwd_copy_query_block(
        &mut self,
        p: &MainPtrs,
        it: &BwdItem,
        src: &QuerySources,
        first: Reg,
        rows: u32,
        tiles: ([u32; 2], Reg),
        stats: ([u32; 2], Reg),
    ) {
        let loader = self.shifted_loader(&it.loader, tiles.1);
        for (source, dst) in [src.q, src.dout].into_iter().zip(tiles.0) {
            self.load_tile(&loader, it.n, source, first, rows, dst);
        }
        let [lse_off, delta_off] = stats.0;
        self.bwd_copy_stats(p, it, &src.stats, first, stats.1, lse_off, delta_off);
    }

    /// Softmax: issues the copies of the per-query `lse` and `delta` of the
    /// query block at `first` (u32) into the shared f32 arrays at `lse_off`
    /// and `delta_off` of the stage `stage_off` bytes on (4-byte `cp.async`
    /// by the threads of `lanes`; queries at or past `n_b` zero-filled).
    /// No commit. SiLU stages nothing.
    #[allow(clippy::too_many_arguments)]
    fn bwd_copy_stats(
        &mut self,
        p: &MainPtrs,
        it: &BwdItem,
        lanes: &StatLanes,
        first: Reg,
        stage_off: Reg,
        lse_off: u32,
        delta_off: u32,
    ) {
        let Some(lse) = p.lse else { return };
        self.when(lanes.mine, false, |w| {
            let qi = w.u32_op(BinOp::Add, first, it.lanes.tid);
            let valid = w.b.setp(Cmp::Lt, Type::U32, qi, it.n);
            let bytes = w.b.selp(Type::U32, Operand::Int(4), Operand::Int(0), valid);
            let idx = w.head_row_index(qi, it.row_head);
            let dst = w.u32_op(BinOp::Add, lanes.row, stage_off);
            for (buf, off) in [(lse, lse_off), (p.delta, delta_off)] {
                let at = w.b.element_addr(buf, idx, 4);
                w.b.push(Inst::CpAsync {
                    dst: Address {
                        base: dst,
                        offset: i64::from(off),
                    },
                    src: Address {
                        base: at,
                        offset: 0,
                    },
                    bytes: 4,
                    src_bytes: Operand::Reg(bytes),
                });
            }
        });
    }

    /// Softmax, once this thread's copies of [`Self::bwd_copy_stats`] into
    /// the stage `stage_off` bytes on landed: its query's `lse` and `delta`
    /// times [`BwdFactors::stats`], in place (`-lse log2 e`: P is one FFMA
    /// and an EX2 per score; `-delta scale`: dS is one FFMA and an FMUL).
    /// Published by the barrier that follows.
    pub(in crate::templates) fn bwd_scale_stats(
        &mut self,
        lanes: &StatLanes,
        factors: &BwdFactors,
        stage_off: Reg,
        lse_off: u32,
        delta_off: u32,
    ) {
        let Some(stats) = factors.stats else { return };
        self.when(lanes.mine, false, |w| {
            let row = w.u32_op(BinOp::Add, lanes.row, stage_off);
            for (off, factor) in [lse_off, delta_off].into_iter().zip(stats) {
                let at = Address {
                    base: row,
                    offset: i64::from(off),
                };
                let v = w.b.ld(Space::Shared, Type::F32, 1, at)[0];
                w.f32_to(BinOp::Mul, v, v, factor);
                w.b.st(Space::Shared, Type::F32, at, vec![v]);
            }
        });
    }

    /// One pass over the query blocks that see the item's keys: dk / dv of
    /// the `D / dk_passes` columns from column `first_col` on (u32; all
    /// columns when `None`) and those columns of dq.
    fn backward_pass(
        &mut self,
        p: &MainPtrs,
        lay: &BwdLayout,
        it: &BwdItem,
        ds: &BwdLanes,
        first_col: Option<Reg>,
    ) {
        let d = self.d;
        let bmq = lay.bmq;
        let causal = d.keys_end_at_block();
        let ab = d.mma_type();
        let PassAccs {
            dk,
            dv,
            s,
            dp,
            probs,
        } = self.bwd_pass_accs(bmq);
        let b_acc = match first_col {
            Some(c) => {
                let col_off = self.u32_op(BinOp::Shl, c, Operand::Int(1));
                self.u32_op(BinOp::Add, it.lanes.b_trans, col_off)
            }
            None => it.lanes.b_trans,
        };
        let keys = self.thread_rows(&it.lanes, it.k0);
        let i_first = self.bwd_first_query(it, bmq);
        let factors = self.bwd_factors(it);
        // The query blocks are pipelined over the two stages of `lay`:
        // block i + 1's copies (one commit group) are in flight while block
        // i is computed. `read_off` is the byte offset of block i's stage,
        // `read_off ^ lay.stage` that of block i + 1's.
        let src = self.bwd_query_sources(p, it, bmq);
        let copy = |w: &mut Self, first: Reg, stage_off: Reg| {
            let tiles = ([lay.q, lay.dout], stage_off);
            let stats = ([lay.lse, lay.delta], stage_off);
            w.bwd_copy_query_block(p, it, &src, first, bmq, tiles, stats)
        };
        let read_off = self.b.mov(Type::U32, Operand::Int(0));
        copy(self, i_first, read_off);
        self.b.push(Inst::CpAsyncCommit);
        self.range(Type::U32, i_first, it.n, Self::imm(bmq), |w, i0| {
            // Every warp finished reading the other stage (block i - 1)
            // before the previous iteration's `dS^T` barrier.
            let load_off = w.u32_op(BinOp::Xor, read_off, Self::imm(lay.stage));
            let next = w.u32_op(BinOp::Add, i0, Self::imm(bmq));
            let has_next = w.b.setp(Cmp::Lt, Type::U32, next, it.n);
            w.when(has_next, false, |w| copy(w, next, load_off));
            w.b.push(Inst::CpAsyncCommit);
            w.b.push(Inst::CpAsyncWait { n: 1 });
            w.bwd_scale_stats(&src.stats, &factors, read_off, lay.lse, lay.delta);
            w.b.barrier();
            // This stage's lane addresses.
            let q_rows = w.u32_op(BinOp::Add, it.lanes.b_rows, read_off);
            let q_acc = w.u32_op(BinOp::Add, b_acc, read_off);
            let cols = w.u32_op(BinOp::Add, it.cols, read_off);

            // S^T = K_w Q^T (keys x queries).
            w.product(&s, it.lanes.a, lay.k, q_rows, lay.q, ab);
            w.bwd_probs(&s, &probs, it, cols, lay.lse, &factors);
            w.bwd_mask_probs(&s, &probs, it, i0, bmq, keys, causal);
            let pa = w.pack_a(&probs);
            // dV += P dO.
            w.accumulate(&dv, &pa, q_acc, lay.dout, ab);
            // dP^T = V_w dO^T.
            w.product(&dp, it.lanes.a, lay.v, q_rows, lay.dout, ab);
            w.bwd_ds(&dp, &s, &probs, it, cols, lay.delta);
            let dsa = w.pack_a(&dp);
            // dK += dS^T Q.
            w.accumulate(&dk, &dsa, q_acc, lay.q, ab);
            // dS^T to shared memory for dQ.
            for (kk, frag) in dsa.iter().enumerate() {
                let base = i64::from(lay.ds) + 32 * kk as i64;
                let row8 = 8 * i64::from(lay.ds_stride);
                for (r, off) in [
                    (frag[0], 0),
                    (frag[1], row8),
                    (frag[2], 16),
                    (frag[3], row8 + 16),
                ] {
                    w.b.st(
                        Space::Shared,
                        Type::B32,
                        Address {
                            base: ds.ds_store,
                            offset: base + off,
                        },
                        vec![r],
                    );
                }
            }
            // dS^T is overwritten after the next iteration's first barrier,
            // once every warp is done with it here.
            w.b.barrier();
            w.dq_update(p, lay, it, ds, i0, first_col);
            w.b.mov_to(Type::U32, read_off, load_off);
        });
        self.bwd_store_dk_dv(p, it, [&dk[..], &dv[..]], keys, first_col);
    }

    /// The accumulators of a pass over query blocks of `bmq` rows
    /// ([`PassAccs`]).
    pub(in crate::templates) fn bwd_pass_accs(&mut self, bmq: u32) -> PassAccs {
        let hd = self.d.head_dim;
        let acc_tiles = hd / dk_passes(hd) / 8;
        let dk = (0..acc_tiles).map(|_| self.zero_acc()).collect();
        let dv = (0..acc_tiles).map(|_| self.zero_acc()).collect();
        let s: Vec<Acc> = (0..bmq / 8).map(|_| self.new_acc()).collect();
        let dp = (0..bmq / 8).map(|_| self.new_acc()).collect();
        let probs = if self.d.activation == Activation::Softmax {
            s.clone()
        } else {
            (0..bmq / 8).map(|_| self.new_acc()).collect()
        };
        PassAccs {
            dk,
            dv,
            s,
            dp,
            probs,
        }
    }

    /// The first query block that sees the item's keys: 0, or (causal) the
    /// block of `bmq` queries holding the first key.
    pub(in crate::templates) fn bwd_first_query(&mut self, it: &BwdItem, bmq: u32) -> Reg {
        if self.d.keys_end_at_block() {
            let blk = self.u32_op(BinOp::Div, it.k0, Self::imm(bmq));
            self.u32_op(BinOp::Mul, blk, Self::imm(bmq))
        } else {
            self.b.mov(Type::U32, Operand::Int(0))
        }
    }

    /// The factors of the element-wise math ([`BwdFactors`]), once per
    /// pass.
    pub(in crate::templates) fn bwd_factors(&mut self, it: &BwdItem) -> BwdFactors {
        let log2e = std::f32::consts::LOG2_E;
        if self.d.activation == Activation::Softmax {
            let neg_scale = self.b.unary(UnOp::Neg, Type::F32, it.scale);
            BwdFactors {
                score: self
                    .b
                    .binary(BinOp::Mul, Type::F32, it.scale, Operand::F32(log2e)),
                stats: Some([Operand::F32(-log2e), Operand::Reg(neg_scale)]),
                silu: it.scale,
            }
        } else {
            let silu = match it.inv_max_len {
                Some(k) => self.b.binary(BinOp::Mul, Type::F32, it.scale, k),
                None => it.scale,
            };
            BwdFactors {
                score: it.scale,
                stats: None,
                silu,
            }
        }
    }

    /// The scores `s` (key rows x query columns, raw `q.k`) to P: softmax
    /// in place from the staged `-lse log2 e` at `lse_off` past `cols`
    /// (this thread's query pairs, [`BwdItem::cols`] or its stage); SiLU
    /// into `probs`, with the factor `silu'(s) scale (/ max_len)` of dS
    /// left in `s`.
    pub(in crate::templates) fn bwd_probs(
        &mut self,
        s: &[Acc],
        probs: &[Acc],
        it: &BwdItem,
        cols: Reg,
        lse_off: u32,
        factors: &BwdFactors,
    ) {
        let softmax = self.d.activation == Activation::Softmax;
        for (j, acc) in s.iter().enumerate() {
            if softmax {
                let nl = self.b.ld(
                    Space::Shared,
                    Type::F32,
                    2,
                    Address {
                        base: cols,
                        offset: i64::from(lse_off) + 32 * j as i64,
                    },
                );
                for (k, &r) in acc.iter().enumerate() {
                    self.b
                        .ternary_to(TernOp::Fma, Type::F32, r, r, factors.score, nl[k & 1]);
                    self.b.unary_to(UnOp::Ex2Approx, Type::F32, r, r);
                }
            } else {
                for (k, &r) in acc.iter().enumerate() {
                    self.f32_to(BinOp::Mul, r, r, factors.score);
                    let sig = self.sigmoid(r);
                    let pr = probs[j][k];
                    self.f32_to(BinOp::Mul, pr, r, sig);
                    // silu' = sig * (1 + s * (1 - sig)).
                    let one_minus = self.b.binary(BinOp::Sub, Type::F32, Operand::F32(1.0), sig);
                    let t = self
                        .b
                        .ternary(TernOp::Fma, Type::F32, r, one_minus, Operand::F32(1.0));
                    self.f32_to(BinOp::Mul, r, t, sig);
                    self.f32_to(BinOp::Mul, r, r, factors.silu);
                    if let Some(k) = it.inv_max_len {
                        self.f32_to(BinOp::Mul, pr, pr, k);
                    }
                }
            }
        }
    }

    /// On boundary blocks ([`Self::bwd_boundary`]), zeroes P (and the SiLU
    /// factor in `s`) outside the masks ([`Self::bwd_masks`]).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::templates) fn bwd_mask_probs(
        &mut self,
        s: &[Acc],
        probs: &[Acc],
        it: &BwdItem,
        i0: Reg,
        bmq: u32,
        keys: [Reg; 2],
        causal: bool,
    ) {
        let softmax = self.d.activation == Activation::Softmax;
        let boundary = self.bwd_boundary(it, i0, bmq, causal);
        self.when(boundary, false, |w| {
            let mut arrays = vec![probs.to_vec()];
            if !softmax {
                arrays.push(s.to_vec());
            }
            w.bwd_masks(&arrays, it, i0, keys, causal);
        });
    }

    /// `dP^T` (in `dp`) to `dS^T scale` in place: softmax `P fma(dP,
    /// scale, -delta scale)` with the staged `-delta scale` at `delta_off`
    /// past `cols` (as in [`Self::bwd_probs`]), SiLU `dP` times the factor
    /// in `s` (which carries the scale).
    pub(in crate::templates) fn bwd_ds(
        &mut self,
        dp: &[Acc],
        s: &[Acc],
        probs: &[Acc],
        it: &BwdItem,
        cols: Reg,
        delta_off: u32,
    ) {
        let softmax = self.d.activation == Activation::Softmax;
        for (j, acc) in dp.iter().enumerate() {
            let neg_delta = if softmax {
                Some(self.b.ld(
                    Space::Shared,
                    Type::F32,
                    2,
                    Address {
                        base: cols,
                        offset: i64::from(delta_off) + 32 * j as i64,
                    },
                ))
            } else {
                None
            };
            for (k, &r) in acc.iter().enumerate() {
                match &neg_delta {
                    Some(nd) => {
                        self.b
                            .ternary_to(TernOp::Fma, Type::F32, r, r, it.scale, nd[k & 1]);
                        self.f32_to(BinOp::Mul, r, r, probs[j][k]);
                    }
                    None => self.f32_to(BinOp::Mul, r, r, s[j][k]),
                }
            }
        }
    }

    /// Stores this thread's rows `keys` of the `dk` and `dv` accumulators
    /// (`acc[0]`, `acc[1]`; the columns from column `first_col` on, all
    /// when `None`) in the input dtype; rows past `n_b` are skipped.
    pub(in crate::templates) fn bwd_store_dk_dv(
        &mut self,
        p: &MainPtrs,
        it: &BwdItem,
        acc: [&[Acc]; 2],
        keys: [Reg; 2],
        first_col: Option<Reg>,
    ) {
        let col_off = first_col.map(|c| self.u32_op(BinOp::Shl, c, Operand::Int(1)));
        for (buf, acc) in [p.dk, p.dv].into_iter().zip(acc) {
            let head = self.u64_op(BinOp::Add, buf, it.head_off);
            let quad4 = self.u32_op(BinOp::Shl, it.lanes.quad, Operand::Int(2));
            let quad64 = self.b.cvt(Type::U64, Type::U32, quad4);
            let lane_base = self.u64_op(BinOp::Add, head, quad64);
            let lane_base = match col_off {
                Some(c) => {
                    let c64 = self.b.cvt(Type::U64, Type::U32, c);
                    self.u64_op(BinOp::Add, lane_base, c64)
                }
                None => lane_base,
            };
            for (half, &row) in keys.iter().enumerate() {
                self.store_rows(acc, half, row, it.n, lane_base, None);
            }
        }
    }

    /// Some pair of (query block `i0`, this key block) is masked.
    fn bwd_boundary(&mut self, it: &BwdItem, i0: Reg, bmq: u32, causal: bool) -> Reg {
        let flag = self.b.mov(Type::U32, Operand::Int(0));
        let q_end = self.u32_op(BinOp::Add, i0, Self::imm(bmq));
        let k_end = self.u32_op(BinOp::Add, it.k0, Self::imm(BWD_KEYS));
        let mut hits = vec![
            self.b.setp(Cmp::Gt, Type::U32, q_end, it.n),
            self.b.setp(Cmp::Gt, Type::U32, k_end, it.n),
        ];
        if causal {
            let last_key = self.u32_op(BinOp::Sub, k_end, Operand::Int(1));
            hits.push(self.b.setp(Cmp::Gt, Type::U32, last_key, i0));
        }
        for hit in hits {
            self.b.selp_to(Type::U32, flag, Operand::Int(1), flag, hit);
        }
        self.b.setp(Cmp::Ne, Type::U32, flag, Operand::Int(0))
    }

    /// Zeroes entries (key row, query column) with the query or key past
    /// `n_b`, or (causal) the key after the query, in each array.
    fn bwd_masks(
        &mut self,
        arrays: &[Vec<Acc>],
        it: &BwdItem,
        i0: Reg,
        keys: [Reg; 2],
        causal: bool,
    ) {
        let col0 = self
            .b
            .ternary(TernOp::MadLo, Type::U32, it.lanes.quad, Operand::Int(2), i0);
        let query_room = self.b.binary(BinOp::Sub, Type::S32, it.n, col0);
        let key_ok = [
            self.b.setp(Cmp::Lt, Type::U32, keys[0], it.n),
            self.b.setp(Cmp::Lt, Type::U32, keys[1], it.n),
        ];
        let key_room = [
            self.b.binary(BinOp::Sub, Type::S32, keys[0], col0),
            self.b.binary(BinOp::Sub, Type::S32, keys[1], col0),
        ];
        let zero = Operand::F32(0.0);
        for j in 0..arrays[0].len() {
            for k in 0..4 {
                let col = Operand::Int((8 * j + (k & 1)) as i64);
                let mut keep = vec![
                    self.b.setp(Cmp::Gt, Type::S32, query_room, col),
                    key_ok[k / 2],
                ];
                if causal {
                    // key <= query: key - col0 <= c.
                    keep.push(self.b.setp(Cmp::Le, Type::S32, key_room[k / 2], col));
                }
                for arr in arrays {
                    let r = arr[j][k];
                    for &pred in &keep {
                        self.b.selp_to(Type::F32, r, r, zero, pred);
                    }
                }
            }
        }
    }

    /// `dq_acc += dS K` for the query block at `i0` and the pass's columns
    /// (`D / dk_passes` from column `first_col` on), added atomically: warp
    /// `w` computes a quarter of the columns for all query rows (D >= 64),
    /// or all columns of a quarter of the query rows (D = 32).
    fn dq_update(
        &mut self,
        p: &MainPtrs,
        lay: &BwdLayout,
        it: &BwdItem,
        ds: &BwdLanes,
        i0: Reg,
        first_col: Option<Reg>,
    ) {
        let d = self.d;
        let (hd, stride, ab) = (d.head_dim, self.stride, d.mma_type());
        let pass_cols = hd / dk_passes(hd);
        // D >= 64: warp w owns columns [w C/4, (w+1) C/4) of the pass's C
        // columns of every query row; D = 32 (64 query rows): warp w owns
        // query rows [16 w, 16 w + 16).
        let split_columns = hd >= 64;
        let cols = if split_columns {
            pass_cols / 4
        } else {
            pass_cols
        };
        let (col_w, row_base, ds_lane) = if split_columns {
            let col_w = self.u32_op(BinOp::Mul, it.lanes.warp, Self::imm(cols));
            let col_w = match first_col {
                Some(c) => self.u32_op(BinOp::Add, col_w, c),
                None => col_w,
            };
            let zero = self.b.mov(Type::U32, Operand::Int(0));
            (col_w, zero, ds.ds_a)
        } else {
            let zero = self.b.mov(Type::U32, Operand::Int(0));
            let rows = self.u32_op(BinOp::Shl, it.lanes.warp, Operand::Int(4));
            let ds = self.b.ternary(
                TernOp::MadLo,
                Type::U32,
                it.lanes.warp,
                Operand::Int(32),
                ds.ds_a,
            );
            (zero, rows, ds)
        };
        let col_bytes = self.u32_op(BinOp::Shl, col_w, Operand::Int(1));
        let b_lane = self.u32_op(BinOp::Add, it.lanes.b_trans, col_bytes);
        let quad = self.u32_op(BinOp::Shl, it.lanes.quad, Operand::Int(1));
        let col_words = self.u32_op(BinOp::Add, col_w, quad);
        // This thread's first dq_acc row: query q0 = i0 + row_base + group
        // (rows 8 apart are `row_step` bytes apart, immediate offsets) and
        // the number of rows of the sequence from q0 on.
        let q0 = self.u32_op(BinOp::Add, i0, row_base);
        let q0 = self.u32_op(BinOp::Add, q0, it.lanes.group);
        let rows = self.bwd_dq_rows(p, it, q0, col_words);
        let row_tiles = if split_columns { lay.bmq / 16 } else { 1 };
        // K's B fragments of the warp's columns, `ldmatrix.trans` per
        // (k-step, column pair). They are the same for every row tile: with
        // several row tiles and 16 columns (D = 64: 4 row tiles, the
        // fragments take 16 registers) they are read once, not per tile.
        let k_frag = |w: &mut Self, kk: u32, np: u32| {
            w.ldmatrix(b_lane, i64::from(lay.k + kk * 16 * stride + np * 32), true)
        };
        let held: Option<Vec<Vec<Reg>>> = (row_tiles > 1 && cols == 16)
            .then(|| (0..BWD_KEYS / 16).map(|kk| k_frag(self, kk, 0)).collect());
        for mt in 0..row_tiles {
            let acc: Vec<Acc> = (0..cols / 8).map(|_| self.zero_acc()).collect();
            for kk in 0..BWD_KEYS / 16 {
                let a = self.ldmatrix(
                    ds_lane,
                    i64::from(lay.ds + kk * 16 * lay.ds_stride + mt * 32),
                    true,
                );
                let frag = [a[0], a[1], a[2], a[3]];
                for np in 0..cols / 16 {
                    let bf = match &held {
                        Some(frags) => frags[kk as usize].clone(),
                        None => k_frag(self, kk, np),
                    };
                    self.mma(ab, acc[2 * np as usize], frag, [bf[0], bf[1]]);
                    self.mma(ab, acc[2 * np as usize + 1], frag, [bf[2], bf[3]]);
                }
            }
            self.bwd_add_dq(&rows, &acc, mt * 16, 0);
        }
    }

    /// This thread's `dq_acc` rows from query `q0` (u32) on, at column
    /// `col` (u32) of the head ([`DqRows`]).
    pub(in crate::templates) fn bwd_dq_rows(
        &mut self,
        p: &MainPtrs,
        it: &BwdItem,
        q0: Reg,
        col: Reg,
    ) -> DqRows {
        let d = self.d;
        let room = self.b.binary(BinOp::Sub, Type::S32, it.n, q0);
        let g = self.head_row_index(q0, it.row_head);
        let col64 = self.b.cvt(Type::U64, Type::U32, col);
        let elem = self.b.ternary(
            TernOp::MadLo,
            Type::U64,
            g,
            Operand::Int(i64::from(d.head_dim)),
            col64,
        );
        DqRows {
            room,
            at: self.b.element_addr(p.dq_acc, elem, 4),
            row_step: i64::from(d.heads * d.head_dim * 4),
        }
    }

    /// `dq_acc += acc` with atomics: the accumulator tiles `acc` hold the
    /// rows `row` and `row + 8` past `rows`' first (rows at or past `n_b`
    /// are skipped) and, from tile `t` on, the columns `8 t` past its
    /// column plus `col_bytes / 4`.
    pub(in crate::templates) fn bwd_add_dq(
        &mut self,
        rows: &DqRows,
        acc: &[Acc],
        row: u32,
        col_bytes: i64,
    ) {
        for half in 0..2u32 {
            let row = row + 8 * half;
            let valid = self.b.setp(Cmp::Gt, Type::S32, rows.room, Self::imm(row));
            // One branch around the row's atomics: ptxas wraps each
            // predicated atomic in a branch of its own (BSSY, BRA, BSYNC
            // around every RED).
            self.when(valid, false, |w| {
                for (t, tile) in acc.iter().enumerate() {
                    for e in 0..2 {
                        let old = w.b.reg(RegClass::F32);
                        w.b.push(Inst::Atom {
                            op: AtomOp::Add,
                            space: Space::Global,
                            ty: Type::F32,
                            dst: old,
                            addr: Address {
                                base: rows.at,
                                offset: i64::from(row) * rows.row_step
                                    + col_bytes
                                    + (32 * t + 4 * e) as i64,
                            },
                            src: Operand::Reg(tile[2 * half as usize + e]),
                        });
                    }
                }
            });
        }
    }
}

/// Per-pass registers of the query-block copies of either main kernel
/// ([`FlashWriter::bwd_query_sources`], [`FlashWriter::bwd_copy_query_block`]).
pub(in crate::templates) struct QuerySources {
    /// This thread's chunk of row 0 of Q (u64, [`FlashWriter::tile_source`]).
    q: Reg,
    /// The same in dO.
    dout: Reg,
    /// This thread's query of the `lse` and `delta` copies.
    pub(in crate::templates) stats: StatLanes,
}

/// The thread of a query of the per-query `lse` / `delta` copies (the
/// copying thread of query `tid` of a block, `tid < bmq`).
pub(in crate::templates) struct StatLanes {
    /// Whether this thread copies a query's `lse` and `delta` (`tid < bmq`).
    mine: Reg,
    /// Shared address of that query's entry in the arrays (the dynamic
    /// shared base plus `4 tid`; the arrays' offsets are added).
    row: Reg,
}

/// A thread's rows of the f32 `dq` accumulator for the atomics of a query
/// block ([`FlashWriter::bwd_dq_rows`]).
pub(in crate::templates) struct DqRows {
    /// `n_b - q0` (s32): rows `r` past the first with `r < room` exist.
    room: Reg,
    /// The address of the first row's entry (u64).
    at: Reg,
    /// Bytes between consecutive rows (`H D 4`).
    row_step: i64,
}

/// The accumulators of one pass of either main kernel over the query
/// blocks ([`FlashWriter::bwd_pass_accs`]), in the `m16n8` register layout
/// of both (warp `w` holds key rows `16 w ..`, tile `t` columns `8 t ..`).
pub(in crate::templates) struct PassAccs {
    /// `dk` of the pass's `D / dk_passes` columns, zeroed.
    pub(in crate::templates) dk: Vec<Acc>,
    /// `dv` of those columns, zeroed.
    pub(in crate::templates) dv: Vec<Acc>,
    /// `S^T` of a query block (key rows x query columns).
    pub(in crate::templates) s: Vec<Acc>,
    /// `dP^T` of a query block, then `dS^T`.
    pub(in crate::templates) dp: Vec<Acc>,
    /// P^T: softmax in `s`'s registers; SiLU its own (`s` then holds dS's
    /// factor, [`FlashWriter::bwd_probs`]).
    pub(in crate::templates) probs: Vec<Acc>,
}

/// Factors of the element-wise math ([`FlashWriter::bwd_factors`]), the
/// same in both main kernels.
pub(in crate::templates) struct BwdFactors {
    /// Of the raw scores: `scale log2 e` (softmax: `P = 2^(s c - lse
    /// log2 e)`) or `scale` (SiLU).
    score: Reg,
    /// Softmax: what the staged per-query `lse` and `delta` are multiplied
    /// by, `-log2 e` and `-scale` (so P is one FFMA and an EX2, and `dS =
    /// P fma(dP, scale, -delta scale)`).
    stats: Option<[Operand; 2]>,
    /// SiLU: the factor of `silu'(s)` in dS, `scale` (`/ max_len`).
    silu: Reg,
}

/// Registers of one backward work item ([`FlashWriter::for_each_key_block`]).
pub(in crate::templates) struct BwdItem {
    /// This thread's lanes ([`FlashWriter::lanes`]).
    pub(in crate::templates) lanes: Lanes,
    /// This thread's pair of query columns in the shared lse / delta arrays
    /// (the shared base plus `8 quad`).
    pub(in crate::templates) cols: Reg,
    /// This thread's `cp.async` copies of the item's tiles.
    loader: TileLoader,
    /// `n_b` (u32).
    pub(in crate::templates) n: Reg,
    /// The item's first key (u32).
    pub(in crate::templates) k0: Reg,
    /// `offsets[b] * H + h` (u64): the lse / delta index of row 0.
    row_head: Reg,
    /// Byte offset of (row `offsets[b]`, head `h`) in q / k / v / dout (u64).
    head_off: Reg,
    /// The scores' f32 scale (1 without a scale attribute).
    scale: Reg,
    /// `1 / max_len` (f32) when the probabilities are divided by it.
    inv_max_len: Option<Reg>,
}

/// Compiles the backward of the attention forward `graph` (a graph that
/// [`crate::compile()`] fuses into the flash kernel) for `spec`. Inputs, in
/// order: softmax `q, k, v, out, dout, lse, offsets`; SiLU `q, k, v, dout,
/// offsets`. Outputs `dq, dk, dv` (shapes of q, k, v). Supported: the
/// `jagged_flash_attention` shapes (softmax, optionally causal; SiLU `/
/// max_len`, optionally causal), D = 32, 64, 128 or 256, f16 / bf16.
pub fn compile_attention_backward(
    graph: &jagged_ir::Graph,
    spec: &crate::spec::Spec,
) -> Result<crate::launch::CompiledKernel, crate::error::CodegenError> {
    use crate::error::CodegenError;
    use crate::launch::{CompiledKernel, Launch, OutputBuffer, ScratchBuffer};
    let unsupported =
        |what: String| CodegenError::Unsupported(format!("flash attention backward: {what}"));
    let m = super::attention_graph::match_attention(graph).map_err(|why| {
        CodegenError::NoTemplate(format!("graph `{}` is not attention: {why}", graph.name()))
    })?;
    let pat = &m.pattern;
    let supported = match pat.activation {
        Activation::Softmax => {
            pat.prob_mask.is_none()
                && !pat.divide_by_max_len
                && matches!(pat.score_mask, None | Some(PairMask::KeyNotAfterQuery))
        }
        Activation::Silu => {
            pat.score_mask.is_none()
                && matches!(pat.prob_mask, None | Some(PairMask::KeyNotAfterQuery))
        }
    };
    if !supported {
        return Err(unsupported(format!("pattern {pat:?}")));
    }
    let (heads, head_dim) = match (pat.has_heads, spec.inner.as_slice()) {
        (true, &[h, d]) if h > 0 => (h, d),
        (false, &[d]) => (1, d),
        (_, other) => return Err(unsupported(format!("inner dims {other:?}"))),
    };
    if !matches!(head_dim, 32 | 64 | 128 | 256) {
        return Err(unsupported(format!(
            "head dim {head_dim} (expected 32, 64, 128 or 256)"
        )));
    }
    if !matches!(spec.dtype, DType::F16 | DType::BF16)
        || !matches!(spec.index, DType::I32 | DType::I64)
    {
        return Err(unsupported(format!(
            "dtypes {} / {}",
            spec.dtype, spec.index
        )));
    }
    super::attention::check_row_elems(heads, head_dim).map_err(unsupported)?;
    let desc = super::attention::backward_desc(pat, spec, heads, head_dim);
    let shared = bwd_shared_bytes(&desc);
    let plans = backward_kernels(&desc);
    let launches: Vec<Launch> = plans
        .iter()
        .enumerate()
        .map(|(k, plan)| Launch {
            entry: plan.kernel.name.clone(),
            block: plan.kernel.block_threads,
            dynamic_shared_bytes: if k == 1 { shared } else { 0 },
            grid: plan.grid.clone(),
            params: plan.bindings.clone(),
        })
        .collect();
    let module = crate::kernel::KernelModule {
        kernels: plans.into_iter().map(|p| p.kernel).collect(),
    };
    let ptx = crate::ptx::write_string(&module, &crate::ptx::Options { arch: spec.arch })?;
    let rows = SizeExpr::TotalRows * SizeExpr::Const(u64::from(heads));
    let elems = rows.clone() * SizeExpr::Const(u64::from(head_dim));
    let grad = OutputBuffer {
        elem: spec.dtype,
        elems: elems.clone(),
        used_rows_from: None,
    };
    Ok(CompiledKernel {
        ptx,
        arch: spec.arch,
        launches,
        scratch: vec![
            ScratchBuffer {
                bytes: elems * SizeExpr::Const(4),
            },
            ScratchBuffer {
                bytes: rows * SizeExpr::Const(4),
            },
        ],
        outputs: vec![grad.clone(), grad.clone(), grad],
    })
}
