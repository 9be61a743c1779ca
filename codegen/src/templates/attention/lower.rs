//! Lowering of a recognized attention pattern: checks the spec, names the
//! entry, and builds the forward kernel with its launch (and the descriptor
//! of the backward kernels).

use crate::error::CodegenError;
use crate::kernel::KernelModule;
use crate::launch::{Launch, OutputBuffer, SizeExpr};
use crate::lower::Lowered;
use crate::spec::{Arch, DType, Spec};
use crate::templates::attention_graph::AttentionPattern;

use super::desc::{Activation, AttentionDesc, PairMask};
use super::forward::attention_kernel;
use super::hopper::hopper_tiles;
use super::tiles::Tiles;

/// Lowers a recognized attention pattern for `spec` (`inner` is `[H, D]` or
/// `[D]`, dtype f16 or bf16, D in {32, 64, 128, 256}): one flash kernel,
/// launched with the dynamic shared memory of its tiles.
pub fn lower_attention(pattern: &AttentionPattern, spec: &Spec) -> Result<Lowered, CodegenError> {
    let unsupported = |what: String| CodegenError::Unsupported(format!("flash attention: {what}"));
    let (heads, head_dim) = match (pattern.has_heads, spec.inner.as_slice()) {
        (true, &[h, d]) => (h, d),
        (false, &[d]) => (1, d),
        (_, other) => return Err(unsupported(format!("inner dims {other:?}"))),
    };
    if !matches!(head_dim, 32 | 64 | 128 | 256) {
        return Err(unsupported(format!(
            "head dim {head_dim} (expected 32, 64, 128 or 256)"
        )));
    }
    if heads == 0 {
        return Err(unsupported("zero heads".to_string()));
    }
    check_row_elems(heads, head_dim).map_err(unsupported)?;
    if !matches!(spec.dtype, DType::F16 | DType::BF16) {
        return Err(unsupported(format!(
            "dtype {} (tensor cores take f16 or bf16)",
            spec.dtype
        )));
    }
    if !matches!(spec.index, DType::I32 | DType::I64) {
        return Err(unsupported(format!("offsets dtype {}", spec.index)));
    }
    let desc = AttentionDesc {
        name: entry_name(pattern, spec, heads, head_dim),
        heads,
        head_dim,
        dtype: spec.dtype,
        index: spec.index,
        activation: pattern.activation,
        scale_attr: pattern.scale.clone(),
        score_mask: pattern.score_mask,
        prob_mask: pattern.prob_mask,
        divide_by_max_len: pattern.divide_by_max_len,
        lse: pattern.lse,
        tiles: Tiles::for_spec(head_dim, spec.max_len_bucket),
        wgmma: false,
    };
    // sm_90a: the wgmma kernel (every head dim); sm_80: the mma.sync one.
    let desc = if spec.arch == Arch::Sm90a {
        AttentionDesc {
            tiles: hopper_tiles(head_dim, spec.max_len_bucket),
            wgmma: true,
            ..desc
        }
    } else {
        desc
    };
    let plan = attention_kernel(&desc);
    let launch = Launch {
        entry: plan.kernel.name.clone(),
        block: plan.kernel.block_threads,
        dynamic_shared_bytes: desc.dynamic_shared_bytes(),
        grid: plan.grid,
        params: plan.bindings,
    };
    let module = KernelModule {
        kernels: vec![plan.kernel],
    };
    let rows = SizeExpr::TotalRows * SizeExpr::Const(u64::from(heads));
    let mut outputs = vec![OutputBuffer {
        elem: spec.dtype,
        elems: rows.clone() * SizeExpr::Const(u64::from(head_dim)),
        used_rows_from: None,
    }];
    if pattern.lse {
        outputs.push(OutputBuffer {
            elem: DType::F32,
            elems: rows,
            used_rows_from: None,
        });
    }
    Ok(Lowered {
        module,
        launches: vec![launch],
        scratch: Vec::new(),
        outputs,
    })
}

/// The most elements `H D` of a q / k / v row the attention kernels take:
/// they address up to 128 rows of a tile (`2 H D` bytes apart), or 64 rows
/// of the backward's f32 `dq` accumulator (`4 H D` bytes apart), by
/// immediate offsets from a thread's first row, PTX's signed 32-bit ones.
const MAX_ROW_ELEMS: u64 = 1 << 23;

/// Refuses `heads` of `head_dim` past [`MAX_ROW_ELEMS`], with the reason
/// for a [`CodegenError::Unsupported`].
pub(in crate::templates) fn check_row_elems(heads: u32, head_dim: u32) -> Result<(), String> {
    if u64::from(heads) * u64::from(head_dim) > MAX_ROW_ELEMS {
        return Err(format!(
            "{heads} heads of dim {head_dim} (H D is at most 2^23: the kernels address \
             a block's rows by 32-bit offsets)"
        ));
    }
    Ok(())
}

/// The descriptor of the backward kernels of `pattern` (entry names end in `_bwd`).
pub(in crate::templates) fn backward_desc(
    pattern: &AttentionPattern,
    spec: &Spec,
    heads: u32,
    head_dim: u32,
) -> AttentionDesc {
    AttentionDesc {
        name: format!("{}_bwd", entry_name(pattern, spec, heads, head_dim)),
        heads,
        head_dim,
        dtype: spec.dtype,
        index: spec.index,
        activation: pattern.activation,
        scale_attr: pattern.scale.clone(),
        score_mask: pattern.score_mask,
        prob_mask: pattern.prob_mask,
        divide_by_max_len: pattern.divide_by_max_len,
        lse: pattern.lse,
        // The backward kernels run 4 warps (their own tiling, see attention_bwd).
        tiles: Tiles {
            block_m: 64,
            block_n: 64,
            warp_rows: 16,
            stages: 2,
        },
        // sm_90a: the wgmma main kernel (`hopper_bwd`, every head dim);
        // sm_80: the mma.sync one.
        wgmma: spec.arch == Arch::Sm90a,
    }
}

/// `jg_attn_<dtype>_<index>_h<H>_d<D>_n<bucket>_<activation>[_scaled][_causal|_keys_after][...]`.
fn entry_name(pattern: &AttentionPattern, spec: &Spec, heads: u32, head_dim: u32) -> String {
    let mut name = format!(
        "jg_attn_{}_{}_h{heads}_d{head_dim}_n{}_{}",
        spec.dtype,
        spec.index,
        spec.max_len_bucket,
        match pattern.activation {
            Activation::Softmax => "softmax",
            Activation::Silu => "silu",
        }
    );
    let mask_name = |m: PairMask| match m {
        PairMask::KeyNotAfterQuery => "causal",
        PairMask::KeyNotBeforeQuery => "keys_from_query",
    };
    if pattern.scale.is_some() {
        name.push_str("_scaled");
    }
    if let Some(m) = pattern.score_mask {
        name.push_str("_score_");
        name.push_str(mask_name(m));
    }
    if let Some(m) = pattern.prob_mask {
        name.push_str("_prob_");
        name.push_str(mask_name(m));
    }
    if pattern.divide_by_max_len {
        name.push_str("_div_max_len");
    }
    name
}

#[cfg(test)]
mod tests {
    use crate::error::CodegenError;
    use crate::spec::{Arch, DType, Spec};
    use crate::templates::attention_graph::match_attention;
    use jagged_ir::ops::{Activation, AttentionSpec, jagged_flash_attention};

    /// Heads so many that a block's rows leave the 32-bit address offsets
    /// are a typed error of the flash lowering (the graph then takes the
    /// general path), not a u32 overflow of the row bytes; the most heads
    /// that fit lower.
    #[test]
    fn refuses_heads_past_the_address_offsets() {
        for arch in [Arch::Sm80, Arch::Sm90a] {
            let lower = |heads: usize| {
                let graph = jagged_flash_attention(&AttentionSpec {
                    input_dtype: DType::BF16,
                    dtype: DType::BF16,
                    offsets: DType::I32,
                    heads,
                    head_dim: 256,
                    value_dim: 256,
                    causal: false,
                    activation: Activation::Softmax,
                })
                .expect("graph");
                let spec = Spec::for_graph(&graph, 128, arch).expect("spec");
                let found = match_attention(&graph).expect("attention");
                super::lower_attention(&found.pattern, &spec)
            };
            match lower(1 << 23) {
                Err(CodegenError::Unsupported(why)) => assert!(why.contains("heads"), "{why}"),
                other => panic!("{arch:?}: {:?}", other.map(|l| l.launches.len())),
            }
            assert!(lower(1 << 15).is_ok(), "{arch:?}");
        }
    }
}
