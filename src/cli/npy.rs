//! NumPy `.npy` files for `jagc`: raw arrays (dtype, shape, little-endian
//! bytes) and host tensors, read and written through the [`npyz`] crate.
//!
//! Read: format versions 1.0, 2.0 and 3.0; the dtypes `b1 u1 u2 u4 u8 i4 i8
//! f2 f4 f8` in either byte order (big-endian data is converted to
//! little-endian); C order, or Fortran order when at most one dimension is
//! above 1 (the same bytes); at most [`MAX_DIMS`] dimensions. Written: C
//! order, little-endian, format 1.0.
//!
//! bf16 is our convention, not NumPy's (NumPy has no bfloat16): bf16 data is
//! written as `<u2` (its raw bits, as `uint16`) and a `<u2` file reads back as
//! [`NpyDtype::U16`]; callers that expect bf16 reinterpret it ([`to_dense`]
//! reads every `u2` file as bf16, the only 16-bit unsigned type tensors have).
//! In NumPy: `np.save(path, t.view(torch.uint16).numpy())` or
//! `bits.view(ml_dtypes.bfloat16)`.
//!
//! Every error names the file; malformed contents are errors, never panics
//! or hangs. The header is checked before npyz sees it: npyz allocates the
//! header length it is given, multiplies the dimensions without overflow
//! checks, and its header parser is exponential in the nesting of `{` and
//! `[`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use half::f16;
use jagged_ir::{DType, DenseTensor, TensorData, TensorError};
use npyz::{Order, TypeChar, TypeStr, WriterBuilder};

/// The most dimensions an array may have (NumPy 2's limit, `NPY_MAXDIMS`).
pub const MAX_DIMS: usize = 64;

/// The most `{` and `[` a header may hold, strings included. The parser
/// npyz uses (py_literal, on pest) takes time exponential in how deeply they
/// nest (eleven `{` took seconds); a plain array's header has one `{` (and
/// a `[` for a shape written as a list), a structured dtype a few more.
const MAX_HEADER_BRACKETS: usize = 4;

/// The element type of an `.npy` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpyDtype {
    /// `|b1`: one byte, 0 or 1 from NumPy (other bytes are kept as they are).
    Bool,
    /// `|u1`.
    U8,
    /// `u2`; also the on-disk form of bf16.
    U16,
    /// `u4`.
    U32,
    /// `u8`.
    U64,
    /// `i4`.
    I32,
    /// `i8`.
    I64,
    /// `f2` (IEEE half).
    F16,
    /// bfloat16: written as `<u2`, never produced by [`read`].
    BF16,
    /// `f4`.
    F32,
    /// `f8`.
    F64,
}

impl NpyDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::Bool | NpyDtype::U8 => 1,
            NpyDtype::U16 | NpyDtype::F16 | NpyDtype::BF16 => 2,
            NpyDtype::U32 | NpyDtype::I32 | NpyDtype::F32 => 4,
            NpyDtype::U64 | NpyDtype::I64 | NpyDtype::F64 => 8,
        }
    }

    /// The NumPy `descr` string this dtype is written with (always little-endian).
    pub fn descr(self) -> &'static str {
        match self {
            NpyDtype::Bool => "|b1",
            NpyDtype::U8 => "|u1",
            NpyDtype::U16 | NpyDtype::BF16 => "<u2",
            NpyDtype::U32 => "<u4",
            NpyDtype::U64 => "<u8",
            NpyDtype::I32 => "<i4",
            NpyDtype::I64 => "<i8",
            NpyDtype::F16 => "<f2",
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
        }
    }

    /// The dtype of a type string read from a file, if supported (any byte
    /// order; no time units).
    fn from_type_str(ty: &TypeStr) -> Option<NpyDtype> {
        if ty.time_units().is_some() {
            return None;
        }
        Some(match (ty.type_char(), ty.size_field()) {
            (TypeChar::Bool, 1) => NpyDtype::Bool,
            (TypeChar::Uint, 1) => NpyDtype::U8,
            (TypeChar::Uint, 2) => NpyDtype::U16,
            (TypeChar::Uint, 4) => NpyDtype::U32,
            (TypeChar::Uint, 8) => NpyDtype::U64,
            (TypeChar::Int, 4) => NpyDtype::I32,
            (TypeChar::Int, 8) => NpyDtype::I64,
            (TypeChar::Float, 2) => NpyDtype::F16,
            (TypeChar::Float, 4) => NpyDtype::F32,
            (TypeChar::Float, 8) => NpyDtype::F64,
            _ => return None,
        })
    }

    /// The npyz dtype this dtype is written with.
    fn npyz_dtype(self) -> npyz::DType {
        // Constant, valid type strings (the round-trip tests write each one).
        let ty = self.descr().parse().expect("a valid .npy type string");
        npyz::DType::Plain(ty)
    }
}

impl fmt::Display for NpyDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            NpyDtype::Bool => "bool",
            NpyDtype::U8 => "u8",
            NpyDtype::U16 => "u16",
            NpyDtype::U32 => "u32",
            NpyDtype::U64 => "u64",
            NpyDtype::I32 => "i32",
            NpyDtype::I64 => "i64",
            NpyDtype::F16 => "f16",
            NpyDtype::BF16 => "bf16",
            NpyDtype::F32 => "f32",
            NpyDtype::F64 => "f64",
        };
        f.write_str(name)
    }
}

/// A dense C-order array as stored in an `.npy` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyArray {
    /// The element type.
    pub dtype: NpyDtype,
    /// The dimensions; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements, little-endian, in C order: `len() * dtype.size()` bytes.
    pub data: Vec<u8>,
}

impl NpyArray {
    /// The number of elements (the product of the shape; 1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an `.npy` file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file does not start with the `.npy` magic string.
    #[error("{path}: not an .npy file (bad magic string)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("{path}: unsupported .npy format version {major}.{minor}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The header is malformed (npyz's reason, or ours).
    #[error("{path}: bad .npy header: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A dtype this module does not handle (structured, complex, i1, datetime, ...).
    #[error(
        "{path}: unsupported dtype {descr} (supported: b1 u1 u2 u4 u8 i4 i8 f2 f4 f8, either byte order)"
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The `descr` found in the header.
        descr: String,
    },
    /// The array is stored in Fortran (column-major) order with more than
    /// one dimension above 1.
    #[error(
        "{path}: array is in Fortran order; only C order is supported (save np.ascontiguousarray(a))"
    )]
    FortranOrder {
        /// The file.
        path: PathBuf,
    },
    /// More than [`MAX_DIMS`] dimensions.
    #[error("{path}: {ndim} dimensions (at most {MAX_DIMS})")]
    TooManyDims {
        /// The file.
        path: PathBuf,
        /// The number of dimensions.
        ndim: usize,
    },
    /// The shape has more elements (or bytes) than an address space holds.
    #[error("{path}: the shape {shape:?} is too large")]
    ShapeOverflow {
        /// The file.
        path: PathBuf,
        /// The dimensions.
        shape: Vec<u64>,
    },
    /// The data does not have the size the header or the array claims.
    #[error("{path}: expected {expected} data bytes, found {found}")]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Bytes implied by shape and dtype.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// npyz could not read the data.
    #[error("{path}: bad .npy data: {reason}")]
    BadData {
        /// The file.
        path: PathBuf,
        /// npyz's reason.
        reason: String,
    },
    /// An `.npy` dtype host tensors do not have (u32, u64).
    #[error("{path}: .npy dtype {dtype} is not a tensor dtype")]
    NotATensorDtype {
        /// The file.
        path: PathBuf,
        /// The dtype found.
        dtype: NpyDtype,
    },
    /// The array is not a valid host tensor.
    #[error("{path}: {source}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// Why.
        source: TensorError,
    },
}

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Reads an `.npy` file.
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray, NpyError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes, path)
}

/// Decodes the bytes of an `.npy` file; `path` only names the file in errors.
pub fn decode(bytes: &[u8], path: &Path) -> Result<NpyArray, NpyError> {
    let at = || path.to_path_buf();
    let bad_header = |reason: String| NpyError::BadHeader { path: at(), reason };
    let (header_start, header_end) = check_preamble(bytes, path)?;
    let header = &bytes[header_start..header_end];
    let brackets = header.iter().filter(|&&b| b == b'{' || b == b'[').count();
    if brackets > MAX_HEADER_BRACKETS {
        return Err(bad_header(format!(
            "{brackets} '{{' and '[' (at most {MAX_HEADER_BRACKETS}; a plain array's header has one)"
        )));
    }
    check_shape(header, path)?;
    let npy = npyz::NpyFile::new(bytes).map_err(|e| bad_header(e.to_string()))?;
    let dtype = match npy.dtype() {
        npyz::DType::Plain(ty) => {
            NpyDtype::from_type_str(&ty).ok_or(NpyError::UnsupportedDtype {
                path: at(),
                descr: format!("'{ty}'"),
            })?
        }
        other => {
            return Err(NpyError::UnsupportedDtype {
                path: at(),
                descr: other.descr(),
            });
        }
    };
    let overflow = || NpyError::ShapeOverflow {
        path: at(),
        shape: npy.shape().to_vec(),
    };
    let shape = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| overflow())?;
    // A Fortran-order array with at most one dimension above 1 has the C layout too.
    if npy.order() == Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(NpyError::FortranOrder { path: at() });
    }
    let expected = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(overflow)?;
    let found = bytes.len() - header_end;
    if found != expected {
        return Err(NpyError::SizeMismatch {
            path: at(),
            expected,
            found,
        });
    }
    let data = match dtype {
        // One byte: nothing to swap. Bool bytes are kept as they are (npyz
        // rejects a byte above 1; `jagc crosscheck` saves poisoned 0xFF
        // buffers and reads them back).
        NpyDtype::Bool | NpyDtype::U8 => Ok(bytes[header_end..].to_vec()),
        NpyDtype::U16 | NpyDtype::BF16 => le_bytes(npy, u16::to_le_bytes),
        NpyDtype::U32 => le_bytes(npy, u32::to_le_bytes),
        NpyDtype::U64 => le_bytes(npy, u64::to_le_bytes),
        NpyDtype::I32 => le_bytes(npy, i32::to_le_bytes),
        NpyDtype::I64 => le_bytes(npy, i64::to_le_bytes),
        NpyDtype::F16 => le_bytes(npy, f16::to_le_bytes),
        NpyDtype::F32 => le_bytes(npy, f32::to_le_bytes),
        NpyDtype::F64 => le_bytes(npy, f64::to_le_bytes),
    }
    .map_err(|e| NpyError::BadData {
        path: at(),
        reason: e.to_string(),
    })?;
    Ok(NpyArray { dtype, shape, data })
}

/// Checks the magic string, the version and that the header lies inside
/// `bytes` (npyz allocates the header length it reads); where the header
/// text starts and ends.
fn check_preamble(bytes: &[u8], path: &Path) -> Result<(usize, usize), NpyError> {
    let at = || path.to_path_buf();
    let short = || NpyError::BadHeader {
        path: at(),
        reason: "file ends inside the header".to_string(),
    };
    if bytes.get(..6) != Some(&MAGIC[..]) || bytes.len() < 8 {
        return Err(NpyError::BadMagic { path: at() });
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (start, len) = match (major, minor) {
        (1, 0) => {
            let len = bytes.get(8..10).ok_or_else(short)?;
            (10, usize::from(u16::from_le_bytes([len[0], len[1]])))
        }
        (2 | 3, 0) => {
            let len = bytes.get(8..12).ok_or_else(short)?;
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
            (12, usize::try_from(len).map_err(|_| short())?)
        }
        _ => {
            return Err(NpyError::UnsupportedVersion {
                path: at(),
                major,
                minor,
            });
        }
    };
    let end = start + len;
    if end > bytes.len() {
        return Err(short());
    }
    Ok((start, end))
}

/// Checks every `shape` in the header text before npyz computes with it: at
/// most [`MAX_DIMS`] dimensions, whose product (zeros left out) fits in a
/// u64. The text is parsed as npyz parses it (one trailing newline dropped,
/// the same py_literal parser); a header that does not parse, or a shape
/// npyz rejects anyway (not a sequence of integers), is left to npyz, which
/// reports it.
fn check_shape(header: &[u8], path: &Path) -> Result<(), NpyError> {
    let text = header.strip_suffix(b"\n").unwrap_or(header);
    let Some(Ok(py_literal::Value::Dict(fields))) = std::str::from_utf8(text).ok().map(str::parse)
    else {
        return Ok(());
    };
    // npyz keeps the last of repeated keys: check them all.
    for (key, value) in &fields {
        let (
            py_literal::Value::String(key),
            py_literal::Value::Tuple(dims) | py_literal::Value::List(dims),
        ) = (key, value)
        else {
            continue;
        };
        if key != "shape" {
            continue;
        }
        if dims.len() > MAX_DIMS {
            return Err(NpyError::TooManyDims {
                path: path.to_path_buf(),
                ndim: dims.len(),
            });
        }
        let dims: Vec<u64> = dims
            .iter()
            .filter_map(|d| match d {
                py_literal::Value::Integer(n) => u64::try_from(n).ok(),
                _ => None,
            })
            .collect();
        let fits = dims
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .is_some();
        if !fits {
            return Err(NpyError::ShapeOverflow {
                path: path.to_path_buf(),
                shape: dims,
            });
        }
    }
    Ok(())
}

/// The elements of `npy` read as `T` (npyz swaps big-endian data) and
/// written back as little-endian bytes.
fn le_bytes<T: npyz::Deserialize, const K: usize>(
    npy: npyz::NpyFile<&[u8]>,
    to_le: fn(T) -> [u8; K],
) -> io::Result<Vec<u8>> {
    let reader = npy
        .data::<T>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut out = Vec::with_capacity(usize::try_from(reader.total_len()).unwrap_or(0) * K);
    for x in reader {
        out.extend_from_slice(&to_le(x?));
    }
    Ok(out)
}

/// Writes `array` as an `.npy` file (format 1.0, C order, little-endian).
pub fn write(path: impl AsRef<Path>, array: &NpyArray) -> Result<(), NpyError> {
    let path = path.as_ref();
    let bytes = encode(array, path)?;
    std::fs::write(path, bytes).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of an `.npy` file holding `array`; `path` only names the file in errors.
pub fn encode(array: &NpyArray, path: &Path) -> Result<Vec<u8>, NpyError> {
    let at = || path.to_path_buf();
    if array.shape.len() > MAX_DIMS {
        return Err(NpyError::TooManyDims {
            path: at(),
            ndim: array.shape.len(),
        });
    }
    let shape: Vec<u64> = array.shape.iter().map(|&d| d as u64).collect();
    let expected = array
        .shape
        .iter()
        .try_fold(array.dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NpyError::ShapeOverflow {
            path: at(),
            shape: shape.clone(),
        })?;
    if array.data.len() != expected {
        return Err(NpyError::SizeMismatch {
            path: at(),
            expected,
            found: array.data.len(),
        });
    }
    // npyz writes the header; the data is already in its on-disk form
    // (little-endian, C order), bool bytes as they are.
    let mut out = Vec::with_capacity(expected + 128);
    npyz::WriteOptions::new_header_only()
        .dtype(array.dtype.npyz_dtype())
        .shape(&shape)
        .writer(&mut out)
        .write_header_only()
        .map_err(|source| NpyError::Io { path: at(), source })?;
    out.extend_from_slice(&array.data);
    Ok(out)
}

/// The tensor dtype of an `.npy` dtype (`U16` is bf16, our convention);
/// `None` for u32 and u64.
pub fn tensor_dtype(dtype: NpyDtype) -> Option<DType> {
    Some(match dtype {
        NpyDtype::F64 => DType::F64,
        NpyDtype::F32 => DType::F32,
        NpyDtype::F16 => DType::F16,
        NpyDtype::BF16 | NpyDtype::U16 => DType::BF16,
        NpyDtype::I32 => DType::I32,
        NpyDtype::I64 => DType::I64,
        NpyDtype::U8 => DType::U8,
        NpyDtype::Bool => DType::Bool,
        NpyDtype::U32 | NpyDtype::U64 => return None,
    })
}

/// The `.npy` dtype a tensor dtype is written with (bf16 as [`NpyDtype::BF16`], `<u2` on disk).
pub fn npy_dtype(dtype: DType) -> NpyDtype {
    match dtype {
        DType::F64 => NpyDtype::F64,
        DType::F32 => NpyDtype::F32,
        DType::F16 => NpyDtype::F16,
        DType::BF16 => NpyDtype::BF16,
        DType::I32 => NpyDtype::I32,
        DType::I64 => NpyDtype::I64,
        DType::U8 => NpyDtype::U8,
        DType::Bool => NpyDtype::Bool,
    }
}

/// `array` (read from `path`) as a host tensor; `<u2` data is read as bf16.
pub fn to_dense(array: NpyArray, path: &Path) -> Result<DenseTensor, NpyError> {
    let dtype = tensor_dtype(array.dtype).ok_or_else(|| NpyError::NotATensorDtype {
        path: path.to_path_buf(),
        dtype: array.dtype,
    })?;
    let found = array.data.len();
    let data = TensorData::from_le_bytes(dtype, &array.data).ok_or(NpyError::SizeMismatch {
        path: path.to_path_buf(),
        expected: found / dtype.size() * dtype.size(),
        found,
    })?;
    DenseTensor::new(array.shape, data).map_err(|source| NpyError::Tensor {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an `.npy` file as a host tensor (`<u2` data is read as bf16).
pub fn load_dense(path: impl AsRef<Path>) -> Result<DenseTensor, NpyError> {
    let path = path.as_ref();
    to_dense(read(path)?, path)
}

/// Writes a host tensor as an `.npy` file (bf16 as `<u2`).
pub fn save_dense(tensor: &DenseTensor, path: impl AsRef<Path>) -> Result<(), NpyError> {
    let array = NpyArray {
        dtype: npy_dtype(tensor.dtype()),
        shape: tensor.shape().to_vec(),
        data: tensor.data().to_le_bytes(),
    };
    write(path, &array)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/npy")
            .join(name)
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jagged-npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    fn le<T: Copy, const K: usize>(values: &[T], f: fn(T) -> [u8; K]) -> Vec<u8> {
        values.iter().flat_map(|&v| f(v)).collect()
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        le(values, f32::to_le_bytes)
    }

    #[test]
    fn reads_numpy_f32_matrix() {
        let a = read(data_file("f32_2x3.npy")).unwrap();
        assert_eq!(a.dtype, NpyDtype::F32);
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, f32_bytes(&[1.5, -2.0, 0.25, 1e-3, 3.0e7, -0.0]));
    }

    #[test]
    fn reads_numpy_u16_scalar_bool_and_v2() {
        let a = read(data_file("u16_4.npy")).unwrap();
        assert_eq!(a.dtype, NpyDtype::U16);
        assert_eq!(a.shape, vec![4]);
        assert_eq!(a.data, le(&[0u16, 1, 0x3f80, 0xffff], u16::to_le_bytes));

        let s = read(data_file("i64_scalar.npy")).unwrap();
        assert_eq!((s.dtype, s.shape.len(), s.len()), (NpyDtype::I64, 0, 1));
        assert_eq!(s.data, (-7i64).to_le_bytes().to_vec());

        let b = read(data_file("bool_3.npy")).unwrap();
        assert_eq!(
            (b.dtype, b.data.as_slice()),
            (NpyDtype::Bool, &[1u8, 0, 1][..])
        );

        let v2 = read(data_file("i32_v2_2x2.npy")).unwrap();
        assert_eq!(
            (v2.dtype, v2.shape.as_slice()),
            (NpyDtype::I32, &[2usize, 2][..])
        );
        assert_eq!(v2.data, le(&[1i32, -2, 3, -4], i32::to_le_bytes));
    }

    #[test]
    fn reads_numpy_f16_and_big_endian_as_little_endian() {
        let halves: Vec<f16> = [1.0f32, -0.5, 65504.0]
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        for name in ["f16_3.npy", "f16_be_3.npy"] {
            let a = read(data_file(name)).unwrap();
            assert_eq!(
                (a.dtype, a.shape.as_slice()),
                (NpyDtype::F16, &[3usize][..])
            );
            assert_eq!(a.data, le(&halves, f16::to_le_bytes), "{name}");
        }
        let f = read(data_file("f32_be_2x2.npy")).unwrap();
        assert_eq!(
            (f.dtype, f.shape.as_slice()),
            (NpyDtype::F32, &[2usize, 2][..])
        );
        assert_eq!(f.data, f32_bytes(&[1.5, -2.0, 0.25, 3.0e7]));
        let i = read(data_file("i64_be_3.npy")).unwrap();
        assert_eq!(i.dtype, NpyDtype::I64);
        assert_eq!(i.data, le(&[1i64, -2, 1 << 40], i64::to_le_bytes));
        // Big-endian uint16 is bf16 bits too, once swapped.
        let u = read(data_file("u16_be_2.npy")).unwrap();
        assert_eq!(u.dtype, NpyDtype::U16);
        assert_eq!(u.data, le(&[0x3f80u16, 0xc000], u16::to_le_bytes));
        let t = to_dense(u, Path::new("u16_be_2.npy")).unwrap();
        assert_eq!(t.to_f64(), vec![1.0, -2.0]);
    }

    #[test]
    fn fortran_order_is_a_clear_error() {
        let err = read(data_file("f64_fortran_2x2.npy")).unwrap_err();
        assert!(matches!(err, NpyError::FortranOrder { .. }), "{err}");
        assert!(err.to_string().contains("f64_fortran_2x2.npy"), "{err}");
        assert!(err.to_string().contains("ascontiguousarray"), "{err}");
    }

    #[test]
    fn fortran_order_with_one_long_dimension_is_c_order() {
        let bytes = raw_npy(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 3, 1), }\n",
            &f32_bytes(&[1.0, 2.0, 3.0]),
        );
        let a = decode(&bytes, Path::new("f.npy")).unwrap();
        assert_eq!(a.shape, vec![1, 3, 1]);
        assert_eq!(a.data, f32_bytes(&[1.0, 2.0, 3.0]));
    }

    #[test]
    fn written_files_read_back_and_keep_numpys_layout() {
        // The same array np.save wrote: the same data after a 64-byte aligned
        // header (npyz spells the shape `(2, 3, )`, NumPy `(2, 3)`).
        let a = NpyArray {
            dtype: NpyDtype::F32,
            shape: vec![2, 3],
            data: f32_bytes(&[1.5, -2.0, 0.25, 1e-3, 3.0e7, -0.0]),
        };
        let path = temp_file("like_numpy.npy");
        write(&path, &a).unwrap();
        let ours = std::fs::read(&path).unwrap();
        let numpy = std::fs::read(data_file("f32_2x3.npy")).unwrap();
        assert_eq!(&ours[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(ours.len(), numpy.len());
        assert_eq!(ours[ours.len() - 24..], numpy[numpy.len() - 24..]);
        assert_eq!(ours[ours.len() - 25], b'\n');
        assert_eq!(read(&path).unwrap(), a);
        assert_eq!(read(data_file("f32_2x3.npy")).unwrap(), a);
    }

    #[test]
    fn round_trips_every_dtype_and_shape() {
        let cases = [
            (NpyDtype::F64, vec![3, 1, 2]),
            (NpyDtype::F32, vec![2, 2]),
            (NpyDtype::F16, vec![5]),
            (NpyDtype::I32, vec![0, 4]),
            (NpyDtype::I64, vec![]),
            (NpyDtype::U32, vec![2, 2]),
            (NpyDtype::U64, vec![1]),
            (NpyDtype::U8, vec![7]),
            (NpyDtype::Bool, vec![2, 1]),
            (NpyDtype::U16, vec![3]),
            (NpyDtype::U8, vec![1; MAX_DIMS]),
        ];
        for (i, (dtype, shape)) in cases.into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let data: Vec<u8> = (0..n * dtype.size())
                .map(|b| {
                    if dtype == NpyDtype::Bool {
                        (b % 2) as u8
                    } else {
                        (b * 37 + 11) as u8
                    }
                })
                .collect();
            let a = NpyArray { dtype, shape, data };
            let path = temp_file(&format!("round_trip_{i}.npy"));
            write(&path, &a).unwrap();
            assert_eq!(read(&path).unwrap(), a, "{dtype}");
        }
    }

    #[test]
    fn bool_bytes_are_kept_as_they_are() {
        // `jagc crosscheck` saves poisoned (0xFF) bool buffers and compares
        // them with a run after reading them back.
        let a = NpyArray {
            dtype: NpyDtype::Bool,
            shape: vec![3],
            data: vec![0, 1, 0xFF],
        };
        let bytes = encode(&a, Path::new("b.npy")).unwrap();
        assert_eq!(decode(&bytes, Path::new("b.npy")).unwrap(), a);
    }

    #[test]
    fn bf16_is_written_as_u16() {
        let a = NpyArray {
            dtype: NpyDtype::BF16,
            shape: vec![2],
            data: vec![0x80, 0x3f, 0x00, 0xc0],
        };
        let path = temp_file("bf16.npy");
        write(&path, &a).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header = String::from_utf8_lossy(&bytes[10..bytes.len() - 4]);
        assert!(header.contains("'descr': '<u2'"), "{header}");
        let back = read(&path).unwrap();
        assert_eq!((back.dtype, &back.data), (NpyDtype::U16, &a.data));
        let t = to_dense(back, &path).unwrap();
        assert_eq!((t.dtype(), t.to_f64()), (DType::BF16, vec![1.0, -2.0]));
    }

    #[test]
    fn every_tensor_dtype_round_trips_through_a_file() {
        for dtype in DType::ALL {
            let t = DenseTensor::from_f64(dtype, vec![2, 2], &[0.0, 1.0, 2.0, 3.0]).unwrap();
            let path = temp_file(&format!("{dtype}.npy"));
            save_dense(&t, &path).unwrap();
            assert_eq!(load_dense(&path).unwrap(), t, "{dtype}");
        }
        let path = temp_file("u32.npy");
        let a = NpyArray {
            dtype: NpyDtype::U32,
            shape: vec![1],
            data: vec![0; 4],
        };
        write(&path, &a).unwrap();
        let err = load_dense(&path).unwrap_err();
        assert!(
            matches!(
                err,
                NpyError::NotATensorDtype {
                    dtype: NpyDtype::U32,
                    ..
                }
            ),
            "{err}"
        );
        let missing = load_dense(temp_file("missing.npy")).unwrap_err();
        assert!(missing.to_string().contains("missing.npy"), "{missing}");
    }

    #[test]
    fn too_many_dimensions_are_an_error_both_ways() {
        let a = NpyArray {
            dtype: NpyDtype::U8,
            shape: vec![1; MAX_DIMS + 1],
            data: vec![42],
        };
        let err = write(temp_file("dims.npy"), &a).unwrap_err();
        assert!(
            matches!(err, NpyError::TooManyDims { ndim: 65, .. }),
            "{err}"
        );
        let shape = vec!["1"; 30_000].join(", ");
        let dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({shape}), }}\n");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[2, 0]);
        bytes.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        bytes.extend_from_slice(dict.as_bytes());
        bytes.push(42);
        let err = decode(&bytes, Path::new("dims.npy")).unwrap_err();
        assert!(
            matches!(err, NpyError::TooManyDims { ndim: 30_000, .. }),
            "{err}"
        );
    }

    /// A version 1.0 file with the given header dictionary and data.
    fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        bytes.extend_from_slice(dict.as_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        type Check = fn(&NpyError) -> bool;
        let header = |descr: &str, shape: &str| {
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n")
        };
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("magic.npy", b"PK\x03\x04 not numpy".to_vec(), |e| {
                matches!(e, NpyError::BadMagic { .. })
            }),
            ("version.npy", b"\x93NUMPY\x09\x00\x00\x00".to_vec(), |e| {
                matches!(e, NpyError::UnsupportedVersion { major: 9, .. })
            }),
            (
                "complex.npy",
                raw_npy(&header("<c8", "(1,)"), &[0; 8]),
                |e| matches!(e, NpyError::UnsupportedDtype { descr, .. } if descr == "'<c8'"),
            ),
            (
                "datetime.npy",
                raw_npy(&header("<M8[s]", "(1,)"), &[0; 8]),
                |e| matches!(e, NpyError::UnsupportedDtype { .. }),
            ),
            (
                "record.npy",
                raw_npy(
                    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n",
                    &[0; 4],
                ),
                |e| matches!(e, NpyError::UnsupportedDtype { .. }),
            ),
            ("short.npy", raw_npy(&header("<f4", "(2,)"), &[0; 4]), |e| {
                matches!(
                    e,
                    NpyError::SizeMismatch {
                        expected: 8,
                        found: 4,
                        ..
                    }
                )
            }),
            ("long.npy", raw_npy(&header(">f4", "(1,)"), &[0; 5]), |e| {
                matches!(e, NpyError::SizeMismatch { found: 5, .. })
            }),
            (
                "nokey.npy",
                raw_npy("{'descr': '<f4', 'shape': (), }\n", &[0; 4]),
                |e| matches!(e, NpyError::BadHeader { reason, .. } if reason.contains("fortran_order")),
            ),
            ("notdict.npy", raw_npy("[1, 2, 3]\n", &[]), |e| {
                matches!(e, NpyError::BadHeader { .. })
            }),
            ("negative.npy", raw_npy(&header("<f4", "(-1,)"), &[]), |e| {
                matches!(e, NpyError::BadHeader { .. })
            }),
            (
                "overflow.npy",
                raw_npy(&header("<f4", "(0, 4294967296, 4294967296)"), &[]),
                |e| matches!(e, NpyError::ShapeOverflow { .. }),
            ),
            (
                // Eleven nested '{' kept the parser busy for seconds (fuzzer).
                "nested.npy",
                raw_npy(
                    "{{{{{{{{{{{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }\n",
                    &[0; 16],
                ),
                |e| matches!(e, NpyError::BadHeader { reason, .. } if reason.contains("11 '{' and '['")),
            ),
            (
                // npyz keeps the last `shape`.
                "dupshape.npy",
                raw_npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), \
                     'shape': [0, 4294967296, 4294967296], }\n",
                    &[0; 4],
                ),
                |e| matches!(e, NpyError::ShapeOverflow { .. }),
            ),
            (
                "huge.npy",
                raw_npy(&header("<f8", "(4294967296, 4294967295)"), &[]),
                |e| matches!(e, NpyError::ShapeOverflow { .. }),
            ),
            (
                "truncated.npy",
                raw_npy(&header("<f4", "(2,)"), &[])[..30].to_vec(),
                |e| matches!(e, NpyError::BadHeader { .. }),
            ),
            (
                "hugeheader.npy",
                [&MAGIC[..], &[2, 0], &u32::MAX.to_le_bytes(), b"{}"].concat(),
                |e| matches!(e, NpyError::BadHeader { .. }),
            ),
            (
                "typestr.npy",
                raw_npy(&header("\u{ff}<f4", "(1,)"), &[0; 4]),
                |e| matches!(e, NpyError::BadHeader { reason, .. } if reason.contains("type string")),
            ),
            (
                "notutf8.npy",
                raw_npy(&header("<f4", "(1,)"), &[0; 4])
                    .iter()
                    .map(|&b| if b == b'<' { 0xFF } else { b })
                    .collect(),
                |e| matches!(e, NpyError::BadHeader { reason, .. } if reason.contains("utf-8")),
            ),
        ];
        for (name, bytes, is_expected) in cases {
            let path = temp_file(name);
            std::fs::write(&path, bytes).unwrap();
            let err = read(&path).unwrap_err();
            assert!(is_expected(&err), "{name}: {err:?}");
            assert!(err.to_string().contains(name), "{err}");
        }
        let missing = read(temp_file("does_not_exist.npy")).unwrap_err();
        assert!(matches!(missing, NpyError::Io { .. }));
        assert!(missing.to_string().contains("does_not_exist.npy"));
    }

    #[test]
    fn write_rejects_wrong_data_size() {
        let a = NpyArray {
            dtype: NpyDtype::F32,
            shape: vec![3],
            data: vec![0; 8],
        };
        let err = write(temp_file("bad_size.npy"), &a).unwrap_err();
        assert!(matches!(
            err,
            NpyError::SizeMismatch {
                expected: 12,
                found: 8,
                ..
            }
        ));
        let a = NpyArray {
            dtype: NpyDtype::F32,
            shape: vec![usize::MAX, 2],
            data: vec![],
        };
        let err = write(temp_file("overflow.npy"), &a).unwrap_err();
        assert!(matches!(err, NpyError::ShapeOverflow { .. }), "{err}");
    }
}
