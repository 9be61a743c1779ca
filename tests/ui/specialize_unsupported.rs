use jagged::dsl::*;

// A compacted output needs the offsets of its compacted sequences among the
// outputs (they give its row count): the code generator cannot lower this
// kernel, and the specialization says so when the crate compiles, at the
// expression, not when it runs.
#[jagged_kernel(specialize(D = [4], offsets = [i32], max_len = [16]))]
fn k<D>(x: Jagged<f32, (D,)>, keep: Jagged<bool>) -> Jagged<f32, (D,)> {
    x.compact(keep)
}

fn main() {}
