//! Prints the canonical text (`.jir`) of the `#[jagged_kernel]` graphs the
//! GPU benchmarks launch, one file each, for `jagc emit --graph FILE.jir
//! --plan` (bench/gpu/prepare_side_events.sh). `jagc emit` has builtin
//! names for some of them (residual_quantize's greedy level,
//! product_quantize, event_boost, session_pool, masked_select_jagged,
//! complete_cumsum): the prepare script emits those by name and checks the
//! PTX equals the one of the file printed here, whose `input` lines give
//! the graph's input order (`inputN` in the launch plan). The others have
//! no builtin name: session_segment, event_prune, the beam-search levels of
//! residual_quantize and residual_quantize_best.
//!
//! usage: side-graphs OUT_DIR SPEC...
//!   rq_level:K:D:L        greedy residual_quantize level, f32
//!   rq_beam:K:D:L:BEAM    the beam levels (one file per kept count) and best
//!   pq:M:K:S              product_quantize, f32
//!   session_segment       f32 timestamps, i32 offsets
//!   event_prune_topk      by rank only, f32 scores, i32 offsets
//!   event_prune_topk_features:D
//!                         the same with the compaction of an f32 [T, D] and
//!                         an i32 [T] feature in the graph, as the front
//!                         function `event_prune` builds it (its private
//!                         `with_features`, replicated here)
//!   event_boost:D:G:C     f32 values, i32 segment / cond, u8 columns
//!   session_pool_sum:D    f32 values, i32 offsets
//!   masked_select:f32:D   (or i32:0 for a [T] tensor), u8 mask
//!   complete_cumsum       i32 lengths

use std::error::Error;
use std::fs;
use std::path::Path;

use jagged::ir::{DType, Graph, GraphBuilder, TensorType, Type};
use jagged::ops::events::{
    event_boost_flat, event_prune_kernel, session_pool_sum, session_segment_float,
};
use jagged::ops::quantize::{
    product_quantize_kernel, residual_quantize_beam_level, residual_quantize_best,
    residual_quantize_level,
};
use jagged::ops::{complete_cumsum, masked_select_jagged};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((out, specs)) = args.split_first() else {
        return Err("usage: side-graphs OUT_DIR SPEC...".into());
    };
    let out = Path::new(out);
    fs::create_dir_all(out)?;
    let write = |name: &str, graph: Graph| -> Result<(), Box<dyn Error>> {
        let path = out.join(format!("{name}.jir"));
        fs::write(&path, graph.to_string())?;
        println!("wrote {}", path.display());
        Ok(())
    };
    let f32_ = DType::F32;
    let i32_ = DType::I32;
    for spec in specs {
        let parts: Vec<&str> = spec.split(':').collect();
        let num = |i: usize| -> Result<usize, Box<dyn Error>> {
            Ok(parts
                .get(i)
                .ok_or_else(|| format!("{spec}: missing field {i}"))?
                .parse()?)
        };
        match parts[0] {
            "rq_level" => {
                let (k, d, l) = (num(1)?, num(2)?, num(3)?);
                write(
                    &format!("rq_level_k{k}_d{d}_l{l}"),
                    residual_quantize_level::graph(f32_, f32_, k, d, l, i32_)?,
                )?;
            }
            "rq_beam" => {
                let (k, d, l, beam) = (num(1)?, num(2)?, num(3)?, num(4)?);
                // Kept partial encodings: 1 at level 0, then min(beam, K^l).
                let mut kept = 1;
                let mut done = Vec::new();
                for _ in 0..l {
                    let next = beam.min(kept * k);
                    if !done.contains(&(kept, next)) {
                        write(
                            &format!("rq_beam_k{k}_d{d}_l{l}_bi{kept}_bo{next}"),
                            residual_quantize_beam_level::graph(
                                f32_,
                                f32_,
                                kept,
                                d,
                                k,
                                kept * k,
                                next,
                                l,
                                i32_,
                            )?,
                        )?;
                        done.push((kept, next));
                    }
                    kept = next;
                }
                write(
                    &format!("rq_beam_best_bo{kept}_l{l}"),
                    residual_quantize_best::graph(kept, l, i32_)?,
                )?;
            }
            "pq" => {
                let (m, k, s) = (num(1)?, num(2)?, num(3)?);
                write(
                    &format!("pq_m{m}_k{k}_s{s}"),
                    product_quantize_kernel::graph(f32_, m, k, s, i32_)?,
                )?;
            }
            "session_segment" => write(
                "session_segment",
                session_segment_float::graph(f32_, i32_, f32_, false, i32_)?,
            )?,
            "event_prune_topk" => write(
                "event_prune_topk",
                event_prune_kernel::graph(f32_, i32_, false, true, i32_)?,
            )?,
            "event_prune_topk_features" => {
                let d = num(1)?;
                let selection = event_prune_kernel::graph(f32_, i32_, false, true, i32_)?;
                write(
                    &format!("event_prune_topk_features_d{d}"),
                    with_features(&selection, &[(f32_, vec![d]), (i32_, vec![])])?,
                )?;
            }
            "event_boost" => {
                let (d, g, c) = (num(1)?, num(2)?, num(3)?);
                write(
                    &format!("event_boost_d{d}_g{g}_c{c}"),
                    event_boost_flat::graph(f32_, d, g * c, i32_, DType::U8, i32_)?,
                )?;
            }
            "session_pool_sum" => {
                let d = num(1)?;
                write(
                    &format!("session_pool_sum_d{d}"),
                    session_pool_sum::graph(f32_, &[d], i32_)?,
                )?;
            }
            "masked_select" => {
                let dtype = match parts.get(1).copied() {
                    Some("i32") => i32_,
                    _ => f32_,
                };
                let d = num(2)?;
                let inner: &[usize] = if d == 0 { &[] } else { &[d] };
                write(
                    &format!("masked_select_{}_d{d}", parts[1]),
                    masked_select_jagged::graph(dtype, inner, DType::U8, i32_)?,
                )?;
            }
            "complete_cumsum" => write("complete_cumsum", complete_cumsum::graph(i32_)?)?,
            other => return Err(format!("unknown spec `{other}`").into()),
        }
    }
    Ok(())
}

/// `selection` (an `event_prune_kernel` graph) with an input `feature{k}`
/// per feature (dtype, inner dims) on the scores' sequences and an output
/// of the same name, its rows compacted with the indices' (the mask output
/// left out): src/ops/events.rs's `with_features`, which is private.
fn with_features(selection: &Graph, features: &[(DType, Vec<usize>)]) -> Result<Graph, Box<dyn Error>> {
    let output = |name: &str| selection.outputs().iter().find(|o| o.name == name);
    let kept_set = output("indices").and_then(|o| match selection.type_of(o.value) {
        Type::Tensor(t) => t.seqs(),
        Type::Seqs => None,
    });
    let rows = selection
        .inputs()
        .find(|(_, n, _)| *n == "scores")
        .and_then(|(_, _, t)| t.seqs());
    let (Some(kept_set), Some(rows)) = (kept_set, rows) else {
        return Err("event_prune graph without `indices` or `scores`".into());
    };
    let mut b = GraphBuilder::extending(
        &selection.with_outputs(
            selection
                .outputs()
                .iter()
                .filter(|o| o.name != "mask")
                .cloned()
                .collect(),
        ),
    );
    for (k, (dtype, inner)) in features.iter().enumerate() {
        let name = format!("feature{k}");
        let x = b.input(&name, TensorType::jagged(*dtype, rows, inner));
        let c = b.compact(x, kept_set);
        b.output(name, c);
    }
    Ok(b.finish()?)
}
