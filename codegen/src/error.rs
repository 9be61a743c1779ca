//! The error type of code generation.

/// Why a graph could not be compiled for a spec.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    /// The graph or spec asks for something the code generator does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The graph does not match any kernel template.
    #[error("no kernel template matches the graph: {0}")]
    NoTemplate(String),
    /// The spec disagrees with the graph (dtype, inner dims, offsets dtype).
    #[error("spec does not match the graph: {0}")]
    SpecMismatch(String),
    /// A node the general path cannot lower, quoted in text form with its
    /// origin (the graph file's line or the kernel body's expression).
    #[error("graph `{graph}`: {node}: {reason}")]
    Node {
        /// The graph's name.
        graph: String,
        /// The node's handle index (`%index`).
        index: usize,
        /// The node (`%5 = contract ...`) and its origin.
        node: String,
        /// Why it cannot be lowered.
        reason: String,
    },
    /// Printing PTX failed (malformed kernel IR: a code generator bug).
    #[error(transparent)]
    Ptx(#[from] crate::ptx::Error),
}
