use jagged::dsl::*;

// The code generator cannot specialize a kernel without offsets or lengths
// (no i32/i64 input to size its grid by): the specialization is rejected when
// the crate compiles, not when it runs.
#[jagged_kernel(specialize(D = [4], max_len = [16]))]
fn k<D>(x: PerSeq<f32, (D,)>) -> PerSeq<f32, (D,)> {
    x.exp()
}

fn main() {}
