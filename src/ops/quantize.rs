//! OPS.md "Semantic IDs": vector quantization of rows into codes, and the
//! embedding of codes back into vectors, each a `#[jagged_kernel]` with a
//! front function.
//!
//! | op | kernel(s) | DSL |
//! |---|---|---|
//! | `product_quantize` | [`product_quantize_kernel`](mod@product_quantize_kernel) | `(|c|^2 - 2 x.matmul_grouped(c_t)).argmin_over_features()` (`c_t [M, S, K]`: the centroids transposed per sub-space) |
//! | `residual_quantize` (greedy) | [`residual_quantize_level`](mod@residual_quantize_level), once per level | `(|c|^2 - 2 r.matmul(c_t)).argmin_over_features()` (`c_t [D, K]`), `r - c.at(code)` |
//! | `residual_quantize` (beam) | [`residual_quantize_beam_level`](mod@residual_quantize_beam_level), once per level, then [`residual_quantize_best`](mod@residual_quantize_best) | `|r.take_features(parent_of) - c.at(code_of)|^2`, `.smallest_k_over_features::<BO>()`, `codes.take_features(parent)` |
//! | `sid_embed` | [`sid_embed_kernel`](mod@sid_embed_kernel) | `table.at(codes + base).sum_over_groups()` (`base[l] = l K`) |
//!
//! **Layouts.** An input is dense `x [N, D]` (`offsets = None`) or jagged
//! `values [T, D]` on `offsets [B + 1]` (i32 or i64); every op is row-wise, so the output follows the input's layout:
//! `[N, ..]` for a dense input, `[T, ..]` on the same offsets for a jagged
//! one. No row is truncated (the ops take no `max_len`).
//!
//! **Distances and ties.** The nearest codeword of a (sub-)vector `x`
//! among `c_0 .. c_{K-1}` is `argmin_k |c_k|^2 - 2 x . c_k`, the squared
//! distance `|x - c_k|^2` less the constant `|x|^2`, computed in f32 (the
//! products accumulated in f32, whatever the input dtype: f32, f16 or
//! bf16); the argmin takes the lowest index among equal distances (and a
//! NaN distance, from a NaN input, wins). FAISS's `ProductQuantizer` and
//! `ResidualQuantizer` take the lowest index too (a strict `<` scan over
//! the codewords) on distances computed either directly or, for large
//! batches, with BLAS as `|x|^2 + |c|^2 - 2 x . c`, which is ours plus a
//! constant. Duplicate codewords get bitwise-equal distances under either
//! formula (the same operations on the same operands), so an exact tie
//! between duplicates goes to the lower index here as in FAISS; a near-tie
//! (distances within f32 rounding of each other) may resolve either way in
//! either implementation. `tests/quantize_faiss.rs` checks our codes
//! against FAISS's on fixtures where no near-tie exists, and the objective
//! of the step (the two choices' distances) where one does.
//!
//! **Residual quantization** is greedy (`beam = 1`): level `l` encodes the
//! residual `r_l` (`r_0 = x`, in f32 from the first level on) by its
//! nearest codeword of `codebooks[l]` and passes on `r_{l+1} = r_l -
//! codebooks[l, c_l]`; one graph per level computes the code and the new
//! residual together (contraction, argmin, gather and subtraction). The
//! general path runs it as four kernels (the `|c|^2` reduction; the argmin
//! with the contraction computed inside its loop, no `[T, K]` scratch; the
//! codes; the residual).
//!
//! **Beam search** (`beam > 1`, FAISS's `max_beam_size`) keeps, per row,
//! the `beam` best partial encodings of each level, best first: every kept
//! encoding `b` extended by every codeword `k` is a candidate `m = b K + k`
//! scored by its full squared error `|r_b - c_k|^2` (computed directly in
//! f32), and the `beam` smallest (ties to the lower `m`) survive; the
//! answer is the best encoding of the last level. One graph per level
//! (candidates on one line, `topk`, and `take` of the survivors' residuals
//! and codes), `min(beam, K^l)` encodings kept after level `l`.
//!
//! **sid_embed** sums `codebooks[l, codes[:, l]]` over the levels in f32
//! and rounds to the codebooks' dtype; a code outside `0..K` adds 0 (the
//! IR gather's rule for an index outside its table).

use jagged_ir::{DType, DenseTensor};
use jagged_runtime::{DeviceTensor, GraphRunError, Runtime, RuntimeError};

use super::KernelError;
use super::dsl::*;

/// `product_quantize` on `M` sub-vectors of `S` features: `codes[t, m] =
/// argmin_k |c[m, k]|^2 - 2 x[t, m] . c[m, k]` (`x [T, M, S]`, `codes [T,
/// M]` i32) for the centroids `c [M, K, S]`, read transposed per
/// sub-space: `centroids_t [M, S, K]`, `centroids_t[m, s, k] = c[m, k, s]`,
/// so that the lanes of a warp, one centroid each, read one row of it
/// together. The products and the order of the sums over `S` (`|c|^2` and
/// `x . c`) are those of `[M, K, S]`, so ties resolve as they did (and as
/// in FAISS).
#[jagged_kernel(name = "product_quantize", outputs(codes))]
pub fn product_quantize_kernel<T: Float, M, K, S>(
    x: Jagged<T, (M, S)>,
    centroids_t: Dense<T, (M, S, K)>,
) -> Jagged<i32, (M,)> {
    let ct = centroids_t.cast::<f32>();
    let distance = (ct * ct).sum_over_groups() - x.matmul_grouped(centroids_t).cast::<f32>() * 2.0;
    distance.argmin_over_features()
}

/// One level of greedy `residual_quantize`: the nearest codeword `code` of
/// each row of `residual` (in `R`: the input `x`'s dtype at the first
/// level, f32 after it) among `codebook [K, D]`, written into `codes [T,
/// L]` in the column where the one-hot `level [L]` is one (`codes + code *
/// level`; the first level's `codes` are zeros), and the new residual
/// `residual - codebook[code]` in f32. `codebook_t [D, K]` holds the same
/// codewords transposed: the distances read it, so that the lanes of a
/// warp, one codeword each, read one row of it together (6.4x fewer bytes
/// than `[K, D]` in the emulator's cost model, `K = 64`, `D = 32`).
#[jagged_kernel(name = "residual_quantize_level", outputs(codes, residual))]
pub fn residual_quantize_level<R: Float, T: Float, K, D, L>(
    residual: Jagged<R, (D,)>,
    codebook: Dense<T, (K, D)>,
    codebook_t: Dense<T, (D, K)>,
    codes: Jagged<i32, (L,)>,
    level: Dense<i32, (L,)>,
) -> (Jagged<i32, (L,)>, Jagged<f32, (D,)>) {
    let r = residual.cast::<f32>();
    let ct = codebook_t.cast::<f32>();
    let code = ((ct * ct).sum_over_groups() - r.matmul(ct) * 2.0).argmin_over_features();
    (codes + code * level, r - codebook.cast::<f32>().at(code))
}

/// One level of beam-search `residual_quantize`: each row keeps `BI`
/// partial encodings (`residual [T, BI, D]`, their codes `[T, BI, L]`,
/// best first); every pair (`b`, `k`) of a kept partial residual and a
/// codeword is a candidate `m = b K + k` (`parent_of[m] = b`, `code_of[m]
/// = k`) whose objective is the full squared error `|r_b - c_k|^2`; the
/// `BO` best candidates (ties to the lower `m`) are kept, best first, their
/// codes extended by `k` in the column where the one-hot `level [BO, L]`
/// is one (`slot_of[s, l] = s` spreads each slot's code along its row).
#[jagged_kernel(name = "residual_quantize_beam_level", outputs(codes, residual))]
pub fn residual_quantize_beam_level<R: Float, T: Float, BI, D, K, BK, BO, L>(
    residual: Jagged<R, (BI, D)>,
    codebook: Dense<T, (K, D)>,
    codes: Jagged<i32, (BI, L)>,
    parent_of: Dense<i32, (BK,)>,
    code_of: Dense<i32, (BK,)>,
    slot_of: Dense<i32, (BO, L)>,
    level: Dense<i32, (BO, L)>,
) -> (Jagged<i32, (BO, L)>, Jagged<f32, (BO, D)>) {
    let r = residual.cast::<f32>();
    let c = codebook.cast::<f32>();
    let diff = r.take_features(parent_of) - c.at(code_of);
    let best = (diff * diff)
        .sum_over_features()
        .smallest_k_over_features::<BO>();
    let parent = parent_of.at(best);
    let code = code_of.at(best);
    let extended = codes.take_features(parent) + code.take_features(slot_of) * level;
    (extended, r.take_features(parent) - c.at(code))
}

/// The codes of the best partial encoding (slot 0) of each row.
#[jagged_kernel(name = "residual_quantize_best", outputs(codes))]
pub fn residual_quantize_best<BO, L>(
    codes: Jagged<i32, (BO, L)>,
    first: Dense<i32, ()>,
) -> Jagged<i32, (L,)> {
    codes.take_features(first)
}

/// `sid_embed` on the codebooks viewed as one table `[L * K, D]`:
/// `values[t] = sum_l table[base[l] + codes[t, l]]` with `base[l] = l K`,
/// a code outside `0..codewords` (`K`) adding 0; summed in f32, rounded
/// to `T`.
#[jagged_kernel(name = "sid_embed", outputs(values))]
pub fn sid_embed_kernel<T: Float, L, R, D>(
    codes: Jagged<i32, (L,)>,
    table: Dense<T, (R, D)>,
    base: Dense<i32, (L,)>,
    #[attr] codewords: usize,
) -> Jagged<T, (D,)> {
    let row = select(
        codes.lt(0),
        -1,
        select(codes.ge(codewords), -1, codes + base),
    );
    table.at(row).cast::<f32>().sum_over_groups().cast::<T>()
}

/// Why a quantization op failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// `beam = 0` keeps no candidate.
    #[error("residual_quantize: beam must be at least 1, got 0")]
    ZeroBeam,
    /// Inputs whose shapes or dtypes do not fit together.
    #[error("{op}: {problem}")]
    Input {
        /// The op.
        op: &'static str,
        /// What is wrong, naming the input.
        problem: String,
    },
    /// A kernel failed (graph, compilation, run, device).
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl From<RuntimeError> for QuantizeError {
    fn from(e: RuntimeError) -> Self {
        QuantizeError::Kernel(KernelError::Run(GraphRunError::from(e)))
    }
}

/// The options of `residual_quantize` (OPS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResidualQuantizeOptions {
    /// The number of partial encodings kept per level: 1 is greedy, more
    /// a beam search (FAISS's `max_beam_size`); at least 1.
    pub beam: usize,
}

impl Default for ResidualQuantizeOptions {
    fn default() -> Self {
        ResidualQuantizeOptions { beam: 1 }
    }
}

fn input_error(op: &'static str, problem: String) -> QuantizeError {
    QuantizeError::Input { op, problem }
}

/// The rows of a dense input go to the kernels as sequences of this many
/// rows: the row-wise ops give the same result on any split, and the
/// general path's kernels that go a warp per sequence (the argmin, the
/// gathers) then have `N / 16` sequences to spread over the GPU rather
/// than one.
const DENSE_ROWS: usize = 16;

/// The rows of a `[rows, d]` input and their offsets: the given ones, or
/// for a dense input `[0, 16, 32, .., rows]` (i32, uploaded; freed by
/// [`Rows::free`]).
struct Rows {
    offsets: DeviceTensor,
    owned: bool,
}

impl Rows {
    fn new(
        rt: &mut Runtime,
        op: &'static str,
        input: &str,
        x: &DeviceTensor,
        offsets: Option<&DeviceTensor>,
    ) -> Result<Rows, QuantizeError> {
        if x.shape.len() != 2 {
            return Err(input_error(
                op,
                format!(
                    "`{input}` must be [N, D] or [T, D], found shape {:?}",
                    x.shape
                ),
            ));
        }
        match offsets {
            Some(o) => Ok(Rows {
                offsets: o.clone(),
                owned: false,
            }),
            None => {
                let n = x.shape[0];
                if i32::try_from(n).is_err() {
                    return Err(input_error(
                        op,
                        format!("`{input}` has more than 2^31 - 1 rows"),
                    ));
                }
                // Sequences of DENSE_ROWS rows (the last one shorter).
                let mut offsets: Vec<f64> = (0..n.div_ceil(DENSE_ROWS))
                    .map(|b| (b * DENSE_ROWS) as f64)
                    .collect();
                offsets.push(n as f64);
                let host = DenseTensor::from_f64(DType::I32, vec![offsets.len()], &offsets)
                    .map_err(|e| input_error(op, e.to_string()))?;
                Ok(Rows {
                    offsets: rt.upload_tensor(&host)?,
                    owned: true,
                })
            }
        }
    }

    fn free(self, rt: &mut Runtime) -> Result<(), QuantizeError> {
        if self.owned {
            rt.free(self.offsets.buffer)?;
        }
        Ok(())
    }
}

/// The codes of rows with no features (`D = 0` or sub-vectors of 0): every
/// distance is 0, so the lowest index, 0, or -1 without codewords (`K =
/// 0`), as the argmin gives them.
fn featureless_codes(
    rt: &mut Runtime,
    rows: usize,
    groups: usize,
    k: usize,
) -> Result<DeviceTensor, QuantizeError> {
    let code = if k == 0 { -1 } else { 0 };
    Ok(DeviceTensor {
        buffer: rt.upload(&vec![code; rows * groups])?,
        shape: vec![rows, groups],
    })
}

/// The same buffer under another shape (row-major, same element count).
fn reshaped(t: &DeviceTensor, shape: Vec<usize>) -> DeviceTensor {
    DeviceTensor {
        buffer: t.buffer.clone(),
        shape,
    }
}

/// `product_quantize` (OPS.md): the nearest centroid of each of the `M`
/// sub-vectors of every row of `x [N, D]` (or `[T, D]` on `offsets`),
/// `centroids [M, K, D / M]` in `x`'s dtype, to `codes [N, M]` (`[T, M]`)
/// i32. The centroids are transposed per sub-space on the host (downloaded
/// and uploaded as `[M, D / M, K]`, what the kernel reads).
pub fn product_quantize(
    rt: &mut Runtime,
    x: &DeviceTensor,
    offsets: Option<&DeviceTensor>,
    centroids: &DeviceTensor,
) -> Result<DeviceTensor, QuantizeError> {
    const OP: &str = "product_quantize";
    let rows = Rows::new(rt, OP, "x", x, offsets)?;
    let [m, k, s] = centroids.shape[..] else {
        rows.free(rt)?;
        return Err(input_error(
            OP,
            format!(
                "`centroids` must be [M, K, D / M], found shape {:?}",
                centroids.shape
            ),
        ));
    };
    if m * s != x.shape[1] {
        rows.free(rt)?;
        return Err(input_error(
            OP,
            format!(
                "`centroids` {:?} splits rows into {m} sub-vectors of {s}, but `x` rows have {} features",
                centroids.shape, x.shape[1]
            ),
        ));
    }
    if s == 0 {
        rows.free(rt)?;
        return featureless_codes(rt, x.shape[0], m, k);
    }
    let x3 = reshaped(x, vec![x.shape[0], m, s]);
    let centroids_t = match transposed_centroids(rt, centroids, [m, k, s]) {
        Ok(t) => t,
        Err(e) => {
            rows.free(rt)?;
            return Err(e);
        }
    };
    let codes = product_quantize_kernel::launch(rt, &rows.offsets, &x3, &centroids_t);
    rt.free(centroids_t.buffer)?;
    rows.free(rt)?;
    Ok(codes?)
}

/// `residual_quantize` (OPS.md): `codes [N, levels]` (`[T, levels]` on
/// `offsets`) i32 of the rows of `x [N, D]` against `codebooks [levels, K,
/// D]` in `x`'s dtype, greedy (`options.beam = 1`) or by beam search.
///
/// One kernel per level (and one to pick the best encoding after a beam
/// search); each level's codebook is copied out of `codebooks` (through
/// the host) before its launch.
pub fn residual_quantize(
    rt: &mut Runtime,
    x: &DeviceTensor,
    offsets: Option<&DeviceTensor>,
    codebooks: &DeviceTensor,
    options: &ResidualQuantizeOptions,
) -> Result<DeviceTensor, QuantizeError> {
    const OP: &str = "residual_quantize";
    if options.beam == 0 {
        return Err(QuantizeError::ZeroBeam);
    }
    let [levels, k, d] = codebooks.shape[..] else {
        return Err(input_error(
            OP,
            format!(
                "`codebooks` must be [levels, K, D], found shape {:?}",
                codebooks.shape
            ),
        ));
    };
    if x.shape.len() != 2 || x.shape[1] != d {
        return Err(input_error(
            OP,
            format!(
                "`x` must be [N, {d}] (the codebooks' D), found shape {:?}",
                x.shape
            ),
        ));
    }
    if codebooks.dtype() != x.dtype() {
        return Err(input_error(
            OP,
            format!(
                "`codebooks` is {} and `x` {}: pass both in the dtype to compute in",
                codebooks.dtype(),
                x.dtype()
            ),
        ));
    }
    let n = x.shape[0];
    if d == 0 {
        return featureless_codes(rt, n, levels, k);
    }
    if levels == 0 {
        let buffer = rt.alloc(DType::I32, 0)?;
        return Ok(DeviceTensor {
            buffer,
            shape: vec![n, 0],
        });
    }
    let rows = Rows::new(rt, OP, "x", x, offsets)?;
    let result = if options.beam == 1 || k == 0 {
        residual_levels(rt, x, &rows.offsets, codebooks, [levels, k, d])
    } else {
        beam_levels(
            rt,
            x,
            &rows.offsets,
            codebooks,
            [levels, k, d],
            options.beam,
        )
    };
    rows.free(rt)?;
    result
}

/// Level `l`'s codebook `[K, D]` within `bytes`, all of `op`'s input
/// `input` `[levels, K, D]` downloaded once (the codebooks of
/// `residual_quantize`, or the centroids `[M, K, S]` of `product_quantize`,
/// sub-space `l`).
fn level_bytes<'b>(
    (op, input): (&'static str, &str),
    bytes: &'b [u8],
    dtype: DType,
    l: usize,
    [levels, k, d]: [usize; 3],
) -> Result<&'b [u8], QuantizeError> {
    let size = k * d * dtype.size();
    bytes.get(l * size..(l + 1) * size).ok_or_else(|| {
        input_error(
            op,
            format!("`{input}` holds fewer than {levels} x {k} x {d} elements"),
        )
    })
}

/// `product_quantize`'s `centroids [M, K, S]` transposed per sub-space,
/// `[M, S, K]`, on the device (through the host: downloaded, each
/// sub-space's `[K, S]` transposed, uploaded).
fn transposed_centroids(
    rt: &mut Runtime,
    centroids: &DeviceTensor,
    [m, k, s]: [usize; 3],
) -> Result<DeviceTensor, QuantizeError> {
    let bytes = rt.download_bytes(&centroids.buffer)?;
    let dtype = centroids.dtype();
    let mut t = Vec::with_capacity(bytes.len());
    for g in 0..m {
        let book = level_bytes(
            ("product_quantize", "centroids"),
            &bytes,
            dtype,
            g,
            [m, k, s],
        )?;
        t.extend(transposed(book, k, s, dtype.size()));
    }
    upload_as(rt, dtype, &t, vec![m, s, k])
}

/// `residual_quantize`'s codebooks, for [`level_bytes`].
const BOOKS: (&str, &str) = ("residual_quantize", "codebooks");

/// The row-major `[rows, cols]` `values` transposed to `[cols, rows]`: a
/// codebook `[K, D]` as the distance kernels read it, `[D, K]`.
pub fn transpose<T: Copy>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..rows * cols)
        .map(|e| values[(e % rows) * cols + e / rows])
        .collect()
}

/// [`transpose`] of the `[rows, cols]` elements (of `size` bytes) of
/// `bytes`.
fn transposed(bytes: &[u8], rows: usize, cols: usize, size: usize) -> Vec<u8> {
    let elems: Vec<&[u8]> = bytes.chunks_exact(size).collect();
    transpose(&elems, rows, cols).concat()
}

/// Uploads `bytes` of `dtype` as a tensor of `shape`.
fn upload_as(
    rt: &mut Runtime,
    dtype: DType,
    bytes: &[u8],
    shape: Vec<usize>,
) -> Result<DeviceTensor, QuantizeError> {
    Ok(DeviceTensor {
        buffer: rt.upload_bytes(dtype, bytes)?,
        shape,
    })
}

/// An i32 tensor uploaded from the host.
fn upload_i32(
    rt: &mut Runtime,
    values: Vec<i32>,
    shape: Vec<usize>,
) -> Result<DeviceTensor, QuantizeError> {
    Ok(DeviceTensor {
        buffer: rt.upload(&values)?,
        shape,
    })
}

/// The levels of [`residual_quantize`] with `beam > 1`: one launch of
/// [`residual_quantize_beam_level`] per level (the kept encodings grow
/// from 1 to `min(beam, K^l)`), then [`residual_quantize_best`].
fn beam_levels(
    rt: &mut Runtime,
    x: &DeviceTensor,
    offsets: &DeviceTensor,
    codebooks: &DeviceTensor,
    [levels, k, d]: [usize; 3],
    beam: usize,
) -> Result<DeviceTensor, QuantizeError> {
    let n = x.shape[0];
    let bytes = rt.download_bytes(&codebooks.buffer)?;
    // The first level's one partial encoding: `x` itself, no codes yet.
    let mut residual = reshaped(x, vec![n, 1, d]);
    let mut codes = DeviceTensor {
        buffer: rt.alloc(DType::I32, n * levels)?,
        shape: vec![n, 1, levels],
    };
    let mut kept = 1;
    for l in 0..levels {
        let candidates = kept * k;
        let next = beam.min(candidates);
        let book = level_bytes(BOOKS, &bytes, codebooks.dtype(), l, [levels, k, d])?;
        let codebook = upload_as(rt, codebooks.dtype(), book, vec![k, d])?;
        let constants = [
            upload_i32(
                rt,
                (0..candidates).map(|m| (m / k) as i32).collect(),
                vec![candidates],
            )?,
            upload_i32(
                rt,
                (0..candidates).map(|m| (m % k) as i32).collect(),
                vec![candidates],
            )?,
            upload_i32(
                rt,
                (0..next * levels).map(|e| (e / levels) as i32).collect(),
                vec![next, levels],
            )?,
            upload_i32(
                rt,
                (0..next * levels)
                    .map(|e| i32::from(e % levels == l))
                    .collect(),
                vec![next, levels],
            )?,
        ];
        let [parent_of, code_of, slot_of, level] = &constants;
        let step = residual_quantize_beam_level::launch(
            rt, offsets, &residual, &codebook, &codes, parent_of, code_of, slot_of, level,
        );
        rt.free(codebook.buffer)?;
        for c in constants {
            rt.free(c.buffer)?;
        }
        let (new_codes, new_residual) = step?;
        if l > 0 {
            rt.free(residual.buffer)?;
        }
        rt.free(codes.buffer)?;
        codes = new_codes;
        residual = new_residual;
        kept = next;
    }
    rt.free(residual.buffer)?;
    let first = upload_i32(rt, vec![0], vec![])?;
    let best = residual_quantize_best::launch(rt, offsets, &codes, &first);
    rt.free(first.buffer)?;
    rt.free(codes.buffer)?;
    Ok(best?)
}

/// The levels of [`residual_quantize`], one launch each.
fn residual_levels(
    rt: &mut Runtime,
    x: &DeviceTensor,
    offsets: &DeviceTensor,
    codebooks: &DeviceTensor,
    [levels, k, d]: [usize; 3],
) -> Result<DeviceTensor, QuantizeError> {
    let bytes = rt.download_bytes(&codebooks.buffer)?;
    let dtype = codebooks.dtype();
    let mut codes: Option<DeviceTensor> = None;
    let mut residual: Option<DeviceTensor> = None;
    for l in 0..levels {
        let book = level_bytes(BOOKS, &bytes, dtype, l, [levels, k, d])?;
        let codebook = upload_as(rt, dtype, book, vec![k, d])?;
        let codebook_t = upload_as(rt, dtype, &transposed(book, k, d, dtype.size()), vec![d, k])?;
        let one_hot: Vec<i32> = (0..levels).map(|j| i32::from(j == l)).collect();
        let level = DeviceTensor {
            buffer: rt.upload(&one_hot)?,
            shape: vec![levels],
        };
        let zeros;
        let (r, c) = match (&residual, &codes) {
            (Some(r), Some(c)) => (r, c),
            _ => {
                zeros = DeviceTensor {
                    buffer: rt.alloc(DType::I32, x.shape[0] * levels)?,
                    shape: vec![x.shape[0], levels],
                };
                (x, &zeros)
            }
        };
        let step =
            residual_quantize_level::launch(rt, offsets, r, &codebook, &codebook_t, c, &level);
        if codes.is_none() {
            rt.free(c.buffer.clone())?;
        }
        rt.free(codebook.buffer)?;
        rt.free(codebook_t.buffer)?;
        rt.free(level.buffer)?;
        let (new_codes, new_residual) = step?;
        for old in [codes.take(), residual.take()].into_iter().flatten() {
            rt.free(old.buffer)?;
        }
        codes = Some(new_codes);
        residual = Some(new_residual);
    }
    if let Some(r) = residual {
        rt.free(r.buffer)?;
    }
    codes.ok_or_else(|| input_error("residual_quantize", "no level".to_string()))
}

/// `sid_embed` (OPS.md): `values [N, D]` (`[T, D]` on `offsets`) `=
/// sum_l codebooks[l, codes[:, l]]` for `codes [N, levels]` i32 and
/// `codebooks [levels, K, D]` (f32, f16 or bf16; the sum in f32, rounded to
/// the codebooks' dtype); a code outside `0..K` adds 0.
pub fn sid_embed(
    rt: &mut Runtime,
    codes: &DeviceTensor,
    offsets: Option<&DeviceTensor>,
    codebooks: &DeviceTensor,
) -> Result<DeviceTensor, QuantizeError> {
    const OP: &str = "sid_embed";
    let [levels, k, d] = codebooks.shape[..] else {
        return Err(input_error(
            OP,
            format!(
                "`codebooks` must be [levels, K, D], found shape {:?}",
                codebooks.shape
            ),
        ));
    };
    if codes.shape.len() != 2 || codes.shape[1] != levels {
        return Err(input_error(
            OP,
            format!(
                "`codes` must be [N, {levels}] (one code per level of the codebooks), found shape {:?}",
                codes.shape
            ),
        ));
    }
    if d == 0 || levels == 0 {
        // Nothing to gather: D = 0 columns, or a sum of no levels (zeros).
        let n = codes.shape[0];
        let zeros = DenseTensor::from_f64(codebooks.dtype(), vec![n, d], &vec![0.0; n * d])
            .map_err(|e| input_error(OP, e.to_string()))?;
        return Ok(rt.upload_tensor(&zeros)?);
    }
    let rows = Rows::new(rt, OP, "codes", codes, offsets)?;
    let bases: Vec<i32> = (0..levels)
        .map(|l| i32::try_from(l * k))
        .collect::<Result<_, _>>()
        .map_err(|_| input_error(OP, "`codebooks` has more than 2^31 - 1 rows".to_string()))?;
    let base = DeviceTensor {
        buffer: rt.upload(&bases)?,
        shape: vec![levels],
    };
    let table = reshaped(codebooks, vec![levels * k, d]);
    let values = sid_embed_kernel::launch(rt, &rows.offsets, codes, &table, &base, k);
    rt.free(base.buffer)?;
    rows.free(rt)?;
    Ok(values?)
}
