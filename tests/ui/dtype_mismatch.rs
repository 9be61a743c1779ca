use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f16, (D,)>, y: Jagged<bf16, (D,)>) -> Jagged<f16, (D,)> {
    x * y
}

fn main() {}
