//! The interpreter's side of Hopper's asynchronous copies: mbarrier objects, bulk and
//! tensor copies, `tensormap.replace`, `elect.sync`, and their checker findings.
//!
//! Bulk copies complete when they are issued: a load reads global memory and writes
//! shared memory at once and performs its `complete_tx` on the mbarrier. The bytes it
//! wrote stay marked as pending (the checker's cp.async flag, so a read reports
//! [`CheckKind::PendingAsyncCopyRead`]) until a wait on that mbarrier observes the phase
//! they completed in. `try_wait` blocks its lanes until the phase completes; when
//! nothing else in the CTA can run, the blocked waits time out (return false) once per
//! mbarrier state change, and a deadlock after that is
//! [`CheckKind::MbarrierNeverCompletes`]. `test_wait` never blocks. For the race
//! checker, the arrivals and transaction completions of a phase (the arriving warp's
//! vector clock, or the issuing warp's for a bulk copy) are ordered before what a warp
//! does after a wait that saw the phase complete. Stores (shared -> global)
//! complete when issued, so `cp.async.bulk.commit_group` / `wait_group` have nothing
//! left to wait for. The cost model counts each copy's in-bounds global bytes and
//! distinct 32-byte sectors.

use std::collections::{HashMap, HashSet};

use super::{LaunchCtx, PENDING, Place, SHARED_WINDOW, VC, WINDOW_SIZE, Warp, Worker, join, lanes};
use crate::error::{CheckKind, EmuError, Space};
use crate::ir::{Addr, MemSpace, Src, Ty};
use crate::mbarrier::{MAX_COUNT, Mbarrier, Misuse};
use crate::memory::GLOBAL_BASE;
use crate::tensormap::{TENSOR_MAP_BYTES, TensorMap, TensorMapSwizzle, Tiled, offset};
use crate::tma::{AsyncOp, MbarOp, TmapField, box_elements};

/// The shared bytes a copy of `n` bytes placed by `swizzle` may touch: a swizzle permutes
/// 16-byte chunks within each 128-byte segment, so a swizzled box spans whole segments.
fn extent(n: u32, swizzle: TensorMapSwizzle) -> u64 {
    let n = u64::from(n);
    match swizzle.span() {
        Some(_) => n.next_multiple_of(128),
        None => n,
    }
}

/// Barrier id of lanes blocked in `mbarrier.try_wait` (named barriers are 0 to 15).
const MBAR_WAIT: u32 = 16;

/// Bytes a bulk copy delivered whose phase no wait has observed yet.
struct Landed {
    mbar: u32,
    /// The phase the copy's bytes completed in.
    phase: u64,
    dst: u32,
    len: u32,
}

/// [`Waiter::mbar`] of lanes whose wait is already done but that blocked with the
/// other lanes of their warp: they are released at once.
const READY: u32 = u32::MAX;

/// Lanes of a warp blocked in `try_wait` on the mbarrier at `mbar` (or [`READY`]).
struct Waiter {
    warp: u32,
    lanes: u32,
    mbar: u32,
    /// The parity waited for, or the state from `arrive`.
    target: u64,
    parity: bool,
    /// The wait's predicate register (false when the wait times out).
    d: Option<u32>,
    line: u32,
}

/// What [`Worker::stuck_waiters`] did at a deadlock.
pub(super) enum Stuck {
    /// No lane waits on an mbarrier: the deadlock is someone else's.
    No,
    /// The waits timed out (returned false): the CTA goes on.
    TimedOut,
    /// The waits can never complete: reported, the CTA stops.
    Reported,
}

/// The race checker's clocks of one mbarrier.
struct MbarClocks {
    /// Join of the clocks of the current phase's arrivals and transaction completions.
    arrived: [u32; VC],
    /// `arrived` of the last completed phase: a successful wait joins it.
    done: [u32; VC],
}

impl Default for MbarClocks {
    fn default() -> MbarClocks {
        MbarClocks {
            arrived: [0; VC],
            done: [0; VC],
        }
    }
}

/// Per-CTA state of the asynchronous-copy machinery.
#[derive(Default)]
pub(super) struct AsyncState {
    /// Initialized mbarriers by shared offset.
    mbars: HashMap<u32, Mbarrier>,
    /// Their race-checker clocks.
    clocks: HashMap<u32, MbarClocks>,
    landed: Vec<Landed>,
    waiters: Vec<Waiter>,
    /// Count of mbarrier state changes (init, inval, arrivals, transaction bytes).
    changes: u64,
    /// `changes` when the waits last timed out.
    timed_out_at: Option<u64>,
}

impl AsyncState {
    /// Forgets everything (a new CTA).
    pub(super) fn reset(&mut self) {
        self.mbars.clear();
        self.clocks.clear();
        self.landed.clear();
        self.waiters.clear();
        self.timed_out_at = None;
    }
}

/// The global bytes and distinct 32-byte sectors one bulk or tensor copy moves (the
/// cost model's counts).
#[derive(Default)]
struct Traffic {
    bytes: u64,
    sectors: HashSet<u64>,
}

impl Traffic {
    /// Counts `n` bytes at global address `a`.
    fn add(&mut self, a: u64, n: u64) {
        self.bytes += n;
        self.sectors.extend(a / 32..(a + n).div_ceil(32));
    }
}

impl Waiter {
    /// Whether the phase waited for has completed on `m`.
    fn done(&self, m: &Mbarrier) -> bool {
        if self.parity {
            m.parity_done(self.target)
        } else {
            m.state_done(self.target)
        }
    }
}

impl Warp {
    /// Leaves converged mode, storing the common PC in every runnable lane's PC: lanes
    /// that block now, or are released while the others run on, keep their own PCs.
    pub(super) fn spread_pc(&mut self) {
        if self.converged {
            for l in lanes(self.live & !self.blocked) {
                self.pc[l as usize] = self.upc;
            }
            self.converged = false;
        }
    }
}

impl<'g> Worker<'g> {
    /// Warp `w` arrives (or completes transaction bytes) on the mbarrier at `mbar`: what
    /// it did so far is ordered before the waits that see this phase complete; `done`:
    /// the arrival completed the phase.
    fn mbar_release(&mut self, mbar: u32, w: u32, done: bool) {
        let c = self.asyncs.clocks.entry(mbar).or_default();
        let row = w as usize * VC;
        join(&mut c.arrived, &self.vc[row..row + VC]);
        if done {
            c.done = c.arrived;
            c.arrived = [0; VC];
        }
        self.tick(w);
    }

    /// Warp `w`'s wait saw the last completed phase of the mbarrier at `mbar`.
    fn mbar_acquire(&mut self, mbar: u32, w: u32) {
        if let Some(c) = self.asyncs.clocks.get(&mbar) {
            let row = w as usize * VC;
            join(&mut self.vc[row..row + VC], &c.done);
        }
    }

    /// Runs one asynchronous-copy instruction for the `active` lanes (of `mask`, the lanes
    /// at the instruction).
    pub(super) fn async_op(
        &mut self,
        ctx: &LaunchCtx<'g>,
        w: &mut Warp,
        op: &AsyncOp,
        mask: u32,
        active: u32,
        line: u32,
    ) -> Result<super::Flow, EmuError> {
        match op {
            AsyncOp::Mbar {
                op,
                space,
                addr,
                d,
                a,
            } => return self.mbar(ctx, w, *op, *space, *addr, *d, *a, active, line),
            AsyncOp::BulkLoad {
                dst,
                src,
                size,
                mbar,
            } => {
                for l in lanes(active) {
                    let tid = w.id * 32 + l;
                    let n = self.rd(ctx, w, *size, l) as u32;
                    let (d, s) = (self.addr(ctx, w, *dst, l), self.addr(ctx, w, *src, l));
                    let mb = self.addr(ctx, w, *mbar, l);
                    let dst = self.bulk_shared(ctx, d, n, TensorMapSwizzle::None, tid, line);
                    let mut data = Vec::new();
                    if dst.is_some() {
                        data.resize(n as usize, 0);
                        if self.bulk_global(ctx, s, n, false, tid, line)
                            && let Some((base, al)) = ctx.global.find(s, n as u64)
                        {
                            al.read(s - base, &mut data);
                            let mut t = Traffic::default();
                            t.add(s, n as u64);
                            self.count_traffic(t, false);
                        }
                    }
                    self.land(ctx, mb, dst, &data, n, TensorMapSwizzle::None, tid, line);
                }
            }
            AsyncOp::BulkStore { dst, src, size } => {
                for l in lanes(active) {
                    let tid = w.id * 32 + l;
                    let n = self.rd(ctx, w, *size, l) as u32;
                    let (d, s) = (self.addr(ctx, w, *dst, l), self.addr(ctx, w, *src, l));
                    let Some(off) = self.bulk_shared(ctx, s, n, TensorMapSwizzle::None, tid, line)
                    else {
                        continue;
                    };
                    self.shared_read_check(ctx, off, n, w.id, tid, line);
                    if self.bulk_global(ctx, d, n, true, tid, line)
                        && let Some((base, al)) = ctx.global.find(d, n as u64)
                    {
                        al.write(d - base, &self.shared[off as usize..(off + n) as usize]);
                        let mut t = Traffic::default();
                        t.add(d, n as u64);
                        self.count_traffic(t, true);
                    }
                }
            }
            AsyncOp::BulkGroup => {}
            AsyncOp::Tensor {
                smem,
                tmap,
                tmap_space,
                coords,
                mbar,
            } => {
                for l in lanes(active) {
                    let tid = w.id * 32 + l;
                    let t = self.tensor_map(ctx, w, *tmap_space, *tmap, l, line)?;
                    if t.rank != coords.len() {
                        return Err(self.runtime(
                            ctx,
                            line,
                            tid,
                            format!(
                                "a {}d tensor copy through a tensor map of rank {}",
                                coords.len(),
                                t.rank
                            ),
                        ));
                    }
                    let c: Vec<i64> = coords
                        .iter()
                        .map(|&s| self.rd(ctx, w, s, l) as u32 as i32 as i64)
                        .collect();
                    let s = self.addr(ctx, w, *smem, l);
                    // Larger than shared memory when it does not fit: reported as such.
                    let bytes = u32::try_from(t.box_bytes()).unwrap_or(u32::MAX);
                    let off = self.bulk_shared(ctx, s, bytes, t.swizzle, tid, line);
                    match mbar {
                        Some(mb) => {
                            let mb = self.addr(ctx, w, *mb, l);
                            self.tensor_load(ctx, &t, &c, off, bytes, mb, tid, line)
                        }
                        None => {
                            if let Some(off) = off {
                                self.tensor_store(ctx, &t, &c, off, w.id, tid, line)
                            }
                        }
                    }
                }
            }
            AsyncOp::Replace {
                field,
                space,
                addr,
                ord,
                value,
            } => {
                for l in lanes(active) {
                    let tid = w.id * 32 + l;
                    let v = self.rd(ctx, w, *value, l);
                    let (off, size) = match field {
                        TmapField::GlobalAddress => (offset::ADDRESS, 8),
                        TmapField::Rank => (offset::RANK, 1),
                        TmapField::ElemType => (offset::ELEMTYPE, 1),
                        TmapField::Interleave => (offset::INTERLEAVE, 1),
                        TmapField::Swizzle => (offset::SWIZZLE, 1),
                        TmapField::Fill => (offset::FILL, 1),
                        TmapField::GlobalDim => (offset::GLOBAL_DIM + 8 * *ord as usize, 8),
                        TmapField::BoxDim => (offset::BOX_DIM + 4 * *ord as usize, 4),
                        TmapField::ElementStride => (offset::ELEMENT_STRIDE + 4 * *ord as usize, 4),
                        TmapField::GlobalStride if *ord < 4 => {
                            (offset::GLOBAL_STRIDE + 8 * *ord as usize, 8)
                        }
                        TmapField::GlobalStride => {
                            return Err(self.runtime(
                                ctx,
                                line,
                                tid,
                                format!("tensormap.replace.global_stride ordinal {ord}: a tensor has strides of dimensions 1 to 4 (ordinals 0 to 3)"),
                            ));
                        }
                    };
                    let ty = [Ty::B8, Ty::B32, Ty::B64][size / 4];
                    let a = self.addr(ctx, w, *addr, l) + off as u64;
                    self.store(
                        ctx,
                        *space,
                        a,
                        &v.to_le_bytes()[..size],
                        ty,
                        w.id,
                        tid,
                        line,
                    );
                }
            }
            AsyncOp::TmapCopy { dst, src } => {
                for l in lanes(active) {
                    let tid = w.id * 32 + l;
                    let (d, s) = (self.addr(ctx, w, *dst, l), self.addr(ctx, w, *src, l));
                    let mut buf = [0u8; 8];
                    for k in 0..(TENSOR_MAP_BYTES as u64 / 8) {
                        self.load(ctx, MemSpace::Shared, s + 8 * k, &mut buf, w.id, tid, line);
                        self.store(
                            ctx,
                            MemSpace::Global,
                            d + 8 * k,
                            &buf,
                            Ty::B64,
                            w.id,
                            tid,
                            line,
                        );
                    }
                }
            }
            AsyncOp::Elect { d, p, mask: m } => {
                if !self.sync_members(ctx, w, mask, active, *m, line, "elect.sync")? {
                    return Ok(super::Flow::Next);
                }
                let member = self.rd(ctx, w, *m, active.trailing_zeros()) as u32;
                let leader = (member & active).trailing_zeros();
                for l in lanes(active) {
                    if let Some(d) = d {
                        w.regs[*d as usize * 32 + l as usize] = u64::from(leader);
                    }
                    if let Some(p) = p {
                        w.regs[*p as usize * 32 + l as usize] = u64::from(l == leader);
                    }
                }
            }
        }
        Ok(super::Flow::Next)
    }

    /// Checks the global side of a bulk copy: 16-byte aligned address and size, inside
    /// one allocation. Reports and returns false when it is bad.
    fn bulk_global(
        &mut self,
        ctx: &LaunchCtx<'g>,
        a: u64,
        n: u32,
        write: bool,
        tid: u32,
        line: u32,
    ) -> bool {
        if !a.is_multiple_of(16) || !n.is_multiple_of(16) {
            let detail = "bulk copies move multiples of 16 bytes between 16-byte aligned addresses";
            self.report(
                ctx,
                CheckKind::Misaligned,
                Space::Global,
                a,
                n,
                write,
                tid,
                line,
                detail.into(),
            );
            return false;
        }
        if ctx.global.find(a, n as u64).is_none() {
            let detail = ctx.global.describe(a);
            self.report(
                ctx,
                CheckKind::OutOfBounds,
                Space::Global,
                a,
                n,
                write,
                tid,
                line,
                detail,
            );
            return false;
        }
        true
    }

    /// The shared offset of a bulk copy's `n` bytes at `a` (a shared or shared::cluster
    /// address of this CTA, or a generic one), checked to be 16-byte aligned (128 with a
    /// swizzle) and inside the CTA's shared memory (whole 128-byte segments with a
    /// swizzle); `None` after a report.
    fn bulk_shared(
        &mut self,
        ctx: &LaunchCtx<'g>,
        a: u64,
        n: u32,
        swizzle: TensorMapSwizzle,
        tid: u32,
        line: u32,
    ) -> Option<u32> {
        let off = if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) {
            a - SHARED_WINDOW
        } else {
            a
        };
        let align = if swizzle.span().is_some() { 128 } else { 16 };
        if !off.is_multiple_of(align as u64) || !n.is_multiple_of(16) {
            let detail = format!(
                "a bulk or tensor copy's shared memory must be {align}-byte aligned (128 for swizzled boxes, 16 otherwise) and a multiple of 16 bytes"
            );
            self.report(
                ctx,
                CheckKind::Misaligned,
                Space::Shared,
                off,
                n,
                true,
                tid,
                line,
                detail,
            );
            return None;
        }
        if off.saturating_add(extent(n, swizzle)) > u64::from(ctx.shared_bytes) {
            let detail = format!("the CTA has {} bytes of shared memory", ctx.shared_bytes);
            self.report(
                ctx,
                CheckKind::OutOfBounds,
                Space::Shared,
                off,
                n,
                true,
                tid,
                line,
                detail,
            );
            return None;
        }
        Some(off as u32)
    }

    /// Delivers a bulk copy: `data` to shared offset `dst` in 16-byte chunks placed by
    /// `swizzle` (nothing when `dst` is `None`, after a report), and completes `n`
    /// transaction bytes on the mbarrier at `mb`.
    #[allow(clippy::too_many_arguments)]
    fn land(
        &mut self,
        ctx: &LaunchCtx<'g>,
        mb: u64,
        dst: Option<u32>,
        data: &[u8],
        n: u32,
        swizzle: TensorMapSwizzle,
        tid: u32,
        line: u32,
    ) {
        let Some(mbar) = self.mbar_at(ctx, MemSpace::Shared, mb, tid, line) else {
            return;
        };
        if let Some(dst) = dst {
            let marked = self.cta_gen | PENDING;
            for (i, chunk) in data.chunks(16).enumerate() {
                let p = swizzle.apply(dst + 16 * i as u32) as usize;
                self.shared[p..p + chunk.len()].copy_from_slice(chunk);
                for s in &mut self.shadow[p..p + chunk.len()] {
                    s.init = marked;
                    s.w_clk = 0;
                }
            }
        }
        let Some(m) = self.asyncs.mbars.get_mut(&mbar) else {
            return;
        };
        let (done, bad) = m.complete_tx(n);
        let phase = m.phase - u64::from(done);
        self.asyncs.changes += 1;
        if let Some(dst) = dst {
            self.asyncs.landed.push(Landed {
                mbar,
                phase,
                dst,
                // Checked to fit in shared memory.
                len: extent(n, swizzle) as u32,
            });
        }
        self.misuse(ctx, bad, mbar, tid, line);
        self.mbar_release(mbar, tid / 32, done);
    }

    /// A tile-mode tensor load of the box (`bytes` long) at `c` into shared offset `dst`
    /// (`None`: a bad destination, already reported; only the bytes complete).
    #[allow(clippy::too_many_arguments)]
    fn tensor_load(
        &mut self,
        ctx: &LaunchCtx<'g>,
        t: &Tiled,
        c: &[i64],
        dst: Option<u32>,
        bytes: u32,
        mb: u64,
        tid: u32,
        line: u32,
    ) {
        let esize = t.ty.size();
        let mut data = Vec::new();
        let fill = if t.nan_fill { t.ty.nan_bits() } else { 0 };
        let mut traffic = Traffic::default();
        if dst.is_some() {
            data.resize(bytes as usize, 0);
            box_elements(t, c, |o, g| {
                let v = match g {
                    None => fill,
                    Some(a) => {
                        match self.place(ctx, MemSpace::Global, a, esize, false, tid, line) {
                            Some(p) => {
                                traffic.add(a, esize as u64);
                                self.read_small(ctx, &p, 0, esize)
                            }
                            None => 0,
                        }
                    }
                };
                data[o as usize..(o + esize) as usize]
                    .copy_from_slice(&v.to_le_bytes()[..esize as usize]);
            });
        }
        self.count_traffic(traffic, false);
        self.land(ctx, mb, dst, &data, bytes, t.swizzle, tid, line);
    }

    /// A tile-mode tensor store of the box at `c` from shared offset `src`; elements
    /// outside the tensor are not written.
    #[allow(clippy::too_many_arguments)]
    fn tensor_store(
        &mut self,
        ctx: &LaunchCtx<'g>,
        t: &Tiled,
        c: &[i64],
        src: u32,
        wid: u32,
        tid: u32,
        line: u32,
    ) {
        let esize = t.ty.size();
        let mut traffic = Traffic::default();
        box_elements(t, c, |o, g| {
            let Some(a) = g else {
                return;
            };
            let s = t.swizzle.apply(src + o);
            self.shared_read_check(ctx, s, esize, wid, tid, line);
            let v = super::le(&self.shared, s as usize, esize);
            if let Some(p) = self.place(ctx, MemSpace::Global, a, esize, true, tid, line) {
                self.write_small(ctx, &p, 0, esize, v);
                traffic.add(a, esize as u64);
            }
        });
        self.count_traffic(traffic, true);
    }

    /// Adds a copy's global traffic to the cost model.
    fn count_traffic(&mut self, t: Traffic, write: bool) {
        let sectors = t.sectors.len() as u64;
        if write {
            self.profile.global_write_bytes += t.bytes;
            self.profile.global_write_sectors += sectors;
        } else {
            self.profile.global_read_bytes += t.bytes;
            self.profile.global_read_sectors += sectors;
        }
    }

    /// Reads and decodes the tensor map at `addr` (a `.param` offset, or a generic or
    /// global address).
    fn tensor_map(
        &mut self,
        ctx: &LaunchCtx<'g>,
        w: &Warp,
        space: MemSpace,
        addr: Addr,
        l: u32,
        line: u32,
    ) -> Result<Tiled, EmuError> {
        let tid = w.id * 32 + l;
        let a = self.addr(ctx, w, addr, l);
        let space = match space {
            MemSpace::Generic if a < GLOBAL_BASE => MemSpace::Param,
            s => s,
        };
        let mut map = [0u8; TENSOR_MAP_BYTES];
        for (k, chunk) in map.chunks_mut(8).enumerate() {
            self.load(ctx, space, a + 8 * k as u64, chunk, w.id, tid, line);
        }
        TensorMap(map).decode().map_err(|e| {
            self.runtime(
                ctx,
                line,
                tid,
                format!("the tensor map at {a:#x} is invalid: {e}"),
            )
        })
    }

    /// The shared offset of the mbarrier object at `a` in `space`, checked (8-byte
    /// aligned, in shared memory) and initialized; `None` after a report.
    fn mbar_at(
        &mut self,
        ctx: &LaunchCtx<'g>,
        space: MemSpace,
        a: u64,
        tid: u32,
        line: u32,
    ) -> Option<u32> {
        let off = self.mbar_place(ctx, space, a, tid, line)?;
        if !self.asyncs.mbars.contains_key(&off) {
            let detail = "no mbarrier.init on this object (or it was invalidated)".to_string();
            self.report(
                ctx,
                CheckKind::MbarrierUninitialized,
                Space::Shared,
                off as u64,
                8,
                false,
                tid,
                line,
                detail,
            );
            return None;
        }
        Some(off)
    }

    /// The shared offset of the mbarrier object at `a` in `space`, checked to be 8-byte
    /// aligned and in shared memory; `None` after a report.
    fn mbar_place(
        &mut self,
        ctx: &LaunchCtx<'g>,
        space: MemSpace,
        a: u64,
        tid: u32,
        line: u32,
    ) -> Option<u32> {
        let a = match space {
            MemSpace::Generic if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) => {
                a - SHARED_WINDOW
            }
            MemSpace::Generic => {
                let detail = "an mbarrier object must be in shared memory".to_string();
                self.report(
                    ctx,
                    CheckKind::OutOfBounds,
                    Space::Global,
                    a,
                    8,
                    true,
                    tid,
                    line,
                    detail,
                );
                return None;
            }
            _ => a,
        };
        match self.place(ctx, MemSpace::Shared, a, 8, true, tid, line) {
            Some(Place::Shared(off)) => Some(off),
            _ => None,
        }
    }

    /// Reports a misuse of the mbarrier at `mbar`.
    fn misuse(&mut self, ctx: &LaunchCtx<'g>, bad: Option<Misuse>, mbar: u32, tid: u32, line: u32) {
        let Some(bad) = bad else {
            return;
        };
        let kind = match bad {
            Misuse::Arrivals { .. } => CheckKind::MbarrierArrivals,
            Misuse::Tx { .. } => CheckKind::MbarrierTxCount,
        };
        self.report(
            ctx,
            kind,
            Space::Shared,
            mbar as u64,
            8,
            true,
            tid,
            line,
            bad.to_string(),
        );
    }

    /// Marks the bytes of every landed copy of `mbar` whose phase has completed as
    /// delivered (a wait observed it).
    fn observe(&mut self, mbar: u32) {
        let Some(phase) = self.asyncs.mbars.get(&mbar).map(|m| m.phase) else {
            return;
        };
        let (cur, marked) = (self.cta_gen, self.cta_gen | PENDING);
        let shadow = &mut self.shadow;
        self.asyncs.landed.retain(|c| {
            if c.mbar != mbar || c.phase >= phase {
                return true;
            }
            for s in &mut shadow[c.dst as usize..(c.dst + c.len) as usize] {
                if s.init == marked {
                    s.init = cur;
                }
            }
            false
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn mbar(
        &mut self,
        ctx: &LaunchCtx<'g>,
        w: &mut Warp,
        op: MbarOp,
        space: MemSpace,
        addr: Addr,
        d: Option<u32>,
        a: Option<Src>,
        active: u32,
        line: u32,
    ) -> Result<super::Flow, EmuError> {
        let mut blocked = 0u32;
        for l in lanes(active) {
            let tid = w.id * 32 + l;
            let at = self.addr(ctx, w, addr, l);
            let v = a.map(|s| self.rd(ctx, w, s, l));
            if op == MbarOp::Init {
                let count = v.unwrap_or(0);
                if count == 0 || count > u64::from(MAX_COUNT) {
                    return Err(self.runtime(
                        ctx,
                        line,
                        tid,
                        format!("mbarrier.init count {count} is not 1 to 2^20 - 1"),
                    ));
                }
                if let Some(off) = self.mbar_place(ctx, space, at, tid, line) {
                    self.asyncs.mbars.insert(off, Mbarrier::new(count as u32));
                    self.asyncs.clocks.insert(off, MbarClocks::default());
                    self.asyncs.changes += 1;
                }
                continue;
            }
            let Some(mbar) = self.mbar_at(ctx, space, at, tid, line) else {
                // A wait on a bad object returns true, so the kernel goes on after the report.
                if let Some(d) = d {
                    w.regs[d as usize * 32 + l as usize] = 1;
                }
                continue;
            };
            if !matches!(op, MbarOp::Wait { .. }) {
                self.asyncs.changes += 1;
            }
            let Some(m) = self.asyncs.mbars.get_mut(&mbar) else {
                continue;
            };
            let (done, bad, out) = match op {
                // Initialized above.
                MbarOp::Init => continue,
                MbarOp::Inval => {
                    self.asyncs.mbars.remove(&mbar);
                    continue;
                }
                MbarOp::Arrive {
                    expect_tx,
                    no_complete,
                } => {
                    let mut bad = None;
                    let count = if expect_tx {
                        bad = m.expect_tx(v.unwrap_or(0) as u32);
                        1
                    } else {
                        v.unwrap_or(1) as u32
                    };
                    let (state, done, bad2) = m.arrive(count, no_complete);
                    (done, bad.or(bad2), Some(state))
                }
                MbarOp::ExpectTx => (false, m.expect_tx(v.unwrap_or(0) as u32), None),
                MbarOp::CompleteTx => {
                    let (done, bad) = m.complete_tx(v.unwrap_or(0) as u32);
                    (done, bad, None)
                }
                MbarOp::Wait { parity, try_ } => {
                    let target = v.unwrap_or(0);
                    let waiter = Waiter {
                        warp: w.id,
                        lanes: 1 << l,
                        mbar,
                        target,
                        parity,
                        d,
                        line,
                    };
                    let ok = waiter.done(m);
                    if ok {
                        self.observe(mbar);
                        self.mbar_acquire(mbar, w.id);
                    } else if try_ {
                        // Blocks until the phase completes, then returns true.
                        blocked |= 1 << l;
                        match self.asyncs.waiters.iter_mut().find(|x| {
                            (x.warp, x.mbar, x.target, x.parity, x.d, x.line)
                                == (w.id, mbar, target, parity, d, line)
                        }) {
                            Some(x) => x.lanes |= 1 << l,
                            None => self.asyncs.waiters.push(waiter),
                        }
                    }
                    (false, None, Some(u64::from(ok || try_)))
                }
            };
            if let (Some(d), Some(out)) = (d, out) {
                w.regs[d as usize * 32 + l as usize] = out;
            }
            self.misuse(ctx, bad, mbar, tid, line);
            if !matches!(op, MbarOp::Wait { .. }) {
                self.mbar_release(mbar, w.id, done);
            }
        }
        if blocked == 0 {
            return Ok(super::Flow::Next);
        }
        // Lanes that are done wait with the blocked ones and are released at once.
        let ready = active & !blocked;
        if ready != 0 {
            self.asyncs.waiters.push(Waiter {
                warp: w.id,
                lanes: ready,
                mbar: READY,
                target: 0,
                parity: true,
                d,
                line,
            });
        }
        w.set_bar_lanes(MBAR_WAIT, active);
        w.spread_pc();
        Ok(super::Flow::Barrier)
    }

    /// Unblocks the `try_wait` lanes whose phase has completed; returns whether any were.
    pub(super) fn release_waiters(&mut self, warps: &mut [Warp]) -> bool {
        let mut released = Vec::new();
        let mbars = &self.asyncs.mbars;
        self.asyncs.waiters.retain(|x| {
            let done = x.mbar == READY || mbars.get(&x.mbar).is_some_and(|m| x.done(m));
            if done {
                released.push((x.warp, x.lanes, x.mbar));
            }
            !done
        });
        for &(wi, m, mbar) in &released {
            let w = &mut warps[wi as usize];
            w.spread_pc();
            w.blocked &= !m;
            self.observe(mbar);
            if mbar != READY {
                self.mbar_acquire(mbar, wi);
            }
        }
        !released.is_empty()
    }

    /// At a deadlock with lanes blocked in `try_wait`: the first time since the last
    /// mbarrier state change, the waits time out (their predicates become false and the
    /// lanes go on, as a wait's time limit allows); otherwise nothing can complete them
    /// and they are reported.
    pub(super) fn stuck_waiters(&mut self, ctx: &LaunchCtx<'g>, warps: &mut [Warp]) -> Stuck {
        let stuck: Vec<Waiter> = std::mem::take(&mut self.asyncs.waiters);
        if stuck.is_empty() {
            return Stuck::No;
        }
        if self.asyncs.timed_out_at != Some(self.asyncs.changes) {
            self.asyncs.timed_out_at = Some(self.asyncs.changes);
            for x in stuck {
                let w = &mut warps[x.warp as usize];
                w.spread_pc();
                w.blocked &= !x.lanes;
                if let Some(d) = x.d {
                    for l in lanes(x.lanes) {
                        w.regs[d as usize * 32 + l as usize] = 0;
                    }
                }
            }
            return Stuck::TimedOut;
        }
        for x in stuck.into_iter().filter(|x| x.mbar != READY) {
            let detail = match self.asyncs.mbars.get(&x.mbar) {
                Some(m) => format!(
                    "waits for {:#x} but the mbarrier is in phase {} and nothing is left to arrive or complete bytes on it",
                    x.target, m.phase
                ),
                None => "the mbarrier was invalidated".to_string(),
            };
            let tid = x.warp * 32 + x.lanes.trailing_zeros();
            self.report(
                ctx,
                CheckKind::MbarrierNeverCompletes,
                Space::Shared,
                x.mbar as u64,
                8,
                false,
                tid,
                x.line,
                detail,
            );
        }
        Stuck::Reported
    }
}
