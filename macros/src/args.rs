//! The arguments of `#[jagged_kernel(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::{Ident, LitStr};

/// The values of one `specialize(...)` key.
pub enum SpecValues {
    /// `D = [64, 128]`: each value in turn.
    List(Vec<syn::Expr>),
    /// `E = D`: whatever the other key takes (ties two generics together);
    /// for a static attribute, its one value (`activation = Silu`).
    Same(Ident),
}

/// `specialize(...)`: where it is written, and each key with its values.
pub type Specializations = (Span, Vec<(Ident, SpecValues)>);

/// What the attribute's arguments say.
#[derive(Default)]
pub struct KernelArgs {
    /// The graph name (`name = "jagged_reduce"`), if not the function's name.
    pub name: Option<LitStr>,
    /// The output names (`outputs(values, offsets)`), if given.
    pub outputs: Option<(Span, Vec<Ident>)>,
    /// Ahead-of-time specializations: `specialize(T = [bf16], D = [64, 128],
    /// E = D, offsets = [i32], max_len = [1024])`, each key with its values
    /// (or tied to another key).
    pub specialize: Option<Specializations>,
    /// `tf32`: the kernel's contractions of f32 operands round them to
    /// TensorFloat-32 first (`Precision::Tf32`: tf32 tensor cores), the
    /// author's opt-in; other dtypes are unaffected.
    pub tf32: bool,
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
        } else if meta.path.is_ident("tf32") {
            args.tf32 = true;
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
                let value: syn::Expr = inner.value()?.parse()?;
                let values = match value {
                    syn::Expr::Array(a) => SpecValues::List(a.elems.into_iter().collect()),
                    // One value of a static attribute: `causal = true`.
                    syn::Expr::Lit(_) => SpecValues::List(vec![value]),
                    syn::Expr::Path(p) if p.path.get_ident().is_some() => {
                        SpecValues::Same(p.path.get_ident().cloned().unwrap_or_else(|| key.clone()))
                    }
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "expected a list of values (`D = [64, 128]`), another key (`E = D`) or \
                             a static attribute's value (`causal = true`)",
                        ));
                    }
                };
                keys.push((key, values));
                Ok(())
            })?;
            args.specialize = Some((span, keys));
            Ok(())
        } else {
            Err(meta.error(
                "unknown argument: expected `name = \"...\"`, `outputs(...)`, `specialize(...)` or `tf32`",
            ))
        }
    });
    syn::parse::Parser::parse2(parser, tokens)?;
    Ok(args)
}
