//! What a kernel is specialized on: the static facts that become PTX
//! constants (inner dims, max-length bucket, dtype, target architecture).

use std::fmt;

/// GPU architectures we emit PTX for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// Ampere: the portable baseline.
    Sm80,
    /// Hopper with the architecture-specific features (wgmma, TMA).
    Sm90a,
}

impl Arch {
    /// Both targets, baseline first.
    pub const ALL: [Arch; 2] = [Arch::Sm80, Arch::Sm90a];

    /// The `.target` / `ptxas -arch` name.
    pub fn ptx_target(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90a => "sm_90a",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ptx_target())
    }
}

/// Element types of the buffers kernels read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElemType {
    /// IEEE single.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// Bytes (masks).
    U8,
    /// 32-bit signed integers (lengths, offsets).
    I32,
    /// 64-bit signed integers (lengths, offsets).
    I64,
}

impl ElemType {
    /// Size in bytes.
    pub fn size(self) -> u32 {
        match self {
            ElemType::U8 => 1,
            ElemType::F16 | ElemType::Bf16 => 2,
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::I64 => 8,
        }
    }

    /// True for the floating-point value types.
    pub fn is_float(self) -> bool {
        matches!(self, ElemType::F32 | ElemType::F16 | ElemType::Bf16)
    }

    /// Short lowercase name (`f32`, `bf16`, `i64`, ...), used in kernel names.
    pub fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::Bf16 => "bf16",
            ElemType::U8 => "u8",
            ElemType::I32 => "i32",
            ElemType::I64 => "i64",
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The smallest max-length bucket.
pub const MIN_MAX_LEN_BUCKET: u32 = 16;

/// The bucket of a run-time `max_len`: the next power of two >= `max_len`, at least 16.
pub fn max_len_bucket(max_len: u64) -> u32 {
    let b = max_len
        .max(u64::from(MIN_MAX_LEN_BUCKET))
        .next_power_of_two();
    u32::try_from(b).unwrap_or(1 << 31)
}

/// A specialization: everything a generated module depends on besides the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    /// The static inner dims of the values (e.g. `[H]`, `[D]`, `[H, D]`);
    /// their product is the row width. Empty means one element per row.
    pub inner: Vec<u32>,
    /// Max-length bucket ([`max_len_bucket`] of the `max_len` attribute).
    pub max_len_bucket: u32,
    /// Element type of the float values.
    pub dtype: ElemType,
    /// Element type of offsets / lengths.
    pub index: ElemType,
    /// Target architecture.
    pub arch: Arch,
}

impl Spec {
    /// A spec for `inner` dims and a run-time `max_len` (bucketed here).
    pub fn new(
        inner: Vec<u32>,
        max_len: u64,
        dtype: ElemType,
        index: ElemType,
        arch: Arch,
    ) -> Self {
        Spec {
            inner,
            max_len_bucket: max_len_bucket(max_len),
            dtype,
            index,
            arch,
        }
    }

    /// Elements per row (product of the inner dims).
    pub fn row_width(&self) -> u64 {
        self.inner.iter().map(|&d| u64::from(d)).product()
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner: Vec<String> = self.inner.iter().map(ToString::to_string).collect();
        write!(
            f,
            "inner=[{}] max_len<={} dtype={} index={} arch={}",
            inner.join(","),
            self.max_len_bucket,
            self.dtype,
            self.index,
            self.arch
        )
    }
}
