//! Recursive-descent parser from tokens to the [`ast`](crate::ast) tree.

use crate::ast::{Inst, Kernel, Module, Operand, Param, Stmt, VarDecl, VarSpace};
use crate::error::EmuError;
use crate::lexer::{Token, TokenKind, tokenize};

/// Most bytes of kernel parameters (CUDA 12.1+ on Volta and later).
pub const MAX_PARAM_BYTES: u32 = 32764;
/// Most registers one `.reg` declaration may declare (`%r<N>`); each register is 256
/// bytes of emulator state per warp.
pub const MAX_REGS_PER_DECL: u64 = 1 << 16;

/// Parses PTX text into a syntax tree.
pub fn parse(src: &str) -> Result<Module, EmuError> {
    let tokens = tokenize(src)?;
    let mut p = Parser { t: tokens, i: 0 };
    p.module()
}

struct Parser {
    t: Vec<Token>,
    i: usize,
}

/// Size in bytes of a PTX fundamental type name (without the dot), and whether it is a float.
pub fn type_size(ty: &str) -> Option<(u32, bool)> {
    Some(match ty {
        "b8" | "u8" | "s8" => (1, false),
        "b16" | "u16" | "s16" => (2, false),
        "f16" | "bf16" => (2, true),
        "b32" | "u32" | "s32" => (4, false),
        "f32" => (4, true),
        "f16x2" | "bf16x2" => (4, true),
        "b64" | "u64" | "s64" => (8, false),
        "f64" => (8, true),
        "b128" => (16, false),
        "pred" => (1, false),
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&TokenKind> {
        self.t.get(self.i).map(|t| &t.kind)
    }

    fn pos(&self) -> (u32, u32) {
        match self.t.get(self.i).or_else(|| self.t.last()) {
            Some(t) => (t.line, t.col),
            None => (1, 1),
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, EmuError> {
        let (line, column) = self.pos();
        Err(EmuError::Parse {
            line,
            column,
            message: message.into(),
        })
    }

    fn unsupported<T>(&self, what: impl Into<String>) -> Result<T, EmuError> {
        let (line, column) = self.pos();
        Err(EmuError::Unsupported {
            line,
            column,
            what: what.into(),
        })
    }

    fn next(&mut self) -> Option<TokenKind> {
        let t = self.t.get(self.i).map(|t| t.kind.clone());
        self.i += 1;
        t
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&TokenKind::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), EmuError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            self.err(format!("expected `{c}`, found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "end of input".into(),
            Some(TokenKind::Word(w)) => format!("`{w}`"),
            Some(TokenKind::Int(v)) => format!("`{v}`"),
            Some(TokenKind::Punct(c)) => format!("`{c}`"),
            Some(k) => format!("{k:?}"),
        }
    }

    fn word(&mut self) -> Result<String, EmuError> {
        match self.peek() {
            Some(TokenKind::Word(w)) => {
                let w = w.clone();
                self.i += 1;
                Ok(w)
            }
            _ => self.err(format!("expected a name, found {}", self.describe())),
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(TokenKind::Word(x)) if x == w)
    }

    fn int(&mut self) -> Result<u64, EmuError> {
        match self.peek() {
            Some(TokenKind::Int(v)) => {
                let v = *v;
                self.i += 1;
                Ok(v)
            }
            _ => self.err(format!("expected an integer, found {}", self.describe())),
        }
    }

    /// Skips tokens up to and including the next `;`.
    fn skip_statement(&mut self) {
        while let Some(k) = self.next() {
            if k == TokenKind::Punct(';') {
                break;
            }
        }
    }

    fn module(&mut self) -> Result<Module, EmuError> {
        let mut m = Module::default();
        while let Some(k) = self.peek().cloned() {
            let TokenKind::Word(w) = k else {
                return self.err(format!("expected a directive, found {}", self.describe()));
            };
            match w.as_str() {
                ".version" | ".address_size" => {
                    self.i += 1;
                    self.next();
                }
                ".target" => {
                    self.i += 1;
                    self.word()?;
                    while self.eat_punct(',') {
                        self.word()?;
                    }
                }
                ".visible" | ".weak" | ".extern" => {
                    // Linkage prefix: look at what it qualifies.
                    let save = self.i;
                    self.i += 1;
                    while self.is_word(".visible")
                        || self.is_word(".weak")
                        || self.is_word(".extern")
                    {
                        self.i += 1;
                    }
                    if self.is_word(".entry") {
                        m.kernels.push(self.kernel()?);
                    } else if self.is_word(".func") {
                        return self.unsupported(
                            ".func (device functions) are not supported; only .entry kernels",
                        );
                    } else {
                        self.i = save;
                        m.vars.push(self.var_decl()?);
                    }
                }
                ".entry" => m.kernels.push(self.kernel()?),
                ".func" => {
                    return self.unsupported(
                        ".func (device functions) are not supported; only .entry kernels",
                    );
                }
                ".global" | ".shared" | ".const" => m.vars.push(self.var_decl()?),
                ".pragma" => self.skip_statement(),
                _ => return self.unsupported(format!("module directive `{w}`")),
            }
        }
        Ok(m)
    }

    fn kernel(&mut self) -> Result<Kernel, EmuError> {
        let (line, _) = self.pos();
        self.i += 1; // .entry
        let name = self.word()?;
        let mut params = Vec::new();
        if self.eat_punct('(') && !self.eat_punct(')') {
            loop {
                params.push(self.param()?);
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let mut reqntid = None;
        let mut maxntid = None;
        loop {
            if self.is_word(".reqntid") || self.is_word(".maxntid") {
                let which = self.word()?;
                let mut dims = [1u32; 3];
                dims[0] = self.int()? as u32;
                let mut k = 1;
                while self.eat_punct(',') {
                    if k >= 3 {
                        return self.err("too many dimensions");
                    }
                    dims[k] = self.int()? as u32;
                    k += 1;
                }
                if which == ".reqntid" {
                    reqntid = Some(dims);
                } else {
                    maxntid = Some(dims);
                }
            } else if self.is_word(".maxnreg")
                || self.is_word(".minnctapersm")
                || self.is_word(".maxnctapersm")
            {
                self.i += 1;
                self.int()?;
            } else if self.is_word(".pragma") {
                self.skip_statement();
            } else {
                break;
            }
        }
        self.expect_punct('{')?;
        let mut body = Vec::new();
        let mut depth = 1usize;
        loop {
            let (sl, sc) = self.pos();
            match self.peek().cloned() {
                None => return self.err(format!("kernel `{name}` body is not closed")),
                Some(TokenKind::Punct('{')) => {
                    self.i += 1;
                    depth += 1;
                    body.push(Stmt::BlockStart);
                }
                Some(TokenKind::Punct('}')) => {
                    self.i += 1;
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    body.push(Stmt::BlockEnd);
                }
                Some(TokenKind::Punct(';')) => self.i += 1,
                Some(TokenKind::Punct('@')) => body.push(Stmt::Inst(self.inst()?)),
                Some(TokenKind::Word(w)) => {
                    if w == ".reg" {
                        self.i += 1;
                        body.push(self.reg_decl(sl, sc)?);
                    } else if w == ".pragma" {
                        self.skip_statement();
                    } else if w.starts_with('.') {
                        body.push(Stmt::Var(self.var_decl()?));
                    } else if self.t.get(self.i + 1).map(|t| &t.kind)
                        == Some(&TokenKind::Punct(':'))
                    {
                        self.i += 2;
                        body.push(Stmt::Label(w, sl, sc));
                    } else {
                        body.push(Stmt::Inst(self.inst()?));
                    }
                }
                Some(_) => {
                    return self.err(format!(
                        "expected an instruction, found {}",
                        self.describe()
                    ));
                }
            }
        }
        Ok(Kernel {
            name,
            params,
            body,
            reqntid,
            maxntid,
            line,
        })
    }

    fn param(&mut self) -> Result<Param, EmuError> {
        let (line, _) = self.pos();
        if self.word()? != ".param" {
            self.i -= 1;
            return self.err("expected `.param`");
        }
        let mut align = 0;
        let mut elem = None;
        let mut ptr = false;
        loop {
            match self.peek() {
                Some(TokenKind::Word(w)) if w.starts_with('.') => {
                    let w = w.clone();
                    self.i += 1;
                    match w.as_str() {
                        ".align" => align = self.int()? as u32,
                        ".ptr" => ptr = true,
                        ".global" | ".shared" | ".const" | ".local" => {}
                        _ => match type_size(&w[1..]) {
                            Some(s) => elem = Some(s),
                            None => return self.unsupported(format!("parameter qualifier `{w}`")),
                        },
                    }
                }
                _ => break,
            }
        }
        let Some((esize, float)) = elem else {
            return self.err("parameter without a type");
        };
        let name = self.word()?;
        let mut count = 1u64;
        if self.eat_punct('[') {
            count = self.int()?;
            self.expect_punct(']')?;
        }
        let Some(size) = u32::try_from(count)
            .ok()
            .and_then(|n| n.checked_mul(esize))
            .filter(|&s| s <= MAX_PARAM_BYTES)
        else {
            return self.unsupported(format!(
                "parameter `{name}` of {count} elements of {esize} bytes (kernel parameters are limited to {MAX_PARAM_BYTES} bytes)"
            ));
        };
        // On a `.ptr` parameter `.align` is the alignment of the memory it points to; the
        // parameter itself (a `.u64`/`.u32` address) sits at its natural alignment, as
        // CUDA lays it out.
        let align = if ptr || align == 0 { esize } else { align };
        Ok(Param {
            name,
            size,
            align,
            float,
            line,
        })
    }

    fn reg_decl(&mut self, line: u32, col: u32) -> Result<Stmt, EmuError> {
        let ty = self.word()?;
        let ty = match ty.strip_prefix('.') {
            Some(t) if type_size(t).is_some() => t.to_string(),
            Some(".v2" | ".v4") | Some("v2" | "v4") => return self.unsupported("vector registers"),
            _ => return self.err(format!("expected a register type, found `{ty}`")),
        };
        let mut names = Vec::new();
        loop {
            let name = self.word()?;
            if self.eat_punct('<') {
                let n = self.int()?;
                self.expect_punct('>')?;
                if n > MAX_REGS_PER_DECL {
                    return self.unsupported(format!(
                        "{n} registers `{name}<{n}>` (at most {MAX_REGS_PER_DECL} per declaration)"
                    ));
                }
                for k in 0..n {
                    names.push(format!("{name}{k}"));
                }
            } else {
                names.push(name);
            }
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct(';')?;
        Ok(Stmt::Reg {
            ty,
            names,
            line,
            col,
        })
    }

    fn var_decl(&mut self) -> Result<VarDecl, EmuError> {
        let (line, col) = self.pos();
        let mut space = None;
        let mut align = 0;
        let elem_size;
        loop {
            let w = self.word()?;
            match w.as_str() {
                ".extern" | ".visible" | ".weak" => {}
                ".shared" | ".shared::cta" => space = Some(VarSpace::Shared),
                ".local" => space = Some(VarSpace::Local),
                ".global" => space = Some(VarSpace::Global),
                ".const" => space = Some(VarSpace::Const),
                ".align" => align = self.int()? as u32,
                _ if w.starts_with('.') => match type_size(&w[1..]) {
                    Some((s, _)) => {
                        elem_size = s;
                        break;
                    }
                    None => return self.unsupported(format!("declaration qualifier `{w}`")),
                },
                _ => return self.err(format!("expected a type in declaration, found `{w}`")),
            }
        }
        let Some(space) = space else {
            return self.err("declaration without a state space");
        };
        let name = self.word()?;
        let mut count = Some(1);
        if self.eat_punct('[') {
            if self.eat_punct(']') {
                count = None;
            } else {
                count = Some(self.int()?);
                self.expect_punct(']')?;
            }
        }
        let mut init = None;
        if self.eat_punct('=') {
            let mut bytes = Vec::new();
            let braced = self.eat_punct('{');
            loop {
                let neg = self.eat_punct('-');
                let v = match self.next() {
                    Some(TokenKind::Int(v)) => {
                        if neg {
                            v.wrapping_neg()
                        } else {
                            v
                        }
                    }
                    Some(TokenKind::F32Bits(b)) => b as u64,
                    Some(TokenKind::F64(f)) if elem_size == 4 => (f as f32).to_bits() as u64,
                    Some(TokenKind::F64(f)) => f.to_bits(),
                    _ => {
                        self.i -= 1;
                        return self.unsupported("initializer that is not a list of numbers");
                    }
                };
                bytes.extend_from_slice(&v.to_le_bytes()[..elem_size as usize]);
                if !braced || !self.eat_punct(',') {
                    break;
                }
            }
            if braced {
                self.expect_punct('}')?;
            }
            init = Some(bytes);
        }
        self.expect_punct(';')?;
        Ok(VarDecl {
            space,
            name,
            align: if align == 0 { elem_size } else { align },
            elem_size,
            count,
            init,
            line,
            col,
        })
    }

    fn inst(&mut self) -> Result<Inst, EmuError> {
        let (line, col) = self.pos();
        let mut guard = None;
        if self.eat_punct('@') {
            let neg = self.eat_punct('!');
            guard = Some((self.word()?, neg));
        }
        let opcode = self.word()?;
        let mut operands = Vec::new();
        if !self.eat_punct(';') {
            loop {
                operands.push(self.operand()?);
                if self.eat_punct(';') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        Ok(Inst {
            guard,
            opcode,
            operands,
            line,
            col,
        })
    }

    fn operand(&mut self) -> Result<Operand, EmuError> {
        match self.peek().cloned() {
            Some(TokenKind::Punct('{')) => {
                self.i += 1;
                let mut v = Vec::new();
                loop {
                    // PTX vectors hold registers and immediates, never other
                    // vectors: refusing `{` here also bounds the recursion
                    // (a deeply nested input overflowed the stack).
                    if matches!(self.peek(), Some(TokenKind::Punct('{'))) {
                        return self.err("a vector operand cannot hold another vector".to_string());
                    }
                    v.push(self.operand()?);
                    if self.eat_punct('}') {
                        break;
                    }
                    self.expect_punct(',')?;
                }
                Ok(Operand::Vector(v))
            }
            Some(TokenKind::Punct('[')) => {
                self.i += 1;
                let mut base = None;
                let mut offset: i64 = 0;
                match self.peek().cloned() {
                    Some(TokenKind::Word(w)) => {
                        self.i += 1;
                        if self.eat_punct(',') {
                            // Only a `{...}` vector may follow (no recursion into addresses).
                            let Some(TokenKind::Punct('{')) = self.peek() else {
                                return self.err("expected `{` coordinates after the tensor map");
                            };
                            let Operand::Vector(coords) = self.operand()? else {
                                return self.err("expected `{` coordinates after the tensor map");
                            };
                            self.expect_punct(']')?;
                            return Ok(Operand::Tensor { base: w, coords });
                        }
                        base = Some(w);
                    }
                    Some(TokenKind::Int(v)) => {
                        self.i += 1;
                        offset = v as i64;
                    }
                    _ => {
                        return self.err(format!("expected an address, found {}", self.describe()));
                    }
                }
                while !self.eat_punct(']') {
                    let sign = if self.eat_punct('+') {
                        if self.eat_punct('-') { -1 } else { 1 }
                    } else if self.eat_punct('-') {
                        -1
                    } else {
                        return self.err(format!(
                            "expected `+`, `-` or `]` in address, found {}",
                            self.describe()
                        ));
                    };
                    // Wrapping, as address arithmetic is (a `-` of i64::MIN
                    // overflowed a plain product).
                    offset = offset.wrapping_add((self.int()? as i64).wrapping_mul(sign));
                }
                Ok(Operand::Address { base, offset })
            }
            Some(TokenKind::Punct('!')) => {
                self.i += 1;
                Ok(Operand::Not(self.word()?))
            }
            Some(TokenKind::Punct('-')) => {
                self.i += 1;
                match self.next() {
                    Some(TokenKind::Int(v)) => Ok(Operand::Int(v.wrapping_neg())),
                    Some(TokenKind::F32Bits(b)) => Ok(Operand::F32(b ^ 0x8000_0000)),
                    Some(TokenKind::F64(f)) => Ok(Operand::F64(-f)),
                    _ => {
                        self.i -= 1;
                        self.err("expected a number after `-`")
                    }
                }
            }
            Some(TokenKind::Int(v)) => {
                self.i += 1;
                Ok(Operand::Int(v))
            }
            Some(TokenKind::F32Bits(b)) => {
                self.i += 1;
                Ok(Operand::F32(b))
            }
            Some(TokenKind::F64(f)) => {
                self.i += 1;
                Ok(Operand::F64(f))
            }
            Some(TokenKind::Word(w)) => {
                self.i += 1;
                if self.eat_punct('|') {
                    let q = self.word()?;
                    return Ok(Operand::Pair(w, q));
                }
                if w == "_" {
                    return Ok(Operand::Sink);
                }
                Ok(Operand::Name(w))
            }
            _ => self.err(format!("expected an operand, found {}", self.describe())),
        }
    }
}
