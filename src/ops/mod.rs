//! The builtin op library (OPS.md "Primitives", and "Attention" in
//! [`attention`]), written with `#[jagged_kernel]`, and the DSL it is written
//! in ([`dsl`]).
//!
//! Each op is a DSL function and a module of the same name: `graph(...)` builds
//! its IR for the static facts given (dtypes, inner dims), `launch(...)` runs
//! it on a [`jagged_runtime::Runtime`] (static facts read from the inputs).

pub mod attention;
pub mod dsl;
pub mod events;
pub mod interactions;
mod primitives;
pub mod quantize;
pub mod quantize_rotation;
pub mod quantize_train;
#[doc(hidden)]
pub mod support;

pub use primitives::*;

/// The crate root's [`KernelError`] under the path the
/// ops and the `#[jagged_kernel]` expansion (through `support`) name.
pub use crate::KernelError;
