#![warn(missing_docs)]
//! jagged-codegen: lowers jagged IR graphs to a SIMT kernel IR and prints PTX
//! specialized per [`Spec`] (inner dims, max-length bucket, dtype, arch).
//!
//! - [`kernel`]: the kernel IR and its builder.
//! - [`ptx`]: the PTX printer.
//! - [`templates`]: kernel templates (map, pad, per-sequence reductions, scans).
//! - [`compile()`]: graph + spec -> [`CompiledKernel`] (pattern-matches the graph).
//! - [`lower()`]: primitive op + spec -> [`CompiledKernel`] (PTX + launch metadata).
//! - [`ptxas`]: runs `ptxas -v` on generated PTX and parses its report.
//! - [`sass`]: disassembles assembled kernels and counts their steady-state loop.
//! - [`serial`]: a stable text form of [`CompiledKernel`] (for the kernel cache).

pub mod compile;
pub mod error;
pub mod general;
pub mod kernel;
pub mod launch;
pub mod lower;
pub mod ptx;
pub mod ptxas;
pub mod sass;
pub mod serial;
pub mod spec;
pub mod templates;

pub use compile::{compile, compile_with_plan};
pub use error::CodegenError;
pub use launch::{
    CompiledKernel, GridRule, Launch, OutputBuffer, ParamBinding, RunSizes, ScratchBuffer,
    SizeExpr, TensorMapBinding,
};
pub use lower::{Primitive, lower};
pub use serial::SerialError;
pub use spec::{Arch, DType, Spec, elem_bytes, max_len_bucket};

/// Version of the code generator, printed in every PTX module's header (so
/// a bump updates the PTX snapshots too): bump it when the generated PTX or
/// the launch metadata change in a way a reader of the PTX should see.
/// Caches do not depend on the bump: see [`CODEGEN_SOURCE_HASH`].
pub const CODEGEN_VERSION: &str = "0.1.0-3";

/// A hash of this crate's sources (`build.rs`), 16 hex digits. The runtime's
/// on-disk kernel cache keys its entries by it with [`CODEGEN_VERSION`], so a
/// build whose code generator differs in any way never reads the PTX an
/// older one wrote, while a rebuild of the same sources (another executable,
/// another crate changed) keeps its entries.
pub const CODEGEN_SOURCE_HASH: &str = env!("JAGGED_CODEGEN_SOURCE_HASH");
