//! Host tensors: dense arrays and jagged tensors (values plus checked offsets).
//!
//! These are what users hand to the evaluator and the runtime (`jagc` reads
//! and writes them as `.npy` files, outside this crate). A [`JaggedTensor`]
//! can only be built with valid offsets: `offsets[0] == 0`, non-decreasing, no
//! negative entry, `offsets[B] == T`, and values of `T * prod(inner)`
//! elements; each violation is its own [`TensorError`] variant naming the
//! argument and the first bad index.

use half::{bf16, f16};

use crate::dtype::DType;

/// The elements of a tensor, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// f64 elements.
    F64(Vec<f64>),
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// u8 elements.
    U8(Vec<u8>),
    /// bool elements.
    Bool(Vec<bool>),
}

impl TensorData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F64(_) => DType::F64,
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F64(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f64 (exact for every dtype; i64 beyond 2^53 rounds).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            TensorData::F64(v) => v.clone(),
            TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
        }
    }

    /// Elements of `dtype` from f64 values, rounded as [`DType::round`] does.
    pub fn from_f64(dtype: DType, values: &[f64]) -> TensorData {
        let it = values.iter().copied();
        match dtype {
            DType::F64 => TensorData::F64(it.collect()),
            DType::F32 => TensorData::F32(it.map(|x| x as f32).collect()),
            DType::F16 => TensorData::F16(it.map(f16::from_f64).collect()),
            DType::BF16 => TensorData::BF16(it.map(bf16::from_f64).collect()),
            DType::I32 => TensorData::I32(it.map(|x| x as i32).collect()),
            DType::I64 => TensorData::I64(it.map(|x| x as i64).collect()),
            DType::U8 => TensorData::U8(it.map(|x| x as u8).collect()),
            DType::Bool => TensorData::Bool(it.map(|x| x != 0.0).collect()),
        }
    }

    /// The elements as i64 (exact), for i32 / i64 data (offsets, lengths);
    /// `None` for other dtypes.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        match self {
            TensorData::I32(v) => Some(v.iter().map(|&x| i64::from(x)).collect()),
            TensorData::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// The elements as little-endian bytes ([`DType::size`] each; a bool is 0 or 1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::U8(v) => v.clone(),
            TensorData::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
        }
    }

    /// Elements of `dtype` from little-endian bytes ([`DType::size`] each; a
    /// bool is any nonzero byte); `None` unless `bytes.len()` is a multiple of
    /// the size.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Option<TensorData> {
        fn chunks<const K: usize, T>(bytes: &[u8], f: fn([u8; K]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(K)
                .map(|c| {
                    let mut a = [0u8; K];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect()
        }
        if !bytes.len().is_multiple_of(dtype.size()) {
            return None;
        }
        Some(match dtype {
            DType::F64 => TensorData::F64(chunks(bytes, f64::from_le_bytes)),
            DType::F32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)),
            DType::F16 => TensorData::F16(chunks(bytes, f16::from_le_bytes)),
            DType::BF16 => TensorData::BF16(chunks(bytes, bf16::from_le_bytes)),
            DType::I32 => TensorData::I32(chunks(bytes, i32::from_le_bytes)),
            DType::I64 => TensorData::I64(chunks(bytes, i64::from_le_bytes)),
            DType::U8 => TensorData::U8(bytes.to_vec()),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        })
    }
}

/// Why a host tensor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The data does not have `prod(shape)` elements.
    #[error("{arg}: shape {shape:?} needs {expected} elements, data has {found}")]
    DataLength {
        /// The argument.
        arg: String,
        /// The shape.
        shape: Vec<usize>,
        /// `prod(shape)`.
        expected: usize,
        /// Elements present.
        found: usize,
    },
    /// Offsets or lengths that are not i32 or i64.
    #[error("{arg}: dtype {dtype} is not an index type (i32 or i64)")]
    IndexDtype {
        /// The argument.
        arg: String,
        /// The dtype found.
        dtype: DType,
    },
    /// Offsets with no entry (they need `B + 1 >= 1`).
    #[error("{arg}: offsets are empty; they need B + 1 >= 1 entries")]
    EmptyOffsets {
        /// The argument.
        arg: String,
    },
    /// `offsets[0] != 0`.
    #[error("{arg}[0] = {value}, must be 0")]
    FirstOffsetNotZero {
        /// The argument.
        arg: String,
        /// The value found.
        value: i64,
    },
    /// A negative offset.
    #[error("{arg}[{index}] = {value} is negative")]
    NegativeOffset {
        /// The argument.
        arg: String,
        /// The first negative index.
        index: usize,
        /// Its value.
        value: i64,
    },
    /// `offsets[index] < offsets[index - 1]`.
    #[error("{arg}[{index}] = {value} is less than {arg}[{}] = {previous}", index - 1)]
    DecreasingOffsets {
        /// The argument.
        arg: String,
        /// The first index where offsets decrease.
        index: usize,
        /// Its value.
        value: i64,
        /// The value before it.
        previous: i64,
    },
    /// `offsets[B] != T`.
    #[error("{arg}[{index}] = {value} (the last offset) must equal the number of rows {rows}")]
    LastOffsetMismatch {
        /// The argument.
        arg: String,
        /// `B`.
        index: usize,
        /// `offsets[B]`.
        value: i64,
        /// `T`, the rows the values have.
        rows: usize,
    },
    /// A negative length.
    #[error("{arg}[{index}] = {value} is a negative length")]
    NegativeLength {
        /// The argument.
        arg: String,
        /// The first negative index.
        index: usize,
        /// Its value.
        value: i64,
    },
    /// Lengths whose sum does not fit the offsets dtype.
    #[error("{arg}: the sum of lengths up to index {index} overflows {dtype}")]
    OffsetsOverflow {
        /// The argument.
        arg: String,
        /// The first index where the running sum overflows.
        index: usize,
        /// The offsets dtype.
        dtype: DType,
    },
    /// Values whose element count is not `rows * prod(inner)`.
    #[error("{arg}: {found} elements are not {rows} rows of inner dims {inner:?} ({expected})")]
    ValuesLength {
        /// The argument.
        arg: String,
        /// Rows required (`T`, from the offsets).
        rows: usize,
        /// The inner dims.
        inner: Vec<usize>,
        /// `rows * prod(inner)`.
        expected: usize,
        /// Elements present.
        found: usize,
    },
    /// A tensor of the wrong rank or shape.
    #[error("{arg}: shape {found:?} does not fit {expected}")]
    Shape {
        /// The argument.
        arg: String,
        /// The shape required, in words.
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A shape (or rows times a row) with more elements than a `usize` holds.
    #[error("{arg}: {what} has more elements than fit in a usize")]
    SizeOverflow {
        /// The argument.
        arg: String,
        /// The sizes multiplied, in words (`shape [..]`, `3 rows of [..]`).
        what: String,
    },
    /// A conversion whose f64 working copy would exceed the reference's
    /// memory budget ([`crate::eval::EvalOptions`]).
    #[error(
        "{arg}: {bytes} bytes of f64 values exceed the memory budget of {budget} bytes (set {})",
        crate::eval::MEMORY_BUDGET_ENV
    )]
    OverBudget {
        /// The argument.
        arg: String,
        /// The bytes needed.
        bytes: u64,
        /// The budget.
        budget: u64,
    },
}

/// The entries of the index tensor `data` (argument `arg`) as i64; an error unless it is i32 or i64.
fn index_values(arg: &str, data: &TensorData) -> Result<Vec<i64>, TensorError> {
    data.to_i64().ok_or_else(|| TensorError::IndexDtype {
        arg: arg.to_string(),
        dtype: data.dtype(),
    })
}

/// The entries of the `offsets` argument as i64, checked by [`check_offsets`].
fn checked_offsets(offsets: &TensorData) -> Result<Vec<i64>, TensorError> {
    let index = index_values("offsets", offsets)?;
    check_offsets("offsets", &index, None)?;
    Ok(index)
}

/// Checks offsets: non-empty, `offsets[0] == 0`, no negative entry,
/// non-decreasing, and `offsets[B] == rows` when `rows` is given.
pub fn check_offsets(arg: &str, offsets: &[i64], rows: Option<usize>) -> Result<(), TensorError> {
    let arg = || arg.to_string();
    let Some(&first) = offsets.first() else {
        return Err(TensorError::EmptyOffsets { arg: arg() });
    };
    if first != 0 {
        return Err(TensorError::FirstOffsetNotZero {
            arg: arg(),
            value: first,
        });
    }
    for (index, pair) in offsets.windows(2).enumerate() {
        let (previous, value) = (pair[0], pair[1]);
        if value < 0 {
            return Err(TensorError::NegativeOffset {
                arg: arg(),
                index: index + 1,
                value,
            });
        }
        if value < previous {
            return Err(TensorError::DecreasingOffsets {
                arg: arg(),
                index: index + 1,
                value,
                previous,
            });
        }
    }
    let last = offsets[offsets.len() - 1];
    match rows {
        Some(rows) if usize::try_from(last) != Ok(rows) => Err(TensorError::LastOffsetMismatch {
            arg: arg(),
            index: offsets.len() - 1,
            value: last,
            rows,
        }),
        _ => Ok(()),
    }
}

/// Checks lengths that become offsets of `dtype` (i32 or i64), as
/// `complete_cumsum` makes them: no negative length, and every partial sum
/// fits `dtype`. Returns the offsets `[0, l0, l0 + l1, ...]`.
///
/// Every executor of `complete_cumsum` checks its lengths with this before
/// computing (the kernels would wrap around, the reference would saturate).
pub fn check_lengths(arg: &str, lengths: &[i64], dtype: DType) -> Result<Vec<i64>, TensorError> {
    let limit = if dtype == DType::I32 {
        i64::from(i32::MAX)
    } else {
        i64::MAX
    };
    let mut offsets = Vec::with_capacity(lengths.len() + 1);
    offsets.push(0i64);
    for (index, &len) in lengths.iter().enumerate() {
        if len < 0 {
            return Err(TensorError::NegativeLength {
                arg: arg.to_string(),
                index,
                value: len,
            });
        }
        let next = offsets[index]
            .checked_add(len)
            .filter(|&o| o <= limit)
            .ok_or_else(|| TensorError::OffsetsOverflow {
                arg: arg.to_string(),
                index,
                dtype,
            })?;
        offsets.push(next);
    }
    Ok(offsets)
}

/// The number of elements of `shape` (its product), or `None` when it
/// overflows `usize`. Every product of sizes goes through a checked product
/// like this one.
pub fn shape_elems(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// [`shape_elems`] of `rows` rows of `inner` dims, as a typed error naming `arg`.
fn rows_elems(arg: &str, rows: usize, inner: &[usize]) -> Result<usize, TensorError> {
    shape_elems(inner)
        .and_then(|row| row.checked_mul(rows))
        .ok_or_else(|| TensorError::SizeOverflow {
            arg: arg.to_string(),
            what: format!("{rows} rows of {inner:?}"),
        })
}

/// Checks that `elems` f64 values fit the reference's memory budget (the
/// environment's, see [`crate::eval::EvalOptions::from_env`]; a malformed
/// variable falls back to the default) before a host conversion allocates them.
fn check_budget(arg: &str, elems: usize) -> Result<(), TensorError> {
    let budget = crate::eval::EvalOptions::from_env()
        .unwrap_or_default()
        .memory_budget;
    let bytes = (elems as u64).saturating_mul(8);
    if bytes > budget {
        return Err(TensorError::OverBudget {
            arg: arg.to_string(),
            bytes,
            budget,
        });
    }
    Ok(())
}

/// A dense row-major tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseTensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl DenseTensor {
    /// A tensor of `shape` holding `data` (`prod(shape)` elements).
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Self, TensorError> {
        let expected = shape_elems(&shape).ok_or_else(|| TensorError::SizeOverflow {
            arg: "data".to_string(),
            what: format!("shape {shape:?}"),
        })?;
        if data.len() != expected {
            return Err(TensorError::DataLength {
                arg: "data".to_string(),
                shape,
                expected,
                found: data.len(),
            });
        }
        Ok(DenseTensor { shape, data })
    }

    /// A tensor of `shape` from f64 values rounded to `dtype`.
    pub fn from_f64(dtype: DType, shape: Vec<usize>, values: &[f64]) -> Result<Self, TensorError> {
        Self::new(shape, TensorData::from_f64(dtype, values))
    }

    /// The dims.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The elements as f64.
    pub fn to_f64(&self) -> Vec<f64> {
        self.data.to_f64()
    }
}

/// A jagged tensor: `values [T, inner...]` and `offsets [B + 1]` (i32 or i64),
/// always valid.
#[derive(Clone, Debug, PartialEq)]
pub struct JaggedTensor {
    values: DenseTensor,
    offsets: DenseTensor,
}

impl JaggedTensor {
    /// A jagged tensor from its flat values, inner dims and offsets.
    pub fn from_offsets(
        values: TensorData,
        inner: &[usize],
        offsets: TensorData,
    ) -> Result<Self, TensorError> {
        let index = checked_offsets(&offsets)?;
        // Checked above: the offsets are non-negative.
        let rows = index[index.len() - 1] as usize;
        let expected = rows_elems("values", rows, inner)?;
        if values.len() != expected {
            return Err(TensorError::ValuesLength {
                arg: "values".to_string(),
                rows,
                inner: inner.to_vec(),
                expected,
                found: values.len(),
            });
        }
        let mut shape = vec![rows];
        shape.extend_from_slice(inner);
        let b1 = index.len();
        Ok(JaggedTensor {
            values: DenseTensor::new(shape, values)?,
            offsets: DenseTensor::new(vec![b1], offsets)?,
        })
    }

    /// A jagged tensor from its flat values, inner dims and per-sequence lengths
    /// (i32 or i64; the offsets get the same dtype).
    pub fn from_lengths(
        values: TensorData,
        inner: &[usize],
        lengths: TensorData,
    ) -> Result<Self, TensorError> {
        let dtype = lengths.dtype();
        let lens = index_values("lengths", &lengths)?;
        let offsets = check_lengths("lengths", &lens, dtype)?;
        let offsets = if dtype == DType::I32 {
            // Every offset is at most i32::MAX (checked above).
            TensorData::I32(offsets.iter().map(|&o| o as i32).collect())
        } else {
            TensorData::I64(offsets)
        };
        Self::from_offsets(values, inner, offsets)
    }

    /// The values `[T, inner...]`.
    pub fn values(&self) -> &DenseTensor {
        &self.values
    }

    /// The offsets `[B + 1]`.
    pub fn offsets(&self) -> &DenseTensor {
        &self.offsets
    }

    /// The offsets as indices.
    pub fn offsets_usize(&self) -> Vec<usize> {
        // Offsets are validated non-negative.
        self.offsets.to_f64().iter().map(|&o| o as usize).collect()
    }

    /// The number of sequences `B`.
    pub fn batch(&self) -> usize {
        self.offsets.shape[0] - 1
    }

    /// The inner dims.
    pub fn inner(&self) -> &[usize] {
        &self.values.shape[1..]
    }

    /// The padded dense form `[B, max_len, inner...]`: row `i` of sequence `b` for
    /// `i < min(L_b, max_len)`, `padding_value` elsewhere (OPS.md `jagged_to_padded_dense`).
    /// A size overflow (`B * max_len * row`) is a typed error.
    pub fn to_padded_dense(
        &self,
        max_len: usize,
        padding_value: f64,
    ) -> Result<DenseTensor, TensorError> {
        let offsets = self.offsets_usize();
        let row: usize = self.inner().iter().product();
        let values = self.values.to_f64();
        let mut shape = vec![self.batch(), max_len];
        shape.extend_from_slice(self.inner());
        let elems = shape_elems(&shape).ok_or_else(|| TensorError::SizeOverflow {
            arg: "dense".to_string(),
            what: format!("shape {shape:?}"),
        })?;
        check_budget("dense", elems)?;
        let mut out = vec![padding_value; elems];
        for b in 0..self.batch() {
            let n = (offsets[b + 1] - offsets[b]).min(max_len);
            let src = &values[offsets[b] * row..(offsets[b] + n) * row];
            out[b * max_len * row..(b * max_len + n) * row].copy_from_slice(src);
        }
        Ok(DenseTensor {
            shape,
            data: TensorData::from_f64(self.values.dtype(), &out),
        })
    }

    /// The jagged form of a padded `dense [B, N, inner...]` on `offsets`:
    /// `values[offsets[b] + i] = dense[b, i]` for `i < min(L_b, N)`, 0 elsewhere
    /// (OPS.md `dense_to_jagged`).
    pub fn from_padded_dense(
        dense: &DenseTensor,
        offsets: TensorData,
    ) -> Result<Self, TensorError> {
        let index = checked_offsets(&offsets)?;
        let batch = index.len() - 1;
        if dense.shape.len() < 2 || dense.shape[0] != batch {
            return Err(TensorError::Shape {
                arg: "dense".to_string(),
                expected: format!("[B = {batch}, N, inner...]"),
                found: dense.shape.clone(),
            });
        }
        let (max_len, inner) = (dense.shape[1], &dense.shape[2..]);
        // Checked: an empty dense tensor may have inner dims whose product
        // overflows (`[1, 0, 2^32, 2^32]`).
        let row = rows_elems("dense", 1, inner)?;
        let src = dense.to_f64();
        let rows = index[batch] as usize;
        let elems = rows_elems("offsets", rows, inner)?;
        check_budget("offsets", elems)?;
        let mut values = vec![0.0; elems];
        for b in 0..batch {
            let (start, len) = (index[b] as usize, (index[b + 1] - index[b]) as usize);
            let n = len.min(max_len);
            values[start * row..(start + n) * row]
                .copy_from_slice(&src[b * max_len * row..(b * max_len + n) * row]);
        }
        Self::from_offsets(TensorData::from_f64(dense.dtype(), &values), inner, offsets)
    }
}
