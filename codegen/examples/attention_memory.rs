//! Memory footprint of attention over jagged sequences, three ways
//! (benchmark (b) of bench/attention/README.md):
//!
//! - jagged flash attention (this crate's fused kernel): jagged q, k, v,
//!   out and lse; no intermediates;
//! - dense padded attention with materialized scores: q, k, v padded to
//!   `[B, N, H, D]`, scores `S` (f32) and probabilities `P` (bf16) of
//!   `[B, H, N, N]`, the padded output and its copy back to jagged;
//! - padded flash attention: the padded inputs and output (and lse), no
//!   `N x N` intermediates.
//!
//! `cargo run --release -p jagged-codegen --example attention_memory`.
//! Lengths: B = 1024 sequences drawn from a Zipf-like law on [1, 2048]
//! (P(L = l) proportional to 1 / l, a fixed seed); max_len 2048, H = 4,
//! D = 128, bf16 values, i32 offsets. Forward only; the backward adds the
//! same per-token gradients on each side, plus `dS`-sized buffers for the
//! materialized path.

const B: u64 = 1024;
const MAX_LEN: u64 = 2048;
const H: u64 = 4;
const D: u64 = 128;
const BF16: u64 = 2;

/// xorshift64* with a fixed seed.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Inverse-CDF sample of P(L = l) ~ 1 / l on [1, max].
fn zipf_lengths(n: u64, max: u64, rng: &mut Rng) -> Vec<u64> {
    let weights: Vec<f64> = (1..=max).map(|l| 1.0 / l as f64).collect();
    let total: f64 = weights.iter().sum();
    (0..n)
        .map(|_| {
            let mut u = rng.unit() * total;
            for (i, w) in weights.iter().enumerate() {
                u -= w;
                if u <= 0.0 {
                    return i as u64 + 1;
                }
            }
            max
        })
        .collect()
}

fn gib(bytes: u64) -> String {
    format!("{:>10.3} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn main() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let lengths = zipf_lengths(B, MAX_LEN, &mut rng);
    let t: u64 = lengths.iter().sum();
    let pairs: u64 = lengths.iter().map(|l| l.min(&MAX_LEN).pow(2)).sum();
    let mean = t as f64 / B as f64;
    println!(
        "B = {B}, max_len = {MAX_LEN}, H = {H}, D = {D}, bf16, Zipf-like lengths (P ~ 1/l on [1, {MAX_LEN}])"
    );
    println!(
        "T = sum L_b = {t} (mean {mean:.1}, max {}), padded rows B*N = {}, valid (i, j) pairs per head = {pairs}, padded pairs = {}",
        lengths.iter().max().copied().unwrap_or(0),
        B * MAX_LEN,
        B * MAX_LEN * MAX_LEN
    );
    let row = H * D * BF16;
    let offsets = (B + 1) * 4;
    let jagged_inputs = 3 * t * row + offsets;
    let jagged_outputs = t * row + t * H * 4;
    let padded_rows = B * MAX_LEN;
    let padded_inputs = 3 * padded_rows * row;
    let padded_out = padded_rows * row;
    let scores = B * H * MAX_LEN * MAX_LEN * 4;
    let probs = B * H * MAX_LEN * MAX_LEN * BF16;
    let key_mask = B * MAX_LEN;
    println!();
    println!(
        "{:<44} {:>14} {:>14} {:>14} {:>14}",
        "", "inputs", "outputs", "intermediates", "total"
    );
    let line = |name: &str, i: u64, o: u64, m: u64| {
        println!(
            "{name:<44} {} {} {} {}",
            gib(i),
            gib(o),
            gib(m),
            gib(i + o + m)
        );
        i + o + m
    };
    let jagged = line(
        "jagged flash attention (fused kernel)",
        jagged_inputs,
        jagged_outputs,
        0,
    );
    // Dense: the user's jagged tensors are padded (intermediate), the padded
    // output is gathered back to jagged (the output).
    let dense = line(
        "dense padded, materialized S (f32) + P (bf16)",
        jagged_inputs,
        jagged_outputs,
        padded_inputs + key_mask + scores + probs + padded_out,
    );
    let padded_flash = line(
        "padded flash attention",
        jagged_inputs,
        jagged_outputs,
        padded_inputs + padded_out + padded_rows * H * 4,
    );
    println!();
    println!(
        "dense / jagged = {:.1}x, padded flash / jagged = {:.1}x",
        dense as f64 / jagged as f64,
        padded_flash as f64 / jagged as f64
    );
    println!(
        "work: jagged {pairs} pairs per head vs padded {} ({:.1}x)",
        B * MAX_LEN * MAX_LEN,
        (B * MAX_LEN * MAX_LEN) as f64 / pairs as f64
    );
}
