//! The arguments of `#[jagged_kernel(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::{Ident, LitStr};

/// What the attribute's arguments say.
#[derive(Default)]
pub struct KernelArgs {
    /// The graph name (`name = "jagged_reduce"`), if not the function's name.
    pub name: Option<LitStr>,
    /// The output names (`outputs(values, offsets)`), if given.
    pub outputs: Option<(Span, Vec<Ident>)>,
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
            Err(meta.error(
                "`specialize(...)` (ahead-of-time PTX) is not implemented yet: \
                 kernels are compiled on first launch and cached",
            ))
        } else {
            Err(meta.error("unknown argument: expected `name = \"...\"` or `outputs(...)`"))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(args)
}
