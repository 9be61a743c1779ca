use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Jagged<i64, ()>, #[attr] threshold: f32) -> Jagged<bool, ()> {
    x.gt(threshold)
}

fn main() {}
