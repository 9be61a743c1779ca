use jagged::dsl::*;

#[jagged_kernel(specialize(T = [f32], offsets = [i32]))]
fn k<T, D>(x: Jagged<T, (D,)>, #[attr] max_len: usize) -> Jagged<T, (D,)> {
    x.exp()
}

fn main() {}
