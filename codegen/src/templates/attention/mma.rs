//! Warp-level tensor-core helpers of [`FlashWriter`]: `m16n8` accumulator
//! tiles, `ldmatrix` fragments, `mma.sync.m16n8k16` products, and the
//! stores of accumulator rows to global memory.

use crate::kernel::{
    Address, BinOp, Cmp, Guard, Inst, Operand, Reg, RegClass, Space, TernOp, Type,
};
use crate::templates::pack_f32;

use super::writer::FlashWriter;

/// The f32 registers of an `m16n8` accumulator tile: `[row g: c0, c1; row g+8: c2, c3]`.
pub(in crate::templates) type Acc = [Reg; 4];

impl<'a> FlashWriter<'a> {
    /// Stores half `half` (rows `g`, or `g + 8`) of the accumulator tiles
    /// `acc`, times `scale` if any, in the input dtype as the global row
    /// `row` (skipped unless `row < n`): tile `t` at `lane_base + row *
    /// row_bytes + 16 t`.
    pub(in crate::templates) fn store_rows(
        &mut self,
        acc: &[Acc],
        half: usize,
        row: Reg,
        n: Reg,
        lane_base: Reg,
        scale: Option<Reg>,
    ) {
        let valid = self.b.setp(Cmp::Lt, Type::U32, row, n);
        let addr = self.b.ternary(
            TernOp::MadWide,
            Type::U32,
            row,
            Self::imm(self.row_bytes),
            lane_base,
        );
        let mut packed = Vec::new();
        for tile in acc {
            let (x, y) = (tile[2 * half], tile[2 * half + 1]);
            if let Some(k) = scale {
                self.f32_to(BinOp::Mul, x, x, k);
                self.f32_to(BinOp::Mul, y, y, k);
            }
            packed.push(pack_f32(self.b, self.d.dtype, &[x, y])[0]);
        }
        let guard = Guard {
            pred: valid,
            negate: false,
        };
        self.b.guarded(guard, |b| {
            for (t, &v) in packed.iter().enumerate() {
                b.st(
                    Space::Global,
                    Type::B32,
                    Address {
                        base: addr,
                        offset: 16 * t as i64,
                    },
                    vec![v],
                );
            }
        });
    }

    /// A fresh accumulator tile set to zero.
    pub(in crate::templates) fn zero_acc(&mut self) -> Acc {
        let z = Operand::F32(0.0);
        [
            self.b.mov(Type::F32, z),
            self.b.mov(Type::F32, z),
            self.b.mov(Type::F32, z),
            self.b.mov(Type::F32, z),
        ]
    }

    /// A fresh accumulator tile, not initialized.
    pub(in crate::templates) fn new_acc(&mut self) -> Acc {
        [
            self.b.reg(RegClass::F32),
            self.b.reg(RegClass::F32),
            self.b.reg(RegClass::F32),
            self.b.reg(RegClass::F32),
        ]
    }

    /// `ldmatrix.x4` (`.trans` with `trans`) at `base + offset`: four b32 fragments.
    pub(in crate::templates) fn ldmatrix(
        &mut self,
        base: Reg,
        offset: i64,
        trans: bool,
    ) -> Vec<Reg> {
        let dst: Vec<Reg> = (0..4).map(|_| self.b.reg(RegClass::B32)).collect();
        self.b.push(Inst::Ldmatrix {
            dst: dst.clone(),
            trans,
            addr: Address { base, offset },
        });
        dst
    }

    /// `acc += a * b` on tensor cores.
    pub(in crate::templates) fn mma(&mut self, ab: Type, acc: Acc, a: [Reg; 4], b: [Reg; 2]) {
        self.b.push(Inst::Mma {
            ab,
            d: acc,
            a,
            b,
            c: acc,
        });
    }

    /// `acc = A_w B^T` where A is this warp's 16 rows of the `[rows][D]` tile
    /// at `a_base` and B the `[n][D]` tile at `b_base` (n = 8 per acc tile).
    pub(in crate::templates) fn product(
        &mut self,
        acc: &[Acc],
        a_lane: Reg,
        a_base: u32,
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        let a = AFrags::Shared {
            lane: a_lane,
            base: a_base,
            tile_step: 0,
        };
        self.product_rows(&[acc], a, b_lane, b_base, ab);
    }

    /// The A fragment (16 rows x 16 k) at shared byte `offset` past the lane address.
    fn a_frag(&mut self, lane: Reg, offset: u32) -> [Reg; 4] {
        let f = self.ldmatrix(lane, i64::from(offset), false);
        [f[0], f[1], f[2], f[3]]
    }

    /// All A fragments `[tile][k-step]` of `tiles` row tiles of a `[rows][D]`
    /// shared tile (see [`AFrags::Shared`]).
    pub(super) fn load_a_frags(
        &mut self,
        lane: Reg,
        base: u32,
        tile_step: u32,
        tiles: u32,
    ) -> Vec<Vec<[Reg; 4]>> {
        (0..tiles)
            .map(|t| {
                (0..self.d.head_dim / 16)
                    .map(|kk| self.a_frag(lane, base + t * tile_step + kk * 32))
                    .collect()
            })
            .collect()
    }

    /// [`Self::product`] for several row tiles (`acc[t]` with the A rows of
    /// tile `t`); each B fragment is read once for all of them.
    pub(in crate::templates) fn product_rows(
        &mut self,
        acc: &[&[Acc]],
        a_frags: AFrags,
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        let stride = self.stride;
        for &r in acc.iter().copied().flatten().flatten() {
            self.b.mov_to(Type::F32, r, Operand::F32(0.0));
        }
        let b_pairs = acc.first().map_or(0, |t| t.len() / 2);
        for kk in 0..self.d.head_dim / 16 {
            let a: Vec<[Reg; 4]> = (0..acc.len())
                .map(|t| match &a_frags {
                    AFrags::Shared {
                        lane,
                        base,
                        tile_step,
                    } => self.a_frag(*lane, base + t as u32 * tile_step + kk * 32),
                    AFrags::Regs(frags) => frags[t][kk as usize],
                })
                .collect();
            for jp in 0..b_pairs {
                let bf = self.ldmatrix(
                    b_lane,
                    i64::from(b_base + jp as u32 * 16 * stride + kk * 32),
                    false,
                );
                for (tile, &frag) in acc.iter().zip(&a) {
                    self.mma(ab, tile[2 * jp], frag, [bf[0], bf[1]]);
                    self.mma(ab, tile[2 * jp + 1], frag, [bf[2], bf[3]]);
                }
            }
        }
    }

    /// `acc += A B` with A fragments `a` (16 rows x 16 k each) and B the
    /// `[k][D]` tile at `b_base` (`.trans`).
    pub(in crate::templates) fn accumulate(
        &mut self,
        acc: &[Acc],
        a: &[[Reg; 4]],
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        self.accumulate_rows(&[acc], &[a], b_lane, b_base, ab);
    }

    /// [`Self::accumulate`] for several row tiles: `acc[t] += a[t] B`; each B
    /// fragment is read once for all of them.
    pub(in crate::templates) fn accumulate_rows(
        &mut self,
        acc: &[&[Acc]],
        a: &[&[[Reg; 4]]],
        b_lane: Reg,
        b_base: u32,
        ab: Type,
    ) {
        let stride = self.stride;
        let k_steps = a.first().map_or(0, |t| t.len());
        let b_pairs = acc.first().map_or(0, |t| t.len() / 2);
        for kk in 0..k_steps {
            for np in 0..b_pairs {
                let bf = self.ldmatrix(
                    b_lane,
                    i64::from(b_base + kk as u32 * 16 * stride + np as u32 * 32),
                    true,
                );
                for (tile, frags) in acc.iter().zip(a) {
                    self.mma(ab, tile[2 * np], frags[kk], [bf[0], bf[1]]);
                    self.mma(ab, tile[2 * np + 1], frags[kk], [bf[2], bf[3]]);
                }
            }
        }
    }

    /// Accumulator tiles (16 x 8 each, in pairs) as A fragments in the input dtype.
    pub(in crate::templates) fn pack_a(&mut self, acc: &[Acc]) -> Vec<[Reg; 4]> {
        let dtype = self.d.dtype;
        acc.chunks(2)
            .map(|pair| {
                let (t0, t1) = (pair[0], pair[1]);
                [
                    pack_f32(self.b, dtype, &[t0[0], t0[1]])[0],
                    pack_f32(self.b, dtype, &[t0[2], t0[3]])[0],
                    pack_f32(self.b, dtype, &[t1[0], t1[1]])[0],
                    pack_f32(self.b, dtype, &[t1[2], t1[3]])[0],
                ]
            })
            .collect()
    }
}

/// Where [`FlashWriter::product_rows`] takes its A fragments from.
pub(in crate::templates) enum AFrags<'r> {
    /// `ldmatrix` per k-step from a `[rows][D]` shared tile: row tile `t`
    /// at `base + t * tile_step` bytes past the lane address `lane`.
    Shared {
        lane: Reg,
        base: u32,
        tile_step: u32,
    },
    /// Loaded once ([`FlashWriter::load_a_frags`]): `[tile][k-step]`.
    Regs(&'r [Vec<[Reg; 4]>]),
}
