//! Checks the kernel's body and lowers it to `GraphBuilder` calls.
//!
//! Every DSL value gets a static type (kind, dtype, shape, sequence set) from
//! the declared parameter types; an operation on mismatched operands is an
//! error at its span. Each tensor operation becomes one statement
//! `let __vN = __b.op(...);` of the generated `graph` function. Scalars
//! (literals, `#[attr]` parameters and arithmetic on them) have no node until
//! they meet a tensor: they are then materialized in that tensor's dtype
//! (constants and `attr` nodes), as the reference graphs of `jagged_ir::ops` do.

use std::collections::HashMap;

use jagged_ir::typing::{self, DslKind, DslNode, DtypeRule};
use jagged_ir::{BinaryOp, CompareOp, RankOrder, ReduceOp, UnaryOp};
use proc_macro2::Span;
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{BinOp, Error, Expr, Ident, Lit, Pat, Stmt, UnOp};

use crate::sig::{AttrKind, DTy, Kind, Param, Shape, Signature, TensorTy};
use crate::statics::StaticVal;
use crate::steps::{DimE, Pred, Src, Step, TyE, V};

mod branches;

use branches::TailItem;

/// A tensor value of the body.
#[derive(Clone)]
struct Tensor {
    kind: Kind,
    dtype: DTy,
    shape: Shape,
    /// Index into `Lowering::seqs` for jagged kinds.
    seqs: Option<usize>,
    /// The step defining it.
    var: V,
}

impl Tensor {
    fn describe(&self) -> String {
        TensorTy {
            kind: self.kind,
            dtype: self.dtype.clone(),
            shape: self.shape.clone(),
        }
        .describe()
    }
}

/// A scalar expression, not yet a node.
#[derive(Clone)]
enum Scalar {
    Lit(f64),
    Attr(String),
    Neg(Box<Scalar>),
    Bin(BinaryOp, Box<Scalar>, Box<Scalar>),
}

#[derive(Clone)]
enum Value {
    Tensor(Tensor),
    Scalar(Scalar),
}

/// The kernel as graph-building steps, and what `graph`'s signature needs.
pub struct Lowered {
    /// The steps, from the first attribute declaration to the last output.
    pub steps: Vec<Step>,
    /// The body expression each step was lowered from (none for the
    /// prologue's inputs and attributes).
    pub origins: Vec<Option<Src>>,
    /// Whether `graph` takes the kernel's offsets dtype (`offsets: DType`).
    pub takes_offsets_dtype: bool,
    /// The index of the first jagged parameter when the kernel's offsets
    /// input is implicit (it comes just before that parameter).
    pub implicit_offsets_at: Option<usize>,
}

#[derive(Clone)]
struct Lowering<'a> {
    sig: &'a Signature,
    steps: Vec<Step>,
    origins: Vec<Option<Src>>,
    /// The innermost body expression being lowered.
    origin: Option<Src>,
    env: HashMap<String, Value>,
    /// The sequence sets; the kernel's own is index 0.
    seqs: Vec<V>,
    has_kernel_seqs: bool,
    /// The dtype of the kernel's offsets.
    index: DTy,
    /// Whether the typing rules of `jagged_ir::typing` are checked here
    /// (always, but in the agreement test, which compares the graph that
    /// the unchecked lowering builds with the validator's verdict).
    check_dtypes: bool,
    /// The value of each static attribute in the combination being lowered.
    statics: HashMap<String, StaticVal>,
}

/// Lowers the kernel with signature `sig` and body `block`, whose outputs
/// are named `outputs`, for one combination of its static attributes' values.
pub fn lower_static(
    sig: &Signature,
    block: &syn::Block,
    outputs: &[Ident],
    statics: HashMap<String, StaticVal>,
) -> syn::Result<Lowered> {
    lower_inner(sig, block, outputs, true, statics)
}

fn lower_inner(
    sig: &Signature,
    block: &syn::Block,
    outputs: &[Ident],
    check_dtypes: bool,
    statics: HashMap<String, StaticVal>,
) -> syn::Result<Lowered> {
    let mut l = Lowering::new(sig, check_dtypes);
    l.statics = statics;
    l.prologue()?;
    let tail = l.body(block)?;
    let tail_span = block.stmts.last().map_or(block.span(), Spanned::span);
    l.outputs(tail, tail_span, outputs)?;
    let takes_offsets_dtype = l.index == DTy::KernelIndex
        && (l.has_kernel_seqs || sig.outputs.iter().any(|o| o.ty.dtype == DTy::KernelIndex));
    let has_explicit = sig
        .params
        .iter()
        .any(|p| matches!(p, Param::Tensor { ty, .. } if ty.kind == Kind::Offsets));
    let implicit_offsets_at = if has_explicit {
        None
    } else {
        sig.params
            .iter()
            .position(|p| matches!(p, Param::Tensor { ty, .. } if ty.kind == Kind::Jagged))
    };
    Ok(Lowered {
        implicit_offsets_at,
        steps: l.steps,
        origins: l.origins,
        takes_offsets_dtype,
    })
}

fn err<T>(span: Span, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(Error::new(span, msg))
}

/// An error covering all of `node` (not only its first token).
fn err_on<T>(node: &impl ToTokens, msg: impl std::fmt::Display) -> syn::Result<T> {
    Err(Error::new_spanned(node, msg))
}

/// The last of the remaining call arguments (they are taken last to first).
fn pop_arg(args: &mut Vec<Value>, span: Span) -> syn::Result<Value> {
    args.pop()
        .ok_or_else(|| Error::new(span, "missing argument"))
}

/// The DSL's functions, as error messages list them (`jagged_ir::typing::FUNCTIONS`).
fn function_list() -> String {
    let names: Vec<&str> = typing::FUNCTIONS.iter().map(|f| f.name).collect();
    names.join(", ")
}

/// The IR function of a one-argument DSL function or method (`exp(x)`,
/// `x.sqrt()`), from `jagged_ir::typing::FUNCTIONS`.
fn unary_op(name: &str) -> Option<UnaryOp> {
    match typing::function(name)?.node {
        DslNode::Unary(op) => Some(op),
        _ => None,
    }
}

/// The elementwise function of the DSL's `max` / `min` (function or method).
fn max_or_min(name: &str) -> BinaryOp {
    if name == "max" {
        BinaryOp::Max
    } else {
        BinaryOp::Min
    }
}

/// The tail of a one-expression body, lowered without outputs: the steps,
/// and the tail's kind, dtype, shape and defining step (for the agreement
/// test, which also builds graphs whose tail cannot be an output).
#[cfg(test)]
pub(crate) fn lower_tail(
    sig: &Signature,
    block: &syn::Block,
    check_dtypes: bool,
) -> syn::Result<(Vec<Step>, Kind, DTy, Shape, V)> {
    let mut l = Lowering::new(sig, check_dtypes);
    l.prologue()?;
    let mut tail = l.body(block)?;
    let item = tail
        .pop()
        .ok_or_else(|| Error::new(block.span(), "no tail"))?;
    let value = item
        .value
        .ok_or_else(|| Error::new(block.span(), "no tail"))?;
    let t = l.tensor(value, item.expr.span(), "the tail")?;
    Ok((l.steps, t.kind, t.dtype, t.shape, t.var))
}

impl<'a> Lowering<'a> {
    fn new(sig: &'a Signature, check_dtypes: bool) -> Self {
        let explicit_offsets = sig.params.iter().find_map(|p| match p {
            Param::Tensor { ty, .. } if ty.kind == Kind::Offsets => Some(ty.dtype.clone()),
            _ => None,
        });
        Lowering {
            sig,
            steps: Vec::new(),
            origins: Vec::new(),
            origin: None,
            env: HashMap::new(),
            seqs: Vec::new(),
            has_kernel_seqs: false,
            index: explicit_offsets.unwrap_or(DTy::KernelIndex),
            check_dtypes,
            statics: HashMap::new(),
        }
    }
}

impl Lowering<'_> {
    fn emit(&mut self, step: Step) -> V {
        self.steps.push(step);
        self.origins.push(self.origin.clone());
        V(self.steps.len() - 1)
    }

    fn truncates(&self) -> bool {
        self.sig.has_max_len()
    }

    /// Declares the attributes and creates the inputs, in parameter order; the
    /// kernel's offsets input comes at its parameter, or just before the first
    /// jagged parameter when implicit.
    fn prologue(&mut self) -> syn::Result<()> {
        for p in &self.sig.params {
            if let Param::Attr {
                ident,
                kind,
                default,
                ..
            } = p
            {
                let name = ident.to_string();
                let default = match default {
                    Some(lit) => Some(literal_value(lit)?),
                    None => None,
                };
                self.emit(Step::DeclareAttr {
                    name: name.clone(),
                    index: *kind == AttrKind::Index,
                    default,
                });
                self.env
                    .insert(name.clone(), Value::Scalar(Scalar::Attr(name)));
            }
        }
        let truncate = self.truncates();
        let offsets_params = self
            .sig
            .params
            .iter()
            .filter(|p| matches!(p, Param::Tensor { ty, .. } if ty.kind == Kind::Offsets));
        if let Some(Param::Tensor { ident, .. }) = offsets_params.clone().nth(1) {
            return err_on(&ident, "a kernel has one offsets parameter (its sequences)");
        }
        // The declared offsets parameter's name; its input is created at the
        // first jagged parameter when that comes first.
        let explicit_offsets = offsets_params.clone().next().map(|p| p.ident().to_string());
        let has_jagged = self
            .sig
            .params
            .iter()
            .any(|p| matches!(p, Param::Tensor { ty, .. } if ty.kind == Kind::Jagged));
        if explicit_offsets.is_none()
            && has_jagged
            && let Some(clash) = self.sig.params.iter().find(|p| p.ident() == "offsets")
        {
            return err_on(
                clash.ident(),
                "`offsets` names the kernel's offsets, which `launch` takes before the first \
                 jagged parameter: declare it as `offsets: Offsets`, or rename this parameter",
            );
        }
        let mut offsets_var = None;
        for p in &self.sig.params {
            let Param::Tensor { ident, ty } = p else {
                continue;
            };
            let name = ident.to_string();
            let (ty_e, seqs) = match ty.kind {
                Kind::Offsets => {
                    let var = match offsets_var {
                        Some(var) => var,
                        None => self.kernel_seqs_from(Some(&name), truncate),
                    };
                    self.env.insert(
                        name,
                        Value::Tensor(Tensor {
                            kind: Kind::Offsets,
                            dtype: self.index.clone(),
                            shape: Shape::Dims(Vec::new()),
                            seqs: None,
                            var,
                        }),
                    );
                    continue;
                }
                Kind::Jagged => {
                    if !self.has_kernel_seqs {
                        offsets_var =
                            Some(self.kernel_seqs_from(explicit_offsets.as_deref(), truncate));
                    }
                    let s = self.seqs[0];
                    (TyE::Jagged(ty.dtype.clone(), s, ty.shape.clone()), Some(0))
                }
                Kind::PerSeq => (dense(&ty.dtype, vec![DimE::Batch], &ty.shape), None),
                Kind::Padded => (
                    dense(&ty.dtype, vec![DimE::Batch, DimE::MaxLen], &ty.shape),
                    None,
                ),
                Kind::Lengths => (dense(&ty.dtype, vec![DimE::Batch], &no_dims()), None),
                Kind::Dense => (dense(&ty.dtype, Vec::new(), &ty.shape), None),
                Kind::Pairs => {
                    return err_on(&ident, "query/key pairs are not a parameter type");
                }
            };
            let var = self.emit(Step::Input {
                name: name.clone(),
                ty: ty_e,
            });
            self.env.insert(
                name,
                Value::Tensor(Tensor {
                    kind: ty.kind,
                    dtype: ty.dtype.clone(),
                    shape: ty.shape.clone(),
                    seqs,
                    var,
                }),
            );
        }
        Ok(())
    }

    /// Creates the kernel's offsets input (named `name`, or `offsets` when
    /// implicit) and its sequence set; returns the offsets' variable.
    fn kernel_seqs_from(&mut self, name: Option<&str>, truncate: bool) -> V {
        let o = self.emit(Step::Input {
            name: name.unwrap_or("offsets").to_string(),
            ty: dense(&self.index, vec![DimE::BatchPlusOne], &no_dims()),
        });
        let s = self.emit(Step::Seqs {
            offsets: o,
            truncate,
        });
        self.seqs.insert(0, s);
        self.has_kernel_seqs = true;
        o
    }

    /// Lowers the statements; returns the outputs (the elements of a tail
    /// tuple, or the tail expression) with their spans.
    fn body<'b>(&mut self, block: &'b syn::Block) -> syn::Result<Vec<TailItem<'b>>> {
        let Some((last, init)) = block.stmts.split_last() else {
            return err_on(
                &block,
                "an empty kernel: the body's last expression is the kernel's output",
            );
        };
        for stmt in init {
            match stmt {
                Stmt::Local(local) => self.local(local)?,
                Stmt::Expr(e, _) => {
                    // Reports a non-DSL expression (a loop, an `if`) as such.
                    self.expr(e)?;
                    return err_on(
                        &e,
                        "an expression statement does nothing in a kernel: bind it with `let` or make it the last expression",
                    );
                }
                Stmt::Item(item) => {
                    return err_on(&item, "items cannot be declared inside a jagged kernel");
                }
                Stmt::Macro(m) => {
                    return err_on(&m, "macro calls are not part of the jagged DSL");
                }
            }
        }
        match last {
            Stmt::Expr(e, None) => self.tail(e),
            Stmt::Local(l) => err_on(
                &l,
                "a kernel ends with an expression (its output), not a `let`",
            ),
            Stmt::Expr(e, Some(_)) => {
                self.expr(e)?;
                err_on(
                    &e,
                    "a kernel ends with an expression (its output): remove the `;`",
                )
            }
            Stmt::Macro(m) => err_on(&m, "macro calls are not part of the jagged DSL"),
            Stmt::Item(item) => err_on(&item, "items cannot be declared inside a jagged kernel"),
        }
    }

    fn local(&mut self, local: &syn::Local) -> syn::Result<()> {
        let pat = match &local.pat {
            Pat::Type(pt) => &*pt.pat,
            other => other,
        };
        let Pat::Ident(pi) = pat else {
            return err_on(&local.pat, "a `let` in a kernel binds one plain name");
        };
        if let Some(m) = &pi.mutability {
            return err_on(&m, "kernel values are immutable: no `mut`");
        }
        let Some(init) = &local.init else {
            return err_on(&local, "a `let` in a kernel needs a value");
        };
        if let Some((_, diverge)) = &init.diverge {
            return err_on(&diverge, "`let ... else` is not part of the jagged DSL");
        }
        let v = self.expr(&init.expr)?;
        self.env.insert(pi.ident.to_string(), v);
        Ok(())
    }

    /// Lowers `e`; the nodes of an operation are recorded as coming from it.
    fn expr(&mut self, e: &Expr) -> syn::Result<Value> {
        let traced = matches!(
            e,
            Expr::Binary(_) | Expr::MethodCall(_) | Expr::Call(_) | Expr::Unary(_) | Expr::Cast(_)
        );
        if !traced {
            return self.expr_untraced(e);
        }
        let outer = self.origin.replace(Src::of(e));
        let value = self.expr_untraced(e);
        self.origin = outer;
        value
    }

    fn expr_untraced(&mut self, e: &Expr) -> syn::Result<Value> {
        match e {
            Expr::Paren(p) => self.expr(&p.expr),
            Expr::Group(g) => self.expr(&g.expr),
            Expr::Lit(l) => match &l.lit {
                Lit::Float(f) => {
                    scalar_type(f.suffix(), &l.lit)?;
                    Ok(Value::Scalar(Scalar::Lit(f.base10_parse()?)))
                }
                Lit::Int(i) => {
                    scalar_type(i.suffix(), &l.lit)?;
                    Ok(Value::Scalar(Scalar::Lit(i.base10_parse::<i64>()? as f64)))
                }
                other => err_on(&other, "only numbers are literals of the jagged DSL"),
            },
            Expr::Path(p) => {
                if let Some(value) = float_constant(&p.path) {
                    return Ok(Value::Scalar(Scalar::Lit(value)));
                }
                let Some(ident) = p.path.get_ident() else {
                    return err_on(
                        &p,
                        "expected a parameter, a `let` name or `f32::NEG_INFINITY` / `f32::INFINITY`",
                    );
                };
                match self.env.get(&ident.to_string()) {
                    Some(v) => Ok(v.clone()),
                    None if self.statics.contains_key(&ident.to_string()) => err_on(
                        &ident,
                        format!(
                            "`{ident}` is a static attribute: it selects the graph with \
                             `if {ident} {{ .. }} else {{ .. }}` or `match {ident} {{ .. }}`, \
                             it is not a value"
                        ),
                    ),
                    None => err_on(&ident, format!("unknown name `{ident}`")),
                }
            }
            Expr::Cast(c) => match self.expr(&c.expr)? {
                Value::Scalar(s) => {
                    let ty = c.ty.to_token_stream().to_string();
                    scalar_type(&ty, &c.ty)?;
                    Ok(Value::Scalar(s))
                }
                Value::Tensor(t) => err_on(
                    &c,
                    format!(
                        "`as` converts scalars only; convert a tensor ({}) with `.cast::<U>()`",
                        t.describe()
                    ),
                ),
            },
            Expr::Unary(u) => match u.op {
                UnOp::Neg(_) => match self.expr(&u.expr)? {
                    Value::Scalar(s) => Ok(Value::Scalar(Scalar::Neg(Box::new(s)))),
                    Value::Tensor(t) => {
                        self.check_rule(typing::unary_rule(UnaryOp::Neg), &t, "-", u.span())?;
                        let var = self.emit(Step::Unary {
                            op: UnaryOp::Neg,
                            x: t.var,
                        });
                        Ok(Value::Tensor(Tensor { var, ..t }))
                    }
                },
                _ => err_on(&u.op, "only unary `-` is part of the jagged DSL"),
            },
            Expr::Binary(b) => {
                let op = match b.op {
                    BinOp::Add(_) => BinaryOp::Add,
                    BinOp::Sub(_) => BinaryOp::Sub,
                    BinOp::Mul(_) => BinaryOp::Mul,
                    BinOp::Div(_) => BinaryOp::Div,
                    BinOp::Eq(_)
                    | BinOp::Ne(_)
                    | BinOp::Lt(_)
                    | BinOp::Le(_)
                    | BinOp::Gt(_)
                    | BinOp::Ge(_) => {
                        return err_on(
                            &b.op,
                            "comparison operators are not part of the jagged DSL: compare with the methods \
                             `a.lt(b)`, `a.le(b)`, `a.gt(b)`, `a.ge(b)`, `a.eq(b)`, `a.ne(b)` (a bool tensor for `select`)",
                        );
                    }
                    _ => {
                        return err_on(
                            &b.op,
                            "this operator is not part of the jagged DSL (`+ - * /` are)",
                        );
                    }
                };
                let lhs = self.expr(&b.left)?;
                let rhs = self.expr(&b.right)?;
                let symbol = b.op.to_token_stream().to_string();
                self.arith(op, &symbol, lhs, rhs, b.op.span())
            }
            Expr::Call(c) => self.call(c),
            Expr::MethodCall(m) => self.method(m),
            Expr::ForLoop(_) | Expr::While(_) | Expr::Loop(_) => err_on(
                &e,
                "loops are not part of the jagged DSL: ops apply to whole sequences (reduce with `.sum_over_seq()`, ...)",
            ),
            Expr::If(_) | Expr::Match(_) => self.static_branch(e),
            Expr::Block(b) if b.label.is_none() => self.block_value(&b.block),
            Expr::Closure(_) => err_on(&e, "closures are not part of the jagged DSL"),
            Expr::Macro(_) => err_on(&e, "macro calls are not part of the jagged DSL"),
            Expr::Return(_) | Expr::Break(_) | Expr::Continue(_) => err_on(
                &e,
                "control flow is not part of the jagged DSL: the kernel's output is its last expression",
            ),
            Expr::Assign(_) => err_on(
                &e,
                "assignment is not part of the jagged DSL: bind new values with `let`",
            ),
            Expr::Index(_) => err_on(
                &e,
                "indexing is not part of the jagged DSL: ops apply to whole tensors",
            ),
            Expr::Tuple(_) => err_on(
                &e,
                "a tuple is only allowed as the last expression, one element per output",
            ),
            _ => err_on(&e, "this Rust expression is not part of the jagged DSL"),
        }
    }

    /// Checks `t`'s dtype against `rule`, a typing rule of `jagged_ir` (the
    /// validator's for the node `op` builds): an error at `span` when no
    /// dtype that `t`'s may stand for is admitted. A dtype parameter that
    /// may be admitted is checked by the validator when `graph` runs.
    fn check_rule(&self, rule: DtypeRule, t: &Tensor, op: &str, span: Span) -> syn::Result<()> {
        if !self.admits(rule, &t.dtype) {
            return err(
                span,
                format!(
                    "`{op}` needs {}, found {}",
                    rule.tensor_noun(),
                    t.describe()
                ),
            );
        }
        Ok(())
    }

    /// Whether `rule` may admit `dtype` (always, when dtypes are not checked).
    fn admits(&self, rule: DtypeRule, dtype: &DTy) -> bool {
        !self.check_dtypes
            || dtype
                .possible()
                .is_none_or(|ds| ds.iter().any(|d| rule.admits(*d)))
    }

    /// The node of a scalar in `dtype` (the dtype of the tensor it meets);
    /// a fractional or infinite literal, or a float attribute, meeting an
    /// integer or bool tensor is an error at `span` (it would be rounded).
    fn scalar_node(&mut self, s: &Scalar, dtype: &DTy, span: Span) -> syn::Result<V> {
        if dtype.is_known_non_float() {
            self.scalar_fits_integers(s, dtype, span)?;
        }
        self.scalar_ops_admitted(s, dtype, span)?;
        Ok(self.scalar_node_unchecked(s, dtype))
    }

    /// Checks that the nodes of scalar arithmetic in `dtype` pass the
    /// validator's rules (no `+` on bool), before `s` meets a tensor of `dtype`.
    fn scalar_ops_admitted(&self, s: &Scalar, dtype: &DTy, span: Span) -> syn::Result<()> {
        let (rule, rest): (Option<DtypeRule>, Vec<&Scalar>) = match s {
            Scalar::Lit(_) | Scalar::Attr(_) => (None, Vec::new()),
            Scalar::Neg(x) if matches!(**x, Scalar::Lit(_)) => (None, Vec::new()),
            Scalar::Neg(x) => (
                Some(match neg_lowering(dtype) {
                    Some(op) => typing::binary_rule(op),
                    None => typing::unary_rule(UnaryOp::Neg),
                }),
                vec![&**x],
            ),
            Scalar::Bin(op, a, b) => (Some(typing::binary_rule(*op)), vec![&**a, &**b]),
        };
        if let Some(rule) = rule
            && !self.admits(rule, dtype)
        {
            return err(
                span,
                format!(
                    "scalar arithmetic meets a {} tensor, which has none ({}); compute on a tensor of \
                     another dtype and convert it with `.cast::<U>()`",
                    dtype.describe(),
                    rule.requirement()
                ),
            );
        }
        rest.into_iter()
            .try_for_each(|x| self.scalar_ops_admitted(x, dtype, span))
    }

    /// Checks that `s` is an integer expression (integer literals, index
    /// attributes, `+ - * max min` on them) before it meets `dtype`.
    fn scalar_fits_integers(&self, s: &Scalar, dtype: &DTy, span: Span) -> syn::Result<()> {
        match s {
            Scalar::Lit(v) if v.fract() != 0.0 || !v.is_finite() => err(
                span,
                format!(
                    "the literal {v} meets an integer tensor ({}) and would be rounded; use an integer, \
                     or convert the tensor with `.cast::<f32>()`",
                    dtype.describe()
                ),
            ),
            Scalar::Lit(_) => Ok(()),
            Scalar::Attr(name) => {
                let float = self.sig.params.iter().any(|p| {
                    matches!(p, Param::Attr { ident, kind: AttrKind::Float, .. } if ident == name)
                });
                if float {
                    err(
                        span,
                        format!(
                            "the float attribute `{name}` meets an integer tensor ({}); convert the tensor with `.cast::<f32>()`",
                            dtype.describe()
                        ),
                    )
                } else {
                    Ok(())
                }
            }
            Scalar::Neg(x) => self.scalar_fits_integers(x, dtype, span),
            Scalar::Bin(op, a, b) => {
                if matches!(op, BinaryOp::Div | BinaryOp::Pow) {
                    return err(
                        span,
                        format!(
                            "a scalar quotient or power meets an integer tensor ({}) and would be rounded; \
                             convert the tensor with `.cast::<f32>()`",
                            dtype.describe()
                        ),
                    );
                }
                self.scalar_fits_integers(a, dtype, span)?;
                self.scalar_fits_integers(b, dtype, span)
            }
        }
    }

    /// The node of a scalar in `dtype`, unchecked.
    fn scalar_node_unchecked(&mut self, s: &Scalar, dtype: &DTy) -> V {
        match s {
            Scalar::Lit(value) => self.emit(Step::Const {
                value: *value,
                dtype: dtype.clone(),
            }),
            Scalar::Attr(name) => self.emit(Step::Attr {
                name: name.clone(),
                dtype: dtype.clone(),
            }),
            // A negative literal is a constant, in every dtype.
            Scalar::Neg(x) if matches!(**x, Scalar::Lit(_)) => {
                let Scalar::Lit(value) = **x else {
                    unreachable!("matched a literal")
                };
                self.emit(Step::Const {
                    value: -value,
                    dtype: dtype.clone(),
                })
            }
            Scalar::Neg(x) => {
                let x = self.scalar_node_unchecked(x, dtype);
                match neg_lowering(dtype) {
                    // The validator's `neg` takes floats: `0 - x` for integers.
                    Some(op) => {
                        let zero = self.emit(Step::Const {
                            value: 0.0,
                            dtype: dtype.clone(),
                        });
                        self.emit(Step::Binary { op, a: zero, b: x })
                    }
                    None => self.emit(Step::Unary {
                        op: UnaryOp::Neg,
                        x,
                    }),
                }
            }
            Scalar::Bin(op, a, b) => {
                let a = self.scalar_node_unchecked(a, dtype);
                let b = self.scalar_node_unchecked(b, dtype);
                self.emit(Step::Binary { op: *op, a, b })
            }
        }
    }

    fn tensor(&self, v: Value, span: Span, what: &str) -> syn::Result<Tensor> {
        match v {
            Value::Tensor(t) => Ok(t),
            Value::Scalar(_) => err(span, format!("{what} is a tensor, found a scalar")),
        }
    }

    /// The kind, shape and sequence set of an elementwise result over `ts`.
    fn broadcast(&self, ts: &[&Tensor], span: Span) -> syn::Result<(Kind, Shape, Option<usize>)> {
        let rank = |k: Kind| match k {
            Kind::PerSeq => 1,
            Kind::Jagged | Kind::Padded => 2,
            Kind::Pairs => 3,
            Kind::Dense | Kind::Lengths | Kind::Offsets => 0,
        };
        for t in ts {
            if matches!(t.kind, Kind::Lengths | Kind::Offsets) {
                return err(
                    span,
                    format!(
                        "no elementwise math on {}: it holds sequence lengths or offsets",
                        t.describe()
                    ),
                );
            }
        }
        let top = ts
            .iter()
            .copied()
            .max_by_key(|t| rank(t.kind))
            .ok_or_else(|| Error::new(span, "no operands"))?;
        let mut kind = top.kind;
        let has_jagged = ts
            .iter()
            .any(|t| matches!(t.kind, Kind::Jagged | Kind::Pairs));
        let has_padded = ts.iter().any(|t| t.kind == Kind::Padded);
        if has_jagged && has_padded {
            if ts.iter().any(|t| t.kind == Kind::Pairs) {
                return err(span, "a Padded tensor cannot meet query/key pairs");
            }
            if !self.truncates() {
                return err(
                    span,
                    "a Padded tensor meets a Jagged one only in kernels with `#[attr] max_len: usize` (rows past max_len are dropped)",
                );
            }
            kind = Kind::Jagged;
        }
        let shape = ts
            .iter()
            .map(|t| &t.shape)
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| top.shape.clone());
        for t in ts {
            if !t.shape.is_empty() && t.shape != shape {
                return err(
                    span,
                    format!(
                        "shape mismatch: {} and {} (inner dims must be equal, or one side has none)",
                        ts[0].describe(),
                        t.describe()
                    ),
                );
            }
        }
        let mut seqs = None;
        for t in ts {
            if let Some(s) = t.seqs {
                if seqs.is_some_and(|s0| s0 != s) {
                    return err(
                        span,
                        "these jagged operands live on different sequence sets (one of them was compacted)",
                    );
                }
                seqs = Some(s);
            }
        }
        Ok((kind, shape, seqs))
    }

    fn same_dtype(&self, a: &Tensor, b: &Tensor, span: Span) -> syn::Result<()> {
        if a.dtype != b.dtype {
            return err(
                span,
                format!(
                    "dtype mismatch: {} and {}; convert one with `.cast::<U>()` (a float tensor \
                     meets its own dtype, and its accumulator dtype f32 or f64, only)",
                    a.describe(),
                    b.describe()
                ),
            );
        }
        Ok(())
    }

    /// The two tensors in one dtype: equal dtypes, or a float tensor in `T`
    /// meeting one in `T`'s accumulator dtype (a bf16 value meeting f32
    /// scores), which is converted to the accumulator (losslessly); any other
    /// mismatch is an error.
    fn promote(&mut self, a: Tensor, b: Tensor, span: Span) -> syn::Result<(Tensor, Tensor)> {
        let floats = !a.dtype.is_known_non_float() && !b.dtype.is_known_non_float();
        if a.dtype == b.dtype || !floats {
            self.same_dtype(&a, &b, span)?;
            return Ok((a, b));
        }
        if a.dtype == b.dtype.acc() {
            let var = self.cast_if_needed(b.var, &b.dtype, &a.dtype);
            let b = Tensor {
                dtype: a.dtype.clone(),
                var,
                ..b
            };
            return Ok((a, b));
        }
        if b.dtype == a.dtype.acc() {
            let var = self.cast_if_needed(a.var, &a.dtype, &b.dtype);
            let a = Tensor {
                dtype: b.dtype.clone(),
                var,
                ..a
            };
            return Ok((a, b));
        }
        self.same_dtype(&a, &b, span)?;
        Ok((a, b))
    }

    /// `lhs op rhs`; `what` names the operation for messages (`+`, `max`).
    fn arith(
        &mut self,
        op: BinaryOp,
        what: &str,
        lhs: Value,
        rhs: Value,
        span: Span,
    ) -> syn::Result<Value> {
        if let (Value::Scalar(a), Value::Scalar(b)) = (&lhs, &rhs) {
            return Ok(Value::Scalar(Scalar::Bin(
                op,
                Box::new(a.clone()),
                Box::new(b.clone()),
            )));
        }
        let (t, l, r) = self.operands(lhs, rhs, span)?;
        self.check_rule(typing::binary_rule(op), &t, what, span)?;
        let var = self.emit(Step::Binary { op, a: l, b: r });
        Ok(Value::Tensor(Tensor { var, ..t }))
    }

    /// `lhs.lt(rhs)` and the other comparisons: a bool tensor, broadcast like
    /// arithmetic; a scalar side takes the tensor side's dtype.
    fn compare(&mut self, op: CompareOp, lhs: Value, rhs: Value, span: Span) -> syn::Result<Value> {
        if let (Value::Scalar(_), Value::Scalar(_)) = (&lhs, &rhs) {
            return err(
                span,
                "a comparison needs a tensor on one side; both sides are scalars",
            );
        }
        let (t, l, r) = self.operands(lhs, rhs, span)?;
        self.check_rule(typing::compare_rule(op), &t, "comparison", span)?;
        let var = self.emit(Step::Compare { op, a: l, b: r });
        Ok(Value::Tensor(Tensor {
            dtype: bool_dtype(),
            var,
            ..t
        }))
    }

    /// The two operands of an elementwise op with at least one tensor: the
    /// result's kind, shape and sequences (with the operands' dtype), and the
    /// operand nodes (a scalar materialized in the tensor's dtype).
    fn operands(&mut self, lhs: Value, rhs: Value, span: Span) -> syn::Result<(Tensor, V, V)> {
        Ok(match (lhs, rhs) {
            (Value::Scalar(_), Value::Scalar(_)) => {
                return err(span, "an elementwise op on two scalars has no tensor");
            }
            (Value::Tensor(a), Value::Scalar(s)) => {
                self.broadcast(&[&a], span)?;
                let s = self.scalar_node(&s, &a.dtype, span)?;
                (a.clone(), a.var, s)
            }
            (Value::Scalar(s), Value::Tensor(b)) => {
                self.broadcast(&[&b], span)?;
                let s = self.scalar_node(&s, &b.dtype, span)?;
                (b.clone(), s, b.var)
            }
            (Value::Tensor(a), Value::Tensor(b)) => {
                let (a, b) = self.promote(a, b, span)?;
                let (kind, shape, seqs) = self.broadcast(&[&a, &b], span)?;
                let (l, r) = (a.var, b.var);
                (
                    Tensor {
                        kind,
                        shape,
                        seqs,
                        ..a
                    },
                    l,
                    r,
                )
            }
        })
    }

    fn args(
        &mut self,
        args: &syn::punctuated::Punctuated<Expr, syn::Token![,]>,
    ) -> syn::Result<Vec<Value>> {
        args.iter().map(|a| self.expr(a)).collect()
    }

    fn call(&mut self, c: &syn::ExprCall) -> syn::Result<Value> {
        let Expr::Path(p) = &*c.func else {
            return err_on(&c.func, "only the DSL's functions can be called");
        };
        let Some(name) = p.path.get_ident() else {
            return err_on(
                &p,
                format!(
                    "only the DSL's functions can be called ({})",
                    function_list()
                ),
            );
        };
        let fname = name.to_string();
        let Some(function) = typing::function(&fname) else {
            return err_on(
                &name,
                format!(
                    "unknown function `{fname}`: the DSL's functions are {}",
                    function_list()
                ),
            );
        };
        let arity = function.arity;
        if c.args.len() != arity {
            return err_on(
                &c,
                format!(
                    "`{fname}` takes {arity} argument(s), found {}",
                    c.args.len()
                ),
            );
        }
        let mut args = self.args(&c.args)?;
        match fname.as_str() {
            "max" | "min" => {
                let b = pop_arg(&mut args, c.span())?;
                let a = pop_arg(&mut args, c.span())?;
                self.arith(max_or_min(&fname), &fname, a, b, c.span())
            }
            "select" => self.select(args, c.span()),
            "powf" => {
                let p = pop_arg(&mut args, c.span())?;
                let x = pop_arg(&mut args, c.span())?;
                let x = self.tensor(x, c.span(), "the base of `powf`")?;
                self.powf(x, p, c.span())
            }
            _ => {
                let x = pop_arg(&mut args, c.span())?;
                let x = self.tensor(x, c.span(), &format!("the argument of `{fname}`"))?;
                self.unary(&fname, x, c.span())
            }
        }
    }

    fn unary(&mut self, name: &str, x: Tensor, span: Span) -> syn::Result<Value> {
        let Some(op) = unary_op(name) else {
            return err(span, format!("unknown function `{name}`"));
        };
        self.check_rule(typing::unary_rule(op), &x, name, span)?;
        self.broadcast(&[&x], span)?;
        let var = self.emit(Step::Unary { op, x: x.var });
        Ok(Value::Tensor(Tensor { var, ..x }))
    }

    /// `x.powf(p)` / `powf(x, p)`: the exponent is a scalar (a literal, an
    /// attribute or arithmetic on them), materialized in `x`'s dtype.
    fn powf(&mut self, x: Tensor, p: Value, span: Span) -> syn::Result<Value> {
        self.check_rule(typing::binary_rule(BinaryOp::Pow), &x, "powf", span)?;
        match p {
            Value::Scalar(_) => self.arith(BinaryOp::Pow, "powf", Value::Tensor(x), p, span),
            Value::Tensor(t) => err(
                span,
                format!(
                    "the exponent of `powf` is a scalar (a literal or an `#[attr]`), found {}",
                    t.describe()
                ),
            ),
        }
    }

    fn select(&mut self, mut args: Vec<Value>, span: Span) -> syn::Result<Value> {
        let on_false = pop_arg(&mut args, span)?;
        let on_true = pop_arg(&mut args, span)?;
        let cond = pop_arg(&mut args, span)?;
        let cond = self.tensor(cond, span, "the condition of `select`")?;
        if !self.admits(typing::SELECT_CONDITION_RULE, &cond.dtype) {
            return err(
                span,
                format!(
                    "the condition of `select` is a bool tensor, found {}",
                    cond.describe()
                ),
            );
        }
        let (on_true, on_false) = match (on_true, on_false) {
            (Value::Tensor(a), Value::Tensor(b)) => {
                let (a, b) = self.promote(a, b, span)?;
                (Value::Tensor(a), Value::Tensor(b))
            }
            other => other,
        };
        let (data_dtype, mut ts) = match (&on_true, &on_false) {
            (Value::Tensor(a), Value::Tensor(b)) => (a.dtype.clone(), vec![a.clone(), b.clone()]),
            (Value::Tensor(a), _) => (a.dtype.clone(), vec![a.clone()]),
            (_, Value::Tensor(b)) => (b.dtype.clone(), vec![b.clone()]),
            _ => return err(span, "`select` needs a tensor among its two values"),
        };
        ts.push(cond.clone());
        let refs: Vec<&Tensor> = ts.iter().collect();
        let (kind, shape, seqs) = self.broadcast(&refs, span)?;
        let node = |v: &Value, l: &mut Self| match v {
            Value::Tensor(t) => Ok(t.var),
            Value::Scalar(s) => l.scalar_node(s, &data_dtype, span),
        };
        let on_true = node(&on_true, self)?;
        let on_false = node(&on_false, self)?;
        let var = self.emit(Step::Select {
            cond: cond.var,
            on_true,
            on_false,
        });
        Ok(Value::Tensor(Tensor {
            kind,
            dtype: data_dtype,
            shape,
            seqs,
            var,
        }))
    }

    fn method(&mut self, m: &syn::ExprMethodCall) -> syn::Result<Value> {
        let recv = self.expr(&m.receiver)?;
        let name = m.method.to_string();
        let span = m.method.span();
        if let Some(op) = compare_op(&name) {
            // Scalars compare too (`window.ge(dist)`), so before the tensor check.
            if m.args.len() != 1 {
                return err_on(
                    &m,
                    format!("`.{name}()` takes 1 argument(s), found {}", m.args.len()),
                );
            }
            if let Some(tf) = &m.turbofish {
                return err_on(&tf, format!("`.{name}()` takes no type arguments"));
            }
            let mut args = self.args(&m.args)?;
            let rhs = pop_arg(&mut args, span)?;
            return self.compare(op, recv, rhs, span);
        }
        let recv = match recv {
            Value::Tensor(t) => t,
            Value::Scalar(_) => {
                return err(
                    span,
                    format!("`.{name}()` is a tensor method; this is a scalar"),
                );
            }
        };
        let kind = dsl_kind(recv.kind);
        let Some(spec) = typing::method(kind, &name) else {
            let list: Vec<String> = typing::methods_of(kind)
                .map(|m| format!("`{}`", m.name))
                .collect();
            return err(
                span,
                if list.is_empty() {
                    format!(
                        "unknown method `{name}` on {}; it has no methods",
                        recv.describe()
                    )
                } else {
                    format!(
                        "unknown method `{name}` on {}; its methods are {}",
                        recv.describe(),
                        list.join(", ")
                    )
                },
            );
        };
        let arity = spec.arity;
        if m.args.len() != arity {
            return err_on(
                &m,
                format!(
                    "`.{name}()` takes {arity} argument(s), found {}",
                    m.args.len()
                ),
            );
        }
        if !spec.type_argument && m.turbofish.is_some() {
            return err_on(&m.turbofish, format!("`.{name}()` takes no type arguments"));
        }
        let mut args = self.args(&m.args)?;
        // The receiver's dtype, by the validator's rule for the node built.
        self.check_rule(spec.dtype, &recv, &name, span)?;
        let v = recv.var;
        let out = match name.as_str() {
            n if unary_op(n).is_some() => return self.unary(&name, recv, span),
            "powf" => {
                let p = pop_arg(&mut args, span)?;
                return self.powf(recv, p, span);
            }
            "max" | "min" => {
                let other = pop_arg(&mut args, span)?;
                return self.arith(max_or_min(&name), &name, Value::Tensor(recv), other, span);
            }
            "cast" => {
                let to = self.dtype_turbofish(m, "write the target dtype as `.cast::<U>()`")?;
                let var = self.cast_if_needed(v, &recv.dtype, &to);
                Tensor {
                    dtype: to,
                    var,
                    ..recv
                }
            }
            "sum_over_seq" | "mean_over_seq" | "max_over_seq" | "logsumexp_over_seq" => {
                let op = match name.as_str() {
                    "sum_over_seq" => ReduceOp::Sum,
                    "mean_over_seq" => ReduceOp::Mean,
                    "max_over_seq" => ReduceOp::Max,
                    _ => ReduceOp::LogSumExp,
                };
                let var = self.emit(Step::Reduce { op, x: v, axis: 0 });
                Tensor {
                    kind: Kind::PerSeq,
                    seqs: None,
                    var,
                    ..recv
                }
            }
            "sum_over_keys" | "logsumexp_over_keys" => {
                let op = if name == "sum_over_keys" {
                    ReduceOp::Sum
                } else {
                    ReduceOp::LogSumExp
                };
                let var = self.emit(Step::Reduce { op, x: v, axis: 1 });
                Tensor {
                    kind: Kind::Jagged,
                    var,
                    ..recv
                }
            }
            "ascending_rank_over_seq" | "descending_rank_over_seq" => {
                let order = if name.starts_with("ascending") {
                    RankOrder::Ascending
                } else {
                    RankOrder::Descending
                };
                let var = self.emit(Step::Rank {
                    order,
                    x: v,
                    axis: 0,
                });
                Tensor {
                    dtype: DTy::Named("i32".to_string()),
                    var,
                    ..recv
                }
            }
            "smallest_k_over_features" | "largest_k_over_features" => {
                let Shape::Dims(dims) = &recv.shape else {
                    return err(
                        span,
                        format!(
                            "`.{name}::<K>()` picks along the last inner dim, which a shape parameter ({}) does not name; declare the dims: `(H, D)`",
                            recv.describe()
                        ),
                    );
                };
                let Some((_, kept)) = dims.split_last() else {
                    return err(
                        span,
                        format!("`.{name}::<K>()`: {} has no inner dims", recv.describe()),
                    );
                };
                let k = self.dim_turbofish(
                    m,
                    &format!("write the count as a dim parameter of the kernel: `.{name}::<K>()`"),
                )?;
                let order = if name.starts_with("smallest") {
                    RankOrder::Ascending
                } else {
                    RankOrder::Descending
                };
                let axis = row_dims(recv.kind) + kept.len();
                let var = self.emit(Step::TopK {
                    order,
                    x: v,
                    axis,
                    k: k.clone(),
                });
                let mut shape = kept.to_vec();
                shape.push(k);
                Tensor {
                    dtype: DTy::Named("i32".to_string()),
                    shape: Shape::Dims(shape),
                    var,
                    ..recv
                }
            }
            "take_features" => {
                let index = match pop_arg(&mut args, span)? {
                    Value::Tensor(t) => t,
                    Value::Scalar(_) => {
                        return err_on(&m.args, "`.take_features(index)` takes an integer tensor");
                    }
                };
                return self.take_features(recv, index, span);
            }
            "shift_rows" => {
                let by = shift_literal(&m.args[0]).ok_or_else(|| {
                    syn::Error::new_spanned(
                        &m.args[0],
                        "`.shift_rows(by)` takes an integer literal: the rows to move by \
                         (`-1` reads the previous row, `1` the next)",
                    )
                })?;
                let var = self.emit(Step::Shift { x: v, axis: 0, by });
                Tensor { var, ..recv }
            }
            "softmax_over_seq" | "softmax_over_keys" => {
                let axis = usize::from(name == "softmax_over_keys");
                let var = self.emit(Step::Softmax { x: v, axis });
                Tensor { var, ..recv }
            }
            "causal" | "causal_or" | "anticausal" | "anticausal_or" => {
                let s = self.seqs_of(&recv, span)?;
                let pred = if name.starts_with("causal") {
                    Pred::KeyNotAfterQuery
                } else {
                    Pred::KeyNotBeforeQuery
                };
                let mask = self.emit(Step::Mask {
                    pred,
                    ty: dense(
                        &bool_dtype(),
                        vec![DimE::Ragged(s), DimE::Ragged(s)],
                        &no_dims(),
                    ),
                });
                let fill = match args.pop() {
                    Some(Value::Scalar(fill)) => fill,
                    Some(Value::Tensor(_)) => {
                        return err_on(&m.args, "the value of masked pairs is a scalar");
                    }
                    None => Scalar::Lit(0.0),
                };
                let fill = self.scalar_node(&fill, &recv.dtype, m.args.span())?;
                let var = self.emit(Step::Select {
                    cond: mask,
                    on_true: v,
                    on_false: fill,
                });
                Tensor { var, ..recv }
            }
            "to_padded" | "to_padded_or" => {
                if !self.truncates() {
                    return err(
                        span,
                        "padding needs `#[attr] max_len: usize` (the padded length N)",
                    );
                }
                let s = self.seqs_of(&recv, span)?;
                let mut var = self.emit(Step::ToPadded { x: v });
                if name == "to_padded_or" {
                    let pad = pop_arg(&mut args, span)?;
                    let Value::Scalar(pad) = pad else {
                        return err_on(&m.args, "the padding value is a scalar");
                    };
                    let valid = self.emit(Step::Mask {
                        pred: Pred::RowInSequence(s),
                        ty: dense(&bool_dtype(), vec![DimE::Batch, DimE::MaxLen], &no_dims()),
                    });
                    let pad = self.scalar_node(&pad, &recv.dtype, m.args.span())?;
                    var = self.emit(Step::Select {
                        cond: valid,
                        on_true: var,
                        on_false: pad,
                    });
                }
                Tensor {
                    kind: Kind::Padded,
                    seqs: None,
                    var,
                    ..recv
                }
            }
            "to_jagged" => {
                if !self.has_kernel_seqs {
                    return err(
                        span,
                        "`.to_jagged()` needs the kernel's sequences: add an `offsets: Offsets` parameter",
                    );
                }
                let seqs = self.seqs[0];
                let var = self.emit(Step::FromPadded { x: v, seqs });
                Tensor {
                    kind: Kind::Jagged,
                    seqs: Some(0),
                    var,
                    ..recv
                }
            }
            "complete_cumsum" => {
                let var = self.emit(Step::CompleteCumsum { x: v });
                Tensor {
                    kind: Kind::Offsets,
                    var,
                    ..recv
                }
            }
            "offsets" => {
                let seqs = self.seqs_of(&recv, span)?;
                let var = self.emit(Step::Offsets {
                    seqs,
                    dtype: self.index.clone(),
                });
                Tensor {
                    kind: Kind::Offsets,
                    dtype: self.index.clone(),
                    shape: Shape::Dims(Vec::new()),
                    seqs: None,
                    var,
                }
            }
            "pack_triu" => {
                let s = self.seqs_of(&recv, span)?;
                let seqs = self.emit(Step::SeqsTriu { seqs: s });
                self.seqs.push(seqs);
                let var = self.emit(Step::PackTriu { x: v, seqs });
                Tensor {
                    kind: Kind::Jagged,
                    seqs: Some(self.seqs.len() - 1),
                    var,
                    ..recv
                }
            }
            "compact" => {
                let mask = pop_arg(&mut args, span)?;
                let mask = self.tensor(mask, m.args.span(), "the mask")?;
                return self.compact(recv, mask, m.args.span());
            }
            "dot" | "dot_acc" => {
                let acc = if name == "dot_acc" {
                    let usage = "name the accumulator dtype: `.dot_acc::<f32>(k)`";
                    let acc = self.dtype_turbofish(m, usage)?;
                    // jagged_ir::typing::contract_result_rule, for every pair
                    // of dtypes the operands and the accumulator may be.
                    if self.check_dtypes
                        && let (Some(ops), Some(accs)) = (recv.dtype.possible(), acc.possible())
                    {
                        let verdicts: Vec<Result<(), &str>> = ops
                            .iter()
                            .flat_map(|&o| {
                                accs.iter()
                                    .map(move |&a| typing::contract_result_rule(o, a))
                            })
                            .collect();
                        if verdicts.iter().all(Result::is_err)
                            && let Some(Err(reason)) = verdicts.first()
                        {
                            return err_on(
                                &m.turbofish,
                                format!(
                                    "operands {} cannot accumulate in {}: {reason}",
                                    recv.describe(),
                                    acc.describe()
                                ),
                            );
                        }
                    }
                    Some(acc)
                } else {
                    None
                };
                let other = pop_arg(&mut args, span)?;
                let other = self.tensor(other, m.args.span(), "the operand of `.dot()`")?;
                return self.dot(recv, other, acc, span);
            }
            "matmul" | "matmul_t" => {
                let w = pop_arg(&mut args, span)?;
                let w = self.tensor(w, m.args.span(), "the operand of `.matmul()`")?;
                return self.matmul(recv, w, name == "matmul_t", span);
            }
            "matmul_grouped" | "matmul_t_grouped" => {
                let w = pop_arg(&mut args, span)?;
                let what = format!("the operand of `.{name}()`");
                let w = self.tensor(w, m.args.span(), &what)?;
                return self.matmul_grouped(recv, w, name == "matmul_t_grouped", span);
            }
            "outer_sum_over_seq" => {
                let y = pop_arg(&mut args, span)?;
                let y = self.tensor(y, m.args.span(), "the operand of `.outer_sum_over_seq()`")?;
                return self.outer_sum_over_seq(recv, y, span);
            }
            "at" => {
                let index = pop_arg(&mut args, span)?;
                let index = self.tensor(index, m.args.span(), "the index of `.at()`")?;
                return self.gather(recv, index, span);
            }
            "query_pos" | "key_pos" => {
                let s = self.seqs_of(&recv, span)?;
                let dtype = recv.dtype.acc();
                let var = self.emit(Step::Position {
                    axis: usize::from(name == "key_pos"),
                    ty: dense(&dtype, vec![DimE::Ragged(s), DimE::Ragged(s)], &no_dims()),
                });
                Tensor {
                    dtype,
                    shape: no_dims(),
                    var,
                    ..recv
                }
            }
            "row_pos" => {
                let dtype = recv.dtype.acc();
                let (axis, ty) = match recv.kind {
                    Kind::Padded => (
                        1,
                        dense(&dtype, vec![DimE::Batch, DimE::MaxLen], &no_dims()),
                    ),
                    _ => {
                        let s = self.seqs_of(&recv, span)?;
                        (0, TyE::Jagged(dtype.clone(), s, no_dims()))
                    }
                };
                let var = self.emit(Step::Position { axis, ty });
                Tensor {
                    dtype,
                    shape: no_dims(),
                    var,
                    ..recv
                }
            }
            "seq_len" => {
                let s = self.seqs_of(&recv, span)?;
                let i64_dtype = DTy::Named("i64".to_string());
                let lengths = self.emit(Step::Lengths {
                    seqs: s,
                    dtype: i64_dtype.clone(),
                });
                let dtype = recv.dtype.acc();
                let var = self.cast_if_needed(lengths, &i64_dtype, &dtype);
                Tensor {
                    kind: Kind::PerSeq,
                    dtype,
                    shape: no_dims(),
                    seqs: None,
                    var,
                }
            }
            "sum_over_groups" => {
                let Shape::Dims(dims) = &recv.shape else {
                    return err(
                        span,
                        format!(
                            "`.sum_over_groups()` reduces the second-to-last inner dim, which a shape parameter ({}) does not name; declare the dims: `(G, D)`",
                            recv.describe()
                        ),
                    );
                };
                if dims.len() < 2 {
                    return err(
                        span,
                        format!(
                            "`.sum_over_groups()` sums the groups `G` of `(.., G, D)`: {} has fewer than two inner dims",
                            recv.describe()
                        ),
                    );
                }
                let axis = row_dims(recv.kind) + dims.len() - 2;
                let mut kept = dims.clone();
                kept.remove(dims.len() - 2);
                let var = self.emit(Step::Reduce {
                    op: ReduceOp::Sum,
                    x: v,
                    axis,
                });
                Tensor {
                    shape: Shape::Dims(kept),
                    var,
                    ..recv
                }
            }
            "sum_over_features"
            | "mean_over_features"
            | "max_over_features"
            | "argmin_over_features"
            | "argmax_over_features" => {
                let Shape::Dims(dims) = &recv.shape else {
                    return err(
                        span,
                        format!(
                            "`.{name}()` reduces the last inner dim, which a shape parameter ({}) does not name; declare the dims: `(H, D)`",
                            recv.describe()
                        ),
                    );
                };
                let Some((_, kept)) = dims.split_last() else {
                    return err(
                        span,
                        format!("`.{name}()`: {} has no inner dims", recv.describe()),
                    );
                };
                let op = match name.as_str() {
                    "sum_over_features" => ReduceOp::Sum,
                    "mean_over_features" => ReduceOp::Mean,
                    "argmin_over_features" => ReduceOp::ArgMin,
                    "argmax_over_features" => ReduceOp::ArgMax,
                    _ => ReduceOp::Max,
                };
                let axis = row_dims(recv.kind) + kept.len();
                let var = self.emit(Step::Reduce { op, x: v, axis });
                // An arg reduction gives i32 indices, whatever the receiver's dtype.
                let dtype = if op.is_arg() {
                    DTy::Named("i32".to_string())
                } else {
                    recv.dtype.clone()
                };
                Tensor {
                    dtype,
                    shape: Shape::Dims(kept.to_vec()),
                    var,
                    ..recv
                }
            }
            _ => {
                return err(
                    span,
                    format!(
                        "internal: `.{name}()` is in jagged_ir's method table but the macro does not lower it"
                    ),
                );
            }
        };
        Ok(Value::Tensor(out))
    }

    /// `x` converted from `from` to `to`: no node when the two are the same
    /// dtype, statically or (for symbolic dtypes) when `graph` runs.
    fn cast_if_needed(&mut self, x: V, from: &DTy, to: &DTy) -> V {
        if from == to {
            return x;
        }
        self.emit(Step::Cast {
            x,
            from: from.clone(),
            to: to.clone(),
        })
    }

    fn seqs_of(&self, t: &Tensor, span: Span) -> syn::Result<V> {
        match t.seqs {
            Some(s) => Ok(self.seqs[s]),
            None => err(span, format!("{} has no sequences", t.describe())),
        }
    }

    /// The dtype named by a method's turbofish (`.cast::<U>()`, `.dot_acc::<U>(k)`).
    fn dtype_turbofish(&self, m: &syn::ExprMethodCall, usage: &str) -> syn::Result<DTy> {
        let Some(tf) = &m.turbofish else {
            return err_on(&m.method, usage);
        };
        let [syn::GenericArgument::Type(syn::Type::Path(p))] =
            tf.args.iter().collect::<Vec<_>>().as_slice()
        else {
            return err_on(&tf, usage);
        };
        let Some(ident) = p.path.get_ident() else {
            return err_on(&tf, usage);
        };
        let name = ident.to_string();
        if matches!(
            name.as_str(),
            "f64" | "f32" | "f16" | "bf16" | "i32" | "i64" | "u8" | "bool"
        ) {
            return Ok(DTy::Named(name));
        }
        let is_dtype_param = self
            .sig
            .graph_params()
            .any(|(g, r)| g == ident && r == crate::sig::Role::Dtype);
        if is_dtype_param {
            Ok(DTy::Param(ident.clone()))
        } else {
            err_on(
                &ident,
                format!(
                    "unknown dtype `{name}`: a dtype name or a dtype parameter of the signature"
                ),
            )
        }
    }

    fn compact(&mut self, x: Tensor, mask: Tensor, span: Span) -> syn::Result<Value> {
        if x.kind != Kind::Jagged || mask.kind != Kind::Jagged || !mask.shape.is_empty() {
            return err(
                span,
                format!(
                    "`.compact(mask)` keeps rows of a Jagged tensor where a `Jagged<bool or u8, ()>` mask is set; found mask {}",
                    mask.describe()
                ),
            );
        }
        if x.seqs != mask.seqs {
            return err(span, "the mask lives on other sequences than the values");
        }
        match &mask.dtype {
            DTy::Named(n) if n == "bool" || n == "u8" => {}
            DTy::Param(_) => {}
            _ => {
                return err(
                    span,
                    format!("a mask is bool or u8, found {}", mask.describe()),
                );
            }
        }
        let cond = self.cast_if_needed(mask.var, &mask.dtype, &bool_dtype());
        let seqs = self.emit(Step::SeqsWhere { mask: cond });
        self.seqs.push(seqs);
        let new_seqs = self.seqs.len() - 1;
        let var = self.emit(Step::Compact { x: x.var, seqs });
        Ok(Value::Tensor(Tensor {
            seqs: Some(new_seqs),
            var,
            ..x
        }))
    }

    /// `q.dot(k)`: Jagged (P.., K) . Jagged (P.., K) -> Pairs (P..), contracted over K;
    /// `p.dot(v)`: Pairs (P..) . Jagged (P.., E) -> Jagged (P.., E), contracted over keys.
    /// `acc` is the accumulator (and result) dtype of `.dot_acc::<U>()`.
    fn dot(&mut self, a: Tensor, b: Tensor, acc: Option<DTy>, span: Span) -> syn::Result<Value> {
        if a.seqs.is_none() || a.seqs != b.seqs || b.kind != Kind::Jagged {
            return err(
                span,
                format!(
                    "`.dot()` contracts two tensors of one sequence set: Jagged.dot(Jagged) or Pairs.dot(Jagged); found {} and {}",
                    a.describe(),
                    b.describe()
                ),
            );
        }
        let (Shape::Dims(da), Shape::Dims(db)) = (&a.shape, &b.shape) else {
            return err(span, "`.dot()` needs named dims, not a shape parameter");
        };
        match a.kind {
            Kind::Jagged => {
                self.same_dtype(&a, &b, span)?;
                if da.is_empty() || da != db {
                    return err(
                        span,
                        format!(
                            "`q.dot(k)` contracts the last dim of equal shapes; found {} and {}",
                            a.describe(),
                            b.describe()
                        ),
                    );
                }
                let letters = letters(da);
                let acc = acc.unwrap_or_else(|| a.dtype.acc());
                let var = self.emit(Step::Contract {
                    a: a.var,
                    a_axes: format!("i{letters}"),
                    b: b.var,
                    b_axes: format!("j{letters}"),
                    out_axes: format!("ij{}", &letters[..letters.len() - 1]),
                    dtype: acc.clone(),
                    operand: a.dtype.clone(),
                    tf32: false,
                });
                Ok(Value::Tensor(Tensor {
                    kind: Kind::Pairs,
                    dtype: acc,
                    shape: Shape::Dims(da[..da.len() - 1].to_vec()),
                    seqs: a.seqs,
                    var,
                }))
            }
            Kind::Pairs => {
                if db.len() != da.len() + 1 || db[..da.len()] != da[..] {
                    return err(
                        span,
                        format!(
                            "`p.dot(v)` needs v's dims to be p's plus one; found {} and {}",
                            a.describe(),
                            b.describe()
                        ),
                    );
                }
                let vb = if a.dtype == b.dtype || a.dtype == b.dtype.acc() {
                    self.cast_if_needed(b.var, &b.dtype, &a.dtype)
                } else {
                    return err(
                        span,
                        format!("dtype mismatch: {} and {}", a.describe(), b.describe()),
                    );
                };
                let letters = letters(db);
                let p = &letters[..letters.len() - 1];
                let dtype = acc.unwrap_or_else(|| a.dtype.clone());
                let var = self.emit(Step::Contract {
                    a: a.var,
                    a_axes: format!("ij{p}"),
                    b: vb,
                    b_axes: format!("j{letters}"),
                    out_axes: format!("i{letters}"),
                    dtype: dtype.clone(),
                    operand: a.dtype.clone(),
                    tf32: false,
                });
                Ok(Value::Tensor(Tensor {
                    kind: Kind::Jagged,
                    dtype,
                    shape: b.shape.clone(),
                    seqs: a.seqs,
                    var,
                }))
            }
            _ => err(
                span,
                format!(
                    "`.dot()` is defined on Jagged and Pairs, not on {}",
                    a.describe()
                ),
            ),
        }
    }

    /// `x.matmul(w)`: `x`'s last inner dim contracted with the first of a
    /// `Dense<T, (K, M)>` weight (or, for a `Jagged` or `PerSeq` receiver, a
    /// per-sequence `PerSeq<T, (K, M)>` one), `(.., K)` to `(.., M)`, per row
    /// of `x`, in the accumulator dtype. `x.matmul_t(w)` (`transposed`)
    /// contracts it with the last dim of a `(N, K)` weight instead.
    fn matmul(&mut self, x: Tensor, w: Tensor, transposed: bool, span: Span) -> syn::Result<Value> {
        let (call, weight) = if transposed {
            ("x.matmul_t(w)", "(N, K)")
        } else {
            ("x.matmul(w)", "(K, M)")
        };
        let usage = || {
            format!(
                "`{call}` contracts the last dim of x with a weight `Dense<T, {weight}>` (or \
                 `PerSeq<T, {weight}>` for a Jagged or PerSeq x): x `(.., K)` gives `(.., {})`; \
                 found {} and {}",
                if transposed { "N" } else { "M" },
                x.describe(),
                w.describe()
            )
        };
        let (Shape::Dims(dx), Shape::Dims(dw)) = (&x.shape, &w.shape) else {
            return err(span, usage());
        };
        let ([.., k], [w0, w1]) = (dx.as_slice(), dw.as_slice()) else {
            return err(span, usage());
        };
        let (wk, wm) = if transposed { (w1, w0) } else { (w0, w1) };
        let per_seq_weight =
            w.kind == Kind::PerSeq && matches!(x.kind, Kind::Jagged | Kind::PerSeq);
        if !(w.kind == Kind::Dense || per_seq_weight) || k != wk {
            return err(span, usage());
        }
        self.same_dtype(&x, &w, span)?;
        let rows = match x.kind {
            Kind::Jagged | Kind::Padded => "i",
            Kind::Pairs => "ij",
            _ => "",
        };
        let (dx, wm) = (dx.clone(), wm.clone());
        Ok(self.weight_product(x, w.var, &dx, wm, rows, |_, lk, lm| {
            if transposed {
                format!("{lm}{lk}")
            } else {
                format!("{lk}{lm}")
            }
        }))
    }

    /// The contraction of the last dim of `x` (dims `dx`) with a weight
    /// (`w`), which gives the new last dim `out`: `b_axes(kept, k, out)`
    /// names the weight's dims from the letters of `x`'s other inner dims,
    /// of the summed dim and of the new one. In the accumulator dtype.
    fn weight_product(
        &mut self,
        x: Tensor,
        w: V,
        dx: &[Ident],
        out: Ident,
        rows: &str,
        b_axes: impl Fn(&str, &str, &str) -> String,
    ) -> Value {
        let mut all = dx.to_vec();
        all.push(out.clone());
        let letters = letters(&all);
        let (kept, tail) = letters.split_at(dx.len() - 1);
        let (lk, lo) = tail.split_at(1);
        let acc = x.dtype.acc();
        let var = self.emit(Step::Contract {
            a: x.var,
            a_axes: format!("{rows}{kept}{lk}"),
            b: w,
            b_axes: b_axes(kept, lk, lo),
            out_axes: format!("{rows}{kept}{lo}"),
            dtype: acc.clone(),
            operand: x.dtype.clone(),
            tf32: false,
        });
        let mut shape = dx[..dx.len() - 1].to_vec();
        shape.push(out);
        Value::Tensor(Tensor {
            dtype: acc,
            shape: Shape::Dims(shape),
            var,
            ..x
        })
    }

    /// `x.matmul_grouped(w)`: for `x` `(.., G, K)` and a weight `Dense<T,
    /// (G, K, N)>`, `x[.., g, :] @ w[g]` per group `g`, `(.., G, K)` to
    /// `(.., G, N)`, in the accumulator dtype: the contraction `x[..gk],
    /// w[gkn] -> ..gn`, whose `g` is a batch letter of both operands and the
    /// output. `x.matmul_t_grouped(w)` (`transposed`) takes `Dense<T, (G, N,
    /// K)>` instead, `x[.., g, :] @ w[g]^T` (`w[gnk]`). Product
    /// quantization's per-subspace dot products with the centroids.
    fn matmul_grouped(
        &mut self,
        x: Tensor,
        w: Tensor,
        transposed: bool,
        span: Span,
    ) -> syn::Result<Value> {
        let (call, weight) = if transposed {
            ("x.matmul_t_grouped(w)", "(G, N, K)")
        } else {
            ("x.matmul_grouped(w)", "(G, K, N)")
        };
        let usage = || {
            format!(
                "`{call}` takes x `(.., G, K)` (Jagged or PerSeq) and a weight \
                 `Dense<T, {weight}>` and gives `(.., G, N)`; found {} and {}",
                x.describe(),
                w.describe()
            )
        };
        let (Shape::Dims(dx), Shape::Dims(dw)) = (&x.shape, &w.shape) else {
            return err(span, usage());
        };
        let ([.., g, k], [wg, w1, w2]) = (dx.as_slice(), dw.as_slice()) else {
            return err(span, usage());
        };
        let (wk, wn) = if transposed { (w2, w1) } else { (w1, w2) };
        if w.kind != Kind::Dense || g != wg || k != wk {
            return err(span, usage());
        }
        self.same_dtype(&x, &w, span)?;
        let rows = match x.kind {
            Kind::Jagged => "i",
            _ => "",
        };
        let (dx, wn) = (dx.clone(), wn.clone());
        Ok(
            self.weight_product(x, w.var, &dx, wn, rows, |kept, lk, ln| {
                // The group letter: the last of x's dims before the summed one.
                let lg = &kept[kept.len() - 1..];
                if transposed {
                    format!("{lg}{ln}{lk}")
                } else {
                    format!("{lg}{lk}{ln}")
                }
            }),
        )
    }

    /// `x.outer_sum_over_seq(y)`: `sum_{i < n_b} x[i] (x) y[i]` per sequence,
    /// two jagged tensors of one sequence set: a `PerSeq` with the inner dims
    /// of `x` then those of `y` (`(M,)` and `(P,)` give `(M, P)`: `x_b^T y_b`),
    /// in the accumulator dtype.
    fn outer_sum_over_seq(&mut self, x: Tensor, y: Tensor, span: Span) -> syn::Result<Value> {
        if y.kind != Kind::Jagged || x.seqs.is_none() || x.seqs != y.seqs {
            return err(
                span,
                format!(
                    "`x.outer_sum_over_seq(y)` takes two Jagged tensors of one sequence set; found {} and {}",
                    x.describe(),
                    y.describe()
                ),
            );
        }
        let (Shape::Dims(dx), Shape::Dims(dy)) = (&x.shape, &y.shape) else {
            return err(
                span,
                "`x.outer_sum_over_seq(y)` needs named dims, not a shape parameter",
            );
        };
        self.same_dtype(&x, &y, span)?;
        let mut all = dx.clone();
        all.extend(dy.iter().cloned());
        let letters = letters(&all);
        let (lx, ly) = letters.split_at(dx.len());
        let acc = x.dtype.acc();
        let var = self.emit(Step::Contract {
            a: x.var,
            a_axes: format!("i{lx}"),
            b: y.var,
            b_axes: format!("i{ly}"),
            out_axes: letters.clone(),
            dtype: acc.clone(),
            operand: x.dtype.clone(),
            tf32: false,
        });
        Ok(Value::Tensor(Tensor {
            kind: Kind::PerSeq,
            dtype: acc,
            shape: Shape::Dims(all),
            seqs: None,
            var,
        }))
    }

    /// `table.at(index)`: the rows of a dense table `[K, ..]` at an integer
    /// index tensor with no inner dims; the index's kind and rows, the
    /// table's dtype and other dims (0 where the index is outside `0..K`).
    fn gather(&mut self, table: Tensor, index: Tensor, span: Span) -> syn::Result<Value> {
        let usage = || {
            format!(
                "`table.at(index)` picks rows of a `Dense<T, (K, ..)>` table at an integer \
                 index (i32 or i64, e.g. `(i - j).cast::<i64>()`) with no inner dims or one \
                 (`(L,)`: one row per entry); found {} and {}",
                table.describe(),
                index.describe()
            )
        };
        let Shape::Dims(dt) = &table.shape else {
            return err(span, usage());
        };
        let integer = !self.check_dtypes
            || index
                .dtype
                .possible()
                .is_some_and(|ds| ds.iter().all(|d| typing::GATHER_INDEX_RULE.admits(*d)));
        // The index's named inner dims (none, or `(L,)`: one row per
        // entry) come first in the result, then the table's after its first.
        let Shape::Dims(di) = &index.shape else {
            return err(span, usage());
        };
        if dt.is_empty() || !integer || di.len() > 1 {
            return err(span, usage());
        }
        let var = self.emit(Step::Gather {
            table: table.var,
            index: index.var,
        });
        let mut shape = di.clone();
        shape.extend(dt[1..].iter().cloned());
        Ok(Value::Tensor(Tensor {
            dtype: table.dtype,
            shape: Shape::Dims(shape),
            var,
            ..index
        }))
    }

    /// `x.take_features(index)`: a [`Step::Take`] along the first inner dim
    /// of `x`, with an integer index of `x`'s kind (one pick per row) or a
    /// dense one (the same picks for every row).
    fn take_features(&mut self, x: Tensor, index: Tensor, span: Span) -> syn::Result<Value> {
        let usage = || {
            format!(
                "`x.take_features(index)` picks entries of the first inner dim of `x` with an \
                 i32 or i64 index of `x`'s kind (or a `Dense` one, for every row) whose inner \
                 dims are named; found {} and {}",
                x.describe(),
                index.describe()
            )
        };
        let (Shape::Dims(dx), Shape::Dims(di)) = (&x.shape, &index.shape) else {
            return err(span, usage());
        };
        let integer = !self.check_dtypes
            || index
                .dtype
                .possible()
                .is_some_and(|ds| ds.iter().all(|d| typing::GATHER_INDEX_RULE.admits(*d)));
        let kind_ok = index.kind == x.kind && index.seqs == x.seqs || index.kind == Kind::Dense;
        if dx.is_empty() || !integer || !kind_ok {
            return err(span, usage());
        }
        let var = self.emit(Step::Take {
            x: x.var,
            index: index.var,
            axis: row_dims(x.kind),
        });
        let mut shape = di.clone();
        shape.extend(dx[1..].iter().cloned());
        Ok(Value::Tensor(Tensor {
            shape: Shape::Dims(shape),
            var,
            ..x
        }))
    }

    /// The dim parameter a method's turbofish names (`::<K>`).
    fn dim_turbofish(&self, m: &syn::ExprMethodCall, usage: &str) -> syn::Result<Ident> {
        let Some(tf) = &m.turbofish else {
            return err_on(&m.method, usage);
        };
        let [syn::GenericArgument::Type(syn::Type::Path(p))] =
            tf.args.iter().collect::<Vec<_>>().as_slice()
        else {
            return err_on(tf, usage);
        };
        let Some(ident) = p.path.get_ident() else {
            return err_on(tf, usage);
        };
        let is_dim = self
            .sig
            .graph_params()
            .any(|(g, r)| g == ident && r == crate::sig::Role::Dim);
        if is_dim {
            Ok(ident.clone())
        } else {
            err_on(tf, usage)
        }
    }

    /// Checks the outputs against the declared ones and emits `output` calls.
    fn outputs(
        &mut self,
        values: Vec<TailItem<'_>>,
        span: Span,
        names: &[Ident],
    ) -> syn::Result<()> {
        let decls = &self.sig.outputs;
        if values.len() != decls.len() {
            return err(
                span,
                format!(
                    "the kernel declares {} output(s) but its last expression gives {}",
                    decls.len(),
                    values.len()
                ),
            );
        }
        for ((item, decl), name) in values.into_iter().zip(decls).zip(names) {
            let e = item.expr;
            if item.optional != decl.optional {
                return err_on(
                    e,
                    if decl.optional {
                        "this output is declared `Option<..>`: give `Some(x)` or `None`"
                    } else {
                        "`Some`/`None` give an output declared `Option<..>` in the signature"
                    },
                );
            }
            let Some(v) = item.value else {
                continue;
            };
            let t = self.tensor(v, e.span(), "an output")?;
            let declared_dtype = match &decl.ty.dtype {
                DTy::KernelIndex => self.index.clone(),
                other => other.clone(),
            };
            if t.kind != decl.ty.kind || t.shape != decl.ty.shape {
                return err_on(
                    e,
                    format!(
                        "this output is {} but the signature declares {}",
                        t.describe(),
                        decl.ty.describe()
                    ),
                );
            }
            let var = if t.dtype != declared_dtype && t.dtype == declared_dtype.acc() {
                self.cast_if_needed(t.var, &t.dtype, &declared_dtype)
            } else if t.dtype == declared_dtype {
                t.var
            } else {
                return err_on(
                    e,
                    format!(
                        "this output has dtype {} but the signature declares {}; convert it with `.cast::<U>()`",
                        t.dtype.describe(),
                        declared_dtype.describe()
                    ),
                );
            };
            let name = name.to_string();
            self.emit(Step::Output { name, x: var });
        }
        Ok(())
    }
}

/// Checks the Rust type of a scalar (a literal's suffix, empty for none, or
/// the target of `as`) against `jagged_ir::typing::SCALAR_TYPES`, the types
/// the phantom `Scalar` trait has.
fn scalar_type(ty: &str, at: &impl ToTokens) -> syn::Result<()> {
    if ty.is_empty() || typing::SCALAR_TYPES.contains(&ty) {
        return Ok(());
    }
    err_on(
        at,
        format!(
            "a scalar of the jagged DSL is a number without a suffix or one of {} (found `{ty}`); \
             it takes the dtype of the tensor it meets",
            typing::SCALAR_TYPES.join(", ")
        ),
    )
}

/// How a scalar `-x` is lowered in `dtype`: `Some(Sub)` (`0 - x`) where
/// the validator's `neg` (floats only) cannot take every dtype `dtype` may
/// stand for and none of them is a float, `None` (`neg`) otherwise.
fn neg_lowering(dtype: &DTy) -> Option<BinaryOp> {
    let neg = typing::unary_rule(UnaryOp::Neg);
    dtype
        .possible()
        .filter(|ds| !ds.is_empty() && ds.iter().all(|d| !neg.admits(*d)))
        .map(|_| BinaryOp::Sub)
}

/// The number of row dims before a kind's inner dims (`[%s, %s, ...]` of
/// pairs, `[B, N, ...]` of a padded tensor, none of a dense one).
fn row_dims(kind: Kind) -> usize {
    match kind {
        Kind::Dense => 0,
        Kind::Jagged | Kind::PerSeq | Kind::Lengths | Kind::Offsets => 1,
        Kind::Padded | Kind::Pairs => 2,
    }
}

/// The IR comparison of a DSL comparison method (`a.lt(b)`, ...), from
/// `jagged_ir::typing::METHODS`.
fn compare_op(name: &str) -> Option<CompareOp> {
    typing::METHODS.iter().find_map(|m| match m.node {
        DslNode::Compare(op) if m.name == name => Some(op),
        _ => None,
    })
}

/// The kind as `jagged_ir::typing` names it.
pub(crate) fn dsl_kind(kind: Kind) -> DslKind {
    match kind {
        Kind::Jagged => DslKind::Jagged,
        Kind::PerSeq => DslKind::PerSeq,
        Kind::Padded => DslKind::Padded,
        Kind::Pairs => DslKind::Pairs,
        Kind::Lengths => DslKind::Lengths,
        Kind::Offsets => DslKind::Offsets,
        Kind::Dense => DslKind::Dense,
    }
}

/// One letter per dim for `contract`'s axis strings: the dim's name in lower
/// case when free, else the first free letter (`i` and `j` are the row axes).
fn letters(dims: &[Ident]) -> String {
    let mut used: Vec<char> = vec!['i', 'j'];
    let mut out = String::new();
    for d in dims {
        let first = d
            .to_string()
            .chars()
            .next()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| c.is_ascii_lowercase());
        let c = first
            .filter(|c| !used.contains(c))
            .or_else(|| ('a'..='z').find(|c| !used.contains(c)))
            .unwrap_or('z');
        used.push(c);
        out.push(c);
    }
    out
}

/// A dense symbolic type.
fn dense(dtype: &DTy, dims: Vec<DimE>, shape: &Shape) -> TyE {
    TyE::Dense(dtype.clone(), dims, shape.clone())
}

/// No inner dims.
fn no_dims() -> Shape {
    Shape::Dims(Vec::new())
}

fn bool_dtype() -> DTy {
    DTy::Named("bool".to_string())
}

/// The value of an attribute default (`#[attr(default = 0.0)]`).
fn literal_value(lit: &Lit) -> syn::Result<f64> {
    match lit {
        Lit::Float(f) => f.base10_parse(),
        Lit::Int(i) => Ok(i.base10_parse::<i64>()? as f64),
        other => err_on(other, "an attribute default is a number"),
    }
}

/// `f32::NEG_INFINITY`, `f64::INFINITY`, ...: the constants a mask fills with.
fn float_constant(path: &syn::Path) -> Option<f64> {
    let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
    match names
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["f32" | "f64", "NEG_INFINITY"] => Some(f64::NEG_INFINITY),
        ["f32" | "f64", "INFINITY"] => Some(f64::INFINITY),
        _ => None,
    }
}

/// The integer literal of `.shift_rows(by)`, negated when written `-n`.
fn shift_literal(e: &syn::Expr) -> Option<i64> {
    match e {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(n),
            ..
        }) => n.base10_parse().ok(),
        syn::Expr::Unary(syn::ExprUnary {
            op: syn::UnOp::Neg(_),
            expr,
            ..
        }) => shift_literal(expr).map(|n| -n),
        syn::Expr::Paren(p) => shift_literal(&p.expr),
        syn::Expr::Group(g) => shift_literal(&g.expr),
        _ => None,
    }
}
