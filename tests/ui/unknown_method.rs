use jagged::dsl::*;

#[jagged_kernel]
fn k<D>(x: Jagged<f32, (D,)>, #[attr] max_len: usize) -> Jagged<f32, (D,)> {
    x.erf()
}

fn main() {}
