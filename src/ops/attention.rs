//! OPS.md "Attention", each op one `#[jagged_kernel]` composed from the
//! DSL's pieces (`q.dot(k)`, a pointwise activation or a softmax over the keys,
//! a causal mask, `p.dot(v)`), with its activation and mask as static
//! attributes (`#[attr(static)]`): each value builds its own graph, so each
//! (activation, causal) pair is its own kernel and cache entry, written once.
//! A front function per op runs the kernel with the op's attributes; the
//! modules named after the former per-variant kernels
//! ([`jagged_flash_attention_softmax`], `_softmax_causal`, `_silu`,
//! `_silu_causal`, [`fbgemm_jagged_flash_attention_basic_unmasked`],
//! `_masked`) fix the static attributes.
//!
//! The kernels build the graphs named `jagged_flash_attention` (or
//! `fbgemm_jagged_flash_attention_basic`) that `jagged_ir::ops` builds for the
//! same spec. What the DSL cannot express is handled by the front functions
//! and said in their docs:
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
use jagged_ir::{DType, Graph};
use jagged_runtime::{DeviceTensor, Runtime};

use super::KernelError;
use super::dsl::*;
use super::support::inner_dim;

/// `jagged_flash_attention` (OPS.md) as one DSL kernel: `out [T, H, E]` and,
/// with `activation = Softmax`, `lse [T, H]` (f32, natural log; `None` for
/// SiLU). `causal` and `activation` are static: each pair builds its own
/// graph.
///
/// - softmax: `p = softmax_j(s)` with `s = scale * q . k`; with `causal`, the
///   scores of keys after the query are `-inf` before the softmax;
/// - SiLU (HSTU): `p = silu(s) / max_len`, pointwise; with `causal`, `p` is
///   zero for keys after the query.
#[jagged_kernel(name = "jagged_flash_attention", outputs(out, lse))]
pub fn jagged_flash_attention_kernel<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] scale: f32,
    #[attr(static)] causal: bool,
    #[attr(static)] activation: Activation,
) -> (Jagged<T, (H, E)>, Option<Jagged<f32, (H,)>>) {
    let s = q.dot(k) * scale;
    match activation {
        Activation::Softmax => {
            let s = if causal {
                s.causal_or(f32::NEG_INFINITY)
            } else {
                s
            };
            let p = s.softmax_over_keys();
            let lse = s.logsumexp_over_keys().cast::<f32>();
            (p.dot(v), Some(lse))
        }
        Activation::Silu => {
            let p = silu(s) / max_len as f32;
            let p = if causal { p.causal() } else { p };
            (p.dot(v), None)
        }
    }
}

/// A module fixing the static attributes of [`jagged_flash_attention_kernel`]
/// for a softmax variant: `graph` and `launch` as the former per-variant
/// kernel's (`launch` gives `out` and `lse`).
macro_rules! softmax_variant {
    ($(#[$doc:meta])* $name:ident, causal = $causal:literal) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;

            /// The graph of `jagged_flash_attention_kernel` for this variant:
            /// `graph(t, h, d, e, offsets)` (dtype, heads, head dim, value dim,
            /// offsets dtype).
            pub fn graph(
                t: DType,
                h: usize,
                d: usize,
                e: usize,
                offsets: DType,
            ) -> Result<Graph, KernelError> {
                jagged_flash_attention_kernel::graph(t, h, d, e, $causal, Activation::Softmax, offsets)
            }

            /// Runs this variant on `rt` (arguments as
            /// `jagged_flash_attention_kernel::launch`'s, without the static
            /// attributes): `(out, lse)`.
            #[allow(clippy::too_many_arguments)]
            pub fn launch(
                rt: &mut Runtime,
                offsets: &DeviceTensor,
                q: &DeviceTensor,
                k: &DeviceTensor,
                v: &DeviceTensor,
                max_len: usize,
                scale: f32,
            ) -> Result<(DeviceTensor, DeviceTensor), KernelError> {
                let (out, lse) = jagged_flash_attention_kernel::launch(
                    rt, offsets, q, k, v, max_len, scale, $causal, Activation::Softmax,
                )?;
                Ok((out, lse.ok_or(KernelError::MissingOutput { name: "lse" })?))
            }

            pub use super::jagged_flash_attention_kernel::SPECIALIZED;
        }
    };
}

/// As [`softmax_variant`], for a SiLU variant (`launch` gives `out`).
macro_rules! silu_variant {
    ($(#[$doc:meta])* $name:ident, causal = $causal:literal) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;

            /// The graph of `jagged_flash_attention_kernel` for this variant:
            /// `graph(t, h, d, e, offsets)` (dtype, heads, head dim, value dim,
            /// offsets dtype).
            pub fn graph(
                t: DType,
                h: usize,
                d: usize,
                e: usize,
                offsets: DType,
            ) -> Result<Graph, KernelError> {
                jagged_flash_attention_kernel::graph(t, h, d, e, $causal, Activation::Silu, offsets)
            }

            /// Runs this variant on `rt` (arguments as
            /// `jagged_flash_attention_kernel::launch`'s, without the static
            /// attributes): `out`.
            pub fn launch(
                rt: &mut Runtime,
                offsets: &DeviceTensor,
                q: &DeviceTensor,
                k: &DeviceTensor,
                v: &DeviceTensor,
                max_len: usize,
                scale: f32,
            ) -> Result<DeviceTensor, KernelError> {
                let (out, _) = jagged_flash_attention_kernel::launch(
                    rt, offsets, q, k, v, max_len, scale, $causal, Activation::Silu,
                )?;
                Ok(out)
            }

            pub use super::jagged_flash_attention_kernel::SPECIALIZED;
        }
    };
}

softmax_variant!(
    /// `jagged_flash_attention` with `activation = softmax`, `causal = false`:
    /// `out [T, H, E]` and `lse [T, H]` (f32, natural log).
    jagged_flash_attention_softmax,
    causal = false
);
softmax_variant!(
    /// `jagged_flash_attention` with `activation = softmax`, `causal = true`:
    /// scores of keys after the query are `-inf` before the softmax.
    jagged_flash_attention_softmax_causal,
    causal = true
);
silu_variant!(
    /// `jagged_flash_attention` with `activation = silu` (HSTU), `causal =
    /// false`: `p = silu(s) / max_len`, pointwise.
    jagged_flash_attention_silu,
    causal = false
);
silu_variant!(
    /// `jagged_flash_attention` with `activation = silu` (HSTU), `causal =
    /// true`: `p` is zero for keys after the query.
    jagged_flash_attention_silu_causal,
    causal = true
);

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
/// `lse [T, H]` (f32). Runs [`jagged_flash_attention_kernel`](mod@jagged_flash_attention_kernel) with the
/// options' activation and causality as its static attributes.
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
    jagged_flash_attention_kernel::launch(
        rt,
        offsets,
        q,
        k,
        v,
        options.max_len,
        scale,
        options.causal,
        options.activation,
    )
}

/// OPS.md's default `scale`, `1/sqrt(D)`, with `D` read from `q [T, H, D]`.
fn default_scale(q: &DeviceTensor) -> Result<f32, KernelError> {
    let head_dim = inner_dim("q", q, 1, 2, 1)?;
    Ok((1.0 / (head_dim as f64).sqrt()) as f32)
}

/// `fbgemm_jagged_flash_attention_basic` (OPS.md) as one DSL kernel:
/// `p_ij = softmax_j(q_i . k_j) / max_len` over all keys, `out_i = sum_j p_ij
/// v_j`; with the static `use_mask`, `p_ij = 0` for `j < i` after the
/// normalization (rows are not renormalized).
#[jagged_kernel(name = "fbgemm_jagged_flash_attention_basic", outputs(out))]
pub fn fbgemm_jagged_flash_attention_basic_kernel<T: Float, D>(
    q: Jagged<T, (D,)>,
    k: Jagged<T, (D,)>,
    v: Jagged<T, (D,)>,
    #[attr] max_len: usize,
    #[attr(static)] use_mask: bool,
) -> Jagged<T, (D,)> {
    let p = q.dot(k).softmax_over_keys() / max_len as f32;
    let p = if use_mask { p.anticausal() } else { p };
    p.dot(v)
}

/// A module fixing `use_mask` of [`fbgemm_jagged_flash_attention_basic_kernel`]:
/// `graph` and `launch` as the former per-variant kernel's.
macro_rules! fbgemm_variant {
    ($(#[$doc:meta])* $name:ident, use_mask = $mask:literal) => {
        $(#[$doc])*
        pub mod $name {
            use super::*;

            /// The graph of `fbgemm_jagged_flash_attention_basic_kernel` for
            /// this variant: `graph(t, d, offsets)`.
            pub fn graph(t: DType, d: usize, offsets: DType) -> Result<Graph, KernelError> {
                fbgemm_jagged_flash_attention_basic_kernel::graph(t, d, $mask, offsets)
            }

            /// Runs this variant on `rt`: `out`.
            pub fn launch(
                rt: &mut Runtime,
                offsets: &DeviceTensor,
                q: &DeviceTensor,
                k: &DeviceTensor,
                v: &DeviceTensor,
                max_len: usize,
            ) -> Result<DeviceTensor, KernelError> {
                fbgemm_jagged_flash_attention_basic_kernel::launch(rt, offsets, q, k, v, max_len, $mask)
            }

            pub use super::fbgemm_jagged_flash_attention_basic_kernel::SPECIALIZED;
        }
    };
}

fbgemm_variant!(
    /// `fbgemm_jagged_flash_attention_basic` with `use_mask = false`:
    /// `p_ij = softmax_j(q_i . k_j) / max_len` over all keys, `out_i = sum_j p_ij v_j`.
    fbgemm_jagged_flash_attention_basic_unmasked,
    use_mask = false
);
fbgemm_variant!(
    /// `fbgemm_jagged_flash_attention_basic` with `use_mask = true`: as without
    /// the mask, then `p_ij = 0` for `j < i` (rows are not renormalized).
    fbgemm_jagged_flash_attention_basic_masked,
    use_mask = true
);

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
/// `offsets` to `out [T, D]`. Runs [`fbgemm_jagged_flash_attention_basic_kernel`](mod@fbgemm_jagged_flash_attention_basic_kernel)
/// with `use_mask` as its static attribute; computes in
/// the dtype of `q`, `k` and `v` (OPS.md's `dtype` attribute).
pub fn fbgemm_jagged_flash_attention_basic(
    rt: &mut Runtime,
    offsets: &DeviceTensor,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    options: &FbgemmAttentionOptions,
) -> Result<DeviceTensor, KernelError> {
    fbgemm_jagged_flash_attention_basic_kernel::launch(
        rt,
        offsets,
        q,
        k,
        v,
        options.max_len,
        options.use_mask,
    )
}
