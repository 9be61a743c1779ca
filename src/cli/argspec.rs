//! The kernel-argument SPEC syntax that `jagc emu` and `jagc crosscheck`
//! share: one parser, so both tools take the same text the same way.
//!
//! | spec | kernel argument |
//! |---|---|
//! | `u32:V` `i32:V` `u64:V` `i64:V` `f32:V` `f64:V` | a scalar; integers also in hex (`u64:0x10`, `i64:-0x10`) |
//! | `in:PATH.npy` | a buffer holding the array of an `.npy` file |
//! | `out:PATH.npy:DTYPE:COUNT` | a buffer of COUNT elements, saved to PATH.npy after the run |
//! | `inout:IN.npy:OUT.npy` | a buffer holding IN.npy, saved to OUT.npy after the run |
//!
//! Paths may contain `:`: `out:` takes DTYPE and COUNT from the right, and
//! `inout:` splits after the first `.npy:` (else at the first `:`).

use std::path::PathBuf;
use std::str::FromStr;

use jagged_runtime::KernelArg;

use super::npy::NpyDtype;

/// One kernel argument in the shared SPEC syntax.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelArgSpec {
    /// A scalar passed by value (never [`KernelArg::Buffer`]).
    Scalar(KernelArg),
    /// A buffer filled with the raw elements of an `.npy` file.
    In(PathBuf),
    /// A buffer of `count` elements of `dtype`, written to `path` after the run.
    Out {
        /// Where the result goes.
        path: PathBuf,
        /// The element type.
        dtype: NpyDtype,
        /// The number of elements.
        count: usize,
    },
    /// A buffer filled from `input` and written, with the same dtype and shape, to `output`.
    InOut {
        /// The initial contents.
        input: PathBuf,
        /// Where the result goes.
        output: PathBuf,
    },
}

/// A spec that does not parse; the message names the spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("'{spec}': {reason}")]
pub struct ArgSpecError {
    /// The spec as written.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

impl FromStr for KernelArgSpec {
    type Err = ArgSpecError;

    fn from_str(spec: &str) -> Result<KernelArgSpec, ArgSpecError> {
        let bad = |reason: String| ArgSpecError {
            spec: spec.to_string(),
            reason,
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("not KIND:VALUE".to_string()))?;
        let float = |what: &str| bad(format!("not an {what}"));
        Ok(match kind {
            "u32" => KernelArgSpec::Scalar(KernelArg::U32(parse_int(rest).map_err(bad)?)),
            "i32" => KernelArgSpec::Scalar(KernelArg::I32(parse_int(rest).map_err(bad)?)),
            "u64" => KernelArgSpec::Scalar(KernelArg::U64(parse_int(rest).map_err(bad)?)),
            "i64" => KernelArgSpec::Scalar(KernelArg::I64(parse_int(rest).map_err(bad)?)),
            "f32" => KernelArgSpec::Scalar(KernelArg::F32(rest.parse().map_err(|_| float("f32"))?)),
            "f64" => KernelArgSpec::Scalar(KernelArg::F64(rest.parse().map_err(|_| float("f64"))?)),
            "in" if rest.is_empty() => return Err(bad("expected in:PATH.npy".to_string())),
            "in" => KernelArgSpec::In(PathBuf::from(rest)),
            "out" => {
                let mut parts = rest.rsplitn(3, ':');
                let (count, dtype, path) = match (parts.next(), parts.next(), parts.next()) {
                    (Some(c), Some(d), Some(p)) if !p.is_empty() => (c, d, p),
                    _ => return Err(bad("expected out:PATH.npy:DTYPE:COUNT".to_string())),
                };
                KernelArgSpec::Out {
                    path: PathBuf::from(path),
                    dtype: parse_dtype(dtype).map_err(bad)?,
                    count: count
                        .parse()
                        .map_err(|_| bad(format!("count '{count}' is not a number")))?,
                }
            }
            "inout" => {
                let split = match rest.split_once(".npy:") {
                    Some((input, output)) => Some((format!("{input}.npy"), output)),
                    None => rest
                        .split_once(':')
                        .map(|(input, output)| (input.to_string(), output)),
                };
                match split {
                    Some((input, output)) if !input.is_empty() && !output.is_empty() => {
                        KernelArgSpec::InOut {
                            input: PathBuf::from(input),
                            output: PathBuf::from(output),
                        }
                    }
                    _ => return Err(bad("expected inout:IN.npy:OUT.npy".to_string())),
                }
            }
            _ => {
                return Err(bad(
                    "unknown kind (expected u32, i32, u64, i64, f32, f64, in, out or inout)"
                        .to_string(),
                ));
            }
        })
    }
}

/// Parses a decimal or `0x` hexadecimal integer of any width.
/// An integer in decimal or `0x` hex, with one optional leading `-`, as a
/// `T`; an error naming the text otherwise (out of range, a second sign).
pub fn parse_int<T: TryFrom<i128>>(text: &str) -> Result<T, String> {
    let not_an_integer = || format!("'{text}' is not an integer");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    if digits.starts_with(['-', '+']) {
        return Err(not_an_integer());
    }
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => i128::from_str_radix(hex, 16),
        None => digits.parse::<i128>(),
    }
    .map_err(|_| not_an_integer())?;
    let value = if negative {
        magnitude
            .checked_neg()
            .ok_or_else(|| format!("{text} is out of range"))?
    } else {
        magnitude
    };
    T::try_from(value).map_err(|_| format!("{text} is out of range"))
}

/// The `.npy` element type named `name` in an `out:` spec.
fn parse_dtype(name: &str) -> Result<NpyDtype, String> {
    Ok(match name {
        "f32" => NpyDtype::F32,
        "f64" => NpyDtype::F64,
        "f16" => NpyDtype::F16,
        "bf16" => NpyDtype::BF16,
        "i32" => NpyDtype::I32,
        "i64" => NpyDtype::I64,
        "u32" => NpyDtype::U32,
        "u64" => NpyDtype::U64,
        "u8" => NpyDtype::U8,
        "bool" => NpyDtype::Bool,
        _ => {
            return Err(format!(
                "unknown dtype '{name}' (expected f32, f64, f16, bf16, i32, i64, u32, u64, u8 or bool)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> KernelArgSpec {
        spec.parse().unwrap()
    }

    #[test]
    fn parses_scalar_specs() {
        assert_eq!(p("u32:7"), KernelArgSpec::Scalar(KernelArg::U32(7)));
        assert_eq!(p("i32:-3"), KernelArgSpec::Scalar(KernelArg::I32(-3)));
        assert_eq!(p("u64:0x10"), KernelArgSpec::Scalar(KernelArg::U64(16)));
        assert_eq!(p("i64:-0x10"), KernelArgSpec::Scalar(KernelArg::I64(-16)));
        assert_eq!(p("f32:0.5"), KernelArgSpec::Scalar(KernelArg::F32(0.5)));
        assert_eq!(p("f64:1e-3"), KernelArgSpec::Scalar(KernelArg::F64(1e-3)));
    }

    #[test]
    fn parses_buffer_specs() {
        assert_eq!(p("in:x.npy"), KernelArgSpec::In("x.npy".into()));
        assert_eq!(
            p("out:dir:with:colons/y.npy:bf16:12"),
            KernelArgSpec::Out {
                path: "dir:with:colons/y.npy".into(),
                dtype: NpyDtype::BF16,
                count: 12
            }
        );
        assert_eq!(
            p("inout:a.npy:b.npy"),
            KernelArgSpec::InOut {
                input: "a.npy".into(),
                output: "b.npy".into()
            }
        );
        assert_eq!(
            p("inout:c:d/a.npy:b.npy"),
            KernelArgSpec::InOut {
                input: "c:d/a.npy".into(),
                output: "b.npy".into()
            }
        );
    }

    #[test]
    fn bad_specs_name_themselves() {
        for (spec, needle) in [
            ("u32", "not KIND:VALUE"),
            ("u32:-1", "out of range"),
            ("u32:0x1ffffffff", "out of range"),
            ("i32:abc", "not an integer"),
            ("f32:x", "not an f32"),
            ("q8:1", "unknown kind"),
            ("out:y.npy:f99:4", "unknown dtype 'f99'"),
            ("out:y.npy:f32:many", "count 'many'"),
            ("out:y.npy", "expected out:"),
            ("inout:a.npy", "expected inout:"),
            ("in:", "expected in:"),
        ] {
            let err = spec.parse::<KernelArgSpec>().unwrap_err().to_string();
            assert!(err.contains(spec), "{spec}: {err}");
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }
}

#[cfg(test)]
mod parse_int_tests {
    use super::parse_int;

    /// Regression (fuzzer): a second sign and i128::MIN overflowed the
    /// negation; both are errors naming the text now.
    #[test]
    fn a_second_sign_or_i128_min_is_an_error_not_an_overflow() {
        let huge = "--170141183460469231731687303715884105728";
        assert!(parse_int::<i64>(huge).unwrap_err().contains(huge));
        assert!(parse_int::<i64>("-+5").is_err());
        assert_eq!(parse_int::<i64>("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_int::<i64>("-0x10"), Ok(-16));
    }
}
