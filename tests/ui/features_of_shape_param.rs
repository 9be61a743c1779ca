use jagged::dsl::*;

#[jagged_kernel]
fn k<S>(x: Jagged<f32, S>) -> Jagged<f32, ()> {
    x.sum_over_features()
}

fn main() {}
