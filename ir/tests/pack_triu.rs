//! `seqs_triu` and `pack_triu`: the strict upper triangle of a pair value,
//! packed row-major, its offsets, text form and validator rules.

use jagged_ir::{AttrValue, DType, DenseTensor, Graph, evaluate};

const PAIRWISE: &str = "graph pairwise {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 2]
  %3 = contract %2[id], %2[jd] -> [ij] : f32[%1, %1]
  %4 = seqs_triu %1 : seqs
  %5 = pack_triu %3, %4 : f32[%4]
  %6 = offsets %4 : i64[B+1]
  output values = %5
  output offsets = %6
}";

#[test]
fn packs_the_strict_upper_triangle_row_major() {
    let g = Graph::parse(PAIRWISE).unwrap_or_else(|e| panic!("{e}"));
    // The text form round-trips.
    assert_eq!(Graph::parse(&g.to_string()).expect("reparses"), g);
    // Lengths 3, 0, 5 (truncated to 4), 1.
    let offsets = DenseTensor::from_f64(DType::I64, vec![5], &[0.0, 3.0, 3.0, 8.0, 9.0]).unwrap();
    let rows: Vec<f64> = (0..9).flat_map(|r| [r as f64, 1.0]).collect();
    let x = DenseTensor::from_f64(DType::F32, vec![9, 2], &rows).unwrap();
    let out = evaluate(
        &g,
        &[("offsets", &offsets), ("x", &x)],
        &[("max_len", AttrValue::Index(4))],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // x_r . x_s = r s + 1 with global rows r, s.
    let dot = |r: usize, s: usize| (r * s + 1) as f64;
    let mut expected = Vec::new();
    for (start, n) in [(0, 3), (3, 0), (3, 4), (8, 1)] {
        for i in 0..n {
            for j in i + 1..n {
                expected.push(dot(start + i, start + j));
            }
        }
    }
    assert_eq!(out["values"].to_f64(), expected);
    assert_eq!(out["offsets"].to_f64(), [0.0, 3.0, 3.0, 9.0, 9.0]);
}

#[test]
fn pack_triu_needs_pairs_on_the_seqs_triu_of_their_set() {
    let dense_rows = PAIRWISE.replace(
        "%5 = pack_triu %3, %4 : f32[%4]",
        "%5 = pack_triu %2, %4 : f32[%4, 2]",
    );
    let err = Graph::parse(&dense_rows).expect_err("rows are not pairs");
    assert!(err.to_string().contains("pack_triu"), "{err}");
    let other_set = PAIRWISE.replace(
        "%5 = pack_triu %3, %4 : f32[%4]",
        "%5 = pack_triu %3, %1 : f32[%1]",
    );
    let err = Graph::parse(&other_set).expect_err("not a seqs_triu");
    assert!(err.to_string().contains("pack_triu"), "{err}");
    let not_a_set = PAIRWISE.replace("%4 = seqs_triu %1 : seqs", "%4 = seqs_triu %2 : seqs");
    assert!(Graph::parse(&not_a_set).is_err());
}
