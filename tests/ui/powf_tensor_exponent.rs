use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, y: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    x.powf(y)
}

fn main() {}
