use jagged::dsl::*;

// The code generator has no template for a contraction of this shape: the
// specialization is rejected when the crate compiles, not when it runs.
#[jagged_kernel(specialize(D = [4], offsets = [i32], max_len = [16]))]
fn k<D>(q: Jagged<f32, (D,)>, k: Jagged<f32, (D,)>, #[attr] max_len: usize) -> Jagged<f32> {
    q.dot(k).sum_over_keys()
}

fn main() {}
