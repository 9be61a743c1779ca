//! The extension's error type, and how it becomes a Python exception.

use jagged_runtime::GraphRunError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument (op, input, attribute, graph text, offsets): the
    /// message names it. Python: `jagged.JaggedInputError` (a `ValueError`).
    #[error("{0}")]
    Input(String),
    /// Compiling or running failed for another reason. Python:
    /// `jagged.JaggedError` (a `RuntimeError`).
    #[error("{0}")]
    Run(String),
    /// What CUDA tensors cannot do yet (the message names the op). Python:
    /// `NotImplementedError`.
    #[error("{0}")]
    NotOnCuda(String),
    /// A bug of the extension or the compiler (a panic caught at the
    /// boundary). Python: `jagged.JaggedError`.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl From<GraphRunError> for Error {
    fn from(err: GraphRunError) -> Error {
        match err {
            GraphRunError::Bind(_)
            | GraphRunError::Offsets(_)
            | GraphRunError::MaxLenAboveBucket { .. } => Error::Input(err.to_string()),
            GraphRunError::Codegen(e) => Error::Run(format!("code generation failed: {e}")),
            other => Error::Run(other.to_string()),
        }
    }
}
