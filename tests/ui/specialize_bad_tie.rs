use jagged::dsl::*;

// `E = T` ties a dim to a dtype parameter: a compile error at the tie.
#[jagged_kernel(specialize(T = [f32], D = [4], E = T, offsets = [i32], max_len = [16]))]
fn k<T: Float, D, E>(x: Jagged<T, (D,)>, y: Jagged<T, (E,)>) -> PerSeq<T, (D,)> {
    x.sum_over_seq()
}

fn main() {}
