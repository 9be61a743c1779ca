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

/// Element types of the buffers kernels read and write: jagged-ir's dtype.
pub use jagged_ir::DType;

/// Bytes per element of `dtype`, as the u32 the kernel IR computes with.
pub fn elem_bytes(dtype: DType) -> u32 {
    dtype.size() as u32
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
    pub dtype: DType,
    /// Element type of offsets / lengths.
    pub index: DType,
    /// Target architecture.
    pub arch: Arch,
}

impl Spec {
    /// A spec for `inner` dims and a run-time `max_len` (bucketed here).
    pub fn new(inner: Vec<u32>, max_len: u64, dtype: DType, index: DType, arch: Arch) -> Self {
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
