//! Jagged flash attention forward on tensor cores (FlashAttention-2 style).
//!
//! One CTA of 4 or 8 warps ([`Tiles::for_spec`]) owns one work item
//! `(query block, sequence b, head h)` at a time (grid-stride over
//! `ceil(max_len / BM) * B * H` items, the last query blocks first: they
//! carry the most keys, so the heavy items start early; items whose query
//! block starts past `n_b` exit at once). Each warp owns 16 or 32 query
//! rows (one or two `m16` row tiles). Per key block of `BN` keys:
//!
//! - `S = Q K^T` with `mma.sync.m16n8k16` (f32 accumulation); Q and K come
//!   from shared memory through `ldmatrix` (Q is staged once per item);
//! - masks (length, causal, ...) only on boundary blocks;
//! - the activation: online softmax (running max and sum per row, in the
//!   log2 domain, rescaling the output accumulator; `scale * log2 e` is
//!   folded into one `fma` per score, `2^(s c - m)`; where the scale is
//!   negative (zero) Q is negated (multiplied by 0) once per item, so that
//!   `c > 0` and the max of the raw scores gives the max of `s c`) or
//!   pointwise SiLU;
//! - `P` is rounded to the input dtype in registers and is the A operand of
//!   `O += P V` (`ldmatrix.trans` for V).
//!
//! K and V tiles are staged with `cp.async` in [`Tiles::stages`] stages (2,
//! or 3 with 128-row query blocks), K and V of a block in separate commit
//! groups: the copies run `stages - 1` blocks ahead of the math, `Q K^T`
//! waits only for K and V's copy overlaps it and the softmax. Two barriers
//! per key block: at the top (K of block `kb` has landed, and every warp is
//! done with the stage that block `kb + stages - 1` then goes into) and
//! before `P V` (V has landed). Shared rows are padded by 16 bytes so the 8
//! row addresses of an `ldmatrix` hit distinct banks.
//! S and P never leave registers. The item of query block 0 also writes the
//! zero rows `n_b <= i < L_b` of its head (sequences longer than `max_len`).
//!
//! On sm_90a (every head dim) the same kernel runs both products on
//! Hopper's warpgroup MMA instead (`hopper`: one warpgroup per 64-row
//! query block, `wgmma.mma_async` with K and V, and Q, read through
//! shared-memory descriptors of swizzled tiles, P from registers; Q, K
//! and V copied by TMA, `cp.async.bulk.tensor` through tensor-map
//! parameters, waited for on an mbarrier); the masks, the activations,
//! the two-stage pipeline and the epilogue are shared. For buckets of at
//! least 256 rows (every head dim) it is warp-specialized as in
//! FlashAttention-3 (`hopper_ws`: a producer warpgroup issues the copies,
//! two consumer warpgroups of 64 query rows compute, full / empty
//! mbarriers per stage, `setmaxnreg` moves registers to the consumers).
//!
//! The pieces, one file each under `attention/`: `tiles` (tile policy),
//! `desc` (what a kernel is specialized on), `writer` (the kernel writer
//! the forward and backward kernels share), `mma` (tensor-core fragments
//! and products), `hopper` (the `wgmma` products and tile layout of
//! sm_90a), `hopper_ws` (its warp specialization in the forward),
//! `hopper_bwd` (the sm_90a main backward kernel, on `wgmma`), `forward`
//! (the forward kernel) and `lower` (from a recognized pattern to a
//! compiled kernel).

mod desc;
mod forward;
mod hopper;
mod hopper_bwd;
mod hopper_ws;
mod lower;
mod mma;
mod tiles;
mod writer;

pub use desc::{Activation, AttentionDesc, PairMask};
pub use lower::lower_attention;
pub use tiles::{ATTENTION_THREADS, Tiles};

pub(super) use hopper_bwd::wgmma_backward_shared_bytes;
pub(super) use lower::{backward_desc, check_row_elems};
pub(super) use mma::Acc;
pub(super) use writer::{FlashWriter, Lanes, TileLoader, sequence_bounds};
