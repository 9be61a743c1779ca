//! The semantic-ID ops of OPS.md (`jagged::ops::quantize`) on the
//! emulator:
//!
//! - every kernel x dtype x offsets dtype x arch against the IR's f64
//!   reference over the adversarial lengths of `jagged::testing`;
//! - the front functions against an f64 reference written here (naive
//!   loops) on inputs built without near-ties, codes compared exactly:
//!   dense and jagged inputs (empty sequences), `N = 0, 1, 33`, `K = 1,
//!   256`, `D` no multiple of 32, f32 / f16 / bf16, i32 / i64 offsets,
//!   duplicate codewords (the lower index must win);
//! - `sid_embed` within f32 tolerance, out-of-range codes adding 0;
//! - `beam = 0` is a typed error; beam search (`beam` 2, 5) equals an f64 beam search;
//! - ptxas: every kernel assembles for sm_80 and sm_90a without spills.

mod common;

use std::sync::Arc;

use jagged::codegen::{Arch, Spec, compile_with_plan, ptxas};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph};
use jagged::ops::quantize::*;
use jagged::runtime::{BackendKind, DeviceTensor, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference, rel_l2};

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

/// A kernel's name, graph and run attributes.
type Kernel = (&'static str, Graph, Vec<(&'static str, AttrValue)>);

/// The codes of a row and its smallest relative gap.
type Encoder<'a> = &'a dyn Fn(&[f64]) -> (Vec<usize>, f64);

fn built(g: Result<Graph, jagged::KernelError>) -> Graph {
    g.unwrap_or_else(|e| panic!("{e}"))
}

/// The kernels' graphs for a dtype and offsets dtype, with the attributes
/// their runs need: `(name, graph, attrs)`.
fn kernels(dtype: DType, index: DType) -> Vec<Kernel> {
    vec![
        (
            "product_quantize",
            // M = 3 sub-vectors of 7 features, K = 37 centroids.
            built(product_quantize_kernel::graph(dtype, 3, 37, 7, index)),
            vec![],
        ),
        (
            "residual_quantize_level (first level)",
            // K = 33 codewords of D = 21, L = 3 levels.
            built(residual_quantize_level::graph(
                dtype, dtype, 33, 21, 3, index,
            )),
            vec![],
        ),
        (
            "residual_quantize_level",
            built(residual_quantize_level::graph(
                DType::F32,
                dtype,
                33,
                21,
                3,
                index,
            )),
            vec![],
        ),
        (
            "residual_quantize_beam_level",
            // 2 kept encodings of D = 21, K = 5 codewords: 10 candidates,
            // 3 kept, L = 4 levels.
            built(residual_quantize_beam_level::graph(
                dtype, dtype, 2, 21, 5, 10, 3, 4, index,
            )),
            vec![],
        ),
        (
            "residual_quantize_best",
            built(residual_quantize_best::graph(3, 4, index)),
            vec![],
        ),
        (
            "sid_embed",
            // L = 3 levels of K = 5 codewords (R = 15 rows) of D = 21; codes
            // 0..7, so some are out of range.
            built(sid_embed_kernel::graph(dtype, 3, 15, 21, index)),
            vec![("codewords", AttrValue::Index(5))],
        ),
    ]
}

/// Every kernel, dtype, offsets dtype and arch against the IR's reference
/// (random inputs: codes are compared exactly by the tolerance of an i32
/// output, whose every flipped code is far beyond it).
#[test]
fn every_kernel_matches_the_reference_on_the_emulator() {
    let mut rt = runtime();
    let mut checked = 0;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for index in [DType::I32, DType::I64] {
            for (name, g, attrs) in kernels(dtype, index) {
                for arch in Arch::ALL {
                    let what = format!("{name} {dtype} {index} {arch}");
                    let spec = Spec::for_graph(&g, 16, arch).expect("spec");
                    let (_, plan) =
                        compile_with_plan(&g, &spec).unwrap_or_else(|e| panic!("{what}: {e}"));
                    check_spec_against_reference(
                        &g,
                        &spec,
                        &mut rt,
                        16,
                        &attrs,
                        &mut Rng::new(7),
                        Tolerance::design,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}\n{plan}"));
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * 6 * 2);
}

/// Every kernel assembles for sm_80 and sm_90a with no spill or stack frame.
#[test]
fn quantize_kernels_assemble_without_spills() {
    let found = ptxas::find().ok_or_else(|| "was not found".to_string());
    let test = "quantize_kernels_assemble_without_spills";
    if common::tools::require(test, "ptxas", found).is_none() {
        return;
    }
    for dtype in [DType::F32, DType::BF16] {
        let mut graphs = kernels(dtype, DType::I64);
        // The sizes of semantic IDs: 256 codewords, D = 64 (PQ: 8 x 8).
        graphs.push((
            "product_quantize K=256",
            built(product_quantize_kernel::graph(dtype, 8, 256, 8, DType::I32)),
            vec![],
        ));
        graphs.push((
            "residual_quantize_level K=256",
            built(residual_quantize_level::graph(
                DType::F32,
                dtype,
                256,
                64,
                4,
                DType::I32,
            )),
            vec![],
        ));
        // The limits: K = 4096 codewords, D = 512 (PQ: 8 x 64).
        graphs.push((
            "product_quantize K=4096 D=512",
            built(product_quantize_kernel::graph(
                dtype,
                8,
                4096,
                64,
                DType::I32,
            )),
            vec![],
        ));
        graphs.push((
            "residual_quantize_level K=4096 D=512",
            built(residual_quantize_level::graph(
                DType::F32,
                dtype,
                4096,
                512,
                8,
                DType::I32,
            )),
            vec![],
        ));
        graphs.push((
            "residual_quantize_beam_level K=4096 D=512 beam 8",
            built(residual_quantize_beam_level::graph(
                DType::F32,
                dtype,
                8,
                512,
                4096,
                8 * 4096,
                8,
                8,
                DType::I32,
            )),
            vec![],
        ));
        graphs.push((
            "sid_embed K=4096 D=512",
            built(sid_embed_kernel::graph(dtype, 8, 8 * 4096, 512, DType::I32)),
            vec![],
        ));
        for (name, g, _) in graphs {
            for arch in Arch::ALL {
                let spec = Spec::for_graph(&g, 256, arch).expect("spec");
                let (kernel, _) = compile_with_plan(&g, &spec).expect("compiles");
                let report = ptxas::assemble(&kernel.ptx, arch)
                    .unwrap_or_else(|e| panic!("{name} {dtype} {arch}: {e}"));
                assert!(
                    report.offenders().is_empty(),
                    "{name} {dtype} {arch}: {:?}",
                    report.offenders()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The f64 reference of the front functions, and inputs without near-ties.

/// The squared distances of `x` to each of `k` codewords of `book` (rows of
/// `x.len()`), in f64.
fn distances(x: &[f64], book: &[f64], k: usize) -> Vec<f64> {
    let d = x.len();
    (0..k)
        .map(|j| {
            x.iter()
                .zip(&book[j * d..(j + 1) * d])
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        })
        .collect()
}

/// The nearest codeword (lowest index on ties) and the relative gap to the
/// nearest codeword that differs from it (infinite when none does).
fn nearest(x: &[f64], book: &[f64], k: usize) -> (usize, f64) {
    let d = x.len();
    let dist = distances(x, book, k);
    let best = (0..k)
        .min_by(|&a, &b| dist[a].partial_cmp(&dist[b]).unwrap().then(a.cmp(&b)))
        .expect("k > 0");
    let row = |j: usize| &book[j * d..(j + 1) * d];
    let second = (0..k)
        .filter(|&j| row(j) != row(best))
        .map(|j| dist[j])
        .fold(f64::INFINITY, f64::min);
    let scale: f64 = x.iter().map(|v| v * v).sum::<f64>() + dist[best] + 1.0;
    (best, (second - dist[best]) / scale)
}

/// The smallest gap a case may have: far above f32's rounding of the
/// distances (products accumulated in f32 over at most a few hundred
/// terms), so the f32 kernels must find the reference's codes exactly.
const MIN_GAP: f64 = 1e-4;

/// PQ codes of one row (`x [M * S]`, `centroids [M, K, S]`), and the
/// smallest gap.
fn pq_row(x: &[f64], centroids: &[f64], m: usize, k: usize) -> (Vec<usize>, f64) {
    let s = x.len() / m;
    let mut gap = f64::INFINITY;
    let codes = (0..m)
        .map(|g| {
            let (c, gp) = nearest(
                &x[g * s..(g + 1) * s],
                &centroids[g * k * s..(g + 1) * k * s],
                k,
            );
            gap = gap.min(gp);
            c
        })
        .collect();
    (codes, gap)
}

/// Greedy RQ codes of one row (`codebooks [L, K, D]`), and the smallest gap.
fn rq_row(x: &[f64], codebooks: &[f64], levels: usize, k: usize) -> (Vec<usize>, f64) {
    let d = x.len();
    let mut r = x.to_vec();
    let mut gap = f64::INFINITY;
    let mut codes = Vec::new();
    for l in 0..levels {
        let book = &codebooks[l * k * d..(l + 1) * k * d];
        let (c, gp) = nearest(&r, book, k);
        gap = gap.min(gp);
        for (ri, bi) in r.iter_mut().zip(&book[c * d..(c + 1) * d]) {
            *ri -= bi;
        }
        codes.push(c);
    }
    (codes, gap)
}

/// `n` random values of `dtype` in [-2, 2).
fn random(rng: &mut Rng, dtype: DType, n: usize) -> Vec<f64> {
    (0..n).map(|_| dtype.round(rng.float(2.0))).collect()
}

/// Codebooks `[groups, K, S]` with duplicate codewords: in each group,
/// codeword `K - 1 - j` repeats codeword `j` for every third `j` below `K
/// / 2`, and the last codeword repeats the first.
fn codebooks_with_duplicates(
    rng: &mut Rng,
    dtype: DType,
    groups: usize,
    k: usize,
    s: usize,
) -> Vec<f64> {
    let mut c = random(rng, dtype, groups * k * s);
    for g in 0..groups {
        let base = g * k * s;
        let mut copy = |from: usize, to: usize| {
            for e in 0..s {
                c[base + to * s + e] = c[base + from * s + e];
            }
        };
        for j in (0..k / 2).step_by(3) {
            copy(j, k - 1 - j);
        }
        if k > 1 {
            copy(0, k - 1);
        }
    }
    c
}

/// Rows of `d` features for which `codes_of` has no near-tie: random rows,
/// redrawn (up to 200 times; then the last draw is kept only if exactly
/// tied codewords are the cause, which the test allows) until the gap is
/// at least [`MIN_GAP`]. Returns the rows and their codes.
fn rows_without_near_ties(
    rng: &mut Rng,
    dtype: DType,
    n: usize,
    d: usize,
    codes_of: Encoder<'_>,
) -> (Vec<f64>, Vec<usize>) {
    let mut x = Vec::with_capacity(n * d);
    let mut codes = Vec::new();
    for _ in 0..n {
        let mut tries = 0;
        loop {
            let row = random(rng, dtype, d);
            let (c, gap) = codes_of(&row);
            tries += 1;
            if gap >= MIN_GAP {
                x.extend(row);
                codes.extend(c);
                break;
            }
            assert!(tries < 200, "no row without a near-tie in 200 draws");
        }
    }
    (x, codes)
}

/// A test case's layout: dense `[N, ..]`, or jagged on sequences of these
/// lengths with offsets of this dtype.
#[derive(Clone, Debug)]
enum Layout {
    Dense(usize),
    Jagged(Vec<usize>, DType),
}

impl Layout {
    fn rows(&self) -> usize {
        match self {
            Layout::Dense(n) => *n,
            Layout::Jagged(lengths, _) => lengths.iter().sum(),
        }
    }

    /// The offsets on the device (none for a dense input).
    fn offsets(&self, rt: &mut Runtime) -> Option<DeviceTensor> {
        match self {
            Layout::Dense(_) => None,
            Layout::Jagged(lengths, dtype) => {
                let mut o = vec![0.0];
                for l in lengths {
                    o.push(o[o.len() - 1] + *l as f64);
                }
                let t = DenseTensor::from_f64(*dtype, vec![o.len()], &o).expect("offsets");
                Some(rt.upload_tensor(&t).expect("upload"))
            }
        }
    }
}

/// The layouts of the front-function checks: `N = 0, 1, 33`, and jagged
/// batches with empty sequences (and only empty ones), both offsets dtypes.
fn layouts() -> Vec<Layout> {
    vec![
        Layout::Dense(0),
        Layout::Dense(1),
        Layout::Dense(33),
        Layout::Jagged(vec![], DType::I32),
        Layout::Jagged(vec![0, 0], DType::I64),
        Layout::Jagged(vec![3, 0, 17, 1, 0, 12], DType::I32),
        Layout::Jagged(vec![0, 9, 0, 24], DType::I64),
    ]
}

fn upload(rt: &mut Runtime, dtype: DType, shape: Vec<usize>, values: &[f64]) -> DeviceTensor {
    let t = DenseTensor::from_f64(dtype, shape, values).expect("tensor");
    rt.upload_tensor(&t).expect("upload")
}

fn download(rt: &mut Runtime, t: &DeviceTensor) -> DenseTensor {
    rt.download_tensor(t).expect("download")
}

/// `product_quantize` equals the f64 reference exactly: every layout, K = 1,
/// 37 and 256, D = 21 (M = 3) and 40 (M = 8, S = 5), duplicate centroids.
#[test]
fn product_quantize_matches_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(21);
    let mut checked = 0;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (m, k, s) in [(3, 37, 7), (8, 256, 5), (3, 1, 7), (1, 16, 40)] {
            let centroids = codebooks_with_duplicates(&mut rng, dtype, m, k, s);
            for layout in layouts() {
                let n = layout.rows();
                let pq = |row: &[f64]| pq_row(row, &centroids, m, k);
                let (x, want) = rows_without_near_ties(&mut rng, dtype, n, m * s, &pq);
                let what = format!("{dtype} M={m} K={k} S={s} {layout:?}");
                let xd = upload(&mut rt, dtype, vec![n, m * s], &x);
                let cd = upload(&mut rt, dtype, vec![m, k, s], &centroids);
                let o = layout.offsets(&mut rt);
                let codes = product_quantize(&mut rt, &xd, o.as_ref(), &cd)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let got = download(&mut rt, &codes);
                assert_eq!(got.dtype(), DType::I32, "{what}");
                assert_eq!(got.shape(), [n, m], "{what}");
                let want: Vec<f64> = want.iter().map(|&c| c as f64).collect();
                assert_eq!(got.to_f64(), want, "{what}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 4 * layouts().len());
}

/// Exact ties: every codeword of a group equal, and rows equidistant from
/// two distinct codewords (`x = 0` against `c` and `-c`): the lowest index.
#[test]
fn exact_ties_go_to_the_lowest_index() {
    let mut rt = runtime();
    for dtype in [DType::F32, DType::BF16] {
        let (m, k, s) = (2, 8, 3);
        let mut c = vec![0.0; m * k * s];
        for j in 0..k {
            for e in 0..s {
                // Group 0: all codewords 1.5. Group 1: +-(e + 1), sign by parity.
                c[j * s + e] = 1.5;
                let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
                c[k * s + j * s + e] = sign * (e as f64 + 1.0) * ((j / 2) as f64 + 1.0);
            }
        }
        // Rows: zeros (group 1: ties between j = 0 and 1), and a random one.
        let x = [vec![0.0; m * s], random(&mut Rng::new(3), dtype, m * s)].concat();
        let xd = upload(&mut rt, dtype, vec![2, m * s], &x);
        let cd = upload(&mut rt, dtype, vec![m, k, s], &c);
        let codes = product_quantize(&mut rt, &xd, None, &cd).expect("runs");
        let got = download(&mut rt, &codes).to_f64();
        assert_eq!(got[0], 0.0, "{dtype}: group 0, all codewords equal");
        assert_eq!(got[1], 0.0, "{dtype}: group 1, x = 0 between c and -c");
        assert_eq!(got[2], 0.0, "{dtype}: group 0 of a random row");
        // Residual quantization on the same codewords (levels = groups, D = S).
        let zero = upload(&mut rt, dtype, vec![1, s], &[0.0; 3]);
        let rq = residual_quantize(
            &mut rt,
            &zero,
            None,
            &cd,
            &ResidualQuantizeOptions::default(),
        )
        .expect("runs");
        // Level 0: all equal (0); residual -1.5: level 1 nearest is -(e+1)
        // (j = 1), unique.
        assert_eq!(download(&mut rt, &rq).to_f64(), [0.0, 1.0], "{dtype}");
    }
}

/// `residual_quantize` (greedy) equals the f64 reference exactly: every
/// layout, 1 to 4 levels, K = 1, 33, 256, D = 21 and 70, duplicates.
#[test]
fn residual_quantize_matches_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(5);
    let mut checked = 0;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (levels, k, d) in [(3, 33, 21), (2, 256, 70), (1, 1, 21), (4, 16, 9)] {
            let books = codebooks_with_duplicates(&mut rng, dtype, levels, k, d);
            for layout in layouts() {
                let n = layout.rows();
                let rq = |row: &[f64]| rq_row(row, &books, levels, k);
                let (x, want) = rows_without_near_ties(&mut rng, dtype, n, d, &rq);
                let what = format!("{dtype} L={levels} K={k} D={d} {layout:?}");
                let xd = upload(&mut rt, dtype, vec![n, d], &x);
                let cd = upload(&mut rt, dtype, vec![levels, k, d], &books);
                let o = layout.offsets(&mut rt);
                let codes = residual_quantize(
                    &mut rt,
                    &xd,
                    o.as_ref(),
                    &cd,
                    &ResidualQuantizeOptions::default(),
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let got = download(&mut rt, &codes);
                assert_eq!(got.dtype(), DType::I32, "{what}");
                assert_eq!(got.shape(), [n, levels], "{what}");
                let want: Vec<f64> = want.iter().map(|&c| c as f64).collect();
                assert_eq!(got.to_f64(), want, "{what}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 4 * layouts().len());
}

/// Beam search (`beam` 2 and 5) equals the f64 beam search exactly on
/// rows without near-ties: every layout, 1 to 3 levels, K = 1, 7 and 64
/// (fewer candidates than the beam at the first level included), f32, f16
/// and bf16.
#[test]
fn beam_search_matches_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(31);
    let mut checked = 0;
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (levels, k, d, beam) in [(3, 7, 21, 2), (2, 64, 40, 5), (1, 1, 9, 2), (3, 3, 10, 5)] {
            let books = random(&mut rng, dtype, levels * k * d);
            for layout in layouts() {
                let n = layout.rows();
                let rq = |row: &[f64]| common::beam::rq_beam_row(row, &books, levels, k, beam);
                let (x, want) = rows_without_near_ties(&mut rng, dtype, n, d, &rq);
                let what = format!("{dtype} L={levels} K={k} D={d} beam={beam} {layout:?}");
                let xd = upload(&mut rt, dtype, vec![n, d], &x);
                let cd = upload(&mut rt, dtype, vec![levels, k, d], &books);
                let o = layout.offsets(&mut rt);
                let codes = residual_quantize(
                    &mut rt,
                    &xd,
                    o.as_ref(),
                    &cd,
                    &ResidualQuantizeOptions { beam },
                )
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                let got = download(&mut rt, &codes);
                assert_eq!(got.shape(), [n, levels], "{what}");
                let want: Vec<f64> = want.iter().map(|&c| c as f64).collect();
                assert_eq!(got.to_f64(), want, "{what}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 4 * layouts().len());
}

/// `beam = 0` keeps nothing: an error, not an empty encoding.
#[test]
fn zero_beam_is_a_typed_error() {
    let mut rt = runtime();
    let x = upload(&mut rt, DType::F32, vec![2, 4], &[0.5; 8]);
    let books = upload(&mut rt, DType::F32, vec![2, 3, 4], &[0.25; 24]);
    let e = residual_quantize(
        &mut rt,
        &x,
        None,
        &books,
        &ResidualQuantizeOptions { beam: 0 },
    )
    .expect_err("beam 0");
    assert!(matches!(e, QuantizeError::ZeroBeam), "{e}");
    // Shapes that do not fit.
    let bad = upload(&mut rt, DType::F32, vec![2, 3, 5], &[0.25; 30]);
    let e = residual_quantize(&mut rt, &x, None, &bad, &ResidualQuantizeOptions::default())
        .expect_err("D mismatch");
    assert!(matches!(e, QuantizeError::Input { .. }), "{e}");
    let e = product_quantize(&mut rt, &x, None, &bad).expect_err("M * S != D");
    assert!(matches!(e, QuantizeError::Input { .. }), "{e}");
}

/// `sid_embed` is `sum_l codebooks[l, codes[:, l]]` within the dtype's
/// tolerance, a code outside `0..K` (negative, `K`, large) adding 0; and
/// it inverts the quantizers' codes into their reconstruction.
#[test]
fn sid_embed_matches_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(9);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (levels, k, d) in [(3, 33, 21), (2, 256, 70), (1, 1, 5)] {
            let books = random(&mut rng, dtype, levels * k * d);
            for layout in layouts() {
                let n = layout.rows();
                let what = format!("{dtype} L={levels} K={k} D={d} {layout:?}");
                // Codes in -2 .. K + 2: some out of range on either side.
                let codes: Vec<f64> = (0..n * levels)
                    .map(|i| {
                        if i % 7 == 3 {
                            [(-1.0), k as f64, 1e9, -2e9][i % 4]
                        } else {
                            rng.below(k) as f64
                        }
                    })
                    .collect();
                let mut want = vec![0.0; n * d];
                for t in 0..n {
                    for l in 0..levels {
                        let c = codes[t * levels + l];
                        if c >= 0.0 && c < k as f64 {
                            let row = (l * k + c as usize) * d;
                            for e in 0..d {
                                want[t * d + e] += books[row + e];
                            }
                        }
                    }
                }
                let cd = upload(&mut rt, DType::I32, vec![n, levels], &codes);
                let bd = upload(&mut rt, dtype, vec![levels, k, d], &books);
                let o = layout.offsets(&mut rt);
                let values = sid_embed(&mut rt, &cd, o.as_ref(), &bd)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let got = download(&mut rt, &values);
                assert_eq!(got.dtype(), dtype, "{what}");
                assert_eq!(got.shape(), [n, d], "{what}");
                let tol = Tolerance::design(dtype);
                assert!(
                    tol.accepts(&got.to_f64(), &want),
                    "{what}: {}",
                    rel_l2(&got.to_f64(), &want)
                );
            }
        }
    }
}

/// `sid_embed` of the greedy RQ codes is the reconstruction `x - r_L`:
/// the quantizer and the embedding agree on the codebooks' layout.
#[test]
fn sid_embed_reconstructs_residual_quantize() {
    let mut rt = runtime();
    let mut rng = Rng::new(12);
    let (levels, k, d) = (3, 64, 24);
    let books = random(&mut rng, DType::F32, levels * k * d);
    let rq = |row: &[f64]| rq_row(row, &books, levels, k);
    let (x, codes) = rows_without_near_ties(&mut rng, DType::F32, 40, d, &rq);
    let xd = upload(&mut rt, DType::F32, vec![40, d], &x);
    let bd = upload(&mut rt, DType::F32, vec![levels, k, d], &books);
    let layout = Layout::Jagged(vec![10, 0, 30], DType::I64);
    let o = layout.offsets(&mut rt);
    let cd = residual_quantize(
        &mut rt,
        &xd,
        o.as_ref(),
        &bd,
        &ResidualQuantizeOptions::default(),
    )
    .expect("rq");
    let embedded = sid_embed(&mut rt, &cd, o.as_ref(), &bd).expect("embed");
    let values = download(&mut rt, &embedded).to_f64();
    let mut want = vec![0.0; 40 * d];
    for t in 0..40 {
        for l in 0..levels {
            let row = (l * k + codes[t * levels + l]) * d;
            for e in 0..d {
                want[t * d + e] += books[row + e];
            }
        }
    }
    assert!(rel_l2(&values, &want) < 1e-6, "{}", rel_l2(&values, &want));
}

/// `jagc run` knows the three ops: on the emulator and on the reference
/// evaluator, the codes are the f64 loops' (inputs without near-ties), the
/// final residual of `residual_quantize` is `x` less the reconstruction,
/// and `sid_embed` of the codes is that reconstruction; `beam=2` is refused
/// (jagc encodes greedily; beam search is in the Rust API).
#[test]
fn jagc_runs_the_quantize_ops() {
    use jagged::cli::npy;
    let dir = std::env::temp_dir().join(format!("jagged-quantize-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rng = Rng::new(31);
    let (levels, k, d) = (3, 40, 12);
    let (m, s) = (3, 4);
    let books = codebooks_with_duplicates(&mut rng, DType::F32, levels, k, d);
    let centroids = codebooks_with_duplicates(&mut rng, DType::F32, m, k, s);
    let rows = 21;
    let rq = |row: &[f64]| {
        let (c1, g1) = rq_row(row, &books, levels, k);
        let (c2, g2) = pq_row(row, &centroids, m, k);
        ([c1, c2].concat(), g1.min(g2))
    };
    let (x, both) = rows_without_near_ties(&mut rng, DType::F32, rows, d, &rq);
    let rq_codes: Vec<f64> = (0..rows)
        .flat_map(|r| both[r * 6..r * 6 + 3].iter().map(|&c| c as f64))
        .collect();
    let pq_codes: Vec<f64> = (0..rows)
        .flat_map(|r| both[r * 6 + 3..r * 6 + 6].iter().map(|&c| c as f64))
        .collect();
    let save = |name: &str, t: DenseTensor| {
        npy::save_dense(&t, dir.join(format!("{name}.npy"))).expect("write npy");
    };
    let tensor =
        |dtype, shape: Vec<usize>, v: &[f64]| DenseTensor::from_f64(dtype, shape, v).unwrap();
    save("x", tensor(DType::F32, vec![rows, d], &x));
    save("codebooks", tensor(DType::F32, vec![levels, k, d], &books));
    save("centroids", tensor(DType::F32, vec![m, k, s], &centroids));
    save(
        "offsets",
        tensor(DType::I64, vec![4], &[0.0, 5.0, 5.0, rows as f64]),
    );
    save("codes", tensor(DType::I32, vec![rows, levels], &rq_codes));
    let run = |op: &str, inputs: &[&str], extra: &[&str], backend: &str, out: &str| {
        let mut args: Vec<String> =
            vec!["run".into(), op.into(), "--backend".into(), backend.into()];
        for input in inputs {
            args.push("--in".into());
            args.push(format!(
                "{input}={}",
                dir.join(format!("{input}.npy")).display()
            ));
        }
        for e in extra {
            args.push("--attr".into());
            args.push((*e).into());
        }
        for name in out.split(',') {
            args.push("--out".into());
            args.push(format!(
                "{name}={}",
                dir.join(format!("{op}_{backend}_{name}.npy")).display()
            ));
        }
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_jagc"))
            .args(&args)
            .output()
            .expect("run jagc");
        (
            status.status.success(),
            String::from_utf8_lossy(&status.stderr).into_owned(),
            out.split(',')
                .filter_map(|name| {
                    npy::load_dense(dir.join(format!("{op}_{backend}_{name}.npy")))
                        .ok()
                        .map(|t| t.to_f64())
                })
                .collect::<Vec<_>>(),
        )
    };
    let mut reconstruction = vec![0.0; rows * d];
    for r in 0..rows {
        for l in 0..levels {
            let c = rq_codes[r * levels + l] as usize;
            for e in 0..d {
                reconstruction[r * d + e] += books[(l * k + c) * d + e];
            }
        }
    }
    let residual: Vec<f64> = x.iter().zip(&reconstruction).map(|(a, b)| a - b).collect();
    for backend in ["emu", "reference"] {
        let (ok, err, out) = run(
            "product_quantize",
            &["x", "offsets", "centroids"],
            &[],
            backend,
            "codes",
        );
        assert!(ok, "product_quantize {backend}: {err}");
        assert_eq!(out[0], pq_codes, "product_quantize {backend}");
        let (ok, err, out) = run(
            "residual_quantize",
            &["x", "offsets", "codebooks"],
            &["beam=1"],
            backend,
            "codes,residual",
        );
        assert!(ok, "residual_quantize {backend}: {err}");
        assert_eq!(out[0], rq_codes, "residual_quantize {backend}");
        assert!(
            rel_l2(&out[1], &residual) < 1e-5,
            "{backend}: {}",
            rel_l2(&out[1], &residual)
        );
        let (ok, err, out) = run(
            "sid_embed",
            &["codes", "offsets", "codebooks"],
            &[],
            backend,
            "values",
        );
        assert!(ok, "sid_embed {backend}: {err}");
        assert!(rel_l2(&out[0], &reconstruction) < 1e-6, "{backend}");
    }
    let (ok, err, _) = run(
        "residual_quantize",
        &["x", "offsets", "codebooks"],
        &["beam=2"],
        "emu",
        "codes",
    );
    assert!(!ok && err.contains("greedy encoding only"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Degenerate shapes follow the argmin's rules: no codewords (`K = 0`)
/// give -1, rows without features (`D = 0`) are equally far from every
/// codeword and get 0, no levels give `[N, 0]` codes and zero embeddings;
/// a NaN feature makes its sub-vector's distances NaN, and the first NaN
/// (index 0) wins.
#[test]
fn degenerate_shapes_and_nan() {
    let mut rt = runtime();
    let filled = |rt: &mut Runtime, shape: Vec<usize>, v: f64| {
        let n: usize = shape.iter().product();
        upload(rt, DType::F32, shape, &vec![v; n])
    };
    let rq = ResidualQuantizeOptions::default();
    let x = filled(&mut rt, vec![3, 4], 0.5);
    let codes = |rt: &mut Runtime, t: Result<DeviceTensor, QuantizeError>| {
        let t = t.unwrap_or_else(|e| panic!("{e}"));
        (t.shape.clone(), download(rt, &t).to_f64())
    };
    let c = filled(&mut rt, vec![2, 0, 2], 1.0);
    let got = product_quantize(&mut rt, &x, None, &c);
    assert_eq!(codes(&mut rt, got), (vec![3, 2], vec![-1.0; 6]), "PQ K = 0");
    let c = filled(&mut rt, vec![2, 0, 4], 1.0);
    let got = residual_quantize(&mut rt, &x, None, &c, &rq);
    assert_eq!(codes(&mut rt, got), (vec![3, 2], vec![-1.0; 6]), "RQ K = 0");
    let sid = upload(&mut rt, DType::I32, vec![3, 2], &[0.0; 6]);
    let got = sid_embed(&mut rt, &sid, None, &c);
    assert_eq!(
        codes(&mut rt, got),
        (vec![3, 4], vec![0.0; 12]),
        "sid_embed K = 0"
    );
    let c = filled(&mut rt, vec![0, 5, 4], 1.0);
    let got = residual_quantize(&mut rt, &x, None, &c, &rq);
    assert_eq!(codes(&mut rt, got), (vec![3, 0], vec![]), "RQ, no levels");
    let x0 = filled(&mut rt, vec![3, 0], 0.0);
    for (k, want) in [(3, 0.0), (0, -1.0)] {
        let c = filled(&mut rt, vec![2, k, 0], 1.0);
        let got = residual_quantize(&mut rt, &x0, None, &c, &rq);
        assert_eq!(
            codes(&mut rt, got),
            (vec![3, 2], vec![want; 6]),
            "RQ D = 0, K = {k}"
        );
        let got = product_quantize(&mut rt, &x0, None, &c);
        assert_eq!(
            codes(&mut rt, got),
            (vec![3, 2], vec![want; 6]),
            "PQ S = 0, K = {k}"
        );
    }
    let c = filled(&mut rt, vec![2, 3, 0], 1.0);
    let sid = upload(&mut rt, DType::I32, vec![3, 2], &[1.0; 6]);
    let got = sid_embed(&mut rt, &sid, None, &c);
    assert_eq!(codes(&mut rt, got), (vec![3, 0], vec![]), "sid_embed D = 0");
    // NaN in sub-vector 0 of row 0: code 0 there; elsewhere the nearest,
    // (0.5, 0.5) at index 1.
    let mut xs = vec![0.5; 12];
    xs[1] = f64::NAN;
    let xn = upload(&mut rt, DType::F32, vec![3, 4], &xs);
    let group = [3.0, 3.0, 0.5, 0.5, 1.0, 1.0];
    let c = upload(&mut rt, DType::F32, vec![2, 3, 2], &[group, group].concat());
    let got = product_quantize(&mut rt, &xn, None, &c);
    assert_eq!(
        codes(&mut rt, got),
        (vec![3, 2], vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    );
}

/// The limits, K = 4096 codewords of D = 512, on a few rows: greedy
/// RQ (2 levels) and PQ (8 sub-vectors of 64) equal the f64 reference.
#[test]
fn the_largest_codebooks_match_the_reference() {
    let mut rt = runtime();
    let mut rng = Rng::new(77);
    let (k, d, n) = (4096, 512, 3);
    let layout = Layout::Jagged(vec![2, 0, 1], DType::I32);
    let books = random(&mut rng, DType::F32, 2 * k * d);
    let rq = |row: &[f64]| rq_row(row, &books, 2, k);
    let (x, want) = rows_without_near_ties(&mut rng, DType::F32, n, d, &rq);
    let xd = upload(&mut rt, DType::F32, vec![n, d], &x);
    let cd = upload(&mut rt, DType::F32, vec![2, k, d], &books);
    let o = layout.offsets(&mut rt);
    let codes = residual_quantize(
        &mut rt,
        &xd,
        o.as_ref(),
        &cd,
        &ResidualQuantizeOptions::default(),
    )
    .expect("rq");
    let want: Vec<f64> = want.iter().map(|&c| c as f64).collect();
    assert_eq!(download(&mut rt, &codes).to_f64(), want, "rq");
    let (m, s) = (8, d / 8);
    let centroids = random(&mut rng, DType::F32, m * k * s);
    let pq = |row: &[f64]| pq_row(row, &centroids, m, k);
    let (x, want) = rows_without_near_ties(&mut rng, DType::F32, n, d, &pq);
    let xd = upload(&mut rt, DType::F32, vec![n, d], &x);
    let cd = upload(&mut rt, DType::F32, vec![m, k, s], &centroids);
    let codes = product_quantize(&mut rt, &xd, o.as_ref(), &cd).expect("pq");
    let want: Vec<f64> = want.iter().map(|&c| c as f64).collect();
    assert_eq!(download(&mut rt, &codes).to_f64(), want, "pq");
}
