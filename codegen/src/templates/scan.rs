//! Parallel prefix sums over `n` elements (three passes) and the kernels
//! built on them: `complete_cumsum` (lengths to offsets) and
//! `masked_select_jagged` (stream compaction).
//!
//! Pass 1 sums each tile of [`TILE`] elements (one CTA per tile, grid-stride
//! over tiles); pass 2 scans the tile sums in one CTA (chunks of 256 with a
//! carry); pass 3 scans each tile (4 items per thread, warp `shfl.up` scans,
//! warp totals through shared memory) and adds the tile's prefix.
//! The result `out[0] = 0, out[k + 1] = in[0] + ... + in[k]` has `n + 1`
//! entries. Sums are 64-bit; a mask counts 1 for every nonzero byte.

use crate::kernel::{
    Address, BinOp, Cmp, Guard, KernelBuilder, Operand, Reg, SharedId, ShflMode, Space, Special,
    TernOp, Type,
};
use crate::launch::{GridRule, ParamBinding, SizeExpr};
use crate::spec::DType;

use super::map::row_elem;
use super::{
    BLOCK_THREADS, Entry, Plan, chunking, grid, load_index, load_raw, split_row_chunk, store_index,
    store_raw,
};

/// Items per thread in a tile.
pub const ITEMS: u32 = 4;
/// Elements per tile (one CTA).
pub const TILE: u32 = BLOCK_THREADS * ITEMS;

const WARPS: u32 = BLOCK_THREADS / 32;

/// Bytes of the tile-sums scratch buffer for `n` elements (one spare entry so
/// it is never empty).
pub fn tile_sums_bytes(n: SizeExpr) -> SizeExpr {
    (SizeExpr::ceil_div(n, u64::from(TILE)) + SizeExpr::Const(1)) * SizeExpr::Const(8)
}

/// The three kernels of a scan of `n` elements of `input_elem` (bound to
/// `input`) into `output` (`n + 1` entries of `output_elem`), with the tile
/// sums in `sums`.
pub fn scan_kernels(
    name: &str,
    input: ParamBinding,
    input_elem: DType,
    output: ParamBinding,
    output_elem: DType,
    sums: ParamBinding,
    n: SizeExpr,
) -> Vec<Plan> {
    vec![
        tile_sums_kernel(
            &format!("{name}_tile_sums"),
            input.clone(),
            input_elem,
            sums.clone(),
            n.clone(),
        ),
        scan_sums_kernel(&format!("{name}_scan_sums"), sums.clone(), n.clone()),
        scan_tiles_kernel(
            &format!("{name}_scan_tiles"),
            input,
            input_elem,
            output,
            output_elem,
            sums,
            n,
        ),
    ]
}

/// Loads input element `idx` as a u64 count (masks: 1 if nonzero), 0 when `idx >= n`.
fn load_count(b: &mut KernelBuilder, input: Reg, idx: Reg, n: Reg, elem: DType) -> Reg {
    let v = b.mov(Type::U64, Operand::Int(0));
    let inside = b.setp(Cmp::Lt, Type::U64, idx, n);
    b.guarded(
        Guard {
            pred: inside,
            negate: false,
        },
        |b| {
            let x = load_index(b, input, idx, elem);
            if matches!(elem, DType::U8 | DType::Bool) {
                let set = b.setp(Cmp::Ne, Type::U64, x, Operand::Int(0));
                b.push(crate::kernel::Inst::Selp {
                    ty: Type::U64,
                    dst: v,
                    a: Operand::Int(1),
                    b: Operand::Int(0),
                    pred: set,
                });
            } else {
                b.mov_to(Type::U64, v, x);
            }
        },
    );
    v
}

/// Shuffles a 64-bit value as two 32-bit halves.
fn shfl_u64(b: &mut KernelBuilder, mode: ShflMode, x: Reg, lane: i64, clamp: u32) -> Reg {
    let lo = b.cvt(Type::U32, Type::U64, x);
    let hi64 = b.binary(BinOp::Shr, Type::U64, x, Operand::Int(32));
    let hi = b.cvt(Type::U32, Type::U64, hi64);
    let lo = b.shfl(mode, lo, Operand::Int(lane), clamp);
    let hi = b.shfl(mode, hi, Operand::Int(lane), clamp);
    let lo64 = b.cvt(Type::U64, Type::U32, lo);
    let hi64 = b.cvt(Type::U64, Type::U32, hi);
    let shifted = b.binary(BinOp::Shl, Type::B64, hi64, Operand::Int(32));
    b.binary(BinOp::Or, Type::B64, shifted, lo64)
}

/// Inclusive scan of one u64 per thread over the CTA. Returns
/// `(inclusive prefix, CTA total)`. Must be reached by all threads.
fn block_scan(b: &mut KernelBuilder, smem: SharedId, tid: Reg, v: Reg) -> (Reg, Reg) {
    let lane = b.binary(BinOp::And, Type::U32, tid, Operand::Int(31));
    let warp = b.binary(BinOp::Shr, Type::U32, tid, Operand::Int(5));
    let x = b.mov(Type::U64, v);
    let mut offset = 1;
    while offset < 32 {
        let y = shfl_u64(b, ShflMode::Up, x, offset, 0);
        let take = b.setp(Cmp::Ge, Type::U32, lane, Operand::Int(offset));
        let y = b.selp(Type::U64, y, Operand::Int(0), take);
        b.binary_to(BinOp::Add, Type::U64, x, x, y);
        offset *= 2;
    }
    let base = b.shared_addr(smem);
    let slot = b.ternary(TernOp::MadLo, Type::U32, warp, Operand::Int(8), base);
    let last = b.setp(Cmp::Eq, Type::U32, lane, Operand::Int(31));
    b.guarded(
        Guard {
            pred: last,
            negate: false,
        },
        |b| {
            b.st(
                Space::Shared,
                Type::U64,
                Address {
                    base: slot,
                    offset: 0,
                },
                vec![x],
            );
        },
    );
    b.barrier();
    let before = b.mov(Type::U64, Operand::Int(0));
    let total = b.mov(Type::U64, Operand::Int(0));
    for w in 0..WARPS {
        let s = b.ld(
            Space::Shared,
            Type::U64,
            1,
            Address {
                base,
                offset: i64::from(w * 8),
            },
        )[0];
        b.binary_to(BinOp::Add, Type::U64, total, total, s);
        let earlier = b.setp(Cmp::Gt, Type::U32, warp, Operand::Int(i64::from(w)));
        let add = b.selp(Type::U64, s, Operand::Int(0), earlier);
        b.binary_to(BinOp::Add, Type::U64, before, before, add);
    }
    b.barrier();
    let inclusive = b.binary(BinOp::Add, Type::U64, x, before);
    (inclusive, total)
}

/// Number of tiles of `n` (a u64 register).
fn tile_count(b: &mut KernelBuilder, n: Reg) -> Reg {
    let bumped = b.binary(BinOp::Add, Type::U64, n, Operand::Int(i64::from(TILE - 1)));
    b.binary(
        BinOp::Shr,
        Type::U64,
        bumped,
        Operand::Int(i64::from(TILE.trailing_zeros())),
    )
}

/// `for tile = ctaid; tile < tiles; tile += nctaid` (uniform across the CTA).
fn for_each_tile(b: &mut KernelBuilder, tiles: Reg, body: impl FnOnce(&mut KernelBuilder, Reg)) {
    let (first, step) = b.global_block_index();
    b.for_range_u64(first, tiles, step, body);
}

fn tile_grid(n: SizeExpr) -> GridRule {
    grid(SizeExpr::ceil_div(n, u64::from(TILE)), 1)
}

/// Pass 1: `sums[t] = sum of tile t`.
fn tile_sums_kernel(
    name: &str,
    input: ParamBinding,
    elem: DType,
    sums: ParamBinding,
    n: SizeExpr,
) -> Plan {
    let mut e = Entry::new(name);
    let sums = e.buffer("sums", sums);
    let input = e.buffer("input", input);
    let count = e.size("n", n.clone());
    let b = &mut e.b;
    let smem = b.shared(Type::U64, WARPS);
    let tid = b.special(Special::TidX);
    let tid64 = b.cvt(Type::U64, Type::U32, tid);
    let tiles = tile_count(b, count);
    for_each_tile(b, tiles, |b, tile| {
        let acc = b.mov(Type::U64, Operand::Int(0));
        for k in 0..ITEMS {
            // Coalesced: item k of thread t is element tile*TILE + k*256 + t.
            let off = b.binary(
                BinOp::Add,
                Type::U64,
                tid64,
                Operand::Int(i64::from(k * BLOCK_THREADS)),
            );
            let idx = b.ternary(
                TernOp::MadLo,
                Type::U64,
                tile,
                Operand::Int(i64::from(TILE)),
                off,
            );
            let v = load_count(b, input, idx, count, elem);
            b.binary_to(BinOp::Add, Type::U64, acc, acc, v);
        }
        let (_, total) = block_scan(b, smem, tid, acc);
        let first = b.setp(Cmp::Eq, Type::U32, tid, Operand::Int(0));
        b.guarded(
            Guard {
                pred: first,
                negate: false,
            },
            |b| {
                store_index(b, sums, tile, DType::I64, total);
            },
        );
    });
    e.finish(tile_grid(n))
}

/// Pass 2 (one CTA): `sums[t] = sum of tiles before t`.
fn scan_sums_kernel(name: &str, sums: ParamBinding, n: SizeExpr) -> Plan {
    let mut e = Entry::new(name);
    let sums = e.buffer("sums", sums);
    let count = e.size("n", n);
    let b = &mut e.b;
    let smem = b.shared(Type::U64, WARPS);
    let tid = b.special(Special::TidX);
    let tid64 = b.cvt(Type::U64, Type::U32, tid);
    let tiles = tile_count(b, count);
    let carry = b.mov(Type::U64, Operand::Int(0));
    b.for_range_u64(
        Operand::Int(0),
        tiles,
        Operand::Int(i64::from(BLOCK_THREADS)),
        |b, chunk| {
            let k = b.binary(BinOp::Add, Type::U64, chunk, tid64);
            let v = load_count(b, sums, k, tiles, DType::I64);
            let (inclusive, total) = block_scan(b, smem, tid, v);
            let inside = b.setp(Cmp::Lt, Type::U64, k, tiles);
            b.guarded(
                Guard {
                    pred: inside,
                    negate: false,
                },
                |b| {
                    let exclusive = b.binary(BinOp::Sub, Type::U64, inclusive, v);
                    let prefix = b.binary(BinOp::Add, Type::U64, exclusive, carry);
                    store_index(b, sums, k, DType::I64, prefix);
                },
            );
            b.binary_to(BinOp::Add, Type::U64, carry, carry, total);
        },
    );
    e.finish(GridRule {
        items: SizeExpr::Const(1),
        items_per_block: 1,
        max_blocks: 1,
    })
}

/// Pass 3: `out[0] = 0`, `out[i + 1] = prefix of tile + scan within the tile`.
fn scan_tiles_kernel(
    name: &str,
    input: ParamBinding,
    input_elem: DType,
    output: ParamBinding,
    output_elem: DType,
    sums: ParamBinding,
    n: SizeExpr,
) -> Plan {
    let mut e = Entry::new(name);
    let out = e.buffer("out", output);
    let input = e.buffer("input", input);
    let sums = e.buffer("sums", sums);
    let count = e.size("n", n.clone());
    let b = &mut e.b;
    let smem = b.shared(Type::U64, WARPS);
    let tid = b.special(Special::TidX);
    let ctaid = b.special(Special::CtaidX);
    let tid64 = b.cvt(Type::U64, Type::U32, tid);
    let first_thread = b.binary(BinOp::Or, Type::B32, tid, ctaid);
    let is_first = b.setp(Cmp::Eq, Type::U32, first_thread, Operand::Int(0));
    b.guarded(
        Guard {
            pred: is_first,
            negate: false,
        },
        |b| {
            let zero = b.mov(Type::U64, Operand::Int(0));
            store_index(b, out, zero, output_elem, zero);
        },
    );
    let tiles = tile_count(b, count);
    for_each_tile(b, tiles, |b, tile| {
        // Contiguous: items k of thread t are elements tile*TILE + t*ITEMS + k.
        let base = b.ternary(
            TernOp::MadLo,
            Type::U64,
            tid64,
            Operand::Int(i64::from(ITEMS)),
            Operand::Int(0),
        );
        let base = b.ternary(
            TernOp::MadLo,
            Type::U64,
            tile,
            Operand::Int(i64::from(TILE)),
            base,
        );
        let mut prefixes = Vec::new();
        let running = b.mov(Type::U64, Operand::Int(0));
        for k in 0..ITEMS {
            let idx = b.binary(BinOp::Add, Type::U64, base, Operand::Int(i64::from(k)));
            let v = load_count(b, input, idx, count, input_elem);
            b.binary_to(BinOp::Add, Type::U64, running, running, v);
            prefixes.push((idx, b.mov(Type::U64, running)));
        }
        let (inclusive, _) = block_scan(b, smem, tid, running);
        let exclusive = b.binary(BinOp::Sub, Type::U64, inclusive, running);
        let tile_prefix = load_index(b, sums, tile, DType::I64);
        let start = b.binary(BinOp::Add, Type::U64, exclusive, tile_prefix);
        for (idx, local) in prefixes {
            let inside = b.setp(Cmp::Lt, Type::U64, idx, count);
            b.guarded(
                Guard {
                    pred: inside,
                    negate: false,
                },
                |b| {
                    let value = b.binary(BinOp::Add, Type::U64, start, local);
                    let slot = b.binary(BinOp::Add, Type::U64, idx, Operand::Int(1));
                    store_index(b, out, slot, output_elem, value);
                },
            );
        }
    });
    e.finish(tile_grid(n))
}

/// Everything `masked_select_jagged` is specialized on.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactDesc {
    /// Entry-name prefix.
    pub name: String,
    /// Row width `W`.
    pub width: u64,
    /// Element type of the values (copied bit for bit).
    pub dtype: DType,
    /// Offsets element type (input and output).
    pub index: DType,
}

/// `masked_select_jagged`. Inputs: 0 = values, 1 = offsets, 2 = mask (u8);
/// outputs: 0 = values (capacity `T` rows), 1 = offsets `[B + 1]`;
/// scratch: 0 = tile sums, 1 = row positions (`T + 1` u64).
pub fn compact_kernels(desc: &CompactDesc) -> Vec<Plan> {
    let mut plans = scan_kernels(
        &desc.name,
        ParamBinding::Input(2),
        DType::U8,
        ParamBinding::Scratch(1),
        DType::I64,
        ParamBinding::Scratch(0),
        SizeExpr::TotalRows,
    );
    let ch = chunking(desc.width, desc.dtype);
    let work_items = SizeExpr::TotalRows * SizeExpr::Const(ch.chunks);
    let mut e = Entry::new(format!("{}_scatter", desc.name));
    let out_values = e.buffer("out_values", ParamBinding::Output(0));
    let out_offsets = e.buffer("out_offsets", ParamBinding::Output(1));
    let values = e.buffer("values", ParamBinding::Input(0));
    let offsets = e.buffer("offsets", ParamBinding::Input(1));
    let mask = e.buffer("mask", ParamBinding::Input(2));
    let positions = e.buffer("positions", ParamBinding::Scratch(1));
    let batch = e.size("batch", SizeExpr::Batch);
    let work = e.size("work", work_items.clone());
    let b = &mut e.b;
    let (start, step) = b.global_thread_index();
    b.for_range_u64(start, work, step, |b, w| {
        let (row, chunk) = split_row_chunk(b, w, ch.chunks);
        let m = load_index(b, mask, row, DType::U8);
        let keep = b.setp(Cmp::Ne, Type::U64, m, Operand::Int(0));
        b.if_then(keep, false, |b| {
            let dst_row = load_index(b, positions, row, DType::I64);
            let src = row_elem(b, row, chunk, desc.width, ch.vec);
            let dst = row_elem(b, dst_row, chunk, desc.width, ch.vec);
            let raw = load_raw(b, values, src, desc.dtype, ch.vec);
            store_raw(b, out_values, dst, desc.dtype, raw);
        });
    });
    let batch_plus_one = b.binary(BinOp::Add, Type::U64, batch, Operand::Int(1));
    b.for_range_u64(start, batch_plus_one, step, |b, s| {
        let row = load_index(b, offsets, s, desc.index);
        let new_offset = load_index(b, positions, row, DType::I64);
        store_index(b, out_offsets, s, desc.index, new_offset);
    });
    let items = work_items + (SizeExpr::Batch + SizeExpr::Const(1));
    plans.push(e.finish(grid(items, u64::from(BLOCK_THREADS))));
    plans
}
