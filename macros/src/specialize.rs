//! `specialize(...)`: ahead-of-time code generation. For every combination of
//! the values given, the macro builds the kernel's graph itself
//! ([`steps::apply`]), compiles it with jagged-codegen for each target
//! architecture of the `arch = [...]` key (default: sm_80 and sm_90a, the
//! targets `Runtime::preferred_arch` can name) and embeds the graph text, the
//! spec (which names the architecture) and the compiled kernel (PTX plus
//! launch metadata, as `CompiledKernel::to_text`) in a table `SPECIALIZED`.
//! The launcher compiles for the runtime's preferred architecture and puts
//! the entry whose graph and spec match into the runtime's kernel cache
//! before running, so those specializations never run the code generator at
//! run time. A specialization the code generator rejects is a compile error.

use jagged_codegen::{Arch, Spec};
use jagged_ir::DType;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Error, Expr, Lit};

use crate::args::{SpecValues, Specializations};
use crate::sig::{Role, Signature};
use crate::statics::{self, StaticVal, Variants};
use crate::steps::{self, Bindings};

/// One value of a specialization key.
#[derive(Clone, Debug)]
enum Value {
    Dtype(DType),
    Dim(usize),
    Shape(Vec<usize>),
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Dtype(d) => d.to_string(),
            Value::Dim(n) => n.to_string(),
            Value::Shape(s) => format!("{s:?}"),
        }
    }
}

fn int(e: &Expr) -> syn::Result<usize> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse(),
            other => Err(Error::new_spanned(other, "expected an integer")),
        },
        other => Err(Error::new_spanned(other, "expected an integer")),
    }
}

fn dtype(e: &Expr) -> syn::Result<DType> {
    let name = match e {
        Expr::Path(p) => p.path.get_ident().map(ToString::to_string),
        _ => None,
    };
    name.as_deref()
        .and_then(DType::from_name)
        .ok_or_else(|| Error::new_spanned(e, "expected a dtype name (f32, bf16, i32, ...)"))
}

/// An architecture value of the `arch` key: `sm_80` or `sm_90a`.
fn arch(e: &Expr) -> syn::Result<Arch> {
    let name = match e {
        Expr::Path(p) => p.path.get_ident().map(ToString::to_string),
        _ => None,
    };
    name.as_deref()
        .and_then(Arch::from_name)
        .ok_or_else(|| Error::new_spanned(e, "expected an architecture: sm_80 or sm_90a"))
}

fn value(role: Role, e: &Expr) -> syn::Result<Value> {
    match role {
        Role::Dtype => dtype(e).map(Value::Dtype),
        Role::Dim => int(e).map(Value::Dim),
        Role::Shape => match e {
            Expr::Array(a) => a
                .elems
                .iter()
                .map(int)
                .collect::<syn::Result<_>>()
                .map(Value::Shape),
            other => Err(Error::new_spanned(
                other,
                "a shape is an array of dims: `[2, 64]`",
            )),
        },
    }
}

/// The `SPECIALIZED` table of the kernel (empty without `specialize(...)`).
pub fn table(
    args: Option<&Specializations>,
    sig: &Signature,
    variants: &Variants,
    graph_name: &str,
) -> syn::Result<TokenStream> {
    let lowered = variants.first();
    let p = quote!(::jagged::__private);
    let Some((span, keys)) = args else {
        return Ok(quote!(&[]));
    };
    // The axes: (key, role, values); `max_len` and `arch` apart.
    let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
    // `E = D`: E takes D's value in every combination.
    let mut ties: Vec<(String, &syn::Ident)> = Vec::new();
    let mut max_lens = vec![0];
    let mut archs = Arch::ALL.to_vec();
    // The static attributes' values: every value the body distinguishes,
    // unless the key lists some.
    let mut static_values: Vec<Vec<StaticVal>> = variants
        .params
        .iter()
        .map(|p| p.domain.iter().map(|(v, _)| v.clone()).collect())
        .collect();
    for (key, values) in keys {
        let name = key.to_string();
        if let Some(k) = variants.params.iter().position(|p| p.ident == *key) {
            let param = &variants.params[k];
            let exprs: Vec<Expr> = match values {
                SpecValues::List(values) => values.clone(),
                SpecValues::Same(value) => vec![syn::parse_quote!(#value)],
            };
            if exprs.is_empty() {
                return Err(Error::new_spanned(key, "give at least one value"));
            }
            let mut chosen = Vec::new();
            for e in &exprs {
                let v = statics::spec_value(param, e)?;
                if !chosen.contains(&v) {
                    chosen.push(v);
                }
            }
            static_values[k] = chosen;
            continue;
        }
        let values = match values {
            SpecValues::List(values) => values,
            SpecValues::Same(other) => {
                let role_of =
                    |k: &syn::Ident| sig.graph_params().find(|(g, _)| *g == k).map(|(_, r)| r);
                match (role_of(key), role_of(other)) {
                    (Some(a), Some(b)) if a == b && key != other => {
                        ties.push((name, other));
                        continue;
                    }
                    _ => {
                        return Err(Error::new_spanned(
                            other,
                            "a key can be tied only to another generic parameter of the same kind \
                             (`E = D` for two dims)",
                        ));
                    }
                }
            }
        };
        let role = if name == "max_len" {
            max_lens = values.iter().map(int).collect::<syn::Result<_>>()?;
            continue;
        } else if name == "arch" {
            archs = values.iter().map(arch).collect::<syn::Result<_>>()?;
            if archs.is_empty() {
                return Err(Error::new_spanned(key, "give at least one value"));
            }
            continue;
        } else if name == "offsets" {
            Role::Dtype
        } else {
            match sig.graph_params().find(|(g, _)| *g == key) {
                Some((_, role)) => role,
                None => {
                    return Err(Error::new_spanned(
                        key,
                        "unknown specialization key: a generic parameter of the kernel, a static \
                         attribute, `offsets`, `max_len` or `arch`",
                    ));
                }
            }
        };
        let values = values
            .iter()
            .map(|e| value(role, e))
            .collect::<syn::Result<Vec<_>>>()?;
        if values.is_empty() {
            return Err(Error::new_spanned(key, "give at least one value"));
        }
        axes.push((name, values));
    }
    let mut needed: Vec<String> = sig.graph_params().map(|(g, _)| g.to_string()).collect();
    if lowered.takes_offsets_dtype {
        needed.push("offsets".to_string());
    }
    for (key, other) in &ties {
        if !axes.iter().any(|(k, _)| *other == k) {
            return Err(Error::new_spanned(
                other,
                format!("`{key}` is tied to `{other}`, which has no list of values"),
            ));
        }
    }
    let missing: Vec<&String> = needed
        .iter()
        .filter(|n| !axes.iter().any(|(k, _)| k == *n) && !ties.iter().any(|(k, _)| k == *n))
        .collect();
    if !missing.is_empty() {
        let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        return Err(Error::new(
            *span,
            format!("`specialize` needs values for {}", list.join(", ")),
        ));
    }
    let mut entries = Vec::new();
    let static_combos: usize = static_values.iter().map(Vec::len).product();
    let combos: usize =
        axes.iter().map(|(_, v)| v.len()).product::<usize>() * max_lens.len() * static_combos;
    for c in 0..combos {
        let mut rest = c;
        let mut combo = Vec::new();
        for values in &static_values {
            combo.push(values[rest % values.len()].clone());
            rest /= values.len();
        }
        let Some((_, lowered)) = variants.lowered.iter().find(|(c, _)| *c == combo) else {
            return Err(Error::new(*span, "no lowering for these static values"));
        };
        let statics_text: Vec<String> = variants
            .params
            .iter()
            .zip(&combo)
            .map(|(p, v)| format!("{} = {}", p.ident, v.describe()))
            .collect();
        let statics_text = statics_text.join(", ");
        let mut bindings = Bindings::default();
        let mut described = Vec::new();
        let mut chosen: Vec<(&String, &Value)> = Vec::new();
        for (key, values) in &axes {
            let v = &values[rest % values.len()];
            rest /= values.len();
            chosen.push((key, v));
        }
        for (key, other) in &ties {
            if let Some(&(_, v)) = chosen.iter().find(|(k, _)| *other == k.as_str()) {
                chosen.push((key, v));
            }
        }
        for (key, v) in chosen {
            described.push(format!("{key} = {}", v.describe()));
            match v {
                Value::Dtype(d) => bindings.dtypes.insert(key.clone(), *d).map(|_| ()),
                Value::Dim(n) => bindings.dims.insert(key.clone(), *n).map(|_| ()),
                Value::Shape(s) => bindings.shapes.insert(key.clone(), s.clone()).map(|_| ()),
            };
        }
        let max_len = max_lens[rest % max_lens.len()];
        described.push(format!("max_len = {max_len}"));
        if !statics_text.is_empty() {
            described.push(statics_text.clone());
        }
        let what = described.join(", ");
        let (graph, nodes) = steps::apply(graph_name, &lowered.steps, &bindings)
            .map_err(|e| Error::new(*span, format!("specialization {what}: {e}")))?;
        for &arch in &archs {
            let fail =
                |e: String| Error::new(*span, format!("specialization {what}, arch = {arch}: {e}"));
            let spec =
                Spec::for_graph(&graph, max_len as u64, arch).map_err(|e| fail(e.to_string()))?;
            let kernel = jagged_codegen::compile(&graph, &spec).map_err(|e| {
                // An error about one node is reported at its expression.
                let at = match &e {
                    jagged_codegen::CodegenError::Node { index, .. } => nodes
                        .iter()
                        .position(|n| n.map(|h| h.index()) == Some(*index))
                        .and_then(|step| lowered.origins.get(step).cloned().flatten())
                        .map(|src| src.span),
                    _ => None,
                };
                Error::new(
                    at.unwrap_or(*span),
                    format!("specialization {what}, arch = {arch}: {e}"),
                )
            })?;
            let (g, s, k) = (graph.to_string(), spec.to_string(), kernel.to_text());
            entries.push(quote!(#p::Specialized {
                graph: #g,
                spec: #s,
                kernel: #k,
                statics: #statics_text,
            }));
        }
    }
    Ok(quote!(&[#(#entries),*]))
}
