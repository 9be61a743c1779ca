use jagged::dsl::*;

#[jagged_kernel]
fn k<H, D>(
    q: Jagged<f32, (H, D)>,
    k: Jagged<f32, (H, D)>,
    #[attr] max_len: usize,
    #[attr(static)] causal: bool,
) -> Jagged<f32, (H,)> {
    let s = q.dot(k);
    #[rustfmt::skip]
    let s = if causal { s.causal() } else { s.sum_over_keys() };
    s.sum_over_keys()
}

fn main() {}
