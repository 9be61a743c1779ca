//! `compile` answers mismatched specs with typed errors, and graphs no
//! template takes with the general path (the miss and its reason are in the
//! plan, never an error).

use jagged_codegen::{Arch, CodegenError, DType, Spec, compile, compile_with_plan};
use jagged_ir::ReduceOp;
use jagged_ir::ops::{self, JaggedSpec};

fn jspec(dtype: DType) -> JaggedSpec {
    JaggedSpec {
        dtype,
        offsets: DType::I32,
        inner: vec![4],
    }
}

#[test]
fn logsumexp_reduction_takes_the_general_path() {
    let graph = ops::jagged_reduce(&jspec(DType::F32), ReduceOp::LogSumExp).expect("graph");
    let spec = Spec::for_graph(&graph, 16, Arch::Sm80).expect("spec");
    let (kernel, plan) = compile_with_plan(&graph, &spec).expect("general path");
    assert!(
        plan.starts_with("fast path: none (no kernel template matches the graph")
            || plan.starts_with("fast path: none (graph `jagged_reduce`: logsumexp"),
        "{plan}"
    );
    assert!(plan.contains("logsumexp"), "{plan}");
    assert!(plan.contains("elements %"), "{plan}");
    assert_eq!(kernel.launches.len(), 1, "{plan}");
}

#[test]
fn spec_dtype_must_match_the_graph() {
    let graph = ops::jagged_softmax(&jspec(DType::F32)).expect("graph");
    let mut spec = Spec::for_graph(&graph, 16, Arch::Sm80).expect("spec");
    spec.dtype = DType::BF16;
    let err = compile(&graph, &spec).unwrap_err();
    assert!(matches!(err, CodegenError::SpecMismatch(_)), "{err}");
    assert!(err.to_string().contains("`values`"), "{err}");
}

#[test]
fn spec_inner_dims_must_match_the_graph() {
    let graph = ops::jagged_softmax(&jspec(DType::F32)).expect("graph");
    let mut spec = Spec::for_graph(&graph, 16, Arch::Sm80).expect("spec");
    spec.inner = vec![8];
    assert!(matches!(
        compile(&graph, &spec),
        Err(CodegenError::SpecMismatch(_))
    ));
}

/// The flash-attention template is fused onto tensor cores: f32 inputs and
/// D = 8 are not its specializations, so the general path takes the graph
/// (its result is checked against the reference in `graph_end_to_end`).
#[test]
fn attention_outside_tensor_core_specs_takes_the_general_path() {
    let graph = ops::fbgemm_jagged_flash_attention_basic(&ops::FbgemmAttentionSpec {
        input_dtype: DType::F32,
        dtype: DType::F32,
        offsets: DType::I32,
        head_dim: 8,
        use_mask: false,
    })
    .expect("graph");
    let spec = Spec::for_graph(&graph, 16, Arch::Sm80).expect("spec");
    let (kernel, plan) = compile_with_plan(&graph, &spec).expect("general path");
    assert!(
        plan.starts_with("fast path: none (flash attention: head dim 8"),
        "{plan}"
    );
    // Softmax statistics, then the output: the scores are never stored.
    assert!(plan.contains("softmax stats of"), "{plan}");
    assert_eq!(kernel.launches.len(), 2, "{plan}");
    assert_eq!(kernel.scratch.len(), 2, "{plan}");
}

#[test]
fn output_is_deterministic() {
    let graph = ops::jagged_dense_elementwise_mul(&jspec(DType::F16)).expect("graph");
    let spec = Spec::for_graph(&graph, 100, Arch::Sm90a).expect("spec");
    let a = compile(&graph, &spec).expect("compile");
    let b = compile(&graph, &spec).expect("compile");
    assert_eq!(a, b);
    assert!(a.ptx.contains(".target sm_90a"));
    assert!(a.ptx.contains(".version 8.0"));
}

#[test]
fn launch_plan_prints_in_graph_order() {
    let graph = ops::jagged_to_padded_dense(&jspec(DType::F32)).expect("graph");
    let spec = Spec::for_graph(&graph, 100, Arch::Sm80).expect("spec");
    let compiled = compile(&graph, &spec).expect("compile");
    let text = compiled.to_string();
    // ops::jagged_to_padded_dense declares `offsets` before `values`: the
    // kernel reads values (graph input 1) then offsets (graph input 0).
    assert!(
        text.contains(
            "(output0, input1, input0, u64 max_len, u64 B*max_len*1, f32 attr padding_value)"
        ),
        "{text}"
    );
    assert!(text.contains("output0: B*max_len*4 x f32"), "{text}");
}

/// What the general path cannot lower is a typed error that quotes the node
/// in text form and where it came from (here the graph file's line), never
/// a Rust `Debug` dump.
#[test]
fn general_path_errors_quote_the_node_and_its_line() {
    let graph = jagged_ir::Graph::parse(
        "graph keep {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 4]
  %3 = input keep : bool[%1]
  %4 = seqs_where %3 : seqs
  %5 = compact %2, %4 : f32[%4, 4]
  output kept = %5
}",
    )
    .expect("graph");
    let spec = Spec::for_graph(&graph, 16, Arch::Sm80).expect("spec");
    let err = compile(&graph, &spec).expect_err("no offsets output to size it by");
    assert!(matches!(err, CodegenError::Node { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("%5 = compact %2, %4 (line 8)"),
        "the node and its line: {text}"
    );
    assert!(
        !text.contains("Handle") && !text.contains("Node {"),
        "{text}"
    );
}

/// An HSTU graph (bf16, H = 2, D = 64) whose scores are `%5` (q . k) and the
/// attribute `%6` combined by `scores` (e.g. `div %5, %6`), as `%7`.
fn hstu_with_scores(attr: &str, scores: &str) -> jagged_ir::Graph {
    let text = format!(
        "graph hstu_{attr} {{
  attr max_len: index
  attr {attr}: float = 0.5
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input q : bf16[%1, 2, 64]
  %3 = input k : bf16[%1, 2, 64]
  %4 = input v : bf16[%1, 2, 64]
  %5 = contract %2[ihd], %3[jhd] -> [ijh] : f32[%1, %1, 2]
  %6 = attr {attr} : f32[]
  %7 = {scores} : f32[%1, %1, 2]
  %8 = silu %7 : f32[%1, %1, 2]
  %9 = cast %4 : f32[%1, 2, 64]
  %10 = contract %8[ijh], %9[jhe] -> [ihe] : f32[%1, 2, 64]
  %11 = cast %10 : bf16[%1, 2, 64]
  output out = %11
}}"
    );
    jagged_ir::Graph::parse(&text).expect("graph")
}

/// The flash-attention fast path says why it does not take an
/// attention-like graph, in the plan, quoting the node and its line.
#[test]
fn attention_misses_say_why() {
    let graph = hstu_with_scores("temperature", "div %5, %6");
    let spec = Spec::for_graph(&graph, 64, Arch::Sm80).expect("spec");
    let (_, plan) = compile_with_plan(&graph, &spec).expect("general path");
    assert!(
        plan.contains("flash attention: the scores %7 = div %5, %6 (line 11) are not `q . k`"),
        "{plan}"
    );
}

/// The flash-attention template takes scores scaled by an f32 attribute of
/// any name (`alpha` here), bound to that attribute at launch.
#[test]
fn attention_scale_attribute_may_have_any_name() {
    let graph = hstu_with_scores("alpha", "mul %6, %5");
    let spec = Spec::for_graph(&graph, 64, Arch::Sm80).expect("spec");
    let (kernel, plan) = compile_with_plan(&graph, &spec).expect("compiles");
    assert!(plan.starts_with("fast path: flash_attention"), "{plan}");
    assert!(
        kernel.launches[0]
            .params
            .iter()
            .any(|p| *p == jagged_codegen::ParamBinding::FloatAttr("alpha".into())),
        "{plan}"
    );
}
