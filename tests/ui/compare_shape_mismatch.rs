use jagged::dsl::*;

#[jagged_kernel]
fn k<H, D>(
    q: Jagged<f32, (H, D)>,
    k: Jagged<f32, (H, D)>,
    x: Jagged<f32, (D,)>,
    #[attr] max_len: usize,
) -> Jagged<f32, (H,)> {
    let s = q.dot(k);
    select(s.lt(x), s, 0.0).sum_over_keys()
}

fn main() {}
