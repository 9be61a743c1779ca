//! The `#[jagged_kernel]` attribute macro.
//!
//! It reads a Rust function written in the jagged DSL (typed jagged and dense
//! tensor parameters, `#[attr]` scalar attributes, a body of `let` bindings and
//! expressions over the DSL's ops), checks it (dtypes, shapes, sequence sets,
//! Rust outside the DSL), and emits:
//!
//! - the user's function, unchanged but for its `#[attr]` markers, so that
//!   rustc type-checks it against the phantom types of `jagged::dsl` and the
//!   IDE keeps working on it;
//! - a sibling module of the same name with `graph(...)`, which builds the
//!   `jagged_ir` graph with one `GraphBuilder` call per DSL operation for the
//!   static facts given (dtypes, inner dims, shapes), `launch(...)`, which
//!   reads those facts from device inputs and runs the graph with
//!   `Runtime::run_graph`, and `SPECIALIZED`, the kernels generated at compile
//!   time for `specialize(...)`.
//!
//! Misuse of the DSL is a `compile_error!` at the offending span, reported
//! once: the user's function is emitted in every case, but without its body
//! when the macro rejected it (rustc would report the mistake again against
//! the phantom types). The typing rules (method lists, arities, the dtypes
//! each operation accepts, the accumulator dtype) are `jagged_ir::typing`'s,
//! which the IR's validator applies too.
//!
//! Layout: `args` parses the attribute's own arguments, `sig` the
//! function's signature, `body` checks the body and lowers it to `steps`
//! (printed as `graph`'s body, or applied in the macro by `specialize`),
//! `statics` lowers it once per value of its static attributes
//! (`#[attr(static)]`, selected on by `if`/`match` in the body), `expand`
//! assembles the output.

#[cfg(test)]
mod agreement;
mod args;
mod body;
mod expand;
mod sig;
mod specialize;
mod statics;
mod steps;

use proc_macro::TokenStream;

/// Turns a DSL function into a graph builder and a launcher (see the crate docs
/// and `jagged::dsl` for the language).
///
/// Arguments: `name = "op"` (the graph name; default: the function's name),
/// `outputs(a, b)` (output names; default `out`), `specialize(T = [bf16],
/// D = [64, 128], offsets = [i32], max_len = [1024])` (ahead-of-time code
/// generation for each `arch = [sm_80, sm_90a]`, both by default, embedded
/// and preloaded by `launch` for the runtime's preferred architecture; a
/// static attribute takes its values too: `causal = [false, true]`,
/// `activation = Silu`, every value when left out).
#[proc_macro_attribute]
pub fn jagged_kernel(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
