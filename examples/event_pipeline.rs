//! An event-stream pipeline over nested jagged tensors (issue 11): users'
//! events, cut into sessions, are boosted per (user segment, event
//! condition), pooled per session, then per user.
//!
//! 1. Random users with Zipf-distributed history lengths (exponent
//!    [`ZIPF_S`], capped at [`MAX_EVENTS`]; one user without events, one
//!    whose [`BURST`] events are one session) with i64 timestamps;
//!    `session_segment` cuts sessions where the gap between two events
//!    exceeds `GAP`, giving the nested tensor's offsets (checked against
//!    a [`NestedJagged`] built on the host from the flat tensor and its
//!    session starts) and dwell times.
//! 2. `event_boost`: the feature columns `BOOSTED` of each event times
//!    `table[segment[b], cond[i]]` (a condition outside the table: factor 1).
//! 3. `session_pool` (mean over each session's events) and `user_pool`
//!    (max over each user's session means).
//! 4. `event_prune`: each user's `KEEP` events of highest boosted feature 0
//!    with the feature carried along.
//! 5. Causal jagged flash attention (bf16, one head of `D`) over each
//!    user's history, before and after pruning: the attention time that
//!    pruning saves on the backend that ran.
//!
//! Every output is checked against f64 loops written here. On the
//! emulator (no GPU), each step's cost-model counts are printed against
//! the minimum traffic (inputs read once, outputs written once); with
//! `PER_KERNEL=1`, each step's row is followed by one row per kernel
//! launch ([`Runtime::take_launch_log`]).
//!
//! `cargo run --release --example event_pipeline`
//! (`PER_KERNEL=1 cargo run --release --example event_pipeline`)

use std::error::Error;
use std::time::Instant;

use jagged::dsl::Activation;
use jagged::emu::Profile;
use jagged::ir::{DType, DenseTensor};
use jagged::nested::NestedJagged;
use jagged::ops::attention::{AttentionOptions, jagged_flash_attention};
use jagged::ops::events::{
    DeviceNested, PruneOptions, Reduce, column_mask, event_boost, event_prune, session_pool,
    session_segment, user_pool,
};
use jagged::runtime::{DeviceTensor, LaunchRecord, Runtime};
use jagged::testing::{Rng, rel_l2, tolerance};

/// Features per event.
const D: usize = 32;
/// A new session starts after a gap longer than this (seconds).
const GAP: f64 = 1800.0;
/// Segments (table rows) and conditions (table columns).
const G: usize = 4;
const C: usize = 6;
/// The boosted feature columns.
const BOOSTED: [usize; 4] = [0, 3, 8, 31];
/// Events kept per user by `event_prune`.
const KEEP: usize = 64;
/// Users (the emulator runs the whole example in a few seconds).
const USERS: usize = 32;
/// The longest history: user lengths follow Zipf's law on `1..=MAX_EVENTS`.
const MAX_EVENTS: usize = 4096;
/// User 1's history, one session (longer than 1024 events). `event_prune`
/// ranks a user's events against each other (`L^2` comparisons, the
/// emulator's longest step: the 3347 events of the longest Zipf history
/// take 22M warp instructions), so the example keeps to [`USERS`] users.
const BURST: usize = 2048;
/// Set (to anything but `0`) to print each step's kernels under its row.
const PER_KERNEL_ENV: &str = "PER_KERNEL";
/// Zipf's exponent: `P(L = k)` proportional to `k^-ZIPF_S`.
const ZIPF_S: f64 = 1.1;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(11);
    // Events per user: none, a burst of BURST events (one session), then
    // Zipf-distributed lengths.
    let mut counts = vec![0, BURST];
    counts.extend((2..USERS).map(|_| zipf(&mut rng)));
    let b = counts.len();
    // Timestamps: gaps mostly short, sometimes longer than GAP.
    let mut times: Vec<usize> = Vec::new();
    for (u, &n) in counts.iter().enumerate() {
        let mut t = 1_700_000_000;
        for _ in 0..n {
            // User 1's burst is one session.
            t += if u != 1 && rng.below(12) == 0 {
                GAP as usize + 1 + rng.below(7200)
            } else {
                rng.below(600)
            };
            times.push(t);
        }
    }
    let events = offsets(counts.iter().copied());
    let t_rows = events[b];
    // Sessions: a user's first event, and every gap > GAP.
    let mut session_starts = Vec::new();
    for u in 0..b {
        for i in events[u]..events[u + 1] {
            if i == events[u] || (times[i] - times[i - 1]) as f64 > GAP {
                session_starts.push(i);
            }
        }
    }
    session_starts.push(t_rows);
    let values: Vec<f64> = (0..t_rows * D).map(|_| rng.float(1.0)).collect();
    let flat = jagged::ir::JaggedTensor::from_offsets(
        jagged::ir::TensorData::F32(values.iter().map(|&x| x as f32).collect()),
        &[D],
        jagged::ir::TensorData::I32(events.iter().map(|&o| o as i32).collect()),
    )?;
    let nested = NestedJagged::from_flat(&flat, index(DType::I32, &session_starts)?)?;
    let (s, sessions, users) = (
        nested.sessions(),
        nested.session_offsets_usize().to_vec(),
        nested.user_offsets_usize().to_vec(),
    );
    let longest = sessions.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    let history = counts.iter().max().copied().unwrap_or(0);
    println!(
        "event_pipeline: B = {b} users (longest history {history} events), S = {s} sessions (longest {longest} events), T = {t_rows} events, D = {D}"
    );

    // Per-user segments and per-event conditions, some outside the table.
    let segment: Vec<usize> = (0..b).map(|_| rng.below(G)).collect();
    let cond: Vec<usize> = (0..t_rows).map(|_| rng.below(C + 1)).collect();
    let table: Vec<f64> = (0..G * C)
        .map(|_| 0.5 + rng.below(20) as f64 / 10.0)
        .collect();

    let mut rt = Runtime::new()?;
    rt.set_poison_outputs(true);
    print!("backend: {} ({})", rt.backend_name(), rt.device_name());
    match rt.fallback_reason() {
        Some(why) => println!(", no GPU: {why}"),
        None => println!(),
    }
    // 1. Sessions on the device, from the timestamps.
    let d_times = rt.upload_tensor(&index(DType::I64, &times)?)?;
    let d_events = rt.upload_tensor(&index(DType::I32, &events)?)?;
    let _ = take_costs(&mut rt);
    let start = Instant::now();
    let cut = session_segment(&mut rt, &d_times, &d_events, GAP, None)?;
    rt.synchronize()?;
    let t_segment = start.elapsed();
    let p_segment = take_costs(&mut rt);
    let got_sessions = download(&mut rt, &cut.session_offsets)?;
    let got_users = download(&mut rt, &cut.user_offsets)?;
    let as_f64 = |v: &[usize]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
    if got_sessions != as_f64(&sessions) || got_users != as_f64(&users) {
        return Err("session_segment's offsets differ from the host's sessions".into());
    }
    let want_dwell: Vec<f64> = (0..t_rows)
        .map(|i| {
            let same = i + 1 < t_rows && !sessions.contains(&(i + 1));
            if same {
                (times[i + 1] - times[i]) as f64
            } else {
                0.0
            }
        })
        .collect();
    if download(&mut rt, &cut.dwell)? != want_dwell {
        return Err("session_segment's dwell times differ from the loops'".into());
    }
    println!("session_segment: session and user offsets and dwell times equal the host's");
    let dev = DeviceNested {
        values: rt.upload_tensor(nested.values())?,
        session_offsets: cut.session_offsets,
        user_offsets: cut.user_offsets,
    };
    let d_segment = rt.upload_tensor(&index(DType::I32, &segment)?)?;
    let d_cond = rt.upload_tensor(&index(DType::I32, &cond)?)?;
    let d_table = rt.upload_tensor(&DenseTensor::from_f64(DType::F32, vec![G, C], &table)?)?;
    let d_columns = column_mask(&mut rt, D, &BOOSTED)?;
    let _ = take_costs(&mut rt);

    // 2. event_boost on the flat form.
    let start = Instant::now();
    let boosted = event_boost(
        &mut rt,
        &dev.values,
        &d_events,
        &d_segment,
        &d_cond,
        &d_table,
        &d_columns,
    )?;
    rt.synchronize()?;
    let t_boost = start.elapsed();
    let p_boost = take_costs(&mut rt);
    // 3. session means, then the max over each user's sessions.
    let start = Instant::now();
    let pooled = session_pool(&mut rt, &boosted, &dev.session_offsets, Reduce::Mean)?;
    rt.synchronize()?;
    let t_sessions = start.elapsed();
    let p_sessions = take_costs(&mut rt);
    let start = Instant::now();
    let per_user = user_pool(&mut rt, &pooled, &dev.user_offsets, Reduce::Max)?;
    rt.synchronize()?;
    let t_users = start.elapsed();
    let p_users = take_costs(&mut rt);
    // 4. Each user's KEEP events of highest boosted feature 0.
    // (The scores, column 0 of the boosted events, through the host.)
    let column0: Vec<f64> = download(&mut rt, &boosted)?
        .chunks(D)
        .map(|row| row[0])
        .collect();
    let scores = rt.upload_tensor(&DenseTensor::from_f64(DType::F32, vec![t_rows], &column0)?)?;
    let _ = take_costs(&mut rt);
    let start = Instant::now();
    let options = PruneOptions {
        threshold: None,
        k: Some(KEEP),
    };
    let pruned = event_prune(&mut rt, &scores, &d_events, &[&boosted], &options)?;
    rt.synchronize()?;
    let t_prune = start.elapsed();
    let p_prune = take_costs(&mut rt);

    // The f64 loops.
    let mut want_boost = values.clone();
    for u in 0..b {
        for i in events[u]..events[u + 1] {
            let factor = if cond[i] < C {
                table[segment[u] * C + cond[i]]
            } else {
                1.0
            };
            for &col in &BOOSTED {
                want_boost[i * D + col] *= factor;
            }
        }
    }
    let want_sessions = pool(&want_boost, &sessions, |col| {
        col.iter().sum::<f64>() / col.len().max(1) as f64
    });
    let want_users = pool(&want_sessions, &users, |col| {
        col.iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            .unwrap_or(0.0)
    });
    // The KEEP highest scores of each user (ties to the lower row), on the
    // scores the kernel ranked.
    let mut want_kept = Vec::new();
    for u in 0..b {
        let mut rows: Vec<usize> = (events[u]..events[u + 1]).collect();
        rows.sort_by(|&x, &y| {
            column0[y]
                .partial_cmp(&column0[x])
                .expect("no NaN")
                .then(x.cmp(&y))
        });
        rows.truncate(KEEP);
        rows.sort_unstable();
        want_kept.extend(rows);
    }
    let kept_rows: Vec<usize> = download(&mut rt, &pruned.indices)?
        .iter()
        .map(|&r| r as usize)
        .collect();
    if kept_rows != want_kept {
        return Err("event_prune kept other rows than the loops".into());
    }
    let want_pruned: Vec<f64> = want_kept
        .iter()
        .flat_map(|&r| want_boost[r * D..(r + 1) * D].to_vec())
        .collect();
    let tol = tolerance(DType::F32);
    let mut worst: f64 = 0.0;
    for (name, got, want) in [
        ("event_boost", &boosted, &want_boost),
        ("session_pool", &pooled, &want_sessions),
        ("user_pool", &per_user, &want_users),
        ("event_prune", &pruned.features[0], &want_pruned),
    ] {
        let got = download(&mut rt, got)?;
        let error = rel_l2(&got, want);
        worst = worst.max(error);
        println!("{name}: relative error vs the f64 loops {error:.2e} (tolerance {tol:e})");
    }

    // Minimum traffic: every input read once, every output written once.
    let min_boost = 4 * (2 * t_rows * D + t_rows + b + (b + 1) + G * C) + D;
    let min_sessions = 4 * (t_rows * D + s * D + s + 1);
    let min_users = 4 * (s * D + b * D + b + 1);
    // timestamps and offsets in; both offsets, lengths and dwell out.
    let min_segment = 8 * t_rows + 4 * (b + 1) + 4 * (s + 1) + 4 * (b + 1) + 8 * t_rows;
    let kept = want_kept.len();
    // scores, offsets and the features in; kept features, indices, offsets out.
    let min_prune = 4 * (t_rows + (b + 1) + t_rows * D) + 4 * (kept * D + kept + b + 1);
    let per_kernel = std::env::var(PER_KERNEL_ENV).is_ok_and(|v| v != "0");
    println!(
        "\n{:<16} {:>12} {:>16} {:>10} {:>8} {:>10}",
        "step", "min bytes", "bytes (x min)", "warp ins", "global", "time"
    );
    for (name, min, profile, time) in [
        ("session_segment", min_segment, p_segment, t_segment),
        ("event_boost", min_boost, p_boost, t_boost),
        ("session_pool", min_sessions, p_sessions, t_sessions),
        ("user_pool", min_users, p_users, t_users),
        ("event_prune", min_prune, p_prune, t_prune),
    ] {
        let (total, launches) = profile.unwrap_or_default();
        let bytes = total.global_sector_bytes();
        println!(
            "{name:<16} {min:>12} {bytes:>9} ({:>4.2}x) {:>10} {:>8} {:>8.2}ms",
            bytes as f64 / min as f64,
            total.warp_instructions(),
            total.global,
            time.as_secs_f64() * 1e3
        );
        if per_kernel {
            // Each launch's own counts under the step's columns, then the kernel.
            for launch in &launches {
                let p = &launch.profile;
                println!(
                    "{:29} {:>9} {:7} {:>10} {:>8}  {} <<<{:?}, {:?}>>>",
                    "",
                    p.global_sector_bytes(),
                    "",
                    p.warp_instructions(),
                    p.global,
                    launch.entry,
                    launch.dims.grid,
                    launch.dims.block
                );
            }
        }
    }
    println!(
        "(bytes = 32 x the 32-byte sectors touched; time includes code generation on first use{})",
        if per_kernel {
            "; indented: each kernel launch"
        } else {
            "; PER_KERNEL=1 adds each kernel launch"
        }
    );
    if worst > tol {
        return Err(format!("relative error {worst:e} above the tolerance {tol:e}").into());
    }

    // 5. Attention over the history, the whole and the pruned one (no
    // history is truncated).
    let options = AttentionOptions {
        max_len: MAX_EVENTS,
        scale: None,
        causal: true,
        activation: Activation::Softmax,
    };
    let mut times = Vec::new();
    for (what, features, offsets) in [
        ("whole history", &boosted, &d_events),
        ("pruned history", &pruned.features[0], &pruned.offsets),
    ] {
        let rows = features.shape[0];
        let x =
            DenseTensor::from_f64(DType::BF16, vec![rows, 1, D], &download(&mut rt, features)?)?;
        let x = rt.upload_tensor(&x)?;
        let _ = rt.take_emulator_profile();
        let start = Instant::now();
        let (out, lse) = jagged_flash_attention(&mut rt, offsets, &x, &x, &x, &options)?;
        rt.synchronize()?;
        let elapsed = start.elapsed();
        let ins = rt
            .take_emulator_profile()
            .map_or(0, |p| p.warp_instructions());
        println!(
            "attention over the {what}: {rows} events, {:.2}ms, {ins} warp instructions",
            elapsed.as_secs_f64() * 1e3
        );
        times.push(elapsed.as_secs_f64());
        for t in [Some(out), lse, Some(x)].into_iter().flatten() {
            rt.free(t.buffer)?;
        }
    }
    println!(
        "pruning to {KEEP} events per user saves {:.0}% of the attention time ({:.1}x faster)",
        100.0 * (1.0 - times[1] / times[0]),
        times[0] / times[1]
    );
    Ok(())
}

/// The emulator's counts since the last call, summed over the launches and
/// per launch (`None` on CUDA).
fn take_costs(rt: &mut Runtime) -> Option<(Profile, Vec<LaunchRecord>)> {
    Some((rt.take_emulator_profile()?, rt.take_launch_log()?))
}

/// A length in `1..=MAX_EVENTS` drawn with `P(L = k)` proportional to
/// `k^-ZIPF_S` (inverse CDF).
fn zipf(rng: &mut Rng) -> usize {
    let weight = |k: usize| (k as f64).powf(-ZIPF_S);
    let total: f64 = (1..=MAX_EVENTS).map(weight).sum();
    // Uniform in [0, total).
    let mut u = (rng.float(0.5) + 0.5) * total;
    for k in 1..MAX_EVENTS {
        u -= weight(k);
        if u < 0.0 {
            return k;
        }
    }
    MAX_EVENTS
}

/// `[0, l0, l0 + l1, ...]`.
fn offsets(lengths: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut o = vec![0];
    for l in lengths {
        o.push(o[o.len() - 1] + l);
    }
    o
}

/// An index tensor (i32 or i64) of `values`.
fn index(dtype: DType, values: &[usize]) -> Result<DenseTensor, Box<dyn Error>> {
    let f: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    Ok(DenseTensor::from_f64(dtype, vec![values.len()], &f)?)
}

/// Per segment of `offsets`, `reduce` of each of the `D` columns.
fn pool(values: &[f64], offsets: &[usize], reduce: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut out = Vec::new();
    for w in offsets.windows(2) {
        for c in 0..D {
            let col: Vec<f64> = (w[0]..w[1]).map(|r| values[r * D + c]).collect();
            out.push(reduce(&col));
        }
    }
    out
}

fn download(rt: &mut Runtime, t: &DeviceTensor) -> Result<Vec<f64>, Box<dyn Error>> {
    Ok(rt.download_tensor(t)?.to_f64())
}
