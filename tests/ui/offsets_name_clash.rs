use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Jagged<f32, ()>, offsets: Jagged<f32, ()>) -> Jagged<f32, ()> {
    x + offsets
}

fn main() {}
