//! Index expressions and comparisons in `#[jagged_kernel]`: the query and
//! key positions of pairs (`s.query_pos()`, `s.key_pos()`), a row's position
//! in its sequence (`x.row_pos()`), the lengths `x.seq_len()`, and
//! `a.lt(b)`, `a.le(b)`, `a.gt(b)`, `a.ge(b)`, `a.eq(b)`, `a.ne(b)` with
//! tensors, literals and attributes on either side, as `select`'s condition.
//! Each kernel compiles through the general path and runs on the emulator
//! like the f64 reference on adversarial lengths.

use std::sync::Arc;

use jagged::dsl::*;
use jagged::ir::{AttrValue, DType, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, check_against_reference};

/// HSTU attention under a causal sliding window `|i - j| <= window`, with an
/// ALiBi-style relative-position bias `-slope * |i - j|` on the scores.
#[jagged_kernel(outputs(out))]
fn hstu_window<T: Float, H, D, E>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, E)>,
    #[attr] max_len: usize,
    #[attr] alpha: f32,
    #[attr] window: usize,
    #[attr] slope: f32,
) -> Jagged<T, (H, E)> {
    let s = q.dot(k) * alpha;
    let dist = (s.query_pos() - s.key_pos()).abs();
    let p = silu(s - slope * dist) / max_len as f32;
    select(dist.le(window), p, 0.0).causal().dot(v)
}

/// The same window written without `.causal()`: `j <= i` and `i - j <=
/// window` as comparisons, the attribute on the left of one.
#[jagged_kernel(outputs(out))]
fn hstu_window_explicit<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    v: Jagged<T, (H, D)>,
    #[attr] max_len: usize,
    #[attr] window: f32,
) -> Jagged<T, (H, D)> {
    let s = q.dot(k);
    let i = s.query_pos();
    let j = s.key_pos();
    let p = select(j.le(i), silu(s), 0.0);
    select(window.ge(i - j), p, 0.0).dot(v)
}

/// Each row's distance to its sequence's last row, and flags built from
/// comparisons of positions, lengths, values and literals.
#[jagged_kernel(outputs(distance, second_half, positive, first))]
fn row_facts<D>(
    x: Jagged<f32, (D,)>,
    #[attr] max_len: usize,
) -> (
    Jagged<f32, ()>,
    Jagged<bool, ()>,
    Jagged<bool, (D,)>,
    Jagged<f32, (D,)>,
) {
    let i = x.row_pos();
    let n = x.seq_len();
    (
        n - 1.0 - i,
        (i + i).ge(n),
        x.gt(0.0),
        select(i.eq(0), x, select(x.ne(x), 1.0, -x)),
    )
}

/// Masks of every comparison over pairs, one per output, from tensors on
/// both sides (scores against a per-query mean).
#[jagged_kernel(outputs(lt, le, gt, ge, eq, ne))]
fn pair_comparisons<H, D>(
    q: Jagged<f32, (H, D)>,
    k: Jagged<f32, (H, D)>,
    #[attr] max_len: usize,
) -> (
    Jagged<f32, (H,)>,
    Jagged<f32, (H,)>,
    Jagged<f32, (H,)>,
    Jagged<f32, (H,)>,
    Jagged<f32, (H,)>,
    Jagged<f32, (H,)>,
) {
    let s = q.dot(k);
    let m = s.sum_over_keys() / s.seq_len().max(1.0);
    (
        s.lt(m).cast::<f32>().sum_over_keys(),
        s.le(m).cast::<f32>().sum_over_keys(),
        m.gt(s).cast::<f32>().sum_over_keys(),
        s.ge(m).cast::<f32>().sum_over_keys(),
        select(s.query_pos().eq(s.key_pos()), s, 0.0).sum_over_keys(),
        select(s.query_pos().ne(s.key_pos()), s, 0.0).sum_over_keys(),
    )
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

fn check(graph: &Graph, max_len: usize, attrs: &[(&str, AttrValue)], seed: u64) {
    let mut rt = runtime();
    let cases = check_against_reference(graph, &mut rt, max_len, attrs, &mut Rng::new(seed))
        .unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()));
    assert!(cases >= 5);
}

fn window_attrs(window: usize) -> [(&'static str, AttrValue); 3] {
    [
        ("alpha", AttrValue::Float(0.3)),
        ("window", AttrValue::Index(window)),
        ("slope", AttrValue::Float(0.25)),
    ]
}

#[test]
fn hstu_window_graph_uses_positions_and_a_comparison() {
    let g = hstu_window::graph(DType::BF16, 2, 8, 4, DType::I32).expect("graph");
    let text = g.to_string();
    assert!(text.contains("position axis 0 : f32[%1, %1]"), "{text}");
    assert!(text.contains("position axis 1 : f32[%1, %1]"), "{text}");
    assert!(text.contains("= le "), "{text}");
    assert!(text.contains("attr window : f32[]"), "{text}");
}

#[test]
fn hstu_sliding_window_with_alibi_bias_in_f32_matches_the_reference() {
    for (window, seed) in [(2, 11), (0, 12), (100, 13)] {
        let g = hstu_window::graph(DType::F32, 2, 8, 4, DType::I32).expect("graph");
        check(&g, 9, &window_attrs(window), seed);
    }
}

#[test]
fn hstu_sliding_window_with_alibi_bias_in_bf16_matches_the_reference() {
    let g = hstu_window::graph(DType::BF16, 2, 16, 8, DType::I64).expect("graph");
    check(&g, 11, &window_attrs(3), 14);
}

#[test]
fn a_window_from_comparisons_alone_matches_the_reference() {
    for (dtype, seed) in [(DType::F32, 15), (DType::BF16, 16)] {
        let g = hstu_window_explicit::graph(dtype, 2, 8, DType::I32).expect("graph");
        check(&g, 8, &[("window", AttrValue::Float(2.0))], seed);
    }
}

#[test]
fn row_positions_lengths_and_value_comparisons_match_the_reference() {
    let g = row_facts::graph(3, DType::I64).expect("graph");
    check(&g, 6, &[], 17);
}

#[test]
fn every_comparison_over_pairs_matches_the_reference() {
    let g = pair_comparisons::graph(2, 4, DType::I32).expect("graph");
    check(&g, 7, &[], 18);
}

/// The positions and lengths mean what their names say: hand-computed
/// values on lengths [3, 0, 2] (max_len 2 truncates the first to 2 rows).
#[test]
fn row_positions_and_lengths_are_hand_checked_values() {
    use jagged::ir::DenseTensor;
    let g = row_facts::graph(1, DType::I32).expect("graph");
    let offsets = DenseTensor::from_f64(DType::I32, vec![4], &[0.0, 3.0, 3.0, 5.0]).unwrap();
    let x = DenseTensor::from_f64(DType::F32, vec![5, 1], &[-1.0, 2.0, 3.0, 0.5, -4.0]).unwrap();
    let run = |max_len: usize| {
        jagged::ir::evaluate(
            &g,
            &[("offsets", &offsets), ("x", &x)],
            &[("max_len", AttrValue::Index(max_len))],
        )
        .expect("reference")
    };
    let out = run(8);
    assert_eq!(out["distance"].to_f64(), [2.0, 1.0, 0.0, 1.0, 0.0]);
    assert_eq!(out["second_half"].to_f64(), [0.0, 0.0, 1.0, 0.0, 1.0]);
    assert_eq!(out["positive"].to_f64(), [0.0, 1.0, 1.0, 1.0, 0.0]);
    assert_eq!(out["first"].to_f64(), [-1.0, -2.0, -3.0, 0.5, 4.0]);
    let out = run(2);
    assert_eq!(out["distance"].to_f64(), [1.0, 0.0, 0.0, 1.0, 0.0]);
}

/// Positions of a padded tensor's rows, lengths against per-sequence sums,
/// and the lengths of pairs.
#[jagged_kernel(outputs(late, busy, keys))]
fn padded_and_per_sequence<D>(
    x: Jagged<f32, (D,)>,
    p: Padded<f32, (D,)>,
    #[attr] max_len: usize,
) -> (Padded<f32, (D,)>, PerSeq<bool, (D,)>, Jagged<f32, ()>) {
    let s = x.dot(x);
    (
        select(p.row_pos().ge(2), p, -1.0),
        x.sum_over_seq().gt(x.seq_len()),
        (s.seq_len() - s.key_pos()).sum_over_keys(),
    )
}

#[test]
fn padded_positions_and_per_sequence_comparisons_match_the_reference() {
    let g = padded_and_per_sequence::graph(3, DType::I32).expect("graph");
    let text = g.to_string();
    assert!(text.contains("position axis 1 : f32[B, N]"), "{text}");
    check(&g, 6, &[], 19);
}

/// The sliding window with a RMS-normed, weighted query, generated inside
/// the macro for bf16: `specialize(...)` applies the same steps (positions,
/// comparisons, lengths, dense weights, feature reductions) as `graph`.
#[jagged_kernel(
    outputs(out),
    specialize(T = [bf16], H = [2], D = [16], offsets = [i32], max_len = [8], arch = [sm_80])
)]
fn window_aot<T: Float, H, D>(
    q: Jagged<T, (H, D)>,
    k: Jagged<T, (H, D)>,
    g: Dense<T, (H, D)>,
    #[attr] max_len: usize,
    #[attr] window: usize,
) -> Jagged<T, (H, D)> {
    let inv_rms = (q * q).mean_over_features().cast::<f32>().rsqrt();
    let s = (q * g).dot_acc::<f32>(k) * inv_rms / max_len as f32;
    let near = (s.query_pos() - s.key_pos()).le(window);
    let last = s.key_pos().lt(s.seq_len() - 1.0);
    select(near, select(last, s, 0.0), 0.0)
        .causal()
        .dot(k.cast::<f32>())
        .cast::<T>()
}

#[test]
fn specialized_index_expressions_match_the_graph() {
    use jagged::codegen::{Arch, Spec};
    assert_eq!(window_aot::SPECIALIZED.len(), 1);
    let graph = window_aot::graph(DType::BF16, 2, 16, DType::I32).expect("graph");
    let spec = Spec::for_graph(&graph, 8, Arch::Sm80).expect("spec");
    let entry = &window_aot::SPECIALIZED[0];
    assert_eq!(entry.graph, graph.to_string());
    assert_eq!(entry.spec, spec.to_string());
    let kernel = jagged::codegen::compile(&graph, &spec).expect("compile");
    assert_eq!(entry.kernel, kernel.to_text());
    check(&graph, 8, &[("window", AttrValue::Index(2))], 20);
}
