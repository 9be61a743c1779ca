use jagged::dsl::*;

#[jagged_kernel(specialize(D = [8], offsets = [i32], max_len = [64], activation = Gelu))]
fn k<D>(
    x: Jagged<f32, (D,)>,
    #[attr] max_len: usize,
    #[attr(static)] activation: Activation,
) -> Jagged<f32, (D,)> {
    match activation {
        Activation::Softmax => x.softmax_over_seq(),
        Activation::Silu => silu(x),
    }
}

fn main() {}
