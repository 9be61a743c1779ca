//! Tokenizer for PTX text.
//!
//! PTX words keep their dots and `::` (`ld.global.v4.b32`, `%tid.x`, `.shared::cta`,
//! `L2::evict_last`) so the parser sees one token per opcode or directive. Comments,
//! `.loc`/`.file` lines and `.section` blocks (DWARF data) are skipped here.

use crate::error::EmuError;

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenKind {
    /// Identifier, register, opcode or directive (directives keep their leading `.`).
    Word(String),
    /// Integer literal (decimal, hex, octal or binary), as its two's-complement bits.
    Int(u64),
    /// `0fXXXXXXXX` single-precision literal, as bits.
    F32Bits(u32),
    /// `0dXXXXXXXXXXXXXXXX` or decimal floating literal, as a value.
    F64(f64),
    /// String literal (only in directives such as `.pragma`).
    Str(String),
    /// Single punctuation character: `, ; { } [ ] ( ) + - @ ! < > = | :`.
    Punct(char),
}

/// A token with its 1-based source position.
#[derive(Clone, Debug)]
pub struct Token {
    pub kind: TokenKind,
    pub line: u32,
    pub col: u32,
}

/// Splits PTX source into tokens.
pub fn tokenize(src: &str) -> Result<Vec<Token>, EmuError> {
    let mut lx = Lexer {
        s: src.as_bytes(),
        i: 0,
        line: 1,
        line_start: 0,
        out: Vec::new(),
    };
    lx.run()?;
    Ok(lx.out)
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
    line_start: usize,
    out: Vec<Token>,
}

fn is_word_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'%' || c == b'.'
}

fn is_word_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'%' || c == b'.'
}

impl Lexer<'_> {
    fn col(&self) -> u32 {
        (self.i - self.line_start + 1) as u32
    }

    fn err(&self, message: String) -> EmuError {
        EmuError::Parse {
            line: self.line,
            column: self.col(),
            message,
        }
    }

    fn peek(&self, k: usize) -> u8 {
        self.s.get(self.i + k).copied().unwrap_or(0)
    }

    fn newline(&mut self) {
        self.line += 1;
        self.line_start = self.i + 1;
    }

    fn skip_to_eol(&mut self) {
        while self.i < self.s.len() && self.s[self.i] != b'\n' {
            self.i += 1;
        }
    }

    fn run(&mut self) -> Result<(), EmuError> {
        while self.i < self.s.len() {
            let c = self.s[self.i];
            match c {
                b'\n' => {
                    self.newline();
                    self.i += 1;
                }
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'/' if self.peek(1) == b'/' => self.skip_to_eol(),
                b'/' if self.peek(1) == b'*' => {
                    self.i += 2;
                    loop {
                        if self.i >= self.s.len() {
                            return Err(self.err("unterminated block comment".into()));
                        }
                        if self.s[self.i] == b'*' && self.peek(1) == b'/' {
                            self.i += 2;
                            break;
                        }
                        if self.s[self.i] == b'\n' {
                            self.newline();
                        }
                        self.i += 1;
                    }
                }
                b'"' => {
                    let (line, col) = (self.line, self.col());
                    self.i += 1;
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i] != b'"' {
                        if self.s[self.i] == b'\n' {
                            return Err(self.err("unterminated string literal".into()));
                        }
                        self.i += 1;
                    }
                    let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                    self.i += 1;
                    self.push(TokenKind::Str(text), line, col);
                }
                b'0'..=b'9' => self.number()?,
                _ if is_word_start(c) => self.word()?,
                b',' | b';' | b'{' | b'}' | b'[' | b']' | b'(' | b')' | b'+' | b'-' | b'@'
                | b'!' | b'<' | b'>' | b'=' | b'|' | b':' => {
                    let (line, col) = (self.line, self.col());
                    self.i += 1;
                    self.push(TokenKind::Punct(c as char), line, col);
                }
                _ => {
                    return Err(self.err(format!("unexpected character {:?}", c as char)));
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, kind: TokenKind, line: u32, col: u32) {
        self.out.push(Token { kind, line, col });
    }

    fn word(&mut self) -> Result<(), EmuError> {
        let (line, col) = (self.line, self.col());
        let start = self.i;
        loop {
            let c = self.peek(0);
            if is_word_char(c) {
                self.i += 1;
            } else if c == b':' && self.peek(1) == b':' {
                self.i += 2;
            } else {
                break;
            }
        }
        let w = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        match w.as_str() {
            // Debug line info: line-terminated, no semicolon.
            ".loc" | ".file" => self.skip_to_eol(),
            // DWARF sections: skip the braced block.
            ".section" => self.skip_section()?,
            _ => self.push(TokenKind::Word(w), line, col),
        }
        Ok(())
    }

    fn skip_section(&mut self) -> Result<(), EmuError> {
        while self.i < self.s.len() && self.s[self.i] != b'{' {
            if self.s[self.i] == b'\n' {
                self.newline();
            }
            self.i += 1;
        }
        let mut depth = 0usize;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        self.i += 1;
                        return Ok(());
                    }
                }
                b'\n' => self.newline(),
                _ => {}
            }
            self.i += 1;
        }
        Err(self.err("unterminated .section block".into()))
    }

    fn number(&mut self) -> Result<(), EmuError> {
        let (line, col) = (self.line, self.col());
        let start = self.i;
        while self.peek(0).is_ascii_alphanumeric() || self.peek(0) == b'.' {
            // An exponent sign belongs to a decimal float: `1.5e-3`.
            if (self.peek(0) == b'e' || self.peek(0) == b'E')
                && (self.peek(1) == b'-' || self.peek(1) == b'+')
                && !self.s[start..self.i].starts_with(b"0x")
            {
                self.i += 2;
                continue;
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        let lower = text.to_ascii_lowercase();
        let bad = || EmuError::Parse {
            line,
            column: col,
            message: format!("malformed number literal `{text}`"),
        };
        let kind = if let Some(h) = lower.strip_prefix("0f") {
            if h.len() != 8 {
                return Err(bad());
            }
            TokenKind::F32Bits(u32::from_str_radix(h, 16).map_err(|_| bad())?)
        } else if let Some(h) = lower.strip_prefix("0d") {
            if h.len() != 16 {
                return Err(bad());
            }
            TokenKind::F64(f64::from_bits(
                u64::from_str_radix(h, 16).map_err(|_| bad())?,
            ))
        } else {
            let t = lower.strip_suffix('u').unwrap_or(&lower);
            if let Some(h) = t.strip_prefix("0x") {
                TokenKind::Int(u64::from_str_radix(h, 16).map_err(|_| bad())?)
            } else if let Some(b) = t.strip_prefix("0b") {
                TokenKind::Int(u64::from_str_radix(b, 2).map_err(|_| bad())?)
            } else if t.contains('.') || t.contains('e') {
                TokenKind::F64(t.parse::<f64>().map_err(|_| bad())?)
            } else if t.len() > 1 && t.starts_with('0') {
                TokenKind::Int(u64::from_str_radix(&t[1..], 8).map_err(|_| bad())?)
            } else {
                TokenKind::Int(t.parse::<u64>().map_err(|_| bad())?)
            }
        };
        self.push(kind, line, col);
        Ok(())
    }
}
