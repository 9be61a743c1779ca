//! Codebook training for the semantic-ID ops of [`super::quantize`]:
//! k-means per level of a residual quantizer ([`rq_train`]) and per
//! sub-space of a product quantizer ([`pq_train`]), on the device.
//!
//! | step | where | how |
//! |---|---|---|
//! | init | host, f64 | k-means++ ([`KMeansInit::PlusPlus`], the default) or `K` distinct rows drawn at random ([`KMeansInit::Random`]), from a seeded generator |
//! | assign | device | the quantize kernels: [`residual_quantize_level`](mod@super::quantize::residual_quantize_level) (RQ), [`product_quantize_kernel`](mod@super::quantize::product_quantize_kernel) (PQ): the distance contraction and its argmin |
//! | update | device | [`kmeans_update_kernel`](mod@kmeans_update_kernel): `sums[k, d] = sum_n [code_n == k] x[n, d]` and `counts[k]`, a one-hot contraction over the rows, per chunk of 1024 rows |
//! | mean, empty clusters | host, f64 | the chunks' sums and counts added, `sums / counts`; an empty cluster splits a populated one (below) |
//!
//! An iteration is an assign step and an update step (FAISS's `niter`
//! counts the same); the codebooks are those of the last update. Residual
//! quantization trains level `l` on the residuals that greedy encoding
//! with levels `0 .. l` leaves (the f32 residual of `residual_quantize`'s
//! level kernel, on the device), then encodes with the trained level to
//! pass its residuals on. Product quantization trains its `M` sub-spaces
//! together: one assign launch for all of them (`product_quantize`'s
//! kernel, codes `[N, M]`), and one update launch on the sub-vectors laid
//! out sub-space after sub-space (`[M * N, D / M]`, transposed once on the
//! host; the codes are transposed to match through the host at each
//! iteration, `4 N M` bytes each way), whose sequences are chunks of one
//! sub-space each.
//!
//! The update's sequences are chunks of at most 1024 rows, each its own
//! sums and counts (`[chunks, K, D]`): one sequence of `N` rows would be
//! the work of one block. The host adds the chunks in f64, in order, and
//! divides. The codebooks go to the device at each assign step (`K D`
//! floats) and the sums come back (`K D` per chunk).
//!
//! **Empty clusters** are re-seeded as FAISS's k-means does, without the
//! data: cluster `j` left without rows takes the centroid of a cluster `i`
//! drawn with probability proportional to `counts[i] - 1` (from the seeded
//! generator), the two are pushed apart by a relative `1 / 1024` of
//! opposite signs on alternate coordinates (`c_j[d] = c_i[d] (1 +- eps)`,
//! `c_i[d] = c_i[d] (1 -+ eps)`), and `i`'s rows are counted half to each
//! (so that several empty clusters spread over the large ones). With `N >=
//! K` rows some cluster always has two when one is empty; were none to
//! have two, the empty cluster would keep its centroid.
//!
//! **Determinism.** Given the data and [`KMeansOptions::seed`], the
//! codebooks are the same on every run and every backend that computes
//! the kernels' f32 arithmetic the same way (the host steps are f64 and
//! sequential; the device sums are f32 accumulations in the kernels'
//! fixed order, without atomics). The generator is SplitMix64, seeded
//! with `seed`; it draws the inits and the clusters to split, in the order
//! the training needs them.
//!
//! Inputs are f32 `x [N, D]` (dense rows; train on a jagged tensor's
//! `values`), with `N >= K` (as FAISS requires); the codebooks are f32.
//! Counts are f32 in the kernel, exact up to `2^24` rows per cluster.

use jagged_ir::DType;
use jagged_runtime::{DeviceTensor, Runtime};

use super::dsl::*;
use super::quantize::{QuantizeError, product_quantize_kernel, residual_quantize_level, transpose};

/// The update step of k-means: per sequence, `sums[k, d] = sum_i [codes[i]
/// == ids[k]] x[i, d]` and `counts[k] = sum_i [codes[i] == ids[k]]`, over
/// all rows of the sequence (`x [T, D]`, `codes [T, 1]` i32, `ids [K]`
/// f32, normally `0 .. K`; `sums [B, K, D]`, `counts [B, K]`, f32). A code
/// that is no id counts nowhere. `spread [1, K]` is ones: the code of row
/// `i` spread over `K` columns, `codes[i] x spread` (the DSL's phantom
/// types give a comparison the shape of its operand with more rows, so
/// `[T]` codes cannot meet `[K]` ids directly), compared with the ids.
/// Codes are exact in f32 below `2^24`.
#[jagged_kernel(name = "kmeans_update", outputs(sums, counts))]
pub fn kmeans_update_kernel<D, U, K>(
    x: Jagged<f32, (D,)>,
    codes: Jagged<i32, (U,)>,
    spread: Dense<f32, (U, K)>,
    ids: Dense<f32, (K,)>,
) -> (PerSeq<f32, (K, D)>, PerSeq<f32, (K,)>) {
    let code = codes.cast::<f32>().matmul(spread);
    let onehot = code.eq(ids).cast::<f32>();
    (onehot.outer_sum_over_seq(x), onehot.sum_over_seq())
}

/// How k-means picks its first centroids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KMeansInit {
    /// k-means++ (Arthur and Vassilvitskii): the first centroid a row drawn
    /// uniformly, each next one a row drawn with probability proportional
    /// to its squared distance to the nearest centroid so far (uniformly
    /// when every row sits on a centroid); in f64 on the host.
    #[default]
    PlusPlus,
    /// `K` distinct rows drawn uniformly (a partial Fisher-Yates shuffle).
    Random,
}

/// The options of [`rq_train`] and [`pq_train`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansOptions {
    /// Iterations (assign + update) per level or sub-space.
    pub iterations: usize,
    /// The seed of the init and of the re-seeding of empty clusters.
    pub seed: u64,
    /// The init.
    pub init: KMeansInit,
}

impl Default for KMeansOptions {
    fn default() -> Self {
        KMeansOptions {
            iterations: 25,
            seed: 1234,
            init: KMeansInit::PlusPlus,
        }
    }
}

/// The relative perturbation that splits a cluster to re-seed an empty
/// one (FAISS's `EPS`).
const SPLIT_EPS: f64 = 1.0 / 1024.0;

/// Rows per sequence of the assign launches (as the quantize front
/// functions split a dense input).
const ASSIGN_ROWS: usize = 16;

/// Rows per sequence of the update launches: each sequence (a chunk of a
/// k-means' rows) gives its own sums and counts, which the host adds up in
/// f64, chunk after chunk; the chunks spread the contraction over the GPU
/// (one sequence of all `N` rows would be one block's work).
const UPDATE_ROWS: usize = 1024;

/// SplitMix64: a small, seedable, portable generator.
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0 .. n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n - 1)
    }
}

/// The index of the entry where the running sum of `weights` passes `r`
/// (`0 <= r < sum`); the last positive one if rounding runs past the end.
fn pick_weighted(weights: &[f64], r: f64) -> usize {
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            acc += w;
            last = i;
            if r < acc {
                return i;
            }
        }
    }
    last
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The first `k` centroids (`[k, d]`, f64) of the rows `x [n, d]`.
fn init_centroids(
    x: &[f64],
    n: usize,
    d: usize,
    k: usize,
    init: KMeansInit,
    rng: &mut SplitMix,
) -> Vec<f64> {
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let mut c = Vec::with_capacity(k * d);
    match init {
        KMeansInit::Random => {
            let mut perm: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = i + rng.below(n - i);
                perm.swap(i, j);
                c.extend_from_slice(row(perm[i]));
            }
        }
        KMeansInit::PlusPlus => {
            let first = rng.below(n);
            c.extend_from_slice(row(first));
            let mut nearest: Vec<f64> = (0..n).map(|i| sq_dist(row(i), row(first))).collect();
            for _ in 1..k {
                let total: f64 = nearest.iter().sum();
                let next = if total > 0.0 && total.is_finite() {
                    pick_weighted(&nearest, rng.unit() * total)
                } else {
                    rng.below(n)
                };
                let start = c.len();
                c.extend_from_slice(row(next));
                for (i, best) in nearest.iter_mut().enumerate() {
                    *best = best.min(sq_dist(row(i), &c[start..start + d]));
                }
            }
        }
    }
    c
}

/// The new centroids `[k, d]` of one k-means from the update kernel's
/// `sums [k, d]` and `counts [k]`: the means, and the empty clusters
/// re-seeded by splitting (see the module docs). `previous` gives an
/// empty cluster's centroid when no cluster can be split.
fn centroids_from_sums(
    sums: &[f64],
    counts: &[f64],
    previous: &[f64],
    d: usize,
    rng: &mut SplitMix,
) -> Vec<f64> {
    let k = counts.len();
    let mut c = previous.to_vec();
    let mut counts = counts.to_vec();
    for j in 0..k {
        if counts[j] > 0.0 {
            for e in 0..d {
                c[j * d + e] = sums[j * d + e] / counts[j];
            }
        }
    }
    for j in 0..k {
        if counts[j] > 0.0 {
            continue;
        }
        let weights: Vec<f64> = counts.iter().map(|&n| (n - 1.0).max(0.0)).collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            continue;
        }
        let i = pick_weighted(&weights, rng.unit() * total);
        for e in 0..d {
            let v = c[i * d + e];
            let (cj, ci) = if e % 2 == 0 {
                (1.0 + SPLIT_EPS, 1.0 - SPLIT_EPS)
            } else {
                (1.0 - SPLIT_EPS, 1.0 + SPLIT_EPS)
            };
            c[j * d + e] = v * cj;
            c[i * d + e] = v * ci;
        }
        counts[j] = (counts[i] / 2.0).floor();
        counts[i] -= counts[j];
    }
    c
}

fn input_error(op: &'static str, problem: String) -> QuantizeError {
    QuantizeError::Input { op, problem }
}

/// Offsets `[0, step, 2 step, .., n]` (i32, `n < 2^31` checked by
/// [`training_input`]) on the device.
fn chunk_offsets(rt: &mut Runtime, n: usize, step: usize) -> Result<DeviceTensor, QuantizeError> {
    let mut o: Vec<i32> = (0..n.div_ceil(step)).map(|b| (b * step) as i32).collect();
    o.push(n as i32);
    Ok(DeviceTensor {
        buffer: rt.upload(&o)?,
        shape: vec![o.len()],
    })
}

/// f32 to the device, shaped.
fn upload_f32(
    rt: &mut Runtime,
    values: &[f64],
    shape: Vec<usize>,
) -> Result<DeviceTensor, QuantizeError> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Ok(DeviceTensor {
        buffer: rt.upload(&v)?,
        shape,
    })
}

/// A codebook `[k, d]` and its transpose `[d, k]` as f32 tensors (what
/// [`residual_quantize_level`] reads).
fn upload_codebook(
    rt: &mut Runtime,
    c: &[f64],
    k: usize,
    d: usize,
) -> Result<(DeviceTensor, DeviceTensor), QuantizeError> {
    Ok((
        upload_f32(rt, c, vec![k, d])?,
        upload_f32(rt, &transpose(c, k, d), vec![d, k])?,
    ))
}

/// An f32 tensor's elements as f64.
fn download_f64(rt: &mut Runtime, t: &DeviceTensor) -> Result<Vec<f64>, QuantizeError> {
    Ok(rt
        .download::<f32>(&t.buffer)?
        .into_iter()
        .map(f64::from)
        .collect())
}

/// The rows and features of a training input `x [N, D]`, checked.
fn training_input(
    op: &'static str,
    x: &DeviceTensor,
    k: usize,
) -> Result<(usize, usize), QuantizeError> {
    let [n, d] = x.shape[..] else {
        return Err(input_error(
            op,
            format!("`x` must be [N, D], found shape {:?}", x.shape),
        ));
    };
    if x.dtype() != DType::F32 {
        return Err(input_error(
            op,
            format!("`x` must be f32 (training is in f32), found {}", x.dtype()),
        ));
    }
    if k == 0 {
        return Err(input_error(op, "K must be at least 1".to_string()));
    }
    if n < k {
        return Err(input_error(
            op,
            format!("`x` has {n} rows, fewer than the K = {k} centroids to train"),
        ));
    }
    if i32::try_from(n).is_err() || i32::try_from(k).is_err() {
        return Err(input_error(op, "more than 2^31 - 1 rows".to_string()));
    }
    Ok((n, d))
}

/// The update kernel's constant inputs: `spread [1, K]` (ones) and `ids
/// [K]` (`0 .. K`), f32, on the device.
struct Ids {
    spread: DeviceTensor,
    ids: DeviceTensor,
}

impl Ids {
    fn new(rt: &mut Runtime, k: usize) -> Result<Ids, QuantizeError> {
        let ids: Vec<f32> = (0..k).map(|i| i as f32).collect();
        Ok(Ids {
            spread: DeviceTensor {
                buffer: rt.upload(&vec![1.0f32; k])?,
                shape: vec![1, k],
            },
            ids: DeviceTensor {
                buffer: rt.upload(&ids)?,
                shape: vec![k],
            },
        })
    }

    fn free(self, rt: &mut Runtime) -> Result<(), QuantizeError> {
        rt.free(self.spread.buffer)?;
        rt.free(self.ids.buffer)?;
        Ok(())
    }
}

/// The sequences of the update launches: `kmeans` runs of `n` rows each,
/// one after the other, each cut into chunks of [`UPDATE_ROWS`] rows.
struct Chunks {
    offsets: DeviceTensor,
    per_kmeans: usize,
}

impl Chunks {
    fn new(rt: &mut Runtime, kmeans: usize, n: usize) -> Result<Chunks, QuantizeError> {
        let per_kmeans = n.div_ceil(UPDATE_ROWS);
        let mut o = vec![0i32];
        for g in 0..kmeans {
            for c in 0..per_kmeans {
                o.push((g * n + ((c + 1) * UPDATE_ROWS).min(n)) as i32);
            }
        }
        Ok(Chunks {
            offsets: DeviceTensor {
                buffer: rt.upload(&o)?,
                shape: vec![o.len()],
            },
            per_kmeans,
        })
    }
}

/// The update step on the device, then the new centroids on the host:
/// `x [T, D]` on `chunks` (`kmeans` runs), `codes [T, 1]`; the chunks'
/// sums and counts added in f64.
#[allow(clippy::too_many_arguments)]
fn update(
    rt: &mut Runtime,
    chunks: &Chunks,
    x: &DeviceTensor,
    codes: &DeviceTensor,
    ids: &Ids,
    previous: &[f64],
    [kmeans, k, d]: [usize; 3],
    rng: &mut SplitMix,
) -> Result<Vec<f64>, QuantizeError> {
    let (sums, counts) =
        kmeans_update_kernel::launch(rt, &chunks.offsets, x, codes, &ids.spread, &ids.ids)?;
    let s = download_f64(rt, &sums);
    let c = download_f64(rt, &counts);
    rt.free(sums.buffer)?;
    rt.free(counts.buffer)?;
    let (s, c) = (s?, c?);
    let mut out = Vec::with_capacity(kmeans * k * d);
    for m in 0..kmeans {
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0.0; k];
        for chunk in m * chunks.per_kmeans..(m + 1) * chunks.per_kmeans {
            for (a, b) in sums.iter_mut().zip(&s[chunk * k * d..(chunk + 1) * k * d]) {
                *a += b;
            }
            for (a, b) in counts.iter_mut().zip(&c[chunk * k..(chunk + 1) * k]) {
                *a += b;
            }
        }
        out.extend(centroids_from_sums(
            &sums,
            &counts,
            &previous[m * k * d..(m + 1) * k * d],
            d,
            rng,
        ));
    }
    Ok(out)
}

/// `rq_train`: the codebooks `[levels, K, D]` (f32) of a greedy residual
/// quantizer of the rows of `x [N, D]` (f32, `N >= K`), by k-means on each
/// level's residuals (see the module docs). `levels = 0` gives `[0, K, D]`.
pub fn rq_train(
    rt: &mut Runtime,
    x: &DeviceTensor,
    levels: usize,
    k: usize,
    options: &KMeansOptions,
) -> Result<DeviceTensor, QuantizeError> {
    const OP: &str = "rq_train";
    let (n, d) = training_input(OP, x, k)?;
    let mut rng = SplitMix::new(options.seed);
    let mut books: Vec<f64> = Vec::with_capacity(levels * k * d);
    if d == 0 || levels == 0 {
        books.resize(levels * k * d, 0.0);
        return upload_f32(rt, &books, vec![levels, k, d]);
    }
    let assign_offsets = chunk_offsets(rt, n, ASSIGN_ROWS)?;
    let chunks = Chunks::new(rt, 1, n)?;
    let ids = Ids::new(rt, k)?;
    let level = DeviceTensor {
        buffer: rt.upload(&[1i32])?,
        shape: vec![1],
    };
    let zeros = DeviceTensor {
        buffer: rt.alloc(DType::I32, n)?,
        shape: vec![n, 1],
    };
    let result = (|| {
        // The residual of the levels so far (`x` itself at level 0).
        let mut residual: Option<DeviceTensor> = None;
        for _ in 0..levels {
            let r = residual.as_ref().unwrap_or(x);
            let host = download_f64(rt, r)?;
            let mut c = init_centroids(&host, n, d, k, options.init, &mut rng);
            for _ in 0..options.iterations {
                let (book, book_t) = upload_codebook(rt, &c, k, d)?;
                let step = residual_quantize_level::launch(
                    rt,
                    &assign_offsets,
                    r,
                    &book,
                    &book_t,
                    &zeros,
                    &level,
                );
                rt.free(book.buffer)?;
                rt.free(book_t.buffer)?;
                let (codes, new_residual) = step?;
                rt.free(new_residual.buffer)?;
                let next = update(rt, &chunks, r, &codes, &ids, &c, [1, k, d], &mut rng);
                rt.free(codes.buffer)?;
                c = next?;
            }
            // Encode with the trained level: the next level's residuals.
            let (book, book_t) = upload_codebook(rt, &c, k, d)?;
            let step = residual_quantize_level::launch(
                rt,
                &assign_offsets,
                r,
                &book,
                &book_t,
                &zeros,
                &level,
            );
            rt.free(book.buffer)?;
            rt.free(book_t.buffer)?;
            let (codes, new_residual) = step?;
            rt.free(codes.buffer)?;
            if let Some(old) = residual.replace(new_residual) {
                rt.free(old.buffer)?;
            }
            books.extend_from_slice(&c);
        }
        if let Some(old) = residual {
            rt.free(old.buffer)?;
        }
        upload_f32(rt, &books, vec![levels, k, d])
    })();
    for t in [assign_offsets, chunks.offsets, level, zeros] {
        rt.free(t.buffer)?;
    }
    ids.free(rt)?;
    result
}

/// `pq_train`: the centroids `[M, K, D / M]` (f32) of a product quantizer
/// of the rows of `x [N, D]` (f32, `N >= K`, `D` a multiple of `M`), by
/// k-means in each sub-space (see the module docs), all `M` at once.
pub fn pq_train(
    rt: &mut Runtime,
    x: &DeviceTensor,
    m: usize,
    k: usize,
    options: &KMeansOptions,
) -> Result<DeviceTensor, QuantizeError> {
    const OP: &str = "pq_train";
    let (n, d) = training_input(OP, x, k)?;
    if m == 0 || !d.is_multiple_of(m) {
        return Err(input_error(
            OP,
            format!("`x` rows have {d} features, which M = {m} sub-vectors do not divide"),
        ));
    }
    let s = d / m;
    if i32::try_from(n * m).is_err() {
        return Err(input_error(
            OP,
            "more than 2^31 - 1 sub-vectors".to_string(),
        ));
    }
    let mut rng = SplitMix::new(options.seed);
    let host = download_f64(rt, x)?;
    // The rows of each sub-space, sub-space after sub-space: [M * N, S].
    let mut by_space = Vec::with_capacity(n * d);
    for g in 0..m {
        for i in 0..n {
            by_space.extend_from_slice(&host[i * d + g * s..i * d + (g + 1) * s]);
        }
    }
    let mut c = Vec::with_capacity(m * k * s);
    for g in 0..m {
        c.extend(init_centroids(
            &by_space[g * n * s..(g + 1) * n * s],
            n,
            s,
            k,
            options.init,
            &mut rng,
        ));
    }
    if s == 0 || options.iterations == 0 {
        return upload_f32(rt, &c, vec![m, k, s]);
    }
    let assign_offsets = chunk_offsets(rt, n, ASSIGN_ROWS)?;
    let chunks = Chunks::new(rt, m, n)?;
    let ids = Ids::new(rt, k)?;
    let spaces = upload_f32(rt, &by_space, vec![m * n, s])?;
    let x3 = DeviceTensor {
        buffer: x.buffer.clone(),
        shape: vec![n, m, s],
    };
    let result = (|| {
        for _ in 0..options.iterations {
            // The centroids of each sub-space transposed, [M, S, K]: what
            // the kernel reads.
            let t: Vec<f64> = c
                .chunks_exact(k * s)
                .flat_map(|book| transpose(book, k, s))
                .collect();
            let centroids_t = upload_f32(rt, &t, vec![m, s, k])?;
            let codes = product_quantize_kernel::launch(rt, &assign_offsets, &x3, &centroids_t);
            rt.free(centroids_t.buffer)?;
            let codes = codes?;
            // [N, M] codes to [M, N], the update's sequences.
            let row_major = rt.download::<i32>(&codes.buffer);
            rt.free(codes.buffer)?;
            let row_major = row_major?;
            let by_space_codes: Vec<i32> = (0..m)
                .flat_map(|g| (0..n).map(move |i| (g, i)))
                .map(|(g, i)| row_major[i * m + g])
                .collect();
            let flat = DeviceTensor {
                buffer: rt.upload(&by_space_codes)?,
                shape: vec![m * n, 1],
            };
            let next = update(rt, &chunks, &spaces, &flat, &ids, &c, [m, k, s], &mut rng);
            rt.free(flat.buffer)?;
            c = next?;
        }
        upload_f32(rt, &c, vec![m, k, s])
    })();
    for t in [assign_offsets, chunks.offsets, spaces] {
        rt.free(t.buffer)?;
    }
    ids.free(rt)?;
    result
}
