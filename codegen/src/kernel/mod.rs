//! The SIMT kernel IR: what one PTX `.entry` says, as plain Rust data.
//!
//! A [`Kernel`] has typed parameters, virtual registers of a few register
//! classes, static shared arrays and a flat body of (optionally predicated)
//! statements with labels and branches. It maps almost 1:1 onto PTX, so the
//! printer in [`crate::ptx`] stays trivial. [`KernelBuilder`] is the way to
//! write one: it hands out fresh registers and labels and offers structured
//! helpers (grid-stride loops, `if` blocks) on top of the flat body.
//!
//! The IR types are defined in `kernel/ir.rs`, the builder in
//! `kernel/builder.rs`; both are re-exported here, the one path to name
//! them by.

mod builder;
mod divide;
mod ir;

pub use builder::{KernelBuilder, RangeLoop};
pub use ir::*;
