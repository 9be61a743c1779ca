use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Vec<f32>) -> Jagged<f32> {
    x
}

fn main() {}
