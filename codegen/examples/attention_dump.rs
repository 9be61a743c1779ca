//! Prints the PTX of one attention specialization:
//! `attention_dump HEAD_DIM MAX_LEN {f16|bf16} {softmax|silu} {causal|full} {sm_80|sm_90a}`.

use jagged_codegen::{Arch, DType, Spec, compile};
use jagged_ir::ops::{Activation, AttentionSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [head_dim, max_len, dtype, act, mask, arch] = args.as_slice() else {
        return Err("usage: attention_dump HEAD_DIM MAX_LEN DTYPE ACTIVATION MASK ARCH".into());
    };
    let dtype = if dtype == "f16" {
        DType::F16
    } else {
        DType::BF16
    };
    let activation = if act == "silu" {
        Activation::Silu
    } else {
        Activation::Softmax
    };
    let arch = if arch == "sm_90a" {
        Arch::Sm90a
    } else {
        Arch::Sm80
    };
    let head_dim: usize = head_dim.parse()?;
    let graph = jagged_ir::ops::jagged_flash_attention(&AttentionSpec {
        input_dtype: dtype,
        dtype,
        offsets: DType::I32,
        heads: 2,
        head_dim,
        value_dim: head_dim,
        causal: mask == "causal",
        activation,
    })?;
    let spec = Spec::for_graph(&graph, max_len.parse()?, arch)?;
    print!("{}", compile(&graph, &spec)?.ptx);
    Ok(())
}
