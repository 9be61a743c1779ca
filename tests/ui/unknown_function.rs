use jagged::dsl::*;

fn erf<X>(x: X) -> X {
    x
}

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    erf(x)
}

fn main() {}
