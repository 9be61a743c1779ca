//! The lowered kernel: a list of graph-building steps over symbolic dtypes and
//! shapes. It is printed as the body of the generated `graph(...)` (one
//! `GraphBuilder` call per step) and, for `specialize(...)`, applied to a real
//! `GraphBuilder` inside the macro with concrete bindings. The facade's tests
//! check that both give the same canonical text.

use std::collections::HashMap;

use jagged_ir::{
    AttrKind, AttrValue, BinaryOp, CompareOp, DType, Dim, Graph, GraphBuilder, Handle,
    IndexPredicate, Node, RankOrder, ReduceOp, ScanMode, TensorType, TopKPart, UnaryOp,
};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use crate::sig::{DTy, Shape, param_var};

/// The value defined by the step at this index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V(pub usize);

impl V {
    /// The generated variable holding the value's node handle.
    pub fn ident(self) -> Ident {
        format_ident!("__v{}", self.0)
    }
}

/// A symbolic dim.
#[derive(Clone, Copy, Debug)]
pub enum DimE {
    /// `B`.
    Batch,
    /// `B+1`.
    BatchPlusOne,
    /// `N`.
    MaxLen,
    /// The ragged rows of a sequence set.
    Ragged(V),
}

/// A symbolic tensor type.
#[derive(Clone, Debug)]
pub enum TyE {
    /// Leading dims then the inner shape.
    Dense(DTy, Vec<DimE>, Shape),
    /// Ragged rows of a sequence set, then the inner shape.
    Jagged(DTy, V, Shape),
}

/// An index predicate of a `mask`.
#[derive(Clone, Copy, Debug)]
pub enum Pred {
    /// `j <= i`.
    KeyNotAfterQuery,
    /// `j >= i`.
    KeyNotBeforeQuery,
    /// `i < n_b` of a sequence set.
    RowInSequence(V),
}

/// The kernel-body expression a step was lowered from: recorded in the
/// graph as the node's origin, so that errors about the node quote it.
#[derive(Clone, Debug)]
pub struct Src {
    /// The expression as written (token text, spaces tidied).
    pub text: String,
    /// Its source file, as the compiler names it.
    pub file: String,
    /// Its line (1-based; 0 outside a macro expansion, in unit tests).
    pub line: u32,
    /// Its column (1-based; 0 outside a macro expansion).
    pub column: u32,
    /// Its span, for compile errors about it.
    pub span: proc_macro2::Span,
}

impl Src {
    /// The origin of expression `e`.
    pub fn of(e: &syn::Expr) -> Src {
        let raw = quote::ToTokens::to_token_stream(e).to_string();
        let mut text = raw;
        for (from, to) in [
            (" . ", "."),
            (" (", "("),
            ("( ", "("),
            (" )", ")"),
            (" ,", ","),
        ] {
            text = text.replace(from, to);
        }
        // Read at expansion time: a `line!()` spanned to the user's code
        // would be a literal that lints take for the user's own.
        let (file, line, column) = if proc_macro::is_available() {
            let span = syn::spanned::Spanned::span(e).unwrap();
            (span.file(), span.line() as u32, span.column() as u32)
        } else {
            (String::new(), 0, 0)
        };
        Src {
            text,
            file,
            line,
            column,
            span: syn::spanned::Spanned::span(e),
        }
    }
}

/// One graph-building step.
#[derive(Clone, Debug)]
pub enum Step {
    /// `declare_attr` (defines no value).
    DeclareAttr {
        name: String,
        index: bool,
        default: Option<f64>,
    },
    Input {
        name: String,
        ty: TyE,
    },
    Seqs {
        offsets: V,
        truncate: bool,
    },
    Attr {
        name: String,
        dtype: DTy,
    },
    Const {
        value: f64,
        dtype: DTy,
    },
    Unary {
        op: UnaryOp,
        x: V,
    },
    Binary {
        op: BinaryOp,
        a: V,
        b: V,
    },
    /// `x` converted to `to`; no node (the value is `x`) when `from` and `to`
    /// are the same dtype once bound.
    Cast {
        x: V,
        from: DTy,
        to: DTy,
    },
    Select {
        cond: V,
        on_true: V,
        on_false: V,
    },
    /// `a op b`, elementwise: a bool tensor.
    Compare {
        op: CompareOp,
        a: V,
        b: V,
    },
    /// The index along `axis` of each element of a tensor of type `ty`.
    Position {
        axis: usize,
        ty: TyE,
    },
    /// `n_b` of a sequence set as `[B]` integers of `dtype`.
    Lengths {
        seqs: V,
        dtype: DTy,
    },
    Mask {
        pred: Pred,
        ty: TyE,
    },
    Reduce {
        op: ReduceOp,
        x: V,
        axis: usize,
    },
    Softmax {
        x: V,
        axis: usize,
    },
    Rank {
        order: RankOrder,
        x: V,
        axis: usize,
    },
    Shift {
        x: V,
        axis: usize,
        by: i64,
    },
    /// The indices of the `k` best along `axis` (`k` a dim parameter).
    TopK {
        order: RankOrder,
        x: V,
        axis: usize,
        k: Ident,
    },
    Take {
        x: V,
        index: V,
        axis: usize,
    },
    CompleteCumsum {
        x: V,
    },
    Contract {
        a: V,
        a_axes: String,
        b: V,
        b_axes: String,
        out_axes: String,
        dtype: DTy,
        /// The operands' dtype.
        operand: DTy,
        /// `#[jagged_kernel(tf32)]`: f32 operands are rounded to tf32
        /// (`Precision::Tf32`); other dtypes are contracted as they are.
        tf32: bool,
    },
    ToPadded {
        x: V,
    },
    FromPadded {
        x: V,
        seqs: V,
    },
    SeqsWhere {
        mask: V,
    },
    Compact {
        x: V,
        seqs: V,
    },
    SeqsTriu {
        seqs: V,
    },
    PackTriu {
        x: V,
        seqs: V,
    },
    Offsets {
        seqs: V,
        dtype: DTy,
    },
    /// `table.at(index)`: rows of a dense table at integer indices.
    Gather {
        table: V,
        index: V,
    },
    /// `output` (defines no value).
    Output {
        name: String,
        x: V,
    },
}

fn p() -> TokenStream {
    quote!(::jagged::__private)
}

fn dim_tokens(d: DimE) -> TokenStream {
    let p = p();
    match d {
        DimE::Batch => quote!(#p::Dim::Batch),
        DimE::BatchPlusOne => quote!(#p::Dim::BatchPlusOne),
        DimE::MaxLen => quote!(#p::Dim::MaxLen),
        DimE::Ragged(v) => {
            let v = v.ident();
            quote!(#p::Dim::Ragged(#v))
        }
    }
}

fn ty_tokens(ty: &TyE) -> TokenStream {
    let p = p();
    match ty {
        TyE::Dense(dtype, dims, shape) => {
            let (dt, sh) = (dtype.tokens(), shape.tokens());
            let dims = dims.iter().map(|d| dim_tokens(*d));
            quote!(#p::TensorType::dense(#dt, &[#(#dims),*], #sh))
        }
        TyE::Jagged(dtype, seqs, shape) => {
            let (dt, s, sh) = (dtype.tokens(), seqs.ident(), shape.tokens());
            quote!(#p::TensorType::jagged(#dt, #s, #sh))
        }
    }
}

fn variant<T: std::fmt::Debug>(v: T) -> Ident {
    format_ident!("{}", format!("{v:?}"))
}

/// The statements of the generated `graph`, building into `__b`; a step
/// lowered from a body expression records it as its node's origin (with the
/// expression's file, line and column).
pub fn to_tokens(steps: &[Step], origins: &[Option<Src>]) -> Vec<TokenStream> {
    let p = p();
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let call = match step {
                Step::DeclareAttr {
                    name,
                    index,
                    default,
                } => {
                    let (kind, default) = if *index {
                        let d = default.map(|v| {
                            let n = v as usize;
                            quote!(::core::option::Option::Some(#p::AttrValue::Index(#n)))
                        });
                        (quote!(Index), d)
                    } else {
                        let d = default.map(
                            |v| quote!(::core::option::Option::Some(#p::AttrValue::Float(#v))),
                        );
                        (quote!(Float), d)
                    };
                    let default = default.unwrap_or_else(|| quote!(::core::option::Option::None));
                    return quote!(__b.declare_attr(#name, #p::AttrKind::#kind, #default););
                }
                Step::Output { name, x } => {
                    let x = x.ident();
                    return quote!(__b.output(#name, #x););
                }
                Step::Input { name, ty } => {
                    let ty = ty_tokens(ty);
                    quote!(__b.input(#name, #ty))
                }
                Step::Seqs { offsets, truncate } => {
                    let o = offsets.ident();
                    quote!(__b.seqs(#o, #truncate))
                }
                Step::Attr { name, dtype } => {
                    let dt = dtype.tokens();
                    quote!(__b.attr(#name, #dt))
                }
                Step::Const { value, dtype } => {
                    let dt = dtype.tokens();
                    // `quote` cannot print an infinite literal.
                    let value = match *value {
                        v if v == f64::INFINITY => quote!(f64::INFINITY),
                        v if v == f64::NEG_INFINITY => quote!(f64::NEG_INFINITY),
                        v => quote!(#v),
                    };
                    quote!(__b.constant(#value, #dt))
                }
                Step::Unary { op, x } => {
                    let (op, x) = (variant(op), x.ident());
                    quote!(__b.unary(#p::UnaryOp::#op, #x))
                }
                Step::Binary { op, a, b } => {
                    let (op, a, b) = (variant(op), a.ident(), b.ident());
                    quote!(__b.binary(#p::BinaryOp::#op, #a, #b))
                }
                Step::Cast { x, from, to } => {
                    let (x, f, t) = (x.ident(), from.tokens(), to.tokens());
                    quote!(if #f == #t { #x } else { __b.cast(#x, #t) })
                }
                Step::Select {
                    cond,
                    on_true,
                    on_false,
                } => {
                    let (c, t, f) = (cond.ident(), on_true.ident(), on_false.ident());
                    quote!(__b.select(#c, #t, #f))
                }
                Step::Compare { op, a, b } => {
                    let (op, a, b) = (variant(op), a.ident(), b.ident());
                    quote!(__b.compare(#p::CompareOp::#op, #a, #b))
                }
                Step::Position { axis, ty } => {
                    let ty = ty_tokens(ty);
                    quote!(__b.position(#axis, #ty))
                }
                Step::Lengths { seqs, dtype } => {
                    let (s, dt) = (seqs.ident(), dtype.tokens());
                    quote!(__b.lengths(#s, #dt))
                }
                Step::Mask { pred, ty } => {
                    let pred = match pred {
                        Pred::KeyNotAfterQuery => quote!(#p::IndexPredicate::KeyNotAfterQuery),
                        Pred::KeyNotBeforeQuery => {
                            quote!(#p::IndexPredicate::KeyNotBeforeQuery)
                        }
                        Pred::RowInSequence(s) => {
                            let s = s.ident();
                            quote!(#p::IndexPredicate::RowInSequence(#s))
                        }
                    };
                    let ty = ty_tokens(ty);
                    quote!(__b.mask(#pred, #ty))
                }
                Step::Reduce { op, x, axis } => {
                    let (op, x) = (variant(op), x.ident());
                    quote!(__b.reduce(#p::ReduceOp::#op, #x, #axis))
                }
                Step::Softmax { x, axis } => {
                    let x = x.ident();
                    quote!(__b.softmax(#x, #axis))
                }
                Step::Rank { order, x, axis } => {
                    let (order, x) = (variant(order), x.ident());
                    quote!(__b.rank(#p::RankOrder::#order, #x, #axis))
                }
                Step::Shift { x, axis, by } => {
                    let x = x.ident();
                    quote!(__b.shift(#x, #axis, #by))
                }
                Step::TopK { order, x, axis, k } => {
                    let (order, x, k) = (variant(order), x.ident(), param_var(k));
                    quote!(__b.top_k(
                        #p::RankOrder::#order,
                        #p::TopKPart::Indices,
                        #x,
                        #axis,
                        #k
                    ))
                }
                Step::Take { x, index, axis } => {
                    let (x, i) = (x.ident(), index.ident());
                    quote!(__b.take(#x, #i, #axis))
                }
                Step::CompleteCumsum { x } => {
                    let x = x.ident();
                    quote!(__b.scan(#p::ScanMode::Complete, #x, 0))
                }
                Step::Contract {
                    a,
                    a_axes,
                    b,
                    b_axes,
                    out_axes,
                    dtype,
                    operand,
                    tf32,
                } => {
                    let (a, b, dt) = (a.ident(), b.ident(), dtype.tokens());
                    if *tf32 {
                        let op = operand.tokens();
                        quote!(if #op == #p::DType::F32 {
                            __b.contract_tf32(#a, #a_axes, #b, #b_axes, #out_axes, #dt)
                        } else {
                            __b.contract(#a, #a_axes, #b, #b_axes, #out_axes, #dt)
                        })
                    } else {
                        quote!(__b.contract(#a, #a_axes, #b, #b_axes, #out_axes, #dt))
                    }
                }
                Step::ToPadded { x } => {
                    let x = x.ident();
                    quote!(__b.to_padded(#x))
                }
                Step::FromPadded { x, seqs } => {
                    let (x, s) = (x.ident(), seqs.ident());
                    quote!(__b.from_padded(#x, #s))
                }
                Step::SeqsWhere { mask } => {
                    let m = mask.ident();
                    quote!(__b.seqs_where(#m))
                }
                Step::Compact { x, seqs } => {
                    let (x, s) = (x.ident(), seqs.ident());
                    quote!(__b.compact(#x, #s))
                }
                Step::SeqsTriu { seqs } => {
                    let s = seqs.ident();
                    quote!(__b.seqs_triu(#s))
                }
                Step::PackTriu { x, seqs } => {
                    let (x, s) = (x.ident(), seqs.ident());
                    quote!(__b.pack_triu(#x, #s))
                }
                Step::Gather { table, index } => {
                    let (t, i) = (table.ident(), index.ident());
                    quote!(__b.gather(#t, #i))
                }
                Step::Offsets { seqs, dtype } => {
                    let (s, dt) = (seqs.ident(), dtype.tokens());
                    quote!(__b.offsets(#s, #dt))
                }
            };
            let var = V(i).ident();
            match origins.get(i).and_then(Option::as_ref) {
                Some(src) => {
                    let (text, file, line, column) = (&src.text, &src.file, src.line, src.column);
                    quote!(
                        let #var = #call;
                        __b.set_origin(#var, #p::Origin::Expr {
                            text: ::std::string::String::from(#text),
                            file: ::std::string::String::from(#file),
                            line: #line,
                            column: #column,
                        });
                    )
                }
                None => quote!(let #var = #call;),
            }
        })
        .collect()
}

/// Concrete values for a kernel's generic parameters.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    /// Dtype parameters (and `offsets`, the kernel's offsets dtype).
    pub dtypes: HashMap<String, DType>,
    /// Dim parameters.
    pub dims: HashMap<String, usize>,
    /// Shape parameters.
    pub shapes: HashMap<String, Vec<usize>>,
}

impl Bindings {
    fn dtype(&self, d: &DTy) -> Result<DType, String> {
        match d {
            DTy::Named(n) => DType::from_name(n).ok_or_else(|| format!("unknown dtype {n}")),
            DTy::Param(p) => self
                .dtypes
                .get(&p.to_string())
                .copied()
                .ok_or_else(|| format!("no value for the dtype parameter `{p}`")),
            DTy::Acc(inner) => Ok(jagged_ir::typing::accumulator(self.dtype(inner)?)),
            DTy::KernelIndex => self
                .dtypes
                .get("offsets")
                .copied()
                .ok_or_else(|| "no value for the offsets dtype (`offsets = [...]`)".to_string()),
        }
    }

    fn shape(&self, s: &Shape) -> Result<Vec<usize>, String> {
        match s {
            Shape::Dims(dims) => dims
                .iter()
                .map(|d| {
                    self.dims
                        .get(&d.to_string())
                        .copied()
                        .ok_or_else(|| format!("no value for the dim `{d}`"))
                })
                .collect(),
            Shape::Var(v) => self
                .shapes
                .get(&v.to_string())
                .cloned()
                .ok_or_else(|| format!("no value for the shape `{v}`")),
        }
    }
}

/// The node each step made (none for declarations and outputs).
pub type StepNodes = Vec<Option<Handle<Node>>>;

/// Builds the graph named `name` from `steps` with concrete `bindings`;
/// also returns the node of each step, so that an error about a node can be
/// reported at its expression.
pub fn apply(
    name: &str,
    steps: &[Step],
    bindings: &Bindings,
) -> Result<(Graph, StepNodes), String> {
    let mut b = GraphBuilder::new(name);
    let mut values: Vec<Option<Handle<Node>>> = Vec::with_capacity(steps.len());
    let get = |values: &[Option<Handle<Node>>], v: V| {
        values
            .get(v.0)
            .copied()
            .flatten()
            .ok_or_else(|| format!("step {} has no value", v.0))
    };
    let dim = |values: &[Option<Handle<Node>>], d: DimE| -> Result<Dim, String> {
        Ok(match d {
            DimE::Batch => Dim::Batch,
            DimE::BatchPlusOne => Dim::BatchPlusOne,
            DimE::MaxLen => Dim::MaxLen,
            DimE::Ragged(s) => Dim::Ragged(get(values, s)?),
        })
    };
    let ty = |values: &[Option<Handle<Node>>], ty: &TyE| -> Result<TensorType, String> {
        Ok(match ty {
            TyE::Dense(dt, dims, shape) => {
                let dims = dims
                    .iter()
                    .map(|d| dim(values, *d))
                    .collect::<Result<Vec<_>, _>>()?;
                TensorType::dense(bindings.dtype(dt)?, &dims, &bindings.shape(shape)?)
            }
            TyE::Jagged(dt, s, shape) => TensorType::jagged(
                bindings.dtype(dt)?,
                get(values, *s)?,
                &bindings.shape(shape)?,
            ),
        })
    };
    for step in steps {
        let v = |x: V| get(&values, x);
        let value = match step {
            Step::DeclareAttr {
                name,
                index,
                default,
            } => {
                let (kind, default) = if *index {
                    (
                        AttrKind::Index,
                        default.map(|d| AttrValue::Index(d as usize)),
                    )
                } else {
                    (AttrKind::Float, default.map(AttrValue::Float))
                };
                b.declare_attr(name.clone(), kind, default);
                None
            }
            Step::Output { name, x } => {
                b.output(name.clone(), v(*x)?);
                None
            }
            Step::Input { name, ty: t } => Some(b.input(name.clone(), ty(&values, t)?)),
            Step::Seqs { offsets, truncate } => Some(b.seqs(v(*offsets)?, *truncate)),
            Step::Attr { name, dtype } => Some(b.attr(name.clone(), bindings.dtype(dtype)?)),
            Step::Const { value, dtype } => Some(b.constant(*value, bindings.dtype(dtype)?)),
            Step::Unary { op, x } => Some(b.unary(*op, v(*x)?)),
            Step::Binary { op, a, b: rhs } => Some(b.binary(*op, v(*a)?, v(*rhs)?)),
            Step::Cast { x, from, to } => {
                let to = bindings.dtype(to)?;
                if bindings.dtype(from)? == to {
                    Some(v(*x)?)
                } else {
                    Some(b.cast(v(*x)?, to))
                }
            }
            Step::Select {
                cond,
                on_true,
                on_false,
            } => Some(b.select(v(*cond)?, v(*on_true)?, v(*on_false)?)),
            Step::Compare { op, a, b: rhs } => Some(b.compare(*op, v(*a)?, v(*rhs)?)),
            Step::Position { axis, ty: t } => Some(b.position(*axis, ty(&values, t)?)),
            Step::Lengths { seqs, dtype } => Some(b.lengths(v(*seqs)?, bindings.dtype(dtype)?)),
            Step::Mask { pred, ty: t } => {
                let pred = match pred {
                    Pred::KeyNotAfterQuery => IndexPredicate::KeyNotAfterQuery,
                    Pred::KeyNotBeforeQuery => IndexPredicate::KeyNotBeforeQuery,
                    Pred::RowInSequence(s) => IndexPredicate::RowInSequence(v(*s)?),
                };
                Some(b.mask(pred, ty(&values, t)?))
            }
            Step::Reduce { op, x, axis } => Some(b.reduce(*op, v(*x)?, *axis)),
            Step::Softmax { x, axis } => Some(b.softmax(v(*x)?, *axis)),
            Step::Rank { order, x, axis } => Some(b.rank(*order, v(*x)?, *axis)),
            Step::Shift { x, axis, by } => Some(b.shift(v(*x)?, *axis, *by)),
            Step::TopK { order, x, axis, k } => {
                let k = bindings.shape(&Shape::Dims(vec![k.clone()]))?[0];
                Some(b.top_k(*order, TopKPart::Indices, v(*x)?, *axis, k))
            }
            Step::Take { x, index, axis } => Some(b.take(v(*x)?, v(*index)?, *axis)),
            Step::CompleteCumsum { x } => Some(b.scan(ScanMode::Complete, v(*x)?, 0)),
            Step::Contract {
                a,
                a_axes,
                b: rhs,
                b_axes,
                out_axes,
                dtype,
                operand,
                tf32,
            } => {
                let (lhs, rhs, dtype) = (v(*a)?, v(*rhs)?, bindings.dtype(dtype)?);
                if *tf32 && bindings.dtype(operand)? == DType::F32 {
                    Some(b.contract_tf32(lhs, a_axes, rhs, b_axes, out_axes, dtype))
                } else {
                    Some(b.contract(lhs, a_axes, rhs, b_axes, out_axes, dtype))
                }
            }
            Step::ToPadded { x } => Some(b.to_padded(v(*x)?)),
            Step::FromPadded { x, seqs } => Some(b.from_padded(v(*x)?, v(*seqs)?)),
            Step::SeqsWhere { mask } => Some(b.seqs_where(v(*mask)?)),
            Step::Compact { x, seqs } => Some(b.compact(v(*x)?, v(*seqs)?)),
            Step::SeqsTriu { seqs } => Some(b.seqs_triu(v(*seqs)?)),
            Step::PackTriu { x, seqs } => Some(b.pack_triu(v(*x)?, v(*seqs)?)),
            Step::Offsets { seqs, dtype } => Some(b.offsets(v(*seqs)?, bindings.dtype(dtype)?)),
            Step::Gather { table, index } => Some(b.gather(v(*table)?, v(*index)?)),
        };
        values.push(value);
    }
    let graph = b.finish().map_err(|e| e.to_string())?;
    Ok((graph, values))
}
