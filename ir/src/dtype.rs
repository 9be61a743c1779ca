//! Element types shared by host tensors and IR tensor types.

use std::fmt;

use half::{bf16, f16};

/// The element type of a tensor, in host memory and in the IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE double precision (the reference evaluator's own precision; for
    /// testing against it without rounding).
    F64,
    /// IEEE single precision.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (8 exponent bits, 7 mantissa bits).
    BF16,
    /// Signed 32-bit integer (offsets, lengths).
    I32,
    /// Signed 64-bit integer (offsets, lengths).
    I64,
    /// Unsigned byte (masks as PyTorch stores them).
    U8,
    /// Boolean (predicates; one byte in host memory).
    Bool,
}

impl DType {
    /// Every dtype, in declaration order (for parsers and exhaustive tests).
    pub const ALL: [DType; 8] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Bool,
    ];

    /// The name used in the IR text and in error messages (`f32`, `bf16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    /// The dtype named `name` (the inverse of [`DType::name`]).
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Whether this is a floating-point type (arithmetic like `exp` is defined).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// Whether this is an integer type usable for offsets and lengths.
    pub fn is_index(self) -> bool {
        matches!(self, DType::I32 | DType::I64)
    }

    /// Bytes per element in host memory.
    pub fn size(self) -> usize {
        match self {
            DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Rounds an f64 to the nearest value representable in this dtype, returned as f64.
    ///
    /// This is the meaning of a `cast` and of storing an output: floats round to
    /// nearest even, integers truncate toward zero and saturate (NaN gives 0),
    /// `bool` is `x != 0`.
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::F64 => x,
            DType::F32 => f64::from(x as f32),
            DType::F16 => f16::from_f64(x).to_f64(),
            DType::BF16 => bf16::from_f64(x).to_f64(),
            DType::I32 => f64::from(x as i32),
            DType::I64 => (x as i64) as f64,
            DType::U8 => f64::from(x as u8),
            DType::Bool => f64::from(u8::from(x != 0.0)),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
