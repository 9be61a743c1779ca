use jagged::dsl::*;

#[jagged_kernel]
fn k<T: Float>(t: Jagged<T, ()>) -> Jagged<T, ()> {
    t * 2.0
}

fn main() {}
