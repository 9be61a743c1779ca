//! The arguments of `#[jagged_kernel(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::{Ident, LitStr};

/// `specialize(...)`: where it is written, and each key with its values.
pub type Specializations = (Span, Vec<(Ident, Vec<syn::Expr>)>);

/// What the attribute's arguments say.
#[derive(Default)]
pub struct KernelArgs {
    /// The graph name (`name = "jagged_reduce"`), if not the function's name.
    pub name: Option<LitStr>,
    /// The output names (`outputs(values, offsets)`), if given.
    pub outputs: Option<(Span, Vec<Ident>)>,
    /// Ahead-of-time specializations: `specialize(T = [bf16], D = [64, 128],
    /// offsets = [i32], max_len = [1024])`, each key with its values.
    pub specialize: Option<Specializations>,
}

/// Parses `name = "..."` and `outputs(a, b, ...)`, in any order.
pub fn parse(tokens: TokenStream) -> syn::Result<KernelArgs> {
    let mut args = KernelArgs::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            args.name = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("outputs") {
            let mut names = Vec::new();
            let span = meta.input.span();
            meta.parse_nested_meta(|inner| match inner.path.get_ident() {
                Some(ident) => {
                    names.push(ident.clone());
                    Ok(())
                }
                None => Err(inner.error("an output name is a plain identifier")),
            })?;
            args.outputs = Some((span, names));
            Ok(())
        } else if meta.path.is_ident("specialize") {
            let span = meta
                .path
                .get_ident()
                .map_or_else(Span::call_site, Ident::span);
            let mut keys = Vec::new();
            meta.parse_nested_meta(|inner| {
                let Some(key) = inner.path.get_ident().cloned() else {
                    return Err(inner.error("a specialization key is a generic parameter's name, `offsets` or `max_len`"));
                };
                let values: syn::ExprArray = inner.value()?.parse()?;
                keys.push((key, values.elems.into_iter().collect()));
                Ok(())
            })?;
            args.specialize = Some((span, keys));
            Ok(())
        } else {
            Err(meta.error(
                "unknown argument: expected `name = \"...\"`, `outputs(...)` or `specialize(...)`",
            ))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(args)
}
