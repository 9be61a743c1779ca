//! Assembles the macro's output: the user's function and its sibling module.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{FnArg, Ident, ItemFn};

use crate::sig::{Role, param_var};
use crate::{args, body, sig};

/// The whole expansion: the user's item, then the module or the error.
pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#item #e);
        }
    };
    let emitted = user_item(&func);
    match module(attr, &func) {
        Ok(m) => quote!(#emitted #m),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#emitted #e)
        }
    }
}

/// The user's function, without the DSL's `#[attr]` markers (rustc would not
/// know them). It type-checks against `jagged::dsl`'s phantom types and is
/// never called: the module's `graph` is the kernel's meaning.
fn user_item(func: &ItemFn) -> TokenStream {
    let mut func = func.clone();
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
    let lowered = body::lower(&sig, &func.block, &names)?;
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
    let offsets_binding = if lowered.takes_offsets_dtype {
        params.push(quote!(offsets: #p::DType));
        quote!(let __offsets_dtype = offsets;)
    } else {
        quote!()
    };
    let stmts = &lowered.stmts;
    let vis = &func.vis;
    let mod_doc = format!("The graph of the `#[jagged_kernel]` `{fn_name}`.");
    let graph_doc = format!(
        "Builds the `{graph_name}` graph for the given dtypes, dims and shapes (one \
         argument per generic parameter, lower-cased{}).",
        if lowered.takes_offsets_dtype {
            ", then the offsets dtype"
        } else {
            ""
        }
    );
    Ok(quote! {
        #[doc = #mod_doc]
        #vis mod #fn_name {
            #[doc = #graph_doc]
            #[allow(clippy::let_and_return, unused_variables)]
            pub fn graph(#(#params),*) -> ::core::result::Result<#p::Graph, #p::KernelError> {
                #(#checks)*
                #offsets_binding
                let mut __b = #p::GraphBuilder::new(#graph_name);
                #(#stmts)*
                ::core::result::Result::Ok(__b.finish()?)
            }
        }
    })
}
