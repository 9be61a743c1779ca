//! Hopper's warpgroup MMA (`wgmma`): the decoded instructions, the shared-memory matrix
//! descriptor and its canonical layouts, the register fragments, and the static facts
//! the checker needs. `exec::wgmma` runs them, `decode::wgmma` parses them.
//!
//! `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}` computes
//! `D = (scale-d ? D : 0) + (±A) (±B)` for a 64 x 16 A, a 16 x N B and a 64 x N f32 D
//! held by the 128 threads of a warpgroup (4 consecutive warps). Warp `w % 4` of the
//! warpgroup holds rows `16 (w % 4) ..` of D (and of A in registers), so each warp's part
//! is computed from its own rows of A and all of B.
//!
//! Shared operands are read through a 64-bit matrix descriptor (PTX ISA, "Matrix
//! Descriptor Format"): bits 0-13 start address >> 4, 16-29 leading-dimension byte
//! offset (LBO) >> 4, 32-45 stride-dimension byte offset (SBO) >> 4, 49-51 base offset,
//! 62-63 swizzle (0 none, 1 128 B, 2 64 B, 3 32 B). The canonical layouts of 16-bit
//! elements, a matrix of `R` rows (M or N) by 16 K, in bytes from the start address:
//!
//! - K-major, no swizzle: 8 x 16-byte core matrices; `(mn % 8) * 16 + (mn / 8) * SBO +
//!   (k % 8) * 2 + (k / 8) * LBO`.
//! - K-major, swizzle of `S` = 32, 64, 128 bytes: rows of `S` bytes;
//!   `(mn % 8) * S + (mn / 8) * SBO + k * 2` (LBO unused).
//! - MN-major, no swizzle: `(mn % 8) * 2 + (mn / 8) * SBO + (k % 8) * 16 + (k / 8) * LBO`.
//! - MN-major, swizzle `S`: rows of `S / 2` elements along MN;
//!   `(mn % (S/2)) * 2 + (mn / (S/2)) * LBO + (k % 8) * S + (k / 8) * SBO`.
//!
//! A swizzled address `x` (start plus offset) is then `x ^ (((x >> 7) & m) << 4)` with
//! `m` = 1, 3, 7 for 32, 64, 128 bytes: the 16-byte chunk within a row is XORed with the
//! row's position in the repeating pattern of 256, 512 or 1024 bytes: the swizzle of
//! TMA boxes too (`tensormap::swizzle_address`, one function for both).

use std::collections::HashSet;

use crate::ir::{Addr, Instr, Op, Src, Ty};
use crate::tma::AsyncOp;

/// Where `wgmma.mma_async` takes matrix A from.
#[derive(Clone, Debug, PartialEq)]
pub enum AOperand {
    /// Four `.b32` registers per thread: the warpgroup's 64 x 16 fragment.
    Regs([Src; 4]),
    /// A 64-bit shared-memory matrix descriptor.
    Desc(Src),
}

/// A decoded `wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}`.
#[derive(Clone, Debug, PartialEq)]
pub struct MmaAsync {
    /// N of the shape: 8 to 256, a multiple of 8.
    pub n: u32,
    /// The type of A and B: `F16` or `Bf16`.
    pub ab: Ty,
    /// The `N / 2` f32 accumulator registers of each thread.
    pub d: Vec<u32>,
    /// Matrix A.
    pub a: AOperand,
    /// The descriptor of matrix B.
    pub b: Src,
    /// `scale-d` (a predicate or an immediate) and whether it is negated (`!p`).
    pub scale_d: (Src, bool),
    /// `imm-scale-a` / `imm-scale-b` of -1.
    pub neg_a: bool,
    /// See `neg_a`.
    pub neg_b: bool,
    /// `imm-trans-a` (A is M-major in shared memory; descriptor form only).
    pub trans_a: bool,
    /// `imm-trans-b` (B is N-major in shared memory).
    pub trans_b: bool,
}

impl MmaAsync {
    /// The registers the instruction keeps in flight: the accumulators and, when A comes
    /// from registers, A's fragment.
    pub fn regs(&self) -> impl Iterator<Item = u32> + '_ {
        let a = match &self.a {
            AOperand::Regs(r) => &r[..],
            AOperand::Desc(_) => &[][..],
        };
        self.d
            .iter()
            .copied()
            .chain(a.iter().filter_map(|s| match s {
                Src::Reg(r) => Some(*r),
                _ => None,
            }))
    }
}

/// The `wgmma` instructions.
#[derive(Clone, Debug, PartialEq)]
pub enum WgOp {
    /// `wgmma.mma_async`.
    Mma(Box<MmaAsync>),
    /// `wgmma.fence.sync.aligned`.
    Fence,
    /// `wgmma.commit_group.sync.aligned`.
    Commit,
    /// `wgmma.wait_group.sync.aligned n`.
    Wait(u32),
}

/// A decoded shared-memory matrix descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Start address in shared memory, in bytes.
    pub start: u32,
    /// Leading-dimension byte offset.
    pub lbo: u32,
    /// Stride-dimension byte offset.
    pub sbo: u32,
    /// The 3-bit base offset.
    pub base_offset: u32,
    /// Bytes of a swizzled row (32, 64 or 128), or 0 without swizzle.
    pub swizzle: u32,
}

impl Desc {
    /// Splits a 64-bit descriptor into its fields.
    pub fn decode(v: u64) -> Desc {
        let field = |shift: u32| ((v >> shift) & 0x3fff) as u32 * 16;
        Desc {
            start: field(0),
            lbo: field(16),
            sbo: field(32),
            base_offset: ((v >> 49) & 7) as u32,
            swizzle: match v >> 62 {
                1 => 128,
                2 => 64,
                3 => 32,
                _ => 0,
            },
        }
    }

    /// Shared-memory byte address of the 16-bit element `(mn, k)` (`k < 16`) of a matrix
    /// stored K-major (`k_major`) or MN-major.
    pub fn addr(&self, mn: u32, k: u32, k_major: bool) -> u32 {
        let s = self.swizzle;
        let off = match (k_major, s) {
            (true, 0) => (mn % 8) * 16 + (mn / 8) * self.sbo + (k % 8) * 2 + (k / 8) * self.lbo,
            (true, _) => (mn % 8) * s + (mn / 8) * self.sbo + k * 2,
            (false, 0) => (mn % 8) * 2 + (mn / 8) * self.sbo + (k % 8) * 16 + (k / 8) * self.lbo,
            (false, _) => {
                let e = s / 2;
                (mn % e) * 2 + (mn / e) * self.lbo + (k % 8) * s + (k / 8) * self.sbo
            }
        };
        crate::tensormap::swizzle_address(self.start.wrapping_add(off), s)
    }

    /// The 16-byte granules holding rows `rows` (of M or N) by 16 K of a 16-bit matrix:
    /// `(address, mn, k)` of each granule's first element; its 8 elements follow along K
    /// (K-major) or along MN.
    pub fn granules(
        &self,
        rows: std::ops::Range<u32>,
        k_major: bool,
    ) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let (outer, inner) = if k_major {
            (rows.clone().collect::<Vec<_>>(), vec![0, 8])
        } else {
            (
                (0..16).collect(),
                rows.clone().step_by(8).collect::<Vec<_>>(),
            )
        };
        outer.into_iter().flat_map(move |o| {
            inner.clone().into_iter().map(move |i| {
                let (mn, k) = if k_major { (o, i) } else { (i, o) };
                (self.addr(mn, k, k_major), mn, k)
            })
        })
    }
}

/// `(row within the warp's 16, column)` of accumulator register `i` of `lane` (the
/// m64nNk16 D fragment: `N / 8` groups of four, like mma.m16n8's C fragment).
pub fn d_coord(lane: u32, i: usize) -> (usize, usize) {
    let (g, t) = ((lane / 4) as usize, (lane % 4) as usize);
    let (j, r) = (i / 4, i % 4);
    (g + 8 * (r >> 1), 8 * j + 2 * t + (r & 1))
}

/// `(row within the warp's 16, k)` of the low half of A register `i` of `lane` (the high
/// half is at `k + 1`; the fragment of mma.m16n8k16's A).
pub fn a_coord(lane: u32, i: usize) -> (usize, usize) {
    let (g, t) = ((lane / 4) as usize, (lane % 4) as usize);
    (g + 8 * (i & 1), 2 * t + 8 * (i >> 1))
}

/// A 16-bit float of type `ty` (`F16` or `Bf16`) as f64.
pub fn half_value(bits: u16, ty: Ty) -> f64 {
    if ty == Ty::Bf16 {
        half::bf16::from_bits(bits).to_f64()
    } else {
        half::f16::from_bits(bits).to_f64()
    }
}

/// Calls `f(register, written)` for each register operand of `op`.
pub fn op_regs(op: &Op, f: &mut impl FnMut(u32, bool)) {
    let src = |s: &Src, f: &mut dyn FnMut(u32, bool)| {
        if let Src::Reg(r) = s {
            f(*r, false)
        }
    };
    let addr = |a: &Addr, f: &mut dyn FnMut(u32, bool)| {
        if let Some(r) = a.base {
            f(r, false)
        }
    };
    match op {
        Op::Alu { op, d, s, .. } => {
            s.iter().take(op.arity()).for_each(|x| src(x, f));
            f(*d, true);
        }
        Op::Setp {
            p, q, a, b, comb, ..
        } => {
            src(a, f);
            src(b, f);
            if let Some((_, c, _)) = comb {
                src(c, f);
            }
            p.iter().chain(q.iter()).for_each(|r| f(*r, true));
        }
        Op::Set { d, a, b, .. } => {
            src(a, f);
            src(b, f);
            f(*d, true);
        }
        Op::Selp { d, a, b, c, .. } => {
            [a, b, c].into_iter().for_each(|x| src(x, f));
            f(*d, true);
        }
        Op::Pack { d, parts, .. } => {
            parts.iter().for_each(|x| src(x, f));
            f(*d, true);
        }
        Op::Unpack { ds, a, .. } => {
            src(a, f);
            ds.iter().flatten().for_each(|r| f(*r, true));
        }
        Op::Cvt { d, a, .. } | Op::Cvta { d, a, .. } => {
            src(a, f);
            f(*d, true);
        }
        Op::CvtPack { d, a, b, .. } => {
            src(a, f);
            src(b, f);
            f(*d, true);
        }
        Op::Ld { ds, addr: a, .. } => {
            addr(a, f);
            ds.iter().flatten().for_each(|r| f(*r, true));
        }
        Op::St { srcs, addr: a, .. } => {
            addr(a, f);
            srcs.iter().for_each(|x| src(x, f));
        }
        Op::Atom {
            d, addr: a, b, c, ..
        } => {
            addr(a, f);
            b.iter().chain([c]).for_each(|x| src(x, f));
            d.iter().for_each(|r| f(*r, true));
        }
        Op::ActiveMask { d } => f(*d, true),
        Op::Bar { id, count, .. } => {
            src(id, f);
            count.iter().for_each(|x| src(x, f));
        }
        Op::WarpSync { mask } => src(mask, f),
        Op::Shfl {
            d,
            p,
            a,
            b,
            c,
            mask,
            ..
        } => {
            [a, b, c, mask].into_iter().for_each(|x| src(x, f));
            f(*d, true);
            p.iter().for_each(|r| f(*r, true));
        }
        Op::Vote { d, a, mask, .. } | Op::Redux { d, a, mask, .. } => {
            src(a, f);
            src(mask, f);
            f(*d, true);
        }
        Op::Ldmatrix { ds, addr: a, .. } => {
            addr(a, f);
            ds.iter().for_each(|r| f(*r, true));
        }
        Op::Stmatrix { srcs, addr: a, .. } => {
            addr(a, f);
            srcs.iter().for_each(|x| src(x, f));
        }
        Op::Mma { d, a, b, c, .. } => {
            a.iter().chain(b).chain(c).for_each(|x| src(x, f));
            d.iter().for_each(|r| f(*r, true));
        }
        Op::CpAsync {
            dst,
            src: s,
            src_size,
            ignore_src,
            ..
        } => {
            addr(dst, f);
            addr(s, f);
            src_size.iter().for_each(|x| src(x, f));
            ignore_src.iter().for_each(|(x, _)| src(x, f));
        }
        Op::Wgmma(WgOp::Mma(m)) => {
            m.regs().for_each(|r| f(r, false));
            m.d.iter().for_each(|r| f(*r, true));
            src(&m.b, f);
            src(&m.scale_d.0, f);
            if let AOperand::Desc(a) = &m.a {
                src(a, f);
            }
        }
        Op::Async(a) => match &**a {
            AsyncOp::Mbar {
                addr: m, d, a: x, ..
            } => {
                addr(m, f);
                x.iter().for_each(|x| src(x, f));
                d.iter().for_each(|r| f(*r, true));
            }
            AsyncOp::BulkLoad {
                dst,
                src: s,
                size,
                mbar,
            } => {
                [dst, s, mbar].into_iter().for_each(|a| addr(a, f));
                src(size, f);
            }
            AsyncOp::BulkStore { dst, src: s, size } => {
                addr(dst, f);
                addr(s, f);
                src(size, f);
            }
            AsyncOp::BulkGroup => {}
            AsyncOp::Tensor {
                smem,
                tmap,
                coords,
                mbar,
                ..
            } => {
                [Some(smem), Some(tmap), mbar.as_ref()]
                    .into_iter()
                    .flatten()
                    .for_each(|a| addr(a, f));
                coords.iter().for_each(|x| src(x, f));
            }
            AsyncOp::Replace { addr: m, value, .. } => {
                addr(m, f);
                src(value, f);
            }
            AsyncOp::TmapCopy { dst, src: s } => {
                addr(dst, f);
                addr(s, f);
            }
            AsyncOp::Elect { d, p, mask } => {
                src(mask, f);
                d.iter().chain(p.iter()).for_each(|r| f(*r, true));
            }
        },
        Op::Wgmma(_)
        | Op::Bra { .. }
        | Op::Exit
        | Op::Nop
        | Op::CpAsyncCommit
        | Op::CpAsyncWait { .. } => {}
    }
}

/// What the checker needs to know statically about a kernel that uses `wgmma`.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelInfo {
    /// Per instruction: the registers it reads (false) or writes (true) among those
    /// some `wgmma.mma_async` keeps in flight; empty for the wgmma instructions.
    pub touches: Vec<Box<[(u32, bool)]>>,
}

impl KernelInfo {
    /// The facts of `code`, or `None` when it has no `wgmma.mma_async`.
    pub fn new(code: &[Instr]) -> Option<KernelInfo> {
        let held: HashSet<u32> = code
            .iter()
            .filter_map(|i| match &i.op {
                Op::Wgmma(WgOp::Mma(m)) => Some(m.regs()),
                _ => None,
            })
            .flatten()
            .collect();
        if held.is_empty() {
            return None;
        }
        let touches = code
            .iter()
            .map(|i| {
                let mut v = Vec::new();
                if !matches!(i.op, Op::Wgmma(_)) {
                    op_regs(&i.op, &mut |r, w| {
                        if held.contains(&r) && !v.contains(&(r, w)) {
                            v.push((r, w));
                        }
                    });
                }
                v.into_boxed_slice()
            })
            .collect();
        Some(KernelInfo { touches })
    }
}
