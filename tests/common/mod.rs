//! Helpers shared by the facade's integration tests: a seeded generator, offsets
//! from sequence lengths, the relative L2 error used with every tolerance, and
//! (`tools`) whether a missing ptxas / nvdisasm / python3 fails or skips a test.

#![allow(dead_code)] // Each test file uses a different subset.

use jagged_ir::{DType, DenseTensor};

pub mod beam;
pub mod tools;

/// xorshift64*: reproducible inputs without extra crates.
pub struct Rng(pub u64);

impl Rng {
    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [-2, 2).
    pub fn float(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    }
}

/// The offsets `[0, l0, l0 + l1, ...]` of sequences of `lengths`, as a `dtype` tensor.
pub fn offsets(lengths: &[usize], dtype: DType) -> DenseTensor {
    let mut o = vec![0.0];
    for &l in lengths {
        o.push(o[o.len() - 1] + l as f64);
    }
    DenseTensor::from_f64(dtype, vec![lengths.len() + 1], &o).expect("offsets tensor")
}

/// `||a - b|| / ||b||` (absolute when `b` is zero); NaN or a length mismatch gives infinity.
pub fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}
