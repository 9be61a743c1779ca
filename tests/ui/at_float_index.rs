use jagged::dsl::*;

// A table is read at integer rows: a float index is a compile error.
#[jagged_kernel]
fn k<D, R>(x: Jagged<f32, (D,)>, table: Dense<f32, (R,)>) -> Jagged<f32, (D,)> {
    x * table.at(x.row_pos())
}

fn main() {}
