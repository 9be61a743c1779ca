use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    x
}

fn main() {}
