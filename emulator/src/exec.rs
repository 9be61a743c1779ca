//! The interpreter: runs the CTAs of a launch, warp by warp, with the memory checker.
//!
//! Each warp keeps one program counter per lane. A step executes the instruction at the
//! smallest PC among the warp's runnable lanes, for all lanes at that PC, which makes
//! structured divergent code reconverge at its join point. Warp-collective instructions
//! (shfl, vote, redux, ldmatrix, mma) require every lane of their member mask to be at
//! the instruction; anything else is a [`EmuError::Runtime`] error.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::decode::{KernelCode, MODULE_WINDOW};
use crate::error::{Budget, CheckKind, CheckReport, EmuError, Space};
use crate::ir::*;
use crate::memory::{Allocation, GlobalMemory};
use crate::num;
use crate::profile::{Class, Profile};

mod asyncs;
mod wgmma;

/// Generic-address window of shared memory (`cvta.shared` adds it).
pub const SHARED_WINDOW: u64 = 0x0100_0000_0000_0000;
/// Generic-address window of local memory.
pub const LOCAL_WINDOW: u64 = 0x0200_0000_0000_0000;
const WINDOW_SIZE: u64 = 1 << 32;
/// At most this many instructions run on one warp before the scheduler moves on (so
/// spin-waits on other warps make progress).
const WARP_SLICE: u32 = 4096;
/// Reports kept per launch.
pub const MAX_REPORTS: usize = 64;
/// [`Shadow::r_warp`] when several warps read the byte concurrently: their clocks are in
/// [`Worker::read_clocks`].
const MULTI: u16 = u16::MAX >> 1;
/// Entries of a vector clock (one per warp; a CTA has at most 32 warps).
const VC: usize = 32;

/// Everything about a launch that all CTAs share.
pub struct LaunchCtx<'a> {
    pub kernel: &'a KernelCode,
    pub global: &'a GlobalMemory,
    pub params: &'a [u8],
    /// Module-scope `.global`/`.const` variables (read-only here), at `MODULE_WINDOW`.
    pub module_data: &'a [u8],
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub dynamic_shared: u32,
    pub abort: &'a AtomicBool,
    /// True when one host thread runs every CTA: nothing else touches global memory.
    pub exclusive: bool,
    /// Most warp instructions one CTA may execute before the launch fails as a runaway.
    pub cta_instruction_limit: u64,
    /// Report shared-memory races that store (nearly) the value already there as errors,
    /// not warnings.
    pub strict_races: bool,
    /// Warp instructions all workers executed so far (each flushes its count every
    /// [`BUDGET_CHECK_EVERY`] instructions and at the end of each CTA).
    pub spent: &'a AtomicU64,
    /// Most warp instructions of the whole launch.
    pub max_warp_instructions: u64,
    /// When the launch started, and when it must have finished.
    pub start: Instant,
    pub deadline: Option<Instant>,
}

/// How many warp instructions a worker runs between two checks of the launch budget.
pub const BUDGET_CHECK_EVERY: u64 = 1 << 14;

/// Float values that differ by at most this many units in the last place count as the
/// same value for a shared-memory race (a warning, not an error).
pub const RACE_ULPS: u64 = 4;

/// Per-byte shadow state of shared memory for the checker (16 bytes). Generations and
/// clocks grow monotonically per worker, so nothing is cleared between CTAs: every
/// warp's vector clock starts a CTA above all clocks of earlier CTAs.
///
/// The race checker orders accesses happens-before style, one vector clock per warp
/// (accesses of one warp never race): a barrier orders what the warps that arrived at
/// it did before arriving before what the warps that waited on it do after it
/// completes; an mbarrier phase orders its arrivals (and transaction completions)
/// before what a thread does after a wait that saw the phase complete.
#[derive(Clone, Copy, Default)]
struct Shadow {
    /// The CTA generation when the byte was written in this CTA; that value with
    /// [`PENDING`] set while a cp.async to it is in flight; anything else: uninitialized.
    init: u32,
    /// The writing warp's own clock at the last write (0: ordered before everything, as
    /// a bulk copy's bytes, which their mbarrier phase guards instead).
    w_clk: u32,
    /// The reading warp's own clock at the last read, or with `r_warp` [`MULTI`] the
    /// index of the byte's read clocks in [`Worker::read_clocks`].
    r_clk: u32,
    /// Warp of the last write, with [`ATOMIC`] set when it was an atomic.
    w_warp: u16,
    /// Warp of the last read, or [`MULTI`] once reads of several warps were concurrent.
    r_warp: u16,
}

/// Flag of [`Shadow::init`]: a cp.async to the byte is not delivered yet.
const PENDING: u32 = 1 << 31;
/// Flag of [`Shadow::w_warp`]: the last write was atomic.
const ATOMIC: u16 = 1 << 15;

struct PendingCopy {
    dst: u32,
    len: u8,
    lane: u8,
    line: u32,
    data: [u8; 16],
}

struct Warp {
    id: u32,
    regs: Vec<u64>,
    pc: [u32; 32],
    /// When set, every runnable lane is at `upc` (`pc` may be stale).
    converged: bool,
    upc: u32,
    exists: u32,
    live: u32,
    blocked: u32,
    /// Barrier id each blocked lane waits on.
    bar_of: [u8; 32],
    /// Operand values of the current instruction, one row per source.
    scratch: [[u64; 32]; 4],
    open_copies: Vec<PendingCopy>,
    copy_groups: VecDeque<Vec<PendingCopy>>,
    wg: wgmma::WarpState,
}

/// Per-host-thread state, reused for every CTA the thread runs.
#[derive(Default)]
pub struct Worker<'g> {
    /// The allocation of the last global access (most accesses hit the same buffer).
    last_alloc: Option<(u64, &'g Allocation)>,
    shared: Vec<u8>,
    shadow: Vec<Shadow>,
    local: Vec<u8>,
    warps: Vec<Warp>,
    /// The race checker's vector clocks: row `w` ([`VC`] entries) is what warp `w` is
    /// ordered after; entry `w` of it is the warp's own clock.
    vc: Vec<u32>,
    /// Warps of the current CTA.
    nw: usize,
    /// The largest clock handed out by this worker.
    clock: u32,
    /// Per named barrier, the join of the clocks of the warps that arrived at the
    /// instance in progress.
    bar_vc: Vec<u32>,
    /// Clocks of concurrent reads of bytes in [`MULTI`] state, `nw` per byte, and the
    /// shared offset each group belongs to (cleared per CTA).
    read_clocks: Vec<u32>,
    read_owner: Vec<u32>,
    cta_gen: u32,
    ctaid: [u32; 3],
    arrived: [u32; 16],
    expected: [Option<u32>; 16],
    pub reports: Vec<CheckReport>,
    report_keys: HashSet<(CheckKind, u32)>,
    /// Findings that cannot change results (races storing nearly the same value).
    pub warnings: Vec<CheckReport>,
    warning_keys: HashSet<(CheckKind, u32)>,
    pub warp_instructions: u64,
    pub thread_instructions: u64,
    /// `warp_instructions` when the current CTA started.
    cta_start: u64,
    /// The part of `warp_instructions` added to [`LaunchCtx::spent`].
    flushed: u64,
    /// The cost model's counts of the CTAs this worker ran: traffic in `profile`,
    /// warp instructions by [`Class`] in `class_counts`.
    pub profile: Profile,
    pub class_counts: [u64; Class::COUNT],
    /// Shared memory that `wgmma.mma_async`s in flight read.
    wg: wgmma::CtaState,
    /// mbarriers, landed bulk copies and `try_wait` lanes of the current CTA.
    asyncs: asyncs::AsyncState,
}

/// `dst` becomes the entry-wise maximum of `dst` and `src` (vector clocks' join).
#[inline]
fn join(dst: &mut [u32], src: &[u32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (*d).max(s);
    }
}

#[inline]
fn lanes(mut m: u32) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros();
            m &= m - 1;
            Some(l)
        }
    })
}

/// What a step did to control flow.
enum Flow {
    Next,
    Jump(u32),
    Exit,
    Barrier,
}

/// Which memory a checked address resolved to.
enum Place<'g> {
    Global(&'g Allocation, u64),
    Module(usize),
    Shared(u32),
    Local(usize),
    Param(usize),
}

impl<'g> Worker<'g> {
    /// Runs one CTA to completion.
    pub fn run_cta(&mut self, ctx: &LaunchCtx<'g>, ctaid: [u32; 3]) -> Result<(), EmuError> {
        let k = ctx.kernel;
        let nthreads = ctx.block[0] * ctx.block[1] * ctx.block[2];
        let nwarps = nthreads.div_ceil(32);
        self.ctaid = ctaid;
        self.cta_start = self.warp_instructions;
        self.cta_gen += 1;
        self.start_clocks(nwarps as usize);
        self.arrived = [0; 16];
        self.expected = [None; 16];
        self.asyncs.reset();
        let sb = ctx.shared_bytes as usize;
        if self.shared.len() < sb {
            self.shared.resize(sb, 0);
            self.shadow.resize(sb, Shadow::default());
        }
        let lb = k.local_bytes as usize * nthreads as usize;
        if self.local.len() < lb {
            self.local.resize(lb, 0);
        }
        self.warps.truncate(nwarps as usize);
        while self.warps.len() < nwarps as usize {
            self.warps.push(Warp {
                id: self.warps.len() as u32,
                regs: Vec::new(),
                pc: [0; 32],
                converged: true,
                upc: 0,
                exists: 0,
                live: 0,
                blocked: 0,
                bar_of: [0; 32],
                scratch: [[0; 32]; 4],
                open_copies: Vec::new(),
                copy_groups: VecDeque::new(),
                wg: wgmma::WarpState::default(),
            });
        }
        for w in &mut self.warps {
            let n = (nthreads - w.id * 32).min(32);
            w.exists = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
            w.live = w.exists;
            w.blocked = 0;
            w.converged = true;
            w.upc = 0;
            w.regs.clear();
            w.regs.resize(k.nregs as usize * 32, 0);
            w.open_copies.clear();
            w.copy_groups.clear();
            w.wg = wgmma::WarpState::default();
        }
        if k.wgmma.is_some() {
            self.wg.reset(ctx.shared_bytes);
        }
        let mut warps = std::mem::take(&mut self.warps);
        let mut res = self.schedule(ctx, &mut warps);
        if res.is_ok() && k.wgmma.is_some() {
            res = self.wgmma_cta_end(ctx, &warps);
        }
        self.warps = warps;
        res?;
        self.check_budget(ctx)
    }

    fn schedule(&mut self, ctx: &LaunchCtx<'g>, warps: &mut [Warp]) -> Result<(), EmuError> {
        loop {
            if ctx.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            let mut ran = false;
            for wi in 0..warps.len() {
                if warps[wi].live & !warps[wi].blocked != 0 {
                    ran = true;
                    self.run_warp(ctx, &mut warps[wi])?;
                    self.release_barriers(warps);
                }
            }
            if warps.iter().all(|w| w.live == 0) {
                return Ok(());
            }
            if !ran && !self.release_barriers(warps) {
                match self.stuck_waiters(ctx, warps) {
                    asyncs::Stuck::No => {}
                    asyncs::Stuck::TimedOut => continue,
                    asyncs::Stuck::Reported => return Ok(()),
                }
                let waiting: u32 = warps
                    .iter()
                    .map(|w| (w.blocked & w.live).count_ones())
                    .sum();
                let live: u32 = warps.iter().map(|w| w.live.count_ones()).sum();
                let (wi, lane) = warps
                    .iter()
                    .find_map(|w| (w.blocked != 0).then(|| (w.id, w.blocked.trailing_zeros())))
                    .unwrap_or((0, 0));
                let w = &warps[wi as usize];
                let pc = if w.converged {
                    w.upc
                } else {
                    w.pc[lane as usize]
                };
                let line = ctx.kernel.code[pc.saturating_sub(1) as usize].line;
                return Err(self.runtime(
                    ctx,
                    line,
                    wi * 32 + lane,
                    format!("deadlock: {waiting} of {live} live threads wait at a barrier that cannot complete"),
                ));
            }
        }
    }

    /// Releases every barrier whose arrival count is reached; returns whether any was.
    fn release_barriers(&mut self, warps: &mut [Warp]) -> bool {
        let live: u32 = warps.iter().map(|w| w.live.count_ones()).sum();
        let mut any = false;
        for id in 0..16 {
            let waiting = self.arrived[id];
            if waiting == 0 {
                continue;
            }
            let need = self.expected[id].unwrap_or(live);
            if waiting >= need {
                self.arrived[id] = 0;
                self.expected[id] = None;
                for w in warps.iter_mut() {
                    // Barrier ids are tracked per warp through `blocked`: one id in flight
                    // per lane, so clear the lanes blocked on this id. Lanes released
                    // while others of the warp ran on resume at their own PCs.
                    let mask = w.blocked & w.bar_lanes(id as u32);
                    if mask != 0 {
                        w.spread_pc();
                    }
                    w.blocked &= !mask;
                    if mask != 0 {
                        // The waiters are ordered after every arrival of the instance.
                        let row = w.id as usize * VC;
                        join(
                            &mut self.vc[row..row + VC],
                            &self.bar_vc[id * VC..id * VC + VC],
                        );
                    }
                }
                self.bar_vc[id * VC..id * VC + VC].fill(0);
                any = true;
            }
        }
        self.release_waiters(warps) || any
    }

    /// Starts the race checker's clocks for a CTA of `nw` warps: every warp is ordered
    /// after everything of earlier CTAs and concurrent with the others' accesses.
    fn start_clocks(&mut self, nw: usize) {
        let base = self.clock + 1;
        self.clock = base + 1;
        self.nw = nw;
        self.vc.clear();
        self.vc.resize(VC * VC, base);
        for w in 0..VC {
            self.vc[w * VC + w] = base + 1;
        }
        self.bar_vc.clear();
        self.bar_vc.resize(16 * VC, 0);
        self.read_clocks.clear();
        self.read_owner.clear();
    }

    /// Advances warp `w`'s own clock (after a release: its later accesses are not
    /// ordered by it).
    fn tick(&mut self, w: u32) {
        self.clock += 1;
        self.vc[w as usize * VC + w as usize] = self.clock;
    }

    fn runtime(&self, ctx: &LaunchCtx<'g>, line: u32, tid: u32, message: String) -> EmuError {
        EmuError::Runtime {
            kernel: ctx.kernel.name.clone(),
            line,
            cta: self.ctaid,
            thread: thread_index(ctx.block, tid),
            message,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        ctx: &LaunchCtx<'g>,
        kind: CheckKind,
        space: Space,
        address: u64,
        size: u32,
        write: bool,
        tid: u32,
        line: u32,
        detail: String,
    ) {
        self.report_as(
            false, ctx, kind, space, address, size, write, tid, line, detail,
        );
    }

    /// Records a report, or with `warning` a warning: at most one per kind
    /// and line in each list, [`MAX_REPORTS`] in all.
    #[allow(clippy::too_many_arguments)]
    fn report_as(
        &mut self,
        warning: bool,
        ctx: &LaunchCtx<'g>,
        kind: CheckKind,
        space: Space,
        address: u64,
        size: u32,
        write: bool,
        tid: u32,
        line: u32,
        detail: String,
    ) {
        let (len, keys) = if warning {
            (self.warnings.len(), &mut self.warning_keys)
        } else {
            (self.reports.len(), &mut self.report_keys)
        };
        if len >= MAX_REPORTS || !keys.insert((kind, line)) {
            return;
        }
        let r = self.check_report(ctx, kind, space, address, size, write, tid, line, detail);
        if warning {
            self.warnings.push(r);
        } else {
            self.reports.push(r);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_report(
        &self,
        ctx: &LaunchCtx<'g>,
        kind: CheckKind,
        space: Space,
        address: u64,
        size: u32,
        write: bool,
        tid: u32,
        line: u32,
        detail: String,
    ) -> CheckReport {
        CheckReport {
            kind,
            kernel: ctx.kernel.name.clone(),
            line,
            cta: self.ctaid,
            thread: thread_index(ctx.block, tid),
            space,
            address,
            size,
            write,
            detail,
        }
    }

    /// Adds this worker's new instructions to the launch's count and fails when the
    /// launch is over its instruction or time budget.
    pub fn check_budget(&mut self, ctx: &LaunchCtx<'g>) -> Result<(), EmuError> {
        let new = self.warp_instructions - self.flushed;
        self.flushed = self.warp_instructions;
        let spent = ctx.spent.fetch_add(new, Ordering::Relaxed) + new;
        let exceeded = if spent > ctx.max_warp_instructions {
            Some(Budget::WarpInstructions(ctx.max_warp_instructions))
        } else {
            match ctx.deadline {
                Some(d) if Instant::now() > d => Some(Budget::Time(d - ctx.start)),
                _ => None,
            }
        };
        match exceeded {
            Some(budget) => Err(EmuError::LaunchBudget {
                kernel: ctx.kernel.name.clone(),
                budget,
                warp_instructions: spent,
                elapsed: ctx.start.elapsed(),
            }),
            None => Ok(()),
        }
    }

    fn run_warp(&mut self, ctx: &LaunchCtx<'g>, w: &mut Warp) -> Result<(), EmuError> {
        if self.warp_instructions - self.flushed >= BUDGET_CHECK_EVERY {
            self.check_budget(ctx)?;
        }
        let code = &ctx.kernel.code;
        if self.warp_instructions - self.cta_start > ctx.cta_instruction_limit {
            let lane = (w.live & !w.blocked).trailing_zeros();
            let pc = if w.converged {
                w.upc
            } else {
                w.pc[lane as usize]
            };
            return Err(self.runtime(
                ctx,
                code[pc as usize].line,
                w.id * 32 + lane,
                format!(
                    "the CTA executed more than {} warp instructions (a loop that never ends?)",
                    ctx.cta_instruction_limit
                ),
            ));
        }
        for _ in 0..WARP_SLICE {
            let runnable = w.live & !w.blocked;
            if runnable == 0 {
                return Ok(());
            }
            let (pc, mask) = if w.converged {
                (w.upc, runnable)
            } else {
                let pc = lanes(runnable).map(|l| w.pc[l as usize]).min().unwrap_or(0);
                (
                    pc,
                    lanes(runnable)
                        .filter(|&l| w.pc[l as usize] == pc)
                        .fold(0, |m, l| m | 1 << l),
                )
            };
            let ins = &code[pc as usize];
            let active = match ins.guard {
                None => mask,
                Some((p, neg)) => {
                    let base = p as usize * 32;
                    lanes(mask)
                        .filter(|&l| (w.regs[base + l as usize] & 1 != 0) != neg)
                        .fold(0, |m, l| m | 1 << l)
                }
            };
            self.warp_instructions += 1;
            self.thread_instructions += active.count_ones() as u64;
            self.class_counts[ins.class as usize] += 1;
            if let Some(info) = &ctx.kernel.wgmma
                && active != 0
            {
                self.wgmma_track(ctx, w, info, pc, active, ins.line);
            }
            let flow = self.step(ctx, w, ins, mask, active)?;
            // Apply control flow.
            let next = pc + 1;
            let (taken, target) = match flow {
                Flow::Next => (0, next),
                Flow::Jump(t) => (active, t),
                Flow::Exit => {
                    w.live &= !active;
                    (0, next)
                }
                Flow::Barrier => {
                    w.blocked |= active;
                    (0, next)
                }
            };
            if w.converged && mask == runnable && (taken == 0 || taken == mask) {
                w.upc = if taken == 0 { next } else { target };
                continue;
            }
            if w.converged {
                for l in lanes(runnable) {
                    w.pc[l as usize] = w.upc;
                }
                w.converged = false;
            }
            for l in lanes(mask) {
                w.pc[l as usize] = if taken & (1 << l) != 0 { target } else { next };
            }
            let run = w.live & !w.blocked;
            if run != 0 {
                let first = w.pc[run.trailing_zeros() as usize];
                if lanes(run).all(|l| w.pc[l as usize] == first) {
                    w.converged = true;
                    w.upc = first;
                }
            }
        }
        Ok(())
    }

    #[inline]
    fn sreg(&self, ctx: &LaunchCtx<'g>, wid: u32, s: Sreg, l: u32) -> u64 {
        let tid = wid * 32 + l;
        let b = ctx.block;
        (match s {
            Sreg::Tid(0) => tid % b[0],
            Sreg::Tid(1) => (tid / b[0]) % b[1],
            Sreg::Tid(_) => tid / (b[0] * b[1]),
            Sreg::Ntid(d) => b[d as usize],
            Sreg::Ctaid(d) => self.ctaid[d as usize],
            Sreg::Nctaid(d) => ctx.grid[d as usize],
            Sreg::LaneId => l,
            Sreg::WarpId => wid,
            Sreg::NWarpId => (b[0] * b[1] * b[2]).div_ceil(32),
            Sreg::Clock => self.warp_instructions as u32,
            Sreg::Clock64 => return self.warp_instructions,
            Sreg::LanemaskEq => 1 << l,
            Sreg::LanemaskLt => (1u32 << l) - 1,
            Sreg::LanemaskLe => ((1u64 << (l + 1)) - 1) as u32,
            Sreg::LanemaskGt => !(((1u64 << (l + 1)) - 1) as u32),
            Sreg::LanemaskGe => !((1u32 << l) - 1),
            Sreg::SmId => 0,
            Sreg::DynamicSmemSize => ctx.dynamic_shared,
            Sreg::TotalSmemSize => ctx.shared_bytes,
        }) as u64
    }

    #[inline]
    fn rd(&self, ctx: &LaunchCtx<'g>, w: &Warp, s: Src, l: u32) -> u64 {
        match s {
            Src::Reg(r) => w.regs[r as usize * 32 + l as usize],
            Src::Imm(v) => v,
            Src::Sreg(sr) => self.sreg(ctx, w.id, sr, l),
        }
    }

    /// The values of `s` in every lane of `active` (other entries are unspecified).
    #[inline]
    fn gather(
        &self,
        ctx: &LaunchCtx<'g>,
        wid: u32,
        regs: &[u64],
        s: Src,
        active: u32,
        out: &mut [u64; 32],
    ) {
        match s {
            Src::Reg(r) => out.copy_from_slice(&regs[r as usize * 32..r as usize * 32 + 32]),
            Src::Imm(v) => out.fill(v),
            Src::Sreg(sr) => {
                for l in lanes(active) {
                    out[l as usize] = self.sreg(ctx, wid, sr, l);
                }
            }
        }
    }

    /// Fast path of global accesses: computes every active lane's address into
    /// `w.scratch[3]` and returns the cached allocation when all of them are aligned
    /// accesses of `size` bytes inside it (nothing to report).
    #[inline]
    fn uniform_global(
        &self,
        w: &mut Warp,
        a: Addr,
        size: u32,
        active: u32,
    ) -> Option<(u64, &'g Allocation)> {
        let (base, al) = self.last_alloc?;
        let r = a.base? as usize * 32;
        let end = base + al.size;
        let addrs = &mut w.scratch[3];
        let mut ok = true;
        for l in lanes(active) {
            let x = w.regs[r + l as usize].wrapping_add(a.offset as u64);
            addrs[l as usize] = x;
            ok &=
                x.is_multiple_of(size as u64) && x >= base && x.saturating_add(size as u64) <= end;
        }
        ok.then_some((base, al))
    }

    fn addr(&self, ctx: &LaunchCtx<'g>, w: &Warp, a: Addr, l: u32) -> u64 {
        match a.base {
            Some(r) => self
                .rd(ctx, w, Src::Reg(r), l)
                .wrapping_add(a.offset as u64),
            None => a.offset as u64,
        }
    }

    /// Cost-model counts of a warp-level access of `size` bytes per lane through `a` in
    /// `space`, a read and/or a write; a generic access is moved to the class of the
    /// window its first active lane addresses.
    #[allow(clippy::too_many_arguments)]
    fn profile_mem(
        &mut self,
        w: &Warp,
        space: MemSpace,
        a: Addr,
        active: u32,
        size: u32,
        read: bool,
        write: bool,
    ) {
        if active == 0 || matches!(space, MemSpace::Param | MemSpace::Local) {
            return;
        }
        let addrs = lane_addrs(w, a);
        let space = match space {
            MemSpace::Generic => {
                let x = addrs[active.trailing_zeros() as usize];
                let (sp, c) = if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&x) {
                    (MemSpace::Shared, Class::Shared)
                } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&x) {
                    (MemSpace::Local, Class::Other)
                } else {
                    (MemSpace::Global, Class::Global)
                };
                self.class_counts[Class::Global as usize] -= 1;
                self.class_counts[c as usize] += 1;
                sp
            }
            s => s,
        };
        match space {
            MemSpace::Shared => self.profile.shared_access(&addrs, active, size),
            MemSpace::Global => {
                if read {
                    self.profile.global_access(&addrs, active, size, false);
                }
                if write {
                    self.profile.global_access(&addrs, active, size, true);
                }
            }
            _ => {}
        }
    }

    /// Cost-model counts of an `ldmatrix`/`stmatrix` of `n` matrices: one shared phase of
    /// 8 rows of 16 bytes per matrix.
    fn profile_matrix(&mut self, w: &Warp, a: Addr, n: usize) {
        let addrs = lane_addrs(w, a);
        let rows = if n >= 4 {
            u32::MAX
        } else {
            (1u32 << (8 * n)) - 1
        };
        self.profile.shared_access(&addrs, rows, 16);
    }

    /// Resolves and checks one access. Reports and returns `None` when it is bad.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        ctx: &LaunchCtx<'g>,
        space: MemSpace,
        addr: u64,
        size: u32,
        write: bool,
        tid: u32,
        line: u32,
    ) -> Option<Place<'g>> {
        let (space, addr) = match space {
            MemSpace::Generic => {
                if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&addr) {
                    (MemSpace::Shared, addr - SHARED_WINDOW)
                } else if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&addr) {
                    (MemSpace::Local, addr - LOCAL_WINDOW)
                } else {
                    (MemSpace::Global, addr)
                }
            }
            s => (s, addr),
        };
        let sp = match space {
            MemSpace::Global | MemSpace::Generic => Space::Global,
            MemSpace::Shared => Space::Shared,
            MemSpace::Local => Space::Local,
            MemSpace::Param => Space::Param,
        };
        if addr % size as u64 != 0 {
            self.report(
                ctx,
                CheckKind::Misaligned,
                sp,
                addr,
                size,
                write,
                tid,
                line,
                String::new(),
            );
            return None;
        }
        let oob = |s: &mut Self, detail: String| {
            s.report(
                ctx,
                CheckKind::OutOfBounds,
                sp,
                addr,
                size,
                write,
                tid,
                line,
                detail,
            );
            None
        };
        match space {
            MemSpace::Global | MemSpace::Generic
                if (MODULE_WINDOW..MODULE_WINDOW + WINDOW_SIZE).contains(&addr) =>
            {
                let off = addr - MODULE_WINDOW;
                if write {
                    oob(
                        self,
                        "module-scope variables are read-only in the emulator".into(),
                    )
                } else if off.saturating_add(size as u64) <= ctx.module_data.len() as u64 {
                    Some(Place::Module(off as usize))
                } else {
                    oob(
                        self,
                        format!(
                            "the module has {} bytes of .global/.const variables",
                            ctx.module_data.len()
                        ),
                    )
                }
            }
            MemSpace::Global | MemSpace::Generic => {
                if let Some((base, a)) = self.last_alloc
                    && addr >= base
                    && addr.saturating_add(size as u64) <= base + a.size
                {
                    return Some(Place::Global(a, addr - base));
                }
                match ctx.global.find(addr, size as u64) {
                    Some((base, a)) => {
                        self.last_alloc = Some((base, a));
                        Some(Place::Global(a, addr - base))
                    }
                    None => oob(self, ctx.global.describe(addr)),
                }
            }
            MemSpace::Shared => {
                if addr.saturating_add(size as u64) <= ctx.shared_bytes as u64 {
                    Some(Place::Shared(addr as u32))
                } else {
                    oob(
                        self,
                        format!("the CTA has {} bytes of shared memory", ctx.shared_bytes),
                    )
                }
            }
            MemSpace::Local => {
                let lb = ctx.kernel.local_bytes as u64;
                if addr.saturating_add(size as u64) <= lb {
                    Some(Place::Local((tid as u64 * lb + addr) as usize))
                } else {
                    oob(self, format!("each thread has {lb} bytes of local memory"))
                }
            }
            MemSpace::Param => {
                if write {
                    return oob(self, "parameters are read-only".into());
                }
                if addr.saturating_add(size as u64) <= ctx.params.len() as u64 {
                    Some(Place::Param(addr as usize))
                } else {
                    oob(
                        self,
                        format!("the kernel has {} bytes of parameters", ctx.params.len()),
                    )
                }
            }
        }
    }

    /// Checker bookkeeping of a shared read by warp `wid`.
    #[allow(clippy::too_many_arguments)]
    fn shared_read_check(
        &mut self,
        ctx: &LaunchCtx<'g>,
        off: u32,
        size: u32,
        wid: u32,
        tid: u32,
        line: u32,
    ) {
        let (cta_gen, w, nw) = (self.cta_gen, wid as usize, self.nw);
        let (mut pending, mut uninit, mut race) = (false, false, None);
        let row = &self.vc[w * VC..w * VC + VC];
        let me = row[w];
        let (pool, owner) = (&mut self.read_clocks, &mut self.read_owner);
        let range = off as usize..(off + size) as usize;
        for (b, s) in range.clone().zip(&mut self.shadow[range]) {
            pending |= s.init == cta_gen | PENDING;
            uninit |= s.init != cta_gen;
            let prev = (s.w_warp & !ATOMIC) as usize;
            if prev != w && s.w_clk > row[prev % VC] {
                race = Some(prev);
            }
            let r = s.r_warp as usize;
            if r == MULTI as usize && owner.get(s.r_clk as usize) == Some(&(b as u32)) {
                pool[s.r_clk as usize * nw + w] = me;
            } else if r == MULTI as usize || r == w || s.r_clk <= row[r % VC] {
                s.r_warp = w as u16;
                s.r_clk = me;
            } else {
                // Concurrent with the last read: keep both warps' clocks.
                let i = owner.len();
                owner.push(b as u32);
                pool.resize(pool.len() + nw, 0);
                pool[i * nw + r] = s.r_clk;
                pool[i * nw + w] = me;
                s.r_warp = MULTI;
                s.r_clk = i as u32;
            }
        }
        let problem = if pending {
            Some((CheckKind::PendingAsyncCopyRead, String::new()))
        } else if uninit {
            Some((CheckKind::UninitializedSharedRead, String::new()))
        } else {
            race.map(|w| {
                (
                    CheckKind::SharedRace,
                    format!("written by warp {w} since the last barrier"),
                )
            })
        };
        if let Some((kind, detail)) = problem {
            self.report(
                ctx,
                kind,
                Space::Shared,
                off as u64,
                size,
                false,
                tid,
                line,
                detail,
            );
        }
    }

    /// Checker bookkeeping of a shared write by warp `wid`.
    #[allow(clippy::too_many_arguments)]
    fn shared_write_check(
        &mut self,
        ctx: &LaunchCtx<'g>,
        off: u32,
        size: u32,
        wid: u32,
        atomic: bool,
        data: Option<(&[u8], Option<Ty>)>,
        tid: u32,
        line: u32,
    ) {
        if self.wg.busy() {
            self.wgmma_overwrite_check(ctx, off, size, tid, line);
        }
        let (cta_gen, w, nw) = (self.cta_gen, wid as usize, self.nw);
        let row = &self.vc[w * VC..w * VC + VC];
        let me = row[w];
        let mark = if atomic { w as u16 | ATOMIC } else { w as u16 };
        let mut all_init = true;
        let mut problem = None;
        let range = off as usize..(off + size) as usize;
        for (b, s) in range.clone().zip(&mut self.shadow[range]) {
            if problem.is_none() {
                let (prev, prev_atomic) = ((s.w_warp & !ATOMIC) as usize, s.w_warp & ATOMIC != 0);
                let r = s.r_warp as usize;
                if prev != w && s.w_clk > row[prev % VC] && !(atomic && prev_atomic) {
                    problem = Some(format!(
                        "also written by warp {prev} since the last barrier"
                    ));
                } else if r == MULTI as usize {
                    if self.read_owner.get(s.r_clk as usize) == Some(&(b as u32)) {
                        let i = s.r_clk as usize * nw;
                        let mut readers = self.read_clocks[i..i + nw]
                            .iter()
                            .enumerate()
                            .filter(|&(j, &c)| j != w && c > row[j]);
                        problem = match (readers.next(), readers.next()) {
                            (Some((j, _)), None) => {
                                Some(format!("also read by warp {j} since the last barrier"))
                            }
                            (Some(_), Some(_)) => {
                                Some("also read by other warps since the last barrier".to_string())
                            }
                            _ => None,
                        };
                    }
                } else if r != w && s.r_clk > row[r % VC] {
                    problem = Some(format!("also read by warp {r} since the last barrier"));
                }
            }
            all_init &= s.init == cta_gen;
            s.w_clk = me;
            s.w_warp = mark;
            s.init = cta_gen;
        }
        let Some(mut detail) = problem else {
            return;
        };
        // Storing (nearly) the value the bytes already hold cannot change what anyone reads
        // beyond an ulp: Triton's replicated layouts store a reduction's result from several
        // warps, whose copies may differ in the last place. A warning unless strict.
        let old = &self.shared[off as usize..(off + size) as usize];
        let near = match data {
            Some((d, ty)) if all_init => near_value(old, d, ty),
            _ => None,
        };
        let warn = near.is_some() && !ctx.strict_races;
        if let Some(how) = near {
            detail.push_str("; ");
            detail.push_str(&how);
        }
        self.report_as(
            warn,
            ctx,
            CheckKind::SharedRace,
            Space::Shared,
            off as u64,
            size,
            true,
            tid,
            line,
            detail,
        );
    }

    /// Resolves and checks an access, including the shared-memory checker bookkeeping.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn access(
        &mut self,
        ctx: &LaunchCtx<'g>,
        space: MemSpace,
        addr: u64,
        size: u32,
        write: Option<(&[u8], Option<Ty>)>,
        wid: u32,
        tid: u32,
        line: u32,
    ) -> Option<Place<'g>> {
        let p = self.place(ctx, space, addr, size, write.is_some(), tid, line)?;
        if let Place::Shared(off) = p {
            match write {
                Some(data) => {
                    self.shared_write_check(ctx, off, size, wid, false, Some(data), tid, line)
                }
                None => self.shared_read_check(ctx, off, size, wid, tid, line),
            }
        }
        Some(p)
    }

    /// Reads `size` (1, 2, 4 or 8) bytes `off` bytes into a checked place.
    #[inline]
    fn read_small(&self, ctx: &LaunchCtx<'g>, p: &Place<'g>, off: u64, size: u32) -> u64 {
        match *p {
            Place::Global(a, o) => a.read_small(o + off, size),
            Place::Shared(o) => le(&self.shared, o as usize + off as usize, size),
            Place::Local(o) => le(&self.local, o + off as usize, size),
            Place::Param(o) => le(ctx.params, o + off as usize, size),
            Place::Module(o) => le(ctx.module_data, o + off as usize, size),
        }
    }

    /// Writes the low `size` (1, 2, 4 or 8) bytes of `v` `off` bytes into a checked place.
    #[inline]
    fn write_small(&mut self, ctx: &LaunchCtx<'g>, p: &Place<'g>, off: u64, size: u32, v: u64) {
        let put = |buf: &mut [u8], o: usize| {
            buf[o..o + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize])
        };
        match *p {
            Place::Global(a, o) => a.write_small(o + off, size, v, ctx.exclusive),
            Place::Shared(o) => put(&mut self.shared, o as usize + off as usize),
            Place::Local(o) => put(&mut self.local, o + off as usize),
            Place::Param(_) | Place::Module(_) => {}
        }
    }

    /// A checked load of `out.len()` bytes (a multiple of 8, or at most 8); zeros when reported.
    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        ctx: &LaunchCtx<'g>,
        space: MemSpace,
        addr: u64,
        out: &mut [u8],
        wid: u32,
        tid: u32,
        line: u32,
    ) {
        let size = out.len() as u32;
        let chunk = size.min(8);
        match self.access(ctx, space, addr, size, None, wid, tid, line) {
            Some(p) => {
                for (c, o) in out.chunks_mut(chunk as usize).enumerate() {
                    let v = self.read_small(ctx, &p, c as u64 * chunk as u64, chunk);
                    o.copy_from_slice(&v.to_le_bytes()[..chunk as usize]);
                }
            }
            None => out.fill(0),
        }
    }

    /// A checked store of `data` (a multiple of 8 bytes, or at most 8) of elements of `ty`.
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        ctx: &LaunchCtx<'g>,
        space: MemSpace,
        addr: u64,
        data: &[u8],
        ty: Ty,
        wid: u32,
        tid: u32,
        line: u32,
    ) {
        let size = data.len() as u32;
        let chunk = size.min(8);
        if let Some(p) = self.access(
            ctx,
            space,
            addr,
            size,
            Some((data, Some(ty))),
            wid,
            tid,
            line,
        ) {
            for (c, d) in data.chunks(chunk as usize).enumerate() {
                let mut b = [0u8; 8];
                b[..d.len()].copy_from_slice(d);
                self.write_small(
                    ctx,
                    &p,
                    c as u64 * chunk as u64,
                    chunk,
                    u64::from_le_bytes(b),
                );
            }
        }
    }

    /// Checks that a collective runs with exactly its member lanes.
    fn collective(
        &self,
        ctx: &LaunchCtx<'g>,
        w: &Warp,
        mask: u32,
        member: u32,
        line: u32,
        what: &str,
    ) -> Result<(), EmuError> {
        if member & w.exists != mask {
            return Err(self.runtime(
                ctx,
                line,
                w.id * 32 + mask.trailing_zeros(),
                format!(
                    "{what} reached by lanes {mask:#010x} of warp {} but its member mask is {member:#010x} (existing lanes {:#010x})",
                    w.id, w.exists
                ),
            ));
        }
        Ok(())
    }

    /// Checks a warp-synchronous instruction whose member mask `m` is read from the first
    /// of the `active` lanes (PTX requires every lane to name the same mask). Returns
    /// false, checking nothing, when no lane is active.
    #[allow(clippy::too_many_arguments)]
    fn sync_members(
        &self,
        ctx: &LaunchCtx<'g>,
        w: &Warp,
        mask: u32,
        active: u32,
        m: Src,
        line: u32,
        what: &str,
    ) -> Result<bool, EmuError> {
        if active == 0 {
            return Ok(false);
        }
        let member = self.rd(ctx, w, m, active.trailing_zeros()) as u32;
        self.collective(ctx, w, mask, member, line, what)?;
        Ok(true)
    }

    fn step(
        &mut self,
        ctx: &LaunchCtx<'g>,
        w: &mut Warp,
        ins: &Instr,
        mask: u32,
        active: u32,
    ) -> Result<Flow, EmuError> {
        let line = ins.line;
        let wid = w.id;
        match &ins.op {
            Op::Alu {
                op,
                ty,
                flags,
                d,
                s,
            } => {
                let v = &mut w.scratch;
                for (k, src) in s.iter().enumerate().take(op.arity()) {
                    self.gather(ctx, w.id, &w.regs, *src, active, &mut v[k]);
                }
                let base = *d as usize * 32;
                num::alu_warp(*op, *ty, *flags, v, &mut w.regs[base..base + 32], active);
            }
            Op::Setp {
                cmp,
                ftz,
                ty,
                p,
                q,
                a,
                b,
                comb,
            } => {
                let flush = *ftz && *ty == Ty::F32;
                if let (Some(p), None, None) = (p, q, comb) {
                    let v = &mut w.scratch;
                    self.gather(ctx, w.id, &w.regs, *a, active, &mut v[0]);
                    self.gather(ctx, w.id, &w.regs, *b, active, &mut v[1]);
                    if flush {
                        for x in v[..2].iter_mut().flatten() {
                            *x = num::flush_f32(*x);
                        }
                    }
                    let base = *p as usize * 32;
                    num::compare_warp(
                        *cmp,
                        *ty,
                        &v[0],
                        &v[1],
                        &mut w.regs[base..base + 32],
                        active,
                    );
                    return Ok(Flow::Next);
                }
                for l in lanes(active) {
                    let (mut x, mut y) = (self.rd(ctx, w, *a, l), self.rd(ctx, w, *b, l));
                    if flush {
                        (x, y) = (num::flush_f32(x), num::flush_f32(y));
                    }
                    let mut r = num::compare(*cmp, *ty, x, y);
                    let mut nr = !r;
                    if let Some((op, c, neg)) = comb {
                        let c = (self.rd(ctx, w, *c, l) & 1 != 0) != *neg;
                        let f = |x: bool| match op {
                            BoolOp::And => x && c,
                            BoolOp::Or => x || c,
                            BoolOp::Xor => x ^ c,
                        };
                        r = f(r);
                        nr = f(nr);
                    }
                    if let Some(p) = p {
                        w.regs[*p as usize * 32 + l as usize] = r as u64;
                    }
                    if let Some(q) = q {
                        w.regs[*q as usize * 32 + l as usize] = nr as u64;
                    }
                }
            }
            Op::Set {
                cmp,
                ftz,
                dty,
                sty,
                d,
                a,
                b,
            } => {
                let flush = |x: u64| {
                    if *ftz && *sty == Ty::F32 {
                        num::flush_f32(x)
                    } else {
                        x
                    }
                };
                for l in lanes(active) {
                    let (x, y) = (flush(self.rd(ctx, w, *a, l)), flush(self.rd(ctx, w, *b, l)));
                    let r = num::compare(*cmp, *sty, x, y);
                    w.regs[*d as usize * 32 + l as usize] = match (r, dty.is_float()) {
                        (true, true) => 1.0f32.to_bits() as u64,
                        (false, _) => 0,
                        (true, false) => dty.mask(),
                    };
                }
            }
            Op::Selp { ty, d, a, b, c } => {
                for l in lanes(active) {
                    let v = if self.rd(ctx, w, *c, l) & 1 != 0 {
                        self.rd(ctx, w, *a, l)
                    } else {
                        self.rd(ctx, w, *b, l)
                    };
                    w.regs[*d as usize * 32 + l as usize] = v & ty.mask();
                }
            }
            Op::Pack {
                d,
                parts,
                part_bits,
            } => {
                let pm = if *part_bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << part_bits) - 1
                };
                for l in lanes(active) {
                    let mut v = 0u64;
                    for (i, p) in parts.iter().enumerate() {
                        v |= (self.rd(ctx, w, *p, l) & pm) << (i as u32 * part_bits);
                    }
                    w.regs[*d as usize * 32 + l as usize] = v;
                }
            }
            Op::Unpack { ds, a, part_bits } => {
                let pm = if *part_bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << part_bits) - 1
                };
                for l in lanes(active) {
                    let v = self.rd(ctx, w, *a, l);
                    for (i, d) in ds.iter().enumerate() {
                        if let Some(d) = d {
                            w.regs[*d as usize * 32 + l as usize] =
                                (v >> (i as u32 * part_bits)) & pm;
                        }
                    }
                }
            }
            Op::Cvt {
                dty,
                sty,
                rnd,
                sat,
                ftz,
                relu,
                d,
                a,
            } => {
                for l in lanes(active) {
                    let v = self.rd(ctx, w, *a, l);
                    w.regs[*d as usize * 32 + l as usize] =
                        num::cvt(*dty, *sty, *rnd, *sat, *ftz, *relu, v);
                }
            }
            Op::CvtPack { dty, relu, d, a, b } => {
                let h = if *dty == Ty::F16x2 { Ty::F16 } else { Ty::Bf16 };
                for l in lanes(active) {
                    let hi = num::cvt(
                        h,
                        Ty::F32,
                        Rnd::Rn,
                        false,
                        false,
                        *relu,
                        self.rd(ctx, w, *a, l),
                    );
                    let lo = num::cvt(
                        h,
                        Ty::F32,
                        Rnd::Rn,
                        false,
                        false,
                        *relu,
                        self.rd(ctx, w, *b, l),
                    );
                    w.regs[*d as usize * 32 + l as usize] = (hi << 16) | lo;
                }
            }
            Op::Cvta { to, space, d, a } => {
                let win = match space {
                    MemSpace::Shared => SHARED_WINDOW,
                    MemSpace::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                for l in lanes(active) {
                    let v = self.rd(ctx, w, *a, l);
                    w.regs[*d as usize * 32 + l as usize] = if *to {
                        v.wrapping_sub(win)
                    } else {
                        v.wrapping_add(win)
                    };
                }
            }
            Op::Ld {
                space,
                ty,
                ds,
                addr,
                reg_bits,
            } => {
                let es = ty.size().min(8);
                let total = es * ds.len() as u32;
                let chunk = total.min(8);
                let per = (chunk / es) as usize;
                let emask = if es >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * es)) - 1
                };
                let rmask = if *reg_bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << reg_bits) - 1
                };
                if total <= 8
                    && matches!(space, MemSpace::Global | MemSpace::Generic)
                    && let Some((base, al)) = self.uniform_global(w, *addr, total, active)
                {
                    self.profile
                        .global_access(&w.scratch[3], active, total, false);
                    for l in lanes(active) {
                        let v = al.read_small(w.scratch[3][l as usize] - base, total);
                        for (j, d) in ds.iter().enumerate() {
                            if let Some(d) = d {
                                let mut x = (v >> (8 * es as usize * j)) & emask;
                                if ty.is_signed() {
                                    x = num::sext(x, *ty) as u64;
                                }
                                w.regs[*d as usize * 32 + l as usize] = x & rmask;
                            }
                        }
                    }
                    return Ok(Flow::Next);
                }
                self.profile_mem(w, *space, *addr, active, total, true, false);
                for l in lanes(active) {
                    let a = self.addr(ctx, w, *addr, l);
                    let p = self.access(ctx, *space, a, total, None, wid, wid * 32 + l, line);
                    for c in 0..(total / chunk) as usize {
                        let v = match &p {
                            Some(p) => self.read_small(ctx, p, (c * chunk as usize) as u64, chunk),
                            None => 0,
                        };
                        for j in 0..per {
                            if let Some(d) = ds[c * per + j] {
                                let mut x = (v >> (8 * es as usize * j)) & emask;
                                if ty.is_signed() {
                                    x = num::sext(x, *ty) as u64;
                                }
                                w.regs[d as usize * 32 + l as usize] = x & rmask;
                            }
                        }
                    }
                }
            }
            Op::St {
                space,
                ty,
                srcs,
                addr,
            } => {
                let es = ty.size().min(8);
                let total = es * srcs.len() as u32;
                let chunk = total.min(8);
                let emask = if es >= 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * es)) - 1
                };
                if total <= 8
                    && matches!(space, MemSpace::Global | MemSpace::Generic)
                    && let Some((base, al)) = self.uniform_global(w, *addr, total, active)
                {
                    self.profile
                        .global_access(&w.scratch[3], active, total, true);
                    for l in lanes(active) {
                        let mut v = 0u64;
                        for (j, s) in srcs.iter().enumerate() {
                            v |= (self.rd(ctx, w, *s, l) & emask) << (8 * es as usize * j);
                        }
                        al.write_small(w.scratch[3][l as usize] - base, total, v, ctx.exclusive);
                    }
                    return Ok(Flow::Next);
                }
                self.profile_mem(w, *space, *addr, active, total, false, true);
                let mut buf = [0u8; 64];
                for l in lanes(active) {
                    for (i, s) in srcs.iter().enumerate() {
                        let x = (self.rd(ctx, w, *s, l) & emask).to_le_bytes();
                        buf[i * es as usize..(i + 1) * es as usize]
                            .copy_from_slice(&x[..es as usize]);
                    }
                    let a = self.addr(ctx, w, *addr, l);
                    let data = &buf[..total as usize];
                    let Some(p) = self.access(
                        ctx,
                        *space,
                        a,
                        total,
                        Some((data, Some(*ty))),
                        wid,
                        wid * 32 + l,
                        line,
                    ) else {
                        continue;
                    };
                    for c in 0..(total / chunk) as usize {
                        let mut b8 = [0u8; 8];
                        b8[..chunk as usize]
                            .copy_from_slice(&buf[c * chunk as usize..(c + 1) * chunk as usize]);
                        self.write_small(
                            ctx,
                            &p,
                            (c * chunk as usize) as u64,
                            chunk,
                            u64::from_le_bytes(b8),
                        );
                    }
                }
            }
            Op::Atom {
                space,
                op,
                ty,
                d,
                addr,
                b,
                c,
            } => {
                let size = ty.size();
                let width = b.len().max(1) as u32;
                self.profile_mem(w, *space, *addr, active, size * width, true, true);
                for (l, k) in lanes(active).flat_map(|l| (0..b.len()).map(move |k| (l, k))) {
                    let a = self.addr(ctx, w, *addr, l) + u64::from(size) * k as u64;
                    let (bv, cv) = (self.rd(ctx, w, b[k], l), self.rd(ctx, w, *c, l));
                    let f = |old: u64| atom_apply(*op, *ty, old, bv, cv);
                    let tid = wid * 32 + l;
                    let old = match self.place(ctx, *space, a, size, true, tid, line) {
                        Some(Place::Global(al, off)) => al.rmw(off, size, f),
                        Some(Place::Shared(off)) => {
                            self.shared_write_check(ctx, off, size, wid, true, None, tid, line);
                            let r = &mut self.shared[off as usize..(off + size) as usize];
                            let mut b8 = [0u8; 8];
                            b8[..size as usize].copy_from_slice(r);
                            let old = u64::from_le_bytes(b8);
                            r.copy_from_slice(&f(old).to_le_bytes()[..size as usize]);
                            old
                        }
                        Some(Place::Local(off)) => {
                            let r = &mut self.local[off..off + size as usize];
                            let mut b8 = [0u8; 8];
                            b8[..size as usize].copy_from_slice(r);
                            let old = u64::from_le_bytes(b8);
                            r.copy_from_slice(&f(old).to_le_bytes()[..size as usize]);
                            old
                        }
                        Some(Place::Param(_) | Place::Module(_)) | None => 0,
                    };
                    if let Some(d) = d.get(k) {
                        w.regs[*d as usize * 32 + l as usize] = old;
                    }
                }
            }
            Op::ActiveMask { d } => {
                for l in lanes(active) {
                    w.regs[*d as usize * 32 + l as usize] = mask as u64;
                }
            }
            Op::Bra { target } => return Ok(Flow::Jump(*target)),
            Op::Exit => return Ok(Flow::Exit),
            Op::Bar { id, count, arrive } => {
                if active == 0 {
                    return Ok(Flow::Next);
                }
                let l0 = active.trailing_zeros();
                let bid = self.rd(ctx, w, *id, l0) as usize;
                if bid >= 16 {
                    return Err(self.runtime(
                        ctx,
                        line,
                        wid * 32 + l0,
                        format!("barrier id {bid} is not below 16"),
                    ));
                }
                if let Some(c) = count {
                    let n = self.rd(ctx, w, *c, l0) as u32;
                    self.expected[bid] = Some(n);
                }
                self.arrived[bid] += active.count_ones();
                // What the warp did so far is ordered before the barrier's waiters.
                let row = wid as usize * VC;
                join(
                    &mut self.bar_vc[bid * VC..bid * VC + VC],
                    &self.vc[row..row + VC],
                );
                self.tick(wid);
                if *arrive {
                    return Ok(Flow::Next);
                }
                w.set_bar_lanes(bid as u32, active);
                // The waiting lanes keep their PCs while the others may run on.
                w.spread_pc();
                return Ok(Flow::Barrier);
            }
            Op::WarpSync { mask: m } => {
                self.sync_members(ctx, w, mask, active, *m, line, "bar.warp.sync")?;
            }
            Op::Nop => {}
            Op::Shfl {
                mode,
                d,
                p,
                a,
                b,
                c,
                mask: m,
            } => {
                if !self.sync_members(ctx, w, mask, active, *m, line, "shfl.sync")? {
                    return Ok(Flow::Next);
                }
                let mut src = [0u64; 32];
                for (l, s) in src.iter_mut().enumerate() {
                    *s = self.rd(ctx, w, *a, l as u32) & 0xffff_ffff;
                }
                for l in lanes(active) {
                    let bv = self.rd(ctx, w, *b, l) as u32 & 31;
                    let cv = self.rd(ctx, w, *c, l) as u32;
                    let clamp = cv & 31;
                    let seg = (cv >> 8) & 31;
                    let max_lane = (l & seg) | (clamp & !seg);
                    let min_lane = l & seg;
                    let (j, pval) = match mode {
                        ShflMode::Up => {
                            let j = l as i32 - bv as i32;
                            (j, j >= max_lane as i32)
                        }
                        ShflMode::Down => {
                            let j = (l + bv) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Bfly => {
                            let j = (l ^ bv) as i32;
                            (j, j <= max_lane as i32)
                        }
                        ShflMode::Idx => {
                            let j = (min_lane | (bv & !seg)) as i32;
                            (j, j <= max_lane as i32)
                        }
                    };
                    let j = if pval { j as u32 } else { l };
                    w.regs[*d as usize * 32 + l as usize] = src[j as usize];
                    if let Some(p) = p {
                        w.regs[*p as usize * 32 + l as usize] = pval as u64;
                    }
                }
            }
            Op::Vote {
                mode,
                d,
                a,
                negate,
                mask: m,
            } => {
                if !self.sync_members(ctx, w, mask, active, *m, line, "vote.sync")? {
                    return Ok(Flow::Next);
                }
                let ballot = lanes(active)
                    .filter(|&l| (self.rd(ctx, w, *a, l) & 1 != 0) != *negate)
                    .fold(0u32, |m, l| m | 1 << l);
                let v = match mode {
                    VoteMode::Ballot => ballot as u64,
                    VoteMode::All => (ballot == active) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == active || ballot == 0) as u64,
                };
                w.set_lanes(*d, active, v);
            }
            Op::Redux {
                op,
                ty,
                d,
                a,
                mask: m,
            } => {
                if !self.sync_members(ctx, w, mask, active, *m, line, "redux.sync")? {
                    return Ok(Flow::Next);
                }
                let mut acc: Option<u64> = None;
                for l in lanes(active) {
                    let v = self.rd(ctx, w, *a, l) & ty.mask();
                    acc = Some(match acc {
                        None => v,
                        Some(x) => atom_apply(*op, *ty, x, v, 0),
                    });
                }
                w.set_lanes(*d, active, acc.unwrap_or(0));
            }
            Op::Ldmatrix {
                ds,
                trans,
                addr,
                space,
            } => {
                self.collective(ctx, w, mask, u32::MAX, line, "ldmatrix.sync.aligned")?;
                let n = ds.len();
                self.profile_matrix(w, *addr, n);
                let mut rows = [[0u8; 16]; 32];
                for (r, row) in rows.iter_mut().enumerate().take(8 * n) {
                    let a = self.addr(ctx, w, *addr, r as u32);
                    let sp = if *space == MemSpace::Generic {
                        MemSpace::Generic
                    } else {
                        MemSpace::Shared
                    };
                    self.load(ctx, sp, a, row, wid, wid * 32 + r as u32, line);
                }
                for l in lanes(active) {
                    let (g, t) = ((l / 4) as usize, (l % 4) as usize);
                    for (k, d) in ds.iter().enumerate() {
                        let m = &rows[8 * k..8 * k + 8];
                        let v = if *trans {
                            let e = |r: usize, c: usize| {
                                u16::from_le_bytes([m[r][2 * c], m[r][2 * c + 1]]) as u64
                            };
                            e(2 * t, g) | (e(2 * t + 1, g) << 16)
                        } else {
                            u32::from_le_bytes([
                                m[g][4 * t],
                                m[g][4 * t + 1],
                                m[g][4 * t + 2],
                                m[g][4 * t + 3],
                            ]) as u64
                        };
                        w.regs[*d as usize * 32 + l as usize] = v;
                    }
                }
            }
            Op::Stmatrix {
                srcs,
                trans,
                addr,
                space,
            } => {
                self.collective(ctx, w, mask, u32::MAX, line, "stmatrix.sync.aligned")?;
                let n = srcs.len();
                self.profile_matrix(w, *addr, n);
                let mut rows = [[0u8; 16]; 32];
                for l in 0..32u32 {
                    let (g, t) = ((l / 4) as usize, (l % 4) as usize);
                    for (k, s) in srcs.iter().enumerate() {
                        let v = self.rd(ctx, w, *s, l) as u32;
                        let m = &mut rows[8 * k..8 * k + 8];
                        if *trans {
                            m[2 * t][2 * g..2 * g + 2].copy_from_slice(&(v as u16).to_le_bytes());
                            m[2 * t + 1][2 * g..2 * g + 2]
                                .copy_from_slice(&((v >> 16) as u16).to_le_bytes());
                        } else {
                            m[g][4 * t..4 * t + 4].copy_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                for (r, row) in rows.iter().enumerate().take(8 * n) {
                    let a = self.addr(ctx, w, *addr, r as u32);
                    let sp = if *space == MemSpace::Generic {
                        MemSpace::Generic
                    } else {
                        MemSpace::Shared
                    };
                    self.store(ctx, sp, a, row, Ty::B16, wid, wid * 32 + r as u32, line);
                }
            }
            Op::Mma { kind, d, a, b, c } => {
                self.collective(ctx, w, mask, u32::MAX, line, "mma.sync.aligned")?;
                self.mma(ctx, w, *kind, d, a, b, c);
            }
            Op::CpAsync {
                dst,
                src,
                size,
                src_size,
                ignore_src,
            } => {
                // Cost model: the global bytes read, and the sectors of the lanes that read.
                let (mut reading, mut read_bytes, mut src_addrs) = (0u32, 0u64, [0u64; 32]);
                for l in lanes(active) {
                    let tid = wid * 32 + l;
                    let da = self.addr(ctx, w, *dst, l);
                    let sa = self.addr(ctx, w, *src, l);
                    let mut n = match src_size {
                        Some(s) => (self.rd(ctx, w, *s, l) as u32).min(*size),
                        None => *size,
                    };
                    if let Some((p, neg)) = ignore_src
                        && (self.rd(ctx, w, *p, l) & 1 != 0) != *neg
                    {
                        n = 0;
                    }
                    let mut data = [0u8; 16];
                    if n > 0 {
                        reading |= 1 << l;
                        read_bytes += u64::from(n);
                        src_addrs[l as usize] = sa;
                        // The source must be valid for the whole copy size's alignment and the read bytes.
                        match self.place(
                            ctx,
                            MemSpace::Global,
                            sa,
                            n.next_power_of_two().min(*size),
                            false,
                            tid,
                            line,
                        ) {
                            Some(Place::Global(al, off)) => {
                                if ctx.global.find(sa, n as u64).is_some() {
                                    al.read(off, &mut data[..n as usize]);
                                }
                            }
                            _ => continue,
                        }
                    }
                    let Some(Place::Shared(off)) =
                        self.place(ctx, MemSpace::Shared, da, *size, true, tid, line)
                    else {
                        continue;
                    };
                    // The copy may land any time from now: a wgmma in flight may read it.
                    if self.wg.busy() {
                        self.wgmma_overwrite_check(ctx, off, *size, tid, line);
                    }
                    for s in &mut self.shadow[off as usize..(off + size) as usize] {
                        s.init = self.cta_gen | PENDING;
                    }
                    w.open_copies.push(PendingCopy {
                        dst: off,
                        len: *size as u8,
                        lane: l as u8,
                        line,
                        data,
                    });
                }
                if reading != 0 {
                    self.profile
                        .global_access(&src_addrs, reading, *size, false);
                    self.profile.global_read_bytes -=
                        u64::from(reading.count_ones()) * u64::from(*size) - read_bytes;
                }
            }
            Op::Wgmma(op) => self.wgmma(ctx, w, op, mask, active, line)?,
            Op::Async(a) => return self.async_op(ctx, w, a, mask, active, line),
            Op::CpAsyncCommit => {
                if active != 0 {
                    let g = std::mem::take(&mut w.open_copies);
                    w.copy_groups.push_back(g);
                }
            }
            Op::CpAsyncWait { n, all } => {
                if active != 0 {
                    if *all {
                        let g = std::mem::take(&mut w.open_copies);
                        w.copy_groups.push_back(g);
                    }
                    while w.copy_groups.len() > *n as usize {
                        if let Some(g) = w.copy_groups.pop_front() {
                            for c in g {
                                self.deliver(ctx, wid, &c);
                            }
                        }
                    }
                }
            }
        }
        Ok(Flow::Next)
    }

    fn deliver(&mut self, ctx: &LaunchCtx<'g>, wid: u32, c: &PendingCopy) {
        let (off, len) = (c.dst, c.len as u32);
        let data = &c.data[..len as usize];
        self.shared_write_check(
            ctx,
            off,
            len,
            wid,
            false,
            Some((data, None)),
            wid * 32 + c.lane as u32,
            c.line,
        );
        self.shared[off as usize..(off + len) as usize].copy_from_slice(&c.data[..len as usize]);
    }

    #[allow(clippy::too_many_arguments)]
    fn mma(
        &self,
        ctx: &LaunchCtx<'g>,
        w: &mut Warp,
        kind: MmaKind,
        d: &[u32],
        a: &[Src],
        b: &[Src],
        c: &[Src],
    ) {
        // Gather the fragments into full matrices: A [16][K], B [K][8], C [16][8].
        let k = match kind {
            MmaKind::M16n8k16 { .. } => 16,
            MmaKind::M16n8k8 { .. } | MmaKind::M16n8k8Tf32 => 8,
            MmaKind::M16n8k4Tf32 => 4,
        };
        // A [16][K] and B [K][8] in f32 (f16, bf16 and tf32 values and their
        // products are exact in f32); C and the sums in f64.
        let mut am = [[0f32; 16]; 16];
        let mut bm = [[0f32; 8]; 16];
        let mut cm = [[0f64; 8]; 16];
        let cd = match kind {
            MmaKind::M16n8k16 { cd, .. } | MmaKind::M16n8k8 { cd, .. } => cd,
            _ => Ty::F32,
        };
        let regs = &w.regs;
        let rd = |s: Src, l: u32| match s {
            Src::Reg(r) => regs[r as usize * 32 + l as usize],
            other => self.rd(ctx, w, other, l),
        };
        for l in 0..32u32 {
            let (g, t) = ((l / 4) as usize, (l % 4) as usize);
            match kind {
                MmaKind::M16n8k16 { ab, .. } | MmaKind::M16n8k8 { ab, .. } => {
                    let h = |v: u64| -> f32 {
                        if ab == Ty::Bf16 {
                            f32::from_bits(((v & 0xffff) as u32) << 16)
                        } else {
                            half::f16::from_bits(v as u16).to_f32()
                        }
                    };
                    for (i, s) in a.iter().enumerate() {
                        let v = rd(*s, l);
                        let row = g + 8 * (i & 1);
                        let col = 2 * t + 8 * (i >> 1);
                        am[row][col] = h(v);
                        am[row][col + 1] = h(v >> 16);
                    }
                    for (i, s) in b.iter().enumerate() {
                        let v = rd(*s, l);
                        let kk = 2 * t + 8 * i;
                        bm[kk][g] = h(v);
                        bm[kk + 1][g] = h(v >> 16);
                    }
                }
                MmaKind::M16n8k8Tf32 | MmaKind::M16n8k4Tf32 => {
                    // tf32 operands: the hardware uses the top 19 bits of each f32.
                    let tf = |v: u64| f32::from_bits(v as u32 & 0xffff_e000);
                    for (i, s) in a.iter().enumerate() {
                        am[g + 8 * (i & 1)][t + 4 * (i >> 1)] = tf(rd(*s, l));
                    }
                    for (i, s) in b.iter().enumerate() {
                        bm[t + 4 * i][g] = tf(rd(*s, l));
                    }
                }
            }
            if cd == Ty::F32 {
                for (i, s) in c.iter().enumerate() {
                    cm[g + 8 * (i >> 1)][2 * t + (i & 1)] = f32::from_bits(rd(*s, l) as u32) as f64;
                }
            } else {
                for (i, s) in c.iter().enumerate() {
                    let v = rd(*s, l);
                    cm[g + 8 * i][2 * t] = num::to_f64(v & 0xffff, Ty::F16);
                    cm[g + 8 * i][2 * t + 1] = num::to_f64((v >> 16) & 0xffff, Ty::F16);
                }
            }
        }
        // D = C + A B, with the 8 columns as independent (vectorizable) accumulators.
        let mut dm = cm;
        for (i, drow) in dm.iter_mut().enumerate() {
            for kk in 0..k {
                let x = am[i][kk];
                for (dj, b) in drow.iter_mut().zip(bm[kk].iter()) {
                    *dj += (x * b) as f64;
                }
            }
        }
        for l in 0..32u32 {
            let (g, t) = ((l / 4) as usize, (l % 4) as usize);
            if cd == Ty::F32 {
                for (i, r) in d.iter().enumerate() {
                    let v = dm[g + 8 * (i >> 1)][2 * t + (i & 1)] as f32;
                    w.regs[*r as usize * 32 + l as usize] = v.to_bits() as u64;
                }
            } else {
                for (i, r) in d.iter().enumerate() {
                    let lo = num::round_to(dm[g + 8 * i][2 * t], Ty::F16, Rnd::Rn);
                    let hi = num::round_to(dm[g + 8 * i][2 * t + 1], Ty::F16, Rnd::Rn);
                    w.regs[*r as usize * 32 + l as usize] = (hi << 16) | lo;
                }
            }
        }
    }
}

impl Warp {
    /// Lanes blocked on barrier `id`.
    fn bar_lanes(&self, id: u32) -> u32 {
        lanes(self.blocked)
            .filter(|&l| self.bar_of[l as usize] as u32 == id)
            .fold(0, |m, l| m | 1 << l)
    }

    fn set_bar_lanes(&mut self, id: u32, m: u32) {
        for l in lanes(m) {
            self.bar_of[l as usize] = id as u8;
        }
    }

    /// Writes `v` to register `d` of every lane in `m` (a warp-uniform result).
    fn set_lanes(&mut self, d: u32, m: u32, v: u64) {
        for l in lanes(m) {
            self.regs[d as usize * 32 + l as usize] = v;
        }
    }
}

/// Applies an atomic operation of type `ty` to `old` with operands `b` (and `c` for cas).
pub fn atom_apply(op: AtomOp, ty: Ty, old: u64, b: u64, c: u64) -> u64 {
    let m = ty.mask();
    match (op, ty) {
        (AtomOp::Add, Ty::F32 | Ty::F64 | Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2) => {
            let f = AluFlags {
                rnd: Rnd::Rn,
                ftz: false,
                sat: false,
                nan: false,
                approx: false,
            };
            num::alu(AluOp::Add, ty, f, [old, b, 0, 0])
        }
        (AtomOp::Min | AtomOp::Max, Ty::F32 | Ty::F64 | Ty::F16x2 | Ty::Bf16x2) => {
            let f = AluFlags {
                rnd: Rnd::Rn,
                ftz: false,
                sat: false,
                nan: false,
                approx: false,
            };
            let op = if op == AtomOp::Min {
                AluOp::Min
            } else {
                AluOp::Max
            };
            num::alu(op, ty, f, [old, b, 0, 0])
        }
        (AtomOp::Add, _) => old.wrapping_add(b) & m,
        (AtomOp::Min, _) => {
            if num::int_val(b, ty) < num::int_val(old, ty) {
                b & m
            } else {
                old
            }
        }
        (AtomOp::Max, _) => {
            if num::int_val(b, ty) > num::int_val(old, ty) {
                b & m
            } else {
                old
            }
        }
        (AtomOp::Exch, _) => b & m,
        (AtomOp::Cas, _) => {
            if old == b & m {
                c & m
            } else {
                old
            }
        }
        (AtomOp::And, _) => old & b,
        (AtomOp::Or, _) => (old | b) & m,
        (AtomOp::Xor, _) => (old ^ b) & m,
        (AtomOp::Inc, _) => {
            if old >= b & m {
                0
            } else {
                old + 1
            }
        }
        (AtomOp::Dec, _) => {
            if old == 0 || old > b & m {
                b & m
            } else {
                old - 1
            }
        }
    }
}

/// The address `a` names in each of the 32 lanes of `w` (registers are read for every
/// lane: the inactive ones' values are unused).
#[inline]
fn lane_addrs(w: &Warp, a: Addr) -> [u64; 32] {
    let mut out = [a.offset as u64; 32];
    if let Some(r) = a.base {
        let regs = &w.regs[r as usize * 32..r as usize * 32 + 32];
        for (o, &v) in out.iter_mut().zip(regs) {
            *o = v.wrapping_add(a.offset as u64);
        }
    }
    out
}

/// How a store of `new` over `old` (same length) is a store of the same value, or `None`
/// when it is not: equal bytes, or (for float and untyped types) floats at most
/// [`RACE_ULPS`] apart in every element. An untyped `.bN` value may hold floats of any
/// width up to N (e.g. f16x2 in a b32), so each width is tried.
fn near_value(old: &[u8], new: &[u8], ty: Option<Ty>) -> Option<String> {
    if old == new {
        return Some("both store the same value".to_string());
    }
    let widths: &[(u32, &str)] = match ty? {
        Ty::F16 => &[(2, "f16")],
        Ty::Bf16 => &[(2, "bf16")],
        Ty::F16x2 | Ty::Bf16x2 => &[(2, "16-bit floats")],
        Ty::F32 | Ty::Tf32 => &[(4, "f32")],
        Ty::F64 => &[(8, "f64")],
        Ty::B16 => &[(2, "16-bit floats")],
        Ty::B32 => &[(4, "f32"), (2, "16-bit floats")],
        Ty::B64 | Ty::B128 => &[(8, "f64"), (4, "f32"), (2, "16-bit floats")],
        _ => return None,
    };
    widths.iter().find_map(|&(w, name)| {
        let ulps = old
            .chunks_exact(w as usize)
            .zip(new.chunks_exact(w as usize))
            .map(|(a, b)| ulp_distance(le(a, 0, w), le(b, 0, w), w))
            .try_fold(0u64, |m, d| d.map(|d| m.max(d)))?;
        (ulps <= RACE_ULPS).then(|| {
            format!(
                "the values differ by {ulps} ulp{} as {name}",
                if ulps == 1 { "" } else { "s" }
            )
        })
    })
}

/// Units in the last place between two IEEE floats of `w` bytes (2 covers f16 and bf16,
/// whose ulp distance is the same integer distance); `None` when either is a NaN or an
/// infinity and they differ.
fn ulp_distance(a: u64, b: u64, w: u32) -> Option<u64> {
    let (sign, exp_mask) = match w {
        2 => (1u64 << 15, None),
        4 => (1u64 << 31, Some(0x7f80_0000u64)),
        _ => (1u64 << 63, Some(0x7ff0_0000_0000_0000u64)),
    };
    // The 16-bit formats disagree on the exponent field: f16 has 5 bits, bf16 8. Treat
    // the top of either (all ones in f16's field or bf16's) as non-finite.
    let non_finite = |x: u64| match exp_mask {
        Some(m) => x & m == m,
        None => x & 0x7c00 == 0x7c00 || x & 0x7f80 == 0x7f80,
    };
    if a == b {
        return Some(0);
    }
    if non_finite(a) || non_finite(b) {
        return None;
    }
    let ordered = |x: u64| {
        let mag = (x & (sign - 1)) as i128;
        if x & sign != 0 { -mag } else { mag }
    };
    Some(ordered(a).abs_diff(ordered(b)) as u64)
}

/// Little-endian value of `size` (1, 2, 4 or 8) bytes of `buf` at `o`.
#[inline]
fn le(buf: &[u8], o: usize, size: u32) -> u64 {
    match size {
        1 => buf[o] as u64,
        2 => u16::from_le_bytes([buf[o], buf[o + 1]]) as u64,
        4 => u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]) as u64,
        _ => u64::from_le_bytes([
            buf[o],
            buf[o + 1],
            buf[o + 2],
            buf[o + 3],
            buf[o + 4],
            buf[o + 5],
            buf[o + 6],
            buf[o + 7],
        ]),
    }
}

/// `(x, y, z)` of linear thread index `tid` in a block.
pub fn thread_index(block: [u32; 3], tid: u32) -> [u32; 3] {
    [
        tid % block[0],
        (tid / block[0]) % block[1],
        tid / (block[0] * block[1]),
    ]
}
