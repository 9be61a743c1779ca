use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, y: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    select(x.le(y, 1.0), x, y)
}

fn main() {}
