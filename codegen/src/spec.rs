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

    /// The arch whose [`Arch::ptx_target`] name is `name`: the one parser
    /// behind `JAGGED_ARCH`, `jagc --arch` and `specialize(arch = ...)`.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.ptx_target() == name)
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

/// The largest max-length bucket (the largest power of two in a u32).
pub const MAX_MAX_LEN_BUCKET: u32 = jagged_ir::bind::MAX_MAX_LEN as u32;

/// Why a specialization cannot be made: a size the kernels cannot hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `max_len` above the largest bucket (2^31).
    #[error("max_len {max_len} exceeds the largest max-length bucket {MAX_MAX_LEN_BUCKET}")]
    MaxLenTooLarge {
        /// The run-time value.
        max_len: u64,
    },
    /// An inner dim that does not fit the kernels' 32-bit dims.
    #[error(
        "inner dim {index} = {dim} does not fit 32 bits (at most {})",
        u32::MAX
    )]
    InnerDimTooLarge {
        /// Its position among the inner dims.
        index: usize,
        /// Its value.
        dim: u64,
    },
    /// Inner dims whose product (the row width) does not fit 32 bits.
    #[error("inner dims {inner:?} make rows of more than {} elements", u32::MAX)]
    RowTooWide {
        /// The inner dims.
        inner: Vec<u64>,
    },
}

/// The bucket of a run-time `max_len`: the next power of two >= `max_len`,
/// at least 16; values above 2^31 saturate to [`MAX_MAX_LEN_BUCKET`] (never
/// 0: a launch with such a `max_len` is then refused as above its bucket).
/// [`try_max_len_bucket`] refuses them instead.
pub fn max_len_bucket(max_len: u64) -> u32 {
    try_max_len_bucket(max_len).unwrap_or(MAX_MAX_LEN_BUCKET)
}

/// [`max_len_bucket`], with a typed error for `max_len > 2^31`.
pub fn try_max_len_bucket(max_len: u64) -> Result<u32, SpecError> {
    max_len
        .max(u64::from(MIN_MAX_LEN_BUCKET))
        .checked_next_power_of_two()
        .and_then(|b| u32::try_from(b).ok())
        .ok_or(SpecError::MaxLenTooLarge { max_len })
}

/// Inner dims as the kernels' u32 dims: each must fit 32 bits, and so must
/// their product (the row width). Every conversion of a graph's `usize`
/// dims into a [`Spec`] goes through this (a plain `as u32` would turn
/// 4294967300 into 4).
pub fn inner_dims_u32(inner: &[usize]) -> Result<Vec<u32>, SpecError> {
    let dims: Vec<u32> = inner
        .iter()
        .enumerate()
        .map(|(index, &d)| {
            u32::try_from(d).map_err(|_| SpecError::InnerDimTooLarge {
                index,
                dim: d as u64,
            })
        })
        .collect::<Result<_, _>>()?;
    let width = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)));
    if width.is_none_or(|w| w > u64::from(u32::MAX)) {
        return Err(SpecError::RowTooWide {
            inner: inner.iter().map(|&d| d as u64).collect(),
        });
    }
    Ok(dims)
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

    /// A spec for graph-sized `inner` dims and a run-time `max_len`, with a
    /// typed error where a size does not fit the kernels (an inner dim or
    /// the row width above 32 bits, `max_len` above 2^31).
    pub fn try_new(
        inner: &[usize],
        max_len: u64,
        dtype: DType,
        index: DType,
        arch: Arch,
    ) -> Result<Self, SpecError> {
        Ok(Spec {
            inner: inner_dims_u32(inner)?,
            max_len_bucket: try_max_len_bucket(max_len)?,
            dtype,
            index,
            arch,
        })
    }

    /// Elements per row (product of the inner dims; saturates at
    /// `u64::MAX`, which [`Spec::try_new`] rules out).
    pub fn row_width(&self) -> u64 {
        self.inner
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(u64::from(d)))
            .unwrap_or(u64::MAX)
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
