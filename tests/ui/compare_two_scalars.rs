use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, #[attr] a: f32) -> Jagged<f32, (D,)> {
    select(a.lt(2.0), x, 0.0)
}

fn main() {}
