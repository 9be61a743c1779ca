//! Decoded forms of Hopper's asynchronous-copy instructions (mbarriers, bulk copies,
//! tensor copies through tensor maps, `tensormap.replace`, `elect.sync`), and the
//! geometry of a tensor copy's box. `decode/asyncs.rs` builds them, `exec/asyncs.rs` runs
//! them.

use crate::ir::{Addr, MemSpace, Src};
use crate::tensormap::Tiled;

/// The `mbarrier` operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MbarOp {
    /// `init` with the expected arrival count.
    Init,
    /// `inval`.
    Inval,
    /// `arrive` (count `a`, default 1), `.noComplete` when `no_complete`; with
    /// `.expect_tx` `a` is the transaction count and the count is 1.
    Arrive { expect_tx: bool, no_complete: bool },
    /// `expect_tx` of `a` bytes.
    ExpectTx,
    /// `complete_tx` of `a` bytes.
    CompleteTx,
    /// `test_wait` / `try_wait` (`try_`), on a parity or on a state from `arrive`.
    Wait { parity: bool, try_: bool },
}

/// A field of `tensormap.replace.tile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TmapField {
    GlobalAddress,
    Rank,
    BoxDim,
    GlobalDim,
    GlobalStride,
    ElementStride,
    ElemType,
    Interleave,
    Swizzle,
    Fill,
}

/// One decoded asynchronous-copy instruction.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AsyncOp {
    /// `mbarrier.*` on the object at `addr` (in `space`: shared, or generic); `d` gets a
    /// wait's predicate or an arrive's state; `a` is the count or byte operand.
    Mbar {
        op: MbarOp,
        space: MemSpace,
        addr: Addr,
        d: Option<u32>,
        a: Option<Src>,
    },
    /// `cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes`.
    BulkLoad {
        dst: Addr,
        src: Addr,
        size: Src,
        mbar: Addr,
    },
    /// `cp.async.bulk.global.shared::cta.bulk_group`.
    BulkStore { dst: Addr, src: Addr, size: Src },
    /// `cp.async.bulk.commit_group` and `cp.async.bulk.wait_group(.read)`: bulk copies
    /// complete when issued, so these only check their placement.
    BulkGroup,
    /// `cp.async.bulk.tensor.Nd` tile-mode load (global -> shared, completing on `mbar`)
    /// or store (`mbar` is `None`: shared -> global, bulk group). `tmap` is in `tmap_space`.
    Tensor {
        smem: Addr,
        tmap: Addr,
        tmap_space: MemSpace,
        coords: Vec<Src>,
        mbar: Option<Addr>,
    },
    /// `tensormap.replace.tile.field.space.b1024.type [addr], (ord,) value`.
    Replace {
        field: TmapField,
        space: MemSpace,
        addr: Addr,
        ord: u32,
        value: Src,
    },
    /// `tensormap.cp_fenceproxy.global.shared::cta...` of 128 bytes.
    TmapCopy { dst: Addr, src: Addr },
    /// `elect.sync d|p, membermask`.
    Elect {
        d: Option<u32>,
        p: Option<u32>,
        mask: Src,
    },
}

/// Calls `f(offset, global)` for every element of the box of `t` at `coords`, in
/// shared-memory order: `offset` is the element's unswizzled byte offset in the box,
/// `global` its global address, or `None` when it lies outside the tensor.
/// `coords` are `i64` so that `coords + k * elementStrides` cannot overflow.
pub(crate) fn box_elements(t: &Tiled, coords: &[i64], mut f: impl FnMut(u32, Option<u64>)) {
    let lens: Vec<u32> = (0..t.rank).map(|d| t.box_len(d)).collect();
    let total: u64 = lens.iter().map(|&l| l as u64).product();
    let esize = t.ty.size();
    let mut k = vec![0u32; t.rank];
    for i in 0..total {
        let mut addr = Some(t.address);
        for d in 0..t.rank {
            let c = coords[d] + i64::from(k[d]) * i64::from(t.estrides[d]);
            addr = match addr {
                // Wrapping: a map whose strides overflow addresses nothing valid, which the
                // access's bounds check reports.
                Some(a) if c >= 0 && (c as u64) < t.dims[d] => {
                    Some(a.wrapping_add((c as u64).wrapping_mul(t.strides[d])))
                }
                _ => None,
            };
        }
        f(i as u32 * esize, addr);
        for d in 0..t.rank {
            k[d] += 1;
            if k[d] < lens[d] {
                break;
            }
            k[d] = 0;
        }
    }
}
