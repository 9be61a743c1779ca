//! Reading and writing NumPy `.npy` files (raw arrays: dtype, shape, bytes).
//!
//! Exists so that host tensors can be exchanged with NumPy and PyTorch scripts and
//! fed to `jagc emu`. Only little-endian, C-order arrays are supported; format
//! versions 1.0, 2.0 and 3.0 are read, 1.0 is written (2.0 when the header needs it).
//! NumPy has no bfloat16: bf16 data is written as `<u2` and reads back as
//! [`NpyDtype::U16`]; callers reinterpret it.

use std::fmt;
use std::path::{Path, PathBuf};

/// The element type of an `.npy` array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpyDtype {
    /// `|b1`: one byte, 0 or 1.
    Bool,
    /// `|u1`.
    U8,
    /// `<u2`; also the on-disk form of bf16.
    U16,
    /// `<u4`.
    U32,
    /// `<u8`.
    U64,
    /// `<i4`.
    I32,
    /// `<i8`.
    I64,
    /// `<f2` (IEEE half).
    F16,
    /// bfloat16: written as `<u2`, never produced by [`read`].
    BF16,
    /// `<f4`.
    F32,
    /// `<f8`.
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

    /// The NumPy `descr` string this dtype is written with.
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

    /// The dtype of a NumPy `descr` string, if supported (little-endian or byte-sized).
    fn from_descr(descr: &str) -> Option<NpyDtype> {
        let (order, code) = descr.split_at_checked(1)?;
        let one_byte = matches!(code, "b1" | "u1" | "i1");
        if !(order == "<" || (one_byte && (order == "|" || order == "="))) {
            return None;
        }
        Some(match code {
            "b1" => NpyDtype::Bool,
            "u1" => NpyDtype::U8,
            "u2" => NpyDtype::U16,
            "u4" => NpyDtype::U32,
            "u8" => NpyDtype::U64,
            "i4" => NpyDtype::I32,
            "i8" => NpyDtype::I64,
            "f2" => NpyDtype::F16,
            "f4" => NpyDtype::F32,
            "f8" => NpyDtype::F64,
            _ => return None,
        })
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
        source: std::io::Error,
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
    /// The header dictionary is malformed.
    #[error("{path}: bad .npy header: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A dtype this module does not handle (big-endian, structured, complex, ...).
    #[error(
        "{path}: unsupported dtype '{descr}' (supported: little-endian b1 u1 u2 u4 u8 i4 i8 f2 f4 f8)"
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The `descr` found in the header.
        descr: String,
    },
    /// The array is stored in Fortran (column-major) order.
    #[error(
        "{path}: array is in Fortran order; only C order is supported (save np.ascontiguousarray(a))"
    )]
    FortranOrder {
        /// The file.
        path: PathBuf,
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

/// Writes `array` as an `.npy` file (format 1.0, or 2.0 for a header over 64 KiB).
pub fn write(path: impl AsRef<Path>, array: &NpyArray) -> Result<(), NpyError> {
    let path = path.as_ref();
    let expected = array.len() * array.dtype.size();
    if array.data.len() != expected {
        return Err(NpyError::SizeMismatch {
            path: path.to_path_buf(),
            expected,
            found: array.data.len(),
        });
    }
    let mut bytes = encode_header(array);
    bytes.extend_from_slice(&array.data);
    std::fs::write(path, bytes).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The magic string, version, header length and padded header dictionary for `array`.
fn encode_header(array: &NpyArray) -> Vec<u8> {
    let shape = match array.shape.as_slice() {
        [n] => format!("({n},)"),
        dims => {
            let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        array.dtype.descr()
    );
    // Preamble (magic, version, length) plus dictionary plus '\n', padded with
    // spaces to a multiple of 64 bytes, as NumPy does.
    let (version, len_bytes) = if dict.len() + 1 + 10 <= usize::from(u16::MAX) {
        (1u8, 2usize)
    } else {
        (2u8, 4usize)
    };
    let preamble = MAGIC.len() + 2 + len_bytes;
    let total = (preamble + dict.len() + 1).div_ceil(64) * 64;
    let header_len = total - preamble;
    let mut out = Vec::with_capacity(total + array.data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        // Fits: checked against u16::MAX above.
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Decodes the bytes of an `.npy` file; `path` only names the file in errors.
fn decode(bytes: &[u8], path: &Path) -> Result<NpyArray, NpyError> {
    let bad_header = |reason: &str| NpyError::BadHeader {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < 8 || &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, start) = match (major, minor) {
        (1, 0) if bytes.len() >= 10 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        (2 | 3, 0) if bytes.len() >= 12 => {
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (len as usize, 12)
        }
        (1..=3, 0) => return Err(bad_header("file ends inside the header length")),
        _ => {
            return Err(NpyError::UnsupportedVersion {
                path: path.to_path_buf(),
                major,
                minor,
            });
        }
    };
    let end = start + header_len;
    let header = bytes
        .get(start..end)
        .ok_or_else(|| bad_header("file ends inside the header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad_header("header is not UTF-8"))?;
    let fields = HeaderParser::new(header)
        .dict()
        .map_err(|reason| bad_header(&reason))?;

    let mut descr = None;
    let mut fortran_order = None;
    let mut shape = None;
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("descr", HeaderValue::Str(s)) => descr = Some(s),
            ("fortran_order", HeaderValue::Bool(b)) => fortran_order = Some(b),
            ("shape", HeaderValue::Tuple(dims)) => shape = Some(dims),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(bad_header(&format!("'{key}' has the wrong type")));
            }
            _ => return Err(bad_header(&format!("unknown key '{key}'"))),
        }
    }
    let descr = descr.ok_or_else(|| bad_header("missing 'descr'"))?;
    let fortran_order = fortran_order.ok_or_else(|| bad_header("missing 'fortran_order'"))?;
    let shape = shape.ok_or_else(|| bad_header("missing 'shape'"))?;
    let dtype = NpyDtype::from_descr(&descr).ok_or_else(|| NpyError::UnsupportedDtype {
        path: path.to_path_buf(),
        descr: descr.clone(),
    })?;
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad_header("shape overflows"))?;
    // A Fortran-order array with at most one dimension above 1 has the C layout too.
    if fortran_order && shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(NpyError::FortranOrder {
            path: path.to_path_buf(),
        });
    }
    let data = &bytes[end..];
    let expected = elements
        .checked_mul(dtype.size())
        .ok_or_else(|| bad_header("shape overflows"))?;
    if data.len() != expected {
        return Err(NpyError::SizeMismatch {
            path: path.to_path_buf(),
            expected,
            found: data.len(),
        });
    }
    Ok(NpyArray {
        dtype,
        shape,
        data: data.to_vec(),
    })
}

/// A value in the header dictionary.
enum HeaderValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// A parser for the Python dict literal of an `.npy` header: string keys; values are
/// strings, `True`/`False`, or tuples of non-negative integers.
struct HeaderParser<'a> {
    rest: &'a str,
}

impl<'a> HeaderParser<'a> {
    fn new(text: &'a str) -> Self {
        HeaderParser { rest: text }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    /// Consumes `token` (after whitespace) if it comes next.
    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        match self.rest.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected '{token}' at '{}'", self.context()))
        }
    }

    fn context(&self) -> String {
        self.rest.chars().take(20).collect()
    }

    fn dict(mut self) -> Result<Vec<(String, HeaderValue)>, String> {
        self.expect("{")?;
        let mut fields = Vec::new();
        while !self.eat("}") {
            let key = self.string()?;
            self.expect(":")?;
            let value = self.value()?;
            fields.push((key, value));
            if !self.eat(",") {
                self.expect("}")?;
                break;
            }
        }
        if !self.rest.trim().is_empty() {
            return Err(format!("trailing text '{}'", self.context()));
        }
        Ok(fields)
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err(format!("expected a string at '{}'", self.context())),
        };
        let body = &self.rest[1..];
        let close = body
            .find(quote)
            .ok_or_else(|| "unterminated string".to_string())?;
        let s = body[..close].to_string();
        self.rest = &body[close + 1..];
        Ok(s)
    }

    fn value(&mut self) -> Result<HeaderValue, String> {
        if self.eat("True") {
            return Ok(HeaderValue::Bool(true));
        }
        if self.eat("False") {
            return Ok(HeaderValue::Bool(false));
        }
        if self.eat("(") {
            let mut dims = Vec::new();
            while !self.eat(")") {
                dims.push(self.integer()?);
                if !self.eat(",") {
                    self.expect(")")?;
                    break;
                }
            }
            return Ok(HeaderValue::Tuple(dims));
        }
        self.string().map(HeaderValue::Str)
    }

    fn integer(&mut self) -> Result<usize, String> {
        self.skip_ws();
        let digits = self.rest.len()
            - self
                .rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        let (number, rest) = self.rest.split_at(digits);
        let value = number
            .parse()
            .map_err(|_| format!("expected a dimension at '{}'", self.context()))?;
        // Python 2 era files may write long integers as `3L`.
        self.rest = rest.strip_prefix('L').unwrap_or(rest);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name)
    }

    fn temp_file(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jagged-npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
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
        let expected: Vec<u8> = [0u16, 1, 0x3f80, 0xffff]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(a.data, expected);

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
        let expected: Vec<u8> = [1i32, -2, 3, -4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(v2.data, expected);
    }

    #[test]
    fn fortran_order_is_a_clear_error() {
        let err = read(data_file("f64_fortran_2x2.npy")).unwrap_err();
        assert!(matches!(err, NpyError::FortranOrder { .. }), "{err}");
        assert!(err.to_string().contains("f64_fortran_2x2.npy"), "{err}");
    }

    #[test]
    fn written_header_matches_numpy_byte_for_byte() {
        // np.save of the same array produces exactly these bytes.
        let a = NpyArray {
            dtype: NpyDtype::F32,
            shape: vec![2, 3],
            data: f32_bytes(&[1.5, -2.0, 0.25, 1e-3, 3.0e7, -0.0]),
        };
        let path = temp_file("same_as_numpy.npy");
        write(&path, &a).unwrap();
        let ours = std::fs::read(&path).unwrap();
        let numpy = std::fs::read(data_file("f32_2x3.npy")).unwrap();
        assert_eq!(ours, numpy);
    }

    #[test]
    fn round_trips_every_dtype_and_shape() {
        let cases = [
            (NpyDtype::F64, vec![3, 1, 2]),
            (NpyDtype::F16, vec![5]),
            (NpyDtype::I32, vec![0, 4]),
            (NpyDtype::I64, vec![]),
            (NpyDtype::U32, vec![2, 2]),
            (NpyDtype::U64, vec![1]),
            (NpyDtype::U8, vec![7]),
            (NpyDtype::Bool, vec![2, 1]),
            (NpyDtype::U16, vec![3]),
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
    fn bf16_is_written_as_u16() {
        let a = NpyArray {
            dtype: NpyDtype::BF16,
            shape: vec![2],
            data: vec![0x80, 0x3f, 0x00, 0xc0],
        };
        let path = temp_file("bf16.npy");
        write(&path, &a).unwrap();
        let back = read(&path).unwrap();
        assert_eq!((back.dtype, back.data), (NpyDtype::U16, a.data));
    }

    #[test]
    fn large_header_uses_version_2() {
        let a = NpyArray {
            dtype: NpyDtype::U8,
            shape: vec![1; 30_000],
            data: vec![42],
        };
        let path = temp_file("v2.npy");
        write(&path, &a).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[6..8], &[2, 0]);
        assert_eq!(read(&path).unwrap(), a);
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
        let cases: [(&str, Vec<u8>, Check); 6] = [
            ("magic.npy", b"PK\x03\x04 not numpy".to_vec(), |e| {
                matches!(e, NpyError::BadMagic { .. })
            }),
            ("version.npy", b"\x93NUMPY\x09\x00\x00\x00".to_vec(), |e| {
                matches!(e, NpyError::UnsupportedVersion { major: 9, .. })
            }),
            (
                "bigendian.npy",
                raw_npy(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n",
                    &[0; 4],
                ),
                |e| matches!(e, NpyError::UnsupportedDtype { descr, .. } if descr == ">f4"),
            ),
            (
                "short.npy",
                raw_npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n",
                    &[0; 4],
                ),
                |e| {
                    matches!(
                        e,
                        NpyError::SizeMismatch {
                            expected: 8,
                            found: 4,
                            ..
                        }
                    )
                },
            ),
            (
                "nokey.npy",
                raw_npy("{'descr': '<f4', 'shape': (), }\n", &[0; 4]),
                |e| matches!(e, NpyError::BadHeader { reason, .. } if reason.contains("fortran_order")),
            ),
            (
                "truncated.npy",
                raw_npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n",
                    &[],
                )[..30]
                    .to_vec(),
                |e| matches!(e, NpyError::BadHeader { .. }),
            ),
        ];
        for (name, bytes, is_expected) in cases {
            let path = temp_file(name);
            std::fs::write(&path, bytes).unwrap();
            let err = read(&path).unwrap_err();
            assert!(is_expected(&err), "{name}: {err}");
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
    }
}
