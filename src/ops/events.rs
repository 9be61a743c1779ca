//! OPS.md "event streams" (issue 11): ops over users' event streams cut into
//! sessions, each a `#[jagged_kernel]`, and their front functions.
//!
//! | op | inputs | DSL |
//! |---|---|---|
//! | `session_pool` | `values [T, ...]`, `session_offsets [S+1]` | `values.sum_over_seq()` / `mean_over_seq()` / `max_over_seq()` over the sessions |
//! | `user_pool` | `pooled [S, ...]`, `user_offsets [B+1]` | the same over each user's sessions |
//! | `event_boost` | `values [T, D]`, `offsets [B+1]`, `segment [B]`, `cond [T]`, `table [G, C]`, `columns [D]` | `values * select(columns.ne(0), table.at(segment * C + cond), 1)`, factor 1 outside the table |
//! | `event_boost` per session ([`event_boost_sessions`]) | a nested tensor, `segment [B]`, `cond [S]`, `table`, `columns` | the factor per session over `user_offsets` ([`session_boost_factors`](mod@session_boost_factors)), then the boost over `session_offsets` ([`boost_sessions`](mod@boost_sessions)) |
//! | `session_segment` ([`session_segment`]) | `timestamps [T]`, `offsets [B+1]`, `gap` | starts where `(t - t.shift_rows(-1)).gt(gap)` or at row 0; the starts' positions compacted into session lengths (their offsets: `user_offsets`), then `complete_cumsum` |
//! | `jagged_topk` ([`jagged_topk`]) | `scores [T]`, `offsets [B+1]`, `k` | `rows.compact(scores.descending_rank_over_seq().lt(k))` |
//! | `event_prune` ([`event_prune`]) | `scores [T]`, `offsets [B+1]`, features, `threshold`, `k` | the same rank and/or `scores.ge(threshold)`; the features compacted over its kept set in the same graph (one copy kernel for all) |
//!
//! A nested tensor (sessions within users, [`crate::nested`]) pools in two
//! launches, [`nested_pool`]: its sessions over `session_offsets`
//! (`[S, ...]`), then those per user over `user_offsets` (`[B, ...]`); both
//! levels are checked first, and a bad one is a [`NestedError`] naming it.
//!
//! No op here truncates: sessions and users have no `max_len`, every row
//! counts. Values are f32, f16 or bf16 (f64 is computed in f32 by the
//! kernels, as elsewhere), offsets i32 or i64; docs/ops.md ("Event
//! streams") has the exact semantics.

use jagged_ir::{AttrValue, DType, DenseTensor, Graph, GraphBuilder, TensorType};
use jagged_runtime::{DeviceTensor, Runtime};

use super::KernelError;
use super::dsl::*;
use crate::nested::{self, Level, NestedError, NestedJagged};

/// `session_pool` with `reduce = sum`: per session, the sum of its rows
/// (0 for an empty session).
#[jagged_kernel(name = "session_pool", outputs(out))]
pub fn session_pool_sum<T: Float, S>(
    values: Jagged<T, S>,
    session_offsets: Offsets,
) -> PerSeq<T, S> {
    values.sum_over_seq()
}

/// `session_pool` with `reduce = mean`: `sum / max(L_s, 1)`.
#[jagged_kernel(name = "session_pool", outputs(out))]
pub fn session_pool_mean<T: Float, S>(
    values: Jagged<T, S>,
    session_offsets: Offsets,
) -> PerSeq<T, S> {
    values.mean_over_seq()
}

/// `session_pool` with `reduce = max` (0 for an empty session).
#[jagged_kernel(name = "session_pool", outputs(out))]
pub fn session_pool_max<T: Float, S>(
    values: Jagged<T, S>,
    session_offsets: Offsets,
) -> PerSeq<T, S> {
    values.max_over_seq()
}

/// `user_pool` with `reduce = sum`: per user, the sum of its sessions'
/// pooled rows `pooled [S, ...]` (0 for a user without sessions).
#[jagged_kernel(name = "user_pool", outputs(out))]
pub fn user_pool_sum<T: Float, S>(pooled: Jagged<T, S>, user_offsets: Offsets) -> PerSeq<T, S> {
    pooled.sum_over_seq()
}

/// `user_pool` with `reduce = mean` over the user's sessions.
#[jagged_kernel(name = "user_pool", outputs(out))]
pub fn user_pool_mean<T: Float, S>(pooled: Jagged<T, S>, user_offsets: Offsets) -> PerSeq<T, S> {
    pooled.mean_over_seq()
}

/// `user_pool` with `reduce = max` over the user's sessions (0 without any).
#[jagged_kernel(name = "user_pool", outputs(out))]
pub fn user_pool_max<T: Float, S>(pooled: Jagged<T, S>, user_offsets: Offsets) -> PerSeq<T, S> {
    pooled.max_over_seq()
}

/// `event_boost` on a flattened table: `values [T, D]` of users' events on
/// `offsets [B+1]`, `segment [B]` and `cond [T]` integers (the offsets'
/// index dtype or another), `table [K]` the `[segments, conditions]` table
/// row-major (`K = segments * conditions`), `columns [D]` a mask (nonzero:
/// boosted). Event `i` of user `b` gets `factor = table[segment[b] *
/// conditions + cond[i]]` when `0 <= segment[b] < segments` and `0 <=
/// cond[i] < conditions`, else 1; the masked columns are multiplied by it,
/// the others copied.
#[jagged_kernel(name = "event_boost", outputs(values))]
pub fn event_boost_flat<T: Float, D, K, I: Index, M>(
    values: Jagged<T, (D,)>,
    segment: PerSeq<I>,
    cond: Jagged<I>,
    table: Dense<T, (K,)>,
    columns: Dense<M, (D,)>,
    #[attr] segments: usize,
    #[attr] conditions: usize,
) -> Jagged<T, (D,)> {
    // `a and b` is `select(a, b, a)`.
    let seg_ok = select(segment.ge(0), segment.lt(segments), segment.ge(0));
    let cond_ok = select(cond.ge(0), cond.lt(conditions), cond.ge(0));
    let known = select(seg_ok, cond_ok, seg_ok);
    let index = segment.cast::<i64>() * conditions + cond.cast::<i64>();
    let factor = select(known, table.at(index), 1.0);
    // x * 1 is x exactly: one read of the values.
    values * select(columns.ne(0), factor, 1.0)
}

/// `event_boost` with a condition per session, step 1: per session `s` of
/// user `b` (`cond [S]` as a jagged tensor on `user_offsets`), the factor
/// `table[segment[b] * conditions + cond[s]]`, 1 out of range (as
/// [`event_boost_flat`](mod@event_boost_flat)).
#[jagged_kernel(name = "session_boost_factors", outputs(factor))]
pub fn session_boost_factors<T: Float, K, I: Index>(
    cond: Jagged<I>,
    segment: PerSeq<I>,
    table: Dense<T, (K,)>,
    user_offsets: Offsets,
    #[attr] segments: usize,
    #[attr] conditions: usize,
) -> Jagged<T> {
    let seg_ok = select(segment.ge(0), segment.lt(segments), segment.ge(0));
    let cond_ok = select(cond.ge(0), cond.lt(conditions), cond.ge(0));
    let known = select(seg_ok, cond_ok, seg_ok);
    let index = segment.cast::<i64>() * conditions + cond.cast::<i64>();
    select(known, table.at(index), 1.0)
}

/// `event_boost` with a condition per session, step 2: the masked columns
/// of every event of session `s` (`values` on `session_offsets`) times
/// `factor[s]`.
#[jagged_kernel(name = "boost_sessions", outputs(values))]
pub fn boost_sessions<T: Float, D, M>(
    values: Jagged<T, (D,)>,
    factor: PerSeq<T>,
    columns: Dense<M, (D,)>,
    session_offsets: Offsets,
) -> Jagged<T, (D,)> {
    // x * 1 is x exactly: one read of the values.
    values * select(columns.ne(0), factor, 1.0)
}

/// `session_pool` and `user_pool`'s `reduce`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// The sum (0 when empty).
    Sum,
    /// `sum / max(n, 1)`.
    Mean,
    /// The maximum (0 when empty).
    Max,
}

impl Reduce {
    /// Every reduction.
    pub const ALL: [Reduce; 3] = [Reduce::Sum, Reduce::Mean, Reduce::Max];

    /// OPS.md's name (`sum`, `mean`, `max`).
    pub fn name(self) -> &'static str {
        match self {
            Reduce::Sum => "sum",
            Reduce::Mean => "mean",
            Reduce::Max => "max",
        }
    }

    /// The reduction named `name`.
    pub fn from_name(name: &str) -> Option<Reduce> {
        Reduce::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The graph of `session_pool` for values of `dtype` and inner dims
/// `inner`, offsets of `index`.
pub fn session_pool_graph(
    reduce: Reduce,
    dtype: DType,
    inner: &[usize],
    index: DType,
) -> Result<jagged_ir::Graph, KernelError> {
    match reduce {
        Reduce::Sum => session_pool_sum::graph(dtype, inner, index),
        Reduce::Mean => session_pool_mean::graph(dtype, inner, index),
        Reduce::Max => session_pool_max::graph(dtype, inner, index),
    }
}

/// The graph of `user_pool` (as [`session_pool_graph`]).
pub fn user_pool_graph(
    reduce: Reduce,
    dtype: DType,
    inner: &[usize],
    index: DType,
) -> Result<jagged_ir::Graph, KernelError> {
    match reduce {
        Reduce::Sum => user_pool_sum::graph(dtype, inner, index),
        Reduce::Mean => user_pool_mean::graph(dtype, inner, index),
        Reduce::Max => user_pool_max::graph(dtype, inner, index),
    }
}

/// `session_pool` (OPS.md): `values [T, ...]` on `session_offsets [S+1]`
/// to `out [S, ...]`, each session reduced over all its rows.
pub fn session_pool(
    rt: &mut Runtime,
    values: &DeviceTensor,
    session_offsets: &DeviceTensor,
    reduce: Reduce,
) -> Result<DeviceTensor, KernelError> {
    match reduce {
        Reduce::Sum => session_pool_sum::launch(rt, values, session_offsets),
        Reduce::Mean => session_pool_mean::launch(rt, values, session_offsets),
        Reduce::Max => session_pool_max::launch(rt, values, session_offsets),
    }
}

/// `user_pool`: `pooled [S, ...]` (one row per session) on `user_offsets
/// [B+1]` (session indices) to `out [B, ...]`.
pub fn user_pool(
    rt: &mut Runtime,
    pooled: &DeviceTensor,
    user_offsets: &DeviceTensor,
    reduce: Reduce,
) -> Result<DeviceTensor, KernelError> {
    match reduce {
        Reduce::Sum => user_pool_sum::launch(rt, pooled, user_offsets),
        Reduce::Mean => user_pool_mean::launch(rt, pooled, user_offsets),
        Reduce::Max => user_pool_max::launch(rt, pooled, user_offsets),
    }
}

/// Why an event-stream op failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The nested tensor's offsets are invalid (the error names the level).
    #[error(transparent)]
    Nested(#[from] NestedError),
    /// A kernel (its graph, inputs or launch) failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// An input of the wrong shape or dtype.
    #[error("input `{input}`: {reason}")]
    Input {
        /// The input.
        input: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl From<jagged_runtime::RuntimeError> for EventsError {
    fn from(e: jagged_runtime::RuntimeError) -> Self {
        EventsError::Kernel(KernelError::Run(e.into()))
    }
}

/// A nested jagged tensor on the device: `values [T, ...]`,
/// `session_offsets [S+1]` (event rows), `user_offsets [B+1]` (session
/// indices). [`DeviceNested::upload`] copies a checked [`NestedJagged`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNested {
    /// The events.
    pub values: DeviceTensor,
    /// The sessions' event rows.
    pub session_offsets: DeviceTensor,
    /// The users' session indices.
    pub user_offsets: DeviceTensor,
}

impl DeviceNested {
    /// Uploads a host nested tensor.
    pub fn upload(rt: &mut Runtime, host: &NestedJagged) -> Result<DeviceNested, EventsError> {
        Ok(DeviceNested {
            values: rt.upload_tensor(host.values())?,
            session_offsets: rt.upload_tensor(host.session_offsets())?,
            user_offsets: rt.upload_tensor(host.user_offsets())?,
        })
    }

    /// Downloads and checks both levels' offsets (as [`NestedJagged::new`]);
    /// returns `(session_offsets, user_offsets)` as indices.
    pub fn check(&self, rt: &mut Runtime) -> Result<(Vec<usize>, Vec<usize>), EventsError> {
        let events = *self
            .values
            .shape
            .first()
            .ok_or_else(|| EventsError::Input {
                input: "values",
                reason: format!("shape {:?}, expected [T, ...]", self.values.shape),
            })?;
        let entries = |rt: &mut Runtime, level: Level, t: &DeviceTensor| {
            let host = rt.download_tensor(t)?;
            host.data()
                .to_i64()
                .filter(|_| host.shape().len() == 1)
                .ok_or(EventsError::Nested(NestedError::OffsetsType {
                    level,
                    dtype: host.dtype(),
                    shape: host.shape().to_vec(),
                }))
        };
        let s = entries(rt, Level::Sessions, &self.session_offsets)?;
        let u = entries(rt, Level::Users, &self.user_offsets)?;
        Ok(nested::check_nested(events, &s, &u)?)
    }

    /// The flat form's offsets on the device, `event_offsets[b] =
    /// session_offsets[user_offsets[b]]` (the session offsets' dtype),
    /// after checking both levels.
    pub fn event_offsets(&self, rt: &mut Runtime) -> Result<DeviceTensor, EventsError> {
        let (sessions, users) = self.check(rt)?;
        let rows = nested::event_offsets_of(&sessions, &users);
        let values: Vec<f64> = rows.iter().map(|&r| r as f64).collect();
        let host = DenseTensor::from_f64(self.session_offsets.dtype(), vec![rows.len()], &values)
            .map_err(|e| EventsError::Kernel(KernelError::Run(e.into())))?;
        Ok(rt.upload_tensor(&host)?)
    }
}

/// Pools a nested tensor: its sessions (`session_reduce` over each
/// session's events, `[S, ...]`) and its users (`user_reduce` over each
/// user's pooled sessions, `[B, ...]`). Both levels' offsets are checked
/// before any kernel runs. With `Sum` at both levels a user's row is the
/// sum of its events; `Mean` of `Mean` is the mean of its sessions' means
/// (not of its events); `Max` at the user level counts an empty session as
/// 0, its pooled value.
pub fn nested_pool(
    rt: &mut Runtime,
    nested: &DeviceNested,
    session_reduce: Reduce,
    user_reduce: Reduce,
) -> Result<(DeviceTensor, DeviceTensor), EventsError> {
    nested.check(rt)?;
    let sessions = session_pool(rt, &nested.values, &nested.session_offsets, session_reduce)?;
    let users = user_pool(rt, &sessions, &nested.user_offsets, user_reduce)?;
    Ok((sessions, users))
}

/// The graph of `event_boost` for values `[T, d]` of `dtype`, a table of
/// `k = segments * conditions` entries, `segment` / `cond` of `index_dtype`,
/// a `columns` mask of `mask_dtype` and offsets of `offsets`.
pub fn event_boost_graph(
    dtype: DType,
    d: usize,
    k: usize,
    index_dtype: DType,
    mask_dtype: DType,
    offsets: DType,
) -> Result<jagged_ir::Graph, KernelError> {
    event_boost_flat::graph(dtype, d, k, index_dtype, mask_dtype, offsets)
}

/// `event_boost` (docs/ops.md): `values [T, D]` of users' events on
/// `offsets [B+1]`; `segment [B]` and `cond [T]` (i32 or i64, the same
/// dtype); `table [G, C]` of the values' dtype; `columns [D]` (u8, bool
/// or a float: nonzero columns are boosted). Returns `out [T, D]` with
/// `out[i, d] = values[i, d] * table[segment[b], cond[i]]` for the masked
/// columns `d` of each event `i` of user `b`, and `values[i, d]` for the
/// others; a `segment[b]` outside `0..G` or a `cond[i]` outside `0..C`
/// gives the factor 1 (no boost).
pub fn event_boost(
    rt: &mut Runtime,
    values: &DeviceTensor,
    offsets: &DeviceTensor,
    segment: &DeviceTensor,
    cond: &DeviceTensor,
    table: &DeviceTensor,
    columns: &DeviceTensor,
) -> Result<DeviceTensor, EventsError> {
    let &[g, c] = &table.shape[..] else {
        return Err(EventsError::Input {
            input: "table",
            reason: format!("shape {:?}, expected [G, C]", table.shape),
        });
    };
    let flat = DeviceTensor {
        buffer: table.buffer.clone(),
        shape: vec![g * c],
    };
    Ok(event_boost_flat::launch(
        rt, offsets, values, segment, cond, &flat, columns, g, c,
    )?)
}

/// A `columns` mask `[d]` (u8) with the listed columns set, on the device;
/// a column `>= d` is an error.
pub fn column_mask(
    rt: &mut Runtime,
    d: usize,
    columns: &[usize],
) -> Result<DeviceTensor, EventsError> {
    let mut mask = vec![0.0; d];
    for &col in columns {
        *mask.get_mut(col).ok_or_else(|| EventsError::Input {
            input: "columns",
            reason: format!("column {col} of values with {d} columns"),
        })? = 1.0;
    }
    let host = DenseTensor::from_f64(DType::U8, vec![d], &mask)
        .map_err(|e| EventsError::Kernel(KernelError::Run(e.into())))?;
    Ok(rt.upload_tensor(&host)?)
}

/// `event_boost` with the condition given per session of a nested tensor:
/// `cond [S]` (i32 or i64, `segment [B]`'s dtype), the factor of every
/// event of session `s` of user `b` is `table[segment[b], cond[s]]` (1 out
/// of range), applied to the `columns` as [`event_boost`] does. Both
/// levels are checked first. Two kernels: the factor per session (over
/// `user_offsets`), then the boost (over `session_offsets`).
pub fn event_boost_sessions(
    rt: &mut Runtime,
    nested: &DeviceNested,
    segment: &DeviceTensor,
    cond: &DeviceTensor,
    table: &DeviceTensor,
    columns: &DeviceTensor,
) -> Result<DeviceTensor, EventsError> {
    let &[g, c] = &table.shape[..] else {
        return Err(EventsError::Input {
            input: "table",
            reason: format!("shape {:?}, expected [G, C]", table.shape),
        });
    };
    nested.check(rt)?;
    let flat = DeviceTensor {
        buffer: table.buffer.clone(),
        shape: vec![g * c],
    };
    let factor =
        session_boost_factors::launch(rt, cond, segment, &flat, &nested.user_offsets, g, c)?;
    let out = boost_sessions::launch(
        rt,
        &nested.values,
        &factor,
        columns,
        &nested.session_offsets,
    );
    rt.free(factor.buffer)?;
    Ok(out?)
}

/// `session_segment` on float timestamps, step 1: per sequence (a user's
/// events, in time order), a session starts at the first event and
/// wherever `t_i - t_{i-1} > gap`. Outputs each session's length (`[S]`,
/// one row per start, on the compacted sequences whose offsets are the
/// `user_offsets [B+1]`) and `dwell_i = t_{i+1} - t_i` within a session, 0
/// at its last event. Step 2, [`session_segment`]: `session_offsets` is the
/// complete cumsum of the lengths.
///
/// With the static `by_surface`, a session also starts where the event's
/// `surface` differs from the previous event's (and so ends where the next
/// one's differs); without it `surface` is not read (any tensor aligned
/// with the events will do: the front function passes the timestamps).
#[jagged_kernel(name = "session_segment", outputs(lengths, user_offsets, dwell))]
pub fn session_segment_float<T: Float, I: Index, U>(
    timestamps: Jagged<T>,
    surface: Jagged<U>,
    #[attr] gap: f32,
    #[attr(static)] by_surface: bool,
) -> (Jagged<I>, Offsets, Jagged<T>) {
    let pos = timestamps.row_pos();
    let n = timestamps.seq_len();
    let first = pos.eq(0);
    let last = pos.eq(n - 1);
    let moved = if by_surface {
        surface.ne(surface.shift_rows(-1))
    } else {
        first
    };
    let moves = if by_surface {
        surface.shift_rows(1).ne(surface)
    } else {
        last
    };
    let late = (timestamps - timestamps.shift_rows(-1)).gt(gap);
    let start = select(first, first, select(moved, moved, late));
    let to_next = timestamps.shift_rows(1) - timestamps;
    let ends = select(last, last, select(moves, moves, to_next.gt(gap)));
    let dwell = select(ends, 0.0, to_next);
    // The starts' positions; a session runs to the next start (or the end).
    let kept = pos.compact(start);
    let next = select(kept.row_pos().eq(kept.seq_len() - 1), n, kept.shift_rows(1));
    let lengths = (next - kept).cast::<I>();
    (lengths, kept.offsets(), dwell)
}

/// [`session_segment_float`](mod@session_segment_float) on i64 timestamps,
/// `gap` an integer.
#[jagged_kernel(name = "session_segment", outputs(lengths, user_offsets, dwell))]
pub fn session_segment_int<I: Index, U>(
    timestamps: Jagged<i64>,
    surface: Jagged<U>,
    #[attr] gap: usize,
    #[attr(static)] by_surface: bool,
) -> (Jagged<I>, Offsets, Jagged<i64>) {
    let pos = timestamps.row_pos();
    let n = timestamps.seq_len();
    let first = pos.eq(0);
    let last = pos.eq(n - 1);
    let moved = if by_surface {
        surface.ne(surface.shift_rows(-1))
    } else {
        first
    };
    let moves = if by_surface {
        surface.shift_rows(1).ne(surface)
    } else {
        last
    };
    let late = (timestamps - timestamps.shift_rows(-1)).gt(gap);
    let start = select(first, first, select(moved, moved, late));
    let to_next = timestamps.shift_rows(1) - timestamps;
    let ends = select(last, last, select(moves, moves, to_next.gt(gap)));
    let dwell = select(ends, 0, to_next);
    let kept = pos.compact(start);
    let next = select(kept.row_pos().eq(kept.seq_len() - 1), n, kept.shift_rows(1));
    let lengths = (next - kept).cast::<I>();
    (lengths, kept.offsets(), dwell)
}

/// The sessions of users' event streams ([`session_segment`]): with the
/// events' values, a nested tensor ([`DeviceNested`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sessions {
    /// `[S+1]`, event rows (the offsets' dtype).
    pub session_offsets: DeviceTensor,
    /// `[B+1]`, session indices (the offsets' dtype).
    pub user_offsets: DeviceTensor,
    /// `[T]`, the timestamps' dtype: the time to the next event of the
    /// same session, 0 at a session's last event.
    pub dwell: DeviceTensor,
}

/// `session_segment` (docs/ops.md): `timestamps [T]` (f32, f64 or i64; each
/// user's events in time order) on `offsets [B+1]`; a new session starts
/// at a user's first event and wherever `t_i - t_{i-1} > gap`, and, given
/// a `surface [T]` per event (any dtype), wherever the surface changes. Returns the
/// sessions' event offsets, the users' session offsets (no session spans
/// two users, an empty user has none) and the dwell times. For i64
/// timestamps `gap` must be `>= 0` and is rounded down (the same sessions);
/// it reaches the kernel as an f32 (exact below 2^24). Two kernels: the
/// starts, dwell times and session lengths, then `complete_cumsum`.
pub fn session_segment(
    rt: &mut Runtime,
    timestamps: &DeviceTensor,
    offsets: &DeviceTensor,
    gap: f64,
    surface: Option<&DeviceTensor>,
) -> Result<Sessions, EventsError> {
    if let Some(s) = surface
        && s.shape != [timestamps.shape.first().copied().unwrap_or(0)]
    {
        return Err(EventsError::Input {
            input: "surface",
            reason: format!(
                "shape {:?}: one surface per event, [{}]",
                s.shape,
                timestamps.shape.first().copied().unwrap_or(0)
            ),
        });
    }
    // Without a surface the kernels read none: the timestamps stand in.
    let (by_surface, surface) = (surface.is_some(), surface.unwrap_or(timestamps));
    let (lengths, user_offsets, dwell) = match timestamps.dtype() {
        DType::I64 => {
            if gap.is_nan() || gap < 0.0 {
                return Err(EventsError::Input {
                    input: "gap",
                    reason: format!("{gap}: i64 timestamps take a gap >= 0"),
                });
            }
            session_segment_int::launch(
                rt,
                offsets,
                timestamps,
                surface,
                gap.floor() as usize,
                by_surface,
                offsets.dtype(),
            )?
        }
        _ => session_segment_float::launch(
            rt,
            offsets,
            timestamps,
            surface,
            gap as f32,
            by_surface,
            offsets.dtype(),
        )?,
    };
    let session_offsets = super::complete_cumsum::launch(rt, &lengths);
    rt.free(lengths.buffer)?;
    Ok(Sessions {
        session_offsets: session_offsets?,
        user_offsets,
        dwell,
    })
}

/// `jagged_topk`: per sequence, the rows of the `k` highest `scores` (ties
/// to the lower row, a NaN above any number), in their original order, as
/// global rows of `scores` (`indices`, in the offsets' dtype `I`) on new
/// offsets. `starts [B]` is each sequence's first row, `offsets[b]`: the
/// front function [`jagged_topk`] passes the offsets' first `B` entries.
#[jagged_kernel(name = "jagged_topk", outputs(indices, offsets))]
pub fn jagged_topk_kernel<T, I: Index>(
    scores: Jagged<T>,
    starts: PerSeq<I>,
    #[attr] k: usize,
) -> (Jagged<I>, Offsets) {
    let rows = scores.row_pos().cast::<I>() + starts;
    let kept = rows.compact(scores.descending_rank_over_seq().lt(k));
    (kept, kept.offsets())
}

/// `event_prune`'s selection: `mask [T]` (bool) of the rows kept, their
/// global rows (`indices`) and `offsets`. A row is kept if `scores[i] >=
/// threshold` (with `by_threshold`) and it is among its sequence's `k`
/// highest scores (with `by_rank`; ties to the lower row); with neither,
/// every row. `starts [B]` as for [`jagged_topk_kernel`](mod@jagged_topk_kernel).
#[jagged_kernel(name = "event_prune", outputs(mask, indices, offsets))]
pub fn event_prune_kernel<T: Float, I: Index>(
    scores: Jagged<T>,
    starts: PerSeq<I>,
    #[attr] threshold: f32,
    #[attr] k: usize,
    #[attr(static)] by_threshold: bool,
    #[attr(static)] by_rank: bool,
) -> (Jagged<bool>, Jagged<I>, Offsets) {
    let top = scores.descending_rank_over_seq().lt(k);
    let above = scores.ge(threshold);
    let keep = if by_threshold {
        if by_rank {
            select(above, top, above)
        } else {
            above
        }
    } else if by_rank {
        top
    } else {
        scores.row_pos().ge(0)
    };
    let rows = (scores.row_pos().cast::<I>() + starts).compact(keep);
    (keep, rows, rows.offsets())
}

/// The first `B` entries of `offsets [B+1]` (the sequences' first rows),
/// a view of the same buffer.
fn starts_view(offsets: &DeviceTensor) -> DeviceTensor {
    DeviceTensor {
        buffer: offsets.buffer.clone(),
        shape: vec![offsets.shape.first().map_or(0, |n| n.saturating_sub(1))],
    }
}

/// `jagged_topk` (docs/ops.md): `scores [T]` on `offsets [B+1]` to
/// `(indices [sum min(k, L_b)], offsets [B+1])`: per sequence the rows of
/// its `k` highest scores (ties to the lower row; a NaN ranks above every
/// number), in their original order, as global rows (the offsets' dtype).
pub fn jagged_topk(
    rt: &mut Runtime,
    scores: &DeviceTensor,
    offsets: &DeviceTensor,
    k: usize,
) -> Result<(DeviceTensor, DeviceTensor), EventsError> {
    let starts = starts_view(offsets);
    Ok(jagged_topk_kernel::launch(rt, offsets, scores, &starts, k)?)
}

/// `event_prune`'s selection rules.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PruneOptions {
    /// Keep only rows with `scores[i] >= threshold` (a NaN score fails).
    pub threshold: Option<f32>,
    /// Keep only each sequence's `k` highest scores (ties to the lower row).
    pub k: Option<usize>,
}

/// What [`event_prune`] keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    /// The kept rows of each feature tensor, in the order given.
    pub features: Vec<DeviceTensor>,
    /// The kept rows' global indices `[T']` (the offsets' dtype).
    pub indices: DeviceTensor,
    /// The kept rows' offsets `[B+1]`.
    pub offsets: DeviceTensor,
}

/// `event_prune` (docs/ops.md): keeps row `i` of `scores [T]` (float, on
/// `offsets [B+1]`) if `scores[i] >= threshold` (when given) and `i` is
/// among its sequence's `k` highest scores (when given; ties to the lower
/// row), in the original order; returns the kept rows of every feature
/// tensor `[T, ...]`, their global indices and their offsets.
///
/// One graph whatever the number of features: [`event_prune_kernel`](mod@event_prune_kernel)'s
/// selection, extended with a compaction of each feature over its kept set
/// ([`GraphBuilder::extending`]); the general path copies the kept rows of
/// every feature and the indices in one kernel, after the rank, the count
/// and its scan.
pub fn event_prune(
    rt: &mut Runtime,
    scores: &DeviceTensor,
    offsets: &DeviceTensor,
    features: &[&DeviceTensor],
    options: &PruneOptions,
) -> Result<Pruned, EventsError> {
    let rows = scores.shape.first().copied().unwrap_or(0);
    for f in features {
        if f.shape.first() != Some(&rows) {
            return Err(EventsError::Input {
                input: "features",
                reason: format!(
                    "a feature tensor of shape {:?} is not aligned with the {rows} scores",
                    f.shape
                ),
            });
        }
    }
    let selection = event_prune_kernel::graph(
        scores.dtype(),
        offsets.dtype(),
        options.threshold.is_some(),
        options.k.is_some(),
        offsets.dtype(),
    )?;
    let graph = with_features(&selection, features)?;
    let starts = starts_view(offsets);
    let names: Vec<String> = (0..features.len()).map(|k| format!("feature{k}")).collect();
    let mut inputs: Vec<(&str, &DeviceTensor)> = vec![
        ("offsets", offsets),
        ("scores", scores),
        ("starts", &starts),
    ];
    inputs.extend(
        names
            .iter()
            .map(String::as_str)
            .zip(features.iter().copied()),
    );
    let attrs = [
        (
            "threshold",
            AttrValue::Float(f64::from(options.threshold.unwrap_or(0.0))),
        ),
        ("k", AttrValue::Index(options.k.unwrap_or(0))),
    ];
    let spec = super::support::spec(&graph, 0, rt.preferred_arch())?;
    let mut out = rt
        .run_graph(&graph, &spec, &inputs, &attrs)
        .map_err(KernelError::from)?;
    // `what` names the output in the error (a feature's is `features`).
    let mut take = |name: &str, what: &'static str| {
        out.remove(name)
            .ok_or(EventsError::Kernel(KernelError::MissingOutput {
                name: what,
            }))
    };
    let kept = names
        .iter()
        .map(|n| take(n, "features"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pruned {
        features: kept,
        indices: take("indices", "indices")?,
        offsets: take("offsets", "offsets")?,
    })
}

/// `selection` (an [`event_prune_kernel`](mod@event_prune_kernel) graph) with an input
/// `feature{k}` per feature tensor (its dtype and inner dims, on the
/// scores' sequences) and an output of the same name, its rows compacted
/// with the indices' (the mask output left out).
fn with_features(selection: &Graph, features: &[&DeviceTensor]) -> Result<Graph, KernelError> {
    let output = |name: &str| selection.outputs().iter().find(|o| o.name == name);
    let kept_set = output("indices").and_then(|o| match selection.type_of(o.value) {
        jagged_ir::Type::Tensor(t) => t.seqs(),
        jagged_ir::Type::Seqs => None,
    });
    let rows = selection
        .inputs()
        .find(|(_, n, _)| *n == "scores")
        .and_then(|(_, _, t)| t.seqs());
    let (Some(kept_set), Some(rows)) = (kept_set, rows) else {
        return Err(KernelError::MissingOutput { name: "indices" });
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
    for (k, f) in features.iter().enumerate() {
        let name = format!("feature{k}");
        let x = b.input(&name, TensorType::jagged(f.dtype(), rows, &f.shape[1..]));
        let c = b.compact(x, kept_set);
        b.output(name, c);
    }
    Ok(b.finish()?)
}
