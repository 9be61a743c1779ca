use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, n: Jagged<i32, ()>) -> Jagged<f32, (D,)> {
    x * n
}

fn main() {}
