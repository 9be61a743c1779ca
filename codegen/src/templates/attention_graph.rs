//! Recognizes attention in a graph: `contract(q, k)` over the head dim,
//! optionally times an f32 attribute (of any name: `scale`, `alpha`), then a row-wise probability
//! function (softmax over the key axis, possibly of `-inf`-masked scores, or
//! pointwise SiLU), optionally divided by `max_len` and masked to zero, then
//! `contract(p, v)` over the key axis, and optionally the `logsumexp` of the
//! same scores. Any graph of this shape (`jagged_flash_attention`,
//! `fbgemm_jagged_flash_attention_basic`, or a user's variant) becomes one
//! fused flash kernel ([`super::attention`]).
//!
//! The two contractions are matched up to a renaming of their axis letters
//! (and an exchange of their operands): `q[ihd] . k[jhd] -> [ijh]` and
//! `q[xhy] . k[zhy] -> [xzh]` are one contraction, as are `p[ijh] . v[jhe]
//! -> [ihe]` and `p[ijh] . v[jhd] -> [ihd]` (the graph the DSL builds when
//! the value dim's generic is `Dv`). What counts is each axis's role: which
//! operand position it is, and whether it is shared, kept or summed.

use jagged_ir::graph::MAX_LEN;
use jagged_ir::{BinaryOp, Graph, Handle, IndexPredicate, Node, ReduceOp, UnaryOp};

use super::attention::{Activation, PairMask};

/// The static shape of a recognized attention graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttentionPattern {
    /// Softmax or SiLU.
    pub activation: Activation,
    /// The float attribute the scores are multiplied by, if any (any name:
    /// `scale`, `alpha`, ...).
    pub scale: Option<String>,
    /// Softmax over scores masked to `-inf` outside this mask.
    pub score_mask: Option<PairMask>,
    /// Probabilities set to zero outside this mask.
    pub prob_mask: Option<PairMask>,
    /// Probabilities divided by `max_len`.
    pub divide_by_max_len: bool,
    /// The graph also outputs `logsumexp` of the (masked) scores.
    pub lse: bool,
    /// Heads are an inner dim (`[T, H, D]` operands) rather than absent (`[T, D]`).
    pub has_heads: bool,
}

/// A match: the pattern and the graph nodes in the kernel's order
/// (inputs `q, k, v, offsets`; outputs `out` and, with `lse`, `lse`).
#[derive(Clone, Debug)]
pub struct AttentionMatch {
    /// What to generate.
    pub pattern: AttentionPattern,
    /// Graph input nodes of `q, k, v, offsets`.
    pub inputs: Vec<Handle<Node>>,
    /// Graph nodes of `out` (and `lse`).
    pub outputs: Vec<Handle<Node>>,
}

/// Looks through casts (inputs rounded to the compute dtype, the result to
/// the output dtype).
fn uncast(graph: &Graph, mut h: Handle<Node>) -> Handle<Node> {
    while let Node::Cast { arg, .. } = graph.node(h) {
        h = *arg;
    }
    h
}

fn pair_mask(graph: &Graph, h: Handle<Node>) -> Option<PairMask> {
    match graph.node(h) {
        Node::Mask {
            pred: IndexPredicate::KeyNotAfterQuery,
            ..
        } => Some(PairMask::KeyNotAfterQuery),
        Node::Mask {
            pred: IndexPredicate::KeyNotBeforeQuery,
            ..
        } => Some(PairMask::KeyNotBeforeQuery),
        _ => None,
    }
}

fn is_const(graph: &Graph, h: Handle<Node>, want: f64) -> bool {
    matches!(graph.node(h), Node::Const { value, .. } if *value == want)
}

/// A jagged graph input with one ragged dim, and its sequence set.
fn jagged_input(graph: &Graph, h: Handle<Node>) -> Option<Handle<Node>> {
    match graph.node(h) {
        Node::Input { ty, .. } if ty.ragged_rank() == 1 => ty.seqs(),
        _ => None,
    }
}

/// A contraction's axis strings `[lhs, rhs, out]` with every letter replaced
/// by its order of first appearance: two contractions compute the same thing
/// exactly when these are equal, whatever letters they use.
fn canonical_axes(axes: [&str; 3]) -> [Vec<usize>; 3] {
    let mut seen: Vec<char> = Vec::new();
    axes.map(|s| {
        s.chars()
            .map(|c| {
                seen.iter().position(|&x| x == c).unwrap_or_else(|| {
                    seen.push(c);
                    seen.len() - 1
                })
            })
            .collect()
    })
}

/// `contract(a, b)` of the shape `with_heads` or `without` (axis strings `[a,
/// b, out]`): the operands in the shape's order, and whether it is the one
/// with heads. Axes are identified by their role (an
/// operand's position, which axes are shared, kept or summed), not by their
/// letters, and the operands may come in either order.
fn contraction(
    graph: &Graph,
    h: Handle<Node>,
    with_heads: [&str; 3],
    without: [&str; 3],
) -> Option<(Handle<Node>, Handle<Node>, bool)> {
    let Node::Contract {
        lhs,
        lhs_axes,
        rhs,
        rhs_axes,
        out_axes,
        ..
    } = graph.node(h)
    else {
        return None;
    };
    let (lhs_axes, rhs_axes, out_axes) = (lhs_axes.as_str(), rhs_axes.as_str(), out_axes.as_str());
    let as_written = canonical_axes([lhs_axes, rhs_axes, out_axes]);
    let swapped = canonical_axes([rhs_axes, lhs_axes, out_axes]);
    [(with_heads, true), (without, false)]
        .into_iter()
        .find_map(|(form, heads)| {
            let form = canonical_axes(form);
            if as_written == form {
                Some((*lhs, *rhs, heads))
            } else if swapped == form {
                Some((*rhs, *lhs, heads))
            } else {
                None
            }
        })
}

/// Matches `graph` against the attention shape; the reason it is not
/// attention otherwise (shown in `jagc emit --plan` as the fast path's miss).
pub fn match_attention(graph: &Graph) -> Result<AttentionMatch, String> {
    let (out, lse_out) = match graph.outputs() {
        [o] => (o.value, None),
        [o, l] => (o.value, Some(l.value)),
        _ => return Err("expected one output (out) or two (out, lse)".into()),
    };
    let (p, v, has_heads) = contraction(
        graph,
        uncast(graph, out),
        ["ijh", "jhe", "ihe"],
        ["ij", "jd", "id"],
    )
    .ok_or_else(|| {
        format!(
            "the output {} is not `p . v` contracted over the key axis",
            graph.describe(uncast(graph, out))
        )
    })?;
    let v = uncast(graph, v);
    let seqs = jagged_input(graph, v).ok_or("v is not a jagged graph input")?;

    // Walk from P down to the scores.
    let mut prob_mask = None;
    let mut divide_by_max_len = false;
    let mut h = p;
    let (activation, masked_scores) = loop {
        match graph.node(h) {
            Node::Select {
                cond,
                on_true,
                on_false,
            } if prob_mask.is_none() && is_const(graph, *on_false, 0.0) => {
                prob_mask = Some(pair_mask(graph, *cond).ok_or(
                    "the probabilities are masked by something other than j <= i or j >= i",
                )?);
                h = *on_true;
            }
            Node::Binary {
                op: BinaryOp::Div,
                lhs,
                rhs,
            } if !divide_by_max_len
                && matches!(graph.node(*rhs), Node::Attr { name, .. } if name == MAX_LEN) =>
            {
                divide_by_max_len = true;
                h = *lhs;
            }
            Node::Softmax { arg, axis: 1 } => break (Activation::Softmax, *arg),
            Node::Unary {
                op: UnaryOp::Silu,
                arg,
            } => break (Activation::Silu, *arg),
            _ => {
                return Err(format!(
                    "{} is none of softmax over the keys, silu, a 0/1 pair mask or a division \
                     by max_len",
                    graph.describe(h)
                ));
            }
        }
    };
    let (scores, score_mask) = match graph.node(masked_scores) {
        Node::Select {
            cond,
            on_true,
            on_false,
        } if activation == Activation::Softmax && is_const(graph, *on_false, f64::NEG_INFINITY) => {
            (
                *on_true,
                Some(
                    pair_mask(graph, *cond)
                        .ok_or("the scores are masked by something other than j <= i or j >= i")?,
                ),
            )
        }
        _ => (masked_scores, None),
    };
    // Scores times a float attribute, on either side (its name does not
    // matter: the kernel takes it as a parameter bound to that attribute).
    let float_attr = |h: Handle<Node>| match graph.node(h) {
        Node::Attr {
            name,
            dtype: jagged_ir::DType::F32,
        } if name != MAX_LEN => Some(name.clone()),
        _ => None,
    };
    let (qk, scale) = match graph.node(scores) {
        Node::Binary {
            op: BinaryOp::Mul,
            lhs,
            rhs,
        } => match (float_attr(*rhs), float_attr(*lhs)) {
            (Some(name), _) => (*lhs, Some(name)),
            (None, Some(name)) => (*rhs, Some(name)),
            (None, None) => (scores, None),
        },
        _ => (scores, None),
    };
    let (q, k, qk_heads) = contraction(graph, qk, ["ihd", "jhd", "ijh"], ["id", "jd", "ij"])
        .ok_or_else(|| {
            format!(
                "the scores {} are not `q . k` contracted over the head dim (times a scale \
                 attribute)",
                graph.describe(qk)
            )
        })?;
    let (q, k) = (uncast(graph, q), uncast(graph, k));
    let on_seqs = |x| jagged_input(graph, x) == Some(seqs);
    if qk_heads != has_heads || !on_seqs(q) || !on_seqs(k) {
        return Err(
            "q, k and v are not jagged inputs of one sequence set with the same heads".into(),
        );
    }
    let Node::Seqs {
        offsets,
        truncate: true,
    } = graph.node(seqs)
    else {
        return Err("the sequences are not truncated to max_len".into());
    };
    if !matches!(graph.node(*offsets), Node::Input { .. }) {
        return Err("the offsets are not a graph input".into());
    }
    if let Some(l) = lse_out {
        let matches_lse = matches!(
            graph.node(uncast(graph, l)),
            Node::Reduce { op: ReduceOp::LogSumExp, arg, axis: 1 } if *arg == masked_scores
        );
        if !matches_lse || activation != Activation::Softmax {
            return Err("the second output is not the logsumexp of the softmax's scores".into());
        }
    }
    let mut outputs = vec![out];
    outputs.extend(lse_out);
    Ok(AttentionMatch {
        pattern: AttentionPattern {
            activation,
            scale,
            score_mask,
            prob_mask,
            divide_by_max_len,
            lse: lse_out.is_some(),
            has_heads,
        },
        inputs: vec![q, k, v, *offsets],
        outputs,
    })
}
