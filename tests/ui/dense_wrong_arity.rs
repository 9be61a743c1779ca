use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, w: Dense<f32, (D,), f32>) -> Jagged<f32, (D,)> {
    x * w
}

fn main() {}
