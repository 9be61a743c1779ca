//! The `#[jagged_kernel]` attribute macro (issue 4).
