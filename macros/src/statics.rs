//! Static attributes: `#[attr(static)] causal: bool` and `#[attr(static)]
//! activation: Activation` (any `Copy` enum implementing
//! `jagged::dsl::StaticAttr`). A static attribute is a parameter of
//! `graph(...)` and `launch(...)`, not a run-time attribute of the graph: the
//! body selects with it when the graph is built, `if causal { .. } else { .. }`
//! for a `bool` and `match activation { Activation::Softmax => .., .. }` for an
//! enum, so each value builds its own graph (and so its own cache key).
//!
//! The macro lowers the body once per combination of static values (a
//! `bool`: false and true; an enum: the variants its `match`es name, in order
//! of appearance), type-checking the arms not taken along the way (see
//! `body::branches`), and `graph` selects the combination's statements with
//! nested `if`/`match` on its parameters, which rustc checks for
//! exhaustiveness like the user's own `match`. `specialize(...)` takes values
//! for them (`causal = [false, true]`, `activation = Silu`); a static key left
//! out takes every value.

use std::collections::HashMap;

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Error, Expr, Ident, Pat, Stmt, Type};

use crate::body::{self, Lowered};
use crate::sig::{Param, Signature};
use crate::steps;

/// The value of a static attribute in one combination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaticVal {
    /// A `bool`.
    Bool(bool),
    /// An enum variant, by name (the last segment of its path).
    Variant(String),
    /// An enum that no `match` of the body reads: any value, one graph.
    Any,
}

impl StaticVal {
    /// How messages and the `SPECIALIZED` table spell it.
    pub fn describe(&self) -> String {
        match self {
            StaticVal::Bool(b) => b.to_string(),
            StaticVal::Variant(v) => v.clone(),
            StaticVal::Any => "_".to_string(),
        }
    }
}

/// A static attribute of the kernel and the values the body distinguishes.
pub struct StaticParam {
    /// Its name.
    pub ident: Ident,
    /// The values, each with the variant's path as the body first wrote it
    /// (for the generated `match`; none for a `bool` or `Any`).
    pub domain: Vec<(StaticVal, Option<syn::Path>)>,
}

/// The kernel lowered once per combination of static values.
pub struct Variants {
    /// The static attributes, in declaration order.
    pub params: Vec<StaticParam>,
    /// Each combination (one value per static attribute, in order) and its
    /// lowering; one combination without values when there are none.
    pub lowered: Vec<(Vec<StaticVal>, Lowered)>,
}

impl Variants {
    /// The first lowering (what does not depend on the static values:
    /// whether `graph` takes the offsets dtype, where the offsets go).
    pub fn first(&self) -> &Lowered {
        &self.lowered[0].1
    }
}

/// `T` of a type `Option<T>` (an optional output), if it is one.
pub fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) if a.args.len() == 1 => match &a.args[0] {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

/// `#[attr(static)] name: ty`.
pub fn parse_static_param(
    ident: Ident,
    default: Option<&syn::Lit>,
    ty: &Type,
) -> syn::Result<Param> {
    if let Some(d) = default {
        return Err(Error::new_spanned(
            d,
            "a static attribute has no default: `graph` and `launch` take its value",
        ));
    }
    if ident == "max_len" {
        return Err(Error::new_spanned(
            &ident,
            "`max_len` is a run-time attribute: `#[attr] max_len: usize`",
        ));
    }
    let Type::Path(p) = ty else {
        return Err(Error::new_spanned(
            ty,
            "a static attribute is a `bool` or an enum implementing `jagged::dsl::StaticAttr`",
        ));
    };
    let is_bool = p.qself.is_none() && p.path.is_ident("bool");
    Ok(Param::Static {
        ident,
        ty: ty.clone(),
        is_bool,
    })
}

/// The static attributes of `sig`: name, type, whether a `bool`.
fn declared(sig: &Signature) -> Vec<(&Ident, &Type, bool)> {
    sig.params
        .iter()
        .filter_map(|p| match p {
            Param::Static { ident, ty, is_bool } => Some((ident, ty, *is_bool)),
            _ => None,
        })
        .collect()
}

/// The variant names of the patterns of one `match` arm on a static enum.
pub fn arm_variants(pat: &Pat) -> syn::Result<Vec<syn::Path>> {
    match pat {
        Pat::Path(p) if p.path.segments.len() >= 2 => Ok(vec![p.path.clone()]),
        Pat::Or(o) => {
            let mut all = Vec::new();
            for case in &o.cases {
                all.extend(arm_variants(case)?);
            }
            Ok(all)
        }
        Pat::Paren(p) => arm_variants(&p.pat),
        Pat::Wild(_) => Err(Error::new_spanned(
            pat,
            "a `match` on a static attribute names every variant (`_` would hide which graphs \
             exist)",
        )),
        Pat::Ident(_) | Pat::Path(_) => Err(Error::new_spanned(
            pat,
            "write the variant with its enum's name: `Activation::Softmax`",
        )),
        _ => Err(Error::new_spanned(
            pat,
            "a `match` on a static attribute takes variants without fields: `Activation::Softmax`",
        )),
    }
}

/// The last segment of a variant's path.
pub fn variant_name(path: &syn::Path) -> String {
    path.segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default()
}

/// Collects the variants that `match`es on the static enum `name` list.
fn walk_expr(
    e: &Expr,
    enums: &[&Ident],
    found: &mut HashMap<String, Vec<syn::Path>>,
) -> syn::Result<()> {
    let mut sub = |e: &Expr| walk_expr(e, enums, found);
    match e {
        Expr::Match(m) => {
            if let Expr::Path(p) = &*m.expr
                && let Some(ident) = p.path.get_ident()
                && enums.contains(&ident)
            {
                for arm in &m.arms {
                    for path in arm_variants(&arm.pat)? {
                        let list = found.entry(ident.to_string()).or_default();
                        if !list.iter().any(|q| variant_name(q) == variant_name(&path)) {
                            list.push(path);
                        }
                    }
                }
            }
            walk_expr(&m.expr, enums, found)?;
            for arm in &m.arms {
                walk_expr(&arm.body, enums, found)?;
            }
            Ok(())
        }
        Expr::If(i) => {
            walk_expr(&i.cond, enums, found)?;
            walk_block(&i.then_branch, enums, found)?;
            match &i.else_branch {
                Some((_, e)) => walk_expr(e, enums, found),
                None => Ok(()),
            }
        }
        Expr::Block(b) => walk_block(&b.block, enums, found),
        Expr::MethodCall(m) => {
            sub(&m.receiver)?;
            m.args.iter().try_for_each(sub)
        }
        Expr::Call(c) => c.args.iter().try_for_each(sub),
        Expr::Binary(b) => {
            sub(&b.left)?;
            sub(&b.right)
        }
        Expr::Unary(u) => sub(&u.expr),
        Expr::Paren(p) => sub(&p.expr),
        Expr::Group(g) => sub(&g.expr),
        Expr::Cast(c) => sub(&c.expr),
        Expr::Tuple(t) => t.elems.iter().try_for_each(sub),
        _ => Ok(()),
    }
}

fn walk_block(
    b: &syn::Block,
    enums: &[&Ident],
    found: &mut HashMap<String, Vec<syn::Path>>,
) -> syn::Result<()> {
    for stmt in &b.stmts {
        match stmt {
            Stmt::Local(l) => {
                if let Some(init) = &l.init {
                    walk_expr(&init.expr, enums, found)?;
                }
            }
            Stmt::Expr(e, _) => walk_expr(e, enums, found)?,
            _ => {}
        }
    }
    Ok(())
}

/// The static attributes of `sig` with the values `block` distinguishes.
fn domains(sig: &Signature, block: &syn::Block) -> syn::Result<Vec<StaticParam>> {
    let statics = declared(sig);
    let enums: Vec<&Ident> = statics
        .iter()
        .filter(|(_, _, b)| !b)
        .map(|(i, ..)| *i)
        .collect();
    let mut found = HashMap::new();
    walk_block(block, &enums, &mut found)?;
    Ok(statics
        .into_iter()
        .map(|(ident, _, is_bool)| {
            let domain = if is_bool {
                vec![
                    (StaticVal::Bool(false), None),
                    (StaticVal::Bool(true), None),
                ]
            } else {
                match found.remove(&ident.to_string()) {
                    Some(paths) => paths
                        .into_iter()
                        .map(|p| (StaticVal::Variant(variant_name(&p)), Some(p)))
                        .collect(),
                    None => vec![(StaticVal::Any, None)],
                }
            };
            StaticParam {
                ident: ident.clone(),
                domain,
            }
        })
        .collect())
}

/// Every combination of the domains, the first attribute varying slowest.
pub fn combinations(params: &[StaticParam]) -> Vec<Vec<StaticVal>> {
    let mut combos = vec![Vec::new()];
    for p in params {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                p.domain.iter().map(move |(v, _)| {
                    let mut c = c.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect();
    }
    combos
}

/// Lowers the kernel once per combination of its static values.
pub fn lower_all(sig: &Signature, block: &syn::Block, outputs: &[Ident]) -> syn::Result<Variants> {
    let params = domains(sig, block)?;
    let mut lowered = Vec::new();
    for combo in combinations(&params) {
        let values: HashMap<String, StaticVal> = params
            .iter()
            .zip(&combo)
            .map(|(p, v)| (p.ident.to_string(), v.clone()))
            .collect();
        let l = body::lower_static(sig, block, outputs, values)?;
        lowered.push((combo, l));
    }
    Ok(Variants { params, lowered })
}

/// The statements of `graph` that build the graph: the combination's steps,
/// selected by nested `if`/`match` on the static parameters.
pub fn graph_body(v: &Variants) -> TokenStream {
    fn select(v: &Variants, depth: usize, prefix: &[StaticVal]) -> TokenStream {
        if depth == v.params.len() {
            let Some((_, l)) = v.lowered.iter().find(|(c, _)| c == prefix) else {
                return quote!(::core::unreachable!());
            };
            let stmts = steps::to_tokens(&l.steps, &l.origins);
            return quote!({ #(#stmts)* });
        }
        let param = &v.params[depth];
        let var = &param.ident;
        let branch = |value: &StaticVal| {
            let mut prefix = prefix.to_vec();
            prefix.push(value.clone());
            select(v, depth + 1, &prefix)
        };
        match param.domain.as_slice() {
            [(StaticVal::Any, _)] => branch(&StaticVal::Any),
            [(StaticVal::Bool(_), _), ..] => {
                let (t, f) = (
                    branch(&StaticVal::Bool(true)),
                    branch(&StaticVal::Bool(false)),
                );
                quote!(if #var { #t } else { #f })
            }
            domain => {
                let arms = domain.iter().map(|(value, path)| {
                    let body = branch(value);
                    quote!(#path => { #body })
                });
                quote!(match #var { #(#arms)* })
            }
        }
    }
    select(v, 0, &[])
}

/// `graph`'s (and `launch`'s) parameters for the static attributes.
pub fn params(sig: &Signature) -> Vec<TokenStream> {
    declared(sig)
        .into_iter()
        .map(|(ident, ty, _)| quote!(#ident: #ty))
        .collect()
}

/// The static attributes' names, as `graph`'s arguments.
pub fn args(sig: &Signature) -> Vec<TokenStream> {
    declared(sig)
        .into_iter()
        .map(|(ident, ..)| quote!(#ident))
        .collect()
}

/// Whether the kernel has a static enum attribute (then the generated module
/// imports its parent's names, for the enum's type and variants).
pub fn has_enum(sig: &Signature) -> bool {
    declared(sig).iter().any(|(_, _, b)| !b)
}

/// Checks that each static enum's type implements `jagged::dsl::StaticAttr`
/// (statements for `graph`, reported at the declared type).
pub fn bound_checks(sig: &Signature) -> Vec<TokenStream> {
    declared(sig)
        .into_iter()
        .filter(|(_, _, b)| !b)
        .map(|(ident, ty, _)| {
            quote_spanned! {syn::spanned::Spanned::span(ty)=>
                {
                    fn __static_attr<A: ::jagged::dsl::StaticAttr>(_: &A) {}
                    __static_attr(&#ident);
                }
            }
        })
        .collect()
}

/// The value of a `specialize(...)` key for a static attribute: `true`,
/// `false`, or a variant (`Silu`, `Activation::Silu`) of its domain.
pub fn spec_value(param: &StaticParam, e: &Expr) -> syn::Result<StaticVal> {
    let names: Vec<String> = param.domain.iter().map(|(v, _)| v.describe()).collect();
    let wanted = || {
        Error::new_spanned(
            e,
            format!(
                "`{}` takes {} here (the values the body distinguishes)",
                param.ident,
                names.join(" or ")
            ),
        )
    };
    let value = match e {
        Expr::Lit(l) => match &l.lit {
            syn::Lit::Bool(b) => StaticVal::Bool(b.value),
            _ => return Err(wanted()),
        },
        Expr::Path(p) => StaticVal::Variant(variant_name(&p.path)),
        _ => return Err(wanted()),
    };
    if matches!(param.domain.as_slice(), [(StaticVal::Any, _)]) {
        return Ok(StaticVal::Any);
    }
    if param.domain.iter().any(|(v, _)| *v == value) {
        Ok(value)
    } else {
        Err(wanted())
    }
}
