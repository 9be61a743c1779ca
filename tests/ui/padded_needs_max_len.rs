use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>) -> Padded<f32, (D,)> {
    x.to_padded()
}

fn main() {}
