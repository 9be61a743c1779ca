//! `reduce argmin` / `reduce argmax` through the general path: along the
//! sequence axis, along an inner axis (a warp per result, lanes combined by
//! shuffles), over the output of a contraction (the nearest codeword of
//! each event), on integer inputs full of ties, and with NaN entries; each
//! against the f64 reference on the emulator.

use std::sync::Arc;

use jagged::codegen::{Arch, Spec, compile};
use jagged::ir::{AttrValue, DType, DenseTensor, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference};

fn runtime() -> Runtime {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    rt
}

/// `(name, text with {op} and {t})`.
const GRAPHS: &[(&str, &str)] = &[
    (
        "over the sequence",
        "graph over_seq {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 4]
  %3 = reduce {op} %2, axis 0 : i32[B, 4]
  output idx = %3
}",
    ),
    (
        "over an inner axis",
        "graph over_inner {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 40]
  %3 = reduce {op} %2, axis 1 : i32[%1]
  output idx = %3
}",
    ),
    (
        "the nearest of 16 codewords (a contraction, then the arg reduction)",
        "graph nearest {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : {t}[%1, 8]
  %3 = input codebook : {t}[16, 8]
  %4 = contract %2[id], %3[kd] -> [ik] : {acc}[%1, 16]
  %5 = reduce {op} %4, axis 1 : i32[%1]
  output code = %5
}",
    ),
];

fn graph(text: &str, op: &str, dtype: DType) -> Graph {
    let acc = if dtype.is_float() { "f32" } else { "i64" };
    let text = text
        .replace("{op}", op)
        .replace("{t}", &dtype.to_string())
        .replace("{acc}", acc);
    Graph::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn arg_reductions_match_the_reference() {
    let mut rt = runtime();
    for (name, text) in GRAPHS {
        for op in ["argmin", "argmax"] {
            // i32 inputs take values 0..7: ties everywhere.
            for dtype in [DType::F32, DType::BF16, DType::I32] {
                let g = graph(text, op, dtype);
                for arch in Arch::ALL {
                    let spec = Spec::for_graph(&g, 21, arch).expect("spec");
                    check_spec_against_reference(
                        &g,
                        &spec,
                        &mut rt,
                        21,
                        &[],
                        &mut Rng::new(13),
                        Tolerance::design,
                    )
                    .unwrap_or_else(|e| panic!("{name} {op} {dtype} {arch}: {e}"));
                }
            }
        }
    }
}

/// A NaN entry wins (its first occurrence), as numpy's argmin/argmax do;
/// an empty sequence gives -1.
#[test]
fn nan_entries_and_empty_sequences() {
    for op in ["argmin", "argmax"] {
        for (k, text) in [GRAPHS[0].1, GRAPHS[1].1].into_iter().enumerate() {
            let g = graph(text, op, DType::F32);
            let width = if k == 0 { 4 } else { 40 };
            // Sequences of 3, 0 and 5 rows; NaN at rows 1 and 3 of the last
            // one in column 2, and at features 7 and 30 of row 0.
            let lengths = [3usize, 0, 5];
            let rows: usize = lengths.iter().sum();
            let mut rng = Rng::new(3);
            let mut x: Vec<f64> = (0..rows * width)
                .map(|_| rng.below(1000) as f64 / 100.0 - 5.0)
                .collect();
            x[(3 + 1) * width + 2] = f64::NAN;
            x[(3 + 3) * width + 2] = f64::NAN;
            x[7] = f64::NAN;
            x[30 % width] = f64::NAN;
            let x = DenseTensor::from_f64(DType::F32, vec![rows, width], &x).expect("x");
            let offsets: Vec<f64> = [0.0, 3.0, 3.0, 8.0].to_vec();
            let index = if k == 0 { DType::I32 } else { DType::I64 };
            let offsets = DenseTensor::from_f64(index, vec![4], &offsets).expect("offsets");
            let inputs = [("offsets", &offsets), ("x", &x)];
            let attrs = [("max_len", AttrValue::Index(8))];
            let want = jagged::ir::evaluate(&g, &inputs, &attrs).expect("reference");
            let spec = Spec::for_graph(&g, 8, Arch::Sm80).expect("spec");
            let kernel = compile(&g, &spec).expect("compiles");
            let mut rt = runtime();
            let got = rt
                .run_compiled_host(&g, &kernel, &inputs, &attrs)
                .expect("runs");
            let (got, want) = (got["idx"].to_f64(), want["idx"].to_f64());
            assert_eq!(got, want, "{op}, graph {k}");
            if k == 0 {
                // The empty sequence (b = 1) has no index.
                assert_eq!(&want[4..8], &[-1.0; 4]);
                // Column 2 of sequence 2: its first NaN, row 1.
                assert_eq!(want[8 + 2], 1.0);
            } else {
                // Row 0 of sequence 0: its first NaN, feature 7.
                assert_eq!(want[0], 7.0);
            }
        }
    }
}
