use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Jagged<f32>, y: Jagged<f32>, #[attr] max_len: usize) -> Jagged<bool> {
    x.lt(y) + y.lt(x)
}

fn main() {}
