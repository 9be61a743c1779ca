//! A PCA rotation before residual quantization (issue 10, item 4:
//! "DPCA-style": a PCA rotation, then RQ over the principal subspaces),
//! composed from the ops of [`super::quantize`] and
//! [`super::quantize_train`], the rotation learned on the host in f64.
//!
//! | step | where | how |
//! |---|---|---|
//! | rotation | host, f64 | [`pca_rotation_f64`]: the mean and the covariance `C = (1/N) sum_n (x_n - m)^T (x_n - m)` of the training rows, `C`'s eigendecomposition by cyclic Jacobi ([`symmetric_eigen`]); `R [D, D]` has the eigenvectors as columns, by decreasing eigenvalue |
//! | rotate | device | [`pca_rotate_kernel`](mod@pca_rotate_kernel): `x' = (x - m) @ R` (`(x.cast::<f32>() - mean).matmul(rotation)`), dense `[N, D]` or jagged `[T, D]` |
//! | rotate back | device | [`pca_unrotate_kernel`](mod@pca_unrotate_kernel): `x = x' @ R^T + m` |
//! | train | device | [`rotated_rq_train`]: `rq_train` on the rotated rows, level `l` restricted to the leading `subspaces[l]` principal coordinates (below) |
//! | encode | device | [`rotated_residual_quantize`]: rotate, then `residual_quantize` (greedy or beam) |
//! | decode | device | [`rotated_sid_embed`]: `sid_embed`, then rotate back |
//!
//! **Rotation alone changes nothing.** Squared distances are invariant
//! under an orthogonal `R` and a translation, so k-means, greedy and beam
//! residual quantization on `x'` are those on `x` rotated: the same
//! assignments, k-means++ draws the same rows for the same seed, and the
//! reconstruction error is the same up to f32 rounding
//! (`tests/quantize_rotation.rs` checks it). What the rotation brings is
//! coordinates in which the principal subspaces are the leading ones, so
//! that a level can be **restricted** to them.
//!
//! **RQ over the principal subspaces.** [`RotatedRqOptions::subspaces`]
//! gives each level `l` a number `p_l` of leading principal coordinates
//! (`0 ..= D`, nested subspaces `span(e_0 .. e_{p_l - 1})` of the rotated
//! space, not necessarily growing): level `l`'s codebook is trained by
//! k-means (`rq_train` with one level) on the first `p_l` coordinates of
//! the residual that levels `0 .. l` leave, and is zero in the other `D -
//! p_l`; its residual is passed on in all `D` coordinates. Stored as
//! `[levels, K, D]` codebooks with those zeros, encoding and decoding are
//! the unmodified `residual_quantize` and `sid_embed`: a codeword zero
//! outside the subspace has the distance `|c|^2 - 2 r . c` of the
//! restricted problem exactly (the added products are zeros). With every
//! `p_l = D` (the default, an empty `subspaces`), training is `rq_train`
//! on the rotated rows. The restriction is where the rotation pays: a
//! level whose k-means sees only the leading principal coordinates is not
//! disturbed by the variance of the others (its k-means++ seeds on the
//! structure there, not on the noise elsewhere). On rows made of a coarse
//! 16-cluster grid in 4 directions, an independent finer one in 4 more and
//! isotropic noise in the remaining 24, all rotated randomly, two levels of
//! 16 codewords with `subspaces = [4, 8]` reach an MSE of 6.27 (the noise
//! floor is about 6.08) where plain RQ leaves 11.63, grid corners merged
//! (`tests/quantize_rotation.rs`; 1.28x to 1.86x over six seeds). On rows
//! without such structure a restriction gains little or loses (a level
//! cannot encode what lies outside its subspace).
//!
//! SIDE (Ramasamy et al., 2025) names its quantizer Discrete-PCA without
//! the details being at hand here: this module is our reading of the
//! issue's "a PCA rotation, then RQ over the principal subspaces", one
//! rotation learned once, levels restricted to nested leading subspaces of
//! it (no per-level PCA of the residuals).
//!
//! A level restricted this way is trained with `rq_train`'s k-means and
//! seed `options.seed + l` (one `rq_train` call per level); with no
//! restriction, one `rq_train` call trains all levels from `seed`.
//!
//! The rotated rows, the codebooks and the decoded rows are f32 (the
//! rotation kernel reads f32, f16 or bf16 rows and computes in f32);
//! training takes f32 rows `[N, D]`, `N >= K` (as `rq_train`).

use jagged_ir::{DType, DenseTensor};
use jagged_runtime::{DeviceTensor, Runtime};

use super::KernelError;
use super::dsl::*;
use super::quantize::{
    QuantizeError, ResidualQuantizeOptions, residual_quantize, residual_quantize_level, sid_embed,
    transpose,
};
use super::quantize_train::{KMeansOptions, rq_train};

/// `y = (x - mean) @ rotation`, per row: `x [T, D]` (any float dtype, read
/// as f32), `mean [D]`, `rotation [D, E]` (f32), `y [T, E]` f32, the
/// products accumulated in f32.
#[jagged_kernel(name = "pca_rotate", outputs(y))]
pub fn pca_rotate_kernel<T: Float, D, E>(
    x: Jagged<T, (D,)>,
    mean: Dense<f32, (D,)>,
    rotation: Dense<f32, (D, E)>,
) -> Jagged<f32, (E,)> {
    (x.cast::<f32>() - mean).matmul(rotation)
}

/// `x = y @ rotation_t + mean`, per row: `y [T, E]` (any float dtype, read
/// as f32), `rotation_t [E, D]` (the rotation transposed), `mean [D]`
/// (f32), `x [T, D]` f32.
#[jagged_kernel(name = "pca_unrotate", outputs(x))]
pub fn pca_unrotate_kernel<T: Float, E, D>(
    y: Jagged<T, (E,)>,
    rotation_t: Dense<f32, (E, D)>,
    mean: Dense<f32, (D,)>,
) -> Jagged<f32, (D,)> {
    y.cast::<f32>().matmul(rotation_t) + mean
}

/// The features `index [P]` of every row of `x [T, D]` (f32): `y[t, p] =
/// x[t, index[p]]`, exact (a copy).
#[jagged_kernel(name = "take_leading_features", outputs(y))]
pub fn take_leading_features<D, P>(
    x: Jagged<f32, (D,)>,
    index: Dense<i32, (P,)>,
) -> Jagged<f32, (P,)> {
    x.take_features(index)
}

/// The eigendecomposition of a real symmetric matrix, by
/// [`symmetric_eigen`].
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetricEigen {
    /// The eigenvalues, largest first.
    pub values: Vec<f64>,
    /// `V [n, n]` row-major: column `j` (`vectors[i * n + j]`, `i = 0 ..
    /// n`) is the unit eigenvector of `values[j]`, its entry of largest
    /// magnitude positive (the first one among equal magnitudes).
    pub vectors: Vec<f64>,
    /// Jacobi sweeps done.
    pub sweeps: usize,
}

/// The most Jacobi sweeps [`symmetric_eigen`] makes (it converges
/// quadratically: a dozen is typical for `n` in the hundreds).
const MAX_SWEEPS: usize = 100;

/// The eigenvalues and eigenvectors of the symmetric `a [n, n]` (row-major,
/// f64; only read as `(a + a^T) / 2`) by the cyclic Jacobi method: sweeps
/// over the pairs `p < q` in row order, each rotation zeroing `a[p, q]`
/// (Golub and Van Loan, "Matrix Computations", 8.5), until the
/// off-diagonal Frobenius norm is at most `1e-15` of the whole one, or no
/// rotation changes anything, or after 100 sweeps. Eigenvalues
/// are sorted largest first (stably: equal ones keep their diagonal
/// order), and each eigenvector's sign is fixed by its largest entry.
///
/// Non-finite entries give non-finite results (no error).
///
/// # Panics
///
/// If `a.len() != n * n`.
pub fn symmetric_eigen(a: &[f64], n: usize) -> SymmetricEigen {
    assert_eq!(
        a.len(),
        n * n,
        "symmetric_eigen: `a` must hold n * n entries"
    );
    let mut m: Vec<f64> = (0..n * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            0.5 * (a[i * n + j] + a[j * n + i])
        })
        .collect();
    let mut v: Vec<f64> = (0..n * n)
        .map(|e| if e / n == e % n { 1.0 } else { 0.0 })
        .collect();
    let total: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut sweeps = 0;
    while sweeps < MAX_SWEEPS {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        // Converged, or not finite (NaN: nothing to gain from more sweeps).
        if off <= 1e-15 * total || off.is_nan() {
            break;
        }
        sweeps += 1;
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                // The rotation [[c, s], [-s, c]] in the (p, q) plane with
                // t = s / c the smaller root of t^2 + 2 theta t - 1 = 0.
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                    sign / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                if s == 0.0 {
                    continue;
                }
                rotated = true;
                // m <- m J (columns p and q), then J^T m (rows p and q).
                for k in 0..n {
                    let (kp, kq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * kp - s * kq;
                    m[k * n + q] = s * kp + c * kq;
                }
                for k in 0..n {
                    let (pk, qk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * pk - s * qk;
                    m[q * n + k] = s * pk + c * qk;
                }
                m[p * n + q] = 0.0;
                m[q * n + p] = 0.0;
                for k in 0..n {
                    let (kp, kq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * kp - s * kq;
                    v[k * n + q] = s * kp + c * kq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let values: Vec<f64> = order.iter().map(|&i| m[i * n + i]).collect();
    let mut vectors = vec![0.0; n * n];
    for (j, &src) in order.iter().enumerate() {
        let mut big = 0;
        for i in 0..n {
            if v[i * n + src].abs() > v[big * n + src].abs() {
                big = i;
            }
        }
        let sign = if v[big * n + src] < 0.0 { -1.0 } else { 1.0 };
        for i in 0..n {
            vectors[i * n + j] = sign * v[i * n + src];
        }
    }
    SymmetricEigen {
        values,
        vectors,
        sweeps,
    }
}

/// A PCA rotation learned on the host in f64 ([`pca_rotation_f64`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PcaRotation {
    /// `D`, the features of a row.
    pub dim: usize,
    /// The mean row `[D]` of the training rows.
    pub mean: Vec<f64>,
    /// `R [D, D]` row-major: column `j` (`rotation[i * D + j]`) is the
    /// principal direction of `variances[j]`; orthonormal.
    pub rotation: Vec<f64>,
    /// The variance of the training rows along each principal direction
    /// (the covariance's eigenvalues, the covariance normalized by `N`),
    /// largest first.
    pub variances: Vec<f64>,
}

fn input_error(op: &'static str, problem: String) -> QuantizeError {
    QuantizeError::Input { op, problem }
}

/// The PCA rotation of the rows `x [n, d]` (row-major, f64): their mean,
/// their covariance `(1/n) sum (x_i - mean)^T (x_i - mean)` (summed in f64,
/// row after row) and its eigendecomposition ([`symmetric_eigen`]).
/// `n = 0` gives a zero mean and the identity.
pub fn pca_rotation_f64(x: &[f64], d: usize) -> Result<PcaRotation, QuantizeError> {
    const OP: &str = "pca_rotation";
    if d == 0 {
        return Ok(PcaRotation {
            dim: 0,
            mean: Vec::new(),
            rotation: Vec::new(),
            variances: Vec::new(),
        });
    }
    if !x.len().is_multiple_of(d) {
        return Err(input_error(
            OP,
            format!("{} values are no whole number of rows of {d}", x.len()),
        ));
    }
    let n = x.len() / d;
    let mut mean = vec![0.0; d];
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    if n > 0 {
        for m in &mut mean {
            *m /= n as f64;
        }
    }
    let mut cov = vec![0.0; d * d];
    let mut centered = vec![0.0; d];
    for row in x.chunks_exact(d) {
        for ((c, v), m) in centered.iter_mut().zip(row).zip(&mean) {
            *c = v - m;
        }
        for i in 0..d {
            for j in i..d {
                cov[i * d + j] += centered[i] * centered[j];
            }
        }
    }
    for i in 0..d {
        for j in i..d {
            let c = if n > 0 {
                cov[i * d + j] / n as f64
            } else {
                0.0
            };
            cov[i * d + j] = c;
            cov[j * d + i] = c;
        }
    }
    let eigen = symmetric_eigen(&cov, d);
    Ok(PcaRotation {
        dim: d,
        mean,
        rotation: eigen.vectors,
        variances: eigen.values,
    })
}

/// The PCA rotation ([`pca_rotation_f64`]) of the rows of `x [N, D]` on
/// the device (f32, f16 or bf16; a jagged tensor's `values` are rows too),
/// downloaded.
pub fn pca_rotation(rt: &mut Runtime, x: &DeviceTensor) -> Result<PcaRotation, QuantizeError> {
    let [_, d] = x.shape[..] else {
        return Err(input_error(
            "pca_rotation",
            format!("`x` must be [N, D], found shape {:?}", x.shape),
        ));
    };
    let host = rt.download_tensor(x)?.to_f64();
    pca_rotation_f64(&host, d)
}

/// The rows of a dense `[N, ..]` input go to the kernels as sequences of
/// this many rows (as the quantize front functions split them).
const DENSE_ROWS: usize = 16;

/// The offsets of a `[rows, ..]` input: the given ones, or for a dense
/// input `[0, 16, 32, .., rows]` (i32, uploaded, to free).
fn row_offsets(
    rt: &mut Runtime,
    op: &'static str,
    rows: usize,
    offsets: Option<&DeviceTensor>,
) -> Result<(DeviceTensor, bool), QuantizeError> {
    if let Some(o) = offsets {
        return Ok((o.clone(), false));
    }
    if i32::try_from(rows).is_err() {
        return Err(input_error(op, "more than 2^31 - 1 rows".to_string()));
    }
    let mut o: Vec<i32> = (0..rows.div_ceil(DENSE_ROWS))
        .map(|b| (b * DENSE_ROWS) as i32)
        .collect();
    o.push(rows as i32);
    let shape = vec![o.len()];
    Ok((
        DeviceTensor {
            buffer: rt.upload(&o)?,
            shape,
        },
        true,
    ))
}

fn upload_f32(
    rt: &mut Runtime,
    values: &[f64],
    shape: Vec<usize>,
) -> Result<DeviceTensor, QuantizeError> {
    let host = DenseTensor::from_f64(DType::F32, shape, values)
        .map_err(|e| input_error("pca_rotation", e.to_string()))?;
    Ok(rt.upload_tensor(&host)?)
}

/// Checks that `t` is `[rows, D]` for the rotation's `D`.
fn check_rows(
    op: &'static str,
    input: &str,
    t: &DeviceTensor,
    rotation: &PcaRotation,
) -> Result<(), QuantizeError> {
    if t.shape.len() != 2 || t.shape[1] != rotation.dim {
        return Err(input_error(
            op,
            format!(
                "`{input}` must be [N, {}] (the rotation's D), found shape {:?}",
                rotation.dim, t.shape
            ),
        ));
    }
    if rotation.mean.len() != rotation.dim || rotation.rotation.len() != rotation.dim.pow(2) {
        return Err(input_error(
            op,
            format!(
                "the rotation holds {} mean and {} matrix entries for D = {}",
                rotation.mean.len(),
                rotation.rotation.len(),
                rotation.dim
            ),
        ));
    }
    Ok(())
}

/// Runs `launch` on the offsets of a `[rows, ..]` input (made for a dense
/// one) and `constants` (uploaded by `make` after the offsets), then frees
/// what it made. `d = 0` gives `[rows, 0]` without a launch.
fn on_rows(
    rt: &mut Runtime,
    op: &'static str,
    [rows, d]: [usize; 2],
    offsets: Option<&DeviceTensor>,
    make: impl FnOnce(&mut Runtime) -> Result<[DeviceTensor; 2], QuantizeError>,
    launch: impl FnOnce(
        &mut Runtime,
        &DeviceTensor,
        &[DeviceTensor; 2],
    ) -> Result<DeviceTensor, KernelError>,
) -> Result<DeviceTensor, QuantizeError> {
    if d == 0 {
        return Ok(DeviceTensor {
            buffer: rt.alloc(DType::F32, 0)?,
            shape: vec![rows, 0],
        });
    }
    let (o, owned) = row_offsets(rt, op, rows, offsets)?;
    let result = match make(rt) {
        Ok(constants) => {
            let result = launch(rt, &o, &constants).map_err(QuantizeError::from);
            for c in constants {
                rt.free(c.buffer)?;
            }
            result
        }
        Err(e) => Err(e),
    };
    if owned {
        rt.free(o.buffer)?;
    }
    result
}

/// `x' = (x - mean) @ R` (f32 `[N, D]`, or `[T, D]` on `offsets`) for the
/// rows of `x` (f32, f16 or bf16), on the device
/// ([`pca_rotate_kernel`](mod@pca_rotate_kernel)).
pub fn rotate(
    rt: &mut Runtime,
    x: &DeviceTensor,
    offsets: Option<&DeviceTensor>,
    rotation: &PcaRotation,
) -> Result<DeviceTensor, QuantizeError> {
    const OP: &str = "pca_rotate";
    check_rows(OP, "x", x, rotation)?;
    let d = rotation.dim;
    let make = |rt: &mut Runtime| {
        Ok([
            upload_f32(rt, &rotation.mean, vec![d])?,
            upload_f32(rt, &rotation.rotation, vec![d, d])?,
        ])
    };
    on_rows(
        rt,
        OP,
        [x.shape[0], d],
        offsets,
        make,
        |rt, o, [mean, r]| pca_rotate_kernel::launch(rt, o, x, mean, r),
    )
}

/// The inverse of [`rotate`]: `x = x' @ R^T + mean` (f32 `[N, D]`, or `[T,
/// D]` on `offsets`) for rows `x'` in the rotated coordinates (f32, f16 or
/// bf16), on the device ([`pca_unrotate_kernel`](mod@pca_unrotate_kernel)).
pub fn unrotate(
    rt: &mut Runtime,
    y: &DeviceTensor,
    offsets: Option<&DeviceTensor>,
    rotation: &PcaRotation,
) -> Result<DeviceTensor, QuantizeError> {
    const OP: &str = "pca_unrotate";
    check_rows(OP, "y", y, rotation)?;
    let d = rotation.dim;
    let transposed = transpose(&rotation.rotation, d, d);
    let make = |rt: &mut Runtime| {
        Ok([
            upload_f32(rt, &transposed, vec![d, d])?,
            upload_f32(rt, &rotation.mean, vec![d])?,
        ])
    };
    on_rows(
        rt,
        OP,
        [y.shape[0], d],
        offsets,
        make,
        |rt, o, [r_t, mean]| pca_unrotate_kernel::launch(rt, o, y, r_t, mean),
    )
}

/// The options of [`rotated_rq_train`].
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RotatedRqOptions {
    /// The k-means of each level (as [`rq_train`]'s).
    pub kmeans: KMeansOptions,
    /// Per level, the number of leading principal coordinates its codebook
    /// lives in (`0 ..= D`); empty: all `D` at every level (plain RQ on the
    /// rotated rows). See the module docs.
    pub subspaces: Vec<usize>,
}

/// A residual quantizer in PCA coordinates: what [`rotated_rq_train`]
/// learns, [`rotated_residual_quantize`] encodes with and
/// [`rotated_sid_embed`] decodes with.
#[derive(Debug)]
pub struct RotatedRq {
    /// The rotation (learned on the training rows).
    pub rotation: PcaRotation,
    /// `[levels, K, D]` f32 codebooks in the rotated coordinates, level `l`
    /// zero beyond its first `subspaces[l]` coordinates.
    pub codebooks: DeviceTensor,
    /// Each level's leading principal coordinates (`D` where unrestricted).
    pub subspaces: Vec<usize>,
}

impl RotatedRq {
    /// Frees the codebooks.
    pub fn free(self, rt: &mut Runtime) -> Result<(), QuantizeError> {
        rt.free(self.codebooks.buffer)?;
        Ok(())
    }
}

/// Trains a [`RotatedRq`] on the rows `x [N, D]` (f32, `N >= K`): the PCA
/// rotation of the rows (host, f64), the rows rotated (device), then
/// `levels` levels of `k` codewords by `rq_train`'s k-means, level `l` on
/// the leading `options.subspaces[l]` coordinates of its residuals (see
/// the module docs).
pub fn rotated_rq_train(
    rt: &mut Runtime,
    x: &DeviceTensor,
    levels: usize,
    k: usize,
    options: &RotatedRqOptions,
) -> Result<RotatedRq, QuantizeError> {
    const OP: &str = "rotated_rq_train";
    let [n, d] = x.shape[..] else {
        return Err(input_error(
            OP,
            format!("`x` must be [N, D], found shape {:?}", x.shape),
        ));
    };
    let subspaces = if options.subspaces.is_empty() {
        vec![d; levels]
    } else {
        options.subspaces.clone()
    };
    if subspaces.len() != levels {
        return Err(input_error(
            OP,
            format!("{} subspaces given for {levels} levels", subspaces.len()),
        ));
    }
    if let Some(p) = subspaces.iter().find(|&&p| p > d) {
        return Err(input_error(
            OP,
            format!("a subspace of {p} principal coordinates, more than D = {d}"),
        ));
    }
    if x.dtype() != DType::F32 {
        return Err(input_error(
            OP,
            format!("`x` must be f32 (training is in f32), found {}", x.dtype()),
        ));
    }
    let rotation = pca_rotation(rt, x)?;
    let rotated = rotate(rt, x, None, &rotation)?;
    let trained = if subspaces.iter().all(|&p| p == d) {
        rq_train(rt, &rotated, levels, k, &options.kmeans)
    } else {
        train_in_subspaces(rt, &rotated, [n, d, k], &subspaces, &options.kmeans)
    };
    rt.free(rotated.buffer)?;
    Ok(RotatedRq {
        rotation,
        codebooks: trained?,
        subspaces,
    })
}

/// The levels of [`rotated_rq_train`] with subspaces: per level, the
/// leading coordinates of the residual ([`take_leading_features`]), a
/// one-level `rq_train` on them, its codebook padded with zeros to `D`,
/// and the residual passed on by `residual_quantize`'s level kernel.
fn train_in_subspaces(
    rt: &mut Runtime,
    rotated: &DeviceTensor,
    [n, d, k]: [usize; 3],
    subspaces: &[usize],
    kmeans: &KMeansOptions,
) -> Result<DeviceTensor, QuantizeError> {
    let levels = subspaces.len();
    let (offsets, _) = row_offsets(rt, "rotated_rq_train", n, None)?;
    let level = DeviceTensor {
        buffer: rt.upload(&[1i32])?,
        shape: vec![1],
    };
    let zeros = DeviceTensor {
        buffer: rt.alloc(DType::I32, n)?,
        shape: vec![n, 1],
    };
    let mut books = vec![0.0; levels * k * d];
    let result = (|| {
        let mut residual: Option<DeviceTensor> = None;
        for (l, &p) in subspaces.iter().enumerate() {
            if p == 0 {
                // A level of zero codewords: the residual passes unchanged.
                continue;
            }
            let r = residual.as_ref().unwrap_or(rotated);
            let index: Vec<i32> = (0..p as i32).collect();
            let index = DeviceTensor {
                buffer: rt.upload(&index)?,
                shape: vec![p],
            };
            let sub = take_leading_features::launch(rt, &offsets, r, &index);
            rt.free(index.buffer)?;
            let sub = sub?;
            let options = KMeansOptions {
                seed: kmeans.seed.wrapping_add(l as u64),
                ..*kmeans
            };
            let book = rq_train(rt, &sub, 1, k, &options);
            rt.free(sub.buffer)?;
            let book = book?;
            let host = rt.download::<f32>(&book.buffer);
            rt.free(book.buffer)?;
            let host = host?;
            let padded = &mut books[l * k * d..(l + 1) * k * d];
            for j in 0..k {
                for e in 0..p {
                    padded[j * d + e] = f64::from(host[j * p + e]);
                }
            }
            let transposed = transpose(padded, k, d);
            let codebook = upload_f32(rt, padded, vec![k, d])?;
            let codebook_t = upload_f32(rt, &transposed, vec![d, k])?;
            let step = residual_quantize_level::launch(
                rt,
                &offsets,
                r,
                &codebook,
                &codebook_t,
                &zeros,
                &level,
            );
            rt.free(codebook.buffer)?;
            rt.free(codebook_t.buffer)?;
            let (codes, next) = step?;
            rt.free(codes.buffer)?;
            if let Some(old) = residual.replace(next) {
                rt.free(old.buffer)?;
            }
        }
        if let Some(old) = residual {
            rt.free(old.buffer)?;
        }
        upload_f32(rt, &books, vec![levels, k, d])
    })();
    for t in [offsets, level, zeros] {
        rt.free(t.buffer)?;
    }
    result
}

/// The codes `[N, levels]` (`[T, levels]` on `offsets`, i32) of the rows
/// of `x` (f32, f16 or bf16) under `model`: the rows rotated, then
/// `residual_quantize` with `options` (greedy or beam) on the model's
/// codebooks.
pub fn rotated_residual_quantize(
    rt: &mut Runtime,
    x: &DeviceTensor,
    offsets: Option<&DeviceTensor>,
    model: &RotatedRq,
    options: &ResidualQuantizeOptions,
) -> Result<DeviceTensor, QuantizeError> {
    let rotated = rotate(rt, x, offsets, &model.rotation)?;
    let codes = residual_quantize(rt, &rotated, offsets, &model.codebooks, options);
    rt.free(rotated.buffer)?;
    codes
}

/// The rows `[N, D]` (`[T, D]` on `offsets`, f32) that `codes` stand for
/// under `model`: `sid_embed` on the model's codebooks (rotated
/// coordinates), then rotated back, `x = e @ R^T + mean`.
pub fn rotated_sid_embed(
    rt: &mut Runtime,
    codes: &DeviceTensor,
    offsets: Option<&DeviceTensor>,
    model: &RotatedRq,
) -> Result<DeviceTensor, QuantizeError> {
    let embedded = sid_embed(rt, codes, offsets, &model.codebooks)?;
    let values = unrotate(rt, &embedded, offsets, &model.rotation);
    rt.free(embedded.buffer)?;
    values
}
