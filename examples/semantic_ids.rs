//! Semantic IDs end to end (SIDE, issue 10): item embeddings are replaced
//! by a few codes per item, and the codes turned back into embeddings
//! without a lookup table per item.
//!
//! 1. A catalog of synthetic clustered item embeddings (`ITEMS` x `D`,
//!    f32); `rq_train` learns `LEVELS` codebooks of `K` codewords on it
//!    (k-means++ init, `ITERATIONS` k-means iterations per level, on the
//!    device: the assign step is `residual_quantize`'s kernel, the update
//!    a one-hot contraction).
//! 2. A jagged batch of user histories (users of 0 to 300 events, each
//!    event an item's embedding): `residual_quantize` encodes every event
//!    into its semantic ID, `[T, LEVELS]` codes on the batch's offsets.
//! 3. `sid_embed` turns the codes back into embeddings `[T, D]`.
//! 4. `jagged_reduce` (mean) pools each user's history, from the embedded
//!    SIDs and from the original embeddings.
//!
//! Printed: the reconstruction error (per event and of the pooled user
//! vectors, against f64 loops over the original embeddings), the bytes of
//! a history stored as codes against f32 and bf16 vectors, and each
//! stage's time on the backend that ran (with the emulator's cost-model
//! counts when there is no GPU). The codes are checked against the
//! greedy encoding computed in f64 here (equal where no near-tie exists).
//!
//! `cargo run --release --example semantic_ids`

use std::error::Error;
use std::time::{Duration, Instant};

use jagged::ir::{DType, DenseTensor};
use jagged::ops::jagged_reduce_mean;
use jagged::ops::quantize::{ResidualQuantizeOptions, residual_quantize, sid_embed};
use jagged::ops::quantize_train::{KMeansInit, KMeansOptions, rq_train};
use jagged::runtime::{DeviceTensor, Runtime};
use jagged::testing::Rng;

/// Embedding width.
const D: usize = 32;
/// Items in the catalog, and the clusters they come from.
const ITEMS: usize = 1024;
const CLUSTERS: usize = 32;
/// Codebooks: levels of K codewords (a SID is LEVELS codes of log2 K bits).
const LEVELS: usize = 3;
const K: usize = 32;
const ITERATIONS: usize = 5;
/// Users in the batch.
const USERS: usize = 32;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Rng::new(10);
    // Clustered item embeddings: a center per cluster, items around it,
    // with a per-cluster spread.
    let centers: Vec<f64> = (0..CLUSTERS * D).map(|_| rng.float(1.0)).collect();
    let spread: Vec<f64> = (0..CLUSTERS)
        .map(|_| 0.1 + 0.2 * rng.below(100) as f64 / 100.0)
        .collect();
    let items: Vec<f64> = (0..ITEMS)
        .flat_map(|_| {
            let c = rng.below(CLUSTERS);
            (0..D)
                .map(|e| centers[c * D + e] + spread[c] * rng.float(1.0))
                .collect::<Vec<_>>()
        })
        .collect();
    // Histories: an empty user, a long one, the rest random; events are
    // items, users favouring a few clusters.
    let mut lengths = vec![0, 300];
    lengths.extend((2..USERS).map(|_| rng.below(100)));
    let offsets: Vec<usize> = std::iter::once(0)
        .chain(lengths.iter().scan(0, |acc, &l| {
            *acc += l;
            Some(*acc)
        }))
        .collect();
    let t_rows = offsets[USERS];
    let events: Vec<usize> = (0..t_rows).map(|_| rng.below(ITEMS)).collect();
    let history: Vec<f64> = events
        .iter()
        .flat_map(|&i| items[i * D..(i + 1) * D].to_vec())
        .collect();
    println!(
        "semantic_ids: {ITEMS} items of D = {D} in {CLUSTERS} clusters; {USERS} users, T = {t_rows} events (longest {}); RQ {LEVELS} levels x K = {K}",
        lengths.iter().max().unwrap_or(&0)
    );

    let mut rt = Runtime::new()?;
    print!("backend: {} ({})", rt.backend_name(), rt.device_name());
    match rt.fallback_reason() {
        Some(why) => println!(", no GPU: {why}"),
        None => println!(),
    }
    let d_items = upload(&mut rt, &items, vec![ITEMS, D])?;
    let d_history = upload(&mut rt, &history, vec![t_rows, D])?;
    let o32: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
    let d_offsets = DeviceTensor {
        buffer: rt.upload(&o32)?,
        shape: vec![USERS + 1],
    };

    // 1. Codebooks.
    let options = KMeansOptions {
        iterations: ITERATIONS,
        seed: 10,
        init: KMeansInit::PlusPlus,
    };
    let (books, train) = stage(&mut rt, |rt| {
        Ok(rq_train(rt, &d_items, LEVELS, K, &options)?)
    })?;
    // 2. SIDs of the histories.
    let (codes, encode) = stage(&mut rt, |rt| {
        Ok(residual_quantize(
            rt,
            &d_history,
            Some(&d_offsets),
            &books,
            &ResidualQuantizeOptions::default(),
        )?)
    })?;
    // 3. Back to embeddings.
    let (embedded, embed) = stage(&mut rt, |rt| {
        Ok(sid_embed(rt, &codes, Some(&d_offsets), &books)?)
    })?;
    // 4. A vector per user.
    let max_len = lengths.iter().copied().max().unwrap_or(0).max(1);
    let (pooled, pool) = stage(&mut rt, |rt| {
        Ok(jagged_reduce_mean::launch(
            rt, &d_offsets, &embedded, max_len,
        )?)
    })?;

    // Checks and errors, in f64.
    let books = rt.download_tensor(&books)?.to_f64();
    let codes: Vec<usize> = rt
        .download_tensor(&codes)?
        .to_f64()
        .iter()
        .map(|&c| c as usize)
        .collect();
    let embedded = rt.download_tensor(&embedded)?.to_f64();
    let pooled = rt.download_tensor(&pooled)?.to_f64();
    let (clear, agree) = check_codes(&history, &books, &codes);
    if agree != clear {
        return Err(format!(
            "residual_quantize's codes differ from the f64 greedy encoding on {} of {clear} clear rows",
            clear - agree
        )
        .into());
    }
    let decoded: Vec<f64> = (0..t_rows)
        .flat_map(|t| {
            let (books, codes) = (&books, &codes);
            (0..D).map(move |e| {
                (0..LEVELS)
                    .map(|l| books[(l * K + codes[t * LEVELS + l]) * D + e])
                    .sum::<f64>()
            })
        })
        .collect();
    let embed_error = rel_l2(&embedded, &decoded);
    if embed_error > 1e-5 {
        return Err(
            format!("sid_embed differs from the f64 sum of codewords by {embed_error:e}").into(),
        );
    }
    let want_pooled = mean_pool(&embedded, &offsets);
    let pool_error = rel_l2(&pooled, &want_pooled);
    if pool_error > 1e-5 {
        return Err(format!("jagged_reduce differs from the f64 means by {pool_error:e}").into());
    }
    let energy = history.iter().map(|v| v * v).sum::<f64>() / t_rows.max(1) as f64;
    let mse = sq_dist(&history, &decoded) / t_rows.max(1) as f64;
    let exact_users = mean_pool(&history, &offsets);
    println!(
        "codes: {agree} of {t_rows} events equal the f64 greedy encoding ({} near-ties skipped)",
        t_rows - clear
    );
    println!(
        "reconstruction: MSE per event {mse:.5} ({:.2}% of the mean |x|^2 {energy:.4}); pooled users' relative error {:.2e}",
        100.0 * mse / energy,
        rel_l2(&pooled, &exact_users)
    );

    // Bytes of the history: codes (log2 K bits per level, packed, or a byte
    // per level) against f32 and bf16 vectors; the codebooks are shared.
    let bits = LEVELS * K.trailing_zeros() as usize;
    let packed = (t_rows * bits).div_ceil(8);
    let bytes = t_rows * LEVELS;
    let f32_bytes = 4 * t_rows * D;
    let bf16_bytes = 2 * t_rows * D;
    println!(
        "storage of {t_rows} events: f32 {f32_bytes} B, bf16 {bf16_bytes} B; SIDs ({bits} bits each) packed {packed} B ({:.0}x less than f32, {:.0}x than bf16), a byte per code {bytes} B ({:.0}x, {:.0}x); codebooks {} B (f32, shared by every item)",
        f32_bytes as f64 / packed as f64,
        bf16_bytes as f64 / packed as f64,
        f32_bytes as f64 / bytes as f64,
        bf16_bytes as f64 / bytes as f64,
        4 * LEVELS * K * D
    );

    println!(
        "\n{:<20} {:>10} {:>12} {:>12}",
        "stage", "time", "warp ins", "bytes"
    );
    for (name, s) in [
        ("rq_train", &train),
        ("residual_quantize", &encode),
        ("sid_embed", &embed),
        ("jagged_reduce mean", &pool),
    ] {
        let (ins, bytes) = s.profile.as_ref().map_or((0, 0), |p| {
            (
                p.warp_instructions(),
                32 * (p.global_read_sectors + p.global_write_sectors),
            )
        });
        println!(
            "{name:<20} {:>8.1}ms {ins:>12} {bytes:>12}",
            s.time.as_secs_f64() * 1e3
        );
    }
    println!(
        "(time on {}, code generation on first use included; warp instructions and bytes (32 x sectors) from the emulator's cost model, 0 on a GPU)",
        rt.backend_name()
    );
    Ok(())
}

/// A stage's wall time and, on the emulator, its cost-model counts.
struct Stage {
    time: Duration,
    profile: Option<jagged::emu::Profile>,
}

fn stage<T>(
    rt: &mut Runtime,
    f: impl FnOnce(&mut Runtime) -> Result<T, Box<dyn Error>>,
) -> Result<(T, Stage), Box<dyn Error>> {
    let _ = rt.take_emulator_profile();
    let start = Instant::now();
    let out = f(rt)?;
    rt.synchronize()?;
    let time = start.elapsed();
    Ok((
        out,
        Stage {
            time,
            profile: rt.take_emulator_profile(),
        },
    ))
}

fn upload(rt: &mut Runtime, v: &[f64], shape: Vec<usize>) -> Result<DeviceTensor, Box<dyn Error>> {
    Ok(rt.upload_tensor(&DenseTensor::from_f64(DType::F32, shape, v)?)?)
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn rel_l2(got: &[f64], want: &[f64]) -> f64 {
    sq_dist(got, want).sqrt() / want.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30)
}

/// Per user of `offsets`, the mean of its rows (0 without rows).
fn mean_pool(values: &[f64], offsets: &[usize]) -> Vec<f64> {
    offsets
        .windows(2)
        .flat_map(|w| {
            (0..D).map(move |e| {
                let n = (w[1] - w[0]).max(1) as f64;
                (w[0]..w[1]).map(|r| values[r * D + e]).sum::<f64>() / n
            })
        })
        .collect()
}

/// The greedy residual encoding of every row in f64 (residuals of the f32
/// rows; the kernels keep them in f32): how many rows have no near-tie
/// (a relative gap above 1e-4 between the two nearest codewords at every
/// level), and how many of those have `codes`.
fn check_codes(rows: &[f64], books: &[f64], codes: &[usize]) -> (usize, usize) {
    let (mut clear, mut agree) = (0, 0);
    for (t, row) in rows.chunks(D).enumerate() {
        let mut r: Vec<f64> = row.iter().map(|&v| f64::from(v as f32)).collect();
        let mut near_tie = false;
        let mut same = true;
        for l in 0..LEVELS {
            let mut ds: Vec<(f64, usize)> = (0..K)
                .map(|k| (sq_dist(&r, &books[(l * K + k) * D..(l * K + k + 1) * D]), k))
                .collect();
            ds.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            near_tie |= ds[1].0 - ds[0].0 <= 1e-4 * ds[0].0.max(1e-12);
            let best = ds[0].1;
            same &= codes[t * LEVELS + l] == best;
            // Follow our code, so that later levels compare like with like.
            let c = codes[t * LEVELS + l];
            for (e, v) in r.iter_mut().enumerate() {
                *v -= books[(l * K + c) * D + e];
            }
        }
        if !near_tie {
            clear += 1;
            agree += usize::from(same);
        }
    }
    (clear, agree)
}
