use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Jagged<i32, ()>) -> Jagged<i32, ()> {
    x * 0.5
}

fn main() {}
