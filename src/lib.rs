//! jagged: a compiler of jagged-tensor ops into specialized GPU kernels.
//!
//! This facade re-exports the layers: [`ir`] (graphs, host tensors, reference
//! evaluator), [`codegen`] (PTX), [`runtime`] (devices, kernel cache, graph
//! launcher) and [`emu`] (the PTX emulator); [`ops`] is the builtin op
//! library, written in the [`dsl`] of [`jagged_kernel`].

// The `#[jagged_kernel]` expansion names `::jagged`, also inside this crate.
extern crate self as jagged;

pub mod ops;
pub mod testing;

pub use jagged_codegen as codegen;
pub use jagged_emu as emu;
pub use jagged_ir as ir;
pub use jagged_macros::jagged_kernel;
pub use jagged_runtime as runtime;
pub use ops::dsl;

/// What `#[jagged_kernel]`'s expansion calls; not a public API.
#[doc(hidden)]
pub use ops::support as __private;
