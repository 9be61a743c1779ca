//! Tensor maps (TMA descriptors) as the emulator encodes them.
//!
//! CUDA's `CUtensorMap` is 128 opaque bytes; the emulator defines its own 128-byte
//! little-endian encoding, which [`TensorMap::encode_tiled`] writes (the counterpart of
//! `cuTensorMapEncodeTiled`, same arguments, same validation) and the interpreter decodes
//! at every `cp.async.bulk.tensor`. `tensormap.replace` edits the same fields in place, so
//! a zero-filled map with every field replaced (what Triton builds on the device) decodes
//! as well.
//!
//! | bytes    | field                                                                 |
//! |----------|-----------------------------------------------------------------------|
//! | 0..8     | global address                                                        |
//! | 8        | rank - 1                                                              |
//! | 9        | element type ([`TensorMapDataType::ptx_code`], PTX `.elemtype` codes) |
//! | 10       | interleave (0 none, 1 16 B, 2 32 B)                                   |
//! | 11       | swizzle (0 none, 1 32 B, 2 64 B, 3 128 B)                             |
//! | 12       | out-of-bounds fill (0 zeros, 1 NaN request)                           |
//! | 13       | L2 promotion (0 none, 1 64 B, 2 128 B, 3 256 B)                       |
//! | 14..16   | zero                                                                  |
//! | 16..56   | global dims, 5 x u64 (dimension 0 first)                              |
//! | 56..88   | global strides in bytes of dimensions 1..=4, 4 x u64                  |
//! | 88..108  | box dims, 5 x u32                                                     |
//! | 108..128 | element strides, 5 x u32                                              |
//!
//! Entries past the rank are ignored.

/// Size of a tensor map in bytes (CUDA's `CUtensorMap`).
pub const TENSOR_MAP_BYTES: usize = 128;

/// Byte offsets of the fields of the encoding (see the module documentation).
pub(crate) mod offset {
    pub const ADDRESS: usize = 0;
    pub const RANK: usize = 8;
    pub const ELEMTYPE: usize = 9;
    pub const INTERLEAVE: usize = 10;
    pub const SWIZZLE: usize = 11;
    pub const FILL: usize = 12;
    pub const L2: usize = 13;
    pub const GLOBAL_DIM: usize = 16;
    pub const GLOBAL_STRIDE: usize = 56;
    pub const BOX_DIM: usize = 88;
    pub const ELEMENT_STRIDE: usize = 108;
}

/// Element types of a tensor map (CUDA's `CUtensorMapDataType`, without the packed types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorMapDataType {
    /// `CU_TENSOR_MAP_DATA_TYPE_UINT8`.
    Uint8,
    /// `CU_TENSOR_MAP_DATA_TYPE_UINT16`.
    Uint16,
    /// `CU_TENSOR_MAP_DATA_TYPE_UINT32`.
    Uint32,
    /// `CU_TENSOR_MAP_DATA_TYPE_INT32`.
    Int32,
    /// `CU_TENSOR_MAP_DATA_TYPE_UINT64`.
    Uint64,
    /// `CU_TENSOR_MAP_DATA_TYPE_INT64`.
    Int64,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT16`.
    Float16,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT32`.
    Float32,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT64`.
    Float64,
    /// `CU_TENSOR_MAP_DATA_TYPE_BFLOAT16`.
    Bfloat16,
    /// `CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ`.
    Float32Ftz,
    /// `CU_TENSOR_MAP_DATA_TYPE_TFLOAT32`.
    Tfloat32,
    /// `CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ`.
    Tfloat32Ftz,
}

const DATA_TYPES: [TensorMapDataType; 13] = {
    use TensorMapDataType::*;
    // In the order of PTX's `tensormap.replace` `.elemtype` codes 0..=12.
    [
        Uint8,
        Uint16,
        Uint32,
        Int32,
        Uint64,
        Int64,
        Float16,
        Float32,
        Float32Ftz,
        Float64,
        Bfloat16,
        Tfloat32,
        Tfloat32Ftz,
    ]
};

impl TensorMapDataType {
    /// Size of one element in bytes.
    pub fn size(self) -> u32 {
        use TensorMapDataType::*;
        match self {
            Uint8 => 1,
            Uint16 | Float16 | Bfloat16 => 2,
            Uint32 | Int32 | Float32 | Float32Ftz | Tfloat32 | Tfloat32Ftz => 4,
            Uint64 | Int64 | Float64 => 8,
        }
    }

    /// Whether the type is a floating-point type (NaN fill allowed).
    pub fn is_float(self) -> bool {
        use TensorMapDataType::*;
        matches!(
            self,
            Float16 | Float32 | Float64 | Bfloat16 | Float32Ftz | Tfloat32 | Tfloat32Ftz
        )
    }

    /// The code of the type in PTX's `tensormap.replace.tile.elemtype` (and in the
    /// encoding): 0 u8, 1 u16, 2 u32, 3 s32, 4 u64, 5 s64, 6 f16, 7 f32, 8 f32.ftz,
    /// 9 f64, 10 bf16, 11 tf32, 12 tf32.ftz.
    pub fn ptx_code(self) -> u8 {
        DATA_TYPES.iter().position(|&t| t == self).unwrap_or(0) as u8
    }

    /// The type of a PTX `.elemtype` code.
    pub fn from_ptx_code(code: u8) -> Option<TensorMapDataType> {
        DATA_TYPES.get(code as usize).copied()
    }

    /// The bits of the NaN that the NaN-request fill writes (the canonical quiet NaN).
    pub(crate) fn nan_bits(self) -> u64 {
        match self.size() {
            2 => 0x7fff,
            4 => 0x7fff_ffff,
            _ => 0x7fff_ffff_ffff_ffff,
        }
    }
}

/// Interleave layouts (`CUtensorMapInterleave`); the emulator supports `None` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorMapInterleave {
    /// `CU_TENSOR_MAP_INTERLEAVE_NONE`.
    None = 0,
    /// `CU_TENSOR_MAP_INTERLEAVE_16B` (not supported by the emulator).
    B16 = 1,
    /// `CU_TENSOR_MAP_INTERLEAVE_32B` (not supported by the emulator).
    B32 = 2,
}

/// Shared-memory swizzle modes (`CUtensorMapSwizzle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorMapSwizzle {
    /// `CU_TENSOR_MAP_SWIZZLE_NONE`.
    None = 0,
    /// `CU_TENSOR_MAP_SWIZZLE_32B`: 16-byte chunks permuted within 32-byte spans.
    B32 = 1,
    /// `CU_TENSOR_MAP_SWIZZLE_64B`.
    B64 = 2,
    /// `CU_TENSOR_MAP_SWIZZLE_128B`.
    B128 = 3,
}

/// Hopper's shared-memory swizzle, shared by TMA boxes and wgmma descriptors: with a
/// span of 32, 64 or 128 bytes, bits 4.. of `addr` (the 16-byte chunk within the span)
/// are XORed with bits 7.. (the 128-byte row modulo 2, 4 or 8); a span of 0 leaves
/// `addr` as it is.
pub(crate) fn swizzle_address(addr: u32, span: u32) -> u32 {
    match span {
        0 => addr,
        _ => addr ^ ((addr >> 3) & (span - 16)),
    }
}

impl TensorMapSwizzle {
    /// The swizzle span in bytes (the most bytes of the box's inner dimension), or
    /// `None` without swizzling.
    pub fn span(self) -> Option<u32> {
        match self {
            Self::None => None,
            Self::B32 => Some(32),
            Self::B64 => Some(64),
            Self::B128 => Some(128),
        }
    }

    /// The shared-memory address where the byte of unswizzled address `addr` lands:
    /// bits 4.. of the address (the 16-byte chunk within the span) are XORed with the
    /// bits 7.. (the 128-byte row modulo 2, 4 or 8).
    pub fn apply(self, addr: u32) -> u32 {
        swizzle_address(addr, self.span().unwrap_or(0))
    }

    fn from_code(c: u8) -> Option<Self> {
        [Self::None, Self::B32, Self::B64, Self::B128]
            .get(c as usize)
            .copied()
    }
}

/// L2 promotion (`CUtensorMapL2promotion`); recorded, no effect in the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorMapL2Promotion {
    /// `CU_TENSOR_MAP_L2_PROMOTION_NONE`.
    None = 0,
    /// `CU_TENSOR_MAP_L2_PROMOTION_L2_64B`.
    L2_64B = 1,
    /// `CU_TENSOR_MAP_L2_PROMOTION_L2_128B`.
    L2_128B = 2,
    /// `CU_TENSOR_MAP_L2_PROMOTION_L2_256B`.
    L2_256B = 3,
}

/// Out-of-bounds fill (`CUtensorMapFloatOOBfill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorMapFloatOobFill {
    /// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE`: out-of-bounds elements read as zeros.
    None = 0,
    /// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA`: they read as NaN (float types).
    NanRequestZeroFma = 1,
}

/// Why a tensor map is invalid (the rules of `cuTensorMapEncodeTiled`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TensorMapError {
    /// `tensorRank` must be 1 to 5.
    #[error("tensor rank {0} is not 1 to 5")]
    Rank(u32),
    /// An array argument does not have the length the rank asks for.
    #[error("{what} has {len} entries, the rank asks for {expected}")]
    Length {
        /// The argument (`globalDim`, `globalStrides`, `boxDim`, `elementStrides`).
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length needed.
        expected: usize,
    },
    /// `globalAddress` must be 16-byte aligned.
    #[error("global address {0:#x} is not 16-byte aligned")]
    AddressAlignment(u64),
    /// `globalDim[dim]` must be 1 to 2^32.
    #[error("globalDim[{dim}] = {value} is not 1 to 2^32")]
    GlobalDim {
        /// The dimension.
        dim: usize,
        /// Its value.
        value: u64,
    },
    /// `globalStrides[dim]` must be a multiple of 16 below 2^40.
    #[error("globalStrides[{dim}] = {value} is not a multiple of 16 below 2^40")]
    GlobalStride {
        /// The index in `globalStrides` (the stride of dimension `dim + 1`).
        dim: usize,
        /// Its value.
        value: u64,
    },
    /// `boxDim[dim]` must be 1 to 256.
    #[error("boxDim[{dim}] = {value} is not 1 to 256")]
    BoxDim {
        /// The dimension.
        dim: usize,
        /// Its value.
        value: u32,
    },
    /// Without interleave, `boxDim[0]` times the element size must be a multiple of 16.
    #[error("the box's inner dimension is {bytes} bytes, not a multiple of 16")]
    BoxInnerBytes {
        /// `boxDim[0]` times the element size.
        bytes: u32,
    },
    /// With swizzling, the box's inner dimension must fit the swizzle span.
    #[error("the box's inner dimension is {bytes} bytes, more than the {span}-byte swizzle span")]
    SwizzleSpan {
        /// `boxDim[0]` times the element size.
        bytes: u32,
        /// The span of the swizzle mode.
        span: u32,
    },
    /// `elementStrides[dim]` must be 1 to 8.
    #[error("elementStrides[{dim}] = {value} is not 1 to 8")]
    ElementStride {
        /// The dimension.
        dim: usize,
        /// Its value.
        value: u32,
    },
    /// NaN fill needs a floating-point element type.
    #[error("NaN out-of-bounds fill needs a float element type, not {0:?}")]
    NanFillType(TensorMapDataType),
    /// A field holds a code no mode has, or a mode the emulator does not implement.
    #[error("{0}")]
    Unsupported(String),
}

/// The emulator's 128-byte tensor map; pass it to a kernel as
/// [`crate::KernelArg::TensorMap`] (a `.param .align 64 .b8 name[128]` parameter) or copy
/// its [`TensorMap::bytes`] to device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMap(pub [u8; TENSOR_MAP_BYTES]);

/// A decoded, validated tiled tensor map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tiled {
    pub ty: TensorMapDataType,
    pub rank: usize,
    pub address: u64,
    pub dims: [u64; 5],
    /// Byte strides of every dimension (dimension 0's is the element size).
    pub strides: [u64; 5],
    pub boxes: [u32; 5],
    pub estrides: [u32; 5],
    pub swizzle: TensorMapSwizzle,
    pub nan_fill: bool,
}

impl Tiled {
    /// Elements of the box along `d` (`ceil(boxDim / elementStride)`).
    pub fn box_len(&self, d: usize) -> u32 {
        self.boxes[d].div_ceil(self.estrides[d])
    }

    /// Bytes of the box in shared memory.
    pub fn box_bytes(&self) -> u64 {
        (0..self.rank)
            .map(|d| self.box_len(d) as u64)
            .product::<u64>()
            * self.ty.size() as u64
    }

    fn validate(&self, interleave: u8, l2: u8) -> Result<(), TensorMapError> {
        if interleave != 0 {
            return Err(TensorMapError::Unsupported(format!(
                "interleave mode {interleave} (the emulator implements interleave none only)"
            )));
        }
        if l2 > 3 {
            return Err(TensorMapError::Unsupported(format!(
                "L2 promotion code {l2}"
            )));
        }
        if !self.address.is_multiple_of(16) {
            return Err(TensorMapError::AddressAlignment(self.address));
        }
        for d in 0..self.rank {
            if self.dims[d] == 0 || self.dims[d] > 1 << 32 {
                return Err(TensorMapError::GlobalDim {
                    dim: d,
                    value: self.dims[d],
                });
            }
            if self.boxes[d] == 0 || self.boxes[d] > 256 {
                return Err(TensorMapError::BoxDim {
                    dim: d,
                    value: self.boxes[d],
                });
            }
            if self.estrides[d] == 0 || self.estrides[d] > 8 {
                return Err(TensorMapError::ElementStride {
                    dim: d,
                    value: self.estrides[d],
                });
            }
            let s = self.strides[d];
            if d > 0 && (!s.is_multiple_of(16) || s >= 1 << 40) {
                return Err(TensorMapError::GlobalStride {
                    dim: d - 1,
                    value: s,
                });
            }
        }
        let inner = self.boxes[0] * self.ty.size();
        if !inner.is_multiple_of(16) {
            return Err(TensorMapError::BoxInnerBytes { bytes: inner });
        }
        if let Some(span) = self.swizzle.span()
            && inner > span
        {
            return Err(TensorMapError::SwizzleSpan { bytes: inner, span });
        }
        if self.nan_fill && !self.ty.is_float() {
            return Err(TensorMapError::NanFillType(self.ty));
        }
        Ok(())
    }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(w)
}

impl TensorMap {
    /// Encodes a tiled tensor map; the arguments and their rules are those of
    /// `cuTensorMapEncodeTiled`: `global_dim`, `box_dim` and `element_strides` have
    /// `tensor_rank` entries (dimension 0 innermost), `global_strides` the byte strides of
    /// dimensions 1.. (`tensor_rank - 1` entries). Interleaved layouts are not supported.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_tiled(
        tensor_data_type: TensorMapDataType,
        tensor_rank: u32,
        global_address: u64,
        global_dim: &[u64],
        global_strides: &[u64],
        box_dim: &[u32],
        element_strides: &[u32],
        interleave: TensorMapInterleave,
        swizzle: TensorMapSwizzle,
        l2_promotion: TensorMapL2Promotion,
        oob_fill: TensorMapFloatOobFill,
    ) -> Result<TensorMap, TensorMapError> {
        if !(1..=5).contains(&tensor_rank) {
            return Err(TensorMapError::Rank(tensor_rank));
        }
        let rank = tensor_rank as usize;
        let lengths = [
            ("globalDim", global_dim.len(), rank),
            ("globalStrides", global_strides.len(), rank - 1),
            ("boxDim", box_dim.len(), rank),
            ("elementStrides", element_strides.len(), rank),
        ];
        for (what, len, expected) in lengths {
            if len != expected {
                return Err(TensorMapError::Length {
                    what,
                    len,
                    expected,
                });
            }
        }
        let mut b = [0u8; TENSOR_MAP_BYTES];
        b[offset::ADDRESS..offset::ADDRESS + 8].copy_from_slice(&global_address.to_le_bytes());
        b[offset::RANK] = (rank - 1) as u8;
        b[offset::ELEMTYPE] = tensor_data_type.ptx_code();
        b[offset::INTERLEAVE] = interleave as u8;
        b[offset::SWIZZLE] = swizzle as u8;
        b[offset::FILL] = oob_fill as u8;
        b[offset::L2] = l2_promotion as u8;
        for d in 0..rank {
            let o = offset::GLOBAL_DIM + 8 * d;
            b[o..o + 8].copy_from_slice(&global_dim[d].to_le_bytes());
            let o = offset::BOX_DIM + 4 * d;
            b[o..o + 4].copy_from_slice(&box_dim[d].to_le_bytes());
            let o = offset::ELEMENT_STRIDE + 4 * d;
            b[o..o + 4].copy_from_slice(&element_strides[d].to_le_bytes());
        }
        for (d, s) in global_strides.iter().enumerate() {
            let o = offset::GLOBAL_STRIDE + 8 * d;
            b[o..o + 8].copy_from_slice(&s.to_le_bytes());
        }
        let map = TensorMap(b);
        map.decode()?;
        Ok(map)
    }

    /// The 128 bytes of the map.
    pub fn bytes(&self) -> &[u8; TENSOR_MAP_BYTES] {
        &self.0
    }

    /// Decodes and validates the map.
    pub(crate) fn decode(&self) -> Result<Tiled, TensorMapError> {
        let b = &self.0;
        let rank = b[offset::RANK] as usize + 1;
        if rank > 5 {
            return Err(TensorMapError::Rank(rank as u32));
        }
        let ty = TensorMapDataType::from_ptx_code(b[offset::ELEMTYPE]).ok_or_else(|| {
            TensorMapError::Unsupported(format!("element type code {}", b[offset::ELEMTYPE]))
        })?;
        let swizzle = TensorMapSwizzle::from_code(b[offset::SWIZZLE]).ok_or_else(|| {
            TensorMapError::Unsupported(format!("swizzle mode code {}", b[offset::SWIZZLE]))
        })?;
        let nan_fill = match b[offset::FILL] {
            0 => false,
            1 => true,
            c => return Err(TensorMapError::Unsupported(format!("fill mode code {c}"))),
        };
        let mut t = Tiled {
            ty,
            rank,
            address: u64_at(b, offset::ADDRESS),
            dims: [0; 5],
            strides: [0; 5],
            boxes: [0; 5],
            estrides: [0; 5],
            swizzle,
            nan_fill,
        };
        t.strides[0] = ty.size() as u64;
        for d in 0..rank {
            t.dims[d] = u64_at(b, offset::GLOBAL_DIM + 8 * d);
            t.boxes[d] = u32_at(b, offset::BOX_DIM + 4 * d);
            t.estrides[d] = u32_at(b, offset::ELEMENT_STRIDE + 4 * d);
            if d > 0 {
                t.strides[d] = u64_at(b, offset::GLOBAL_STRIDE + 8 * (d - 1));
            }
        }
        t.validate(b[offset::INTERLEAVE], b[offset::L2])?;
        Ok(t)
    }
}
