use jagged::dsl::*;

#[jagged_kernel]
fn k<H, D>(x: Jagged<f32, (H,)>, y: Jagged<f32, (D,)>) -> Jagged<f32, (H,)> {
    let z = x.exp();
    z + y
}

fn main() {}
