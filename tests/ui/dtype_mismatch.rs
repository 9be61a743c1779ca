use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, y: Jagged<bf16, (D,)>) -> Jagged<f32, (D,)> {
    x * y
}

fn main() {}
