//! The CPU cost model: per-launch counts of what a GPU would spend its time on.
//!
//! - dynamic warp instructions by class ([`Profile::alu`], [`Profile::mma`], ...);
//! - global memory traffic: bytes requested by the active lanes, and the distinct
//!   32-byte sectors each warp-level access touches (what the memory system moves once
//!   the access is coalesced);
//! - shared-memory bank conflicts: 32 banks of 4 bytes; an access is served in as many
//!   wavefronts as the largest number of distinct 4-byte words any one bank holds among
//!   the addresses of one phase (a broadcast of the same word is free). 8-byte accesses
//!   are served per half-warp and 16-byte ones per quarter-warp (a phase moves at most
//!   128 bytes), so their minimum is 2 and 4 wavefronts, which are not conflicts.
//!   `ldmatrix`/`stmatrix` are one phase per 8x8 matrix (8 rows of 16 bytes).
//!
//! Atomics count as a read and a write of their bytes. `cp.async` counts the global bytes
//! it reads (not its shared write). Local and parameter memory are not counted as traffic.

use std::fmt;

use crate::ir::{MemSpace, Op};

/// The class of a warp instruction in a [`Profile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Alu = 0,
    Mma = 1,
    Shared = 2,
    Global = 3,
    Barrier = 4,
    Other = 5,
    Wgmma = 6,
}

impl Class {
    /// Number of classes.
    pub(crate) const COUNT: usize = 7;

    /// The class of an instruction; generic memory accesses count as global until the
    /// interpreter sees the address.
    pub(crate) fn of(op: &Op) -> Class {
        match op {
            Op::Alu { .. }
            | Op::Setp { .. }
            | Op::Set { .. }
            | Op::Selp { .. }
            | Op::Pack { .. }
            | Op::Unpack { .. }
            | Op::Cvt { .. }
            | Op::CvtPack { .. }
            | Op::Cvta { .. } => Class::Alu,
            Op::Mma { .. } => Class::Mma,
            Op::Wgmma(crate::wgmma::WgOp::Mma(_)) => Class::Wgmma,
            Op::Ld { space, .. } | Op::St { space, .. } | Op::Atom { space, .. } => match space {
                MemSpace::Global | MemSpace::Generic => Class::Global,
                MemSpace::Shared => Class::Shared,
                MemSpace::Local | MemSpace::Param => Class::Other,
            },
            Op::Ldmatrix { .. } | Op::Stmatrix { .. } => Class::Shared,
            Op::CpAsync { .. } => Class::Global,
            Op::Bar { .. } => Class::Barrier,
            _ => Class::Other,
        }
    }
}

/// Dynamic cost counts of one launch, or the sum of several ([`Profile::add`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Launches summed into this profile.
    pub launches: u64,
    /// Warp instructions of arithmetic, logic, comparisons, conversions and moves.
    pub alu: u64,
    /// `mma.sync` warp instructions.
    pub mma: u64,
    /// `wgmma.mma_async` warp instructions (each of the 4 warps of a warpgroup counts
    /// one; fences, commits and waits are `other`).
    pub wgmma: u64,
    /// Shared-memory loads, stores and atomics, `ldmatrix` and `stmatrix`.
    pub shared: u64,
    /// Global-memory loads, stores, atomics and `cp.async`.
    pub global: u64,
    /// `bar.sync`, `barrier.sync` and `bar.arrive`.
    pub barrier: u64,
    /// Everything else: branches, exits, shuffles, votes, `cp.async` commits and waits,
    /// parameter and local memory, fences.
    pub other: u64,
    /// Bytes the active lanes of global loads (and atomics) requested.
    pub global_read_bytes: u64,
    /// Bytes the active lanes of global stores (and atomics) wrote.
    pub global_write_bytes: u64,
    /// Distinct 32-byte sectors touched by each warp-level global load, summed.
    pub global_read_sectors: u64,
    /// Distinct 32-byte sectors touched by each warp-level global store, summed.
    pub global_write_sectors: u64,
    /// Wavefronts of all shared-memory accesses (at least one per phase).
    pub shared_wavefronts: u64,
    /// Wavefronts beyond the minimum of each access phase, caused by distinct words in
    /// the same bank.
    pub shared_bank_conflicts: u64,
}

impl Profile {
    /// Warp instructions of every class.
    pub fn warp_instructions(&self) -> u64 {
        self.alu + self.mma + self.wgmma + self.shared + self.global + self.barrier + self.other
    }

    /// Global bytes read and written.
    pub fn global_bytes(&self) -> u64 {
        self.global_read_bytes + self.global_write_bytes
    }

    /// Global sectors read and written, times 32: the bytes the memory system moves.
    pub fn global_sector_bytes(&self) -> u64 {
        32 * (self.global_read_sectors + self.global_write_sectors)
    }

    /// Adds the counts of `other` to these.
    pub fn add(&mut self, other: &Profile) {
        self.launches += other.launches;
        self.alu += other.alu;
        self.mma += other.mma;
        self.wgmma += other.wgmma;
        self.shared += other.shared;
        self.global += other.global;
        self.barrier += other.barrier;
        self.other += other.other;
        self.global_read_bytes += other.global_read_bytes;
        self.global_write_bytes += other.global_write_bytes;
        self.global_read_sectors += other.global_read_sectors;
        self.global_write_sectors += other.global_write_sectors;
        self.shared_wavefronts += other.shared_wavefronts;
        self.shared_bank_conflicts += other.shared_bank_conflicts;
    }

    /// Adds warp-instruction counts indexed by [`Class`].
    pub(crate) fn add_classes(&mut self, counts: &[u64; Class::COUNT]) {
        self.alu += counts[Class::Alu as usize];
        self.mma += counts[Class::Mma as usize];
        self.wgmma += counts[Class::Wgmma as usize];
        self.shared += counts[Class::Shared as usize];
        self.global += counts[Class::Global as usize];
        self.barrier += counts[Class::Barrier as usize];
        self.other += counts[Class::Other as usize];
    }

    /// Counts a warp-level global access of `size` bytes per lane at `addrs[l]` for the
    /// lanes in `active`.
    #[inline]
    pub(crate) fn global_access(&mut self, addrs: &[u64; 32], active: u32, size: u32, write: bool) {
        if active == 0 {
            return;
        }
        let bytes = u64::from(active.count_ones()) * u64::from(size);
        let sectors = distinct_sectors(addrs, active, size);
        if write {
            self.global_write_bytes += bytes;
            self.global_write_sectors += sectors;
        } else {
            self.global_read_bytes += bytes;
            self.global_read_sectors += sectors;
        }
    }

    /// Counts a shared access of `size` bytes per lane at `addrs[l]` (byte addresses; only
    /// their low 32 bits matter) for the lanes in `active`, in phases of `128 / size`
    /// lanes (at least 8, at most 32).
    #[inline]
    pub(crate) fn shared_access(&mut self, addrs: &[u64; 32], active: u32, size: u32) {
        if active == 0 {
            return;
        }
        let per_phase = 128 / size.clamp(4, 16);
        let wpl = size.div_ceil(4).max(1);
        // The common cases: lanes at consecutive elements, or all at one element (a
        // broadcast). Each phase then touches at most 32 consecutive words, or one.
        let l0 = active.trailing_zeros();
        let w0 = (addrs[l0 as usize] >> 2) as u32;
        let (mut consecutive, mut same) = (true, true);
        for (l, &a) in addrs.iter().enumerate() {
            if active & (1 << l) != 0 {
                let w = (a >> 2) as u32;
                consecutive &= w == w0.wrapping_add((l as u32).wrapping_sub(l0).wrapping_mul(wpl));
                same &= w == w0;
            }
        }
        let phase_mask = |p: u32| {
            if per_phase == 32 {
                u32::MAX
            } else {
                ((1u32 << per_phase) - 1) << (p * per_phase)
            }
        };
        for p in 0..32 / per_phase {
            let m = active & phase_mask(p);
            if m != 0 {
                let w = if consecutive || same {
                    1
                } else {
                    phase_wavefronts(addrs, m, wpl)
                };
                self.shared_wavefronts += w;
                self.shared_bank_conflicts += w - 1;
            }
        }
    }
}

#[inline]
fn lanes(mut m: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if m == 0 {
            None
        } else {
            let l = m.trailing_zeros();
            m &= m - 1;
            Some(l as usize)
        }
    })
}

/// Distinct 32-byte sectors touched by `size`-byte accesses at `addrs` of the `active`
/// lanes. Lanes in address order (the coalesced case) take one pass.
#[inline]
fn distinct_sectors(addrs: &[u64; 32], active: u32, size: u32) -> u64 {
    let last = u64::from(size.max(1)) - 1;
    let mut count = 0u64;
    let mut prev: Option<u64> = None;
    let mut ordered = true;
    for l in lanes(active) {
        let (s, e) = (addrs[l] >> 5, addrs[l].wrapping_add(last) >> 5);
        if s != e {
            ordered = false;
            break;
        }
        match prev {
            Some(p) if p == s => {}
            Some(p) if p > s => {
                ordered = false;
                break;
            }
            _ => {
                count += 1;
                prev = Some(s);
            }
        }
    }
    if ordered {
        return count;
    }
    let mut all = [0u64; 64];
    let mut n = 0;
    for l in lanes(active) {
        let (s, e) = (addrs[l] >> 5, addrs[l].wrapping_add(last) >> 5);
        all[n] = s;
        n += 1;
        if e != s {
            all[n] = e;
            n += 1;
        }
    }
    let all = &mut all[..n];
    all.sort_unstable();
    1 + all.windows(2).filter(|w| w[0] != w[1]).count() as u64
}

/// Wavefronts of one phase of a shared access: the most distinct 4-byte words in one
/// bank (at least 1).
#[inline]
fn phase_wavefronts(addrs: &[u64; 32], active: u32, words_per_lane: u32) -> u64 {
    let mut seen = 0u32;
    let mut first = [0u32; 32];
    let mut conflict = false;
    for l in lanes(active) {
        let w0 = (addrs[l] >> 2) as u32;
        for k in 0..words_per_lane {
            let w = w0.wrapping_add(k);
            let b = w & 31;
            if seen & (1 << b) == 0 {
                seen |= 1 << b;
                first[b as usize] = w;
            } else if first[b as usize] != w {
                conflict = true;
            }
        }
    }
    if !conflict {
        return 1;
    }
    let mut words = [0u32; 128];
    let mut n = 0;
    for l in lanes(active) {
        let w0 = (addrs[l] >> 2) as u32;
        for k in 0..words_per_lane {
            words[n] = w0.wrapping_add(k);
            n += 1;
        }
    }
    let words = &mut words[..n];
    words.sort_unstable();
    let mut per_bank = [0u64; 32];
    let mut prev = None;
    for &w in words.iter() {
        if prev != Some(w) {
            per_bank[(w & 31) as usize] += 1;
            prev = Some(w);
        }
    }
    per_bank.iter().copied().max().unwrap_or(1).max(1)
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.warp_instructions();
        let pct = |n: u64| {
            if total == 0 {
                0.0
            } else {
                100.0 * n as f64 / total as f64
            }
        };
        writeln!(
            f,
            "profile ({} launch{}):",
            self.launches,
            if self.launches == 1 { "" } else { "es" }
        )?;
        writeln!(f, "  {:<22} {:>16} {:>7}", "warp instructions", total, "")?;
        for (name, n) in [
            ("alu", self.alu),
            ("mma", self.mma),
            ("wgmma", self.wgmma),
            ("shared", self.shared),
            ("global", self.global),
            ("barrier", self.barrier),
            ("other/control", self.other),
        ] {
            writeln!(f, "    {name:<20} {n:>16} {:>6.1}%", pct(n))?;
        }
        writeln!(
            f,
            "  {:<22} {:>16} {:>16}",
            "global memory", "bytes", "32-B sectors"
        )?;
        writeln!(
            f,
            "    {:<20} {:>16} {:>16}",
            "read", self.global_read_bytes, self.global_read_sectors
        )?;
        writeln!(
            f,
            "    {:<20} {:>16} {:>16}",
            "written", self.global_write_bytes, self.global_write_sectors
        )?;
        writeln!(
            f,
            "  {:<22} {:>16} {:>16}",
            "shared memory", "wavefronts", "bank conflicts"
        )?;
        write!(
            f,
            "    {:<20} {:>16} {:>16}",
            "accesses", self.shared_wavefronts, self.shared_bank_conflicts
        )
    }
}
