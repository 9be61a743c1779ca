//! Device buffers with an element type, and device jagged tensors.

use crate::RuntimeError;
use crate::backend::{BufferId, KernelArg};
use jagged_ir::{DType, JaggedTensor, TensorData};

/// A host element type with a [`DType`], for typed upload and download.
pub trait Element: Copy {
    /// Its dtype.
    const DTYPE: DType;
    /// Appends its little-endian bytes.
    fn put(self, out: &mut Vec<u8>);
    /// Reads it from `DTYPE.size()` little-endian bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($($ty:ty => $dtype:ident),* $(,)?) => {$(
        impl Element for $ty {
            const DTYPE: DType = DType::$dtype;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$ty>()];
                raw.copy_from_slice(bytes);
                <$ty>::from_le_bytes(raw)
            }
        }
    )*};
}

element!(
    f32 => F32, f64 => F64, i32 => I32, i64 => I64, u8 => U8,
    half::f16 => F16, half::bf16 => BF16,
);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn put(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
    fn get(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

/// The little-endian bytes of a host tensor's elements.
pub fn tensor_bytes(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::F64(v) => to_bytes(v),
        TensorData::F32(v) => to_bytes(v),
        TensorData::F16(v) => to_bytes(v),
        TensorData::BF16(v) => to_bytes(v),
        TensorData::I32(v) => to_bytes(v),
        TensorData::I64(v) => to_bytes(v),
        TensorData::U8(v) => v.clone(),
        TensorData::Bool(v) => to_bytes(v),
    }
}

/// Host tensor elements of `dtype` from little-endian bytes.
pub fn tensor_data(what: &str, dtype: DType, bytes: &[u8]) -> Result<TensorData, RuntimeError> {
    Ok(match dtype {
        DType::F64 => TensorData::F64(from_bytes(what, bytes)?),
        DType::F32 => TensorData::F32(from_bytes(what, bytes)?),
        DType::F16 => TensorData::F16(from_bytes(what, bytes)?),
        DType::BF16 => TensorData::BF16(from_bytes(what, bytes)?),
        DType::I32 => TensorData::I32(from_bytes(what, bytes)?),
        DType::I64 => TensorData::I64(from_bytes(what, bytes)?),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::Bool => TensorData::Bool(from_bytes(what, bytes)?),
    })
}

/// The little-endian bytes of `values`.
pub fn to_bytes<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::DTYPE.size());
    for &value in values {
        value.put(&mut out);
    }
    out
}

/// Elements read from little-endian bytes; an error if the length is not a
/// whole number of elements.
pub fn from_bytes<T: Element>(what: &str, bytes: &[u8]) -> Result<Vec<T>, RuntimeError> {
    let size = T::DTYPE.size();
    if !bytes.len().is_multiple_of(size) {
        return Err(RuntimeError::ByteLength {
            what: what.to_string(),
            bytes: bytes.len(),
            reason: format!("not a multiple of the {}-byte {}", size, T::DTYPE),
        });
    }
    Ok(bytes.chunks_exact(size).map(T::get).collect())
}

/// A buffer on the runtime's device: a handle, an element type and a length.
/// It is freed by `Runtime::free` or when the runtime is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBuffer {
    pub(crate) id: BufferId,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
}

impl DeviceBuffer {
    /// The handle, as passed to kernels.
    pub fn id(&self) -> BufferId {
        self.id
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The size in bytes (an allocated buffer's size always fits a usize).
    pub fn bytes(&self) -> usize {
        self.len.saturating_mul(self.dtype.size())
    }
    /// Whether the buffer holds at least the elements of `shape` (false when
    /// their count overflows a usize): the check that ties a device tensor's
    /// shape to its buffer.
    pub fn holds(&self, shape: &[usize]) -> bool {
        jagged_ir::tensor::shape_elems(shape).is_some_and(|n| n <= self.len)
    }
    /// This buffer as a kernel argument (its device address).
    pub fn arg(&self) -> KernelArg {
        KernelArg::Buffer(self.id)
    }
}

/// The integer type of a jagged tensor's offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffsetType {
    /// `i32` offsets.
    I32,
    /// `i64` offsets.
    I64,
}

impl OffsetType {
    /// The buffer dtype of offsets of this type.
    pub fn dtype(self) -> DType {
        match self {
            OffsetType::I32 => DType::I32,
            OffsetType::I64 => DType::I64,
        }
    }
}

/// A jagged tensor on the host as raw values plus shape metadata: the form
/// that crosses the host-device boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct JaggedBytes {
    /// The values' element type.
    pub dtype: DType,
    /// The static inner dims (`[H, D]` of `values [T, H, D]`).
    pub inner_dims: Vec<usize>,
    /// `T * prod(inner_dims)` elements, little-endian, row-major.
    pub values: Vec<u8>,
    /// The offsets' integer type on the device.
    pub offset_type: OffsetType,
    /// `B + 1` offsets.
    pub offsets: Vec<i64>,
}

impl JaggedBytes {
    /// Elements per row (`prod(inner_dims)`), `None` when the product
    /// overflows a usize.
    pub fn row_elems(&self) -> Option<usize> {
        jagged_ir::tensor::shape_elems(&self.inner_dims)
    }

    /// Checks the jagged invariants: `offsets[0] = 0`, non-decreasing,
    /// `offsets[B] = T`, values holding exactly `T` rows, offsets fitting
    /// their type.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |reason: String| Err(RuntimeError::BadOffsets { reason });
        let Some(&first) = self.offsets.first() else {
            return bad("empty: a jagged tensor has B + 1 >= 1 offsets".to_string());
        };
        if first != 0 {
            return bad(format!("offsets[0] = {first}, expected 0"));
        }
        for (b, pair) in self.offsets.windows(2).enumerate() {
            if pair[1] < pair[0] {
                return bad(format!(
                    "offsets[{}] = {} < offsets[{b}] = {}: offsets must be non-decreasing",
                    b + 1,
                    pair[1],
                    pair[0]
                ));
            }
        }
        let last = self.offsets[self.offsets.len() - 1];
        if self.offset_type == OffsetType::I32 && i32::try_from(last).is_err() {
            return bad(format!("offsets[B] = {last} does not fit i32 offsets"));
        }
        let row_bytes = self
            .row_elems()
            .and_then(|r| r.checked_mul(self.dtype.size()))
            .ok_or_else(|| RuntimeError::ByteLength {
                what: "values".to_string(),
                bytes: self.values.len(),
                reason: format!("rows of inner dims {:?} overflow a usize", self.inner_dims),
            })?;
        let expected = usize::try_from(last)
            .ok()
            .and_then(|t| t.checked_mul(row_bytes));
        if expected != Some(self.values.len()) {
            return Err(RuntimeError::ByteLength {
                what: "values".to_string(),
                bytes: self.values.len(),
                reason: format!(
                    "offsets[B] = {last} rows of {row_bytes} bytes ({} x {:?})",
                    self.dtype, self.inner_dims
                ),
            });
        }
        Ok(())
    }

    /// The byte form of a host jagged tensor of jagged-ir.
    pub fn from_tensor(tensor: &JaggedTensor) -> JaggedBytes {
        let (offset_type, offsets) = match tensor.offsets().data() {
            TensorData::I32(v) => (OffsetType::I32, v.iter().map(|&o| i64::from(o)).collect()),
            // JaggedTensor only holds i32 or i64 offsets.
            other => (
                OffsetType::I64,
                other.to_f64().iter().map(|&o| o as i64).collect(),
            ),
        };
        JaggedBytes {
            dtype: tensor.values().dtype(),
            inner_dims: tensor.inner().to_vec(),
            values: tensor_bytes(tensor.values().data()),
            offset_type,
            offsets,
        }
    }

    /// The host jagged tensor of jagged-ir these bytes hold.
    pub fn to_tensor(&self) -> Result<JaggedTensor, RuntimeError> {
        let values = tensor_data("values", self.dtype, &self.values)?;
        let offsets = match self.offset_type {
            OffsetType::I32 => TensorData::I32(self.offsets.iter().map(|&o| o as i32).collect()),
            OffsetType::I64 => TensorData::I64(self.offsets.clone()),
        };
        Ok(JaggedTensor::from_offsets(
            values,
            &self.inner_dims,
            offsets,
        )?)
    }

    /// The offsets as device bytes of `offset_type`.
    pub(crate) fn offset_bytes(&self) -> Vec<u8> {
        match self.offset_type {
            // validate() checked that every offset (<= offsets[B]) fits i32.
            OffsetType::I32 => self
                .offsets
                .iter()
                .flat_map(|&o| (o as i32).to_le_bytes())
                .collect(),
            OffsetType::I64 => to_bytes(&self.offsets),
        }
    }
}

/// A jagged tensor on the device: a values buffer `[T, inner...]` and an
/// offsets buffer `[B + 1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceJagged {
    pub(crate) values: DeviceBuffer,
    pub(crate) offsets: DeviceBuffer,
    pub(crate) inner_dims: Vec<usize>,
    pub(crate) total_rows: usize,
}

impl DeviceJagged {
    /// The values buffer.
    pub fn values(&self) -> &DeviceBuffer {
        &self.values
    }
    /// The offsets buffer (dtype i32 or i64).
    pub fn offsets(&self) -> &DeviceBuffer {
        &self.offsets
    }
    /// The inner dims.
    pub fn inner_dims(&self) -> &[usize] {
        &self.inner_dims
    }
    /// The values' element type.
    pub fn dtype(&self) -> DType {
        self.values.dtype
    }
    /// The offsets' integer type.
    pub fn offset_type(&self) -> OffsetType {
        match self.offsets.dtype {
            DType::I32 => OffsetType::I32,
            _ => OffsetType::I64,
        }
    }
    /// The number of sequences `B`.
    pub fn batch(&self) -> usize {
        self.offsets.len - 1
    }
    /// The total number of rows `T`.
    pub fn total_rows(&self) -> usize {
        self.total_rows
    }
}
