//! The entry point: a jagged-ir [`Graph`] and a [`Spec`] to a [`CompiledKernel`].
//!
//! The graph is matched against the shapes of the primitives the templates
//! implement (a scan of lengths, a padded gather, an elementwise tree over
//! jagged and dense operands, a per-sequence reduce or softmax, a compaction);
//! the matched primitive is lowered by [`crate::lower()`], and its parameter
//! bindings are renumbered to the graph's input and output order.

use jagged_ir::{Dim, Graph, Handle, IndexPredicate, Node, ReduceOp, ScanMode, TensorType};

use crate::error::CodegenError;
use crate::launch::{CompiledKernel, ParamBinding, SizeExpr, TensorMapBinding};
use crate::lower::{Lowered, Primitive, lower_module};
use crate::spec::{Arch, DType, Spec};
use crate::templates::map::{MapExpr, MapOperand, MapSource};
use crate::templates::segment::ReduceKind;

/// A primitive found in a graph, with the graph nodes playing each role.
#[derive(Debug)]
struct Matched {
    primitive: Primitive,
    /// Graph input node of each primitive input (in the primitive's order).
    inputs: Vec<Handle<Node>>,
    /// Graph node of each primitive output (in the primitive's order).
    outputs: Vec<Handle<Node>>,
    /// Whether the rows are truncated to `max_len` (otherwise no row limit).
    truncated: bool,
}

/// Compiles `graph` for `spec`: picks the kernel templates by pattern-matching
/// the graph, generates and prints the PTX, and returns it with the launch
/// metadata (bindings in the graph's input / output order).
pub fn compile(graph: &Graph, spec: &Spec) -> Result<CompiledKernel, CodegenError> {
    Ok(compile_with_plan(graph, spec)?.0)
}

/// [`compile`], with the plan as text: the fast path that took the graph
/// (then its launches), or why none did (then the general path's kernels,
/// what each computes and fuses, and its scratch buffers). A fast-path miss
/// is never an error: the general path compiles every validated graph.
pub fn compile_with_plan(
    graph: &Graph,
    spec: &Spec,
) -> Result<(CompiledKernel, String), CodegenError> {
    check_spec_describes(graph, spec)?;
    match fast_path(graph, spec) {
        Ok((lowered, name)) => {
            let kernel = lowered.print(spec.arch)?;
            let plan = format!("fast path: {name}\n{kernel}");
            Ok((kernel, plan))
        }
        // A template that cannot take this graph (or its other inputs' dims)
        // is a miss, never an error.
        Err(
            CodegenError::NoTemplate(why)
            | CodegenError::Unsupported(why)
            | CodegenError::SpecMismatch(why),
        ) => {
            let general = crate::general::compile_general(graph, spec)?;
            let plan = format!(
                "fast path: none ({why})\ngeneral path, {} kernel(s):\n{}{}",
                general.kernel.launches.len(),
                general.plan,
                general.kernel
            );
            Ok((general.kernel, plan))
        }
        Err(err) => Err(err),
    }
}

/// The template that matches the whole graph, lowered (bindings in the
/// graph's input and output order); with its name.
pub(crate) fn fast_path(
    graph: &Graph,
    spec: &Spec,
) -> Result<(Lowered, &'static str), CodegenError> {
    let matched = match_graph(graph)?;
    check_against_graph(graph, &matched, spec)?;
    let mut compiled = lower_module(&matched.primitive, spec)?;
    let input_order: Vec<Handle<Node>> = graph.inputs().map(|(h, _, _)| h).collect();
    let input_pos = |k: usize| -> Result<usize, CodegenError> {
        let h = matched.inputs[k];
        input_order.iter().position(|&g| g == h).ok_or_else(|| {
            CodegenError::NoTemplate(format!("input %{} is not a graph input", h.index()))
        })
    };
    let output_pos = |k: usize| -> Result<usize, CodegenError> {
        let h = matched.outputs[k];
        graph
            .outputs()
            .iter()
            .position(|o| o.value == h)
            .ok_or_else(|| {
                CodegenError::NoTemplate(format!("%{} is not a graph output", h.index()))
            })
    };
    for launch in &mut compiled.launches {
        for param in &mut launch.params {
            *param = match &*param {
                ParamBinding::Input(k) => ParamBinding::Input(input_pos(*k)?),
                ParamBinding::Output(k) => ParamBinding::Output(output_pos(*k)?),
                ParamBinding::TensorMap(map) => ParamBinding::TensorMap(TensorMapBinding {
                    input: input_pos(map.input)?,
                    ..map.clone()
                }),
                // Without truncation every row counts: an unreachable row limit.
                ParamBinding::Size(SizeExpr::MaxLen) if !matched.truncated => {
                    ParamBinding::Size(SizeExpr::Const(u64::from(u32::MAX)))
                }
                other => other.clone(),
            };
        }
    }
    // Outputs in graph order.
    let mut outputs = compiled.outputs.clone();
    for (k, out) in compiled.outputs.iter().enumerate() {
        let mut out = out.clone();
        if let Some(src) = out.used_rows_from {
            out.used_rows_from = Some(output_pos(src)?);
        }
        outputs[output_pos(k)?] = out;
    }
    compiled.outputs = outputs;
    Ok((compiled, matched.primitive.name()))
}

/// A part of a graph that a fast path computes inside the general path's
/// plan: the node whose value it gives, and the template's kernels.
pub(crate) struct TemplateGroup {
    /// The node the template computes (its one output).
    pub root: Handle<Node>,
    /// The template, its bindings in the graph's input order and its one
    /// output as `Output(0)`.
    pub lowered: Lowered,
    /// The template's name.
    pub name: &'static str,
}

/// The fast paths that take a part of `graph` (not the whole of it): today
/// flash attention, which the general path would compute by recomputing each
/// score for every output element. Largest parts first; a node inside an
/// accepted part is not tried again.
pub(crate) fn template_groups(graph: &Graph, spec: &Spec) -> Vec<TemplateGroup> {
    let mut groups: Vec<TemplateGroup> = Vec::new();
    let mut covered: Vec<Handle<Node>> = Vec::new();
    let nodes: Vec<Handle<Node>> = graph.nodes().iter().map(|(h, _)| h).collect();
    for &h in nodes.iter().rev() {
        if covered.contains(&h)
            || !matches!(graph.node(h), Node::Contract { .. } | Node::Cast { .. })
        {
            continue;
        }
        let part = graph.with_outputs(vec![jagged_ir::Output {
            name: "out".to_string(),
            value: h,
        }]);
        let reads = reachable(graph, h);
        let Ok(part_spec) = Spec::for_inputs(
            graph,
            |x| reads.contains(&x),
            u64::from(spec.max_len_bucket),
            spec.arch,
        ) else {
            continue;
        };
        if let Ok((lowered, name)) = fast_path(&part, &part_spec)
            && matches!(name, "flash_attention")
        {
            covered.extend(reads);
            groups.push(TemplateGroup {
                root: h,
                lowered,
                name,
            });
        }
    }
    groups
}

/// The nodes `root` is computed from: its operands, theirs, and the
/// sequence sets (with their offsets) of every type on the way.
fn reachable(graph: &Graph, root: Handle<Node>) -> Vec<Handle<Node>> {
    let mut seen = Vec::new();
    let mut stack = vec![root];
    while let Some(h) = stack.pop() {
        if seen.contains(&h) {
            continue;
        }
        seen.push(h);
        stack.extend(graph.node(h).operands());
        if let jagged_ir::Type::Tensor(t) = graph.type_of(h) {
            stack.extend(t.dims.iter().filter_map(|d| match d {
                Dim::Ragged(s) => Some(*s),
                _ => None,
            }));
        }
    }
    seen
}

impl Spec {
    /// The spec of `graph` for a run-time `max_len` on `arch`: inner dims and
    /// dtypes are read from the graph's inputs (the first float input gives the
    /// values' dtype and inner dims, the first i32/i64 input the offsets').
    pub fn for_graph(graph: &Graph, max_len: u64, arch: Arch) -> Result<Spec, CodegenError> {
        Spec::for_inputs(graph, |_| true, max_len, arch)
    }

    /// [`Spec::for_graph`] from the inputs `read` keeps (those a part of
    /// the graph reads).
    fn for_inputs(
        graph: &Graph,
        read: impl Fn(Handle<Node>) -> bool,
        max_len: u64,
        arch: Arch,
    ) -> Result<Spec, CodegenError> {
        let inputs = || graph.inputs().filter(|(h, _, _)| read(*h));
        let values = inputs()
            .find(|(_, _, ty)| ty.dtype.is_float())
            .map(|(_, _, ty)| ty.clone());
        let index = inputs()
            .find(|(_, _, ty)| ty.dtype.is_index())
            .map(|(_, _, ty)| ty.dtype)
            // A graph with no sequences (dense values only) has no offsets
            // dtype to specialize on; its kernels do not read one.
            .unwrap_or(DType::I64);
        let (dtype, inner) = match values {
            Some(ty) => (ty.dtype, static_dims(&ty)),
            None => (DType::F32, Vec::new()),
        };
        Spec::try_new(&inner, max_len, dtype, index, arch)
            .map_err(|e| CodegenError::Unsupported(format!("graph `{}`: {e}", graph.name())))
    }
}

/// The static dims of a type.
fn static_dims(ty: &TensorType) -> Vec<usize> {
    ty.dims
        .iter()
        .filter_map(|d| match d {
            Dim::Static(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// The static dims of a type as the spec holds them (32-bit; a wider one
/// matches no spec, so it is refused by the spec check first).
fn static_inner(ty: &TensorType) -> Vec<u32> {
    crate::spec::inner_dims_u32(&static_dims(ty)).unwrap_or_default()
}

fn no_template(graph: &Graph, why: &str) -> CodegenError {
    CodegenError::NoTemplate(format!("graph `{}`: {why}", graph.name()))
}

/// The single output of a one-output graph.
fn single_output(graph: &Graph) -> Option<Handle<Node>> {
    match graph.outputs() {
        [only] => Some(only.value),
        _ => None,
    }
}

/// `(offsets input, truncate)` of a `Seqs` node over an input.
fn seqs_input(graph: &Graph, seqs: Handle<Node>) -> Option<(Handle<Node>, bool)> {
    match graph.node(seqs) {
        Node::Seqs { offsets, truncate } if is_input(graph, *offsets) => {
            Some((*offsets, *truncate))
        }
        _ => None,
    }
}

fn is_input(graph: &Graph, h: Handle<Node>) -> bool {
    matches!(graph.node(h), Node::Input { .. })
}

/// A jagged input with one ragged dim: its sequence set.
fn jagged_input(graph: &Graph, h: Handle<Node>) -> Option<Handle<Node>> {
    match graph.node(h) {
        Node::Input { ty, .. } if ty.ragged_rank() == 1 => ty.seqs(),
        _ => None,
    }
}

/// A dense `[B, N, inner...]` input.
fn padded_input(graph: &Graph, h: Handle<Node>) -> bool {
    match graph.node(h) {
        Node::Input { ty, .. } => matches!(ty.dims.as_slice(), [Dim::Batch, Dim::MaxLen, ..]),
        _ => false,
    }
}

/// A dense `[B, inner...]` input (one row per sequence).
fn per_sequence_input(graph: &Graph, h: Handle<Node>) -> bool {
    match graph.node(h) {
        Node::Input { ty, .. } => {
            matches!(ty.dims.first(), Some(Dim::Batch))
                && ty.dims[1..].iter().all(|d| matches!(d, Dim::Static(_)))
        }
        _ => false,
    }
}

fn match_graph(graph: &Graph) -> Result<Matched, CodegenError> {
    let not_attention = match crate::templates::attention_graph::match_attention(graph) {
        Ok(m) => {
            return Ok(Matched {
                primitive: Primitive::Attention(m.pattern),
                inputs: m.inputs,
                outputs: m.outputs,
                truncated: true,
            });
        }
        Err(why) => why,
    };
    // A graph ending in a contraction is attention or nothing: say why not.
    if let [first, ..] = graph.outputs() {
        let mut h = first.value;
        while let Node::Cast { arg, .. } = graph.node(h) {
            h = *arg;
        }
        if matches!(graph.node(h), Node::Contract { .. }) {
            return Err(no_template(
                graph,
                &format!("flash attention: {not_attention}"),
            ));
        }
    }
    if let [values, offsets] = graph.outputs() {
        return match_compaction(graph, values.value, offsets.value).ok_or_else(|| {
            no_template(
                graph,
                "two outputs that are neither attention (out, lse) nor a compaction (values, offsets)",
            )
        });
    }
    let out =
        single_output(graph).ok_or_else(|| no_template(graph, "expected one or two outputs"))?;
    let one = |primitive, inputs, truncated| Matched {
        primitive,
        inputs,
        outputs: vec![out],
        truncated,
    };
    match graph.node(out) {
        Node::Scan {
            mode: ScanMode::Complete,
            arg,
            axis: 0,
        } if is_input(graph, *arg) => Ok(one(Primitive::CompleteCumsum, vec![*arg], true)),
        Node::Select {
            cond,
            on_true,
            on_false,
        } => {
            let padded = match graph.node(*on_true) {
                Node::ToPadded { arg } => *arg,
                _ => return Err(no_template(graph, "select that is not a padded gather")),
            };
            let seqs = jagged_input(graph, padded)
                .ok_or_else(|| no_template(graph, "padded gather of a non-input"))?;
            let mask_ok = matches!(graph.node(*cond), Node::Mask { pred: IndexPredicate::RowInSequence(s), .. } if *s == seqs);
            let pad_ok =
                matches!(graph.node(*on_false), Node::Attr { name, .. } if name == "padding_value");
            let (offsets, _) = seqs_input(graph, seqs)
                .ok_or_else(|| no_template(graph, "sequence set not from an offsets input"))?;
            if !mask_ok || !pad_ok {
                return Err(no_template(
                    graph,
                    "select is not `row in sequence ? padded : padding_value`",
                ));
            }
            // The dense output has max_len rows per sequence, truncated set or
            // not: max_len is always the row limit.
            Ok(one(
                Primitive::JaggedToPaddedDense,
                vec![padded, offsets],
                true,
            ))
        }
        Node::FromPadded { arg, seqs } if padded_input(graph, *arg) => {
            let (offsets, _) = seqs_input(graph, *seqs)
                .ok_or_else(|| no_template(graph, "sequence set not from an offsets input"))?;
            // Rows at i >= N are zero: N (the dense shape) is the row limit.
            Ok(one(Primitive::DenseToJagged, vec![*arg, offsets], true))
        }
        Node::Reduce { op, arg, axis: 0 } => {
            let seqs = jagged_input(graph, *arg)
                .ok_or_else(|| no_template(graph, "reduce of a non-input"))?;
            let (offsets, truncated) = seqs_input(graph, seqs)
                .ok_or_else(|| no_template(graph, "sequence set not from an offsets input"))?;
            let kind = match op {
                ReduceOp::Sum => ReduceKind::Sum,
                ReduceOp::Mean => ReduceKind::Mean,
                ReduceOp::Max => ReduceKind::Max,
                ReduceOp::LogSumExp => {
                    return Err(no_template(graph, "logsumexp reduction is not implemented"));
                }
                ReduceOp::ArgMin | ReduceOp::ArgMax => {
                    return Err(no_template(graph, "arg reductions have no template"));
                }
            };
            Ok(one(
                Primitive::JaggedReduce(kind),
                vec![*arg, offsets],
                truncated,
            ))
        }
        Node::Softmax { arg, axis: 0 } => {
            let seqs = jagged_input(graph, *arg)
                .ok_or_else(|| no_template(graph, "softmax of a non-input"))?;
            let (offsets, truncated) = seqs_input(graph, seqs)
                .ok_or_else(|| no_template(graph, "sequence set not from an offsets input"))?;
            Ok(one(
                Primitive::JaggedSoftmax,
                vec![*arg, offsets],
                truncated,
            ))
        }
        Node::Unary { .. } | Node::Binary { .. } => match_map(graph, out),
        _ => Err(no_template(
            graph,
            &format!("no template for output {}", graph.describe(out)),
        )),
    }
}

/// An elementwise tree over jagged inputs (one sequence set), dense `[B, N, ...]`
/// inputs and constants.
fn match_map(graph: &Graph, out: Handle<Node>) -> Result<Matched, CodegenError> {
    let mut leaves: Vec<Handle<Node>> = Vec::new();
    let mut seqs: Option<Handle<Node>> = None;
    let expr = map_expr(graph, out, &mut leaves, &mut seqs)?;
    let seqs =
        seqs.ok_or_else(|| no_template(graph, "elementwise graph without a jagged operand"))?;
    let (offsets, truncated) = seqs_input(graph, seqs)
        .ok_or_else(|| no_template(graph, "sequence set not from an offsets input"))?;
    // Primitive input order: the leaves, then the offsets.
    let operands: Vec<MapOperand> = leaves
        .iter()
        .enumerate()
        .map(|(k, &h)| MapOperand {
            source: if padded_input(graph, h) {
                MapSource::Dense
            } else if per_sequence_input(graph, h) {
                MapSource::PerSequence
            } else {
                MapSource::Jagged
            },
            input: k,
        })
        .collect();
    let has_dense = operands.iter().any(|o| o.source == MapSource::Dense);
    let mut inputs = leaves.clone();
    inputs.push(offsets);
    Ok(Matched {
        primitive: Primitive::Map {
            operands,
            offsets_input: leaves.len(),
            expr,
        },
        inputs,
        outputs: vec![out],
        truncated: truncated || has_dense,
    })
}

fn map_expr(
    graph: &Graph,
    h: Handle<Node>,
    leaves: &mut Vec<Handle<Node>>,
    seqs: &mut Option<Handle<Node>>,
) -> Result<MapExpr, CodegenError> {
    match graph.node(h) {
        Node::Input { .. } => {
            if let Some(s) = jagged_input(graph, h) {
                if seqs.is_some_and(|t| t != s) {
                    return Err(no_template(
                        graph,
                        "jagged operands on different sequence sets",
                    ));
                }
                *seqs = Some(s);
            } else if !padded_input(graph, h) && !per_sequence_input(graph, h) {
                return Err(no_template(
                    graph,
                    "elementwise operand that is neither jagged, [B, N, ...] nor [B, ...]",
                ));
            }
            let k = match leaves.iter().position(|&l| l == h) {
                Some(k) => k,
                None => {
                    leaves.push(h);
                    leaves.len() - 1
                }
            };
            Ok(MapExpr::Operand(k))
        }
        Node::Const { value, .. } if value.is_finite() => Ok(MapExpr::Const(*value as f32)),
        Node::Attr { name, .. } => Ok(MapExpr::Attr(name.clone())),
        Node::Unary { op, arg } => {
            let x = map_expr(graph, *arg, leaves, seqs)?;
            Ok(MapExpr::Unary(*op, Box::new(x)))
        }
        Node::Binary { op, lhs, rhs } => {
            let a = map_expr(graph, *lhs, leaves, seqs)?;
            let b = map_expr(graph, *rhs, leaves, seqs)?;
            Ok(MapExpr::Binary(*op, Box::new(a), Box::new(b)))
        }
        _ => Err(no_template(
            graph,
            &format!("elementwise tree contains {}", graph.describe(h)),
        )),
    }
}

/// `values = compact(x, seqs_where(mask))`, `offsets = offsets(same set)`.
fn match_compaction(
    graph: &Graph,
    values: Handle<Node>,
    offsets_out: Handle<Node>,
) -> Option<Matched> {
    let Node::Compact { arg, seqs: kept } = graph.node(values) else {
        return None;
    };
    let Node::Offsets { seqs, .. } = graph.node(offsets_out) else {
        return None;
    };
    if seqs != kept {
        return None;
    }
    let Node::SeqsWhere { mask } = graph.node(*kept) else {
        return None;
    };
    let mask = match graph.node(*mask) {
        Node::Cast {
            arg,
            dtype: DType::Bool,
        } => *arg,
        _ => *mask,
    };
    let source_seqs = jagged_input(graph, *arg)?;
    if jagged_input(graph, mask)? != source_seqs {
        return None;
    }
    // The template moves float values (the spec's dtype); the general
    // path compacts any other dtype.
    if !matches!(graph.node(*arg), Node::Input { ty, .. } if ty.dtype.is_float()) {
        return None;
    }
    let (offsets, _) = seqs_input(graph, source_seqs)?;
    Some(Matched {
        primitive: Primitive::MaskedSelectJagged,
        inputs: vec![*arg, offsets, mask],
        outputs: vec![values, offsets_out],
        truncated: false,
    })
}

/// The spec must describe the graph as [`Spec::for_graph`] does: the dtype
/// and inner dims of its first float input, the dtype of its first index
/// input. A spec that does not is the caller's error.
fn check_spec_describes(graph: &Graph, spec: &Spec) -> Result<(), CodegenError> {
    let derived = Spec::for_graph(graph, u64::from(spec.max_len_bucket), spec.arch)?;
    let mismatch = |what: String| {
        CodegenError::SpecMismatch(format!("graph `{}`: {what} (spec: {spec})", graph.name()))
    };
    let first_float = graph
        .inputs()
        .find(|(_, _, ty)| ty.dtype.is_float())
        .map_or("values", |(_, name, _)| name);
    if derived.dtype != spec.dtype {
        return Err(mismatch(format!(
            "input `{first_float}` has dtype {}",
            derived.dtype
        )));
    }
    if derived.inner != spec.inner {
        return Err(mismatch(format!(
            "input `{first_float}` has inner dims {:?}",
            derived.inner
        )));
    }
    if derived.index != spec.index {
        return Err(mismatch(format!("the offsets are {}", derived.index)));
    }
    Ok(())
}

/// The spec must describe the graph's values and offsets.
fn check_against_graph(graph: &Graph, matched: &Matched, spec: &Spec) -> Result<(), CodegenError> {
    for &h in &matched.inputs {
        let Node::Input { name, ty } = graph.node(h) else {
            continue;
        };
        let mismatch = |what: String| {
            CodegenError::SpecMismatch(format!(
                "input `{name}` of graph `{}`: {what} (spec: {spec})",
                graph.name()
            ))
        };
        if ty.dtype.is_float() {
            if ty.dtype != spec.dtype {
                return Err(mismatch(format!("dtype {} differs", ty.dtype)));
            }
            if static_inner(ty) != spec.inner {
                return Err(mismatch(format!(
                    "inner dims {:?} differ",
                    static_inner(ty)
                )));
            }
        } else if ty.dtype.is_index() && ty.dtype != spec.index {
            return Err(mismatch(format!("index dtype {} differs", ty.dtype)));
        }
    }
    Ok(())
}
