use jagged::dsl::*;

#[jagged_kernel]
fn k(x: Jagged<f32, ()>, #[attr] by: f32) -> Jagged<f32, ()> {
    x.shift_rows(by)
}

fn main() {}
