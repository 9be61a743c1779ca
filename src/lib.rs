//! jagged: a compiler of jagged-tensor ops into specialized GPU kernels.
//!
//! This facade re-exports the layers: [`ir`] (graphs, host tensors, reference
//! evaluator) and [`emu`] (the PTX emulator).

pub use jagged_emu as emu;
pub use jagged_ir as ir;
