use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, #[attr] alpha: f32) -> Jagged<f32, (D,)> {
    if alpha > 0.0 { x } else { -x }
}

fn main() {}
