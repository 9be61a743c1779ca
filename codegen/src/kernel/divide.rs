//! Unsigned 64-bit division by a constant without `div.u64`.
//!
//! ptxas turns every `div.u64` / `rem.u64` into a call of a division
//! subroutine, constant divisors included (seen with ptxas 12.9 for sm_80
//! and sm_90a: `rem.u64 x, 2` is a `CALL.REL`), and the call's ABI gives a
//! kernel a stack frame and spills. Index arithmetic divides by constants
//! all the time (row width, inner dims, tiles), so the builder expands those
//! divisions itself: a shift and a mask for powers of two, else a multiply
//! by a magic number (Granlund and Montgomery's round-up method, exact for
//! every 64-bit dividend).

use super::builder::KernelBuilder;
use super::ir::{BinOp, Operand, Reg, Type};

/// How `x / d` is computed for a constant `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConstDivisor {
    /// `d = 1`.
    One,
    /// `d = 2^k`: `x >> k`.
    Shift(u32),
    /// `t = mulhi(x, m)`, `q = (t + ((x - t) >> 1)) >> (l - 1)` with
    /// `l = ceil(log2 d)`.
    Magic {
        /// The magic multiplier `floor(2^64 (2^l - d) / d) + 1`.
        m: u64,
        /// `l - 1`.
        shift: u32,
    },
}

impl ConstDivisor {
    /// The method for `d` (`None` for 0, which keeps PTX's own semantics).
    pub(super) fn new(d: u64) -> Option<ConstDivisor> {
        match d {
            0 => None,
            1 => Some(ConstDivisor::One),
            d if d.is_power_of_two() => Some(ConstDivisor::Shift(d.trailing_zeros())),
            d => {
                let l = 64 - (d - 1).leading_zeros();
                let m = ((1u128 << 64) * ((1u128 << l) - u128::from(d)) / u128::from(d) + 1) as u64;
                Some(ConstDivisor::Magic { m, shift: l - 1 })
            }
        }
    }

    /// `x / d` on the host, the way the emitted code computes it.
    #[cfg(test)]
    fn quotient(self, x: u64) -> u64 {
        match self {
            ConstDivisor::One => x,
            ConstDivisor::Shift(k) => x >> k,
            ConstDivisor::Magic { m, shift } => {
                let t = ((u128::from(x) * u128::from(m)) >> 64) as u64;
                (t + ((x - t) >> 1)) >> shift
            }
        }
    }
}

impl KernelBuilder {
    /// `dst = a / d` or `a % d` (`op` is `Div` or `Rem`) for a constant
    /// `d > 0`, unsigned 64-bit; `false` (nothing emitted) for other
    /// divisors.
    pub(super) fn div_rem_const_u64(&mut self, op: BinOp, dst: Reg, a: Operand, d: i64) -> bool {
        let Some(method) = u64::try_from(d).ok().and_then(ConstDivisor::new) else {
            return false;
        };
        let x = match a {
            Operand::Reg(r) => r,
            other => self.mov(Type::U64, other),
        };
        let shift = |k: u32| Operand::Int(i64::from(k));
        match (method, op) {
            (ConstDivisor::One, BinOp::Div) => self.mov_to(Type::U64, dst, x),
            (ConstDivisor::One, _) => self.mov_to(Type::U64, dst, Operand::Int(0)),
            (ConstDivisor::Shift(k), BinOp::Div) => {
                self.binary_to(BinOp::Shr, Type::U64, dst, x, shift(k));
            }
            (ConstDivisor::Shift(k), _) => {
                let mask = Operand::Int(((1u64 << k) - 1) as i64);
                self.binary_to(BinOp::And, Type::U64, dst, x, mask);
            }
            (ConstDivisor::Magic { m, shift: s }, _) => {
                let t = self.binary(BinOp::MulHi, Type::U64, x, Operand::Int(m as i64));
                let diff = self.binary(BinOp::Sub, Type::U64, x, t);
                let half = self.binary(BinOp::Shr, Type::U64, diff, Operand::Int(1));
                let sum = self.binary(BinOp::Add, Type::U64, t, half);
                if op == BinOp::Div {
                    self.binary_to(BinOp::Shr, Type::U64, dst, sum, shift(s));
                } else {
                    let q = self.binary(BinOp::Shr, Type::U64, sum, shift(s));
                    let back = self.binary(BinOp::Mul, Type::U64, q, Operand::Int(d));
                    self.binary_to(BinOp::Sub, Type::U64, dst, x, back);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::ConstDivisor;

    /// The host mirror of the emitted sequence equals `/` for divisors and
    /// dividends at the edges (powers of two and their neighbours, u64::MAX)
    /// and on a pseudo-random sample.
    #[test]
    fn magic_division_is_exact() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut divisors: Vec<u64> = (1..=300).collect();
        for k in 1..64 {
            let p = 1u64 << k;
            divisors.extend([p - 1, p, p + 1]);
        }
        divisors.extend([u64::MAX, u64::MAX - 1, 641, 6_700_417]);
        divisors.extend((0..300).map(|_| next() >> (next() % 64)).filter(|&d| d > 0));
        let mut dividends: Vec<u64> = vec![0, 1, 2, 3, u64::MAX, u64::MAX - 1];
        for k in 1..64 {
            let p = 1u64 << k;
            dividends.extend([p - 1, p, p + 1]);
        }
        dividends.extend((0..300).map(|_| next() >> (next() % 64)));
        for &d in &divisors {
            let method = ConstDivisor::new(d).expect("nonzero");
            for &x in &dividends {
                assert_eq!(method.quotient(x), x / d, "{x} / {d} by {method:?}");
            }
        }
        assert_eq!(ConstDivisor::new(0), None);
    }
}
