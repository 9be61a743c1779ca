use jagged::dsl::*;

#[jagged_kernel]
fn k<D, E, M>(x: Jagged<f32, (D,)>, w: Dense<f32, (E, M)>) -> Jagged<f32, (M,)> {
    x.matmul(w)
}

fn main() {}
