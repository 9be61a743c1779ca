use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, mask: Jagged<bool>) -> Jagged<f32, (D,)> {
    let kept = x.compact(mask);
    kept + x
}

fn main() {}
