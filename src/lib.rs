//! jagged: a compiler of jagged-tensor ops into specialized GPU kernels.
//!
//! This facade re-exports the layers: [`ir`] (graphs, host tensors, reference
//! evaluator), [`codegen`] (PTX), [`runtime`] (devices, kernel cache, graph
//! launcher) and [`emu`] (the PTX emulator); [`ops`] is the builtin op
//! library, written in the [`dsl`] of [`jagged_kernel`]; [`KernelError`] is
//! why one of its `graph`s or launchers failed. With the `cli` feature (the
//! default), the `cli` module holds what the `jagc` tool reads and writes: `.npy`
//! files and kernel-argument specs.

// The `#[jagged_kernel]` expansion names `::jagged`, also inside this crate.
extern crate self as jagged;

#[cfg(feature = "cli")]
pub mod cli;
pub mod nested;
pub mod ops;
pub mod testing;

pub use jagged_codegen as codegen;
pub use jagged_emu as emu;
pub use jagged_ir as ir;
pub use jagged_macros::jagged_kernel;
pub use jagged_runtime as runtime;
pub use ops::dsl;

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

/// What `#[jagged_kernel]`'s expansion calls; not a public API.
#[doc(hidden)]
pub use ops::support as __private;
