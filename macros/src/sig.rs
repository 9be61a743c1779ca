//! The kernel's signature: generic parameters (dtypes, dims, shapes), tensor
//! parameters, `#[attr]` attributes and the returned tensors.

use jagged_ir::DType;
use jagged_ir::typing::accumulator;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Error, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, Type};

/// The kinds of tensor the DSL knows (the types of `jagged::dsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Jagged<T, S>`: `values [T, S...]` on the kernel's sequences.
    Jagged,
    /// `PerSeq<T, S>`: one row per sequence, `[B, S...]`.
    PerSeq,
    /// `Padded<T, S>`: `[B, N, S...]`.
    Padded,
    /// Per sequence `[n_b, n_b, S...]` (query row, key row): `q.dot(k)`.
    Pairs,
    /// `Lengths<I>`: `[B]` integers.
    Lengths,
    /// `Offsets<I>`: `[B+1]` integers.
    Offsets,
    /// `Dense<T, S>`: `[S...]`, static inner dims only (a weight vector or
    /// matrix), broadcast against any other kind.
    Dense,
}

impl Kind {
    /// The DSL's name of the kind (for messages).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Jagged => "Jagged",
            Kind::PerSeq => "PerSeq",
            Kind::Padded => "Padded",
            Kind::Pairs => "Pairs",
            Kind::Lengths => "Lengths",
            Kind::Offsets => "Offsets",
            Kind::Dense => "Dense",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        [
            Kind::Jagged,
            Kind::PerSeq,
            Kind::Padded,
            Kind::Lengths,
            Kind::Offsets,
            Kind::Dense,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A dtype as the macro knows it: by name, or symbolically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DTy {
    /// A concrete dtype (`f32`, `bf16`, `i64`, `bool`, ...; jagged_ir's names).
    Named(String),
    /// A generic parameter of the kernel (`T`), given to `graph(...)`.
    Param(Ident),
    /// The accumulator dtype of a dtype (f64 for f64, else f32): contractions.
    Acc(Box<DTy>),
    /// The dtype of the kernel's offsets (`Offsets` without an argument).
    KernelIndex,
}

/// The dtype names of jagged_ir, which are also Rust type names in `jagged::dsl`.
const DTYPES: [(&str, &str); 8] = [
    ("f64", "F64"),
    ("f32", "F32"),
    ("f16", "F16"),
    ("bf16", "BF16"),
    ("i32", "I32"),
    ("i64", "I64"),
    ("u8", "U8"),
    ("bool", "Bool"),
];

impl DTy {
    /// How messages spell it.
    pub fn describe(&self) -> String {
        match self {
            DTy::Named(n) => n.clone(),
            DTy::Param(p) => p.to_string(),
            DTy::Acc(inner) => format!("the accumulator dtype of {}", inner.describe()),
            DTy::KernelIndex => "the offsets dtype".to_string(),
        }
    }

    /// An expression of type `DType` in the generated `graph` function.
    pub fn tokens(&self) -> TokenStream {
        match self {
            DTy::Named(n) => {
                let variant = DTYPES
                    .iter()
                    .find(|(name, _)| name == n)
                    .map(|(_, v)| format_ident!("{}", v))
                    .unwrap_or_else(|| format_ident!("F32"));
                quote!(::jagged::__private::DType::#variant)
            }
            DTy::Param(p) => {
                let v = param_var(p);
                quote!(#v)
            }
            DTy::Acc(inner) => {
                let inner = inner.tokens();
                quote!(::jagged::__private::accumulator(#inner))
            }
            DTy::KernelIndex => quote!(__offsets_dtype),
        }
    }

    /// The accumulator dtype of this dtype (what `dot` and positions give):
    /// f64 for f64, f32 for the other named dtypes, itself when it already is
    /// one, symbolic for a parameter.
    pub fn acc(&self) -> DTy {
        match self {
            DTy::Named(_) | DTy::KernelIndex => {
                // jagged_ir's rule, the same for every dtype it may stand for.
                let accs: Vec<DType> = self
                    .possible()
                    .unwrap_or_default()
                    .into_iter()
                    .map(accumulator)
                    .collect();
                match accs.split_first() {
                    Some((first, rest)) if rest.iter().all(|a| a == first) => {
                        DTy::Named(first.name().to_string())
                    }
                    _ => DTy::Acc(Box::new(self.clone())),
                }
            }
            DTy::Acc(_) => self.clone(),
            DTy::Param(_) => DTy::Acc(Box::new(self.clone())),
        }
    }

    /// The dtypes this may stand for when `graph` runs: one for a named
    /// dtype, i32 or i64 for the offsets dtype, f32 or f64 for an
    /// accumulator; `None` (any) for a dtype parameter.
    pub fn possible(&self) -> Option<Vec<DType>> {
        match self {
            DTy::Named(n) => Some(DType::from_name(n).into_iter().collect()),
            DTy::KernelIndex => Some(vec![DType::I32, DType::I64]),
            DTy::Acc(inner) => Some(match inner.possible() {
                Some(ds) => {
                    let mut accs: Vec<DType> = ds.into_iter().map(accumulator).collect();
                    accs.sort();
                    accs.dedup();
                    accs
                }
                None => vec![DType::F64, DType::F32],
            }),
            DTy::Param(_) => None,
        }
    }

    /// Whether the dtype is known not to be a float (then float math is an error).
    pub fn is_known_non_float(&self) -> bool {
        matches!(self, DTy::Named(n) if !matches!(n.as_str(), "f64" | "f32" | "f16" | "bf16"))
    }
}

/// The inner dims of a tensor: named dims, or a shape parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `(H, D)`, `(D,)`, `()`: one static dim per generic parameter.
    Dims(Vec<Ident>),
    /// `S`: a shape parameter (any number of inner dims, given to `graph`).
    Var(Ident),
}

impl Shape {
    /// How messages spell it.
    pub fn describe(&self) -> String {
        match self {
            Shape::Dims(d) if d.len() == 1 => format!("({},)", d[0]),
            Shape::Dims(d) => {
                let names: Vec<String> = d.iter().map(ToString::to_string).collect();
                format!("({})", names.join(", "))
            }
            Shape::Var(v) => v.to_string(),
        }
    }

    /// Whether there are no inner dims.
    pub fn is_empty(&self) -> bool {
        matches!(self, Shape::Dims(d) if d.is_empty())
    }

    /// An expression of type `&[usize]` in the generated `graph` function.
    pub fn tokens(&self) -> TokenStream {
        match self {
            Shape::Dims(d) => {
                let vars = d.iter().map(param_var);
                quote!(&[#(#vars),*][..])
            }
            Shape::Var(v) => {
                let v = param_var(v);
                quote!(#v)
            }
        }
    }
}

/// The variable of `graph(...)` that holds a generic parameter's value.
pub fn param_var(generic: &Ident) -> Ident {
    Ident::new(&generic.to_string().to_lowercase(), generic.span())
}

/// A tensor type of the DSL.
#[derive(Clone, Debug)]
pub struct TensorTy {
    /// Its kind.
    pub kind: Kind,
    /// Its dtype.
    pub dtype: DTy,
    /// Its inner dims.
    pub shape: Shape,
}

impl TensorTy {
    /// How messages spell it.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Lengths | Kind::Offsets => {
                format!("{}<{}>", self.kind.name(), self.dtype.describe())
            }
            _ => format!(
                "{}<{}, {}>",
                self.kind.name(),
                self.dtype.describe(),
                self.shape.describe()
            ),
        }
    }
}

/// What a generic parameter stands for, from how the signature uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A dtype (`graph` takes a `DType`).
    Dtype,
    /// One static dim (`graph` takes a `usize`).
    Dim,
    /// A list of inner dims (`graph` takes a `&[usize]`).
    Shape,
}

/// A generic parameter of the kernel.
pub struct Generic {
    /// Its name.
    pub ident: Ident,
    /// Its role, once used.
    pub role: Option<Role>,
    /// `Float` or `Index` bound, checked by `graph` against the dtype given.
    pub class: Option<Ident>,
}

/// A scalar attribute's kind (jagged_ir's `AttrKind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// `usize`.
    Index,
    /// `f32` or `f64`.
    Float,
}

/// A parameter of the kernel.
pub enum Param {
    /// A tensor input.
    Tensor {
        /// Its name (also the graph input's name).
        ident: Ident,
        /// Its type.
        ty: TensorTy,
    },
    /// A scalar attribute, `#[attr] name: ty` or `#[attr(default = v)] name: ty`.
    Attr {
        /// Its name (also the graph attribute's name).
        ident: Ident,
        /// Index or float.
        kind: AttrKind,
        /// The declared Rust type (`usize`, `f32`, `f64`): `launch` takes it.
        rust_ty: Ident,
        /// The default value, if any.
        default: Option<syn::Lit>,
    },
    /// A static attribute, `#[attr(static)] name: bool` or `#[attr(static)]
    /// name: SomeEnum`: a parameter of `graph(...)` that selects between the
    /// branches of `if name { .. } else { .. }` / `match name { .. }` when the
    /// graph is built (see `statics`), not a run-time attribute.
    Static {
        /// Its name.
        ident: Ident,
        /// Its declared Rust type (`bool`, or an enum's path).
        ty: Type,
        /// Whether it is a `bool` (else an enum).
        is_bool: bool,
    },
}

impl Param {
    /// The parameter's name.
    pub fn ident(&self) -> &Ident {
        match self {
            Param::Tensor { ident, .. }
            | Param::Attr { ident, .. }
            | Param::Static { ident, .. } => ident,
        }
    }
}

/// An output of the kernel: its declared type.
pub struct OutputDecl {
    /// Its declared type.
    pub ty: TensorTy,
    /// Declared `Option<...>`: present in the graphs of some static
    /// attribute values only (the body gives `Some(x)` or `None`).
    pub optional: bool,
}

/// The parsed signature.
pub struct Signature {
    /// Generic parameters, in declaration order.
    pub generics: Vec<Generic>,
    /// Parameters, in declaration order.
    pub params: Vec<Param>,
    /// Returned tensors, in order.
    pub outputs: Vec<OutputDecl>,
}

impl Signature {
    /// Whether the kernel declares `#[attr] max_len` (sequences are truncated).
    pub fn has_max_len(&self) -> bool {
        self.params
            .iter()
            .any(|p| matches!(p, Param::Attr { ident, .. } if ident == "max_len"))
    }

    /// The generic parameters that `graph(...)` takes, with their roles.
    pub fn graph_params(&self) -> impl Iterator<Item = (&Ident, Role)> {
        self.generics
            .iter()
            .filter_map(|g| g.role.map(|r| (&g.ident, r)))
    }
}

/// Parses and checks the signature of `func`.
pub fn parse(func: &ItemFn) -> syn::Result<Signature> {
    let s = &func.sig;
    if let Some(t) = &s.asyncness {
        return Err(Error::new_spanned(t, "a jagged kernel cannot be `async`"));
    }
    if let Some(t) = &s.unsafety {
        return Err(Error::new_spanned(t, "a jagged kernel cannot be `unsafe`"));
    }
    if let Some(t) = &s.constness {
        return Err(Error::new_spanned(t, "a jagged kernel cannot be `const`"));
    }
    let mut generics = Vec::new();
    for g in &s.generics.params {
        match g {
            GenericParam::Type(t) => {
                let class = t.bounds.iter().find_map(|b| match b {
                    syn::TypeParamBound::Trait(tb) => tb
                        .path
                        .get_ident()
                        .filter(|i| *i == "Float" || *i == "Index")
                        .cloned(),
                    _ => None,
                });
                generics.push(Generic {
                    ident: t.ident.clone(),
                    role: None,
                    class,
                });
            }
            other => {
                return Err(Error::new_spanned(
                    other,
                    "a jagged kernel's generic parameters are types: dtypes (`T`), dims (`D`) or shapes (`S`)",
                ));
            }
        }
    }
    let mut sig = Signature {
        generics,
        params: Vec::new(),
        outputs: Vec::new(),
    };
    for input in &s.inputs {
        let FnArg::Typed(pt) = input else {
            return Err(Error::new_spanned(
                input,
                "a jagged kernel is a free function: no `self`",
            ));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(Error::new_spanned(
                &pt.pat,
                "a kernel parameter is a plain name",
            ));
        };
        let ident = pi.ident.clone();
        let attr = pt.attrs.iter().find(|a| a.path().is_ident("attr"));
        let param = match attr {
            Some(attr) => parse_attr_param(ident, attr, &pt.ty)?,
            None => Param::Tensor {
                ty: parse_tensor_type(&mut sig, &pt.ty)?,
                ident,
            },
        };
        if sig.params.iter().any(|p| p.ident() == param.ident()) {
            return Err(Error::new(param.ident().span(), "duplicate parameter name"));
        }
        sig.params.push(param);
    }
    match &s.output {
        syn::ReturnType::Default => {
            return Err(Error::new_spanned(
                &s.ident,
                "a jagged kernel returns a tensor, or a tuple of tensors",
            ));
        }
        syn::ReturnType::Type(_, ty) => {
            let types: Vec<&Type> = match &**ty {
                Type::Tuple(t) => t.elems.iter().collect(),
                other => vec![other],
            };
            if types.is_empty() {
                return Err(Error::new_spanned(
                    ty,
                    "a jagged kernel returns a tensor, or a tuple of tensors",
                ));
            }
            for t in types {
                let (t, optional) = match crate::statics::option_inner(t) {
                    Some(inner) => (inner, true),
                    None => (t, false),
                };
                let parsed = parse_tensor_type(&mut sig, t)?;
                sig.outputs.push(OutputDecl {
                    ty: parsed,
                    optional,
                });
            }
        }
    }
    for g in &sig.generics {
        if g.class.is_some() && g.role.is_some_and(|r| r != Role::Dtype) {
            return Err(Error::new_spanned(
                &g.ident,
                format!("`{}` has a dtype bound but is used as a dim", g.ident),
            ));
        }
        let lower = g.ident.to_string().to_lowercase();
        if matches!(lower.as_str(), "offsets" | "graph" | "runtime") {
            return Err(Error::new_spanned(
                &g.ident,
                "this generic name clashes with a parameter of the generated `graph`",
            ));
        }
        // `graph(...)` takes the generic's value as a parameter named in
        // lower case: a kernel parameter of that name would shadow it.
        if let Some(p) = sig.params.iter().find(|p| p.ident() == lower.as_str()) {
            return Err(Error::new_spanned(
                p.ident(),
                format!(
                    "the parameter `{lower}` clashes with the generic `{}`, which the \
                     generated `graph` takes as `{lower}`: rename one of them",
                    g.ident
                ),
            ));
        }
    }
    Ok(sig)
}

fn parse_attr_param(ident: Ident, attr: &syn::Attribute, ty: &Type) -> syn::Result<Param> {
    let mut default = None;
    let mut is_static = false;
    if !matches!(attr.meta, syn::Meta::Path(_)) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("default") {
                default = Some(meta.value()?.parse::<syn::Lit>()?);
                Ok(())
            } else if meta.path.is_ident("static") {
                is_static = true;
                Ok(())
            } else {
                Err(meta.error("expected `default = <number>` or `static`"))
            }
        })?;
    }
    if is_static {
        return crate::statics::parse_static_param(ident, default.as_ref(), ty);
    }
    let rust_ty = match ty {
        Type::Path(p) => p.path.get_ident().cloned(),
        _ => None,
    };
    let kind = match rust_ty.as_ref().map(ToString::to_string).as_deref() {
        Some("usize") => AttrKind::Index,
        Some("f32" | "f64") => AttrKind::Float,
        _ => {
            return Err(Error::new_spanned(
                ty,
                "an `#[attr]` parameter is a `usize` (an index such as `max_len`) or an `f32`/`f64`",
            ));
        }
    };
    if ident == "max_len" && kind != AttrKind::Index {
        return Err(Error::new_spanned(ty, "`max_len` is a `usize`"));
    }
    let rust_ty = rust_ty.unwrap_or_else(|| Ident::new("usize", ident.span()));
    Ok(Param::Attr {
        ident,
        kind,
        rust_ty,
        default,
    })
}

/// Records that the generic `ident` plays `role`; errors on an unknown name or
/// a second role.
fn use_generic(sig: &mut Signature, ident: &Ident, role: Role) -> syn::Result<()> {
    let Some(g) = sig.generics.iter_mut().find(|g| g.ident == *ident) else {
        let what = match role {
            Role::Dtype => "dtype",
            Role::Dim => "dim",
            Role::Shape => "shape",
        };
        return Err(Error::new_spanned(
            ident,
            format!("unknown {what} `{ident}`: declare it as a generic parameter of the kernel"),
        ));
    };
    match g.role {
        Some(r) if r != role => Err(Error::new_spanned(
            ident,
            format!("`{ident}` is used both as a {r:?} and as a {role:?}").to_lowercase(),
        )),
        _ => {
            g.role = Some(role);
            Ok(())
        }
    }
}

fn single_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.get_ident(),
        _ => None,
    }
}

fn parse_dtype(sig: &mut Signature, ty: &Type) -> syn::Result<DTy> {
    let Some(ident) = single_ident(ty) else {
        return Err(Error::new_spanned(
            ty,
            "a dtype is a name: f32, f64, f16, bf16, i32, i64, u8, bool or a generic parameter",
        ));
    };
    let name = ident.to_string();
    if DTYPES.iter().any(|(n, _)| *n == name) {
        return Ok(DTy::Named(name));
    }
    use_generic(sig, ident, Role::Dtype)?;
    Ok(DTy::Param(ident.clone()))
}

fn parse_shape(sig: &mut Signature, ty: &Type) -> syn::Result<Shape> {
    match ty {
        Type::Tuple(t) => {
            let mut dims = Vec::new();
            for e in &t.elems {
                let Some(ident) = single_ident(e) else {
                    return Err(Error::new_spanned(
                        e,
                        "a dim is a generic parameter's name (`H`, `D`)",
                    ));
                };
                use_generic(sig, ident, Role::Dim)?;
                dims.push(ident.clone());
            }
            Ok(Shape::Dims(dims))
        }
        Type::Paren(p) => Err(Error::new_spanned(
            p,
            "a one-dim shape is written as a tuple with a trailing comma: `(D,)`",
        )),
        other => match single_ident(other) {
            Some(ident) => {
                use_generic(sig, ident, Role::Shape)?;
                Ok(Shape::Var(ident.clone()))
            }
            None => Err(Error::new_spanned(
                other,
                "a shape is a tuple of dims (`(H, D)`, `(D,)`, `()`) or a shape parameter (`S`)",
            )),
        },
    }
}

/// Parses `Jagged<T, S>`, `PerSeq<T, S>`, `Padded<T, S>`, `Dense<T, S>`,
/// `Lengths<I>`, `Offsets<I>`, `Offsets`.
fn parse_tensor_type(sig: &mut Signature, ty: &Type) -> syn::Result<TensorTy> {
    let unknown = || {
        Error::new_spanned(
            ty,
            "a kernel parameter is a DSL tensor (`Jagged<T, S>`, `PerSeq<T, S>`, `Padded<T, S>`, \
             `Dense<T, S>`, `Lengths<I>`, `Offsets<I>`) or an `#[attr]` scalar",
        )
    };
    let Type::Path(p) = ty else {
        return Err(unknown());
    };
    let Some(last) = p.path.segments.last() else {
        return Err(unknown());
    };
    let Some(kind) = Kind::from_name(&last.ident.to_string()) else {
        return Err(unknown());
    };
    let args: Vec<&Type> = match &last.arguments {
        PathArguments::None => Vec::new(),
        PathArguments::AngleBracketed(a) => {
            let mut out = Vec::new();
            for arg in &a.args {
                match arg {
                    GenericArgument::Type(t) => out.push(t),
                    other => {
                        return Err(Error::new_spanned(other, "expected a dtype or a shape"));
                    }
                }
            }
            out
        }
        PathArguments::Parenthesized(_) => return Err(unknown()),
    };
    let arity_error =
        |expected: &str| Error::new_spanned(last, format!("`{}` takes {expected}", kind.name()));
    match kind {
        Kind::Lengths | Kind::Offsets => {
            let dtype = match (kind, args.as_slice()) {
                (_, [t]) => parse_dtype(sig, t)?,
                (Kind::Offsets, []) => DTy::KernelIndex,
                _ => return Err(arity_error("one dtype: `<I>`")),
            };
            Ok(TensorTy {
                kind,
                dtype,
                shape: Shape::Dims(Vec::new()),
            })
        }
        _ => {
            let (dtype, shape) = match args.as_slice() {
                [t] => (parse_dtype(sig, t)?, Shape::Dims(Vec::new())),
                [t, s] => (parse_dtype(sig, t)?, parse_shape(sig, s)?),
                _ => return Err(arity_error("a dtype and a shape: `<T, (H, D)>`")),
            };
            Ok(TensorTy { kind, dtype, shape })
        }
    }
}
