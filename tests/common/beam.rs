//! The f64 reference of beam-search residual quantization, shared by the
//! emulator tests (tests/quantize.rs) and the FAISS parity tests
//! (tests/quantize_faiss.rs).

/// Beam-search RQ codes of one row (FAISS's `max_beam_size`: at each
/// level the `beam` best of every kept encoding extended by every codeword,
/// by the full squared error, ties to the lower candidate `b K + k`), and
/// the smallest relative gap between consecutive candidates up to the
/// first one dropped (the order of the kept ones decides later ties and
/// the final choice).
pub fn rq_beam_row(
    x: &[f64],
    codebooks: &[f64],
    levels: usize,
    k: usize,
    beam: usize,
) -> (Vec<usize>, f64) {
    let d = x.len();
    let scale: f64 = x.iter().map(|v| v * v).sum::<f64>() + 1.0;
    // (residual, codes) of the kept encodings, best first.
    let mut kept: Vec<(Vec<f64>, Vec<usize>)> = vec![(x.to_vec(), Vec::new())];
    let mut gap = f64::INFINITY;
    for l in 0..levels {
        let book = &codebooks[l * k * d..(l + 1) * k * d];
        let mut candidates: Vec<(f64, usize)> = Vec::new();
        for (b, (r, _)) in kept.iter().enumerate() {
            for c in 0..k {
                let cw = &book[c * d..(c + 1) * d];
                let e: f64 = r.iter().zip(cw).map(|(a, b)| (a - b) * (a - b)).sum();
                candidates.push((e, b * k + c));
            }
        }
        candidates.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
        let next = beam.min(candidates.len());
        let considered = (next + 1).min(candidates.len());
        for w in candidates[..considered].windows(2) {
            gap = gap.min((w[1].0 - w[0].0) / scale);
        }
        kept = candidates[..next]
            .iter()
            .map(|&(_, m)| {
                let (r, codes) = &kept[m / k];
                let c = m % k;
                let r = r
                    .iter()
                    .zip(&book[c * d..(c + 1) * d])
                    .map(|(a, b)| a - b)
                    .collect();
                let mut codes = codes.clone();
                codes.push(c);
                (r, codes)
            })
            .collect();
    }
    (kept.swap_remove(0).1, gap)
}
