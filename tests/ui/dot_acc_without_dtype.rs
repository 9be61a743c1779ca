use jagged::dsl::*;

#[jagged_kernel]
fn k<H, D>(q: Jagged<f32, (H, D)>, k: Jagged<f32, (H, D)>, #[attr] max_len: usize) -> Jagged<f32, (H,)> {
    q.dot_acc(k).sum_over_keys()
}

fn main() {}
