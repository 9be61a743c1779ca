//! Lane-level arithmetic: integer and float ALU operations, comparisons and conversions,
//! following the PTX ISA definitions.
//!
//! Floats of every width are computed in `f64` and rounded once to the result type; for
//! `+ - * / sqrt` of f32, f16 and bf16 operands this is exactly the correctly rounded
//! result (f64 has more than `2p + 2` bits). `fma.f32` may differ from a fused result
//! by one ulp in rare double-rounding cases.

use crate::ir::{AluFlags, AluOp, Cmp, PrmtMode, Rnd, Ty};

/// Sign-extends the low `ty.bits()` bits of `v`.
#[inline]
pub fn sext(v: u64, ty: Ty) -> i64 {
    let sh = 64 - ty.bits().min(64);
    ((v << sh) as i64) >> sh
}

/// Reads an integer operand as i128 by its type's signedness.
#[inline]
pub fn int_val(v: u64, ty: Ty) -> i128 {
    if ty.is_signed() {
        sext(v, ty) as i128
    } else {
        (v & ty.mask()) as i128
    }
}

/// Decodes a scalar float of type `ty` from its bits.
#[inline]
pub fn to_f64(v: u64, ty: Ty) -> f64 {
    match ty {
        Ty::F64 => f64::from_bits(v),
        Ty::F16 => half::f16::from_bits(v as u16).to_f64(),
        Ty::Bf16 => half::bf16::from_bits(v as u16).to_f64(),
        _ => f32::from_bits(v as u32) as f64,
    }
}

/// Rounds `x` to type `ty` with rounding mode `rnd` (default: to nearest even); returns bits.
pub fn round_to(x: f64, ty: Ty, rnd: Rnd) -> u64 {
    match ty {
        Ty::F64 => x.to_bits(),
        Ty::F16 => directed(
            x,
            rnd,
            half::f16::from_f64(x).to_bits() as u64,
            0x8000,
            |b| half::f16::from_bits(b as u16).to_f64(),
        ),
        Ty::Bf16 => directed(
            x,
            rnd,
            half::bf16::from_f64(x).to_bits() as u64,
            0x8000,
            |b| half::bf16::from_bits(b as u16).to_f64(),
        ),
        _ => directed(x, rnd, (x as f32).to_bits() as u64, 0x8000_0000, |b| {
            f32::from_bits(b as u32) as f64
        }),
    }
}

/// Adjusts a round-to-nearest result `r` (bits of a sign-magnitude float whose sign bit
/// is `sign`) to a directed rounding mode.
#[inline]
fn directed(x: f64, rnd: Rnd, r: u64, sign: u64, val: impl Fn(u64) -> f64) -> u64 {
    let rv = val(r);
    if rv == x || x.is_nan() {
        return r;
    }
    let next_up = |r: u64| {
        if r & sign == 0 {
            r + 1
        } else if r == sign {
            1
        } else {
            r - 1
        }
    };
    let next_down = |r: u64| {
        if r & sign != 0 {
            r + 1
        } else if r == 0 {
            sign | 1
        } else {
            r - 1
        }
    };
    match rnd {
        Rnd::Rz | Rnd::Rzi if rv.abs() > x.abs() => {
            if rv > 0.0 {
                next_down(r)
            } else {
                next_up(r)
            }
        }
        Rnd::Rm | Rnd::Rmi if rv > x => next_down(r),
        Rnd::Rp | Rnd::Rpi if rv < x => next_up(r),
        _ => r,
    }
}

/// Rounds to an integral value per an integer rounding mode.
#[inline]
pub fn round_integral(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rzi | Rnd::Rz => x.trunc(),
        Rnd::Rmi | Rnd::Rm => x.floor(),
        Rnd::Rpi | Rnd::Rp => x.ceil(),
        _ => x.round_ties_even(),
    }
}

/// Bits of the f32 in `x` with a subnormal value flushed to a zero of the same sign.
#[inline]
pub fn flush_f32(x: u64) -> u64 {
    if x & 0x7f80_0000 == 0 {
        x & 0x8000_0000
    } else {
        x & 0xffff_ffff
    }
}

#[inline]
fn ftz32(x: f64) -> f64 {
    if x != 0.0 && x.abs() < f32::MIN_POSITIVE as f64 {
        0.0f64.copysign(x)
    } else {
        x
    }
}

/// Evaluates a scalar float op on f64 values (inputs already widened).
fn float_op(op: AluOp, f: AluFlags, a: f64, b: f64, c: f64) -> f64 {
    match op {
        AluOp::Add => a + b,
        AluOp::Sub => a - b,
        AluOp::MulLo => a * b,
        AluOp::Fma => a.mul_add(b, c),
        AluOp::Div => a / b,
        AluOp::Neg => -a,
        AluOp::Abs => a.abs(),
        AluOp::Min | AluOp::Max => {
            if a.is_nan() || b.is_nan() {
                if f.nan || (a.is_nan() && b.is_nan()) {
                    f64::NAN
                } else if a.is_nan() {
                    b
                } else {
                    a
                }
            } else if a == b {
                // -0 is less than +0.
                let pick_neg = op == AluOp::Min;
                if a.is_sign_negative() == pick_neg {
                    a
                } else {
                    b
                }
            } else if (a < b) == (op == AluOp::Min) {
                a
            } else {
                b
            }
        }
        AluOp::Rcp => 1.0 / a,
        AluOp::Sqrt => a.sqrt(),
        AluOp::Rsqrt => 1.0 / a.sqrt(),
        AluOp::Ex2 => a.exp2(),
        AluOp::Lg2 => a.log2(),
        AluOp::Sin => a.sin(),
        AluOp::Cos => a.cos(),
        AluOp::Tanh => a.tanh(),
        AluOp::Copysign => b.copysign(a),
        _ => f64::NAN,
    }
}

/// A scalar float ALU op on one lane: decode, compute, round to `ty`.
fn float_lane(op: AluOp, ty: Ty, f: AluFlags, a: u64, b: u64, c: u64) -> u64 {
    if op == AluOp::Mov {
        return a & ty.mask();
    }
    if ty == Ty::F64 {
        let (a, b, c) = (f64::from_bits(a), f64::from_bits(b), f64::from_bits(c));
        let r = f64_directed(op, f.rnd, a, b, c, float_op(op, f, a, b, c));
        return if f.sat { sat(r) } else { r }.to_bits();
    }
    let (mut a, mut b, mut c) = (to_f64(a, ty), to_f64(b, ty), to_f64(c, ty));
    let ftz = f.ftz && ty == Ty::F32;
    if ftz {
        a = ftz32(a);
        b = ftz32(b);
        c = ftz32(c);
    }
    let mut r = float_op(op, f, a, b, c);
    if f.sat {
        r = sat(r);
    }
    let rnd = if f.rnd == Rnd::Default {
        Rnd::Rn
    } else {
        f.rnd
    };
    let mut bits = round_to(r, ty, rnd);
    if ftz {
        let v = f32::from_bits(bits as u32);
        if v != 0.0 && v.abs() < f32::MIN_POSITIVE {
            bits &= 0x8000_0000;
        }
    }
    if r.is_nan() && ty == Ty::F32 {
        bits = 0x7fff_ffff;
    }
    bits
}

/// Adjusts the round-to-nearest f64 result `q` of `op` to a directed rounding mode, from
/// the sign of the exact error (TwoSum for add/sub, an fma residual for mul, div, rcp and
/// sqrt; for fma the residual `fma(a, b, c - q)` is itself rounded, so an fma whose exact
/// error is below half an ulp of it may round the wrong way).
fn f64_directed(op: AluOp, rnd: Rnd, a: f64, b: f64, c: f64, q: f64) -> f64 {
    if !matches!(rnd, Rnd::Rz | Rnd::Rm | Rnd::Rp) || !q.is_finite() {
        return q;
    }
    let two_sum_err = |x: f64, y: f64| {
        let yy = q - x;
        (x - (q - yy)) + (y - yy)
    };
    let err = match op {
        AluOp::Add => two_sum_err(a, b),
        AluOp::Sub => two_sum_err(a, -b),
        AluOp::MulLo => a.mul_add(b, -q),
        AluOp::Fma => a.mul_add(b, c - q),
        AluOp::Div => (-q).mul_add(b, a) * b.signum(),
        AluOp::Rcp => (-q).mul_add(a, 1.0) * a.signum(),
        AluOp::Sqrt => (-q).mul_add(q, a),
        _ => 0.0,
    };
    if err == 0.0 || err.is_nan() {
        return q;
    }
    match rnd {
        Rnd::Rz if (err > 0.0) != (q > 0.0) => {
            if q > 0.0 {
                q.next_down()
            } else {
                q.next_up()
            }
        }
        Rnd::Rm if err < 0.0 => q.next_down(),
        Rnd::Rp if err > 0.0 => q.next_up(),
        _ => q,
    }
}

#[inline]
fn sat(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// Evaluates an ALU op on one lane. `s` are the raw source register values.
pub fn alu(op: AluOp, ty: Ty, f: AluFlags, s: [u64; 4]) -> u64 {
    let [a, b, c, e] = s;
    match ty {
        Ty::F32 | Ty::F64 | Ty::F16 | Ty::Bf16 => {
            // Sign manipulation of floats is exact bit manipulation (NaN payloads kept).
            match op {
                AluOp::Neg if !f.ftz => return (a ^ (1u64 << (ty.bits() - 1))) & ty.mask(),
                AluOp::Abs if !f.ftz => return a & (ty.mask() >> 1),
                _ => {}
            }
            return float_lane(op, ty, f, a, b, c);
        }
        Ty::F16x2 | Ty::Bf16x2 => {
            let h = if ty == Ty::F16x2 { Ty::F16 } else { Ty::Bf16 };
            let lo = alu(op, h, f, [a & 0xffff, b & 0xffff, c & 0xffff, 0]);
            let hi = alu(
                op,
                h,
                f,
                [
                    (a >> 16) & 0xffff,
                    (b >> 16) & 0xffff,
                    (c >> 16) & 0xffff,
                    0,
                ],
            );
            return (hi << 16) | lo;
        }
        _ => {}
    }
    let bits = ty.bits();
    let m = ty.mask();
    let signed = ty.is_signed();
    let ia = int_val(a, ty);
    let ib = int_val(b, ty);
    let wrap = |v: i128| (v as u64) & m;
    match op {
        AluOp::Mov => a & m,
        AluOp::Add | AluOp::Sub => {
            let r = if op == AluOp::Add { ia + ib } else { ia - ib };
            if f.sat && signed {
                let (lo, hi) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
                wrap(r.clamp(lo, hi))
            } else {
                wrap(r)
            }
        }
        AluOp::MulLo => wrap(ia.wrapping_mul(ib)),
        // The high half of a 64 x 64 product needs all 128 bits (an i128
        // overflows for unsigned operands near 2^64).
        AluOp::MulHi if !signed => (((ia as u128) * (ib as u128)) >> bits) as u64 & m,
        AluOp::MulHi => wrap((ia * ib) >> bits),
        AluOp::MulWide => (ia * ib) as u64 & wide_mask(bits),
        AluOp::MadLo => wrap(ia.wrapping_mul(ib).wrapping_add(int_val(c, ty))),
        AluOp::MadHi => {
            let hi = if signed {
                (ia * ib) >> bits
            } else {
                (((ia as u128) * (ib as u128)) >> bits) as i128
            };
            let r = hi + int_val(c, ty);
            if f.sat && signed {
                wrap(r.clamp(-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1))
            } else {
                wrap(r)
            }
        }
        AluOp::MadWide => {
            let wt = crate::decode::widen(ty);
            ((ia * ib + int_val(c, wt)) as u64) & wide_mask(bits)
        }
        AluOp::Mul24Lo | AluOp::Mul24Hi | AluOp::Mad24Lo => {
            let t24 = |v: u64| {
                if signed {
                    (((v as u32) << 8) as i32 >> 8) as i128
                } else {
                    (v & 0xff_ffff) as i128
                }
            };
            let p = t24(a) * t24(b);
            match op {
                AluOp::Mul24Lo => wrap(p),
                AluOp::Mul24Hi => wrap(p >> 16),
                _ => wrap(p + int_val(c, ty)),
            }
        }
        AluOp::Div => {
            if ib == 0 {
                m
            } else {
                wrap(if signed { ia.wrapping_div(ib) } else { ia / ib })
            }
        }
        AluOp::Rem => {
            if ib == 0 {
                a & m
            } else {
                wrap(if signed { ia.wrapping_rem(ib) } else { ia % ib })
            }
        }
        AluOp::Neg => wrap(-ia),
        AluOp::Abs => wrap(ia.abs()),
        AluOp::Min => wrap(ia.min(ib)),
        AluOp::Max => wrap(ia.max(ib)),
        AluOp::And => a & b & m,
        AluOp::Or => (a | b) & m,
        AluOp::Xor => (a ^ b) & m,
        AluOp::Not if ty == Ty::Pred => (a & 1) ^ 1,
        AluOp::Not => !a & m,
        AluOp::Cnot => (a & m == 0) as u64,
        AluOp::Shl => {
            let n = b as u32;
            if n >= bits { 0 } else { (a << n) & m }
        }
        AluOp::Shr => {
            let n = (b as u32).min(bits);
            if signed {
                wrap((sext(a, ty) >> n.min(63)) as i128)
            } else if n >= bits {
                0
            } else {
                (a & m) >> n
            }
        }
        AluOp::Popc => (a & m).count_ones() as u64,
        AluOp::Clz => ((a & m).leading_zeros() - (64 - bits)) as u64,
        AluOp::Brev => (a & m).reverse_bits() >> (64 - bits),
        AluOp::Bfe => {
            let pos = (b & 0xff) as u32;
            let len = (c & 0xff) as u32;
            let msb = bits - 1;
            let sbit = if !signed || len == 0 {
                0
            } else {
                (a >> (pos + len - 1).min(msb)) & 1
            };
            let mut d = 0u64;
            for i in 0..bits {
                let bit = if i < len && pos + i <= msb {
                    (a >> (pos + i)) & 1
                } else {
                    sbit
                };
                d |= bit << i;
            }
            d
        }
        AluOp::Bfi => {
            let pos = (c & 0xff) as u32;
            let len = (e & 0xff) as u32;
            let mut d = b & m;
            for i in 0..len {
                if pos + i >= bits {
                    break;
                }
                let bit = (a >> i) & 1;
                d = (d & !(1u64 << (pos + i))) | (bit << (pos + i));
            }
            d
        }
        AluOp::Prmt(mode) => prmt(mode, a as u32, b as u32, c as u32) as u64,
        AluOp::Lop3 => {
            let lut = e as u8;
            let mut r = 0u64;
            for i in 0..8u8 {
                if lut & (1 << i) != 0 {
                    let x = if i & 4 != 0 { a } else { !a };
                    let y = if i & 2 != 0 { b } else { !b };
                    let z = if i & 1 != 0 { c } else { !c };
                    r |= x & y & z;
                }
            }
            r & m
        }
        AluOp::Shf { left, clamp } => {
            let n = if clamp {
                (c as u32).min(32)
            } else {
                c as u32 & 31
            };
            let v = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
            if left {
                ((v << n) >> 32) & 0xffff_ffff
            } else {
                (v >> n) & 0xffff_ffff
            }
        }
        // Float-only ops on integer types are rejected by the decoder's type checks at run time.
        _ => 0,
    }
}

#[inline]
fn wide_mask(bits: u32) -> u64 {
    if bits >= 32 {
        u64::MAX
    } else {
        (1u64 << (2 * bits)) - 1
    }
}

/// `prmt.b32` byte permute.
pub fn prmt(mode: PrmtMode, a: u32, b: u32, c: u32) -> u32 {
    let tmp = ((b as u64) << 32) | a as u64;
    let byte = |i: u32| ((tmp >> (8 * (i & 7))) & 0xff) as u32;
    let s = c & 3;
    let mut d = 0u32;
    for i in 0..4u32 {
        let v = match mode {
            PrmtMode::Default => {
                let sel = (c >> (4 * i)) & 0xf;
                let v = byte(sel & 7);
                if sel & 8 != 0 {
                    if v & 0x80 != 0 { 0xff } else { 0 }
                } else {
                    v
                }
            }
            PrmtMode::F4e => byte((c & 7) + i),
            PrmtMode::B4e => byte((c & 7).wrapping_sub(i) & 7),
            PrmtMode::Rc8 => byte(s),
            PrmtMode::Ecl => byte(i.max(s)),
            PrmtMode::Ecr => byte(i.min(s)),
            PrmtMode::Rc16 => byte(2 * (c & 1) + (i & 1)),
        };
        d |= v << (8 * i);
    }
    d
}

/// A comparison of two lane values of type `ty`.
pub fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if ty.is_float() {
        let (x, y) = (to_f64(a, ty), to_f64(b, ty));
        let nan = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => !nan && x != y,
            Cmp::Lt | Cmp::Lo => x < y,
            Cmp::Le | Cmp::Ls => x <= y,
            Cmp::Gt | Cmp::Hi => x > y,
            Cmp::Ge | Cmp::Hs => x >= y,
            Cmp::Equ => nan || x == y,
            Cmp::Neu => nan || x != y,
            Cmp::Ltu => nan || x < y,
            Cmp::Leu => nan || x <= y,
            Cmp::Gtu => nan || x > y,
            Cmp::Geu => nan || x >= y,
            Cmp::Num => !nan,
            Cmp::Nan => nan,
        };
    }
    let (x, y) = (int_val(a, ty), int_val(b, ty));
    let (ux, uy) = (a & ty.mask(), b & ty.mask());
    match cmp {
        Cmp::Eq | Cmp::Equ => x == y,
        Cmp::Ne | Cmp::Neu => x != y,
        Cmp::Lt | Cmp::Ltu => x < y,
        Cmp::Le | Cmp::Leu => x <= y,
        Cmp::Gt | Cmp::Gtu => x > y,
        Cmp::Ge | Cmp::Geu => x >= y,
        Cmp::Lo => ux < uy,
        Cmp::Ls => ux <= uy,
        Cmp::Hi => ux > uy,
        Cmp::Hs => ux >= uy,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

/// `cvt` of one lane value between scalar types.
pub fn cvt(dty: Ty, sty: Ty, rnd: Rnd, sat_: bool, ftz: bool, relu: bool, a: u64) -> u64 {
    if sty.is_float() {
        let mut x = to_f64(a, sty);
        if ftz && sty == Ty::F32 {
            x = ftz32(x);
        }
        if dty.is_float() {
            if matches!(rnd, Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi) {
                x = round_integral(x, rnd);
            }
            if sat_ {
                x = sat(x);
            }
            if relu && !x.is_nan() && x < 0.0 {
                x = 0.0;
            }
            let r = if matches!(rnd, Rnd::Rz | Rnd::Rm | Rnd::Rp) {
                rnd
            } else {
                Rnd::Rn
            };
            if dty == Ty::Tf32 {
                return tf32_round(x as f32) as u64;
            }
            let mut bits = round_to(x, dty, r);
            if ftz && dty == Ty::F32 {
                let v = f32::from_bits(bits as u32);
                if v != 0.0 && v.abs() < f32::MIN_POSITIVE {
                    bits &= 0x8000_0000;
                }
            }
            return bits;
        }
        // Float to integer: round, then saturate to the destination range; NaN gives 0.
        if x.is_nan() {
            return 0;
        }
        let r = round_integral(x, rnd);
        let (lo, hi) = int_range(dty);
        let v = if r < lo as f64 {
            lo
        } else if r >= hi as f64 {
            hi
        } else {
            r as i128
        };
        return (v as u64) & dty.mask();
    }
    let v = int_val(a, sty);
    if dty.is_float() {
        return int_to_float(v, dty, rnd);
    }
    let v = if sat_ {
        let (lo, hi) = int_range(dty);
        v.clamp(lo, hi)
    } else {
        v
    };
    (v as u64) & dty.mask()
}

fn int_range(ty: Ty) -> (i128, i128) {
    let bits = ty.bits();
    if ty.is_signed() {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    } else {
        (0, (1i128 << bits) - 1)
    }
}

fn int_to_float(v: i128, dty: Ty, rnd: Rnd) -> u64 {
    let r = if matches!(rnd, Rnd::Rz | Rnd::Rm | Rnd::Rp) {
        rnd
    } else {
        Rnd::Rn
    };
    if v.unsigned_abs() < (1u128 << 53) {
        return round_to(v as f64, dty, r);
    }
    match dty {
        Ty::F64 => {
            let x = v as f64;
            let back = x as i128;
            let adj = match r {
                Rnd::Rz if back.abs() > v.abs() => x.next_toward_zero(),
                Rnd::Rm if back > v => x.next_down(),
                Rnd::Rp if back < v => x.next_up(),
                _ => x,
            };
            adj.to_bits()
        }
        Ty::F32 => {
            let x = v as f32;
            let back = x as i128;
            let adj = match r {
                Rnd::Rz if back.abs() > v.abs() => {
                    if x > 0.0 {
                        x.next_down()
                    } else {
                        x.next_up()
                    }
                }
                Rnd::Rm if back > v => x.next_down(),
                Rnd::Rp if back < v => x.next_up(),
                _ => x,
            };
            adj.to_bits() as u64
        }
        _ => round_to(v as f64, dty, r),
    }
}

trait TowardZero {
    fn next_toward_zero(self) -> Self;
}

impl TowardZero for f64 {
    fn next_toward_zero(self) -> f64 {
        if self > 0.0 {
            self.next_down()
        } else {
            self.next_up()
        }
    }
}

/// Rounds an f32 to tf32 precision (10 mantissa bits), nearest with ties away (`cvt.rna.tf32.f32`).
pub fn tf32_round(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() || x.is_infinite() {
        return b;
    }
    (b.wrapping_add(0x1000)) & 0xffff_e000
}

/// Runs `f(lane)` for every lane of `active`, writing `out[lane]`; a full warp takes a
/// plain loop the compiler can vectorize.
#[inline(always)]
fn lanewise(active: u32, out: &mut [u64], f: impl Fn(usize) -> u64) {
    if active == u32::MAX {
        for (l, o) in out.iter_mut().enumerate().take(32) {
            *o = f(l);
        }
    } else {
        let mut m = active;
        while m != 0 {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            out[l] = f(l);
        }
    }
}

/// An ALU op over the lanes of `active`: `out[l] = op(v[0][l], v[1][l], ...)`. Common
/// integer and f32 cases run as tight loops; the rest go lane by lane through [`alu`].
pub fn alu_warp(op: AluOp, ty: Ty, f: AluFlags, v: &[[u64; 32]; 4], out: &mut [u64], active: u32) {
    let [a, b, c, _] = v;
    const M32: u64 = 0xffff_ffff;
    let plain_float = matches!(f.rnd, Rnd::Default | Rnd::Rn) && !f.ftz && !f.sat && !f.nan;
    let f32_of = |x: u64| f32::from_bits(x as u32);
    match (op, ty) {
        (AluOp::Mov, _) => {
            let m = ty.mask();
            lanewise(active, out, |l| a[l] & m)
        }
        (AluOp::Add, Ty::B32 | Ty::U32 | Ty::S32) if !f.sat => {
            lanewise(active, out, |l| a[l].wrapping_add(b[l]) & M32)
        }
        (AluOp::Sub, Ty::B32 | Ty::U32 | Ty::S32) if !f.sat => {
            lanewise(active, out, |l| a[l].wrapping_sub(b[l]) & M32)
        }
        (AluOp::MulLo, Ty::B32 | Ty::U32 | Ty::S32) => {
            lanewise(active, out, |l| a[l].wrapping_mul(b[l]) & M32)
        }
        (AluOp::MadLo, Ty::B32 | Ty::U32 | Ty::S32) => lanewise(active, out, |l| {
            a[l].wrapping_mul(b[l]).wrapping_add(c[l]) & M32
        }),
        (AluOp::Add, Ty::B64 | Ty::U64 | Ty::S64) => {
            lanewise(active, out, |l| a[l].wrapping_add(b[l]))
        }
        (AluOp::Sub, Ty::B64 | Ty::U64 | Ty::S64) => {
            lanewise(active, out, |l| a[l].wrapping_sub(b[l]))
        }
        (AluOp::MulLo, Ty::B64 | Ty::U64 | Ty::S64) => {
            lanewise(active, out, |l| a[l].wrapping_mul(b[l]))
        }
        (AluOp::MadLo, Ty::B64 | Ty::U64 | Ty::S64) => {
            lanewise(active, out, |l| a[l].wrapping_mul(b[l]).wrapping_add(c[l]))
        }
        (AluOp::MulWide, Ty::U32) => lanewise(active, out, |l| (a[l] & M32) * (b[l] & M32)),
        (AluOp::MulWide, Ty::S32) => lanewise(active, out, |l| {
            ((a[l] as i32 as i64) * (b[l] as i32 as i64)) as u64
        }),
        (AluOp::MadWide, Ty::U32) => lanewise(active, out, |l| {
            ((a[l] & M32) * (b[l] & M32)).wrapping_add(c[l])
        }),
        (AluOp::MadWide, Ty::S32) => lanewise(active, out, |l| {
            ((a[l] as i32 as i64) * (b[l] as i32 as i64)).wrapping_add(c[l] as i64) as u64
        }),
        (AluOp::And, _) if ty != Ty::Pred => {
            let m = ty.mask();
            lanewise(active, out, |l| a[l] & b[l] & m)
        }
        (AluOp::Or, _) if ty != Ty::Pred => {
            let m = ty.mask();
            lanewise(active, out, |l| (a[l] | b[l]) & m)
        }
        (AluOp::Xor, _) if ty != Ty::Pred => {
            let m = ty.mask();
            lanewise(active, out, |l| (a[l] ^ b[l]) & m)
        }
        (AluOp::Shl, Ty::B32 | Ty::U32 | Ty::S32) => lanewise(active, out, |l| {
            if b[l] & M32 >= 32 {
                0
            } else {
                (a[l] << (b[l] & 31)) & M32
            }
        }),
        (AluOp::Shr, Ty::B32 | Ty::U32) => lanewise(active, out, |l| {
            if b[l] & M32 >= 32 {
                0
            } else {
                (a[l] & M32) >> (b[l] & 31)
            }
        }),
        (AluOp::Shr, Ty::S32) => lanewise(active, out, |l| {
            ((a[l] as i32) >> (b[l] & M32).min(31)) as u32 as u64
        }),
        (AluOp::Shl, Ty::B64 | Ty::U64 | Ty::S64) => lanewise(active, out, |l| {
            if b[l] & M32 >= 64 {
                0
            } else {
                a[l] << (b[l] & 63)
            }
        }),
        (AluOp::Shr, Ty::B64 | Ty::U64) => lanewise(active, out, |l| {
            if b[l] & M32 >= 64 {
                0
            } else {
                a[l] >> (b[l] & 63)
            }
        }),
        (AluOp::Min, Ty::S32) => lanewise(active, out, |l| {
            (a[l] as i32).min(b[l] as i32) as u32 as u64
        }),
        (AluOp::Max, Ty::S32) => lanewise(active, out, |l| {
            (a[l] as i32).max(b[l] as i32) as u32 as u64
        }),
        (AluOp::Min, Ty::U32) => lanewise(active, out, |l| (a[l] & M32).min(b[l] & M32)),
        (AluOp::Max, Ty::U32) => lanewise(active, out, |l| (a[l] & M32).max(b[l] & M32)),
        (AluOp::Add, Ty::F32) if plain_float => lanewise(active, out, |l| {
            (f32_of(a[l]) + f32_of(b[l])).to_bits() as u64
        }),
        (AluOp::Sub, Ty::F32) if plain_float => lanewise(active, out, |l| {
            (f32_of(a[l]) - f32_of(b[l])).to_bits() as u64
        }),
        (AluOp::MulLo, Ty::F32) if plain_float => lanewise(active, out, |l| {
            (f32_of(a[l]) * f32_of(b[l])).to_bits() as u64
        }),
        (AluOp::Fma, Ty::F32) if plain_float => lanewise(active, out, |l| {
            // The product of two f32 is exact in f64: one rounding in f64, one to f32.
            let r = f32_of(a[l]) as f64 * f32_of(b[l]) as f64 + f32_of(c[l]) as f64;
            (r as f32).to_bits() as u64
        }),
        (AluOp::Neg, Ty::F32) if !f.ftz => lanewise(active, out, |l| (a[l] ^ 0x8000_0000) & M32),
        (AluOp::Abs, Ty::F32) if !f.ftz => lanewise(active, out, |l| a[l] & 0x7fff_ffff),
        _ => lanewise(active, out, |l| alu(op, ty, f, [a[l], b[l], c[l], v[3][l]])),
    }
}

/// An ordered comparison of two totally ordered values (integers).
#[inline(always)]
fn cmp_ord<T: PartialOrd>(cmp: Cmp, x: T, y: T) -> bool {
    match cmp {
        Cmp::Eq | Cmp::Equ => x == y,
        Cmp::Ne | Cmp::Neu => x != y,
        Cmp::Lt | Cmp::Ltu | Cmp::Lo => x < y,
        Cmp::Le | Cmp::Leu | Cmp::Ls => x <= y,
        Cmp::Gt | Cmp::Gtu | Cmp::Hi => x > y,
        Cmp::Ge | Cmp::Geu | Cmp::Hs => x >= y,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

/// `setp` without boolean combination over the lanes of `active`, into 0/1 predicates.
pub fn compare_warp(cmp: Cmp, ty: Ty, a: &[u64; 32], b: &[u64; 32], out: &mut [u64], active: u32) {
    let unsigned_cmp = matches!(cmp, Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs);
    match ty {
        Ty::S32 if !unsigned_cmp => lanewise(active, out, |l| {
            cmp_ord(cmp, a[l] as i32, b[l] as i32) as u64
        }),
        Ty::S32 | Ty::U32 | Ty::B32 => lanewise(active, out, |l| {
            cmp_ord(cmp, a[l] as u32, b[l] as u32) as u64
        }),
        Ty::S64 if !unsigned_cmp => lanewise(active, out, |l| {
            cmp_ord(cmp, a[l] as i64, b[l] as i64) as u64
        }),
        Ty::S64 | Ty::U64 | Ty::B64 => lanewise(active, out, |l| cmp_ord(cmp, a[l], b[l]) as u64),
        _ => lanewise(active, out, |l| compare(cmp, ty, a[l], b[l]) as u64),
    }
}
