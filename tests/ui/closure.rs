use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>) -> Jagged<f32, (D,)> {
    let f = |v: Jagged<f32, (D,)>| v.exp();
    f(x)
}

fn main() {}
