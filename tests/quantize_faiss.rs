//! FAISS parity of `product_quantize` and `residual_quantize` (greedy and
//! beam search), on
//! the fixtures of `scripts/gen-faiss-fixtures.py` (tests/data/faiss/: rows,
//! the codebooks FAISS trained, and FAISS 1.15.1's codes of the rows:
//! `ProductQuantizer.compute_codes` with sub-vectors of 6 (direct distances)
//! and of 32 (BLAS distance tables), with duplicated centroids; and
//! `ResidualQuantizer.compute_codes` with `max_beam_size` 1, 2 and 5).
//!
//! Our codes (the emulator, dense and jagged layouts) must equal FAISS's
//! wherever the nearest codeword is clear: its distance and that of the
//! nearest codeword with other coordinates differ by more than `1e-4`
//! relative (computed here in f64). Exact ties between duplicated
//! codewords count as clear: both must take the lower index. Where a
//! near-tie exists the two may choose differently; the distances of the
//! two choices (the objective of that step) must then agree within f32
//! rounding.

mod common;

use std::path::Path;
use std::sync::Arc;

use jagged::cli::npy;
use jagged::ir::{DType, DenseTensor};
use jagged::ops::quantize::*;
use jagged::runtime::{BackendKind, DeviceTensor, KernelCache, Runtime};

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt.set_poison_outputs(true);
    rt
}

/// A fixture: its shape and values (f64).
fn load(name: &str, what: &str) -> (Vec<usize>, Vec<f64>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/faiss")
        .join(format!("{name}_{what}.npy"));
    let t = npy::load_dense(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (t.shape().to_vec(), t.to_f64())
}

/// The relative gap below which two distances are a near-tie.
const NEAR_TIE: f64 = 1e-4;

/// The squared distance of `x` to `c`, in f64.
fn dist(x: &[f64], c: &[f64]) -> f64 {
    x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum()
}

/// The distances of `x` to the `k` codewords of `book`, the index of the
/// nearest (lowest on ties) and the relative gap to the nearest codeword
/// with other coordinates.
fn choice(x: &[f64], book: &[f64], k: usize) -> (Vec<f64>, usize, f64) {
    let d = x.len();
    let row = |j: usize| &book[j * d..(j + 1) * d];
    let ds: Vec<f64> = (0..k).map(|j| dist(x, row(j))).collect();
    let best = (0..k)
        .min_by(|&a, &b| ds[a].total_cmp(&ds[b]).then(a.cmp(&b)))
        .expect("k > 0");
    let second = (0..k)
        .filter(|&j| row(j) != row(best))
        .map(|j| ds[j])
        .fold(f64::INFINITY, f64::min);
    let scale = x.iter().map(|v| v * v).sum::<f64>() + ds[best] + 1e-30;
    let gap = (second - ds[best]) / scale;
    (ds, best, gap)
}

/// Two step objectives (squared distances) within f32 rounding.
fn same_objective(a: f64, b: f64, x: &[f64]) -> bool {
    let scale = x.iter().map(|v| v * v).sum::<f64>() + a.abs() + b.abs();
    (a - b).abs() <= 1e-5 * scale
}

fn upload(rt: &mut Runtime, dtype: DType, shape: &[usize], values: &[f64]) -> DeviceTensor {
    let t = DenseTensor::from_f64(dtype, shape.to_vec(), values).expect("tensor");
    rt.upload_tensor(&t).expect("upload")
}

/// Jagged offsets over `n` rows: sequences of 0, 1, 7, 0, then the rest.
fn jagged_offsets(rt: &mut Runtime, n: usize) -> DeviceTensor {
    let cuts = [0, 0, 1, 8, 8, n];
    let values: Vec<f64> = cuts.iter().map(|&c| c.min(n) as f64).collect();
    upload(rt, DType::I64, &[values.len()], &values)
}

/// What a comparison found: codes equal on clear choices, near-ties that
/// agree, near-ties that differ (with equal objectives).
#[derive(Debug, Default)]
struct Tally {
    clear: usize,
    exact_ties: usize,
    near_same: usize,
    near_differ: usize,
}

fn check_pq(name: &str) -> Tally {
    let (xs, x) = load(name, "x");
    let (cs, c) = load(name, "codebooks");
    let (_, want) = load(name, "codes");
    let (n, d) = (xs[0], xs[1]);
    let (m, k, s) = (cs[0], cs[1], cs[2]);
    assert_eq!(m * s, d, "{name}");
    let mut rt = runtime();
    let xd = upload(&mut rt, DType::F32, &xs, &x);
    let cd = upload(&mut rt, DType::F32, &cs, &c);
    let offsets = jagged_offsets(&mut rt, n);
    let mut tally = Tally::default();
    for layout in [None, Some(&offsets)] {
        let codes = product_quantize(&mut rt, &xd, layout, &cd).unwrap_or_else(|e| panic!("{e}"));
        let got = rt.download_tensor(&codes).expect("download").to_f64();
        assert_eq!(got.len(), n * m, "{name}");
        for i in 0..n {
            for g in 0..m {
                let sub = &x[i * d + g * s..i * d + (g + 1) * s];
                let book = &c[g * k * s..(g + 1) * k * s];
                let (ds, best, gap) = choice(sub, book, k);
                let (ours, theirs) = (got[i * m + g] as usize, want[i * m + g] as usize);
                let what = format!("{name} row {i} group {g}: ours {ours}, FAISS {theirs}");
                if gap > NEAR_TIE {
                    assert_eq!(ours, theirs, "{what} (no near-tie, gap {gap:e})");
                    assert_eq!(ours, best, "{what}");
                    tally.clear += 1;
                    let duplicates = (0..k)
                        .filter(|&j| book[j * s..(j + 1) * s] == book[best * s..(best + 1) * s])
                        .count();
                    tally.exact_ties += usize::from(duplicates > 1);
                } else if ours == theirs {
                    tally.near_same += 1;
                } else {
                    assert!(
                        same_objective(ds[ours], ds[theirs], sub),
                        "{what}: distances {} and {}",
                        ds[ours],
                        ds[theirs]
                    );
                    tally.near_differ += 1;
                }
            }
        }
    }
    tally
}

#[test]
fn product_quantize_matches_faiss() {
    for name in ["pq_direct", "pq_blas"] {
        let tally = check_pq(name);
        eprintln!("{name}: {tally:?}");
        assert!(tally.clear > 0, "{name}: {tally:?}");
        if name == "pq_direct" {
            // The fixture duplicates centroids next to a third of its rows.
            assert!(tally.exact_ties > 100, "{tally:?}");
        }
    }
}

#[test]
fn greedy_residual_quantize_matches_faiss() {
    let name = "rq_greedy";
    let (xs, x) = load(name, "x");
    let (cs, c) = load(name, "codebooks");
    let (_, want) = load(name, "codes");
    let (n, d) = (xs[0], xs[1]);
    let (levels, k) = (cs[0], cs[1]);
    assert_eq!(cs[2], d);
    let mut rt = runtime();
    let xd = upload(&mut rt, DType::F32, &xs, &x);
    let cd = upload(&mut rt, DType::F32, &cs, &c);
    let offsets = jagged_offsets(&mut rt, n);
    let mut tally = Tally::default();
    // The objective: the squared reconstruction error of every row, ours
    // and FAISS's.
    let (mut ours_err, mut faiss_err) = (0.0, 0.0);
    for layout in [None, Some(&offsets)] {
        let codes = residual_quantize(
            &mut rt,
            &xd,
            layout,
            &cd,
            &ResidualQuantizeOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let got = rt.download_tensor(&codes).expect("download").to_f64();
        assert_eq!(got.len(), n * levels);
        for i in 0..n {
            // FAISS's residual, level by level, in f64.
            let mut r = x[i * d..(i + 1) * d].to_vec();
            let mut diverged = false;
            for l in 0..levels {
                let book = &c[l * k * d..(l + 1) * k * d];
                let (ours, theirs) = (got[i * levels + l] as usize, want[i * levels + l] as usize);
                if !diverged {
                    let (ds, best, gap) = choice(&r, book, k);
                    let what = format!("row {i} level {l}: ours {ours}, FAISS {theirs}");
                    if gap > NEAR_TIE {
                        assert_eq!(ours, theirs, "{what} (no near-tie, gap {gap:e})");
                        assert_eq!(ours, best, "{what}");
                        tally.clear += 1;
                    } else if ours == theirs {
                        tally.near_same += 1;
                    } else {
                        // Greedy steps of equal objective; the levels after
                        // it encode different residuals.
                        assert!(
                            same_objective(ds[ours], ds[theirs], &r),
                            "{what}: distances {} and {}",
                            ds[ours],
                            ds[theirs]
                        );
                        tally.near_differ += 1;
                        diverged = true;
                    }
                }
                for (e, v) in r.iter_mut().enumerate() {
                    *v -= book[theirs * d + e];
                }
            }
            faiss_err += r.iter().map(|v| v * v).sum::<f64>();
            let mut mine = x[i * d..(i + 1) * d].to_vec();
            for l in 0..levels {
                let code = got[i * levels + l] as usize;
                for (e, v) in mine.iter_mut().enumerate() {
                    *v -= c[(l * k + code) * d + e];
                }
            }
            ours_err += mine.iter().map(|v| v * v).sum::<f64>();
        }
    }
    eprintln!("{name}: {tally:?}; reconstruction error ours {ours_err}, FAISS {faiss_err}");
    assert!(tally.clear > 0, "{tally:?}");
    assert!(
        (ours_err - faiss_err).abs() <= 1e-5 * faiss_err,
        "reconstruction error: ours {ours_err}, FAISS {faiss_err}"
    );
}

/// Beam search (`beam` 2 and 5) against FAISS's `ResidualQuantizer` with
/// `max_beam_size` 2 and 5 (codebooks FAISS trained with that beam): the
/// codes equal FAISS's on every row whose f64 beam search has no near-tie
/// (consecutive candidates up to the first dropped one, and so the final
/// choice, differ by more than `1e-4` relative); on a row with one, the
/// two encodings' reconstruction errors must agree within f32 rounding.
#[test]
fn beam_residual_quantize_matches_faiss() {
    for (name, beam) in [("rq_beam2", 2), ("rq_beam5", 5)] {
        let (xs, x) = load(name, "x");
        let (cs, c) = load(name, "codebooks");
        let (_, want) = load(name, "codes");
        let (n, d) = (xs[0], xs[1]);
        let (levels, k) = (cs[0], cs[1]);
        let mut rt = runtime();
        let xd = upload(&mut rt, DType::F32, &xs, &x);
        let cd = upload(&mut rt, DType::F32, &cs, &c);
        let offsets = jagged_offsets(&mut rt, n);
        let error = |i: usize, codes: &[f64]| -> f64 {
            let mut r = x[i * d..(i + 1) * d].to_vec();
            for (l, &code) in codes.iter().enumerate() {
                let cw = &c[(l * k + code as usize) * d..(l * k + code as usize + 1) * d];
                r.iter_mut().zip(cw).for_each(|(a, b)| *a -= b);
            }
            r.iter().map(|v| v * v).sum()
        };
        let mut tally = Tally::default();
        for layout in [None, Some(&offsets)] {
            let options = ResidualQuantizeOptions { beam };
            let codes = residual_quantize(&mut rt, &xd, layout, &cd, &options)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = rt.download_tensor(&codes).expect("download").to_f64();
            assert_eq!(got.len(), n * levels);
            for i in 0..n {
                let row = &x[i * d..(i + 1) * d];
                let (ours, theirs) = (
                    &got[i * levels..(i + 1) * levels],
                    &want[i * levels..(i + 1) * levels],
                );
                let (reference, gap) = common::beam::rq_beam_row(row, &c, levels, k, beam);
                let what = format!("{name} row {i}: ours {ours:?}, FAISS {theirs:?}");
                if gap > NEAR_TIE {
                    assert_eq!(ours, theirs, "{what} (no near-tie, gap {gap:e})");
                    let reference: Vec<f64> = reference.iter().map(|&v| v as f64).collect();
                    assert_eq!(ours, reference.as_slice(), "{what}");
                    tally.clear += 1;
                } else if ours == theirs {
                    tally.near_same += 1;
                } else {
                    let (a, b) = (error(i, ours), error(i, theirs));
                    assert!(same_objective(a, b, row), "{what}: errors {a} and {b}");
                    tally.near_differ += 1;
                }
            }
        }
        eprintln!("{name}: {tally:?}");
        assert!(tally.clear > n, "{name}: {tally:?}");
    }
}
