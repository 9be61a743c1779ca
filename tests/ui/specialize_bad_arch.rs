use jagged::dsl::*;

#[jagged_kernel(specialize(T = [f32], offsets = [i32], arch = [sm_80, sm_70]))]
fn k<T>(x: Jagged<T>, #[attr] max_len: usize) -> Jagged<T> {
    x.exp()
}

fn main() {}
