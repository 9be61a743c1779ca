//! jagged: a compiler of jagged-tensor ops into specialized GPU kernels.
//!
//! This facade re-exports the layers: [`ir`] (graphs, host tensors, reference
//! evaluator) and [`emu`] (the PTX emulator).

// The `#[jagged_kernel]` expansion names `::jagged`, also inside this crate.
extern crate self as jagged;

pub mod ops;

pub use jagged_emu as emu;
pub use jagged_ir as ir;
pub use jagged_macros::jagged_kernel;
pub use ops::dsl;

/// What `#[jagged_kernel]`'s expansion calls; not a public API.
#[doc(hidden)]
pub use ops::support as __private;
