//! OPS.md "Attention", each variant a `#[jagged_kernel]` composed from the
//! DSL's pieces (`q.dot(k)`, a pointwise activation or a softmax over the keys,
//! a causal mask, `p.dot(v)`), and a front function per op that picks the
//! variant from the op's attributes.
//!
//! A DSL kernel is static in its activation and its mask, so each
//! (activation, causal) pair is its own kernel; all build the graph named
//! `jagged_flash_attention` (or `fbgemm_jagged_flash_attention_basic`) that
//! `jagged_ir::ops` builds for the same spec. What the DSL cannot express is
//! handled by the front functions and said in their docs:
//!
//! - the default of `scale`, `1/sqrt(D)`: an attribute default is a literal,
//!   so the kernels take `scale` as a required attribute;
//! - a `dtype` other than the inputs' own: a dtype parameter must appear in
//!   the signature, so the kernels compute in the dtype of `q`, `k` and `v`
//!   (the `dtype` attribute is the inputs' dtype; round them before the call).
//!
//! The value dim, OPS.md's `Dv`, is the generic `E`. The name is not needed
//! for code generation (the attention template matches contractions by the
//! roles of their axes, not their letters, so a kernel naming it `Dv`, whose
//! graph reads `[jhd] -> [ihd]`, compiles to the same kernel); `E` is kept
//! because the macro names a contraction's axes after the dims' initials, and
//! `E` gives the reference's `[jhe] -> [ihe]`, so these kernels build the
//! reference graphs text for text.

use jagged_ir::ops::Activation;
use jagged_runtime::{DeviceTensor, Runtime};

use super::KernelError;
use super::dsl::*;
use super::support::inner_dim;

/// `jagged_flash_attention` with `activation = softmax`, `causal = false`:
/// `out [T, H, E]` and `lse [T, H]` (f32, natural log).
#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
pub fn jagged_flash_attention_softmax<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> (Jagged<T, (H, E)>, Jagged<f32, (H,)>) {
    let s = q.dot(k) * scale;
    let p = s.softmax_over_keys();
    let lse = s.logsumexp_over_keys().cast::<f32>();
    (p.dot(v), lse)
}

/// `jagged_flash_attention` with `activation = softmax`, `causal = true`:
/// scores of keys after the query are `-inf` before the softmax.
#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
pub fn jagged_flash_attention_softmax_causal<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> (Jagged<T, (H, E)>, Jagged<f32, (H,)>) {
    let s = (q.dot(k) * scale).causal_or(f32::NEG_INFINITY);
    let p = s.softmax_over_keys();
    let lse = s.logsumexp_over_keys().cast::<f32>();
    (p.dot(v), lse)
}

/// `jagged_flash_attention` with `activation = silu` (HSTU), `causal = false`:
/// `p = silu(s) / max_len`, pointwise.
#[jagged_kernel(name = "jagged_flash_attention", outputs(out))]
pub fn jagged_flash_attention_silu<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * scale;
    let p = silu(s) / max_len as f32;
    p.dot(v)
}

/// `jagged_flash_attention` with `activation = silu` (HSTU), `causal = true`:
/// `p` is zero for keys after the query.
#[jagged_kernel(name = "jagged_flash_attention", outputs(out))]
pub fn jagged_flash_attention_silu_causal<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * scale;
    let p = silu(s) / max_len as f32;
    p.causal().dot(v)
}

/// The attributes of `jagged_flash_attention` (OPS.md), for
/// [`jagged_flash_attention`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionOptions {
    /// Each sequence is truncated to its first `max_len` rows.
    pub max_len: usize,
    /// The factor of the scores; `None` is OPS.md's default `1/sqrt(D)`.
    pub scale: Option<f32>,
    /// Query `i` sees keys `j <= i` only.
    pub causal: bool,
    /// Softmax (with an `lse` output) or SiLU (HSTU).
    pub activation: Activation,
}

/// `jagged_flash_attention` (OPS.md): `q [T, H, D]`, `k [T, H, D]`,
/// `v [T, H, E]` on `offsets` to `out [T, H, E]` and, with softmax,
/// `lse [T, H]` (f32). Runs the DSL kernel of the options' activation and
/// causality.
///
/// Done here rather than in the DSL: the default `scale` `1/sqrt(D)` (read
/// from `q`'s shape), which an attribute default cannot express. The
/// computation is in the dtype of `q`, `k` and `v` (OPS.md's `dtype`
/// attribute): pass them in the dtype to compute in.
pub fn jagged_flash_attention(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    options: &AttentionOptions,
) -> Result<(DeviceTensor, Option<DeviceTensor>), KernelError> {
    let scale = match options.scale {
        Some(scale) => scale,
        None => default_scale(q)?,
    };
    let max_len = options.max_len;
    match (options.activation, options.causal) {
        (Activation::Softmax, false) => {
            let (out, lse) =
                jagged_flash_attention_softmax::launch(rt, offsets, q, k, v, max_len, scale)?;
            Ok((out, Some(lse)))
        }
        (Activation::Softmax, true) => {
            let (out, lse) = jagged_flash_attention_softmax_causal::launch(
                rt, offsets, q, k, v, max_len, scale,
            )?;
            Ok((out, Some(lse)))
        }
        (Activation::Silu, false) => {
            let out = jagged_flash_attention_silu::launch(rt, offsets, q, k, v, max_len, scale)?;
            Ok((out, None))
        }
        (Activation::Silu, true) => {
            let out =
                jagged_flash_attention_silu_causal::launch(rt, offsets, q, k, v, max_len, scale)?;
            Ok((out, None))
        }
    }
}

/// OPS.md's default `scale`, `1/sqrt(D)`, with `D` read from `q [T, H, D]`.
fn default_scale(q: &DeviceTensor) -> Result<f32, KernelError> {
    let head_dim = inner_dim("q", q, 1, 2, 1)?;
    Ok((1.0 / (head_dim as f64).sqrt()) as f32)
}

/// `fbgemm_jagged_flash_attention_basic` with `use_mask = false`:
/// `p_ij = softmax_j(q_i . k_j) / max_len` over all keys, `out_i = sum_j p_ij v_j`.
#[jagged_kernel(name = "fbgemm_jagged_flash_attention_basic", outputs(out))]
pub fn fbgemm_jagged_flash_attention_basic_unmasked<T: Float, D>(
    q: Jagged<T, (D,)>,
    k: Jagged<T, (D,)>,
    v: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<T, (D,)> {
    let p = q.dot(k).softmax_over_keys() / max_len as f32;
    p.dot(v)
}

/// `fbgemm_jagged_flash_attention_basic` with `use_mask = true`: as without
/// the mask, then `p_ij = 0` for `j < i` (rows are not renormalized).
#[jagged_kernel(name = "fbgemm_jagged_flash_attention_basic", outputs(out))]
pub fn fbgemm_jagged_flash_attention_basic_masked<T: Float, D>(
    q: Jagged<T, (D,)>,
    k: Jagged<T, (D,)>,
    v: Jagged<T, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<T, (D,)> {
    let p = q.dot(k).softmax_over_keys() / max_len as f32;
    p.anticausal().dot(v)
}

/// The attributes of `fbgemm_jagged_flash_attention_basic` (OPS.md), for
/// [`fbgemm_jagged_flash_attention_basic`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FbgemmAttentionOptions {
    /// Each sequence is truncated to its first `max_len` rows.
    pub max_len: usize,
    /// Zero the probabilities of keys before the query, after normalization.
    pub use_mask: bool,
}

/// `fbgemm_jagged_flash_attention_basic` (OPS.md): `q`, `k`, `v [T, D]` on
/// `offsets` to `out [T, D]`. Runs the DSL kernel of `use_mask`; computes in
/// the dtype of `q`, `k` and `v` (OPS.md's `dtype` attribute).
pub fn fbgemm_jagged_flash_attention_basic(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    options: &FbgemmAttentionOptions,
) -> Result<DeviceTensor, KernelError> {
    let max_len = options.max_len;
    if options.use_mask {
        fbgemm_jagged_flash_attention_basic_masked::launch(rt, offsets, q, k, v, max_len)
    } else {
        fbgemm_jagged_flash_attention_basic_unmasked::launch(rt, offsets, q, k, v, max_len)
    }
}
