//! Cases shared by the integration tests: every primitive under a few specs, and
//! the attention graphs.

use jagged_codegen::templates::segment::ReduceKind;
use jagged_codegen::{Arch, DType, Primitive, Spec};
use jagged_ir::Graph;
use jagged_ir::ops::{self, Activation, AttentionSpec};

/// Every primitive the code generator implements.
pub fn primitives() -> Vec<Primitive> {
    vec![
        Primitive::CompleteCumsum,
        Primitive::JaggedToPaddedDense,
        Primitive::DenseToJagged,
        Primitive::jagged_dense_elementwise_mul(),
        Primitive::JaggedReduce(ReduceKind::Sum),
        Primitive::JaggedReduce(ReduceKind::Mean),
        Primitive::JaggedReduce(ReduceKind::Max),
        Primitive::JaggedSoftmax,
        Primitive::MaskedSelectJagged,
    ]
}

/// Three specs per primitive and arch: f32 with a vectorizable row, short
/// bucket, i32 offsets; bf16 with an odd row, long bucket, i64 offsets;
/// f16 with a wide row (several 16-byte vectors per lane pass).
pub fn specs(arch: Arch) -> Vec<Spec> {
    vec![
        Spec::new(vec![64], 100, DType::F32, DType::I32, arch),
        Spec::new(vec![3, 5], 1000, DType::BF16, DType::I64, arch),
        Spec::new(vec![128], 16, DType::F16, DType::I32, arch),
    ]
}

/// A `jagged_flash_attention` graph with i32 offsets and `value_dim = head_dim`.
pub fn attention_graph(
    dtype: DType,
    heads: usize,
    head_dim: usize,
    activation: Activation,
    causal: bool,
) -> Graph {
    ops::jagged_flash_attention(&AttentionSpec {
        input_dtype: dtype,
        dtype,
        offsets: DType::I32,
        heads,
        head_dim,
        value_dim: head_dim,
        causal,
        activation,
    })
    .expect("graph")
}
