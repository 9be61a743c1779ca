use jagged::dsl::*;

#[jagged_kernel]
fn k<H, D>(x: Jagged<f32, (H, D)>, w: Dense<f32, (D,)>) -> Jagged<f32, (H, D)> {
    x * w
}

fn main() {}
