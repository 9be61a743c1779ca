use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Jagged<f32, ()>, w: Dense<f32, ()>) -> Jagged<f32, ()> {
    (x * w).mean_over_features()
}

fn main() {}
