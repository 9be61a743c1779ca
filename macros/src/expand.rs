//! Assembles the macro's output: the user's function and its sibling module.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, Ident, ItemFn};

use crate::sig::{AttrKind, DTy, Kind, Param, Role, Shape, Signature, param_var};
use crate::{args, body, sig, specialize, statics};

/// The whole expansion: the user's item, then the module or the error.
pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#item #e);
        }
    };
    match module(attr, &func) {
        Ok(m) => {
            let emitted = user_item(&func, false);
            quote!(#emitted #m)
        }
        Err(e) => {
            let emitted = user_item(&func, true);
            let e = e.to_compile_error();
            quote!(#emitted #e)
        }
    }
}

/// The user's function, without the DSL's `#[attr]` markers (rustc would not
/// know them). It type-checks against `jagged::dsl`'s phantom types and is
/// never called: the module's `graph` is the kernel's meaning. Its value is
/// checked for the declared kind and shape, not dtype (the phantom types do
/// not track the accumulator dtype; the macro checks dtypes). When the macro
/// has reported an error (`rejected`), the body is left out (the signature
/// stays, for the code that names the function): rustc would report the
/// same mistake again against the phantom types (an unknown method twice).
fn user_item(func: &ItemFn, rejected: bool) -> TokenStream {
    let mut func = func.clone();
    let block = &func.block;
    let body: syn::Block = if rejected {
        syn::parse_quote!({ ::core::unreachable!("rejected by #[jagged_kernel]") })
    } else {
        // The body is returned through `jagged::dsl::__output`: the declared
        // kind and shape, any dtype (the macro has checked the dtype).
        syn::parse_quote!({ ::jagged::dsl::__output(#block) })
    };
    *func.block = body;
    for input in &mut func.sig.inputs {
        if let FnArg::Typed(pt) = input {
            pt.attrs.retain(|a| !a.path().is_ident("attr"));
        }
    }
    quote! {
        #[allow(dead_code, unused_variables, clippy::too_many_arguments, clippy::type_complexity)]
        #func
    }
}

fn module(attr: TokenStream, func: &ItemFn) -> syn::Result<TokenStream> {
    let args = args::parse(attr)?;
    let sig = sig::parse(func)?;
    let fn_name = &func.sig.ident;
    let names: Vec<Ident> = match &args.outputs {
        Some((span, names)) => {
            if names.len() != sig.outputs.len() {
                return Err(syn::Error::new(
                    *span,
                    format!(
                        "{} output name(s) for {} returned tensor(s)",
                        names.len(),
                        sig.outputs.len()
                    ),
                ));
            }
            names.clone()
        }
        None if sig.outputs.len() == 1 => vec![format_ident!("out")],
        None => {
            return Err(syn::Error::new(
                fn_name.span(),
                "a kernel with several outputs names them: `#[jagged_kernel(outputs(a, b))]`",
            ));
        }
    };
    let mut variants = statics::lower_all(&sig, &func.block, &names)?;
    if args.tf32 {
        for (_, lowered) in &mut variants.lowered {
            for step in &mut lowered.steps {
                if let crate::steps::Step::Contract { tf32, .. } = step {
                    *tf32 = true;
                }
            }
        }
    }
    let lowered = variants.first();
    let graph_name = args
        .name
        .as_ref()
        .map_or_else(|| fn_name.to_string(), syn::LitStr::value);

    let p = quote!(::jagged::__private);
    let mut params = Vec::new();
    let mut checks = Vec::new();
    for (g, role) in sig.graph_params() {
        let var = param_var(g);
        params.push(match role {
            Role::Dtype => quote!(#var: #p::DType),
            Role::Dim => quote!(#var: usize),
            Role::Shape => quote!(#var: &[usize]),
        });
    }
    for g in &sig.generics {
        if let Some(class) = &g.class {
            let var = param_var(&g.ident);
            let name = g.ident.to_string();
            let class = format_ident!("{}", class.to_string());
            checks.push(quote!(#p::check_dtype(#name, #var, #p::DTypeClass::#class)?;));
        }
    }
    params.extend(statics::params(&sig));
    checks.extend(statics::bound_checks(&sig));
    let offsets_binding = if lowered.takes_offsets_dtype {
        params.push(quote!(offsets: #p::DType));
        quote!(let __offsets_dtype = offsets;)
    } else {
        quote!()
    };
    let build = statics::graph_body(&variants);
    let table = specialize::table(args.specialize.as_ref(), &sig, &variants, &graph_name)?;
    let launch = launcher(&sig, lowered, &names);
    // A static enum's type and variants are named as in the kernel's module.
    let import = if statics::has_enum(&sig) {
        quote!(
            #[allow(unused_imports)]
            use super::*;
        )
    } else {
        quote!()
    };
    let vis = &func.vis;
    let mod_doc = format!("The graph of the `#[jagged_kernel]` `{fn_name}`.");
    let graph_doc = format!(
        "Builds the `{graph_name}` graph for the given dtypes, dims and shapes (one \
         argument per generic parameter, lower-cased{}{}).",
        if statics::params(&sig).is_empty() {
            ""
        } else {
            ", then the static attributes"
        },
        if lowered.takes_offsets_dtype {
            ", then the offsets dtype"
        } else {
            ""
        }
    );
    Ok(quote! {
        #[doc = #mod_doc]
        #vis mod #fn_name {
            #import

            #[doc = #graph_doc]
            #[allow(clippy::let_and_return, clippy::too_many_arguments, unused_variables)]
            pub fn graph(#(#params),*) -> ::core::result::Result<#p::Graph, #p::KernelError> {
                #(#checks)*
                #offsets_binding
                let mut __b = #p::GraphBuilder::new(#graph_name);
                #build
                ::core::result::Result::Ok(__b.finish()?)
            }

            /// The ahead-of-time specializations of `specialize(...)` (graph
            /// text, spec, compiled kernel), preloaded by `launch`.
            pub const SPECIALIZED: &[#p::Specialized] = #table;

            #launch
        }
    })
}

/// The number of leading (run-time) dims of a tensor kind's device shape.
fn lead_dims(kind: Kind) -> usize {
    match kind {
        Kind::Padded => 2,
        Kind::Dense => 0,
        _ => 1,
    }
}

/// The device shape of a tensor parameter of type `ty`, for the docs.
fn device_shape(kind: Kind, shape: &Shape) -> String {
    let inner = match shape {
        Shape::Dims(d) => d.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Shape::Var(v) => vec![format!("{v}...")],
    };
    let lead: &[&str] = match kind {
        Kind::Jagged => &["T"],
        Kind::PerSeq | Kind::Lengths => &["B"],
        Kind::Padded => &["B", "N"],
        Kind::Offsets => &["B+1"],
        Kind::Pairs => &["n_b", "n_b"],
        Kind::Dense => &[],
    };
    let all: Vec<String> = lead.iter().map(|s| s.to_string()).chain(inner).collect();
    format!("[{}]", all.join(", "))
}

/// The `launch` doc's list of arguments, in order, each with its type; the
/// offsets input the signature does not declare is called out.
fn launch_doc(sig: &Signature, inputs: &[(Ident, Kind, DTy, Shape)], extra: &[String]) -> String {
    let mut lines = vec!["Arguments after `rt`, in order:".to_string(), String::new()];
    for (name, kind, dtype, shape) in inputs {
        let declared = sig.params.iter().any(|p| p.ident() == name);
        let line = if !declared {
            format!(
                "- `{name}`: the kernel's offsets, `[B+1]` i32 or i64 (the signature declares no \
                 `offsets: Offsets`, so it comes before the first jagged parameter; declare it to \
                 name and place it)"
            )
        } else {
            let dtype = match dtype {
                DTy::KernelIndex => "i32 or i64".to_string(),
                other => other.describe(),
            };
            format!("- `{name}`: `{}` {dtype}", device_shape(*kind, shape))
        };
        lines.push(line);
    }
    for p in &sig.params {
        match p {
            Param::Attr { ident, rust_ty, .. } => {
                lines.push(format!("- `{ident}: {rust_ty}` (attribute)"));
            }
            Param::Static { ident, ty, .. } => {
                let ty = quote!(#ty).to_string().replace(' ', "");
                lines.push(format!(
                    "- `{ident}: {ty}` (static attribute: selects the graph that is built)"
                ));
            }
            Param::Tensor { .. } => {}
        }
    }
    lines.extend(extra.iter().cloned());
    lines.join("\n")
}

/// `launch(rt, inputs..., attrs...)`: reads the static facts (dtypes, inner
/// dims, the offsets dtype) from the device inputs, builds the graph and runs
/// it with `Runtime::run_graph`.
fn launcher(sig: &Signature, lowered: &body::Lowered, names: &[Ident]) -> TokenStream {
    let p = quote!(::jagged::__private);
    // Tensor inputs in graph order, the implicit offsets included.
    let mut inputs: Vec<(Ident, Kind, DTy, Shape)> = Vec::new();
    let mut attrs = Vec::new();
    // The attributes `launch` takes, run-time and static, in declaration order.
    let mut attr_params = Vec::new();
    for (i, param) in sig.params.iter().enumerate() {
        if lowered.implicit_offsets_at == Some(i) {
            inputs.push((
                format_ident!("offsets"),
                Kind::Offsets,
                DTy::KernelIndex,
                Shape::Dims(Vec::new()),
            ));
        }
        match param {
            Param::Tensor { ident, ty } => {
                inputs.push((ident.clone(), ty.kind, ty.dtype.clone(), ty.shape.clone()));
            }
            Param::Attr {
                ident,
                kind,
                rust_ty,
                ..
            } => {
                attr_params.push(quote!(#ident: #rust_ty));
                attrs.push((ident.clone(), *kind, rust_ty.clone()));
            }
            Param::Static { ident, ty, .. } => attr_params.push(quote!(#ident: #ty)),
        }
    }
    let mut extra = Vec::new();
    let mut extra_docs = Vec::new();
    let mut derive = Vec::new();
    for (g, role) in sig.graph_params() {
        let var = param_var(g);
        let found = inputs.iter().find_map(|(name, kind, dtype, shape)| {
            let input = name.to_string();
            let lead = lead_dims(*kind);
            match role {
                Role::Dtype => (*dtype == DTy::Param(g.clone())).then(|| quote!(#name.dtype())),
                Role::Shape => (*shape == Shape::Var(g.clone()))
                    .then(|| quote!(#p::inner_shape(#input, #name, #lead)?)),
                Role::Dim => match shape {
                    Shape::Dims(dims) => dims.iter().position(|d| d == g).map(|k| {
                        let rank = dims.len();
                        quote!(#p::inner_dim(#input, #name, #lead, #rank, #k)?)
                    }),
                    Shape::Var(_) => None,
                },
            }
        });
        match found {
            Some(value) => derive.push(quote!(let #var = #value;)),
            None => {
                let ty = match role {
                    Role::Dtype => "DType",
                    Role::Dim => "usize",
                    Role::Shape => "&[usize]",
                };
                extra_docs.push(format!("- `{var}: {ty}`: `{g}`, which no input determines"));
                extra.push(match role {
                    Role::Dtype => quote!(#var: #p::DType),
                    Role::Dim => quote!(#var: usize),
                    Role::Shape => quote!(#var: &[usize]),
                });
            }
        }
    }
    let mut graph_args: Vec<TokenStream> = sig
        .graph_params()
        .map(|(g, _)| {
            let v = param_var(g);
            quote!(#v)
        })
        .collect();
    graph_args.extend(statics::args(sig));
    if lowered.takes_offsets_dtype {
        let offsets = inputs
            .iter()
            .find(|(_, kind, ..)| *kind == Kind::Offsets)
            .map(|(name, ..)| name.clone());
        match offsets {
            Some(o) => graph_args.push(quote!(#o.dtype())),
            None => {
                extra_docs.push(
                    "- `offsets: DType`: the offsets dtype of outputs, which no input determines"
                        .to_string(),
                );
                extra.push(quote!(offsets: #p::DType));
                graph_args.push(quote!(offsets));
            }
        }
    }
    let doc = launch_doc(sig, &inputs, &extra_docs);
    let input_params = inputs
        .iter()
        .map(|(name, ..)| quote!(#name: &#p::DeviceTensor));
    let input_names = inputs.iter().map(|(name, ..)| {
        let s = name.to_string();
        quote!((#s, #name))
    });
    let attr_values = attrs.iter().map(|(name, kind, _)| {
        let s = name.to_string();
        match kind {
            AttrKind::Index => quote!((#s, #p::AttrValue::Index(#name))),
            AttrKind::Float => quote!((#s, #p::AttrValue::Float(f64::from(#name)))),
        }
    });
    // Lengths inputs are checked on the host before the launch (negative
    // lengths or offsets overflowing their dtype would come back wrapped).
    let lengths_checks = inputs
        .iter()
        .filter(|(_, kind, ..)| *kind == Kind::Lengths)
        .map(|(name, ..)| {
            let s = name.to_string();
            quote! {
                if ::jagged::ir::bind::lengths_inputs(&__graph).iter().any(|(n, _)| *n == #s) {
                    let __host = rt
                        .download_tensor(#name)
                        .map_err(::jagged::runtime::GraphRunError::from)?;
                    if let ::core::option::Option::Some(__values) = __host.data().to_i64() {
                        ::jagged::ir::bind::check_lengths_inputs(&__graph, &[(#s, &__values[..])])
                            .map_err(::jagged::runtime::GraphRunError::from)?;
                    }
                }
            }
        });
    let max_len = if sig.has_max_len() {
        quote!(max_len)
    } else {
        match inputs.iter().find(|(_, kind, ..)| *kind == Kind::Padded) {
            Some((name, ..)) => quote!(#name.shape.get(1).copied().unwrap_or(0)),
            None => quote!(0),
        }
    };
    // An output declared `Option<..>` is `None` when the graph of the static
    // attributes' values has no such output.
    let optional: Vec<bool> = sig.outputs.iter().map(|o| o.optional).collect();
    let take = |(n, opt): (&Ident, &bool)| {
        let s = n.to_string();
        if *opt {
            quote!(::core::result::Result::<_, #p::KernelError>::Ok(__outputs.remove(#s)))
        } else {
            quote!(#p::take(&mut __outputs, #s))
        }
    };
    let ty_of = |opt: &bool| {
        if *opt {
            quote!(::core::option::Option<#p::DeviceTensor>)
        } else {
            quote!(#p::DeviceTensor)
        }
    };
    let (ret_ty, ret) = match names {
        [single] => (ty_of(&optional[0]), take((single, &optional[0]))),
        _ => {
            let tys = optional.iter().map(ty_of);
            let outs = names.iter().zip(&optional).map(take);
            (
                quote!((#(#tys),*)),
                quote!(::core::result::Result::Ok((#(#outs?),*))),
            )
        }
    };
    quote! {
        /// Runs the kernel on `rt`: dtypes and inner dims are read from the
        /// inputs (a jagged tensor is its `values` and the kernel's `offsets`),
        /// the graph is compiled for the runtime's preferred architecture
        /// (`Runtime::preferred_arch`) through its kernel cache.
        /// Outputs are owned by the caller (free them with `Runtime::free`).
        ///
        #[doc = #doc]
        #[allow(clippy::too_many_arguments)]
        pub fn launch(
            rt: &mut #p::Runtime,
            #(#input_params,)*
            #(#attr_params,)*
            #(#extra,)*
        ) -> ::core::result::Result<#ret_ty, #p::KernelError> {
            #(#derive)*
            let __graph = graph(#(#graph_args),*)?;
            #(#lengths_checks)*
            let __spec = #p::spec(&__graph, #max_len, rt.preferred_arch())?;
            #p::preload(rt, SPECIALIZED, &__graph, &__spec);
            let mut __outputs = rt.run_graph(
                &__graph,
                &__spec,
                &[#(#input_names),*],
                &[#(#attr_values),*],
            )?;
            #ret
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    /// The `launch` docs of an expansion, as one string.
    fn launch_docs(item: proc_macro2::TokenStream) -> String {
        super::expand(quote!(outputs(y)), item).to_string()
    }

    #[test]
    fn launch_docs_list_the_implicit_offsets_first() {
        let out = launch_docs(quote! {
            fn k<D>(x: Jagged<f32, (D,)>, w: Dense<f32, (D,)>, #[attr] eps: f32) -> Jagged<f32, (D,)> {
                x * w + eps
            }
        });
        let offsets = out.find("- `offsets`: the kernel's offsets").expect(&out);
        let x = out.find("- `x`: `[T, D]` f32").expect(&out);
        let w = out.find("- `w`: `[D]` f32").expect(&out);
        let eps = out.find("- `eps: f32` (attribute)").expect(&out);
        assert!(offsets < x && x < w && w < eps, "{out}");
    }

    #[test]
    fn launch_docs_follow_declared_offsets() {
        let out = launch_docs(quote! {
            fn k<T: Float, H, D>(q: Jagged<T, (H, D)>, o: Offsets, p: Padded<T, (H, D)>, #[attr] max_len: usize) -> Jagged<T, (H, D)> {
                q * p
            }
        });
        assert!(!out.contains("the signature declares no"), "{out}");
        let q = out.find("- `q`: `[T, H, D]` T").expect(&out);
        let o = out.find("- `o`: `[B+1]` i32 or i64").expect(&out);
        let p = out.find("- `p`: `[B, N, H, D]` T").expect(&out);
        assert!(q < o && o < p, "{out}");
    }
}
