//! Index expressions: `position` (the index of each element along an axis),
//! `lengths` (`n_b` of a sequence set) and the comparisons `lt le gt ge eq
//! ne`, checked against naive per-sequence loops, through the text form.

use jagged_ir::{AttrValue, DType, DenseTensor, Graph, evaluate};

fn offsets(lengths: &[usize]) -> DenseTensor {
    let mut o = vec![0.0];
    for &l in lengths {
        o.push(o[o.len() - 1] + l as f64);
    }
    DenseTensor::from_f64(DType::I32, vec![lengths.len() + 1], &o).expect("offsets")
}

const WINDOW: &str = "graph window {
  attr max_len: index
  attr w: float = 1.0
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1]
  %3 = position axis 0 : f32[%1, %1]
  %4 = position axis 1 : f32[%1, %1]
  %5 = sub %3, %4 : f32[%1, %1]
  %6 = abs %5 : f32[%1, %1]
  %7 = attr w : f32[]
  %8 = le %6, %7 : bool[%1, %1]
  %9 = const 0.0 : f32[]
  %10 = contract %2[i], %2[j] -> [ij] : f32[%1, %1]
  %11 = select %8, %10, %9 : f32[%1, %1]
  %12 = reduce sum %11, axis 1 : f32[%1]
  %13 = lengths %1 : i64[B]
  %14 = position axis 0 : i64[%1]
  %15 = ne %14, %13 : bool[%1]
  output windowed = %12
  output lengths = %13
  output not_last = %15
}
";

#[test]
fn the_text_form_round_trips() {
    let g = Graph::parse(WINDOW).expect("parse");
    assert_eq!(g.to_string(), WINDOW);
    assert_eq!(Graph::parse(&g.to_string()).expect("reparse"), g);
}

#[test]
fn a_windowed_sum_and_lengths_match_naive_loops() {
    let g = Graph::parse(WINDOW).expect("parse");
    let lengths = [0, 1, 6, 3, 0, 4];
    let max_len = 4;
    let total: usize = lengths.iter().sum();
    let x: Vec<f64> = (0..total).map(|k| (k as f64 * 0.37).sin()).collect();
    let xt = DenseTensor::from_f64(DType::F32, vec![total], &x).expect("x");
    let xr: Vec<f64> = xt.to_f64();
    let o = offsets(&lengths);
    for w in [0.0, 1.0, 2.5] {
        let out = evaluate(
            &g,
            &[("offsets", &o), ("x", &xt)],
            &[
                ("max_len", AttrValue::Index(max_len)),
                ("w", AttrValue::Float(w)),
            ],
        )
        .expect("evaluate");
        let (mut windowed, mut not_last) = (vec![0.0; total], vec![0.0; total]);
        let mut lens = Vec::new();
        let mut start = 0;
        for &l in &lengths {
            let n = l.min(max_len);
            lens.push(n as f64);
            for i in 0..n {
                for j in 0..n {
                    if (i as f64 - j as f64).abs() <= w {
                        windowed[start + i] += xr[start + i] * xr[start + j];
                    }
                }
                not_last[start + i] = f64::from(u8::from(i != n));
            }
            start += l;
        }
        let got = out["windowed"].to_f64();
        for (a, b) in got.iter().zip(&windowed) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "w = {w}: {got:?} vs {windowed:?}"
            );
        }
        assert_eq!(out["lengths"].to_f64(), lens);
        assert_eq!(out["not_last"].to_f64(), not_last);
    }
}

#[test]
fn comparisons_follow_ieee_for_nan() {
    let g = Graph::parse(
        "graph cmp {
  %0 = input a : f32[4]
  %1 = input b : f32[4]
  %2 = lt %0, %1 : bool[4]
  %3 = eq %0, %1 : bool[4]
  %4 = ne %0, %1 : bool[4]
  %5 = ge %0, %1 : bool[4]
  output lt = %2
  output eq = %3
  output ne = %4
  output ge = %5
}",
    )
    .expect("parse");
    let a = DenseTensor::from_f64(DType::F32, vec![4], &[1.0, f64::NAN, 2.0, 3.0]).expect("a");
    let b = DenseTensor::from_f64(DType::F32, vec![4], &[2.0, 1.0, 2.0, f64::NAN]).expect("b");
    let out = evaluate(&g, &[("a", &a), ("b", &b)], &[]).expect("evaluate");
    assert_eq!(out["lt"].to_f64(), [1.0, 0.0, 0.0, 0.0]);
    assert_eq!(out["eq"].to_f64(), [0.0, 0.0, 1.0, 0.0]);
    assert_eq!(out["ne"].to_f64(), [1.0, 1.0, 0.0, 1.0]);
    assert_eq!(out["ge"].to_f64(), [0.0, 0.0, 1.0, 0.0]);
}

#[test]
fn the_validator_checks_positions_comparisons_and_lengths() {
    let cases = [
        (
            "%0 = input offsets : i32[B+1]\n  %1 = seqs %0 : seqs\n  %2 = position axis 2 : i64[%1, %1]\n  output o = %2",
            "axis",
        ),
        (
            "%0 = input a : f32[4]\n  %1 = input b : i32[4]\n  %2 = lt %0, %1 : bool[4]\n  output o = %2",
            "dtype",
        ),
        (
            "%0 = input offsets : i32[B+1]\n  %1 = seqs %0 : seqs\n  %2 = lengths %1 : f32[B]\n  output o = %2",
            "i32 or i64",
        ),
    ];
    for (body, what) in cases {
        let text = format!("graph bad {{\n  {body}\n}}");
        let err = Graph::parse(&text).expect_err(&text).to_string();
        assert!(err.to_lowercase().contains(what), "{text}\n{err}");
    }
}

/// `gather`: rows of a table at integer indices, 0 outside the table; the
/// text form round-trips; the validator wants an integer index and a dense
/// static table.
#[test]
fn gather_picks_rows_and_gives_zero_outside_the_table() {
    let text = "graph g {
  %0 = input table : f32[3, 2]
  %1 = input at : i64[5]
  %2 = gather %0, %1 : f32[5, 2]
  output y = %2
}
";
    let g = Graph::parse(text).expect("parse");
    assert_eq!(g.to_string(), text);
    let table = DenseTensor::from_f64(DType::F32, vec![3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .expect("table");
    let at = DenseTensor::from_f64(DType::I64, vec![5], &[2.0, 0.0, 3.0, -1.0, 1.0]).expect("at");
    let out = evaluate(&g, &[("table", &table), ("at", &at)], &[]).expect("evaluate");
    assert_eq!(
        out["y"].to_f64(),
        [5.0, 6.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0]
    );
    for bad in [
        "%0 = input table : f32[3]\n  %1 = input at : f32[5]\n  %2 = gather %0, %1 : f32[5]",
        "%0 = input offsets : i32[B+1]\n  %1 = seqs %0 : seqs\n  %2 = input table : f32[%1]\n  %3 = input at : i64[5]\n  %4 = gather %2, %3 : f32[5]",
    ] {
        let last = bad.lines().count() - 1;
        let text = format!("graph bad {{\n  {bad}\n  output y = %{last}\n}}");
        let err = Graph::parse(&text).expect_err(&text).to_string();
        assert!(err.contains("a gather's"), "{text}\n{err}");
    }
}
