//! Kernel parameter lists read from PTX text.
//!
//! The CUDA driver copies each launch argument with the size the kernel
//! declares, whatever the host passed: a wrong count or size is undefined
//! behaviour. The runtime therefore reads every `.entry` signature when it
//! loads a module and checks each launch's arguments against it first.

use std::collections::HashMap;

/// The byte size of each parameter of each kernel of a module, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntrySignatures {
    entries: HashMap<String, Vec<usize>>,
}

impl EntrySignatures {
    /// Reads the `.entry` declarations of a PTX module.
    pub fn parse(ptx: &str) -> Result<EntrySignatures, String> {
        let text = strip_comments(ptx);
        let mut entries = HashMap::new();
        let mut rest = text.as_str();
        while let Some(at) = find_directive(rest, ".entry") {
            rest = &rest[at + ".entry".len()..];
            let name_len = rest
                .trim_start()
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.trim_start().len());
            let after_space = rest.trim_start();
            let name = &after_space[..name_len];
            if name.is_empty() {
                return Err("`.entry` without a kernel name".to_string());
            }
            let after_name = after_space[name_len..].trim_start();
            let params = if let Some(list) = after_name.strip_prefix('(') {
                let close = list
                    .find(')')
                    .ok_or_else(|| format!("kernel {name}: parameter list without `)`"))?;
                rest = &list[close + 1..];
                parse_param_list(name, &list[..close])?
            } else {
                rest = after_name;
                Vec::new()
            };
            entries.insert(name.to_string(), params);
        }
        Ok(EntrySignatures { entries })
    }

    /// The parameter sizes of `kernel`, if the module declares it.
    pub fn params(&self, kernel: &str) -> Option<&[usize]> {
        self.entries.get(kernel).map(Vec::as_slice)
    }

    /// The kernel names, in no particular order.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// The PTX text with `//` and `/* */` comments blanked out.
fn strip_comments(ptx: &str) -> String {
    let mut out = String::with_capacity(ptx.len());
    let mut rest = ptx;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = &rest[l..];
                let end = rest.find('\n').unwrap_or(rest.len());
                rest = &rest[end..];
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                out.push(' ');
                rest = &rest[b + 2..];
                let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
                rest = &rest[end..];
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

/// The position of `directive` as a whole token (not `.entry_x`, not `a.entry`).
fn find_directive(text: &str, directive: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(directive) {
        let at = from + found;
        let before_ok = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || c == '}' || c == ';');
        let after_ok = text[at + directive.len()..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace);
        if before_ok && after_ok {
            return Some(at);
        }
        from = at + directive.len();
    }
    None
}

fn parse_param_list(kernel: &str, list: &str) -> Result<Vec<usize>, String> {
    if list.trim().is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .enumerate()
        .map(|(index, param)| {
            param_size(param).ok_or_else(|| {
                format!(
                    "kernel {kernel}: cannot read parameter {index}: {:?}",
                    param.trim()
                )
            })
        })
        .collect()
}

/// The byte size of one `.param .TYPE [qualifiers] name[N]` declaration.
fn param_size(param: &str) -> Option<usize> {
    let tokens: Vec<&str> = param.split_whitespace().collect();
    if tokens.first() != Some(&".param") {
        return None;
    }
    let elem = tokens[1..].iter().find_map(|token| scalar_size(token))?;
    let name = tokens.last()?;
    match name.split_once('[') {
        None => Some(elem),
        Some((_, count)) => count
            .strip_suffix(']')?
            .trim()
            .parse::<usize>()
            .ok()
            .map(|n| n * elem),
    }
}

fn scalar_size(token: &str) -> Option<usize> {
    match token {
        ".u8" | ".s8" | ".b8" | ".pred" => Some(1),
        ".u16" | ".s16" | ".b16" | ".f16" | ".bf16" => Some(2),
        ".u32" | ".s32" | ".b32" | ".f32" | ".f16x2" | ".bf16x2" => Some(4),
        ".u64" | ".s64" | ".b64" | ".f64" => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_triton_style_signatures() {
        let ptx = r#"
.version 8.0
.target sm_80
// .entry commented_out(.param .u32 x)
.visible .entry vadd(
	.param .u64 vadd_param_0, /* a pointer */
	.param .u32 vadd_param_1
)
{ ret; }
.visible .entry triton_(
	.param .u64 .ptr .global .align 1 triton__param_0,
	.param .f32 triton__param_1,
	.param .align 4 .b8 triton__param_2[12]
)
.maxntid 128, 1, 1
{ ret; }
.entry empty { ret; }
"#;
        let sigs = EntrySignatures::parse(ptx).expect("parses");
        assert_eq!(sigs.params("vadd"), Some(&[8, 4][..]));
        assert_eq!(sigs.params("triton_"), Some(&[8, 4, 12][..]));
        assert_eq!(sigs.params("empty"), Some(&[][..]));
        assert_eq!(sigs.params("commented_out"), None);
        assert_eq!(sigs.kernel_names().count(), 3);
    }

    #[test]
    fn rejects_an_unreadable_parameter() {
        let err = EntrySignatures::parse(".entry k(.param .weird p)").unwrap_err();
        assert!(err.contains("parameter 0"), "{err}");
    }
}
