//! Execution of the `wgmma` instructions ([`crate::wgmma`]) and their checker findings.
//!
//! A `wgmma.mma_async` is a warpgroup collective: every warp of the 4 must run it with
//! all its lanes, which each warp checks for itself, and at the end of the CTA the 4
//! warps must have issued the same mma_asyncs (lines, descriptors, scale-d). Its result is computed when a
//! `wgmma.wait_group` retires its group: the accumulators are read then (so chained
//! mma_asyncs on one accumulator see each other's results in issue order), shared
//! operands are read then through the checker, and D is written. The A fragment in
//! registers is taken at issue (reading it later gives the same values unless the
//! kernel touched it, which is a finding anyway).
//!
//! Findings: an access by another instruction to a register an unretired mma_async
//! holds ([`CheckKind::WgmmaRegisterInFlight`]); a shared write (or a cp.async issued
//! or delivered) to a 16-byte granule an unretired mma_async reads
//! ([`CheckKind::WgmmaOperandOverwrite`]); an mma_async whose
//! registers another instruction accessed since the warp's last `wgmma.fence`, or with
//! no fence yet ([`CheckKind::WgmmaMissingFence`]).

use std::collections::{HashSet, VecDeque};

use super::{LaunchCtx, Warp, Worker};
use crate::error::{CheckKind, EmuError, Space};
use crate::ir::{MemSpace, Src};
use crate::wgmma::{AOperand, Desc, KernelInfo, MmaAsync, WgOp, a_coord, d_coord, half_value};

/// A `wgmma.mma_async` a warp issued and no `wait_group` retired yet.
struct Pending {
    m: Box<MmaAsync>,
    line: u32,
    /// A's fragment (4 registers x 32 lanes) when it comes from registers.
    a_regs: Option<Box<[[u64; 32]; 4]>>,
    a_desc: Option<Desc>,
    b_desc: Desc,
    scale_d: bool,
    /// 16-byte shared granules the operands occupy (indices, deduplicated).
    granules: Vec<u32>,
}

/// A warp's `wgmma` state.
#[derive(Default)]
pub(super) struct WarpState {
    /// Issued, not committed.
    open: Vec<Pending>,
    /// Committed groups, oldest first.
    groups: VecDeque<Vec<Pending>>,
    /// Registers of some mma_async that other instructions accessed since the last fence.
    touched: HashSet<u32>,
    /// Whether the warp ran a `wgmma.fence` yet.
    fenced: bool,
    /// The mma_asyncs the warp issued: how many, a hash of their lines, descriptors and
    /// scale-d, and the line of the last (the 4 warps of a warpgroup must agree).
    issued: u64,
    signature: u64,
    last_line: u32,
}

impl WarpState {
    fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.open.iter().chain(self.groups.iter().flatten())
    }
}

/// A CTA's shared granules that in-flight mma_asyncs read.
#[derive(Default)]
pub(super) struct CtaState {
    /// Per 16-byte granule of shared memory: how many unretired mma_asyncs read it, and
    /// the PTX line of the last one issued.
    granules: Vec<(u16, u32)>,
    /// Unretired mma_asyncs in the CTA.
    in_flight: u32,
}

impl CtaState {
    /// Clears the state for a CTA of `shared_bytes` bytes of shared memory.
    pub(super) fn reset(&mut self, shared_bytes: u32) {
        let n = shared_bytes.div_ceil(16) as usize;
        if self.in_flight > 0 || self.granules.len() < n {
            self.granules.clear();
            self.granules.resize(n, (0, 0));
        }
        self.in_flight = 0;
    }

    /// Whether any mma_async of the CTA is in flight.
    pub(super) fn busy(&self) -> bool {
        self.in_flight > 0
    }
}

impl<'g> Worker<'g> {
    /// Runs a `wgmma` instruction.
    pub(super) fn wgmma(
        &mut self,
        ctx: &LaunchCtx<'g>,
        w: &mut Warp,
        op: &WgOp,
        mask: u32,
        active: u32,
        line: u32,
    ) -> Result<(), EmuError> {
        let what = match op {
            WgOp::Mma(_) => "wgmma.mma_async.sync.aligned",
            WgOp::Fence => "wgmma.fence.sync.aligned",
            WgOp::Commit => "wgmma.commit_group.sync.aligned",
            WgOp::Wait(_) => "wgmma.wait_group.sync.aligned",
        };
        if active == 0 {
            return Ok(());
        }
        self.collective(ctx, w, mask, u32::MAX, line, what)?;
        let threads = ctx.block.iter().product::<u32>();
        if active != mask || threads < (w.id / 4 + 1) * 128 {
            return Err(self.runtime(
                ctx,
                line,
                w.id * 32 + active.trailing_zeros(),
                format!(
                    "{what} needs all 128 threads of warpgroup {} (warps {}..{}) with a true guard; the block has {threads} threads and lanes {active:#010x} of warp {} run it",
                    w.id / 4,
                    w.id / 4 * 4,
                    w.id / 4 * 4 + 3,
                    w.id
                ),
            ));
        }
        match op {
            WgOp::Mma(m) => self.wgmma_issue(ctx, w, m, line)?,
            WgOp::Fence => {
                w.wg.fenced = true;
                w.wg.touched.clear();
            }
            WgOp::Commit => {
                let g = std::mem::take(&mut w.wg.open);
                w.wg.groups.push_back(g);
            }
            WgOp::Wait(n) => {
                while w.wg.groups.len() > *n as usize {
                    for p in w.wg.groups.pop_front().unwrap_or_default() {
                        self.wgmma_retire(ctx, w, p);
                    }
                }
            }
        }
        Ok(())
    }

    /// The value of `s`, which PTX requires to be the same in every lane of the warp.
    fn uniform(
        &self,
        ctx: &LaunchCtx<'g>,
        w: &Warp,
        s: Src,
        line: u32,
        what: &str,
    ) -> Result<u64, EmuError> {
        let v = self.rd(ctx, w, s, 0);
        match (1..32).find(|&l| self.rd(ctx, w, s, l) != v) {
            None => Ok(v),
            Some(l) => Err(self.runtime(
                ctx,
                line,
                w.id * 32 + l,
                format!(
                    "the {what} of wgmma.mma_async differs between lanes 0 and {l} of warp {} ({v:#x} and {:#x})",
                    w.id,
                    self.rd(ctx, w, s, l)
                ),
            )),
        }
    }

    /// A descriptor operand, with the forms the emulator does not model refused.
    fn descriptor(
        &self,
        ctx: &LaunchCtx<'g>,
        w: &Warp,
        s: Src,
        line: u32,
        what: &str,
    ) -> Result<Desc, EmuError> {
        let d = Desc::decode(self.uniform(ctx, w, s, line, what)?);
        if d.swizzle != 0 && d.base_offset != 0 {
            return Err(self.runtime(
                ctx,
                line,
                w.id * 32,
                format!(
                    "the {what} of wgmma.mma_async has base offset {}: the emulator supports swizzle patterns that start at their boundary (base offset 0) only",
                    d.base_offset
                ),
            ));
        }
        Ok(d)
    }

    fn wgmma_issue(
        &mut self,
        ctx: &LaunchCtx<'g>,
        w: &mut Warp,
        m: &MmaAsync,
        line: u32,
    ) -> Result<(), EmuError> {
        let unfenced = if w.wg.fenced {
            m.regs().find(|r| w.wg.touched.contains(r))
        } else {
            m.d.first().copied()
        };
        if let Some(r) = unfenced {
            let detail = if w.wg.fenced {
                format!("register slot {r} was accessed since the warp's last wgmma.fence")
            } else {
                "the warp has not run a wgmma.fence".to_string()
            };
            self.report(
                ctx,
                CheckKind::WgmmaMissingFence,
                Space::Register,
                r as u64,
                4,
                false,
                w.id * 32,
                line,
                detail,
            );
            // One finding per missing fence: the chain after it is ordered.
            w.wg.fenced = true;
            w.wg.touched.clear();
        }
        let b_desc = self.descriptor(ctx, w, m.b, line, "B descriptor")?;
        let (a_desc, a_regs) = match &m.a {
            AOperand::Desc(s) => (
                Some(self.descriptor(ctx, w, *s, line, "A descriptor")?),
                None,
            ),
            AOperand::Regs(srcs) => {
                let mut v = Box::new([[0u64; 32]; 4]);
                for (row, s) in v.iter_mut().zip(srcs) {
                    for (l, x) in row.iter_mut().enumerate() {
                        *x = self.rd(ctx, w, *s, l as u32);
                    }
                }
                (None, Some(v))
            }
        };
        let scale_d = (self.uniform(ctx, w, m.scale_d.0, line, "scale-d")? != 0) != m.scale_d.1;
        let a_raw = match &m.a {
            AOperand::Desc(s) => self.rd(ctx, w, *s, 0),
            AOperand::Regs(_) => 0,
        };
        for v in [line as u64, a_raw, self.rd(ctx, w, m.b, 0), scale_d as u64] {
            w.wg.signature =
                (w.wg.signature.rotate_left(7) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        w.wg.issued += 1;
        w.wg.last_line = line;
        let rows = 16 * (w.id % 4);
        let mut granules: Vec<u32> = b_desc
            .granules(0..m.n, !m.trans_b)
            .chain(
                a_desc
                    .iter()
                    .flat_map(|a| a.granules(rows..rows + 16, !m.trans_a)),
            )
            .map(|(addr, _, _)| addr / 16)
            .collect();
        granules.sort_unstable();
        granules.dedup();
        for g in &granules {
            if let Some(e) = self.wg.granules.get_mut(*g as usize) {
                *e = (e.0.saturating_add(1), line);
            }
        }
        self.wg.in_flight += 1;
        w.wg.open.push(Pending {
            m: Box::new(m.clone()),
            line,
            a_regs,
            a_desc,
            b_desc,
            scale_d,
            granules,
        });
        Ok(())
    }

    /// Reads the 16-bit matrix elements of `rows` x 16 through `desc` (checked shared
    /// loads of 16-byte granules, reported at `line`) into `out[mn - rows.start][k]`.
    #[allow(clippy::too_many_arguments)]
    fn wgmma_operand(
        &mut self,
        ctx: &LaunchCtx<'g>,
        wid: u32,
        line: u32,
        m: &MmaAsync,
        desc: &Desc,
        rows: std::ops::Range<u32>,
        k_major: bool,
        out: &mut [[f64; 16]],
    ) {
        let r0 = rows.start;
        for (addr, mn, k) in desc.granules(rows, k_major) {
            let mut g = [0u8; 16];
            self.load(
                ctx,
                MemSpace::Shared,
                addr as u64,
                &mut g,
                wid,
                wid * 32,
                line,
            );
            for e in 0..8u32 {
                let (i, kk) = if k_major { (mn, k + e) } else { (mn + e, k) };
                let bits = u16::from_le_bytes([g[2 * e as usize], g[2 * e as usize + 1]]);
                out[(i - r0) as usize][kk as usize] = half_value(bits, m.ab);
            }
        }
    }

    /// Computes a retired mma_async's part of D for warp `w`.
    fn wgmma_retire(&mut self, ctx: &LaunchCtx<'g>, w: &mut Warp, p: Pending) {
        for g in &p.granules {
            if let Some(e) = self.wg.granules.get_mut(*g as usize) {
                e.0 = e.0.saturating_sub(1);
            }
        }
        self.wg.in_flight = self.wg.in_flight.saturating_sub(1);
        let (m, wid) = (&p.m, w.id);
        let mut a = [[0f64; 16]; 16];
        match (&p.a_regs, &p.a_desc) {
            (Some(regs), _) => {
                for (i, row) in regs.iter().enumerate() {
                    for (l, &v) in row.iter().enumerate() {
                        let (r, k) = a_coord(l as u32, i);
                        a[r][k] = half_value(v as u16, m.ab);
                        a[r][k + 1] = half_value((v >> 16) as u16, m.ab);
                    }
                }
            }
            (None, Some(desc)) => {
                let rows = 16 * (wid % 4);
                self.wgmma_operand(
                    ctx,
                    wid,
                    p.line,
                    m,
                    desc,
                    rows..rows + 16,
                    !m.trans_a,
                    &mut a,
                );
            }
            (None, None) => {}
        }
        let mut b = vec![[0f64; 16]; m.n as usize];
        self.wgmma_operand(ctx, wid, p.line, m, &p.b_desc, 0..m.n, !m.trans_b, &mut b);
        let sign = if m.neg_a != m.neg_b { -1.0 } else { 1.0 };
        for l in 0..32u32 {
            for (i, &r) in m.d.iter().enumerate() {
                let (row, col) = d_coord(l, i);
                let slot = r as usize * 32 + l as usize;
                let mut acc = if p.scale_d {
                    f32::from_bits(w.regs[slot] as u32) as f64
                } else {
                    0.0
                };
                // Products of 16-bit floats are exact in f64; the sum rounds once to f32.
                let dot: f64 = a[row].iter().zip(&b[col]).map(|(x, y)| x * y).sum();
                acc += sign * dot;
                w.regs[slot] = (acc as f32).to_bits() as u64;
            }
        }
    }

    /// At the end of a CTA: the 4 warps of each warpgroup must have issued the same
    /// mma_asyncs (same instructions, descriptors and scale-d, in the same order).
    pub(super) fn wgmma_cta_end(
        &self,
        ctx: &LaunchCtx<'g>,
        warps: &[Warp],
    ) -> Result<(), EmuError> {
        for group in warps.chunks(4) {
            let first = &group[0].wg;
            if let Some(w) = group
                .iter()
                .find(|w| (w.wg.issued, w.wg.signature) != (first.issued, first.signature))
            {
                let (a, b) = (&group[0], w);
                let line = if b.wg.issued > 0 {
                    b.wg.last_line
                } else {
                    a.wg.last_line
                };
                return Err(self.runtime(
                    ctx,
                    line,
                    b.id * 32,
                    format!(
                        "the warps of warpgroup {} ran different wgmma.mma_async sequences (a collective of all 4 warps): warp {} issued {} and warp {} issued {}, or with other descriptors or scale-d",
                        a.id / 4,
                        a.id,
                        a.wg.issued,
                        b.id,
                        b.wg.issued
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checker hook run before every instruction of a kernel with `wgmma.mma_async`:
    /// reports accesses to registers an unretired mma_async holds, and records the
    /// accesses a later mma_async needs a `wgmma.fence` after.
    pub(super) fn wgmma_track(
        &mut self,
        ctx: &LaunchCtx<'g>,
        w: &mut Warp,
        info: &KernelInfo,
        pc: u32,
        active: u32,
        line: u32,
    ) {
        let touches = &info.touches[pc as usize];
        for &(r, write) in touches.iter() {
            w.wg.touched.insert(r);
            let holder = w.wg.pending().find(|p| p.m.regs().any(|x| x == r));
            if let Some(p) = holder {
                let detail = format!(
                    "register slot {r} is an operand of the wgmma.mma_async at PTX line {}, which no wgmma.wait_group has retired",
                    p.line
                );
                self.report(
                    ctx,
                    CheckKind::WgmmaRegisterInFlight,
                    Space::Register,
                    r as u64,
                    4,
                    write,
                    w.id * 32 + active.trailing_zeros(),
                    line,
                    detail,
                );
            }
        }
    }

    /// Reports a shared write of `size` bytes at `off` to granules an unretired
    /// mma_async reads.
    pub(super) fn wgmma_overwrite_check(
        &mut self,
        ctx: &LaunchCtx<'g>,
        off: u32,
        size: u32,
        tid: u32,
        line: u32,
    ) {
        let hit = (off / 16..(off + size).div_ceil(16))
            .find_map(|g| self.wg.granules.get(g as usize).filter(|e| e.0 > 0));
        if let Some(&(_, by)) = hit {
            self.report(
                ctx,
                CheckKind::WgmmaOperandOverwrite,
                Space::Shared,
                off as u64,
                size,
                true,
                tid,
                line,
                format!(
                    "the wgmma.mma_async at PTX line {by} reads these bytes and no wgmma.wait_group has retired it"
                ),
            );
        }
    }
}
