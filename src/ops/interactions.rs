//! OPS.md "Interactions": jagged feature interactions, each a
//! `#[jagged_kernel]` over the DSL's contractions, and their backward ops.
//!
//! | op | DSL | IR contraction |
//! |---|---|---|
//! | `jagged_dense_bmm` | `x.matmul(y)`, `y: PerSeq<T, (K, M)>` | `x[ik], y[km] -> [im]` |
//! | `jagged_jagged_bmm` | `x.outer_sum_over_seq(y)` | `x[im], y[ip] -> [mp]` |
//! | `jagged_dense_dot` | `x.matmul_t(y)`, `y: PerSeq<T, (F, D)>` | `x[id], y[fd] -> [if]` |
//! | `jagged_pairwise_dot` | `x.dot(x).pack_triu()` | `x[id], x[jd] -> [ij]`, then `pack_triu` on `seqs_triu` |
//! | `jagged_dense_bmm_backward` | `dout.matmul_t(y)`, `x.outer_sum_over_seq(dout)` | `dx = dout @ y^T`, `dy = x^T dout` |
//! | `jagged_jagged_bmm_backward` | `y.matmul_t(dout)`, `x.matmul(dout)` | `dx = y @ dout^T`, `dy = x @ dout` |
//!
//! Inputs are f32, f16 or bf16 (`T`, the op's `dtype`: pass the inputs in
//! the dtype to compute in), offsets i32 or i64; products are accumulated in
//! f32 and the outputs rounded to `T`. Sequences are truncated to `max_len`
//! rows: rows `i >= n_b` of a jagged output are 0, and take no part in a
//! sum over the sequence.
//!
//! The general code-generation path compiles every one of them: with f16 or
//! bf16 inputs the contraction runs on tensor cores (`mma.sync` m16n8k16,
//! f32 accumulators), whatever the roles of its axes, with the cast to `T`
//! (and any epilogue a caller writes after it) fused into the same kernel.
//!
//! **tf32.** f32 inputs are contracted exactly (SIMT fma loops) unless the
//! caller opts in to TensorFloat-32: the kernels named `*_tf32` are the same
//! ops written with `#[jagged_kernel(tf32)]`, whose f32 operands are rounded
//! to tf32 (10 mantissa bits, `cvt.rna.tf32.f32`) and multiplied on tf32
//! tensor cores (`mma.sync` m16n8k8); the reference rounds them the same
//! way, so they are tested against it at f32's design tolerance. For f16 and
//! bf16 inputs a `*_tf32` kernel is the plain one. The front functions take
//! the choice as [`InteractionOptions::tf32`]; `jagc` as `--attr tf32=true`.

use jagged_runtime::{DeviceTensor, Runtime};

use super::KernelError;
use super::dsl::*;

/// `jagged_dense_bmm`: `out[o_b + i] = x[o_b + i] @ y[b]` for `i < n_b`
/// (`x [T, K]`, `y [B, K, M]`, `out [T, M]`).
#[jagged_kernel(name = "jagged_dense_bmm", outputs(out))]
pub fn jagged_dense_bmm_full<T: Float, K, M>(
    x: Jagged<T, (K,)>,
    y: PerSeq<T, (K, M)>,
    #[attr] max_len: usize,
) -> Jagged<T, (M,)> {
    x.matmul(y)
}

/// [`jagged_dense_bmm_full`](mod@jagged_dense_bmm_full) with f32 operands
/// rounded to tf32 (tf32 tensor cores).
#[jagged_kernel(name = "jagged_dense_bmm", tf32, outputs(out))]
pub fn jagged_dense_bmm_tf32<T: Float, K, M>(
    x: Jagged<T, (K,)>,
    y: PerSeq<T, (K, M)>,
    #[attr] max_len: usize,
) -> Jagged<T, (M,)> {
    x.matmul(y)
}

/// `jagged_jagged_bmm`: `out[b] = sum_{i < n_b} x[o_b + i]^T y[o_b + i]`
/// (`x [T, M]`, `y [T, P]`, `out [B, M, P]`; 0 for an empty sequence).
#[jagged_kernel(name = "jagged_jagged_bmm", outputs(out))]
pub fn jagged_jagged_bmm_full<T: Float, M, P>(
    x: Jagged<T, (M,)>,
    y: Jagged<T, (P,)>,
    #[attr] max_len: usize,
) -> PerSeq<T, (M, P)> {
    x.outer_sum_over_seq(y)
}

/// [`jagged_jagged_bmm_full`](mod@jagged_jagged_bmm_full) with f32 operands rounded to tf32.
#[jagged_kernel(name = "jagged_jagged_bmm", tf32, outputs(out))]
pub fn jagged_jagged_bmm_tf32<T: Float, M, P>(
    x: Jagged<T, (M,)>,
    y: Jagged<T, (P,)>,
    #[attr] max_len: usize,
) -> PerSeq<T, (M, P)> {
    x.outer_sum_over_seq(y)
}

/// `jagged_dense_dot`: `out[o_b + i, f] = x[o_b + i] . y[b, f]` for
/// `i < n_b` (`x [T, D]`, `y [B, F, D]`, `out [T, F]`).
#[jagged_kernel(name = "jagged_dense_dot", outputs(out))]
pub fn jagged_dense_dot_full<T: Float, D, F>(
    x: Jagged<T, (D,)>,
    y: PerSeq<T, (F, D)>,
    #[attr] max_len: usize,
) -> Jagged<T, (F,)> {
    x.matmul_t(y)
}

/// [`jagged_dense_dot_full`](mod@jagged_dense_dot_full) with f32 operands rounded to tf32.
#[jagged_kernel(name = "jagged_dense_dot", tf32, outputs(out))]
pub fn jagged_dense_dot_tf32<T: Float, D, F>(
    x: Jagged<T, (D,)>,
    y: PerSeq<T, (F, D)>,
    #[attr] max_len: usize,
) -> Jagged<T, (F,)> {
    x.matmul_t(y)
}

/// `jagged_dense_bmm_backward`: from `dout [T, M]`, `dx = dout @ y[b]^T`
/// (`[T, K]`, rows `i >= n_b` zero) and `dy[b] = x_b^T dout_b` (`[B, K, M]`,
/// over the rows `i < n_b`).
#[jagged_kernel(name = "jagged_dense_bmm_backward", outputs(dx, dy))]
pub fn jagged_dense_bmm_backward_full<T: Float, K, M>(
    x: Jagged<T, (K,)>,
    y: PerSeq<T, (K, M)>,
    dout: Jagged<T, (M,)>,
    #[attr] max_len: usize,
) -> (Jagged<T, (K,)>, PerSeq<T, (K, M)>) {
    (dout.matmul_t(y), x.outer_sum_over_seq(dout))
}

/// [`jagged_dense_bmm_backward_full`](mod@jagged_dense_bmm_backward_full)
/// with f32 operands rounded to tf32.
#[jagged_kernel(name = "jagged_dense_bmm_backward", tf32, outputs(dx, dy))]
pub fn jagged_dense_bmm_backward_tf32<T: Float, K, M>(
    x: Jagged<T, (K,)>,
    y: PerSeq<T, (K, M)>,
    dout: Jagged<T, (M,)>,
    #[attr] max_len: usize,
) -> (Jagged<T, (K,)>, PerSeq<T, (K, M)>) {
    (dout.matmul_t(y), x.outer_sum_over_seq(dout))
}

/// `jagged_jagged_bmm_backward`: from `dout [B, M, P]`, `dx = y @ dout_b^T`
/// (`[T, M]`) and `dy = x @ dout_b` (`[T, P]`), rows `i >= n_b` zero.
#[jagged_kernel(name = "jagged_jagged_bmm_backward", outputs(dx, dy))]
pub fn jagged_jagged_bmm_backward_full<T: Float, M, P>(
    x: Jagged<T, (M,)>,
    y: Jagged<T, (P,)>,
    dout: PerSeq<T, (M, P)>,
    #[attr] max_len: usize,
) -> (Jagged<T, (M,)>, Jagged<T, (P,)>) {
    (y.matmul_t(dout), x.matmul(dout))
}

/// [`jagged_jagged_bmm_backward_full`](mod@jagged_jagged_bmm_backward_full)
/// with f32 operands rounded to tf32.
#[jagged_kernel(name = "jagged_jagged_bmm_backward", tf32, outputs(dx, dy))]
pub fn jagged_jagged_bmm_backward_tf32<T: Float, M, P>(
    x: Jagged<T, (M,)>,
    y: Jagged<T, (P,)>,
    dout: PerSeq<T, (M, P)>,
    #[attr] max_len: usize,
) -> (Jagged<T, (M,)>, Jagged<T, (P,)>) {
    (y.matmul_t(dout), x.matmul(dout))
}

/// The attributes of the interaction ops (OPS.md), for the front functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InteractionOptions {
    /// Each sequence is truncated to its first `max_len` rows.
    pub max_len: usize,
    /// Round f32 operands to tf32 and use tf32 tensor cores (no effect on
    /// f16 and bf16 inputs, which always use tensor cores).
    pub tf32: bool,
}

/// `jagged_dense_bmm` (OPS.md): `x [T, K]` on `offsets`, `y [B, K, M]` to
/// `out [T, M]`, computed in the inputs' dtype (f32 accumulation).
pub fn jagged_dense_bmm(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    x: &DeviceTensor,
    y: &DeviceTensor,
    options: &InteractionOptions,
) -> Result<DeviceTensor, KernelError> {
    if options.tf32 {
        jagged_dense_bmm_tf32::launch(rt, offsets, x, y, options.max_len)
    } else {
        jagged_dense_bmm_full::launch(rt, offsets, x, y, options.max_len)
    }
}

/// `jagged_jagged_bmm` (OPS.md): `x [T, M]`, `y [T, P]` on `offsets` to
/// `out [B, M, P]`.
pub fn jagged_jagged_bmm(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    x: &DeviceTensor,
    y: &DeviceTensor,
    options: &InteractionOptions,
) -> Result<DeviceTensor, KernelError> {
    if options.tf32 {
        jagged_jagged_bmm_tf32::launch(rt, offsets, x, y, options.max_len)
    } else {
        jagged_jagged_bmm_full::launch(rt, offsets, x, y, options.max_len)
    }
}

/// `jagged_dense_dot` (OPS.md): `x [T, D]` on `offsets`, `y [B, F, D]` to
/// `out [T, F]`.
pub fn jagged_dense_dot(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    x: &DeviceTensor,
    y: &DeviceTensor,
    options: &InteractionOptions,
) -> Result<DeviceTensor, KernelError> {
    if options.tf32 {
        jagged_dense_dot_tf32::launch(rt, offsets, x, y, options.max_len)
    } else {
        jagged_dense_dot_full::launch(rt, offsets, x, y, options.max_len)
    }
}

/// `jagged_dense_bmm_backward` (OPS.md): `(dx [T, K], dy [B, K, M])` from
/// `x`, `y` and `dout [T, M]`.
pub fn jagged_dense_bmm_backward(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    x: &DeviceTensor,
    y: &DeviceTensor,
    dout: &DeviceTensor,
    options: &InteractionOptions,
) -> Result<(DeviceTensor, DeviceTensor), KernelError> {
    if options.tf32 {
        jagged_dense_bmm_backward_tf32::launch(rt, offsets, x, y, dout, options.max_len)
    } else {
        jagged_dense_bmm_backward_full::launch(rt, offsets, x, y, dout, options.max_len)
    }
}

/// `jagged_jagged_bmm_backward` (OPS.md): `(dx [T, M], dy [T, P])` from
/// `x`, `y` and `dout [B, M, P]`.
pub fn jagged_jagged_bmm_backward(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    x: &DeviceTensor,
    y: &DeviceTensor,
    dout: &DeviceTensor,
    options: &InteractionOptions,
) -> Result<(DeviceTensor, DeviceTensor), KernelError> {
    if options.tf32 {
        jagged_jagged_bmm_backward_tf32::launch(rt, offsets, x, y, dout, options.max_len)
    } else {
        jagged_jagged_bmm_backward_full::launch(rt, offsets, x, y, dout, options.max_len)
    }
}

/// `jagged_pairwise_dot`: `x_i . x_j` for `i < j < n_b` of each sequence,
/// packed row-major over `(i, j)` (`values [sum n_b (n_b - 1) / 2]`) with
/// its `offsets [B+1]` (the input offsets' dtype). Each packed value is
/// computed where it is stored; no `[n_b, n_b]` block exists.
#[jagged_kernel(name = "jagged_pairwise_dot", outputs(values, offsets))]
pub fn jagged_pairwise_dot_full<T: Float, D>(
    x: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> (Jagged<T, ()>, Offsets) {
    let packed = x.dot(x).cast::<T>().pack_triu();
    (packed, packed.offsets())
}

/// [`jagged_pairwise_dot_full`](mod@jagged_pairwise_dot_full) with f32 operands rounded to tf32.
#[jagged_kernel(name = "jagged_pairwise_dot", tf32, outputs(values, offsets))]
pub fn jagged_pairwise_dot_tf32<T: Float, D>(
    x: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> (Jagged<T, ()>, Offsets) {
    let packed = x.dot(x).cast::<T>().pack_triu();
    (packed, packed.offsets())
}

/// `jagged_pairwise_dot` (OPS.md): `x [T, D]` on `offsets` to `(values
/// [sum n_b (n_b - 1) / 2], offsets [B+1])`; the returned `values` has
/// exactly `offsets[B]` rows.
pub fn jagged_pairwise_dot(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    x: &DeviceTensor,
    options: &InteractionOptions,
) -> Result<(DeviceTensor, DeviceTensor), KernelError> {
    if options.tf32 {
        jagged_pairwise_dot_tf32::launch(rt, offsets, x, options.max_len)
    } else {
        jagged_pairwise_dot_full::launch(rt, offsets, x, options.max_len)
    }
}
