//! OPS.md "Primitives", each a `#[jagged_kernel]`. Input, attribute and output
//! names are OPS.md's; `S` stands for any inner dims (`*inner`).

use super::dsl::*;

/// `complete_cumsum`: `lengths [B]` to `offsets [B+1]`.
#[jagged_kernel(outputs(offsets))]
pub fn complete_cumsum<I: Index>(lengths: Lengths<I>) -> Offsets<I> {
    lengths.complete_cumsum()
}

/// `jagged_to_padded_dense`: `values [T, *inner]` to `dense [B, max_len, *inner]`,
/// `padding_value` past each sequence.
#[jagged_kernel(outputs(dense))]
pub fn jagged_to_padded_dense<T, S>(
    values: Jagged<T, S>,
    #[attr] max_len: usize,
    #[attr(default = 0.0)] padding_value: f32,
) -> Padded<T, S> {
    values.to_padded_or(padding_value)
}

/// `dense_to_jagged`: `dense [B, N, *inner]` to `values [T, *inner]` on `offsets`.
#[jagged_kernel(outputs(values))]
pub fn dense_to_jagged<T, S>(dense: Padded<T, S>, offsets: Offsets) -> Jagged<T, S> {
    dense.to_jagged()
}

/// `jagged_dense_elementwise_mul`: `values [T, *inner] * dense [B, max_len, *inner]`.
#[jagged_kernel(outputs(values))]
pub fn jagged_dense_elementwise_mul<T, S>(
    values: Jagged<T, S>,
    dense: Padded<T, S>,
    #[attr] max_len: usize,
) -> Jagged<T, S> {
    values * dense
}

/// `jagged_softmax`: softmax over the rows `i < n_b` of each sequence, per column.
#[jagged_kernel(outputs(values))]
pub fn jagged_softmax<T: Float, S>(values: Jagged<T, S>, #[attr] max_len: usize) -> Jagged<T, S> {
    values.softmax_over_seq()
}

/// `jagged_reduce` with `reduce = sum`.
#[jagged_kernel(name = "jagged_reduce", outputs(out))]
pub fn jagged_reduce_sum<T: Float, S>(
    values: Jagged<T, S>,
    #[attr] max_len: usize,
) -> PerSeq<T, S> {
    values.sum_over_seq()
}

/// `jagged_reduce` with `reduce = mean` (`sum / max(n_b, 1)`).
#[jagged_kernel(name = "jagged_reduce", outputs(out))]
pub fn jagged_reduce_mean<T: Float, S>(
    values: Jagged<T, S>,
    #[attr] max_len: usize,
) -> PerSeq<T, S> {
    values.mean_over_seq()
}

/// `jagged_reduce` with `reduce = max` (0 for an empty sequence).
#[jagged_kernel(name = "jagged_reduce", outputs(out))]
pub fn jagged_reduce_max<T: Float, S>(
    values: Jagged<T, S>,
    #[attr] max_len: usize,
) -> PerSeq<T, S> {
    values.max_over_seq()
}

/// `masked_select_jagged`: the rows whose `mask [T]` (bool or u8) is set, and
/// their offsets (stream compaction).
#[jagged_kernel(outputs(values, offsets))]
pub fn masked_select_jagged<T, S, M>(
    values: Jagged<T, S>,
    mask: Jagged<M>,
) -> (Jagged<T, S>, Offsets) {
    let kept = values.compact(mask);
    (kept, kept.offsets())
}
