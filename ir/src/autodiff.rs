//! Reverse-mode automatic differentiation over the IR.
//!
//! [`backward`] derives, from a forward graph, the graph of its vector-Jacobian
//! product: given the forward inputs and one *cotangent* per float output
//! (`grad_<output>`, of the output's type), it returns the gradient of
//! `sum_o <grad_o, o>` with respect to the requested float inputs
//! (`grad_<input>`, of the input's type). The backward graph is an ordinary
//! validated [`Graph`] built only from the IR's existing nodes: the forward
//! nodes are copied into it (forward values are recomputed, not stored), the
//! adjoint of every node is appended after them, and the nodes no gradient
//! reads are dropped. Any executor runs it: the f64 reference checks it
//! against finite differences, and the general path of code generation
//! compiles it like any other graph.
//!
//! # Conventions
//!
//! - Only float values carry gradients. Integer and bool values (offsets,
//!   lengths, masks, comparisons, positions, gather indices) and the outputs of
//!   `cast` to an integer type are constants of the backward pass; attributes
//!   and constants too. Asking for the gradient of a non-float input is a
//!   typed error ([`AutodiffError::NotFloat`]).
//! - Rows outside `i < n_b` (past a sequence's length, or past `max_len` on a
//!   truncated set) do not influence any output, so their gradient is 0.
//! - At the kinks of piecewise functions the pass picks one subgradient:
//!   `abs` and `relu` have gradient 0 at 0; binary `max` (`min`) sends the
//!   gradient to `lhs` where `lhs >= rhs` (`lhs <= rhs`), ties included;
//!   reduce `max` shares it equally among all the entries of a line equal to
//!   the maximum (every maximum gets `g / count`).
//! - Broadcasting is undone by summing: the gradient of an operand that was
//!   broadcast to the result's structure is summed over the broadcast row and
//!   inner axes, and a padded `[B, N, ...]` operand that met a ragged result
//!   gets its gradient padded back (zeros past `n_b`).
//!
//! # What is not differentiable yet
//!
//! The IR has no scatter, no sum over the batch axis `B` and no inverse of a
//! compaction, so these adjoints cannot be written with its nodes and are a
//! typed error ([`AutodiffError::NotDifferentiable`]) naming the node, raised
//! only when a gradient actually flows through it:
//! - `gather` with a differentiated table (its adjoint is a scatter-add);
//! - `compact` (its adjoint expands the kept rows back to their places);
//! - any value without `B` (a dense `[D]` weight, a scalar input) that is
//!   broadcast to a batched result, and a `scan` along `B` (both need a sum
//!   over the sequences);
//! - a reduction or softmax along an axis that is neither the last row axis
//!   nor expressible as a contraction (the first of two `N` axes, or a
//!   static axis of a value with an `N` axis, unless it is its only inner
//!   axis), and a padded `[B, N, N, ...]` operand broadcast to
//!   `[%s, %s, ...]`.

use std::collections::{HashMap, HashSet};

use crate::arena::{Arena, Handle};
use crate::dtype::DType;
use crate::graph::{
    AttrDecl, BinaryOp, CompareOp, Dim, Graph, IndexPredicate, Node, Origins, Output, Precision,
    ReduceOp, ScanMode, TensorType, TopKPart, Type, UnaryOp,
};
use crate::validate::{Row, Structure, ValidationError, validate};

/// Why a backward graph could not be derived.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AutodiffError {
    /// A requested input does not exist in the forward graph.
    #[error("the graph has no input named '{name}'")]
    UnknownInput {
        /// The name asked for.
        name: String,
    },
    /// A requested input was asked for twice.
    #[error("the gradient of input '{name}' is requested twice")]
    DuplicateInput {
        /// The name asked for.
        name: String,
    },
    /// A requested input is not a float tensor (offsets, lengths, masks,
    /// indices): it has no gradient.
    #[error("input '{name}' is {dtype}, not a float tensor: it has no gradient")]
    NotFloat {
        /// The input.
        name: String,
        /// Its dtype.
        dtype: DType,
    },
    /// The name of a cotangent input (`grad_<output>`) is already the name of
    /// a forward input.
    #[error("the cotangent input '{name}' would have the name of a forward input")]
    NameClash {
        /// The clashing name.
        name: String,
    },
    /// A gradient flows through a node whose adjoint the IR cannot express.
    #[error("cannot differentiate {node}: {reason}")]
    NotDifferentiable {
        /// The forward node in text form (with its origin when recorded).
        node: String,
        /// Why its adjoint cannot be built from the IR's nodes.
        reason: String,
    },
    /// The backward graph failed validation: a bug of this pass, reported
    /// rather than hidden.
    #[error("the backward graph is invalid (a bug of the autodiff pass): {0}")]
    Invalid(#[from] ValidationError),
}

/// The name of the cotangent input of the forward output `output`.
pub fn cotangent_name(output: &str) -> String {
    format!("grad_{output}")
}

/// The name of the backward graph's output holding the gradient of `input`.
pub fn gradient_name(input: &str) -> String {
    format!("grad_{input}")
}

/// The backward (vector-Jacobian product) graph of `graph` with respect to
/// the float inputs named in `wrt`.
///
/// The result is named `<graph>_backward` and has the forward graph's
/// attributes; its inputs are the forward inputs (in their order), then one
/// cotangent `grad_<output>` per float output of the forward graph (in output
/// order, of the output's type); its outputs are `grad_<input>` for each name
/// of `wrt`, in that order, of the input's type: the gradient of
/// `sum_o sum(grad_o * o)` with respect to that input. An input no output
/// depends on gets a zero gradient.
///
/// # Errors
/// [`AutodiffError`]: an unknown, repeated or non-float input in `wrt`, a
/// name clash, or a node whose adjoint the IR cannot express (see the module
/// documentation).
pub fn backward(graph: &Graph, wrt: &[&str]) -> Result<Graph, AutodiffError> {
    let mut wanted: Vec<(Handle<Node>, String, TensorType)> = Vec::new();
    for &name in wrt {
        let (h, _, ty) = graph.inputs().find(|(_, n, _)| *n == name).ok_or_else(|| {
            AutodiffError::UnknownInput {
                name: name.to_string(),
            }
        })?;
        if wanted.iter().any(|(w, _, _)| *w == h) {
            return Err(AutodiffError::DuplicateInput {
                name: name.to_string(),
            });
        }
        if !ty.dtype.is_float() {
            return Err(AutodiffError::NotFloat {
                name: name.to_string(),
                dtype: ty.dtype,
            });
        }
        wanted.push((h, name.to_string(), ty.clone()));
    }
    let mut pass = Pass::new(graph, wanted.iter().map(|(h, _, _)| *h).collect());
    let mut outputs = Vec::new();
    for out in graph.outputs() {
        let Some(ty) = float_tensor(graph.type_of(out.value)) else {
            continue;
        };
        let name = cotangent_name(&out.name);
        if graph.inputs().any(|(_, n, _)| n == name) {
            return Err(AutodiffError::NameClash { name });
        }
        let cot = pass.push(Node::Input {
            name,
            ty: ty.clone(),
        });
        if pass.active[out.value.index()] {
            pass.accumulate(out.value, cot)?;
        }
    }
    pass.sweep()?;
    for (h, name, ty) in &wanted {
        let grad = match pass.grads.get(h) {
            Some(&g) => g,
            None => pass.zeros(ty, *h)?,
        };
        outputs.push(Output {
            name: gradient_name(name),
            value: grad,
        });
    }
    pass.finish(outputs)
}

/// The tensor type of a float value.
fn float_tensor(ty: &Type) -> Option<&TensorType> {
    ty.as_tensor().filter(|t| t.dtype.is_float())
}

/// The state of one reverse sweep: the backward graph's nodes so far (the
/// forward nodes first, at their own handles) and the adjoints.
struct Pass<'g> {
    fwd: &'g Graph,
    name: String,
    attrs: Vec<AttrDecl>,
    nodes: Arena<Node>,
    origins: Origins,
    /// The validated types of `nodes[..types.len()]`.
    types: Vec<Type>,
    /// Whether each forward node is a float value that depends on a
    /// differentiated input.
    active: Vec<bool>,
    /// The adjoint accumulated so far for each forward node.
    adjoints: Vec<Option<Handle<Node>>>,
    /// The final gradients of the differentiated inputs.
    grads: HashMap<Handle<Node>, Handle<Node>>,
    /// Scalar constants already built, by dtype and bits.
    consts: HashMap<(DType, u64), Handle<Node>>,
}

impl<'g> Pass<'g> {
    fn new(fwd: &'g Graph, wrt: Vec<Handle<Node>>) -> Self {
        let mut nodes = Arena::new();
        let mut active = Vec::with_capacity(fwd.nodes().len());
        for (h, node) in fwd.nodes().iter() {
            nodes.append(node.clone());
            let is = float_tensor(fwd.type_of(h)).is_some()
                && match node {
                    Node::Input { .. } => wrt.contains(&h),
                    _ => node.operands().iter().any(|o| active[o.index()]),
                };
            active.push(is);
        }
        Pass {
            fwd,
            name: format!("{}_backward", fwd.name()),
            attrs: fwd.attrs().to_vec(),
            nodes,
            origins: fwd.origins.clone(),
            types: (0..fwd.nodes().len())
                .map(|i| fwd.type_of(Handle::from_index(i)).clone())
                .collect(),
            active,
            adjoints: vec![None; fwd.nodes().len()],
            grads: HashMap::new(),
            consts: HashMap::new(),
        }
    }

    /// Appends `node`, or returns the node equal to it if there is one
    /// (every node but an input is a pure function of its operands, so
    /// equal nodes are equal values: the adjoints reuse the forward values
    /// they read, and each other's). Constants are shared by
    /// [`Pass::konst`], which tells `0.0` from `-0.0`.
    fn push(&mut self, node: Node) -> Handle<Node> {
        if !matches!(node, Node::Input { .. } | Node::Const { .. })
            && let Some((h, _)) = self.nodes.iter().find(|(_, n)| **n == node)
        {
            return h;
        }
        self.nodes.append(node)
    }

    /// The type of a node of the backward graph, from the validator (which
    /// reruns over the nodes built since the last question).
    fn ty(&mut self, h: Handle<Node>) -> Result<TensorType, AutodiffError> {
        if h.index() >= self.types.len() {
            let g = validate(
                self.name.clone(),
                self.attrs.clone(),
                self.nodes.clone(),
                Vec::new(),
                self.origins.clone(),
            )?;
            self.types = g.types;
        }
        match &self.types[h.index()] {
            Type::Tensor(t) => Ok(t.clone()),
            Type::Seqs => Err(self.internal(h, "a sequence set where a tensor is needed")),
        }
    }

    /// The forward type of forward node `h`.
    fn fwd_ty(&self, h: Handle<Node>) -> TensorType {
        match self.fwd.type_of(h) {
            Type::Tensor(t) => t.clone(),
            Type::Seqs => TensorType::scalar(DType::Bool),
        }
    }

    fn not_differentiable(&self, h: Handle<Node>, reason: impl Into<String>) -> AutodiffError {
        let node = if h.index() < self.fwd.nodes().len() {
            self.fwd.describe(h)
        } else {
            crate::text::node_text(h, &self.nodes[h])
        };
        AutodiffError::NotDifferentiable {
            node,
            reason: reason.into(),
        }
    }

    fn internal(&self, h: Handle<Node>, reason: &str) -> AutodiffError {
        self.not_differentiable(h, format!("internal: {reason}"))
    }

    fn konst(&mut self, value: f64, dtype: DType) -> Handle<Node> {
        let key = (dtype, value.to_bits());
        if let Some(&h) = self.consts.get(&key) {
            return h;
        }
        let h = self.push(Node::Const { value, dtype });
        self.consts.insert(key, h);
        h
    }

    fn unary(&mut self, op: UnaryOp, arg: Handle<Node>) -> Handle<Node> {
        self.push(Node::Unary { op, arg })
    }

    fn binary(&mut self, op: BinaryOp, lhs: Handle<Node>, rhs: Handle<Node>) -> Handle<Node> {
        self.push(Node::Binary { op, lhs, rhs })
    }

    fn mul(&mut self, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.binary(BinaryOp::Mul, a, b)
    }

    fn compare(&mut self, op: CompareOp, lhs: Handle<Node>, rhs: Handle<Node>) -> Handle<Node> {
        self.push(Node::Compare { op, lhs, rhs })
    }

    fn select(&mut self, cond: Handle<Node>, a: Handle<Node>, b: Handle<Node>) -> Handle<Node> {
        self.push(Node::Select {
            cond,
            on_true: a,
            on_false: b,
        })
    }

    fn reduce(&mut self, op: ReduceOp, arg: Handle<Node>, axis: usize) -> Handle<Node> {
        self.push(Node::Reduce { op, arg, axis })
    }

    fn contract(
        &mut self,
        (lhs, lhs_axes): (Handle<Node>, String),
        (rhs, rhs_axes): (Handle<Node>, String),
        out_axes: String,
        dtype: DType,
    ) -> Handle<Node> {
        // Adjoints contract at full precision (a tf32 forward's rounding
        // passes the gradient straight through).
        self.push(Node::Contract {
            lhs,
            lhs_axes,
            rhs,
            rhs_axes,
            out_axes,
            dtype,
            precision: Precision::Full,
        })
    }

    /// Zeros of type `ty` (for the node `at`, named by errors): a scalar
    /// constant, or `position * 0` over the type.
    fn zeros(&mut self, ty: &TensorType, at: Handle<Node>) -> Result<Handle<Node>, AutodiffError> {
        let zero = self.konst(0.0, ty.dtype);
        if ty.dims.is_empty() {
            return Ok(zero);
        }
        if Structure::of(ty).is_none() {
            return Err(self.not_differentiable(
                at,
                format!("a zero of type {ty} cannot be built from the IR's nodes"),
            ));
        }
        let p = self.push(Node::Position {
            axis: 0,
            ty: ty.clone(),
        });
        Ok(self.mul(p, zero))
    }

    /// Ones of type `ty`.
    fn ones(&mut self, ty: &TensorType, at: Handle<Node>) -> Result<Handle<Node>, AutodiffError> {
        let z = self.zeros(ty, at)?;
        let one = self.konst(1.0, ty.dtype);
        Ok(self.binary(BinaryOp::Add, z, one))
    }

    /// Adds `contribution` to the adjoint of forward node `h`.
    fn accumulate(
        &mut self,
        h: Handle<Node>,
        contribution: Handle<Node>,
    ) -> Result<(), AutodiffError> {
        let sum = match self.adjoints[h.index()] {
            Some(prev) => self.binary(BinaryOp::Add, prev, contribution),
            None => contribution,
        };
        self.adjoints[h.index()] = Some(sum);
        Ok(())
    }

    /// The complete adjoint of forward node `h`, of exactly its type (an
    /// adjoint that only broadcasts to it is materialized).
    fn adjoint(&mut self, h: Handle<Node>) -> Result<Option<Handle<Node>>, AutodiffError> {
        let Some(g) = self.adjoints[h.index()] else {
            return Ok(None);
        };
        let want = self.fwd_ty(h);
        if self.ty(g)? == want {
            return Ok(Some(g));
        }
        let z = self.zeros(&want, h)?;
        let g = self.binary(BinaryOp::Add, g, z);
        if self.ty(g)? != want {
            return Err(self.internal(h, "an adjoint does not broadcast to its value's type"));
        }
        Ok(Some(g))
    }

    /// `g` (of the type of a reduction of a value of type `x` along `axis`)
    /// spread back along `axis`: either `g` itself, when elementwise
    /// broadcasting puts it in the right place (the reduced axis is the last
    /// row axis, or the only inner one), or an outer product with ones.
    fn expand(
        &mut self,
        g: Handle<Node>,
        x: &TensorType,
        axis: usize,
        at: Handle<Node>,
    ) -> Result<Handle<Node>, AutodiffError> {
        if let Some(st) = Structure::of(x) {
            let rows_at = usize::from(x.dims.first() == Some(&Dim::Batch));
            let rows = st.rows.len();
            let last_row = rows > 0 && axis == rows_at + rows - 1;
            let only_inner = axis >= rows_at + rows && st.inner.len() == 1;
            if last_row || only_inner {
                return Ok(g);
            }
        }
        let letters = self.letters(x, at)?;
        let Some(&letter) = axis
            .checked_sub(usize::from(x.dims.first() == Some(&Dim::Batch)))
            .and_then(|k| letters.as_bytes().get(k))
        else {
            return Err(self.internal(at, "an axis without a letter"));
        };
        let Some(&dim) = x.dims.get(axis) else {
            return Err(self.internal(at, "an axis past the rank"));
        };
        let ones_ty = TensorType::new(x.dtype, vec![dim]);
        let ones = self.ones(&ones_ty, at)?;
        let g_letters: String = letters.chars().filter(|&c| c != letter as char).collect();
        Ok(self.contract(
            (g, g_letters),
            (ones, (letter as char).to_string()),
            letters,
            x.dtype,
        ))
    }

    /// One contraction letter per dim of `x` (past a leading `B`), when every
    /// such dim is ragged or static.
    fn letters(&self, x: &TensorType, at: Handle<Node>) -> Result<String, AutodiffError> {
        let named = match x.dims.first() {
            Some(Dim::Batch) => &x.dims[1..],
            _ => &x.dims[..],
        };
        if named.len() > 24 {
            return Err(self.not_differentiable(at, "more than 24 axes"));
        }
        named
            .iter()
            .enumerate()
            .map(|(k, d)| match d {
                Dim::Ragged(_) | Dim::Static(_) => Ok(char::from(b'a' + k as u8)),
                _ => Err(self.not_differentiable(
                    at,
                    format!(
                        "its adjoint spreads a value of type {x} along an axis that needs a \
                         contraction, and contractions take ragged and static axes only"
                    ),
                )),
            })
            .collect()
    }

    /// `c` summed down to the type `x` it was broadcast from (an elementwise
    /// operand's type).
    fn reduce_to(
        &mut self,
        c: Handle<Node>,
        x: &TensorType,
        at: Handle<Node>,
    ) -> Result<Handle<Node>, AutodiffError> {
        let mut cur = c;
        let mut ty = self.ty(cur)?;
        if ty.dims == x.dims {
            return Ok(cur);
        }
        let (Some(sx), Some(_)) = (Structure::of(x), Structure::of(&ty)) else {
            return Err(self.internal(at, "a broadcast operand without structure"));
        };
        // Inner dims broadcast from none.
        if sx.inner.is_empty() {
            let rank = Structure::of(&ty).map_or(0, |s| s.inner.len());
            for _ in 0..rank {
                let last = ty.dims.len() - 1;
                cur = self.reduce(ReduceOp::Sum, cur, last);
                ty = self.ty(cur)?;
            }
        }
        // Row axes broadcast from a prefix.
        loop {
            let Some(st) = Structure::of(&ty) else {
                return Err(self.internal(at, "a reduced gradient without structure"));
            };
            if st.rows.len() <= sx.rows.len() {
                break;
            }
            let rows_at = usize::from(ty.dims.first() == Some(&Dim::Batch));
            cur = self.reduce(ReduceOp::Sum, cur, rows_at + st.rows.len() - 1);
            ty = self.ty(cur)?;
        }
        // Padded rows that met ragged ones: pad the gradient back.
        let ragged = ty.ragged_rank();
        if ragged > 0 && sx.rows.iter().all(|r| *r == Row::Padded) && !sx.rows.is_empty() {
            if ragged != 1 {
                return Err(self.not_differentiable(
                    at,
                    format!(
                        "the gradient of its operand of type {x}, broadcast to two ragged \
                         axes, needs a padding of [%s, %s] values the IR lacks"
                    ),
                ));
            }
            cur = self.push(Node::ToPadded { arg: cur });
            ty = self.ty(cur)?;
        }
        if ty.dims != x.dims {
            let batched =
                |t: &TensorType| t.ragged_rank() > 0 || t.dims.first() == Some(&Dim::Batch);
            let reason = if batched(&ty) && !batched(x) {
                format!(
                    "the gradient of its operand of type {x} (broadcast over the batch) is a \
                     sum over the sequences, and the IR has no sum over B"
                )
            } else {
                format!("cannot sum a gradient of type {ty} down to {x}")
            };
            return Err(self.not_differentiable(at, reason));
        }
        Ok(cur)
    }

    /// Runs the reverse sweep over the forward nodes.
    fn sweep(&mut self) -> Result<(), AutodiffError> {
        for index in (0..self.fwd.nodes().len()).rev() {
            if !self.active[index] {
                continue;
            }
            let h = Handle::from_index(index);
            let Some(g) = self.adjoint(h)? else {
                continue;
            };
            let node = self.fwd.node(h).clone();
            self.node(h, &node, g)?;
        }
        Ok(())
    }

    /// Whether forward operand `h` needs an adjoint.
    fn wants(&self, h: Handle<Node>) -> bool {
        self.active[h.index()]
    }

    /// Propagates the adjoint `g` of node `h` to its operands.
    fn node(&mut self, h: Handle<Node>, node: &Node, g: Handle<Node>) -> Result<(), AutodiffError> {
        let r = self.fwd_ty(h);
        match node {
            Node::Input { .. } => {
                self.grads.insert(h, g);
            }
            Node::Unary { op, arg } => {
                let c = self.unary_adjoint(*op, *arg, h, g, r.dtype);
                self.accumulate(*arg, c)?;
            }
            Node::Cast { arg, .. } => {
                let x = self.fwd_ty(*arg);
                let c = if x.dtype == r.dtype {
                    g
                } else {
                    self.push(Node::Cast {
                        arg: g,
                        dtype: x.dtype,
                    })
                };
                self.accumulate(*arg, c)?;
            }
            Node::Binary { op, lhs, rhs } => self.binary_adjoint(h, *op, *lhs, *rhs, g)?,
            Node::Select {
                cond,
                on_true,
                on_false,
            } => {
                let zero = self.konst(0.0, r.dtype);
                for (operand, taken) in [(*on_true, true), (*on_false, false)] {
                    if !self.wants(operand) {
                        continue;
                    }
                    let c = if taken {
                        self.select(*cond, g, zero)
                    } else {
                        self.select(*cond, zero, g)
                    };
                    let x = self.fwd_ty(operand);
                    let c = self.reduce_to(c, &x, h)?;
                    self.accumulate(operand, c)?;
                }
            }
            Node::Gather { table, .. } => {
                if self.wants(*table) {
                    return Err(self.not_differentiable(
                        h,
                        "the adjoint of gather is a scatter-add into the table, which the IR \
                         lacks (differentiating the index-free table is not supported yet)",
                    ));
                }
            }
            Node::Reduce { op, arg, axis } => {
                let c = self.reduce_adjoint(h, *op, *arg, *axis, g)?;
                self.accumulate(*arg, c)?;
            }
            Node::Softmax { arg, axis } => {
                let x = self.fwd_ty(*arg);
                let gy = self.mul(g, h);
                let s = self.reduce(ReduceOp::Sum, gy, *axis);
                let s = self.expand(s, &x, *axis, h)?;
                let d = self.binary(BinaryOp::Sub, g, s);
                let c = self.mul(h, d);
                self.accumulate(*arg, c)?;
            }
            Node::TopK { part, arg, .. } => {
                if *part == TopKPart::Values && self.wants(*arg) {
                    return Err(self.not_differentiable(
                        h,
                        "the adjoint of topk's values puts each one back at its index, \
                         a scatter the IR lacks",
                    ));
                }
            }
            Node::Take { arg, .. } => {
                if self.wants(*arg) {
                    return Err(self.not_differentiable(
                        h,
                        "the adjoint of take is a scatter-add into its operand, which the \
                         IR lacks",
                    ));
                }
            }
            Node::Reshape { arg, .. } => {
                let x = self.fwd_ty(*arg);
                let rows = x.row_dims();
                let inner = x.dims[rows..]
                    .iter()
                    .map(|d| match d {
                        Dim::Static(n) => *n,
                        _ => 1,
                    })
                    .collect();
                let c = self.push(Node::Reshape { arg: g, inner });
                self.accumulate(*arg, c)?;
            }
            Node::Shift { arg, axis, by } => {
                // `y[i] = x[i + by]`: `dx[j] = dy[j - by]`, 0 where `j - by`
                // falls off the line, which a shift back gives.
                let c = self.push(Node::Shift {
                    arg: g,
                    axis: *axis,
                    by: -*by,
                });
                self.accumulate(*arg, c)?;
            }
            Node::Scan { mode, arg, axis } => {
                let c = self.scan_adjoint(h, *mode, *arg, *axis, g)?;
                self.accumulate(*arg, c)?;
            }
            Node::Contract {
                lhs,
                lhs_axes,
                rhs,
                rhs_axes,
                out_axes,
                dtype,
                ..
            } => {
                for (x, xa, other, oa) in [
                    (*lhs, lhs_axes, *rhs, rhs_axes),
                    (*rhs, rhs_axes, *lhs, lhs_axes),
                ] {
                    if !self.wants(x) {
                        continue;
                    }
                    let xt = self.fwd_ty(x);
                    let ot = self.fwd_ty(other);
                    let other = if ot.dtype == *dtype {
                        other
                    } else {
                        self.push(Node::Cast {
                            arg: other,
                            dtype: *dtype,
                        })
                    };
                    // Letters of this operand summed nowhere else: the
                    // gradient is the same all along them.
                    let missing: Vec<char> = xa
                        .chars()
                        .filter(|&c| !out_axes.contains(c) && !oa.contains(c))
                        .collect();
                    let mut have: String = xa.chars().filter(|c| !missing.contains(c)).collect();
                    let mut c = self.contract(
                        (g, out_axes.clone()),
                        (other, oa.clone()),
                        have.clone(),
                        *dtype,
                    );
                    let lead = usize::from(xt.dims.first() == Some(&Dim::Batch));
                    for m in missing {
                        let Some(dim) = xa.find(m).and_then(|k| xt.dims.get(lead + k)) else {
                            return Err(self.internal(h, "a contraction letter without a dim"));
                        };
                        let ones = self.ones(&TensorType::new(*dtype, vec![*dim]), h)?;
                        let next: String =
                            xa.chars().filter(|&l| have.contains(l) || l == m).collect();
                        c = self.contract((c, have), (ones, m.to_string()), next.clone(), *dtype);
                        have = next;
                    }
                    if xt.dtype != *dtype {
                        c = self.push(Node::Cast {
                            arg: c,
                            dtype: xt.dtype,
                        });
                    }
                    let ct = self.ty(c)?;
                    if ct != xt {
                        return Err(self.not_differentiable(
                            h,
                            format!(
                                "the gradient of its operand of type {xt} is a contraction of \
                                 type {ct}: the operand is broadcast over the batch, and the IR \
                                 has no sum over B"
                            ),
                        ));
                    }
                    self.accumulate(x, c)?;
                }
            }
            Node::ToPadded { arg } => {
                let x = self.fwd_ty(*arg);
                let Some(seqs) = x.seqs() else {
                    return Err(self.internal(h, "to_padded of a dense value"));
                };
                let c = self.push(Node::FromPadded { arg: g, seqs });
                self.accumulate(*arg, c)?;
            }
            Node::FromPadded { arg, .. } => {
                let c = self.push(Node::ToPadded { arg: g });
                self.accumulate(*arg, c)?;
            }
            Node::PackTriu { arg, .. } => {
                if self.wants(*arg) {
                    return Err(self.not_differentiable(
                        h,
                        "the adjoint of pack_triu puts the packed pairs back in their [%s, %s] \
                         places, and the IR has no such expansion",
                    ));
                }
            }
            Node::Compact { arg, .. } => {
                if self.wants(*arg) {
                    return Err(self.not_differentiable(
                        h,
                        "the adjoint of compact puts the kept rows back in their places, and \
                         the IR has no such expansion",
                    ));
                }
            }
            Node::Attr { .. }
            | Node::Const { .. }
            | Node::Seqs { .. }
            | Node::SeqsWhere { .. }
            | Node::SeqsTriu { .. }
            | Node::Offsets { .. }
            | Node::Mask { .. }
            | Node::Compare { .. }
            | Node::Rank { .. }
            | Node::Position { .. }
            | Node::Lengths { .. } => {}
        }
        Ok(())
    }

    /// The contribution of `y = op(x)` (node `y`) to the adjoint of `x`.
    fn unary_adjoint(
        &mut self,
        op: UnaryOp,
        x: Handle<Node>,
        y: Handle<Node>,
        g: Handle<Node>,
        dtype: DType,
    ) -> Handle<Node> {
        let one = self.konst(1.0, dtype);
        let zero = self.konst(0.0, dtype);
        match op {
            UnaryOp::Neg => self.unary(UnaryOp::Neg, g),
            UnaryOp::Exp => self.mul(g, y),
            UnaryOp::Log => self.binary(BinaryOp::Div, g, x),
            UnaryOp::Silu => {
                // silu'(x) = s (1 + x (1 - s)), s = sigmoid(x).
                let s = self.unary(UnaryOp::Sigmoid, x);
                let t = self.binary(BinaryOp::Sub, one, s);
                let t = self.mul(x, t);
                let t = self.binary(BinaryOp::Add, one, t);
                let d = self.mul(s, t);
                self.mul(g, d)
            }
            UnaryOp::Sqrt => {
                // 1 / (2 sqrt x).
                let half = self.konst(0.5, dtype);
                let d = self.binary(BinaryOp::Div, half, y);
                self.mul(g, d)
            }
            UnaryOp::Rsqrt => {
                // -x^{-3/2} / 2 = -y / (2 x).
                let half = self.konst(-0.5, dtype);
                let d = self.binary(BinaryOp::Div, y, x);
                let d = self.mul(half, d);
                self.mul(g, d)
            }
            UnaryOp::Abs => {
                let pos = self.compare(CompareOp::Gt, x, zero);
                let neg = self.compare(CompareOp::Lt, x, zero);
                let minus = self.unary(UnaryOp::Neg, g);
                let inner = self.select(neg, minus, zero);
                self.select(pos, g, inner)
            }
            UnaryOp::Relu => {
                let pos = self.compare(CompareOp::Gt, x, zero);
                self.select(pos, g, zero)
            }
            UnaryOp::Sigmoid => {
                let t = self.binary(BinaryOp::Sub, one, y);
                let d = self.mul(y, t);
                self.mul(g, d)
            }
            UnaryOp::Tanh => {
                let sq = self.mul(y, y);
                let d = self.binary(BinaryOp::Sub, one, sq);
                self.mul(g, d)
            }
        }
    }

    fn binary_adjoint(
        &mut self,
        h: Handle<Node>,
        op: BinaryOp,
        a: Handle<Node>,
        b: Handle<Node>,
        g: Handle<Node>,
    ) -> Result<(), AutodiffError> {
        let dtype = self.fwd_ty(h).dtype;
        let zero = self.konst(0.0, dtype);
        let (wa, wb) = (self.wants(a), self.wants(b));
        let (ca, cb) = match op {
            BinaryOp::Add => (Some(g), Some(g)),
            BinaryOp::Sub => (Some(g), wb.then(|| self.unary(UnaryOp::Neg, g))),
            BinaryOp::Mul => (wa.then(|| self.mul(g, b)), wb.then(|| self.mul(g, a))),
            BinaryOp::Div => {
                let q = self.binary(BinaryOp::Div, g, b);
                let cb = wb.then(|| {
                    let t = self.mul(q, h);
                    self.unary(UnaryOp::Neg, t)
                });
                (Some(q), cb)
            }
            BinaryOp::Max | BinaryOp::Min => {
                let cmp = if op == BinaryOp::Max {
                    CompareOp::Ge
                } else {
                    CompareOp::Le
                };
                let cond = self.compare(cmp, a, b);
                (
                    wa.then(|| self.select(cond, g, zero)),
                    wb.then(|| self.select(cond, zero, g)),
                )
            }
            BinaryOp::Pow => {
                let ca = wa.then(|| {
                    let one = self.konst(1.0, dtype);
                    let pm1 = self.binary(BinaryOp::Sub, b, one);
                    let d = self.binary(BinaryOp::Pow, a, pm1);
                    let d = self.mul(b, d);
                    self.mul(g, d)
                });
                let cb = wb.then(|| {
                    let l = self.unary(UnaryOp::Log, a);
                    let d = self.mul(h, l);
                    self.mul(g, d)
                });
                (ca, cb)
            }
        };
        for (operand, wanted, c) in [(a, wa, ca), (b, wb, cb)] {
            if let (true, Some(c)) = (wanted, c) {
                let x = self.fwd_ty(operand);
                let c = self.reduce_to(c, &x, h)?;
                self.accumulate(operand, c)?;
            }
        }
        Ok(())
    }

    fn reduce_adjoint(
        &mut self,
        h: Handle<Node>,
        op: ReduceOp,
        arg: Handle<Node>,
        axis: usize,
        g: Handle<Node>,
    ) -> Result<Handle<Node>, AutodiffError> {
        let x = self.fwd_ty(arg);
        match op {
            ReduceOp::Sum => self.expand(g, &x, axis, h),
            ReduceOp::Mean => {
                let ones = self.ones(&x, h)?;
                let count = self.reduce(ReduceOp::Sum, ones, axis);
                let one = self.konst(1.0, x.dtype);
                let count = self.binary(BinaryOp::Max, count, one);
                let share = self.binary(BinaryOp::Div, g, count);
                self.expand(share, &x, axis, h)
            }
            ReduceOp::Max => {
                // Every entry equal to the maximum gets g / (their count).
                let y = self.expand(h, &x, axis, h)?;
                let is_max = self.compare(CompareOp::Eq, arg, y);
                let (one, zero) = (self.konst(1.0, x.dtype), self.konst(0.0, x.dtype));
                let indicator = self.select(is_max, one, zero);
                let count = self.reduce(ReduceOp::Sum, indicator, axis);
                let share = self.binary(BinaryOp::Div, g, count);
                let share = self.expand(share, &x, axis, h)?;
                Ok(self.select(is_max, share, zero))
            }
            ReduceOp::LogSumExp => {
                let p = self.push(Node::Softmax { arg, axis });
                let g = self.expand(g, &x, axis, h)?;
                Ok(self.mul(p, g))
            }
            // An index (i32) carries no gradient; no adjoint reaches it.
            ReduceOp::ArgMin | ReduceOp::ArgMax => {
                Err(self.not_differentiable(h, "an argmin/argmax is an integer index"))
            }
        }
    }

    fn scan_adjoint(
        &mut self,
        h: Handle<Node>,
        mode: ScanMode,
        arg: Handle<Node>,
        axis: usize,
        g: Handle<Node>,
    ) -> Result<Handle<Node>, AutodiffError> {
        let x = self.fwd_ty(arg);
        let r = self.fwd_ty(h);
        match (x.dims[axis], r.dims[axis]) {
            (Dim::Static(n), Dim::Static(m)) if !x.dims.contains(&Dim::MaxLen) => {
                // gx[t] = sum_k g[k] M[k, t], M the scan's matrix: t <= k
                // (inclusive) or t < k (exclusive, complete).
                let pair = TensorType::new(x.dtype, vec![Dim::Static(m), Dim::Static(n)]);
                let k = self.push(Node::Position {
                    axis: 0,
                    ty: pair.clone(),
                });
                let t = self.push(Node::Position { axis: 1, ty: pair });
                let cmp = match mode {
                    ScanMode::Inclusive => CompareOp::Le,
                    ScanMode::Exclusive | ScanMode::Complete => CompareOp::Lt,
                };
                let cond = self.compare(cmp, t, k);
                let (one, zero) = (self.konst(1.0, x.dtype), self.konst(0.0, x.dtype));
                let matrix = self.select(cond, one, zero);
                let letters = self.letters(&x, h)?;
                let at = axis.saturating_sub(usize::from(x.dims[0] == Dim::Batch));
                let with = |c: char| -> String {
                    letters
                        .chars()
                        .enumerate()
                        .map(|(i, l)| if i == at { c } else { l })
                        .collect()
                };
                Ok(self.contract(
                    (g, with('y')),
                    (matrix, "yz".to_string()),
                    with('z'),
                    x.dtype,
                ))
            }
            (Dim::Static(_) | Dim::MaxLen, _) if mode != ScanMode::Complete => {
                // gx = total - (the other prefix sum of g).
                let total = self.reduce(ReduceOp::Sum, g, axis);
                let total = self.expand(total, &x, axis, h)?;
                let other = match mode {
                    ScanMode::Inclusive => ScanMode::Exclusive,
                    _ => ScanMode::Inclusive,
                };
                let prefix = self.push(Node::Scan {
                    mode: other,
                    arg: g,
                    axis,
                });
                Ok(self.binary(BinaryOp::Sub, total, prefix))
            }
            (Dim::Batch, _) => Err(self.not_differentiable(
                h,
                "the adjoint of a scan along B is a suffix sum over the sequences, which needs \
                 a sum over B the IR lacks",
            )),
            _ => Err(self.not_differentiable(
                h,
                "the adjoint of a complete scan along a non-static axis needs a slice the IR \
                 lacks",
            )),
        }
    }

    /// Drops the nodes no output reads (inputs and what their types name
    /// stay) and validates the backward graph.
    fn finish(self, outputs: Vec<Output>) -> Result<Graph, AutodiffError> {
        let n = self.nodes.len();
        let mut live = vec![false; n];
        let mut stack: Vec<Handle<Node>> = outputs.iter().map(|o| o.value).collect();
        stack.extend(
            self.nodes
                .iter()
                .filter(|(_, node)| matches!(node, Node::Input { .. }))
                .map(|(h, _)| h),
        );
        while let Some(h) = stack.pop() {
            if h.index() >= n || std::mem::replace(&mut live[h.index()], true) {
                continue;
            }
            let node = &self.nodes[h];
            stack.extend(node.operands());
            stack.extend(type_refs(node));
        }
        let mut map: Vec<Option<Handle<Node>>> = vec![None; n];
        let mut nodes = Arena::new();
        let mut origins = Origins::default();
        for (h, node) in self.nodes.iter() {
            if !live[h.index()] {
                continue;
            }
            let new = nodes.append(remap(node, &|o: Handle<Node>| {
                map.get(o.index()).copied().flatten().unwrap_or(o)
            }));
            if let Some(origin) = self.origins.get(h) {
                origins.set(new, origin.clone());
            }
            map[h.index()] = Some(new);
        }
        let outputs = outputs
            .into_iter()
            .map(|o| Output {
                value: map[o.value.index()].unwrap_or(o.value),
                name: o.name,
            })
            .collect();
        Ok(validate(self.name, self.attrs, nodes, outputs, origins)?)
    }
}

/// The sequence sets a node's own type payload names (besides its operands).
fn type_refs(node: &Node) -> Vec<Handle<Node>> {
    let refs = |t: &TensorType| -> Vec<Handle<Node>> {
        t.dims
            .iter()
            .filter_map(|d| match d {
                Dim::Ragged(s) => Some(*s),
                _ => None,
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect()
    };
    match node {
        Node::Input { ty, .. } | Node::Mask { ty, .. } | Node::Position { ty, .. } => refs(ty),
        _ => Vec::new(),
    }
}

/// `node` with every handle it holds (operands, sequence sets of types)
/// passed through `m`.
fn remap(node: &Node, m: &dyn Fn(Handle<Node>) -> Handle<Node>) -> Node {
    let ty = |t: &TensorType| TensorType {
        dtype: t.dtype,
        dims: t
            .dims
            .iter()
            .map(|d| match d {
                Dim::Ragged(s) => Dim::Ragged(m(*s)),
                d => *d,
            })
            .collect(),
    };
    match node {
        Node::Input { name, ty: t } => Node::Input {
            name: name.clone(),
            ty: ty(t),
        },
        Node::Attr { .. } | Node::Const { .. } => node.clone(),
        Node::Seqs { offsets, truncate } => Node::Seqs {
            offsets: m(*offsets),
            truncate: *truncate,
        },
        Node::SeqsWhere { mask } => Node::SeqsWhere { mask: m(*mask) },
        Node::SeqsTriu { seqs } => Node::SeqsTriu { seqs: m(*seqs) },
        Node::Offsets { seqs, dtype } => Node::Offsets {
            seqs: m(*seqs),
            dtype: *dtype,
        },
        Node::Unary { op, arg } => Node::Unary {
            op: *op,
            arg: m(*arg),
        },
        Node::Cast { arg, dtype } => Node::Cast {
            arg: m(*arg),
            dtype: *dtype,
        },
        Node::Binary { op, lhs, rhs } => Node::Binary {
            op: *op,
            lhs: m(*lhs),
            rhs: m(*rhs),
        },
        Node::Select {
            cond,
            on_true,
            on_false,
        } => Node::Select {
            cond: m(*cond),
            on_true: m(*on_true),
            on_false: m(*on_false),
        },
        Node::Mask { pred, ty: t } => Node::Mask {
            pred: match pred {
                IndexPredicate::RowInSequence(s) => IndexPredicate::RowInSequence(m(*s)),
                p => *p,
            },
            ty: ty(t),
        },
        Node::Compare { op, lhs, rhs } => Node::Compare {
            op: *op,
            lhs: m(*lhs),
            rhs: m(*rhs),
        },
        Node::Position { axis, ty: t } => Node::Position {
            axis: *axis,
            ty: ty(t),
        },
        Node::Gather { table, index } => Node::Gather {
            table: m(*table),
            index: m(*index),
        },
        Node::Lengths { seqs, dtype } => Node::Lengths {
            seqs: m(*seqs),
            dtype: *dtype,
        },
        Node::Reduce { op, arg, axis } => Node::Reduce {
            op: *op,
            arg: m(*arg),
            axis: *axis,
        },
        Node::Softmax { arg, axis } => Node::Softmax {
            arg: m(*arg),
            axis: *axis,
        },
        Node::Rank { order, arg, axis } => Node::Rank {
            order: *order,
            arg: m(*arg),
            axis: *axis,
        },
        Node::TopK {
            order,
            part,
            arg,
            axis,
            k,
        } => Node::TopK {
            order: *order,
            part: *part,
            arg: m(*arg),
            axis: *axis,
            k: *k,
        },
        Node::Take { arg, index, axis } => Node::Take {
            arg: m(*arg),
            index: m(*index),
            axis: *axis,
        },
        Node::Reshape { arg, inner } => Node::Reshape {
            arg: m(*arg),
            inner: inner.clone(),
        },
        Node::Shift { arg, axis, by } => Node::Shift {
            arg: m(*arg),
            axis: *axis,
            by: *by,
        },
        Node::Scan { mode, arg, axis } => Node::Scan {
            mode: *mode,
            arg: m(*arg),
            axis: *axis,
        },
        Node::Contract {
            lhs,
            lhs_axes,
            rhs,
            rhs_axes,
            out_axes,
            dtype,
            precision,
        } => Node::Contract {
            lhs: m(*lhs),
            lhs_axes: lhs_axes.clone(),
            rhs: m(*rhs),
            rhs_axes: rhs_axes.clone(),
            out_axes: out_axes.clone(),
            dtype: *dtype,
            precision: *precision,
        },
        Node::ToPadded { arg } => Node::ToPadded { arg: m(*arg) },
        Node::FromPadded { arg, seqs } => Node::FromPadded {
            arg: m(*arg),
            seqs: m(*seqs),
        },
        Node::Compact { arg, seqs } => Node::Compact {
            arg: m(*arg),
            seqs: m(*seqs),
        },
        Node::PackTriu { arg, seqs } => Node::PackTriu {
            arg: m(*arg),
            seqs: m(*seqs),
        },
    }
}
