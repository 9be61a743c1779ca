//! Offsets the general path computes (a compaction's kept rows, a packed
//! triangle's pairs) for batches of many sequences: the prefix over the
//! per-sequence counts is one warp scanning 32 counts a step, so batches
//! of 0, 1, 31, 32, 33 and 100 sequences cover its first step, its edge and
//! the carry between steps. Outputs are compared with the f64 reference.

use std::sync::Arc;

use jagged::codegen::{Arch, Spec, compile};
use jagged::ir::{AttrValue, DenseTensor, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, random_inputs};

const KEEP: &str = "graph keep {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 3]
  %3 = input score : f32[%1]
  %4 = const 0 : f32[]
  %5 = gt %3, %4 : bool[%1]
  %6 = seqs_where %5 : seqs
  %7 = compact %2, %6 : f32[%6, 3]
  %8 = offsets %6 : i64[B+1]
  output values = %7
  output kept = %8
}";

const PAIRS: &str = "graph pairs {
  attr max_len: index
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 4]
  %3 = contract %2[id], %2[jd] -> [ij] : f32[%1, %1]
  %4 = seqs_triu %1 : seqs
  %5 = pack_triu %3, %4 : f32[%4]
  %6 = offsets %4 : i64[B+1]
  output values = %5
  output pair_offsets = %6
}";

#[test]
fn offsets_of_many_sequences_match_the_reference() {
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    let max_len = 9;
    let mut rng = Rng::new(17);
    for text in [KEEP, PAIRS] {
        let g = Graph::parse(text).unwrap_or_else(|e| panic!("{e}"));
        let spec = Spec::for_graph(&g, max_len as u64, Arch::Sm80).expect("spec");
        let kernel = compile(&g, &spec).unwrap_or_else(|e| panic!("{e}"));
        for batch in [0usize, 1, 31, 32, 33, 100] {
            let lengths: Vec<usize> = (0..batch).map(|_| rng.below(12)).collect();
            let inputs = random_inputs(&g, &lengths, max_len, 1.0, &mut rng);
            let named: Vec<(&str, &DenseTensor)> =
                inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
            let attrs = [("max_len", AttrValue::Index(max_len))];
            let want = jagged::ir::evaluate(&g, &named, &attrs).expect("reference");
            let got = rt
                .run_compiled_host(&g, &kernel, &named, &attrs)
                .unwrap_or_else(|e| panic!("{}: B = {batch}: {e}", g.name()));
            for (name, w) in &want {
                let got = &got[name];
                assert_eq!(got.shape(), w.shape(), "{} {name}, B = {batch}", g.name());
                let tol = Tolerance::design(w.dtype());
                assert!(
                    tol.accepts(&got.to_f64(), &w.to_f64()),
                    "{} {name}, B = {batch}: {:?} vs {:?}",
                    g.name(),
                    got.to_f64(),
                    w.to_f64()
                );
            }
        }
    }
}

/// `masked_select_jagged` of integer (and bool) values: the compaction
/// template moves floats only, so these take the general path, and match
/// the reference (they failed before: the template's kernel moved f32).
#[test]
fn masked_select_of_integer_values_matches_the_reference() {
    use jagged::ir::DType;
    use jagged::ir::ops::{JaggedSpec, masked_select_jagged};
    for dtype in [DType::I64, DType::I32, DType::U8] {
        let spec = JaggedSpec {
            dtype,
            offsets: DType::I32,
            inner: vec![3],
        };
        let g = masked_select_jagged(&spec, DType::Bool).expect("graph");
        let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
        rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
        for arch in Arch::ALL {
            let spec = Spec::for_graph(&g, 16, arch).expect("spec");
            jagged::testing::check_spec_against_reference(
                &g,
                &spec,
                &mut rt,
                16,
                &[],
                &mut Rng::new(3),
                Tolerance::design,
            )
            .unwrap_or_else(|e| panic!("{dtype} {arch}: {e}"));
        }
    }
}
