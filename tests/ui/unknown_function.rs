use jagged::dsl::*;

fn tanh<X>(x: X) -> X {
    x
}

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    tanh(x)
}

fn main() {}
