use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    let y = x.exp();
    for _ in 0..3 {}
    y
}

fn main() {}
