use jagged::dsl::*;

#[jagged_kernel]
fn k(lengths: Jagged<i32>) -> Jagged<i32> {
    lengths.exp()
}

fn main() {}
