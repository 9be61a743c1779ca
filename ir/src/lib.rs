//! jagged-ir: the IR of the jagged compiler.
//!
//! Host-side jagged and dense tensors, a typed SSA graph over them, its validator
//! and canonical text form, and the f64 reference evaluator that defines the
//! semantics of every op.
//!
//! - [`dtype`]: element types.
//! - [`tensor`]: host tensors ([`DenseTensor`], [`JaggedTensor`]) with checked
//!   offsets and padded conversions.
//! - [`graph`]: the IR ([`Graph`], [`Node`], [`TensorType`]); [`builder`] builds
//!   it, [`validate`] checks it, [`text`] prints and parses it.
//! - [`bind`](mod@bind): checking named inputs and attributes against a graph and
//!   inferring its run-time sizes (shared by every executor).
//! - [`eval`]: the reference evaluator.
//! - [`ops`]: the builtin ops of OPS.md as graphs.
//! - [`typing`]: the typing rules of the validator and the DSL's table of
//!   methods and functions built on them.

pub mod arena;
pub mod autodiff;
pub mod bind;
pub mod builder;
pub mod dtype;
pub mod eval;
pub mod graph;
pub mod ops;
pub mod tensor;
pub mod text;
pub mod typing;
pub mod validate;

pub use arena::{Arena, Handle};
pub use autodiff::{AutodiffError, backward};
pub use bind::{BindError, Binding, InputDesc, bind, check_lengths_inputs, lengths_inputs};
pub use builder::GraphBuilder;
pub use dtype::DType;
pub use eval::{EvalError, EvalOptions, evaluate, evaluate_with};
pub use graph::{
    AttrDecl, AttrKind, AttrValue, BinaryOp, CompareOp, Dim, Graph, IndexPredicate, MAX_LEN, Node,
    Origin, Origins, Output, Precision, RankOrder, ReduceOp, ScanMode, TensorType, TopKPart, Type,
    UnaryOp,
};
pub use tensor::{DenseTensor, JaggedTensor, TensorData, TensorError};
pub use text::ParseError;
pub use validate::{ValidationError, ValidationErrorKind};
