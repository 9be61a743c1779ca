//! The DSL's line methods, `descending_rank_over_seq` /
//! `ascending_rank_over_seq` and `shift_rows`, in the kernels an event
//! pipeline writes with them: a per-sequence top-k kept in order, the gap
//! to the previous event, and session starts; each through the general
//! path on the emulator against the f64 reference.

use std::sync::Arc;

use jagged::dsl::*;
use jagged::ir::{DType, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, check_against_reference};

/// The features of each sequence's 4 highest-scoring events, in their order.
#[jagged_kernel(outputs(kept, kept_offsets))]
fn top4_events<T: Float, S>(score: Jagged<T, ()>, x: Jagged<T, S>) -> (Jagged<T, S>, Offsets) {
    let kept = x.compact(score.descending_rank_over_seq().lt(4));
    (kept, kept.offsets())
}

/// The 2 nearest events (smallest distance) of each sequence.
#[jagged_kernel(outputs(kept, kept_offsets))]
fn nearest2<S>(dist: Jagged<f32, ()>, x: Jagged<f32, S>) -> (Jagged<f32, S>, Offsets) {
    let kept = x.compact(dist.ascending_rank_over_seq().lt(2));
    (kept, kept.offsets())
}

/// The gap to the previous event of the same sequence (the first event's
/// gap is its own timestamp: the row before it reads 0).
#[jagged_kernel(outputs(gap))]
fn gap_to_previous<T: Float>(time: Jagged<T, ()>) -> Jagged<T, ()> {
    time - time.shift_rows(-1)
}

/// 1 where a session starts: the sequence's first event, or a gap to the
/// previous event above `gap`; and the time to the next event.
#[jagged_kernel(outputs(start, to_next))]
fn session_starts(t: Jagged<f32, ()>, #[attr] gap: f32) -> (Jagged<f32, ()>, Jagged<f32, ()>) {
    let first = t.row_pos().lt(0.5f32);
    let late = (t - t.shift_rows(-1)).gt(gap).cast::<f32>();
    (select(first, 1.0f32, late), t.shift_rows(1) - t)
}

/// docs/writing-an-op.md's example, as written there.
#[jagged_kernel(outputs(start, kept, kept_offsets))]
fn starts_and_top3(
    time: Jagged<f32, ()>,
    score: Jagged<f32, ()>,
    #[attr] gap: f32,
) -> (Jagged<f32, ()>, Jagged<f32, ()>, Offsets) {
    let first = time.row_pos().lt(0.5f32);
    let late = (time - time.shift_rows(-1)).gt(gap).cast::<f32>();
    let kept = score.compact(score.descending_rank_over_seq().lt(3));
    (select(first, 1.0f32, late), kept, kept.offsets())
}

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

fn check(graph: &Graph, attrs: &[(&str, jagged::ir::AttrValue)], seed: u64) {
    let mut rt = runtime();
    let cases = check_against_reference(graph, &mut rt, 19, attrs, &mut Rng::new(seed))
        .unwrap_or_else(|e| panic!("{}: {e}\n{graph}", graph.name()));
    assert!(cases >= 5);
}

#[test]
fn top_k_by_rank_compiles_and_runs() {
    for (dtype, index) in [(DType::F32, DType::I32), (DType::BF16, DType::I64)] {
        check(
            &top4_events::graph(dtype, &[3], index).expect("graph"),
            &[],
            1,
        );
    }
    check(&nearest2::graph(&[5], DType::I32).expect("graph"), &[], 2);
}

#[test]
fn shifted_rows_compile_and_run() {
    check(
        &gap_to_previous::graph(DType::F32, DType::I64).expect("graph"),
        &[],
        3,
    );
    check(
        &session_starts::graph(DType::I32).expect("graph"),
        &[("gap", jagged::ir::AttrValue::Float(0.5))],
        4,
    );
}

#[test]
fn the_graphs_hold_the_line_ops() {
    let g = top4_events::graph(DType::F32, &[3], DType::I32).expect("graph");
    assert!(g.to_string().contains("rank descending"), "{g}");
    let g = gap_to_previous::graph(DType::F32, DType::I32).expect("graph");
    assert!(g.to_string().contains("by -1"), "{g}");
}

#[test]
fn the_guide_example_compiles_and_runs() {
    check(
        &starts_and_top3::graph(DType::I64).expect("graph"),
        &[("gap", jagged::ir::AttrValue::Float(0.25))],
        5,
    );
}
