//! Fast paths for parts of a graph: when no template takes the whole graph,
//! the general path still hands a part that a template matches (flash
//! attention) to that template, and compiles the rest around it. Checked
//! against the f64 reference on the emulator over adversarial lengths.

use std::sync::Arc;

use jagged::codegen::{Arch, Spec, compile_with_plan};
use jagged::ir::{AttrValue, Graph};
use jagged::runtime::{BackendKind, KernelCache, Runtime};
use jagged::testing::{Rng, Tolerance, check_spec_against_reference};

/// HSTU-style: causal softmax attention, then gated by `u` (one more input).
const GATED: &str = "graph gated_attention {
  attr max_len: index
  attr scale: float = 0.125
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : bf16[%1, 2, 32]
  %3 = input k : bf16[%1, 2, 32]
  %4 = input v : bf16[%1, 2, 32]
  %5 = input u : bf16[%1, 2, 32]
  %6 = contract %2[ihd], %3[jhd] -> [ijh] : f32[%1, %1, 2]
  %7 = attr scale : f32[]
  %8 = mul %6, %7 : f32[%1, %1, 2]
  %9 = mask j <= i : bool[%1, %1]
  %10 = const -inf : f32[]
  %11 = select %9, %8, %10 : f32[%1, %1, 2]
  %12 = softmax %11, axis 1 : f32[%1, %1, 2]
  %13 = cast %4 : f32[%1, 2, 32]
  %14 = contract %12[ijh], %13[jhe] -> [ihe] : f32[%1, 2, 32]
  %15 = cast %14 : bf16[%1, 2, 32]
  %16 = mul %15, %5 : bf16[%1, 2, 32]
  output y = %16
}";

/// Two attentions over one set of queries and keys, different values,
/// summed: two parts for one template (its kernel is emitted once).
const TWO: &str = "graph two_attentions {
  attr max_len: index
  attr scale: float = 0.125
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : f16[%1, 32]
  %3 = input k : f16[%1, 32]
  %4 = input v : f16[%1, 32]
  %5 = input w : f16[%1, 32]
  %6 = contract %2[id], %3[jd] -> [ij] : f32[%1, %1]
  %7 = attr scale : f32[]
  %8 = mul %6, %7 : f32[%1, %1]
  %9 = softmax %8, axis 1 : f32[%1, %1]
  %10 = cast %4 : f32[%1, 32]
  %11 = contract %9[ij], %10[je] -> [ie] : f32[%1, 32]
  %12 = cast %11 : f16[%1, 32]
  %13 = cast %5 : f32[%1, 32]
  %14 = contract %9[ij], %13[je] -> [ie] : f32[%1, 32]
  %15 = cast %14 : f16[%1, 32]
  %16 = add %12, %15 : f16[%1, 32]
  output y = %16
}";

fn check(text: &str, templates: usize) {
    let g = Graph::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut rt = Runtime::with_backend(BackendKind::Emu).expect("emulator");
    rt.set_kernel_cache(Arc::new(KernelCache::memory_only()));
    for arch in Arch::ALL {
        let spec = Spec::for_graph(&g, 40, arch).expect("spec");
        let (kernel, plan) = compile_with_plan(&g, &spec).unwrap_or_else(|e| panic!("{e}"));
        assert!(plan.starts_with("fast path: none"), "{plan}");
        assert_eq!(
            plan.matches("fast path flash_attention").count(),
            templates,
            "{plan}"
        );
        let flash_entries = kernel
            .ptx
            .lines()
            .filter(|l| l.starts_with(".visible .entry jg_attn"))
            .count();
        assert_eq!(flash_entries, 1, "{plan}");
        let cases = check_spec_against_reference(
            &g,
            &spec,
            &mut rt,
            40,
            &[("scale", AttrValue::Float(0.2))],
            &mut Rng::new(11),
            Tolerance::design,
        )
        .unwrap_or_else(|e| panic!("{arch}: {e}\n{plan}"));
        assert!(cases >= 5);
    }
}

#[test]
fn attention_inside_a_larger_graph_takes_the_flash_template() {
    check(GATED, 1);
}

#[test]
fn two_attention_parts_share_one_template_kernel() {
    check(TWO, 2);
}
