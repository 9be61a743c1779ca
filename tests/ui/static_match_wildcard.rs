use jagged::dsl::*;

#[jagged_kernel]
fn k<H, D>(
    q: Jagged<f32, (H, D)>,
    k: Jagged<f32, (H, D)>,
    #[attr] max_len: usize,
    #[attr(static)] activation: Activation,
) -> Jagged<f32, (H,)> {
    let s = q.dot(k);
    let p = match activation {
        Activation::Softmax => s.softmax_over_keys(),
        _ => silu(s),
    };
    p.sum_over_keys()
}

fn main() {}
