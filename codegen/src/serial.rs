//! A stable text form of [`CompiledKernel`], so that the runtime's disk cache
//! can hand back a compiled module without running the code generator.
//!
//! The form is line-oriented; the PTX comes last, prefixed by its byte length:
//!
//! ```text
//! jagged-compiled 1
//! arch sm_80
//! output f32 (mul T 64)
//! output i32 (add B 1) used_rows_from 1
//! scratch (mul (add T 1) 8)
//! launch jg_softmax block 256 shared 0 grid B 1 65535
//! param input 0
//! param size N
//! param float_attr padding_value
//! param tensor_map 1 bf16 128 64,64 | (mul 4 128) | T
//! ptx 1234
//! <the PTX text, exactly 1234 bytes>
//! ```
//!
//! Size expressions are written in prefix form: `B`, `T`, `N`, a decimal
//! constant, `(add a b)`, `(mul a b)`, `(ceil_div a k)`. A `param` line belongs
//! to the `launch` line above it.

use std::fmt::Write as _;

use crate::launch::{
    CompiledKernel, GridRule, Launch, OutputBuffer, ParamBinding, ScratchBuffer, SizeExpr,
    TensorMapBinding, swizzle_bytes, swizzle_of_bytes,
};
use crate::spec::{Arch, DType};

/// The first line of every serialized kernel; the number is the format version.
const HEADER: &str = "jagged-compiled 1";

/// Why a serialized kernel could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("serialized kernel, line {line}: {reason}")]
pub struct SerialError {
    /// The 1-based line of the problem.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

impl CompiledKernel {
    /// The text form described in the [module docs](self).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{HEADER}");
        let _ = writeln!(out, "arch {}", self.arch.ptx_target());
        for o in &self.outputs {
            let _ = write!(out, "output {} {}", o.elem.name(), size_text(&o.elems));
            if let Some(k) = o.used_rows_from {
                let _ = write!(out, " used_rows_from {k}");
            }
            out.push('\n');
        }
        for s in &self.scratch {
            let _ = writeln!(out, "scratch {}", size_text(&s.bytes));
        }
        for l in &self.launches {
            let _ = writeln!(
                out,
                "launch {} block {} shared {} grid {} {} {}",
                l.entry,
                l.block,
                l.dynamic_shared_bytes,
                size_text(&l.grid.items),
                l.grid.items_per_block,
                l.grid.max_blocks
            );
            for p in &l.params {
                let _ = match p {
                    ParamBinding::Input(i) => writeln!(out, "param input {i}"),
                    ParamBinding::Output(i) => writeln!(out, "param output {i}"),
                    ParamBinding::Scratch(i) => writeln!(out, "param scratch {i}"),
                    ParamBinding::Size(e) => writeln!(out, "param size {}", size_text(e)),
                    ParamBinding::FloatAttr(name) => writeln!(out, "param float_attr {name}"),
                    ParamBinding::TensorMap(map) => writeln!(out, "param {}", tensor_map_text(map)),
                };
            }
        }
        let _ = writeln!(out, "ptx {}", self.ptx.len());
        out.push_str(&self.ptx);
        out
    }

    /// Reads the text form back; any deviation is an error naming the line.
    pub fn from_text(text: &str) -> Result<CompiledKernel, SerialError> {
        let mut reader = Reader {
            rest: text,
            line: 0,
        };
        let header = reader.next_line()?;
        if header != HEADER {
            return Err(reader.error(format!("expected `{HEADER}`, found `{header}`")));
        }
        let arch_line = reader.next_line()?;
        let arch = match arch_line.strip_prefix("arch ") {
            Some("sm_80") => Arch::Sm80,
            Some("sm_90a") => Arch::Sm90a,
            _ => {
                return Err(
                    reader.error(format!("expected `arch sm_80|sm_90a`, found `{arch_line}`"))
                );
            }
        };
        let mut kernel = CompiledKernel {
            ptx: String::new(),
            arch,
            launches: Vec::new(),
            scratch: Vec::new(),
            outputs: Vec::new(),
        };
        loop {
            let line = reader.next_line()?;
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let parsed = match word {
                "output" => read_output(rest).map(|o| kernel.outputs.push(o)),
                "scratch" => {
                    parse_size(rest).map(|bytes| kernel.scratch.push(ScratchBuffer { bytes }))
                }
                "launch" => read_launch(rest).map(|l| kernel.launches.push(l)),
                "param" => match kernel.launches.last_mut() {
                    Some(launch) => read_param(rest).map(|p| launch.params.push(p)),
                    None => Err("`param` before any `launch`".to_string()),
                },
                "ptx" => {
                    let len: usize = rest
                        .parse()
                        .map_err(|_| reader.error(format!("bad PTX length `{rest}`")))?;
                    let ptx = reader
                        .rest
                        .get(..len)
                        .filter(|_| reader.rest.len() == len)
                        .ok_or_else(|| {
                            reader.error(format!(
                                "PTX of {len} bytes announced, {} present",
                                reader.rest.len()
                            ))
                        })?;
                    kernel.ptx = ptx.to_string();
                    return Ok(kernel);
                }
                other => Err(format!("unknown record `{other}`")),
            };
            parsed.map_err(|reason| reader.error(reason))?;
        }
    }
}

/// The lines of the text, counted for error messages.
struct Reader<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Reader<'a> {
    fn next_line(&mut self) -> Result<&'a str, SerialError> {
        self.line += 1;
        let (line, rest) = self
            .rest
            .split_once('\n')
            .ok_or_else(|| self.error("unexpected end of text".to_string()))?;
        self.rest = rest;
        Ok(line)
    }

    fn error(&self, reason: String) -> SerialError {
        SerialError {
            line: self.line,
            reason,
        }
    }
}

fn read_output(rest: &str) -> Result<OutputBuffer, String> {
    let (dtype, rest) = rest
        .split_once(' ')
        .ok_or_else(|| format!("bad output `{rest}`"))?;
    let elem = DType::from_name(dtype).ok_or_else(|| format!("unknown dtype `{dtype}`"))?;
    let (elems, used) = match rest.split_once(" used_rows_from ") {
        Some((size, k)) => (size, Some(parse_number(k)?)),
        None => (rest, None),
    };
    Ok(OutputBuffer {
        elem,
        elems: parse_size(elems)?,
        used_rows_from: used,
    })
}

fn read_launch(rest: &str) -> Result<Launch, String> {
    let (head, grid) = rest
        .split_once(" grid ")
        .ok_or_else(|| format!("launch without a grid: `{rest}`"))?;
    let words: Vec<&str> = head.split(' ').collect();
    let [entry, "block", block, "shared", shared] = words[..] else {
        return Err(format!("expected `ENTRY block N shared N`, found `{head}`"));
    };
    // The grid's size expression may contain spaces: its last two words are numbers.
    let mut tail = grid.rsplitn(3, ' ');
    let (max_blocks, per_block, items) = match (tail.next(), tail.next(), tail.next()) {
        (Some(m), Some(p), Some(i)) => (m, p, i),
        _ => {
            return Err(format!(
                "expected `grid ITEMS PER_BLOCK MAX_BLOCKS`, found `{grid}`"
            ));
        }
    };
    Ok(Launch {
        entry: entry.to_string(),
        block: parse_number(block)?,
        dynamic_shared_bytes: parse_number(shared)?,
        grid: GridRule {
            items: parse_size(items)?,
            items_per_block: parse_number(per_block)?,
            max_blocks: parse_number(max_blocks)?,
        },
        params: Vec::new(),
    })
}

fn read_param(rest: &str) -> Result<ParamBinding, String> {
    let (kind, value) = rest
        .split_once(' ')
        .ok_or_else(|| format!("bad param `{rest}`"))?;
    Ok(match kind {
        "input" => ParamBinding::Input(parse_number(value)?),
        "output" => ParamBinding::Output(parse_number(value)?),
        "scratch" => ParamBinding::Scratch(parse_number(value)?),
        "size" => ParamBinding::Size(parse_size(value)?),
        "float_attr" if !value.is_empty() && !value.contains(' ') => {
            ParamBinding::FloatAttr(value.to_string())
        }
        "tensor_map" => ParamBinding::TensorMap(parse_tensor_map(value)?),
        _ => return Err(format!("bad param `{rest}`")),
    })
}

/// `tensor_map INPUT DTYPE SWIZZLE BOX,.. | DIM | ..`: the box and the
/// prefix-form dimensions innermost first, the swizzle span in bytes.
fn tensor_map_text(map: &TensorMapBinding) -> String {
    let boxes: Vec<String> = map.box_dim.iter().map(ToString::to_string).collect();
    let mut text = format!(
        "tensor_map {} {} {} {}",
        map.input,
        map.dtype.name(),
        swizzle_bytes(map.swizzle),
        boxes.join(",")
    );
    for d in &map.dims {
        text.push_str(" | ");
        text.push_str(&size_text(d));
    }
    text
}

/// Reads what [`tensor_map_text`] writes after `tensor_map `.
fn parse_tensor_map(value: &str) -> Result<TensorMapBinding, String> {
    let bad = || format!("bad tensor map `{value}`");
    let mut parts = value.split(" | ");
    let head: Vec<&str> = parts.next().ok_or_else(bad)?.split(' ').collect();
    let [input, dtype, swizzle, boxes] = head[..] else {
        return Err(bad());
    };
    let box_dim = boxes
        .split(',')
        .map(parse_number)
        .collect::<Result<Vec<u32>, _>>()?;
    let dims = parts.map(parse_size).collect::<Result<Vec<_>, _>>()?;
    if dims.len() != box_dim.len() {
        return Err(bad());
    }
    Ok(TensorMapBinding {
        input: parse_number(input)?,
        dtype: DType::from_name(dtype).ok_or_else(bad)?,
        dims,
        box_dim,
        swizzle: swizzle_of_bytes(parse_number(swizzle)?).ok_or_else(bad)?,
    })
}

fn parse_number<T: std::str::FromStr>(word: &str) -> Result<T, String> {
    word.parse().map_err(|_| format!("bad number `{word}`"))
}

/// The prefix form of a size expression.
fn size_text(e: &SizeExpr) -> String {
    match e {
        SizeExpr::Const(v) => v.to_string(),
        SizeExpr::Batch => "B".to_string(),
        SizeExpr::TotalRows => "T".to_string(),
        SizeExpr::MaxLen => "N".to_string(),
        SizeExpr::Add(a, b) => format!("(add {} {})", size_text(a), size_text(b)),
        SizeExpr::Mul(a, b) => format!("(mul {} {})", size_text(a), size_text(b)),
        SizeExpr::CeilDiv(a, k) => format!("(ceil_div {} {k})", size_text(a)),
    }
}

/// Reads a whole prefix-form size expression.
fn parse_size(text: &str) -> Result<SizeExpr, String> {
    let tokens: Vec<&str> = text
        .split(' ')
        .flat_map(|w| {
            // Split parentheses off the words: "(add" -> "(", "add"; "1))" -> "1", ")", ")".
            let open = w.len() - w.trim_start_matches('(').len();
            let core = w.trim_start_matches('(').trim_end_matches(')');
            let close = w.len() - open - core.len();
            std::iter::repeat_n("(", open)
                .chain((!core.is_empty()).then_some(core))
                .chain(std::iter::repeat_n(")", close))
        })
        .collect();
    let mut pos = 0;
    let expr = size_expr(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(format!("trailing tokens in size expression `{text}`"));
    }
    Ok(expr)
}

fn size_expr(tokens: &[&str], pos: &mut usize) -> Result<SizeExpr, String> {
    let token = *tokens
        .get(*pos)
        .ok_or_else(|| "size expression ends early".to_string())?;
    *pos += 1;
    match token {
        "B" => Ok(SizeExpr::Batch),
        "T" => Ok(SizeExpr::TotalRows),
        "N" => Ok(SizeExpr::MaxLen),
        "(" => {
            let op = *tokens
                .get(*pos)
                .ok_or_else(|| "size expression ends after `(`".to_string())?;
            *pos += 1;
            let a = size_expr(tokens, pos)?;
            let expr = match op {
                "add" => a + size_expr(tokens, pos)?,
                "mul" => a * size_expr(tokens, pos)?,
                "ceil_div" => {
                    let k = tokens
                        .get(*pos)
                        .ok_or_else(|| "ceil_div without a divisor".to_string())?;
                    *pos += 1;
                    SizeExpr::ceil_div(a, parse_number(k)?)
                }
                other => return Err(format!("unknown size operator `{other}`")),
            };
            match tokens.get(*pos) {
                Some(&")") => {
                    *pos += 1;
                    Ok(expr)
                }
                _ => Err(format!("`({op} ...` is not closed")),
            }
        }
        number => parse_number(number).map(SizeExpr::Const),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CompiledKernel {
        CompiledKernel {
            ptx: "//\n.version 8.0\n.target sm_80\n.entry k(.param .u64 p)\n{ ret; }\n".to_string(),
            arch: Arch::Sm90a,
            launches: vec![
                Launch {
                    entry: "jg_a".to_string(),
                    block: 256,
                    dynamic_shared_bytes: 49152,
                    grid: GridRule {
                        items: SizeExpr::ceil_div(SizeExpr::TotalRows * SizeExpr::Const(3), 7),
                        items_per_block: 4,
                        max_blocks: 65535,
                    },
                    params: vec![
                        ParamBinding::Input(2),
                        ParamBinding::Output(1),
                        ParamBinding::Scratch(0),
                        ParamBinding::Size(SizeExpr::Batch + SizeExpr::Const(1)),
                        ParamBinding::Size(SizeExpr::MaxLen),
                        ParamBinding::FloatAttr("padding_value".to_string()),
                        ParamBinding::TensorMap(TensorMapBinding {
                            input: 1,
                            dtype: DType::BF16,
                            dims: vec![
                                SizeExpr::Const(4) * SizeExpr::Const(128),
                                SizeExpr::TotalRows,
                            ],
                            box_dim: vec![64, 64],
                            swizzle: crate::kernel::Swizzle::B128,
                        }),
                    ],
                },
                Launch {
                    entry: "jg_b".to_string(),
                    block: 128,
                    dynamic_shared_bytes: 0,
                    grid: GridRule {
                        items: SizeExpr::Batch,
                        items_per_block: 1,
                        max_blocks: 1,
                    },
                    params: Vec::new(),
                },
            ],
            scratch: vec![ScratchBuffer {
                bytes: (SizeExpr::TotalRows + SizeExpr::Const(1)) * SizeExpr::Const(8),
            }],
            outputs: vec![
                OutputBuffer {
                    elem: DType::BF16,
                    elems: SizeExpr::TotalRows * SizeExpr::Const(64),
                    used_rows_from: Some(1),
                },
                OutputBuffer {
                    elem: DType::I64,
                    elems: SizeExpr::Batch + SizeExpr::Const(1),
                    used_rows_from: None,
                },
            ],
        }
    }

    #[test]
    fn round_trips_every_field() {
        let k = sample();
        let text = k.to_text();
        assert!(
            text.starts_with("jagged-compiled 1\narch sm_90a\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "launch jg_a block 256 shared 49152 grid (ceil_div (mul T 3) 7) 4 65535\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("param tensor_map 1 bf16 128 64,64 | (mul 4 128) | T\n"),
            "{text}"
        );
        assert_eq!(CompiledKernel::from_text(&text).expect("reads back"), k);
    }

    #[test]
    fn rejects_damage_with_the_line() {
        let text = sample().to_text();
        let truncated = &text[..text.len() - 3];
        let err = CompiledKernel::from_text(truncated).unwrap_err();
        assert!(err.reason.contains("announced"), "{err}");
        let bad = text.replace("param output 1", "param outptu 1");
        let err = CompiledKernel::from_text(&bad).unwrap_err();
        assert_eq!(err.line, 8, "{err}");
        let bad = text.replace("(mul T 3)", "(mul T 3");
        assert!(CompiledKernel::from_text(&bad).is_err());
        assert!(CompiledKernel::from_text("jagged-compiled 2\n").is_err());
        for damaged in [
            "bf16 96 ",
            "64,64 | (mul 4 128) | T",
            "bf61 128 ",
            "bf16 128 64,x",
        ] {
            let bad = text.replace("bf16 128 ", damaged);
            assert!(CompiledKernel::from_text(&bad).is_err(), "{damaged}");
        }
        let bad = text.replace(" | T\n", "\n");
        assert!(CompiledKernel::from_text(&bad).is_err());
    }
}
