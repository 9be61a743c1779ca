use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    x * x.query_pos()
}

fn main() {}
