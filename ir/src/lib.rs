//! jagged-ir: the IR of the jagged compiler.
//!
//! Host-side jagged and dense tensors, a typed SSA graph over them, its validator
//! and canonical text form, and the f64 reference evaluator that defines the
//! semantics of every op.

pub mod npy;
