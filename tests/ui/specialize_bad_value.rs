use jagged::dsl::*;

#[jagged_kernel(specialize(T = [f32, 64], offsets = [i32]))]
fn k<T>(x: Jagged<T>, #[attr] max_len: usize) -> Jagged<T> {
    x.exp()
}

fn main() {}
