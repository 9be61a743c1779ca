//! The builtin op library (OPS.md "Primitives", and "Attention" in
//! [`attention`]), written with `#[jagged_kernel]`, and the DSL it is written
//! in ([`dsl`]).
//!
//! Each op is a DSL function and a module of the same name: `graph(...)` builds
//! its IR for the static facts given (dtypes, inner dims), `launch(...)` runs
//! it on a [`jagged_runtime::Runtime`] (static facts read from the inputs).

pub mod attention;
pub mod dsl;
mod primitives;
#[doc(hidden)]
pub mod support;

pub use primitives::*;

use jagged_codegen::CodegenError;
use jagged_ir::{DType, ValidationError};
use jagged_runtime::GraphRunError;

/// Why a `#[jagged_kernel]`'s `graph` (or launcher) failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A dtype given for a bounded generic parameter is of the wrong class.
    #[error("dtype parameter `{param}` must be a {expected} dtype, got {dtype}")]
    Dtype {
        /// The generic parameter (`T`).
        param: &'static str,
        /// The dtype given.
        dtype: DType,
        /// What the bound requires.
        expected: &'static str,
    },
    /// The built graph is ill-typed (for the dtypes given).
    #[error("invalid graph: {0}")]
    Validation(#[from] ValidationError),
    /// An input's shape does not have the dims the kernel declares.
    #[error("input `{input}`: expected {expected}, found shape {found:?}")]
    Shape {
        /// The input.
        input: &'static str,
        /// What the declaration needs.
        expected: String,
        /// The shape given.
        found: Vec<usize>,
    },
    /// The code generator cannot specialize the graph.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// Running the graph failed (inputs, offsets, device).
    #[error(transparent)]
    Run(#[from] GraphRunError),
    /// A run did not return a declared output.
    #[error("the run returned no output `{name}`")]
    MissingOutput {
        /// The output.
        name: &'static str,
    },
}
